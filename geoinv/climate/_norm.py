"""A prior seen in its own normalized units: what the diffusion samplers' defaults assume."""

from __future__ import annotations

import math
from typing import Any

import torch

from geoinv.priors import Prior, as_sigma

__all__ = ["NormalizedPrior", "prior_normalization"]


def prior_normalization(prior: Any) -> tuple[torch.Tensor, float]:
    """The prior's own normalization ``(mean, std)``: ``x_n = (x - mean) / std``.

    A learned prior (:class:`~geoinv.priors.EDMDenoiser`) uses its ``data_mean`` (shape
    (N, C), (C,) or scalar) and scalar ``data_std``, fitted on its training period; a
    :class:`~geoinv.priors.GaussianPrior` its mean and the root mean marginal variance.
    """
    if hasattr(prior, "data_std") and hasattr(prior, "data_mean"):
        return torch.as_tensor(prior.data_mean, dtype=torch.float64).detach().cpu(), float(prior.data_std)
    if hasattr(prior, "eigvals") and hasattr(prior, "variance"):
        return prior.mean.detach().double().cpu(), math.sqrt(float(prior.variance.mean()))
    return torch.zeros((), dtype=torch.float64), 1.0


class NormalizedPrior(Prior):
    r"""``prior`` in normalized units: :math:`D_n(x_n; s_n) = (D(m + s x_n; s\,s_n) - m) / s`.

    The diffusion samplers' default noise schedules (``sigma_max = 80``) assume data of
    about unit scale around 0; temperatures in K (about 280 +- 2) are far from that. The
    wrapper lets them run in the prior's own normalized units; :func:`impute` maps the
    results (mean, std, samples) back to data units.
    """

    def __init__(self, prior: Any):
        self.prior = prior
        self.center, self.scale = prior_normalization(prior)
        self.event_shape = tuple(prior.event_shape)
        self.fingerprint = getattr(prior, "fingerprint", None)
        self.name = getattr(prior, "name", "prior")
        self.data_mean = torch.zeros((), dtype=torch.float64)
        self.data_std = 1.0

    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:  # noqa: D102
        s = as_sigma(sigma, x).reshape(-1)
        c = self.center.to(device=x.device, dtype=x.dtype)
        out = self.prior.denoise(c + self.scale * x, s * self.scale)
        return (out - c) / self.scale

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized values (..., N, C) back to data units."""
        return self.center.to(x.dtype) + self.scale * x

    def to_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Data values (..., N, C) to normalized units."""
        return (x - self.center.to(x.dtype)) / self.scale
