"""Moving contiguous gaps on the sphere: drifting cloud-like patches over a time series."""

from __future__ import annotations

import logging

import numpy as np
import torch

from geoinv.errors import ShapeError
from geoinv.masks._common import check_count, check_missing, n_points_of
from geoinv.masks._patches import _best_radius

__all__ = ["moving_patches"]

logger = logging.getLogger(__name__)


def moving_patches(signal, n: int, missing: float = 0.4, n_patches: int = 3, speed: float = 0.5,
                   seed: int | None = None, return_centers: bool = False):
    """Masks of a time series hidden by drifting, cloud-like patches.

    ``n_patches`` geodesic discs start at random points and drift with constant
    velocities (mostly eastward, like weather systems in the westerlies): ``speed``
    degrees per step on average, heading east within +-60 degrees, each patch at
    0.5-1.5 times ``speed``. A patch leaving a regional box re-enters on the opposite
    side (longitude wraps on global grids, latitude reflects at the box edges). At every
    step one common radius is chosen exactly, as in :func:`geodesic_patches`, so that
    the hidden fraction is as close as possible to ``missing``. Consecutive masks
    therefore overlap strongly: contiguous gaps that move, as clouds do in satellite
    retrievals of surface temperature.

    Parameters
    ----------
    signal : SphereSignal
        Points with longitudes/latitudes (a lat/lon grid, HEALPix or scattered).
    n : int
        Number of time steps (masks).
    missing : float in [0, 1)
        Target fraction of hidden points per step.
    n_patches : int
        Number of drifting patches.
    speed : float
        Mean drift in degrees (of longitude/latitude) per step.
    seed : int, optional
        Seed of ``numpy.random.default_rng``.
    return_centers : bool
        Also return the patch centres ``(n, n_patches, 2)`` (lon, lat degrees) and radii ``(n,)``.

    Returns
    -------
    torch.BoolTensor, shape (n, N)
        True = observed.
    """
    from geoinv import geometry

    n_points = n_points_of(signal)
    if getattr(signal, "kind", None) != "sphere":
        raise ShapeError(f"moving_patches needs a SphereSignal (points with lon/lat), got a {signal.kind} signal")
    k = check_missing(missing, n_points)
    count = check_count(n)
    if count is None:
        raise ShapeError("n (number of time steps) is required for moving_patches")
    check_count(n_patches, "n_patches")
    if not np.isfinite(speed) or speed < 0:
        raise ShapeError(f"speed must be >= 0 degrees per step, got {speed}")
    lon = np.asarray(signal.lon, np.float64)
    lat = np.asarray(signal.lat, np.float64)
    periodic = np.ptp(lon) > 300
    lo0, lo1 = (0.0, 360.0) if periodic else (float(lon.min()), float(lon.max()))
    la0, la1 = float(lat.min()), float(lat.max())
    rng = np.random.default_rng(seed)
    start = rng.choice(n_points, size=n_patches, replace=False)
    pos = np.stack([lon[start] if not periodic else lon[start] % 360.0, lat[start]], -1)
    heading = np.radians(rng.uniform(-60, 60, size=n_patches))
    v = speed * rng.uniform(0.5, 1.5, size=n_patches)[:, None] * np.stack([np.cos(heading), np.sin(heading)], -1)
    masks, centres, radii = [], [], []
    for _ in range(count):
        d = np.stack([geometry.great_circle_distance(c[0], c[1], lon, lat) for c in pos]).min(0)
        r, size = _best_radius(d, k)
        if size != k:
            logger.debug("moving_patches: hid %d points for a target of %d (ties)", size, k)
        masks.append(~(d <= r))
        centres.append(pos.copy())
        radii.append(r)
        pos = pos + v
        # longitude: wrap (box width), latitude: reflect at the box edges
        width = lo1 - lo0 if lo1 > lo0 else 1.0
        pos[:, 0] = lo0 + (pos[:, 0] - lo0) % width
        over, under = pos[:, 1] > la1, pos[:, 1] < la0
        pos[over, 1] = 2 * la1 - pos[over, 1]
        pos[under, 1] = 2 * la0 - pos[under, 1]
        v[over | under, 1] *= -1
    mask = torch.from_numpy(np.stack(masks))
    if return_centers:
        return mask, np.stack(centres), np.asarray(radii)
    return mask
