r"""Covariance localization of ensemble Kalman updates (Gaspari-Cohn tapers).

With ``J`` particles an ensemble covariance has rank ``J - 1``: the update of an EnKF, of EKI
or of EnKG can only move the ensemble inside the span of its own deviations, and the
sample correlations between distant points are pure noise. Localization (Houtekamer &
Mitchell 1998, 2001; Hamill et al. 2001) multiplies the ensemble covariances entrywise by
a compactly supported correlation function of the distance, so that an observation only
corrects the unknowns near it:

.. math::

    K = (\rho_{xy} \circ C^{xy}) (\rho_{yy} \circ C^{yy} + \Gamma)^{-1},

with :math:`\rho` the Gaspari-Cohn fifth-order piecewise-rational function of
``distance / radius`` (1 at distance 0, 0 beyond ``2 radius``; positive definite in up to three
dimensions, and on a torus while ``2 radius`` is at most half the period, so the Schur product keeps
:math:`C^{yy}` positive semi-definite). The gain is no longer confined
to the ensemble span: each region gets its own ``J - 1`` directions.

References
----------
Gaspari, Cohn. *Construction of correlation functions in two and three dimensions*,
Q. J. R. Meteorol. Soc. 125 (1999), eq. (4.10).
Houtekamer, Mitchell. *A sequential ensemble Kalman filter for atmospheric data
assimilation*, Mon. Weather Rev. 129 (2001).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from geoinv.errors import ShapeError

__all__ = ["Localization", "gaspari_cohn"]


def gaspari_cohn(r: torch.Tensor) -> torch.Tensor:
    r"""Gaspari-Cohn correlation function of ``r = distance / radius`` (their eq. 4.10), support ``[0, 2)``.

    .. math::

        \rho(r) = \begin{cases}
          -\tfrac14 r^5 + \tfrac12 r^4 + \tfrac58 r^3 - \tfrac53 r^2 + 1, & 0 \le r \le 1,\\
          \tfrac1{12} r^5 - \tfrac12 r^4 + \tfrac58 r^3 + \tfrac53 r^2 - 5 r + 4 - \tfrac{2}{3r}, & 1 < r < 2,\\
          0, & r \ge 2.
        \end{cases}
    """
    r = r.abs()
    inner = ((((-0.25 * r + 0.5) * r + 0.625) * r - 5 / 3) * r) * r + 1
    rs = r.clamp_min(1e-12)
    outer = ((((r / 12 - 0.5) * r + 0.625) * r + 5 / 3) * r - 5) * r + 4 - 2 / (3 * rs)
    return torch.where(r <= 1, inner, torch.where(r < 2, outer, torch.zeros_like(r)))


@dataclasses.dataclass(frozen=True, eq=False)
class Localization:
    """Where the unknowns and the measurements live, and how far an observation may reach.

    Parameters
    ----------
    x_points : Tensor, shape (N, k)
        Coordinates of the unknown's ``N`` points (one channel per point).
    y_points : Tensor, shape (M, k)
        Coordinates of the measurement's ``M`` values.
    radius : float
        Gaspari-Cohn length ``c``: correlations are tapered to 0 at distance ``2 c``.
    period : float, optional
        Periodic coordinates (a torus of this period in every coordinate): distances wrap. On the torus
        the taper of the wrapped distance is the periodic sum of the Gaspari-Cohn function (and so a
        correlation) only while its support ``2 radius`` is at most half the period: ``radius`` must be
        at most ``period / 4`` (beyond it the taper matrix has negative eigenvalues, e.g. -9.6 for radius 3
        on the 32 x 32 Navier-Stokes observation grid, and a localized Kalman update can diverge).

    Examples
    --------
    >>> import torch
    >>> from geoinv.samplers import Localization
    >>> x = torch.linspace(0, 1, 5)[:, None]
    >>> loc = Localization(x, x[::2], radius=0.25)
    >>> loc.tapers()[0].shape
    torch.Size([5, 3])
    """

    x_points: torch.Tensor
    y_points: torch.Tensor
    radius: float
    period: float | None = None

    def __post_init__(self):
        xp, yp = torch.as_tensor(self.x_points), torch.as_tensor(self.y_points)
        if xp.dim() != 2 or yp.dim() != 2 or xp.shape[1] != yp.shape[1]:
            raise ShapeError(f"x_points and y_points must be (N, k) and (M, k) with the same k, got "
                             f"{tuple(xp.shape)} and {tuple(yp.shape)}")
        if not self.radius > 0:
            raise ValueError(f"radius must be positive, got {self.radius}")
        if self.period is not None and not self.period > 0:
            raise ValueError(f"period must be positive, got {self.period}")
        if self.period is not None and self.radius > self.period / 4:
            raise ValueError(f"radius {self.radius:g} > period / 4 = {self.period / 4:g}: on a torus the Gaspari-Cohn "
                             "taper of the wrapped distance is positive semi-definite only while its support 2 radius "
                             "is at most half the period; use a smaller radius, or no localization for a global update")
        object.__setattr__(self, "x_points", xp.detach().to(torch.float64).clone())
        object.__setattr__(self, "y_points", yp.detach().to(torch.float64).clone())

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a[:, None, :] - b[None, :, :]).abs()
        if self.period is not None:
            d = torch.minimum(d, self.period - d)
        return d.pow(2).sum(-1).sqrt()

    def tapers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rho_xy (N, M), rho_yy (M, M))``, float64."""
        return (gaspari_cohn(self._dist(self.x_points, self.y_points) / self.radius),
                gaspari_cohn(self._dist(self.y_points, self.y_points) / self.radius))

    def __repr__(self) -> str:
        per = "" if self.period is None else f", period={self.period:g}"
        return (f"Localization(N={self.x_points.shape[0]}, M={self.y_points.shape[0]}, radius={self.radius:g}{per})")

    @classmethod
    def torus_grid(cls, n: int, stride: int, radius: float, length: float = 2 * math.pi) -> "Localization":
        """Unknowns on an ``n x n`` periodic grid (row-major), measurements every ``stride``-th point."""
        h = length / n
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        xp = torch.stack([i.flatten(), j.flatten()], -1).double() * h
        yp = torch.stack([i[::stride, ::stride].flatten(), j[::stride, ::stride].flatten()], -1).double() * h
        return cls(xp, yp, radius, period=length)
