"""Labelled-grid plumbing: find lat/lon, align a grid with a prior's grid, check units and variables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoinv.errors import CoordinateError, DomainMismatchError, UnitsError

__all__ = ["find_latlon", "GridAlignment", "align_grid", "prior_metadata", "check_units", "check_variable",
           "KNOWN_PRIORS"]

log = logging.getLogger(__name__)

LAT_NAMES = ("latitude", "lat", "nav_lat", "rlat_deg")
LON_NAMES = ("longitude", "lon", "nav_lon", "long")
LAT_UNITS = ("degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn")
LON_UNITS = ("degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese")

#: What the priors trained by ``geoinv train`` on the bundled data sets model (keyed by the
#: training data set name, which a checkpoint's ``train_config["data"]["name"]`` records).
KNOWN_PRIORS = {
    "era5-uk-t2m": {"variable": "t2m", "units": "K", "long_name": "2 metre temperature"},
    "era5-global-t": {"variable": "t", "units": "K", "long_name": "Temperature"},
}

#: Variable names that mean the same quantity (ERA5 short names, WB2 long names, CMIP names).
_ALIASES = (
    {"t2m", "2t", "tas", "2m_temperature", "t2", "air_temperature_2m"},
    {"t", "ta", "temperature", "air_temperature"},
    {"msl", "mslp", "psl", "mean_sea_level_pressure"},
    {"z", "geopotential", "zg"},
)

_UNIT_ALIASES = {
    "k": "K", "kelvin": "K", "degk": "K", "deg_k": "K", "degrees_kelvin": "K",
    "degc": "degC", "deg_c": "degC", "celsius": "degC", "degrees_celsius": "degC", "°c": "degC", "c": "degC",
    "pa": "Pa", "hpa": "hPa", "m**2 s**-2": "m2 s-2", "m^2 s^-2": "m2 s-2", "m2 s-2": "m2 s-2",
}


def _is_lat(name: str, var: Any) -> bool:
    a = getattr(var, "attrs", {})
    return (name.lower() in LAT_NAMES or str(a.get("standard_name", "")).lower() == "latitude"
            or str(a.get("units", "")).lower().replace(" ", "") in LAT_UNITS or str(a.get("axis", "")).upper() == "Y")


def _is_lon(name: str, var: Any) -> bool:
    a = getattr(var, "attrs", {})
    return (name.lower() in LON_NAMES or str(a.get("standard_name", "")).lower() == "longitude"
            or str(a.get("units", "")).lower().replace(" ", "") in LON_UNITS or str(a.get("axis", "")).upper() == "X")


def find_latlon(da: Any, lat: str | None = None, lon: str | None = None) -> tuple[str, str]:
    """Names of the latitude and longitude dimensions of ``da``.

    A dimension counts as latitude when its name is ``latitude``/``lat`` (any case) or its
    coordinate carries CF attributes (``standard_name="latitude"``, ``units="degrees_north"``
    or ``axis="Y"``); likewise for longitude.

    Raises
    ------
    CoordinateError
        No (or an ambiguous) latitude/longitude dimension, or 2-D (curvilinear) coordinates;
        the message says how to rename.
    """
    dims = [str(d) for d in da.dims]

    def pick(given, test, what, default):
        if given is not None:
            if given not in dims:
                raise CoordinateError(f"{what}={given!r} is not a dimension of the data (dims: {dims})")
            return given
        hits = [d for d in dims if test(d, da.coords[d] if d in da.coords else None)]
        if len(hits) == 1:
            return hits[0]
        for name in ("lat", "latitude", "lon", "longitude"):
            c = da.coords.get(name)
            if c is not None and c.ndim == 2 and ((what == "latitude") == name.startswith("lat")):
                raise CoordinateError(
                    f"{what} is a 2-D coordinate {name}{c.dims}: a curvilinear grid. geoinv.climate needs a regular "
                    f"lat/lon grid; regrid first (e.g. with xesmf)")
        others = [d for d in dims if d not in ("time", "sample", "member", "number", "step")]
        if not hits:
            guess = next((d for d in others if d.lower() in (("y", "rlat", "j", "nlat", "lats") if what == "latitude"
                                                              else ("x", "rlon", "i", "nlon", "lons"))),
                         others[0] if others else "y")
            raise CoordinateError(
                f"no {what} dimension found in dims {dims} (looked for names {', '.join(default)} or CF attrs "
                f"standard_name='{what}' / units='degrees_{'north' if what == 'latitude' else 'east'}'). "
                f"Rename yours, e.g. da = da.rename({{'{guess}': '{default[0]}'}}), or pass "
                f"{'lat' if what == 'latitude' else 'lon'}='<dim name>'")
        arg = "lat" if what == "latitude" else "lon"
        raise CoordinateError(f"several dimensions look like {what}: {hits}; pass {arg}=<name>")

    la = pick(lat, _is_lat, "latitude", LAT_NAMES)
    lo = pick(lon, _is_lon, "longitude", LON_NAMES)
    if la == lo:
        raise CoordinateError(f"latitude and longitude resolve to the same dimension {la!r}; pass lat= and lon=")
    for name, what in ((la, "latitude"), (lo, "longitude")):
        if name not in da.coords:
            raise CoordinateError(f"dimension {name!r} ({what}) has no coordinate values; assign them: "
                                  f"da = da.assign_coords({name}=<degrees>)")
    latv = np.asarray(da[la].values, np.float64)
    if np.abs(latv).max() > 90 + 1e-6:
        raise CoordinateError(f"{la!r} has values beyond +-90 degrees ({latv.min():.3g}..{latv.max():.3g}); "
                              f"is it really latitude in degrees? (radians must be converted: np.degrees)")
    return la, lo


@dataclass(frozen=True)
class GridAlignment:
    """How an input lat/lon grid maps onto the grid geoinv solves on (the prior's grid).

    ``values_work = values_in[..., lat_index, :][..., lon_index]``; ``lat`` / ``lon`` are
    the working grid's coordinates (degrees) and ``fingerprint`` its domain fingerprint.
    """

    lat_index: np.ndarray
    lon_index: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    fingerprint: str
    note: str

    @property
    def identity(self) -> bool:
        """True when the working grid is the input grid."""
        return (np.array_equal(self.lat_index, np.arange(len(self.lat_index)))
                and np.array_equal(self.lon_index, np.arange(len(self.lon_index))))

    def inverse(self) -> tuple[np.ndarray, np.ndarray]:
        """Index arrays taking working-grid values back to the input order."""
        return np.argsort(self.lat_index), np.argsort(self.lon_index)


def _fingerprint(lat: np.ndarray, lon: np.ndarray) -> str:
    from geoinv.signals import SphereSignal

    return SphereSignal.from_grid(np.zeros((len(lat), len(lon)), np.float32), lat, lon).fingerprint


def _candidates(lat: np.ndarray, lon: np.ndarray):
    ilat = np.arange(len(lat))
    ilon = np.arange(len(lon))
    lat_opts = [("as given", ilat), ("latitude reversed", ilat[::-1])]
    lon_opts = [("as given", ilon, lon)]
    for label, wrapped in (("longitude in [0, 360)", lon % 360.0),
                           ("longitude in [-180, 180)", (lon + 180.0) % 360.0 - 180.0)):
        order = np.argsort(wrapped, kind="stable")
        lon_opts.append((label, order, wrapped[order]))
    for la_label, li in lat_opts:
        for lo_label, oi, lov in lon_opts:
            yield li, oi, lat[li], lov, f"{la_label}, {lo_label}"


def align_grid(lat: Any, lon: Any, prior: Any = None) -> GridAlignment:
    """Map an input grid onto the prior's grid (orientation, longitude convention).

    Without a prior (or a prior with no domain fingerprint) the input grid is used as it
    is. With one, the latitude order (ascending/descending) and the longitude convention
    ([0, 360) or [-180, 180), sorted) are tried until the domain fingerprint equals the
    prior's.

    Raises
    ------
    DomainMismatchError
        The grid is not the prior's grid in any of these conventions.
    """
    lat = np.asarray(lat, np.float64)
    lon = np.asarray(lon, np.float64)
    fp_prior = getattr(prior, "fingerprint", None) if prior is not None else None
    if fp_prior is None:
        if prior is not None and hasattr(prior, "event_shape") and prior.event_shape[0] not in (0, len(lat) * len(lon)):
            raise DomainMismatchError(
                f"prior {getattr(prior, 'name', '?')!r} has {prior.event_shape[0]} points, the grid has "
                f"{len(lat)} x {len(lon)} = {len(lat) * len(lon)}; use a prior fitted on this grid")
        return GridAlignment(np.arange(len(lat)), np.arange(len(lon)), lat, lon, _fingerprint(lat, lon), "as given")
    tried = []
    for li, oi, la, lo, note in _candidates(lat, lon):
        fp = _fingerprint(la, lo)
        tried.append(fp)
        if fp == fp_prior:
            if note != "as given, as given":
                log.info("climate: grid reordered to the prior's grid (%s)", note)
            return GridAlignment(li, oi, la, lo, fp, note)
    n_prior = getattr(prior, "event_shape", (None,))[0]
    raise DomainMismatchError(
        f"the data's {len(lat)} x {len(lon)} lat/lon grid (lat {lat.min():g}..{lat.max():g}, lon {lon.min():g}.."
        f"{lon.max():g}) is not the grid prior {getattr(prior, 'name', '?')!r} was trained on (domain {fp_prior}, "
        f"{n_prior} points), in any latitude order or longitude convention. Select the prior's region/resolution "
        f"(da.sel(...)), or fit a prior on your grid: geoinv.climate.fit_gaussian_prior(training_da)")


def _canon_units(u: Any) -> str | None:
    if u is None:
        return None
    s = str(u).strip()
    if not s:
        return None
    return _UNIT_ALIASES.get(s.lower(), s)


def prior_metadata(prior: Any) -> dict:
    """What a prior models: ``{"variable", "units", "long_name"}`` (keys may be missing).

    Looked up, in order, in ``prior.climate`` (set by :func:`fit_gaussian_prior`), the
    checkpoint's training statistics (``training_stats["climate"]``) and :data:`KNOWN_PRIORS`
    by the training data set name (``train_config["data"]["name"]``) or the prior's name.
    """
    if prior is None:
        return {}
    for src in (getattr(prior, "climate", None), (getattr(prior, "training_stats", None) or {}).get("climate")):
        if isinstance(src, dict) and src:
            return dict(src)
    cfg = getattr(prior, "train_config", None) or {}
    names = [((cfg.get("data") or {}).get("name") if isinstance(cfg, dict) else None), getattr(prior, "name", None)]
    base = getattr(prior, "base", None)
    if base is not None:
        names.append(getattr(base, "name", None))
    for n in names:
        if not n:
            continue
        for key, meta in KNOWN_PRIORS.items():
            if n == key or str(n).startswith(key + "-"):
                return dict(meta)
    return {}


def check_units(units: Any, meta: dict, what: str = "the data") -> None:
    """Raise :class:`UnitsError` if ``units`` differ from the prior's (``meta["units"]``)."""
    want = _canon_units(meta.get("units"))
    have = _canon_units(units)
    if want is None:
        return
    if have is None:
        log.warning("climate: %s carry no 'units' attribute; assuming the prior's units %r", what, want)
        return
    if have != want:
        hint = ""
        if {have, want} == {"K", "degC"}:
            hint = (" Convert first, e.g. da = (da + 273.15).assign_attrs(units='K')" if want == "K"
                    else " Convert first, e.g. da = (da - 273.15).assign_attrs(units='degC')")
        raise UnitsError(f"{what} are in {units!r}, but the prior models {meta.get('variable', 'its variable')} in "
                         f"{meta.get('units')!r}.{hint}")


def check_variable(name: Any, meta: dict) -> None:
    """Raise :class:`DomainMismatchError` if the variable is not the prior's (aliases allowed)."""
    want = meta.get("variable")
    if not want or not name:
        return
    a, b = str(name).lower(), str(want).lower()
    if a == b or any(a in g and b in g for g in _ALIASES):
        return
    raise DomainMismatchError(
        f"the data variable is {name!r}, but the prior was trained on {want!r}; use a prior for {name!r} "
        f"(or, if they really are the same quantity, rename: da.rename({want!r}))")
