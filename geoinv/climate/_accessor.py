"""The ``da.geoinv`` accessor, registered when :mod:`geoinv.climate` is imported."""

from __future__ import annotations

from typing import Any

import xarray as xr

__all__ = ["GeoinvDataArrayAccessor"]


@xr.register_dataarray_accessor("geoinv")
class GeoinvDataArrayAccessor:
    """geoinv methods on a DataArray: ``da.geoinv.impute(...)``, ``da.geoinv.fit_gaussian_prior()``.

    Available after ``import geoinv.climate`` (which registers the accessor).
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    def impute(self, **kwargs: Any) -> xr.Dataset:
        """:func:`geoinv.climate.impute` on this DataArray (same keyword arguments)."""
        from geoinv.climate._impute import impute

        return impute(self._obj, **kwargs)

    def fit_gaussian_prior(self, **kwargs: Any):
        """:func:`geoinv.climate.fit_gaussian_prior` on this DataArray (complete training fields)."""
        from geoinv.climate._impute import fit_gaussian_prior

        return fit_gaussian_prior(self._obj, **kwargs)

    def to_signal(self, **kwargs: Any):
        """The field as a :class:`geoinv.SphereSignal` (lat/lon grid points on the unit sphere)."""
        from geoinv.signals import SphereSignal

        return SphereSignal.from_xarray(self._obj, **kwargs)
