"""Unit-sphere geometry: coordinates, distances, HEALPix, kNN graphs, area weights.

Private module: import the public names from :mod:`geoinv.geometry`.
Angles in degrees on input (longitude, latitude); distances in radians on the
unit sphere; areas in steradians (sum ``4 pi`` over the sphere).
"""

from __future__ import annotations

import logging

import numpy as np

from ._graph import GridError, SphereError, _as_count, _as_finite_float, _unique_undirected

logger = logging.getLogger(__name__)

__all__ = [
    "lonlat_to_xyz",
    "xyz_to_lonlat",
    "great_circle_distance",
    "healpix_neighbour_graph",
    "healpix_lonlat",
    "healpix_areas",
    "sphere_knn_graph",
    "latlon_cell_areas",
    "scattered_sphere_areas",
]


def _check_lonlat(lon_deg, lat_deg, names=("lon_deg", "lat_deg")) -> tuple[np.ndarray, np.ndarray]:
    lon = _as_finite_float(lon_deg, names[0], SphereError)
    lat = _as_finite_float(lat_deg, names[1], SphereError)
    if np.any(np.abs(lat) > 90.0 + 1e-9):
        raise SphereError(
            f"{names[1]} must lie in [-90, 90] degrees, got values in "
            f"[{lat.min():g}, {lat.max():g}]; did you swap longitude and latitude "
            "or pass radians?"
        )
    try:
        lon, lat = np.broadcast_arrays(lon, lat)
    except ValueError as exc:
        raise SphereError(
            f"{names[0]} {lon.shape} and {names[1]} {lat.shape} cannot be broadcast together"
        ) from exc
    return lon, np.clip(lat, -90.0, 90.0)


def _check_nside(nside, nest: bool) -> int:
    import healpy as hp  # lazy

    ns = _as_count(nside, "nside", SphereError, minimum=1)
    if not hp.isnsideok(ns, nest=bool(nest)):
        raise SphereError(
            f"nside={ns} is not valid for the {'NESTED' if nest else 'RING'} scheme; "
            "NESTED requires a power of two (1, 2, 4, ...)"
        )
    return ns


# ---------------------------------------------------------------------------
# coordinates and distances
# ---------------------------------------------------------------------------


def lonlat_to_xyz(lon_deg, lat_deg) -> np.ndarray:
    """Unit vectors from longitude/latitude in degrees.

    Parameters
    ----------
    lon_deg, lat_deg : array_like of float, shape (N,) (broadcastable)
        Longitude and latitude in degrees; latitude in ``[-90, 90]``.

    Returns
    -------
    numpy.ndarray, shape (N, 3), float64
        ``(cos lat cos lon, cos lat sin lon, sin lat)`` (more generally the
        broadcast shape of the inputs followed by ``3``).
    """
    lon, lat = _check_lonlat(lon_deg, lat_deg)
    lam, phi = np.deg2rad(lon), np.deg2rad(lat)
    c = np.cos(phi)
    return np.stack([c * np.cos(lam), c * np.sin(lam), np.sin(phi)], axis=-1)


def xyz_to_lonlat(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude in degrees of (not necessarily unit) 3-vectors.

    Parameters
    ----------
    xyz : array_like of float, shape (N, 3)
        Cartesian points; only the direction matters.

    Returns
    -------
    lon_deg : numpy.ndarray, shape (N,)
        Longitude in degrees in ``(-180, 180]``.
    lat_deg : numpy.ndarray, shape (N,)
        Latitude in degrees in ``[-90, 90]`` (computed with ``atan2``, accurate
        near the poles).

    Raises
    ------
    SphereError
        If the last axis is not of length 3 or a vector is zero.
    """
    p = _as_finite_float(xyz, "xyz", SphereError)
    if p.ndim < 1 or p.shape[-1] != 3:
        raise SphereError(f"xyz must have shape (N, 3), got {p.shape}")
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    rho = np.hypot(x, y)
    if np.any((rho == 0) & (z == 0)):
        raise SphereError("xyz contains a zero vector, which has no direction on the sphere")
    lon = np.rad2deg(np.arctan2(y, x))
    lat = np.rad2deg(np.arctan2(z, rho))
    return lon, lat


def great_circle_distance(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance on the unit sphere (radians), vectorised.

    Uses the ``atan2`` (Vincenty special case) form, which is accurate for
    all separations, including nearly coincident and nearly antipodal points:
    ``atan2(sqrt((cos p2 sin dl)^2 + (cos p1 sin p2 - sin p1 cos p2 cos dl)^2),
    sin p1 sin p2 + cos p1 cos p2 cos dl)``.

    Parameters
    ----------
    lon1, lat1, lon2, lat2 : array_like of float
        Coordinates in degrees (broadcastable against each other).

    Returns
    -------
    numpy.ndarray
        Central angle in ``[0, pi]``, broadcast shape of the inputs.
    """
    lo1, la1 = _check_lonlat(lon1, lat1, ("lon1", "lat1"))
    lo2, la2 = _check_lonlat(lon2, lat2, ("lon2", "lat2"))
    p1, p2 = np.deg2rad(la1), np.deg2rad(la2)
    dl = np.deg2rad(lo2) - np.deg2rad(lo1)
    s1, c1, s2, c2 = np.sin(p1), np.cos(p1), np.sin(p2), np.cos(p2)
    sdl, cdl = np.sin(dl), np.cos(dl)
    num = np.hypot(c2 * sdl, c1 * s2 - s1 * c2 * cdl)
    den = s1 * s2 + c1 * c2 * cdl
    return np.arctan2(num, den)


# ---------------------------------------------------------------------------
# HEALPix
# ---------------------------------------------------------------------------


def healpix_neighbour_graph(nside, nest=True) -> np.ndarray:
    """Pixel adjacency graph of a HEALPix map (8-neighbourhood).

    Parameters
    ----------
    nside : int
        HEALPix resolution (power of two for ``nest=True``).
    nest : bool, optional
        Pixel ordering: NESTED (default) or RING.

    Returns
    -------
    numpy.ndarray, shape (2, E), int64
        Edges from ``healpy.get_all_neighbours`` with the ``-1`` (missing
        neighbour) entries dropped, symmetrized, unique, sorted, no self
        loops. Most pixels have 8 neighbours; for ``nside >= 2`` exactly 24
        pixels (3 around each of the 8 points where only 3 base pixels meet)
        have 7.
    """
    import healpy as hp  # lazy

    ns = _check_nside(nside, nest)
    npix = hp.nside2npix(ns)
    ipix = np.arange(npix, dtype=np.int64)
    nb = np.asarray(hp.get_all_neighbours(ns, ipix, nest=bool(nest)), dtype=np.int64)  # (8, N)
    src = np.broadcast_to(ipix, nb.shape)
    valid = nb >= 0
    return _unique_undirected(src[valid], nb[valid], npix)


def healpix_lonlat(nside, nest=True) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude (degrees) of the HEALPix pixel centres.

    Parameters
    ----------
    nside : int
        HEALPix resolution.
    nest : bool, optional
        Pixel ordering: NESTED (default) or RING.

    Returns
    -------
    lon_deg : numpy.ndarray, shape (12 * nside**2,)
        Longitude in ``[0, 360)``.
    lat_deg : numpy.ndarray, shape (12 * nside**2,)
        Latitude in ``[-90, 90]``.
    """
    import healpy as hp  # lazy

    ns = _check_nside(nside, nest)
    ipix = np.arange(hp.nside2npix(ns), dtype=np.int64)
    lon, lat = hp.pix2ang(ns, ipix, nest=bool(nest), lonlat=True)
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def healpix_areas(nside) -> np.ndarray:
    """Pixel areas of a HEALPix map: all equal to ``4 pi / (12 nside^2)``.

    Parameters
    ----------
    nside : int
        HEALPix resolution (any positive integer; ordering does not matter).

    Returns
    -------
    numpy.ndarray, shape (12 * nside**2,), float64
        Steradians per pixel; sums to ``4 pi``.
    """
    ns = _as_count(nside, "nside", SphereError, minimum=1)
    npix = 12 * ns * ns
    return np.full(npix, 4.0 * np.pi / npix, dtype=np.float64)


# ---------------------------------------------------------------------------
# scattered points
# ---------------------------------------------------------------------------


def sphere_knn_graph(lon_deg, lat_deg, k=8) -> np.ndarray:
    """Symmetrized k-nearest-neighbour graph of points on the unit sphere.

    Neighbours are found with :class:`scipy.spatial.cKDTree` on the unit
    vectors (chordal distance is monotone in great-circle distance, so the
    neighbours are the geodesically nearest ones).

    Parameters
    ----------
    lon_deg, lat_deg : array_like of float, shape (N,)
        Point coordinates in degrees.
    k : int, optional
        Neighbours per point (excluding itself), ``1 <= k <= N - 1``.

    Returns
    -------
    numpy.ndarray, shape (2, E), int64
        Union of the kNN relations in both directions, unique, sorted, no self
        loops; every node has at least ``k`` neighbours. Ties at the k-th
        distance are broken arbitrarily by the tree. Duplicate points are
        treated as distinct nodes at distance zero.
    """
    from scipy.spatial import cKDTree

    lon, lat = _check_lonlat(lon_deg, lat_deg)
    lon, lat = lon.reshape(-1), lat.reshape(-1)
    n = lon.size
    kk = _as_count(k, "k", SphereError, minimum=1)
    if kk > n - 1:
        raise SphereError(f"k={kk} is too large for {n} points; need k <= N - 1 = {n - 1}")
    xyz = lonlat_to_xyz(lon, lat)
    _, idx = cKDTree(xyz).query(xyz, k=kk + 1)
    idx = np.asarray(idx, dtype=np.int64).reshape(n, kk + 1)
    rows = np.arange(n, dtype=np.int64)[:, None]
    # drop the point itself (it may be missing from the list when duplicates exist),
    # then keep the first k remaining neighbours of every row
    not_self = idx != rows
    keep = not_self & (np.cumsum(not_self, axis=1) <= kk)
    src = np.broadcast_to(rows, idx.shape)[keep]
    dst = idx[keep]
    return _unique_undirected(src, dst, n)


def scattered_sphere_areas(lon_deg, lat_deg) -> np.ndarray:
    """Spherical Voronoi cell areas of scattered points on the unit sphere.

    Parameters
    ----------
    lon_deg, lat_deg : array_like of float, shape (N,)
        Point coordinates in degrees; ``N >= 4``, no duplicates.

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        Area (steradians) of each point's Voronoi region from
        ``scipy.spatial.SphericalVoronoi(...).calculate_areas()``; sums to
        ``4 pi``.

    Raises
    ------
    SphereError
        If there are fewer than 4 points, duplicate points, or all points lie
        on one great circle (scipy cannot build the diagram).
    """
    from scipy.spatial import SphericalVoronoi

    lon, lat = _check_lonlat(lon_deg, lat_deg)
    xyz = lonlat_to_xyz(lon.reshape(-1), lat.reshape(-1))
    if xyz.shape[0] < 4:
        raise SphereError(
            f"need at least 4 points for a spherical Voronoi diagram, got {xyz.shape[0]}"
        )
    try:
        sv = SphericalVoronoi(xyz, radius=1.0, center=np.zeros(3))
    except ValueError as exc:
        raise SphereError(
            f"scipy SphericalVoronoi failed ({exc}); remove duplicate points "
            "(e.g. both lon=0 and lon=360) and make sure points are not all coplanar"
        ) from exc
    return np.asarray(sv.calculate_areas(), dtype=np.float64)


# ---------------------------------------------------------------------------
# regular lat-lon grids
# ---------------------------------------------------------------------------


def latlon_cell_areas(lat_deg, lon_deg) -> np.ndarray:
    """Exact spherical cell areas of a regular lat-lon grid on the unit sphere.

    Coordinates are cell centres. Latitude bounds are the midpoints between
    consecutive centres; the two outer bounds are extrapolated by half the
    adjacent spacing and clipped to ``[-90, 90]`` (so a centre at a pole gets
    a polar-cap half cell). Every cell has longitude width equal to the
    (constant) longitude spacing. Area of a cell is
    ``dlon * (sin(lat_hi) - sin(lat_lo))`` (radians).

    Parameters
    ----------
    lat_deg : array_like of float, shape (nlat,)
        Strictly monotonic latitudes of cell centres, ``nlat >= 2``. The
        spacing may be non-uniform.
    lon_deg : array_like of float, shape (nlon,)
        Uniformly spaced longitudes of cell centres (increasing or decreasing,
        wrapping through 360 allowed), ``nlon >= 2``, covering at most 360 deg.

    Returns
    -------
    numpy.ndarray, shape (nlat, nlon), float64
        Steradians. A global grid sums to ``4 pi``.

    Raises
    ------
    GridError
        On non-monotonic latitudes, non-uniform longitudes, fewer than two
        coordinates on an axis, or longitude span exceeding 360 degrees.
    """
    lat = _as_finite_float(lat_deg, "lat_deg", GridError)
    lon = _as_finite_float(lon_deg, "lon_deg", GridError)
    if lat.ndim != 1 or lon.ndim != 1:
        raise GridError(
            f"lat_deg and lon_deg must be 1-D coordinate vectors, got shapes {lat.shape}, "
            f"{lon.shape}; pass the grid axes, not a meshgrid"
        )
    if lat.size < 2 or lon.size < 2:
        raise GridError(
            f"need at least 2 latitudes and 2 longitudes to infer cell bounds, got "
            f"{lat.size} and {lon.size}"
        )
    if np.any(np.abs(lat) > 90.0 + 1e-9):
        raise GridError(f"lat_deg must lie in [-90, 90], got [{lat.min():g}, {lat.max():g}]")
    dlat = np.diff(lat)
    if not (np.all(dlat > 0) or np.all(dlat < 0)):
        raise GridError("lat_deg must be strictly increasing or strictly decreasing")
    # longitude spacing (allow decreasing order and wrap-around through 360)
    dl = np.diff(lon)
    if np.all(dl < 0):
        dl = -dl
    dl = np.mod(dl, 360.0)
    dlon = float(dl.mean())
    if dlon <= 0 or not np.allclose(dl, dlon, rtol=1e-6, atol=1e-9):
        raise GridError(
            "lon_deg must be uniformly spaced (constant step), got steps in "
            f"[{dl.min():g}, {dl.max():g}] degrees"
        )
    if lon.size * dlon > 360.0 * (1.0 + 1e-9):
        raise GridError(
            f"{lon.size} longitudes with step {dlon:g} cover {lon.size * dlon:g} > 360 degrees; "
            "drop a duplicated longitude (e.g. 360 == 0)"
        )
    # latitude bounds (work in increasing order, map back at the end)
    flip = dlat[0] < 0
    la = lat[::-1] if flip else lat
    mid = 0.5 * (la[1:] + la[:-1])
    lo0 = la[0] - 0.5 * (la[1] - la[0])
    hi1 = la[-1] + 0.5 * (la[-1] - la[-2])
    bounds = np.clip(np.concatenate([[lo0], mid, [hi1]]), -90.0, 90.0)
    sb = np.sin(np.deg2rad(bounds))
    band = np.diff(sb)  # (nlat,) >= 0
    if flip:
        band = band[::-1]
    return np.outer(band, np.full(lon.size, np.deg2rad(dlon)))
