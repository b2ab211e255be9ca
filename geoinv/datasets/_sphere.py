"""Spherical data: WMAP maps and mask (HEALPix nside 32), Gaussian random fields."""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from geoinv.datasets._fetch import data_file, package_data_dir
from geoinv.errors import DataNotFoundError, ShapeError
from geoinv.signals import SphereSignal, healpix_nside

__all__ = ["wmap_mask", "wmap_map", "grf_sphere", "grf_sphere_cl"]

logger = logging.getLogger(__name__)

_WMAP_MASK = "healpix/wmap_temperature_analysis_mask_r9_7yr_v4_udgraded32.fits"
_WMAP_MAP = "healpix/wmap_band_iqumap_r9_7yr_{band}_v4_udgraded32.fits"


def wmap_mask() -> np.ndarray:
    """The WMAP 7-year temperature analysis mask (galactic plane and point sources cut).

    Returns
    -------
    ndarray of bool, shape (12288,)
        HEALPix nside 32, RING order, Galactic coordinates; True = observed (kept),
        61.9 % of the sky. Convert to geoinv's NESTED order with
        ``mask[healpy.nest2ring(32, np.arange(12288))]``.

    Notes
    -----
    File ``healpix/wmap_temperature_analysis_mask_r9_7yr_v4_udgraded32.fits`` (healpy's
    test data; NASA/LAMBDA, public). The FITS file stores the mask three times (I, Q, U
    columns, identical); the I column is used.
    """
    import healpy as hp

    m = hp.read_map(str(data_file(_WMAP_MASK)), field=0, dtype=np.float64)
    return np.asarray(m > 0.5)


def wmap_map(band: str = "W") -> np.ndarray:
    """A WMAP 7-year temperature (Stokes I) sky map.

    Parameters
    ----------
    band : {"W", "V"}
        WMAP frequency band (W: 94 GHz, V: 61 GHz).

    Returns
    -------
    ndarray of float64, shape (12288,)
        HEALPix nside 32, RING order, Galactic coordinates, thermodynamic mK (the FITS
        header records neither unit nor frame). The galactic plane dominates: combine with
        :func:`wmap_mask`. ``SphereSignal.from_healpix(m, nest=False)`` makes a signal.
    """
    import healpy as hp

    b = str(band).upper()
    if b not in ("W", "V"):
        raise DataNotFoundError(f"there is no WMAP band {band!r} in the data; use 'W' or 'V'")
    return np.asarray(hp.read_map(str(data_file(_WMAP_MAP.format(band=b))), field=0, dtype=np.float64))


def _sample_tt_spectrum() -> np.ndarray:
    """healpy's sample LambdaCDM TT spectrum ``C_l`` (l = 0..2000), from its ``totcls.dat``."""
    pkg = package_data_dir("healpy")
    path = pkg / "data" / "totcls.dat" if pkg is not None else None
    if path is None or not path.is_file():
        raise DataNotFoundError(
            "healpy's sample CMB spectrum healpy/data/totcls.dat was not found; reinstall healpy "
            "(`pip install --force-reinstall healpy`)"
        )
    table = np.loadtxt(path)
    ell, dl = table[:, 0], table[:, 1]  # columns: l, TT, EE, BB, TE as D_l = l(l+1) C_l / 2pi
    cl = np.zeros_like(dl)
    pos = ell > 0
    cl[pos] = dl[pos] * 2 * np.pi / (ell[pos] * (ell[pos] + 1))
    return cl


def grf_sphere_cl(nside: int = 16, lmax: int | None = None) -> np.ndarray:
    """Angular power spectrum of :func:`grf_sphere`, normalised to unit variance.

    Parameters
    ----------
    nside : int
        HEALPix resolution (power of two); sets the default ``lmax = 3 nside - 1``.
    lmax : int, optional
        Band limit, ``2 <= lmax <= 2000``.

    Returns
    -------
    ndarray of float64, shape (lmax + 1,)
        ``C_l = C_l^TT / sigma^2`` with ``sigma^2 = sum_l (2l + 1) C_l^TT / (4 pi)``, so that
        ``sum_l (2l + 1) C_l / (4 pi) = 1``: the field has unit variance at every point and
        covariance ``sum_l (2l + 1) / (4 pi) C_l P_l(cos gamma)`` at angular distance
        ``gamma``. ``C_l^TT`` is healpy's sample LambdaCDM CMB spectrum (``totcls.dat``,
        stored as ``D_l = l(l+1) C_l / 2 pi``); ``C_0 = C_1 = 0`` (no monopole, no dipole).
    """
    nside = _check_nside(nside)
    lmax = 3 * nside - 1 if lmax is None else lmax
    if isinstance(lmax, bool) or not isinstance(lmax, (int, np.integer)) or not 2 <= int(lmax) <= 2000:
        raise ShapeError(f"lmax must be an integer in [2, 2000] (healpy's sample spectrum stops at 2000), got {lmax!r}")
    cl = _sample_tt_spectrum()[: int(lmax) + 1].copy()
    ell = np.arange(len(cl))
    var = float(np.sum((2 * ell + 1) * cl) / (4 * np.pi))
    return cl / var


def _check_nside(nside) -> int:
    if isinstance(nside, bool) or not isinstance(nside, (int, np.integer)) or nside < 1:
        raise ShapeError(f"nside must be a positive power of two (1, 2, 4, 8, 16, ...), got {nside!r}")
    healpix_nside(12 * int(nside) ** 2)  # raises ShapeError unless a power of two
    return int(nside)


def _openmp_single_thread():
    """Limit OpenMP to one thread while healpy transforms small maps (needs threadpoolctl).

    At small nside the transforms are tiny; with several OpenMP threads they are slower, and
    OpenMP's spin-waiting makes them orders of magnitude slower on a machine whose cores are
    busy. Without threadpoolctl this is a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="openmp")


def grf_sphere(nside: int = 16, n: int = 1000, seed: int | None = 0, lmax: int | None = None) -> SphereSignal:
    """Gaussian random fields on the sphere with a CMB-like spectrum and unit variance.

    Parameters
    ----------
    nside : int
        HEALPix resolution (power of two); ``12 nside^2`` points.
    n : int
        Number of independent fields.
    seed : int or None
        Seed of the ``numpy.random.default_rng`` that draws the harmonic coefficients.
        The same seed gives the same fields; numpy's global random state is neither used
        nor changed.
    lmax : int, optional
        Band limit; default ``3 nside - 1``.

    Returns
    -------
    SphereSignal
        Batched HEALPix signal, values (n, 12 nside^2, 1) float32 in geoinv's NESTED order,
        name ``"grf_nside{nside}"``.

    Notes
    -----
    The spectrum is :func:`grf_sphere_cl` (healpy's sample LambdaCDM TT spectrum divided by
    its variance ``sum_l (2l + 1) C_l / 4 pi``). As in ``healpy.synalm``, ``a_l0 ~ N(0, C_l)``
    and, for ``m > 0``, ``Re a_lm, Im a_lm ~ N(0, C_l / 2)`` independently, here drawn with
    an explicit generator (``healpy.synalm``/``synfast`` only use numpy's global state).
    The maps are synthesised with ``healpy.alm2map`` at the RING pixel centres (no pixel
    window, no beam) and reordered to NESTED by :meth:`SphereSignal.from_healpix`; every
    pixel then has variance exactly 1.
    """
    import healpy as hp

    nside = _check_nside(nside)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ShapeError(f"n (number of fields) must be a positive integer, got {n!r}")
    cl = grf_sphere_cl(nside, lmax)
    lmax = len(cl) - 1
    ell, m = hp.Alm.getlm(lmax)
    rng = np.random.default_rng(seed)
    sd = np.sqrt(cl[ell])
    re = rng.standard_normal((int(n), len(ell)))
    im = rng.standard_normal((int(n), len(ell)))
    alm = np.where(m == 0, re * sd, (re + 1j * im) * (sd / np.sqrt(2.0))).astype(np.complex128)
    with _openmp_single_thread() if nside <= 64 else contextlib.nullcontext():
        maps = hp.alm2map(alm, nside, lmax=lmax, pol=False)  # (n, npix), RING
    maps = np.asarray(maps, dtype=np.float32).reshape(int(n), -1, 1)
    logger.debug("grf_sphere: %d fields, nside %d, lmax %d", n, nside, lmax)
    return SphereSignal.from_healpix(maps, nest=False, name=f"grf_nside{nside}")
