"""Contiguous holes: unions of geodesic balls of a common radius."""

from __future__ import annotations

import logging

import numpy as np
import torch

from geoinv.errors import MaskError
from geoinv.masks._common import check_count, check_missing, n_points_of

__all__ = ["geodesic_patches"]

logger = logging.getLogger(__name__)


def _centre_candidates(signal) -> np.ndarray:
    """Points that may be patch centres: mesh vertices used by a face, else every point."""
    faces = getattr(signal, "faces", None)
    if faces is not None and getattr(signal, "kind", None) == "mesh":
        return np.unique(faces.detach().cpu().numpy())
    return np.arange(signal.n_points)


def _best_radius(dmin: np.ndarray, k: int) -> tuple[float, int]:
    """Radius ``r`` whose ball union ``{dmin <= r}`` has a size closest to ``k``.

    Exact over all radii: the union size only changes at the sorted distinct values of
    ``dmin``, so the best radius is one of them (ties prefer the smaller radius).
    """
    finite = np.sort(dmin[np.isfinite(dmin)])
    if k == 0:
        return -np.inf, 0
    values, counts = np.unique(finite, return_counts=True)
    sizes = np.cumsum(counts)  # union size when r = values[j]
    j = int(np.argmin(np.abs(sizes - k)))
    return float(values[j]), int(sizes[j])


def geodesic_patches(
    signal,
    missing: float = 0.3,
    n_patches: int = 5,
    seed: int | None = None,
    n: int | None = None,
    return_centers: bool = False,
):
    """Mask hiding contiguous patches: geodesic balls around random centres.

    Parameters
    ----------
    signal : MeshSignal, SphereSignal or GridSignal
        Distances come from ``signal.distances(source)``: heat-method geodesics on meshes,
        great-circle distances on the sphere, Euclidean (or periodic) distances on grids.
    missing : float in [0, 1)
        Target fraction of hidden points.
    n_patches : int
        Number of balls (centres distinct, uniform among the points; on meshes among the
        vertices that belong to a face).
    seed : int, optional
        Seed of ``numpy.random.default_rng``; the same seed gives the same masks.
    n : int, optional
        Number of independent masks; ``None`` gives a single mask.
    return_centers : bool
        Also return the centres and radii.

    Returns
    -------
    mask : torch.BoolTensor, shape (N,) or (n, N)
        True = observed. The hidden set is ``{i : min_c d(c, i) <= r}`` for the centres
        ``c`` and one radius ``r`` common to all balls of a mask.
    centers : ndarray of int64, shape (n_patches,) or (n, n_patches)
        Only when ``return_centers``.
    radii : ndarray of float64, shape () or (n,)
        Only when ``return_centers``.

    Notes
    -----
    The radius is chosen exactly (not by bisection): the union size is a step function of
    ``r`` that only jumps at the distances ``min_c d(c, i)``, so ``r`` is the distance at
    which the union size is closest to ``round(missing * N)``. The achieved fraction
    differs from the target only by ties (points at equal distance) and the granularity
    of the mesh. Points unreachable from every centre (another connected component,
    unreferenced vertices) are never hidden.
    """
    n_points = n_points_of(signal)
    k = check_missing(missing, n_points)
    count = check_count(n)
    n_patches = check_count(n_patches, "n_patches")
    cand = _centre_candidates(signal)
    if n_patches > len(cand):
        raise MaskError(f"n_patches={n_patches} exceeds the {len(cand)} points that can be centres; use fewer patches")
    rng = np.random.default_rng(seed)
    masks, centres, radii = [], [], []
    dist_cache: dict[int, np.ndarray] = {}
    for _ in range(count or 1):
        c = np.sort(rng.choice(cand, size=n_patches, replace=False)).astype(np.int64)
        d = np.stack([dist_cache.setdefault(int(s), np.asarray(signal.distances(int(s)), dtype=np.float64)) for s in c])
        dmin = d.min(axis=0)
        r, size = _best_radius(dmin, k)
        if size != k:
            logger.debug("geodesic_patches: hid %d points for a target of %d (ties / mesh granularity)", size, k)
        reach = int(np.isfinite(dmin).sum())
        if reach < k:
            logger.warning(
                "geodesic_patches: only %d points are reachable from the %d centres, fewer than the %d to hide",
                reach, n_patches, k,
            )
        masks.append(~(dmin <= r))
        centres.append(c)
        radii.append(r)
    mask = torch.from_numpy(np.stack(masks))
    centres_a, radii_a = np.stack(centres), np.asarray(radii, dtype=np.float64)
    if count is None:
        mask, centres_a, radii_a = mask[0].clone(), centres_a[0], radii_a[0]
    if return_centers:
        return mask, centres_a, radii_a
    return mask
