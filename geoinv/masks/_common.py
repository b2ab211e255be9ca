"""Argument checks shared by the mask generators."""

from __future__ import annotations

import numbers

import numpy as np

from geoinv.errors import MaskError, ShapeError
from geoinv.signals import SignalBase


def n_points_of(signal) -> int:
    """Number of points ``N`` of a geoinv signal."""
    if isinstance(signal, SignalBase):
        return int(signal.n_points)
    raise ShapeError(
        f"expected a geoinv signal (MeshSignal, SphereSignal or GridSignal), got {type(signal).__name__}; "
        "wrap your values in one of the containers first"
    )


def check_missing(missing, n_points: int) -> int:
    """Validate the missing fraction and return the number of missing points ``round(missing * N)``."""
    if isinstance(missing, bool) or not isinstance(missing, numbers.Real) or not np.isfinite(missing):
        raise MaskError(f"missing must be a fraction in [0, 1), got {missing!r}")
    if not 0.0 <= float(missing) < 1.0:
        raise MaskError(
            f"missing must be a fraction in [0, 1) (the share of points hidden), got {missing}; "
            "e.g. missing=0.3 hides 30 % of the points"
        )
    k = int(round(float(missing) * n_points))
    if k >= n_points:
        raise MaskError(
            f"missing={missing} hides round({missing} * {n_points}) = {k} of {n_points} points, i.e. all of "
            "them; lower missing so that at least one point stays observed"
        )
    return k


def check_count(n, what: str = "n") -> int | None:
    """``None`` or a positive integer count."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise MaskError(f"{what} must be None (one mask of shape (N,)) or a positive integer, got {n!r}")
    return int(n)
