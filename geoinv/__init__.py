"""geoinv: inverse problems on meshes, spheres and grids with diffusion priors.

``import geoinv`` is light (numpy and torch only); submodules that need
torch-geometric, pyvista, healpy, xarray or trimesh import them when used.

>>> import geoinv
>>> post = geoinv.solve(signal, mask, method="gaussian", prior=prior)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from geoinv._version import __version__
from geoinv.errors import (
    CheckpointError,
    DataNotFoundError,
    DomainMismatchError,
    GeoinvError,
    MaskError,
    NonFiniteError,
    NotDifferentiableError,
    ShapeError,
)
from geoinv.signals import GridSignal, MeshSignal, SphereSignal

if TYPE_CHECKING:  # pragma: no cover
    from geoinv.inference import Posterior, solve

_SUBMODULES = {
    "baselines", "cli", "climate", "datasets", "flows", "fluids", "geometry", "inference", "io",
    "masks", "metrics", "operators", "priors", "samplers", "signals", "viz", "bench", "training",
}

__all__ = [
    "__version__", "MeshSignal", "SphereSignal", "GridSignal", "solve", "Posterior",
    "GeoinvError", "ShapeError", "MaskError", "NonFiniteError", "DomainMismatchError",
    "CheckpointError", "DataNotFoundError", "NotDifferentiableError",
]


def __getattr__(name: str):
    if name in ("solve", "Posterior"):
        return getattr(importlib.import_module("geoinv.inference"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"geoinv.{name}")
    raise AttributeError(f"module 'geoinv' has no attribute {name!r}")
