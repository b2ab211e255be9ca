"""Noise2Score / Tweedie: one-step denoising with the prior's score."""

from __future__ import annotations

import dataclasses
from typing import Any

from geoinv.errors import ShapeError
from geoinv.samplers._base import STATE_DTYPE, Sampler, _operator_parts

__all__ = ["Tweedie", "Noise2Score"]


@dataclasses.dataclass(frozen=True)
class Tweedie(Sampler):
    r"""Tweedie's formula for Gaussian denoising (Noise2Score at test time).

    For ``y = x + sigma * eps`` (operator ``GaussianNoise(sigma)``, i.e. identity plus
    white noise of std ``sigma`` in data units), the posterior mean is

    .. math:: \hat x = y + \sigma^2 \nabla_y \log p_\sigma(y) = D(y; \sigma),

    one denoiser evaluation (``nfe = 1``, no forward-model calls). It is a point
    estimator: the result holds **one** sample (``samples`` of shape (1, N, C), whatever
    ``n_samples`` is) and ``std`` is ``None`` (the posterior spread is not available).
    Exact for a :class:`~geoinv.priors.GaussianPrior`.

    Operators other than identity plus Gaussian noise (``Identity``, ``GaussianNoise``
    and their compositions) raise ``TypeError``; ``noise_std = 0`` raises ``ValueError``.

    References
    ----------
    Kim, Ye. *Noise2Score: Tweedie's Approach to Self-Supervised Image Denoising without
    Clean Images*, NeurIPS 2021, arXiv:2106.07009.
    Efron. *Tweedie's formula and selection bias*, JASA 2011.
    """

    name = "tweedie"

    def _check_operator(self, operator: Any) -> None:
        from geoinv.operators import Identity

        if not all(isinstance(p, Identity) for p in _operator_parts(operator)):
            raise TypeError(
                f"Tweedie/Noise2Score only denoises (operator GaussianNoise(sigma)), got {operator!r}; "
                "use DPS, MCG or EnKG for masks and other forward models"
            )
        if not operator.noise_std > 0:
            raise ValueError("Tweedie denoising needs the noise level: operator.noise_std must be > 0")

    def _sample(self, y, operator, prior, event, n_samples, generator, progress, callback, work, x_start):
        if tuple(y.shape[1:]) != event:
            raise ShapeError(f"Tweedie needs y of shape (1, {event[0]}, {event[1]}), got {tuple(y.shape)}")
        x0 = self._denoise(prior, y, float(operator.noise_std), work)
        if callback is not None:
            callback(0, {"x": x0, "sigma": 0.0, "x0": x0})
        return x0.to(STATE_DTYPE), {"n_samples_requested": n_samples}


#: Alias: Noise2Score's test-time estimator is Tweedie's formula.
Noise2Score = Tweedie
