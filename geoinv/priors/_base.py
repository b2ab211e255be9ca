"""The prior interface every sampler consumes: a denoiser ``D(x; sigma)`` on a fixed domain."""

from __future__ import annotations

from typing import Any

import torch

from geoinv.errors import DomainMismatchError, ShapeError

__all__ = ["Prior", "as_sigma"]


def as_sigma(sigma: Any, x: torch.Tensor) -> torch.Tensor:
    """Noise levels as a tensor of shape (B, 1, 1) broadcastable against ``x`` (B, N, C)."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ShapeError(f"sigma must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(s.shape)}")
    return s.reshape(-1, 1, 1)


class Prior:
    """A probability distribution over signals on one domain, exposed through its denoiser.

    ``D(x; sigma) = E[x0 | x0 + sigma * eps = x]`` (EDM / variance-exploding convention,
    ``eps ~ N(0, I)``); the score of the noised density is ``(D(x; sigma) - x) / sigma^2``
    (Tweedie). Samplers written in the VP (DDPM) convention convert time steps with
    :mod:`geoinv.priors.edm` helpers and call the same denoiser.

    Attributes
    ----------
    fingerprint : str or None
        Domain fingerprint (:attr:`geoinv.signals.SignalBase.fingerprint`) of the domain
        the prior is defined on; ``None`` for a prior that accepts any domain of its size.
    event_shape : tuple of int
        ``(N, C)``.
    evals_per_call : int
        Denoiser evaluations per signal and :meth:`denoise` call (``G`` for a :class:`SymmetrizedPrior`).
    """

    fingerprint: str | None = None
    event_shape: tuple[int, int] = (0, 0)
    name: str = "prior"
    #: network (or closed-form) evaluations per signal of one :meth:`denoise` call; samplers count ``nfe`` with it
    evals_per_call: int = 1

    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Posterior mean of the clean signal given ``x = x0 + sigma * eps``.

        Parameters
        ----------
        x : Tensor, shape (B, N, C)
        sigma : float or Tensor, shape (B,)

        Returns
        -------
        Tensor, shape (B, N, C)
        """
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        return self.denoise(x, sigma)

    def score(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Score ``grad log p_sigma(x) = (D(x; sigma) - x) / sigma^2``, shape (B, N, C)."""
        s = as_sigma(sigma, x)
        return (self.denoise(x, sigma) - x) / s**2

    def check_domain(self, signal: Any) -> None:
        """Raise :class:`DomainMismatchError` unless ``signal`` lives on this prior's domain."""
        n, c = self.event_shape
        if self.fingerprint is not None and signal.fingerprint != self.fingerprint:
            raise DomainMismatchError(
                f"prior {self.name!r} was trained on domain {self.fingerprint}, but the signal is on "
                f"{signal.fingerprint}; use a prior trained for this mesh/grid (or retrain one with geoinv train)"
            )
        if signal.n_points != n or signal.n_channels != c:
            raise DomainMismatchError(
                f"prior {self.name!r} expects {n} points x {c} channels, the signal has "
                f"{signal.n_points} x {signal.n_channels}"
            )

    def check_x(self, x: torch.Tensor) -> None:
        """Raise :class:`ShapeError` unless ``x`` has shape (B, N, C) of this prior."""
        if x.dim() != 3 or tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ShapeError(f"expected x of shape (B, {self.event_shape[0]}, {self.event_shape[1]}), got {tuple(x.shape)}")
