"""ERA5 temperature fields (Copernicus C3S / ECMWF, CC-BY 4.0).

Attribution: "Contains modified Copernicus Climate Change Service information".
The offline files are netCDF conversions of public GRIB samples; without them, the
original GRIB is downloaded and opened with cfgrib (``pip install cfgrib``).
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from geoinv.datasets._fetch import DATA_DIR_ENV, SOURCES, data_file
from geoinv.errors import DataNotFoundError

__all__ = ["era5_uk_t2m", "era5_global_t", "era5_t2m_20deg"]

logger = logging.getLogger(__name__)


def _has_cfgrib() -> bool:
    """Whether the optional GRIB reader cfgrib is installed (checked without importing it)."""
    return importlib.util.find_spec("cfgrib") is not None


def _open_nc_or_grib(nc_relpath: str, grib_relpath: str):
    """Open the netCDF conversion if local, else the origin GRIB (downloaded) with cfgrib."""
    import xarray as xr

    try:
        path = data_file(nc_relpath)
    except DataNotFoundError:
        path = None
    if path is not None:
        with xr.open_dataset(path) as ds:
            return ds.load()
    if not _has_cfgrib():
        raise ImportError(
            f"{nc_relpath!r} is not in the data directory ({DATA_DIR_ENV}), and reading its origin, the GRIB "
            f"file {SOURCES[grib_relpath][0]}, needs cfgrib: `pip install cfgrib` (or `pip install geoinv[grib]`), "
            f"or set {DATA_DIR_ENV} to a folder containing {nc_relpath!r}"
        )
    path = data_file(grib_relpath)
    logger.info("opening %s with cfgrib", path)
    with xr.open_dataset(path, engine="cfgrib", indexpath="") as ds:
        return ds.load()


def era5_uk_t2m():
    """Hourly ERA5 2 m temperature over the UK, March 2019.

    Returns
    -------
    xarray.DataArray, shape (time=744, latitude=33, longitude=49), float32
        Variable ``t2m`` in K (CF attrs ``units="K"``, ``long_name="2 metre temperature"``
        and the GRIB attrs kept), hourly from 2019-03-01T00 to 2019-03-31T23. Latitude
        runs north to south (58 to 50 degrees N, 0.25 degree steps, as in the file),
        longitude west to east (-10 to 2 degrees E). Extra coordinates of the file:
        ``valid_time(time)`` and the scalars ``number``, ``step``, ``surface``.

    Notes
    -----
    Offline: ``climate/era5_t2m_2019-03_uk.nc`` in ``$GEOINV_DATA_DIR``. Otherwise the
    origin ``era5-2mt-2019-03-uk.grib`` of pydata/xarray-data is downloaded (md5-checked)
    and read with cfgrib. Use :meth:`geoinv.SphereSignal.from_xarray` for a batched signal.
    """
    ds = _open_nc_or_grib("climate/era5_t2m_2019-03_uk.nc", "climate/era5-2mt-2019-03-uk.grib")
    return ds["t2m"]


def era5_global_t(level: int = 850):
    """Global 3-degree ERA5 ensemble temperature at one pressure level.

    Parameters
    ----------
    level : {850, 500}
        Pressure level in hPa.

    Returns
    -------
    xarray.DataArray, shape (sample=40, latitude=61, longitude=120), float32
        Temperature ``t`` in K (CF attrs kept; ``standard_name="air_temperature"``).
        ``sample`` stacks ensemble member x time member-major: ``sample = 4 * number + j``
        for the 10 members ``number = 0..9`` of the ERA5 ensemble of data assimilations and
        the 4 analysis times 2017-01-01/02 at 00 and 12 UTC (``j = 0..3``); the coordinates
        ``number(sample)``, ``time(sample)`` and ``valid_time(sample)`` say which is which,
        ``isobaricInhPa`` is a scalar coordinate. Latitude runs from 90 to -90 (north to
        south), longitude from 0 to 357 degrees E.

    Notes
    -----
    The members differ by only about 0.3 K (rms), while the 4 times differ by 2-4 K: at one
    level the 40 samples are about 4 distinct fields (about 8 over both levels), not 40
    independent samples. Split train/test by time, never by member. Offline: ``climate/era5_levels_members_3deg.nc``; otherwise the origin
    ``era5-levels-members.grib`` of ecmwf/cfgrib is downloaded and read with cfgrib.
    """
    import xarray as xr

    ds = _open_nc_or_grib("climate/era5_levels_members_3deg.nc", "climate/era5-levels-members.grib")
    t = ds["t"]
    levels = [int(x) for x in np.asarray(t["isobaricInhPa"].values).ravel()]
    if int(level) not in levels:
        raise DataNotFoundError(f"there is no {level} hPa level in the ERA5 ensemble sample; available: {levels} hPa")
    t = t.sel(isobaricInhPa=float(level)).transpose("number", "time", "latitude", "longitude")
    n_mem, n_time = t.sizes["number"], t.sizes["time"]
    data = np.asarray(t.values).reshape(n_mem * n_time, t.sizes["latitude"], t.sizes["longitude"])
    coords = {
        "sample": ("sample", np.arange(n_mem * n_time)),
        "number": ("sample", np.repeat(np.asarray(t["number"].values), n_time)),
        "time": ("sample", np.tile(np.asarray(t["time"].values), n_mem)),
        "latitude": t["latitude"].variable.copy(deep=True),
        "longitude": t["longitude"].variable.copy(deep=True),
        "isobaricInhPa": t["isobaricInhPa"].variable.copy(deep=True),
    }
    if "valid_time" in t.coords and t["valid_time"].dims == ("time",):
        coords["valid_time"] = ("sample", np.tile(np.asarray(t["valid_time"].values), n_mem))
    out = xr.DataArray(data, dims=("sample", "latitude", "longitude"), coords=coords, name="t", attrs=dict(t.attrs))
    for name in ("number", "time", "valid_time"):
        if name in out.coords and name in t.coords:
            out[name].attrs.update(t[name].attrs)
    return out


def era5_t2m_20deg(i: int = 1):
    """A global 20-degree ERA5 2 m temperature field (unit-test sized).

    Parameters
    ----------
    i : {1, 2}
        ``1``: 2021-03-01T12 UTC, ``2``: 2021-03-02T12 UTC.

    Returns
    -------
    xarray.DataArray, shape (time=1, latitude=9, longitude=18), float64
        ``t2m`` in K; latitude 80 to -80 (north to south), longitude 0 to 340 degrees E.

    Notes
    -----
    Files ``climate/era5_2t_{i}.nc`` (from ecmwf/earthkit-data's test data; downloaded
    with an md5 check when not in ``$GEOINV_DATA_DIR``).
    """
    import xarray as xr

    if i not in (1, 2) or isinstance(i, bool):
        raise DataNotFoundError(f"there is no 20-degree ERA5 file number {i!r}; use i=1 (2021-03-01) or i=2 (2021-03-02)")
    path = data_file(f"climate/era5_2t_{i}.nc")
    with xr.open_dataset(path) as ds:
        return ds["t2m"].load()
