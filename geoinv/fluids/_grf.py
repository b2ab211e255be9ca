"""Gaussian random fields on the periodic torus (initial vorticity of the fluid data set)."""

from __future__ import annotations

import math

import torch

__all__ = ["grf_torus", "GRFEnsemble"]


def grf_torus(n: int, resolution: int = 64, *, alpha: float = 2.5, tau: float = 7.0, std: float | None = None,
              generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Zero-mean Gaussian random fields with covariance :math:`\propto (-\Delta + \tau^2 I)^{-\alpha}` on :math:`[0, 1]^2`.

    The spectral sampler of the FNO / InverseBench data (written from the formula):
    Fourier coefficient of wave vector :math:`k \in \mathbb{Z}^2` is
    :math:`\sigma (4\pi^2 |k|^2 + \tau^2)^{-\alpha/2} \xi_k` with complex white noise
    :math:`\xi_k`, :math:`\sigma = \tau^{\alpha - 1}`, the mean mode removed; the field
    is periodic, so it lives equally on :math:`[0, 2\pi]^2` (the length scale is set by
    :math:`\tau`: correlation length about :math:`2\pi/\tau` of the unit period).

    Parameters
    ----------
    n : int
        Number of fields.
    resolution : int
        Grid size ``N`` (fields are ``N x N``).
    alpha, tau : float
        Smoothness and inverse length scale (2.5 and 7 as InverseBench).
    std : float, optional
        Rescale every field to this pointwise standard deviation (over the ensemble's
        theoretical variance, not per field); default: the natural amplitude.
    generator : torch.Generator, optional
    dtype : torch.dtype

    Returns
    -------
    Tensor, shape (n, N, N)
    """
    k = torch.fft.fftfreq(resolution, 1.0 / resolution, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sigma = tau ** (alpha - 1)
    amp = sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    amp[0, 0] = 0.0
    xi = torch.randn(n, 2, resolution, resolution, generator=generator, dtype=torch.float64)
    coef = torch.complex(xi[:, 0], xi[:, 1]) * amp
    # real part of the inverse DFT of Hermitian-symmetrised white noise: variance sum(amp^2) per point
    field = torch.fft.ifft2(coef, norm="forward").real
    if std is not None:
        var = float((amp**2).sum())
        field = field * (std / math.sqrt(var))
    return field.to(dtype)


class GRFEnsemble:
    """A GRF prior *ensemble* (for :class:`~geoinv.samplers.EKI`) in the canonical layout.

    ``sample(n, generator)`` returns ``grf_torus`` fields divided by ``scale`` with shape
    (n, N*N, 1), float64; ``event_shape = (N*N, 1)``.

    Parameters
    ----------
    resolution : int
    alpha, tau : float
    std : float
        Pointwise std of the physical fields (default 5, the data set's).
    scale : float
        Normalization ``x = w / scale`` (10).
    """

    def __init__(self, resolution: int = 64, *, alpha: float = 2.5, tau: float = 7.0, std: float = 5.0,
                 scale: float = 10.0):
        self.resolution, self.alpha, self.tau, self.std, self.scale = resolution, alpha, tau, std, scale
        self.event_shape = (resolution * resolution, 1)
        self.name = f"grf(alpha={alpha:g}, tau={tau:g}, std={std:g})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        w = grf_torus(n, self.resolution, alpha=self.alpha, tau=self.tau, std=self.std, generator=generator)
        return (w / self.scale).reshape(n, -1, 1)

    def __repr__(self) -> str:
        return f"GRFEnsemble({self.name})"
