"""The Stanford Bunny at Stanford's own resolutions.

Credit: Stanford Computer Graphics Laboratory, Stanford 3D Scanning Repository
(Turk & Levoy 1994). Research use and redistribution with credit.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from geoinv.datasets._fetch import DATA_DIR_ENV, data_file, package_data_dir
from geoinv.errors import DataNotFoundError
from geoinv.signals import MeshSignal

__all__ = ["stanford_bunny", "BUNNY_RESOLUTIONS"]

logger = logging.getLogger(__name__)

#: Vertex / face counts of the available resolutions ("full" = the original scan).
BUNNY_RESOLUTIONS = {"full": (35947, 69451), 2: (8171, 16301), 3: (1889, 3851), 4: (453, 948)}


def _normalize_resolution(resolution) -> int | str:
    if isinstance(resolution, str):
        r = resolution.strip().lower()
        if r in ("full", "0"):
            return "full"
        if r in ("2", "3", "4"):
            return int(r)
    elif isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        if int(resolution) == 0:
            return "full"
        if int(resolution) in (2, 3, 4):
            return int(resolution)
    raise DataNotFoundError(
        f"there is no Stanford bunny at resolution {resolution!r}; use 2 (8,171 vertices), "
        f"3 (1,889), 4 (453) or 'full' / 0 (the 35,947-vertex scan)"
    )


def _bunny_path(res: int | str):
    if res == "full":
        return data_file("meshes/bun_zipper.ply")
    fname = f"bun_zipper_res{res}.ply"
    pkg = package_data_dir("tiny_3d_engine")
    shipped = pkg / "examples" / fname if pkg is not None else None
    try:
        return data_file(f"meshes/{fname}", package_file=shipped)
    except DataNotFoundError as exc:
        raise DataNotFoundError(
            f"the Stanford bunny at resolution {res} ({fname}) ships with the PyPI package "
            f"tiny-3d-engine, which was not found: `pip install tiny-3d-engine==1.0.2`, or put "
            f"meshes/{fname} into the folder named by {DATA_DIR_ENV}"
        ) from exc


@functools.lru_cache(maxsize=8)
def _bunny_arrays(res: int | str) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    path = _bunny_path(res)
    mesh = trimesh.load(str(path), force="mesh", process=False)
    v = np.asarray(mesh.vertices, dtype=np.float32)
    f = np.asarray(mesh.faces, dtype=np.int64)
    v.setflags(write=False)
    f.setflags(write=False)
    logger.debug("stanford_bunny(%s): %d vertices, %d faces from %s", res, len(v), len(f), path)
    return v, f


@functools.lru_cache(maxsize=8)
def _shared_cache(res: int | str) -> dict:
    """Geometry cache (Laplacian, geodesic solver, ...) shared by all bunnies of one resolution."""
    return {}


def stanford_bunny(resolution: int | str = 3) -> MeshSignal:
    """The Stanford Bunny as a :class:`~geoinv.MeshSignal` with zero values.

    Parameters
    ----------
    resolution : {2, 3, 4, "full"} or 0
        Stanford's own reconstructions ``bun_zipper_res{2,3,4}.ply`` (8,171 / 1,889 / 453
        vertices; 16,301 / 3,851 / 948 faces), shipped inside the ``tiny-3d-engine`` wheel,
        or ``"full"`` (``0``): the original 35,947-vertex scan ``meshes/bun_zipper.ply``
        (69,451 faces), found through :func:`~geoinv.datasets.data_file` (download from
        libigl-tests-data, md5-checked). A file ``meshes/bun_zipper_res{r}.ply`` in
        ``$GEOINV_DATA_DIR`` takes precedence over the shipped copy.

    Returns
    -------
    MeshSignal
        ``vertices`` (N, 3) float32 in the file's vertex order and coordinates (metres,
        ears towards +y), ``faces`` (F, 3) int64, ``values`` zeros (N, 1), ``name``
        ``"bunny_res{r}"`` (``"bunny_resfull"`` for the scan).

    Notes
    -----
    The files are read with ``trimesh.load(..., force="mesh", process=False)`` so that no
    vertex is merged, dropped or reordered. Unreferenced vertices are kept (res3 has 2, the
    full scan 1,113); the bottom of the scan has holes (open boundary loops). A new
    container is returned every call; containers of one resolution share their geometry
    cache (Laplacian, geodesic solver), which only depends on the fixed geometry.

    Examples
    --------
    >>> from geoinv.datasets import stanford_bunny
    >>> b = stanford_bunny(3)
    >>> b.n_points, b.faces.shape[0]
    (1889, 3851)
    """
    res = _normalize_resolution(resolution)
    v, f = _bunny_arrays(res)
    return MeshSignal(v.copy(), f.copy(), np.zeros((len(v), 1), np.float32), name=f"bunny_res{res}", _cache=_shared_cache(res))
