"""Signals on the unit sphere: HEALPix grids (NESTED inside) or lat/lon points."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geoinv.errors import ShapeError
from geoinv.signals._base import SignalBase, as_float_tensor, geometry_hash

__all__ = ["SphereSignal", "healpix_nside"]

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")


def healpix_nside(npix: int) -> int:
    """The HEALPix ``nside`` with ``12 * nside**2 == npix``; :class:`ShapeError` otherwise."""
    nside = int(round(np.sqrt(max(npix, 0) / 12)))
    if nside < 1 or 12 * nside * nside != npix or nside & (nside - 1):
        valid = ", ".join(str(12 * 4**k) for k in range(7))
        raise ShapeError(
            f"a HEALPix map of {npix} pixels is not 12*nside^2 for a power-of-two nside "
            f"(valid lengths: {valid}, ...)"
        )
    return nside


def _find(names_present, candidates, what):
    for c in candidates:
        if c in names_present:
            return c
    raise ShapeError(
        f"no {what} coordinate found (looked for {', '.join(candidates)}; present: {', '.join(map(str, names_present))}); "
        f"rename yours, e.g. da.rename({{'y': '{candidates[0]}'}}), or pass {what}=<name>"
    )


@dataclass(frozen=True, eq=False)
class SphereSignal(SignalBase):
    """Values at points on the unit sphere.

    The points are either a HEALPix grid (``nside`` set; pixel order is always
    NESTED inside geoinv, RING only at IO: :meth:`from_healpix`, :meth:`to_healpix`),
    a regular lat/lon grid (``grid_shape = (nlat, nlon)``, points row-major over
    latitude then longitude), or arbitrary points.

    Parameters
    ----------
    values : Tensor, shape (N, C) or (B, N, C)
        NaN may mark missing values.
    lon, lat : ndarray, shape (N,)
        Point longitudes and latitudes in degrees. Derived when ``nside`` is given.
    nside : int, optional
        HEALPix resolution; the points are the NESTED pixel centres.
    grid_shape : tuple of int, optional
        ``(nlat, nlon)`` when the points form a regular grid.
    name : str, optional
    meta : dict, optional
        xarray metadata kept for :meth:`to_xarray` (dims, coords, attrs).
    """

    values: torch.Tensor
    lon: Any = None
    lat: Any = None
    nside: int | None = None
    grid_shape: tuple[int, int] | None = None
    name: str | None = None
    meta: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    kind = "sphere"
    _batched_ndim = 3

    def __post_init__(self) -> None:
        vals = as_float_tensor(self.values, "values")
        if vals.dim() == 1:
            vals = vals.unsqueeze(-1)
        if vals.dim() not in (2, 3):
            raise ShapeError(f"values must have shape (N, C) or (B, N, C), got {tuple(vals.shape)}")
        n = vals.shape[-2]
        if self.nside is not None:
            nside = healpix_nside(n)
            if nside != int(self.nside):
                raise ShapeError(
                    f"values have {n} points, which is HEALPix nside {nside}, not the nside {self.nside} given"
                )
            from geoinv import geometry

            lon, lat = geometry.healpix_lonlat(nside, nest=True)
            object.__setattr__(self, "nside", nside)
        else:
            if self.lon is None or self.lat is None:
                raise ShapeError("give either nside (HEALPix) or lon and lat (degrees) for every point")
            lon = np.array(self.lon, dtype=np.float64).reshape(-1)
            lat = np.array(self.lat, dtype=np.float64).reshape(-1)
            if lon.shape != (n,) or lat.shape != (n,):
                raise ShapeError(f"lon/lat must have one entry per point ({n}), got {lon.shape} and {lat.shape}")
            if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
                raise ShapeError("lon/lat contain NaN or inf")
            if np.abs(lat).max() > 90 + 1e-9:
                raise ShapeError(f"latitudes must lie in [-90, 90] degrees, got max |lat| = {np.abs(lat).max():.3g}")
            if self.grid_shape is not None and int(np.prod(self.grid_shape)) != n:
                raise ShapeError(f"grid_shape {self.grid_shape} does not hold {n} points")
        lon.setflags(write=False)
        lat.setflags(write=False)
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def n_points(self) -> int:
        """Number of points ``N``."""
        return self.values.shape[-2]

    def _point_layout(self, v):
        return v

    def _from_point_layout(self, x):
        return x

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_healpix(cls, values: Any, nest: bool = False, nside: int | None = None, name: str | None = None):
        """Build from a HEALPix map (RING order by default, as healpy writes maps).

        Parameters
        ----------
        values : array-like, shape (npix,), (npix, C), (B, npix) or (B, npix, C)
        nest : bool
            Ordering of ``values``; converted to NESTED inside.
        nside : int, optional
            Checked against the map length when given.
        """
        v = as_float_tensor(values, "values")
        npix_axis = 0 if v.dim() == 1 else (v.dim() - 1 if v.dim() == 2 and _is_npix(v.shape[-1]) and not _is_npix(v.shape[0]) else v.dim() - 2)
        if v.dim() == 1 or (v.dim() == 2 and npix_axis == 1):
            v = v.unsqueeze(-1)
        npix = v.shape[-2]
        ns = healpix_nside(npix)
        if nside is not None and ns != nside:
            raise ShapeError(f"map has {npix} pixels = nside {ns}, but nside={nside} was given")
        if not nest:
            import healpy as hp

            v = v[..., torch.as_tensor(hp.nest2ring(ns, np.arange(npix))), :]
        return cls(v, nside=ns, name=name)

    def to_healpix(self, nest: bool = False) -> np.ndarray:
        """The map as a numpy array, RING order unless ``nest``; shape (npix,) when C = 1 and unbatched."""
        if self.nside is None:
            raise ShapeError("this SphereSignal is not on a HEALPix grid; regrid it first")
        x = self.point_values().detach().cpu().numpy()
        if not nest:
            x = x[:, _ring2nest(self.nside), :]
        if x.shape[-1] == 1:
            x = x[..., 0]
        return x if self.is_batched else x[0]

    @classmethod
    def from_grid(cls, values: Any, lat: Any, lon: Any, name: str | None = None, meta: dict | None = None):
        """Build from a regular lat/lon grid.

        Parameters
        ----------
        values : array-like, shape (nlat, nlon), (B, nlat, nlon) or (B, nlat, nlon, C)
        lat : array-like, shape (nlat,), degrees
        lon : array-like, shape (nlon,), degrees
        """
        lat = np.asarray(lat, np.float64)
        lon = np.asarray(lon, np.float64)
        v = as_float_tensor(values, "values")
        nlat, nlon = len(lat), len(lon)
        if v.dim() == 2:
            v = v.unsqueeze(0).unsqueeze(-1)
            batched = False
        elif v.dim() == 3:
            v = v.unsqueeze(-1)
            batched = True
        else:
            batched = True
        if v.dim() != 4 or v.shape[1:3] != (nlat, nlon):
            raise ShapeError(f"grid values of shape {tuple(values.shape)} do not match (nlat, nlon) = ({nlat}, {nlon})")
        LA, LO = np.meshgrid(lat, lon, indexing="ij")
        v = v.reshape(v.shape[0], nlat * nlon, v.shape[-1])
        return cls(v if batched else v[0], lon=LO.ravel(), lat=LA.ravel(), grid_shape=(nlat, nlon), name=name, meta=meta or {})

    @classmethod
    def from_latlon(cls, values: Any, lat: Any, lon: Any, name: str | None = None):
        """Build from scattered points; ``values`` of shape (N,), (N, C) or (B, N, C)."""
        return cls(values, lon=lon, lat=lat, name=name)

    def grid_values(self) -> torch.Tensor:
        """Values of a regular-grid signal as ``(B, nlat, nlon, C)``."""
        if self.grid_shape is None:
            raise ShapeError("this SphereSignal is not a regular lat/lon grid")
        x = self.point_values()
        return x.reshape(x.shape[0], *self.grid_shape, x.shape[-1])

    @property
    def grid_lat(self) -> np.ndarray:
        """Latitudes of the grid rows, shape (nlat,)."""
        return self.lat.reshape(self.grid_shape)[:, 0]

    @property
    def grid_lon(self) -> np.ndarray:
        """Longitudes of the grid columns, shape (nlon,)."""
        return self.lon.reshape(self.grid_shape)[0, :]

    # -- xarray -----------------------------------------------------------------------------
    @classmethod
    def from_xarray(cls, da: Any, lat: str | None = None, lon: str | None = None) -> "SphereSignal":
        """Build from an ``xarray.DataArray`` with lat/lon dims (and at most one more dim).

        NaN marks missing values. Coordinates, dims order, name and attributes are kept
        in ``meta`` so that :meth:`to_xarray` gives the same DataArray back. A DataArray
        on a ``cells`` dim with xdggs/CF HEALPix attributes (``grid_name="healpix"``,
        ``level``, ``indexing_scheme``) becomes a HEALPix signal.
        """
        import xarray as xr

        if not isinstance(da, xr.DataArray):
            raise ShapeError(f"from_xarray needs an xarray.DataArray, got {type(da).__name__}; select a variable: ds['t2m']")
        if "cells" in da.dims and "cell_ids" in da.coords:
            return cls._from_xarray_healpix(da)
        lat = lat or _find(list(da.dims), LAT_NAMES, "lat")
        lon = lon or _find(list(da.dims), LON_NAMES, "lon")
        others = [d for d in da.dims if d not in (lat, lon)]
        if len(others) > 1:
            raise ShapeError(
                f"DataArray has dims {da.dims}: besides {lat}/{lon} at most one more dim (e.g. time) is allowed; "
                f"select or stack the others first"
            )
        order = others + [lat, lon]
        arr = da.transpose(*order)
        meta = {
            "dims": tuple(da.dims),
            "lat_name": lat,
            "lon_name": lon,
            "batch_dim": others[0] if others else None,
            "coords": {k: v.variable.copy(deep=True) for k, v in da.coords.items()},
            "attrs": dict(da.attrs),
        }
        return cls.from_grid(np.asarray(arr.values, dtype=np.float32), arr[lat].values, arr[lon].values, name=da.name, meta=meta)

    @classmethod
    def _from_xarray_healpix(cls, da):
        ids = da["cell_ids"]
        attrs = {**ids.attrs}
        if attrs.get("grid_name", "healpix") != "healpix":
            raise ShapeError(f"cell_ids grid_name is {attrs.get('grid_name')!r}, expected 'healpix'")
        nest = str(attrs.get("indexing_scheme", "nested")).lower().startswith("nest")
        others = [d for d in da.dims if d != "cells"]
        if len(others) > 1:
            raise ShapeError(f"DataArray has dims {da.dims}: besides 'cells' at most one more dim is allowed")
        arr = da.transpose(*others, "cells")
        npix = arr.sizes["cells"]
        ns = healpix_nside(npix)
        if "level" in attrs and 2 ** int(attrs["level"]) != ns:
            raise ShapeError(f"cell_ids level {attrs['level']} means nside {2 ** int(attrs['level'])}, but the map has nside {ns}")
        order = np.argsort(np.asarray(ids.values))
        if not np.array_equal(np.asarray(ids.values)[order], np.arange(npix)):
            raise ShapeError("cell_ids must be a permutation of 0..npix-1 (full-sky maps only)")
        vals = np.asarray(arr.values, dtype=np.float32)[..., order]
        sig = cls.from_healpix(vals, nest=nest, name=da.name)
        meta = {"healpix": True, "nest_io": nest, "dims": tuple(da.dims), "batch_dim": others[0] if others else None,
                "coords": {k: v.variable.copy(deep=True) for k, v in da.coords.items() if k != "cell_ids"},
                "attrs": dict(da.attrs), "cell_attrs": attrs}
        return cls(sig.values, nside=ns, name=da.name, meta=meta)

    def to_xarray(self):
        """An ``xarray.DataArray`` (grid: ``(..., lat, lon)``; HEALPix: ``(..., cells)``; else ``(..., points)``).

        Single-channel signals drop the channel axis; more channels add a ``channel`` dim.
        """
        import xarray as xr

        x = self.point_values().detach().cpu().numpy()
        meta = self.meta
        batch_dim = meta.get("batch_dim") or "sample"
        coords = {k: v.copy(deep=True) for k, v in meta.get("coords", {}).items()}
        chan = x.shape[-1] > 1
        if self.nside is not None:
            nest = meta.get("nest_io", True)
            data = x if nest else x[:, _ring2nest(self.nside), :]
            data = data if chan else data[..., 0]
            data = data if self.is_batched else data[0]
            dims = ([batch_dim] if self.is_batched else []) + ["cells"] + (["channel"] if chan else [])
            cell_attrs = meta.get("cell_attrs", {"grid_name": "healpix", "level": int(np.log2(self.nside)),
                                                 "indexing_scheme": "nested" if nest else "ring"})
            coords["cell_ids"] = xr.Variable("cells", np.arange(self.n_points), cell_attrs)
            out = xr.DataArray(data, dims=dims, coords=_fit_coords(coords, dims), name=self.name, attrs=meta.get("attrs", {}))
            want = [d for d in meta.get("dims", dims) if d in dims]
            return out.transpose(*want, *[d for d in dims if d not in want])
        if self.grid_shape is not None:
            lat_name, lon_name = meta.get("lat_name", "lat"), meta.get("lon_name", "lon")
            g = x.reshape(x.shape[0], *self.grid_shape, x.shape[-1])
            g = g if chan else g[..., 0]
            g = g if self.is_batched else g[0]
            dims = ([batch_dim] if self.is_batched else []) + [lat_name, lon_name] + (["channel"] if chan else [])
            coords.setdefault(lat_name, xr.Variable(lat_name, self.grid_lat, {"units": "degrees_north", "standard_name": "latitude"}))
            coords.setdefault(lon_name, xr.Variable(lon_name, self.grid_lon, {"units": "degrees_east", "standard_name": "longitude"}))
            out = xr.DataArray(g, dims=dims, coords=_fit_coords(coords, dims), name=self.name, attrs=meta.get("attrs", {}))
            want = [d for d in meta.get("dims", dims) if d in dims]
            return out.transpose(*want, *[d for d in dims if d not in want])
        data = x if chan else x[..., 0]
        data = data if self.is_batched else data[0]
        dims = ([batch_dim] if self.is_batched else []) + ["points"] + (["channel"] if chan else [])
        coords.update(lat=("points", self.lat), lon=("points", self.lon))
        return xr.DataArray(data, dims=dims, coords=_fit_coords(coords, dims), name=self.name, attrs=meta.get("attrs", {}))

    # -- geometry ---------------------------------------------------------------------------
    def _geometry_key(self) -> str:
        if self.nside is not None:
            return f"healpix-nside{self.nside}-nested"
        return geometry_hash(self.lon, self.lat)

    def _edge_index(self) -> np.ndarray:
        from geoinv import geometry

        if self.nside is not None:
            return geometry.healpix_neighbour_graph(self.nside, nest=True)
        if self.grid_shape is not None:
            return _latlon_grid_edges(self.grid_lat, self.grid_lon)
        return geometry.sphere_knn_graph(self.lon, self.lat, k=6)

    def _area_weights(self) -> np.ndarray:
        from geoinv import geometry

        if self.nside is not None:
            return geometry.healpix_areas(self.nside)
        if self.grid_shape is not None:
            return geometry.latlon_cell_areas(self.grid_lat, self.grid_lon).ravel()
        return geometry.scattered_sphere_areas(self.lon, self.lat)

    def _laplacian(self):
        """Graph Laplacian with weights ``(a_i + a_j) / (2 d_ij^2)``: the five-point stencil's
        Dirichlet energy on a regular grid, and its natural extension to HEALPix and points."""
        from geoinv import geometry

        ei = self.edge_index().numpy()
        a = self.area_weights()
        d = geometry.great_circle_distance(self.lon[ei[0]], self.lat[ei[0]], self.lon[ei[1]], self.lat[ei[1]])
        w = 0.5 * (a[ei[0]] + a[ei[1]]) / np.maximum(d, 1e-9) ** 2
        return geometry.graph_laplacian(ei, self.n_points, w), a

    def _distances(self, source: int) -> np.ndarray:
        from geoinv import geometry

        return geometry.great_circle_distance(self.lon[source], self.lat[source], self.lon, self.lat)

    def __repr__(self) -> str:
        where = f"nside={self.nside}" if self.nside else (f"grid={self.grid_shape}" if self.grid_shape else "points")
        return f"SphereSignal(name={self.name!r}, {where}, values={tuple(self.values.shape)})"


def _ring2nest(nside: int) -> np.ndarray:
    """Index array ``p`` with ``ring_map = nest_map[p]``."""
    import healpy as hp

    return hp.ring2nest(nside, np.arange(12 * nside * nside))


def _is_npix(n: int) -> bool:
    try:
        healpix_nside(int(n))
        return True
    except ShapeError:
        return False


def _fit_coords(coords: dict, dims: list) -> dict:
    """Keep only coordinates whose dims exist in ``dims`` (e.g. drop a batch coord after indexing)."""
    out = {}
    for k, v in coords.items():
        vdims = v.dims if hasattr(v, "dims") else (v[0],) if isinstance(v, tuple) else ()
        if isinstance(vdims, str):
            vdims = (vdims,)
        if all(d in dims for d in vdims):
            out[k] = v
    return out


def _latlon_grid_edges(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """4-neighbour edges of a lat/lon grid, wrapping in longitude when the grid is global.

    Edges between coincident points (several longitudes at a pole) are dropped.
    """
    nlat, nlon = len(lat), len(lon)
    idx = np.arange(nlat * nlon).reshape(nlat, nlon)
    src = [idx[:-1, :].ravel(), idx[:, :-1].ravel()]
    dst = [idx[1:, :].ravel(), idx[:, 1:].ravel()]
    if nlon > 2:
        step = np.median(np.abs(np.diff(lon)))
        if abs(step * nlon - 360.0) < 1e-6 * 360 + 1e-9:
            src.append(idx[:, -1])
            dst.append(idx[:, 0])
    s, t = np.concatenate(src), np.concatenate(dst)
    at_pole = np.isclose(np.abs(lat), 90.0)
    row = np.repeat(np.arange(nlat), nlon)
    keep = ~(at_pole[row[s]] & (row[s] == row[t]))
    s, t = s[keep], t[keep]
    e = np.stack([np.concatenate([s, t]), np.concatenate([t, s])])
    order = np.lexsort((e[1], e[0]))
    return e[:, order].astype(np.int64)
