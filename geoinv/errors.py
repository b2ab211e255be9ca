"""Typed errors raised by geoinv.

Every error says what was wrong and how to fix it. The classes subclass the
builtin exception a user would expect (``ValueError``, ``FileNotFoundError``)
so that generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "GeoinvError",
    "ShapeError",
    "MaskError",
    "NonFiniteError",
    "DomainMismatchError",
    "CheckpointError",
    "DataNotFoundError",
    "NotDifferentiableError",
    "CoordinateError",
    "UnitsError",
]


class GeoinvError(Exception):
    """Base class of every error geoinv raises on purpose."""


class ShapeError(GeoinvError, ValueError):
    """An array has the wrong shape, dtype or length for its domain."""


class MaskError(GeoinvError, ValueError):
    """A mask is not boolean, has the wrong length, or observes nothing."""


class NonFiniteError(GeoinvError, ValueError):
    """NaN or inf where only finite numbers are allowed."""


class DomainMismatchError(GeoinvError, ValueError):
    """A prior, flow or operator was built for another domain (mesh, grid, nside)."""


class CheckpointError(GeoinvError, ValueError):
    """A checkpoint is corrupted, truncated, foreign or from an incompatible version."""


class DataNotFoundError(GeoinvError, FileNotFoundError):
    """A data file is neither in GEOINV_DATA_DIR, nor shipped, nor downloadable."""


class NotDifferentiableError(GeoinvError, RuntimeError):
    """A gradient was requested through a forward model declared non-differentiable."""


class CoordinateError(ShapeError):
    """Labelled data lack (or mislabel) the coordinates geoinv needs, e.g. latitude/longitude."""


class UnitsError(DomainMismatchError):
    """Data are in other physical units than the prior (or model) expects."""
