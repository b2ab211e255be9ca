"""A prior averaged over a group of signed permutations of its domain (test-time symmetrization)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geoinv.errors import ShapeError
from geoinv.priors._base import Prior, as_sigma

__all__ = ["SymmetrizedPrior", "apply_signed_permutations"]


def apply_signed_permutations(x: torch.Tensor, perms: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``(g x)[j] = sign_g * x[perms[g, j]]`` for a batch, one map per signal.

    Parameters
    ----------
    x : Tensor, shape (B, N, C)
    perms : Tensor, shape (B, N), int64
    signs : Tensor, shape (B,)

    Returns
    -------
    Tensor, shape (B, N, C), a new tensor
    """
    out = torch.gather(x, 1, perms.to(x.device)[:, :, None].expand(-1, -1, x.shape[2]))
    return out * signs.to(x.device, x.dtype)[:, None, None]


class SymmetrizedPrior(nn.Module, Prior):
    r"""The denoiser of ``prior`` averaged over a group of signed permutations: :math:`\frac1G\sum_g g^{-1}D(g x)`.

    If the data distribution is invariant under each map ``g`` (e.g. the dynamics' symmetries,
    :func:`geoinv.operators.kolmogorov_symmetries`), so is the exact denoiser, and averaging a learned one over
    the maps removes the part of its error that is not equivariant: a lower mean squared error at ``G`` times
    the cost. For a set of maps that is a group the result is exactly equivariant.

    Parameters
    ----------
    prior : Prior
        Any prior on ``N`` points (its ``denoise`` is called on batches ``G`` times larger).
    perms : Tensor, shape (G, N), int64
        ``(g x)[j] = signs[g] * x[perms[g, j]]``; each row a permutation of ``range(N)``.
    signs : Tensor, shape (G,)
        +1 or -1.

    Attributes
    ----------
    evals_per_call : int
        ``G`` times the wrapped prior's: what samplers count as denoiser evaluations.
    """

    def __init__(self, prior: Prior, perms: torch.Tensor, signs: torch.Tensor):
        super().__init__()
        n = int(prior.event_shape[0])
        perms = torch.as_tensor(perms, dtype=torch.int64)
        signs = torch.as_tensor(signs, dtype=torch.float64)
        if perms.dim() != 2 or perms.shape[1] != n or signs.shape != perms.shape[:1] or perms.shape[0] < 1:
            raise ShapeError(f"perms must be (G, N = {n}) and signs (G,), got {tuple(perms.shape)} and "
                             f"{tuple(signs.shape)}")
        if not torch.equal(perms.sort(dim=1).values, torch.arange(n).expand_as(perms)):
            raise ValueError("every row of perms must be a permutation of range(N)")
        if not bool((signs.abs() == 1).all()):
            raise ValueError("signs must be +1 or -1")
        self.prior = prior
        self.register_buffer("perms", perms)
        self.register_buffer("inverse", perms.argsort(dim=1))
        self.register_buffer("signs", signs)
        self.fingerprint = prior.fingerprint
        self.event_shape = tuple(prior.event_shape)
        self.name = f"{prior.name} (symmetrized over {perms.shape[0]} maps)"
        self.evals_per_call = perms.shape[0] * getattr(prior, "evals_per_call", 1)

    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Group-averaged posterior mean, shape of ``x`` (B, N, C)."""
        self.check_x(x)
        b, g = x.shape[0], self.perms.shape[0]
        s = as_sigma(sigma, x).reshape(b)
        rep = lambda t: t.repeat(b, *([1] * (t.dim() - 1)))  # noqa: E731  (B * G, ...) in batch-major order
        gx = apply_signed_permutations(x.repeat_interleave(g, 0), rep(self.perms), rep(self.signs))
        d = self.prior.denoise(gx, s.repeat_interleave(g))
        back = apply_signed_permutations(d, rep(self.inverse), rep(self.signs))   # g^-1 (signs are +-1)
        return back.reshape(b, g, *x.shape[1:]).mean(1)

    def forward(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:  # noqa: D102
        return self.denoise(x, sigma)
