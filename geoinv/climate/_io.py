"""Atomic NetCDF output: a temporary file in the target directory, then :func:`os.replace`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["write_netcdf"]


def write_netcdf(ds: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``ds`` to ``path`` atomically.

    The data go to a hidden temporary file ``.<name>.<random>.tmp`` in the target directory
    (same file system), which replaces ``path`` with :func:`os.replace` only after
    ``to_netcdf`` finished (a lazy, dask-backed Dataset is computed during the write). If
    anything fails, the temporary file is removed and an existing ``path`` is untouched; a
    killed process can leave the hidden temporary file behind, never a partial ``path``.

    Parameters
    ----------
    ds : xarray.Dataset
    path : path-like
    **kwargs
        Passed to :meth:`xarray.Dataset.to_netcdf` (e.g. ``encoding``, ``engine``).
    """
    from geoinv.io import atomic_path

    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, **kwargs)
    return Path(path)
