"""Climate workflow: fill gaps of gridded (lat, lon, time) fields with uncertainty, in xarray.

``import geoinv.climate`` registers the ``da.geoinv`` accessor (it imports xarray):

>>> import geoinv.climate
>>> ds = da.geoinv.impute(method="gaussian", prior=prior)        # doctest: +SKIP
>>> ds = geoinv.climate.impute(da, prior="era5-uk-t2m")           # doctest: +SKIP

See ``docs/climate.md`` for the sphere, units, dask and CLI (``geoinv impute``) details.
"""

from geoinv.climate import _accessor  # noqa: F401  (registers da.geoinv)
from geoinv.climate._grid import KNOWN_PRIORS, align_grid, find_latlon, prior_metadata
from geoinv.climate._impute import DEFAULT_SAMPLES, fit_gaussian_prior, healpix_roundtrip_error, impute
from geoinv.climate._io import write_netcdf
from geoinv.climate._norm import NormalizedPrior, prior_normalization

__all__ = ["impute", "fit_gaussian_prior", "write_netcdf", "healpix_roundtrip_error", "find_latlon", "align_grid",
           "prior_metadata", "KNOWN_PRIORS", "DEFAULT_SAMPLES", "NormalizedPrior", "prior_normalization"]
