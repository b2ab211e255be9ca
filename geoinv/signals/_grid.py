"""Signals on regular 2-D grids (images, periodic fluid fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from geoinv.errors import ShapeError
from geoinv.signals._base import SignalBase, as_float_tensor

__all__ = ["GridSignal"]


@dataclass(frozen=True, eq=False)
class GridSignal(SignalBase):
    """Values on a regular ``H x W`` grid.

    Parameters
    ----------
    values : Tensor, shape (C, H, W) or (B, C, H, W)
        Channels-first, as torch images. The canonical point layout
        (:meth:`point_values`) is ``(B, H*W, C)`` with row-major points ``i*W + j``.
    spacing : tuple of float
        ``(dy, dx)`` grid spacing.
    periodic : bool
        Whether the grid wraps around in both directions (a torus, e.g. for fluids).
    name : str, optional
    """

    values: torch.Tensor
    spacing: tuple[float, float] = (1.0, 1.0)
    periodic: bool = False
    name: str | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    kind = "grid"
    _batched_ndim = 4

    def __post_init__(self) -> None:
        vals = as_float_tensor(self.values, "values")
        if vals.dim() == 2:
            vals = vals.unsqueeze(0)
        if vals.dim() not in (3, 4):
            raise ShapeError(f"grid values must have shape (C, H, W) or (B, C, H, W), got {tuple(vals.shape)}")
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != 2 or min(sp) <= 0:
            raise ShapeError(f"spacing must be two positive numbers (dy, dx), got {self.spacing}")
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "periodic", bool(self.periodic))

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.values.shape[-2:])

    @property
    def n_points(self) -> int:
        """``H * W``."""
        h, w = self.shape
        return h * w

    def _point_layout(self, v):
        return v.flatten(-2).transpose(-1, -2)

    def _from_point_layout(self, x):
        return x.transpose(-1, -2).reshape(x.shape[0], x.shape[-1], *self.shape)

    def _flatten_mask(self, m):
        if m.dim() >= 2 and tuple(m.shape[-2:]) == self.shape:
            return m.flatten(-2)
        return m

    def _geometry_key(self) -> str:
        h, w = self.shape
        return f"{h}x{w}-d{self.spacing[0]:.6g}x{self.spacing[1]:.6g}-{'periodic' if self.periodic else 'open'}"

    def _laplacian(self):
        from geoinv import geometry

        h, w = self.shape
        return geometry.grid_laplacian(h, w, self.spacing, self.periodic), self.area_weights()

    def _area_weights(self) -> np.ndarray:
        return np.full(self.n_points, self.spacing[0] * self.spacing[1])

    def _edge_index(self) -> np.ndarray:
        from geoinv import geometry

        return geometry.grid_edge_graph(*self.shape, periodic=self.periodic)

    def _distances(self, source: int) -> np.ndarray:
        h, w = self.shape
        i, j = np.divmod(np.arange(h * w), w)
        di, dj = np.abs(i - source // w), np.abs(j - source % w)
        if self.periodic:
            di, dj = np.minimum(di, h - di), np.minimum(dj, w - dj)
        return np.hypot(di * self.spacing[0], dj * self.spacing[1])

    def __repr__(self) -> str:
        return f"GridSignal(name={self.name!r}, shape={self.shape}, values={tuple(self.values.shape)}, periodic={self.periodic})"
