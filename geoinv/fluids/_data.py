"""The Navier-Stokes data set: GRF initial vorticity evolved 5 time units with our solver."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

__all__ = ["generate", "generate_splits", "load_fields", "default_dir", "SCALE", "SEEDS"]

log = logging.getLogger(__name__)

#: normalization of the prior / operators: ``x = w / SCALE`` (InverseBench ``unnorm_scale``)
SCALE = 10.0
#: seeds of the splits; per-field generators ``seed * 1_000_003 + i`` make the splits disjoint
SEEDS = {"train": 0, "test": 1}
DEFAULT_N = {"train": 3072, "test": 16}


def default_dir() -> Path:
    """Where generated fields are written: ``$GEOINV_CACHE/navier-stokes`` or ``~/.cache/geoinv/navier-stokes``."""
    root = os.environ.get("GEOINV_CACHE")
    return Path(root) / "navier-stokes" if root else Path.home() / ".cache" / "geoinv" / "navier-stokes"


def generate(n: int, resolution: int = 64, seed: int = 0, *, t_spinup: float = 5.0, alpha: float = 2.5,
             tau: float = 7.0, batch_size: int = 128, solver=None, progress: bool = False) -> torch.Tensor:
    """Vorticity fields ``w(t_spinup)`` from GRF initial conditions, in physical units.

    Field ``i`` starts from :func:`~geoinv.fluids.grf_torus` drawn with its own generator
    seeded ``seed * 1_000_003 + i`` (so fields do not depend on ``batch_size`` and
    different seeds give disjoint sets) and is evolved ``t_spinup`` time units with
    :class:`~geoinv.operators.NavierStokes2D` (Re 200, Kolmogorov forcing, float32).

    Parameters
    ----------
    n : int
    resolution : int
        64 (default) or 128.
    seed : int
    t_spinup : float
        5 time units (InverseBench ``Re200.0-t5.0``).
    alpha, tau : float
        GRF parameters of the initial condition.
    batch_size : int
        Fields integrated together.
    solver : NavierStokes2D, optional

    Returns
    -------
    Tensor, shape (n, resolution, resolution), float32
    """
    from tqdm.auto import tqdm

    from geoinv.fluids._grf import grf_torus
    from geoinv.operators import NavierStokes2D

    ns = solver if solver is not None else NavierStokes2D(resolution)
    out = []
    for start in tqdm(range(0, n, batch_size), disable=not progress, leave=False, desc="navier-stokes"):
        idx = range(start, min(n, start + batch_size))
        w0 = torch.cat([grf_torus(1, resolution, alpha=alpha, tau=tau,
                                  generator=torch.Generator().manual_seed(seed * 1_000_003 + i)) for i in idx])
        out.append(ns.solve(w0.to(ns.dtype), t_spinup).float())
    return torch.cat(out) if out else torch.zeros(0, resolution, resolution)


def _path(root: Path, split: str, resolution: int) -> Path:
    return root / f"ns-re200-t5-{resolution}-{split}.safetensors"


def generate_splits(n_train: int = DEFAULT_N["train"], n_test: int = DEFAULT_N["test"], resolution: int = 64,
                    out: str | os.PathLike | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Generate and save the train and test splits (disjoint seeds), as safetensors.

    Each file holds ``w`` (K, N, N) float32 physical vorticity; its metadata records the
    generator settings. Returns ``{split: path}``.
    """
    from geoinv.io import write_tensors

    root = Path(out) if out is not None else default_dir()
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("test", n_test)):
        t0 = time.perf_counter()
        w = generate(n, resolution, SEEDS[split], progress=progress)
        secs = time.perf_counter() - t0
        meta = {"format": "geoinv-navier-stokes", "split": split, "seed": str(SEEDS[split]), "n": str(n),
                "resolution": str(resolution), "reynolds": "200", "forcing": "-4cos(4y)", "t_spinup": "5",
                "grf": "alpha=2.5,tau=7", "units": "vorticity (physical); prior units x = w / 10",
                "seconds": f"{secs:.1f}"}
        p = _path(root, split, resolution)
        write_tensors(p, {"w": w.contiguous()}, meta)
        log.info("wrote %s: %d fields in %.1f s", p, n, secs)
        paths[split] = p
    return paths


def load_fields(split: str = "train", resolution: int = 64, root: str | os.PathLike | None = None, *,
                generate_missing: bool = True) -> torch.Tensor:
    """Physical vorticity fields of a split, shape (K, N, N) float32.

    Looks in ``root`` (default :func:`default_dir`); when the file is missing and
    ``generate_missing``, generates the default-size splits there first (minutes on a CPU).
    """
    from geoinv.errors import DataNotFoundError
    from geoinv.io import read_tensors

    r = Path(root) if root is not None else default_dir()
    p = _path(r, split, resolution)
    if not p.exists():
        if not generate_missing:
            raise DataNotFoundError(f"{p} not found; run `geoinv datasets navier-stokes --resolution {resolution}`")
        log.warning("%s not found: generating the Navier-Stokes data set (a few minutes)", p)
        generate_splits(resolution=resolution, out=r, progress=False)
    t, _ = read_tensors(p)
    return t["w"]


def grid_signal(w: torch.Tensor, name: str | None = None):
    """Normalized fields ``x = w / 10`` as a periodic :class:`~geoinv.GridSignal` (K, 1, N, N)."""
    from geoinv.signals import GridSignal

    n = w.shape[-1]
    h = 2 * math.pi / n
    return GridSignal((w / SCALE).reshape(-1, 1, n, n).float(), spacing=(h, h), periodic=True,
                      name=name or f"navier-stokes-{n}")
