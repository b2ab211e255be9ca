r"""Gap filling of gridded climate fields with uncertainty: ``impute(da) -> xr.Dataset``.

The sphere
----------
The data stay on their own lat/lon grid: every grid point becomes a point on the unit
sphere (:meth:`geoinv.SphereSignal.from_grid`), with great-circle geometry, exact
spherical cell areas and a neighbour graph that wraps in longitude for global grids.
Nothing is regridded, so observed values can be returned bit for bit and the priors
trained on the lat/lon grids (``era5-uk-t2m``, ``era5-global-t``) apply directly. HEALPix
regridding is *not* offered: its round trip alone (bilinear lat/lon -> HEALPix -> lat/lon)
costs more than the noise level of the benchmark (numbers in ``docs/climate.md``, measured
by :func:`healpix_roundtrip_error`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoinv.climate._norm import NormalizedPrior
from geoinv.climate._grid import GridAlignment, align_grid, check_units, check_variable, find_latlon, prior_metadata
from geoinv.errors import CoordinateError, GeoinvError, MaskError, ShapeError

__all__ = ["impute", "fit_gaussian_prior", "healpix_roundtrip_error", "DEFAULT_SAMPLES"]

log = logging.getLogger(__name__)

#: posterior samples per time step when ``n_samples=None``
DEFAULT_SAMPLES = {"harmonic": 0, "gaussian": 0, "dps": 8, "mcg": 8, "tweedie": 8, "enkg": 32, "flow": 32}

_STEP = "_geoinv_step"

#: methods that run in the prior's own normalized units (see :class:`NormalizedPrior`)
NORMALIZED_METHODS = ("dps", "mcg", "enkg", "tweedie")


# ---------------------------------------------------------------------------------------------
# priors
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _load_prior_cached(name: str) -> Any:
    from pathlib import Path

    from geoinv import io

    if name in io.list_shipped_priors():
        return io.load_shipped_prior(name)
    p = Path(name)
    if p.with_suffix(".json").exists() or Path(str(p) + ".json").exists():
        return io.load_prior(p)
    from geoinv.errors import CheckpointError

    shipped = ", ".join(io.list_shipped_priors()) or "none"
    raise CheckpointError(f"prior {name!r} is neither a shipped prior ({shipped}) "
                          f"nor a checkpoint path (<dir>/<name>.json + .safetensors)")


def _gaussian_of(prior: Any):
    from geoinv.priors import GaussianPrior

    if isinstance(prior, GaussianPrior):
        return prior
    base = getattr(prior, "base", None)
    return base if isinstance(base, GaussianPrior) else None


def _auto_method(prior: Any) -> str:
    if prior is None:
        return "harmonic"
    from geoinv.priors import GaussianPrior

    return "gaussian" if isinstance(prior, GaussianPrior) else "dps"


# ---------------------------------------------------------------------------------------------
# the per-block solver (picklable plan; runs in dask workers too)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    method: str
    prior: Any  # object, or a str (shipped name / checkpoint path) loaded once per process
    noise_std: float | None
    n_samples: int
    keep_observed: bool
    seed: int
    batch_size: int
    align: GridAlignment
    options: dict = field(default_factory=dict)
    out_dtype: str = "float32"

    def prior_object(self):
        return _load_prior_cached(self.prior) if isinstance(self.prior, str) else self.prior


def _batch_seed(seed: int, batch_id: int) -> int:
    return int(np.random.SeedSequence([int(seed) % 2**32, int(batch_id)]).generate_state(1)[0])


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def _solve_block(values: np.ndarray, observed: np.ndarray, index: np.ndarray, plan: _Plan, progress: bool = False):
    """Impute a block of fields.

    Parameters
    ----------
    values : ndarray, shape (..., nlat, nlon)
        Input order and dtype; NaN (or ``observed == False``) marks gaps.
    observed : ndarray of bool, same shape
    index : ndarray of int, shape (...)
        Global step numbers (for chunk-independent batches and seeds).

    Returns
    -------
    mean, std : ndarray, shape (..., nlat, nlon)
    samples : ndarray, shape (..., S, nlat, nlon) (only when ``plan.n_samples >= 2``)
    """
    import torch

    import geoinv
    from geoinv.signals import SphereSignal

    if _in_dask_worker():
        torch.set_num_threads(1)
    lead = values.shape[:-2]
    nlat, nlon = values.shape[-2:]
    v = values.reshape(-1, nlat, nlon)
    obs = np.asarray(observed, bool).reshape(-1, nlat, nlon)
    idx = np.asarray(index).reshape(-1)
    b = v.shape[0]
    a = plan.align
    w = v[:, a.lat_index][:, :, a.lon_index].astype(np.float64).reshape(b, -1)
    m = obs[:, a.lat_index][:, :, a.lon_index].reshape(b, -1)
    n = w.shape[1]
    s = plan.n_samples if plan.n_samples >= 2 else 0
    mean = np.full((b, n), np.nan)
    std = np.full((b, n), np.nan)
    samples = np.full((b, s, n), np.nan) if s else None
    prior = plan.prior_object()
    gauss = _gaussian_of(prior)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=b, desc=f"impute ({plan.method})", unit="step", leave=False)
    batch_ids = idx // plan.batch_size
    for bid in np.unique(batch_ids):
        rows = np.flatnonzero(batch_ids == bid)
        some = rows[m[rows].any(1)]
        none = rows[~m[rows].any(1)]
        if len(none):
            log.warning("climate: %d time step(s) without any observed value; filled with %s", len(none),
                        "the prior mean and std" if gauss is not None else "NaN (no prior)")
            if gauss is not None:
                mean[none] = gauss.mean[:, 0].numpy()
                std[none] = gauss.variance[:, 0].clamp_min(0).sqrt().numpy()
                if s:
                    g = torch.Generator().manual_seed(_batch_seed(plan.seed, -1 - int(bid)))
                    samples[none] = gauss.sample(s * len(none), g)[..., 0].numpy().reshape(len(none), s, n)
        if len(some):
            ws = torch.as_tensor(w[some])
            solve_prior, noise = prior, plan.noise_std
            if plan.method in NORMALIZED_METHODS:  # diffusion samplers run in the prior's normalized units
                solve_prior = NormalizedPrior(prior)
                ws = solve_prior.to_normalized(ws[..., None])[..., 0]
                noise = None if noise is None else noise / solve_prior.scale
            sig = SphereSignal.from_grid(torch.where(torch.as_tensor(m[some]), ws, torch.nan).reshape(
                len(some), nlat, nlon), a.lat, a.lon)
            post = geoinv.solve(sig, torch.as_tensor(m[some]), method=plan.method, prior=solve_prior,
                                noise_std=noise, n_samples=max(plan.n_samples, 1),
                                seed=_batch_seed(plan.seed, int(bid)), progress=False, **dict(plan.options))
            pm = post.mean.point_values().double()
            ps = None if post.std is None else post.std.point_values().double()
            pz = None if post.samples is None else post.samples.double()
            if solve_prior is not prior:
                pm = solve_prior.to_data(pm)
                ps = None if ps is None else ps * solve_prior.scale
                pz = None if pz is None else solve_prior.to_data(pz)
            mean[some] = pm[..., 0].numpy()
            if ps is not None:
                std[some] = ps[..., 0].numpy()
            if s and pz is not None:
                samples[some] = pz[..., 0].numpy()
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    # back to the input grid order
    ilat, ilon = a.inverse()

    def back(x):
        return x.reshape(*x.shape[:-1], nlat, nlon)[..., ilat, :][..., ilon]

    dt = np.dtype(plan.out_dtype)
    mean, std = back(mean).astype(dt), back(std).astype(dt)
    if samples is not None:
        samples = back(samples).astype(dt)
    if plan.keep_observed:
        vals = v.astype(dt, copy=False)
        mean[obs] = vals[obs]
        std[obs] = 0
        if samples is not None:
            samples = np.where(obs[:, None], vals[:, None], samples)
    mean, std = mean.reshape(*lead, nlat, nlon), std.reshape(*lead, nlat, nlon)
    if samples is not None:
        return mean, std, samples.reshape(*lead, s, nlat, nlon)
    return mean, std


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _as_dataarray(da: Any):
    import xarray as xr

    if isinstance(da, xr.Dataset):
        names = list(da.data_vars)
        raise ShapeError(f"impute needs one variable (an xarray.DataArray), got a Dataset with {names}; "
                         f"select one: ds[{names[0]!r}]" if names else "the Dataset has no data variables")
    if not isinstance(da, xr.DataArray):
        raise ShapeError(f"impute needs an xarray.DataArray, got {type(da).__name__}")
    if not np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.complexfloating):
        raise ShapeError(f"impute needs real numbers, got dtype {da.dtype}")
    return da


def _observed_of(da, mask, lat: str, lon: str):
    import xarray as xr

    notnull = da.notnull()
    if mask is None:
        return notnull
    if isinstance(mask, xr.DataArray):
        if mask.dtype != bool:
            raise MaskError(f"mask must be boolean (True = observed), got dtype {mask.dtype}; use mask.astype(bool)")
        missing = [d for d in mask.dims if d not in da.dims]
        if missing:
            raise MaskError(f"mask has dims {missing} that the data lack (data dims: {da.dims})")
        mask = mask.broadcast_like(notnull).transpose(*da.dims)
        return mask
    arr = np.asarray(mask)
    if arr.dtype != bool:
        raise MaskError(f"mask must be boolean (True = observed), got dtype {arr.dtype}; use mask.astype(bool)")
    if arr.shape == (da.sizes[lat], da.sizes[lon]):
        arr = np.broadcast_to(arr, tuple(da.sizes[d] for d in da.dims if d not in (lat, lon)) + arr.shape)
        dims = [d for d in da.dims if d not in (lat, lon)] + [lat, lon]
        return xr.DataArray(arr, dims=dims, coords={k: c for k, c in da.coords.items() if set(c.dims) <= set(dims)}
                            ).transpose(*da.dims)
    if arr.shape != da.shape:
        raise MaskError(f"mask of shape {arr.shape} fits neither the data {da.shape} nor one field "
                        f"({da.sizes[lat]}, {da.sizes[lon]}); pass a boolean DataArray to broadcast by name")
    return xr.DataArray(arr, dims=da.dims, coords=da.coords)


def impute(da: Any, *, mask: Any = None, method: str = "auto", prior: Any = None, n_samples: int | None = None,
           keep_observed: bool = True, noise_std: float | None = None, seed: int = 0, progress: bool = True,
           batch_size: int = 24, lat: str | None = None, lon: str | None = None, **options: Any):
    r"""Fill the gaps of a gridded field, with uncertainty, time step by time step.

    Parameters
    ----------
    da : xarray.DataArray, dims (..., lat, lon)
        A regular lat/lon grid (any order of latitudes, longitudes in [0, 360) or
        [-180, 180)) plus any other dimensions (time, member, ...), each field imputed
        independently. NaN marks missing values. NumPy- or dask-backed; dask input gives
        a lazy result computed chunk by chunk (on a ``dask.distributed`` cluster when a
        ``Client`` exists).
    mask : bool array-like or DataArray, optional
        True = observed; shape of ``da``, of one field ``(nlat, nlon)``, or a DataArray
        broadcast by dimension name. Values where the mask is False are hidden (imputed).
        Default: the non-NaN values.
    method : str
        ``"harmonic"`` (Laplacian interpolation on the sphere, no prior),
        ``"gaussian"`` (optimal interpolation: exact posterior of a
        :class:`~geoinv.priors.GaussianPrior`), ``"dps"``, ``"mcg"``, ``"enkg"``,
        ``"flow"`` (learned priors), or ``"auto"``: gaussian for a Gaussian prior, DPS for
        a learned prior, harmonic without a prior.
    prior : str, Prior or None
        A shipped prior's name (``"era5-uk-t2m"``, ``"era5-global-t"``), a checkpoint path,
        or a prior object (e.g. from :func:`fit_gaussian_prior`). Its grid, variable and
        units are checked against ``da``.
    n_samples : int, optional
        Posterior samples per field (stored as ``samples`` with dim ``sample`` when >= 2).
        Default: 0 for harmonic/gaussian (closed-form std), 8 for DPS, 32 for EnKG/flow.
    keep_observed : bool
        True: observed values are returned unchanged (bit for bit, also in every sample)
        and their ``std`` is 0, so ``std`` is the imputation uncertainty. False: the
        posterior of the true field everywhere (observations are denoised when
        ``noise_std > 0``).
    noise_std : float, optional
        Observation noise standard deviation **in the units of** ``da`` (e.g. K). To state
        it in the prior's normalized units multiply by the prior's ``data_std``.
    seed : int
        Seeds every batch (derived from the global step number, so results do not depend
        on dask chunking when chunks are multiples of ``batch_size``).
    progress : bool
        A tqdm bar over time steps (NumPy input).
    batch_size : int
        Time steps per :func:`geoinv.solve` call.
    lat, lon : str, optional
        Names of the latitude/longitude dimensions (default: found by name or CF attrs).
    **options
        Method hyper-parameters passed to :func:`geoinv.solve` (e.g. ``num_steps``).

    Returns
    -------
    xarray.Dataset
        ``mean`` and ``std`` (dims and coordinates of ``da``, CF attributes with the input
        units), ``samples`` (dims ``(..., sample, lat, lon)``; the dim is called
        ``posterior_sample`` when ``da`` already has a ``sample`` dim) when ``n_samples >= 2``,
        ``mask`` (int8, 1 = observed, CF ``flag_values``), and provenance attributes
        (``geoinv_method``, ``geoinv_prior``, ``geoinv_version``, ``geoinv_parameters``,
        ``history``).

    Raises
    ------
    CoordinateError
        No latitude/longitude dimension (the message says how to rename).
    MaskError
        Nothing to impute (no NaN and no mask), or a malformed mask.
    DomainMismatchError
        The prior was trained on another grid or variable.
    UnitsError
        ``da.attrs["units"]`` differ from the prior's units.

    Notes
    -----
    Fields without a single observed value are filled with the prior's mean and standard
    deviation (the Gaussian prior's, or the Gaussian base of a learned prior) and with
    prior samples; without a prior (harmonic) they stay NaN. Either way the ``mask`` is
    all 0 there.

    Examples
    --------
    >>> import geoinv.climate                                    # registers da.geoinv
    >>> ds = da.geoinv.impute(method="gaussian", prior=prior)    # doctest: +SKIP
    """
    import xarray as xr

    from geoinv import __version__

    da = _as_dataarray(da)
    if method not in DEFAULT_SAMPLES and method != "auto":
        raise ValueError(f"unknown method {method!r}; choose one of auto, {', '.join(DEFAULT_SAMPLES)}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if noise_std is not None and (not math.isfinite(noise_std) or noise_std < 0):
        raise ValueError(f"noise_std must be a finite number >= 0 (units of the data) or None, got {noise_std}")
    la, lo = find_latlon(da, lat, lon)
    prior_ref = prior
    prior_obj = _load_prior_cached(prior) if isinstance(prior, str) else prior
    meta = prior_metadata(prior_obj)
    check_variable(da.name, meta)
    check_units(da.attrs.get("units"), meta, what=f"the values of {da.name or 'the data'!r}")
    align = align_grid(da[la].values, da[lo].values, prior_obj)
    method = _auto_method(prior_obj) if method == "auto" else method
    if method != "harmonic" and prior_obj is None:
        raise GeoinvError(f"method={method!r} needs a prior: prior='<shipped name>', a checkpoint path, or "
                          f"geoinv.climate.fit_gaussian_prior(training_da)")
    if method == "gaussian" and _gaussian_of(prior_obj) is None:
        raise GeoinvError("method='gaussian' needs a GaussianPrior (or a learned prior with a Gaussian base)")
    if n_samples is None:
        n_samples = DEFAULT_SAMPLES[method]
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    if method == "harmonic" and n_samples >= 2:
        log.warning("climate: method='harmonic' gives no samples; n_samples ignored")
        n_samples = 0
    if method == "dps" and not noise_std and "step_rule" not in options:
        options = {**options, "step_rule": "norm"}  # DPS's likelihood step needs noise_std > 0
    out_dtype = str(da.dtype) if np.issubdtype(da.dtype, np.floating) else "float32"
    plan = _Plan(method, prior_ref if isinstance(prior_ref, str) else prior_obj, noise_std, int(n_samples),
                 bool(keep_observed), int(seed), int(batch_size), align, dict(options), out_dtype)

    squeeze = False
    if da.ndim == 2:
        da = da.expand_dims(_STEP)
        squeeze = True
    extra = [d for d in da.dims if d not in (la, lo)]
    observed = _observed_of(da, mask, la, lo)
    lazy = da.chunks is not None or getattr(observed, "chunks", None) is not None
    shape = tuple(da.sizes[d] for d in extra)
    index = xr.DataArray(np.arange(int(np.prod(shape))).reshape(shape), dims=extra)
    if not lazy:
        obs_np = np.asarray(observed.values, bool)
        if obs_np.all():
            raise MaskError(
                f"nothing to impute: {da.name or 'the variable'!r} has no NaN and no mask hides any value. Mark gaps "
                f"as NaN (da.where(...)) or pass mask=<bool, True = observed>")
    else:
        chunks = {la: -1, lo: -1}
        if len(extra) == 1:  # batches never straddle chunks: results independent of the chunking
            c = da.chunksizes.get(extra[0], (da.sizes[extra[0]],)) if da.chunks is not None else (da.sizes[extra[0]],)
            chunks[extra[0]] = max(batch_size, (max(c) // batch_size) * batch_size)
        da = da.chunk(chunks)
        observed = (observed if getattr(observed, "chunks", None) is not None else observed.chunk()).chunk(
            {d: da.chunksizes[d] for d in observed.dims})
        index = index.chunk({d: da.chunksizes[d] for d in extra})
    s = n_samples if n_samples >= 2 else 0
    sdim = "sample" if "sample" not in da.dims else "posterior_sample"
    core = [la, lo]
    out_core = [core, core] + ([["_geoinv_sample", la, lo]] if s else [])
    kwargs = {"plan": plan}
    if not lazy:
        kwargs["progress"] = progress
    res = xr.apply_ufunc(
        _solve_block, da, observed, index,
        input_core_dims=[core, core, []], output_core_dims=out_core,
        kwargs=kwargs, dask="parallelized" if lazy else "forbidden",
        output_dtypes=[np.dtype(out_dtype)] * len(out_core),
        dask_gufunc_kwargs={"output_sizes": {"_geoinv_sample": s}} if s else None,
        keep_attrs=False,
    )
    mean, std = res[0].transpose(*da.dims), res[1].transpose(*da.dims)
    data_vars = {"mean": mean, "std": std}
    if s:
        data_vars["samples"] = res[2].rename({"_geoinv_sample": sdim}).transpose(*extra, sdim, la, lo)
    data_vars["mask"] = observed.astype(np.int8)
    ds = xr.Dataset(data_vars)
    ds = ds.assign_coords({k: v for k, v in da.coords.items() if k not in ds.coords})
    if s:
        ds = ds.assign_coords({sdim: np.arange(s)})
        ds[sdim].attrs = {"long_name": "posterior sample number"}
    _attributes(ds, da, plan, meta, prior_obj, options, __version__)
    if squeeze:
        ds = ds.isel({_STEP: 0}, drop=True)
    return ds


def _attributes(ds, da, plan: _Plan, meta: dict, prior_obj: Any, options: dict, version: str) -> None:
    name = da.name or "variable"
    units = da.attrs.get("units", meta.get("units"))
    long = da.attrs.get("long_name", meta.get("long_name", str(name)))
    std_name = da.attrs.get("standard_name")
    base_cm = str(da.attrs.get("cell_methods", "")).strip()
    cm = (base_cm + " " if base_cm else "")
    mean_attrs = {"long_name": f"{long}, posterior mean (gaps imputed)", "cell_methods": cm + "sample: mean"}
    std_attrs = {"long_name": f"{long}, posterior standard deviation",
                 "cell_methods": cm + "sample: standard_deviation"}
    if units is not None:
        mean_attrs["units"] = std_attrs["units"] = units
    if std_name and std_name != "unknown":
        mean_attrs["standard_name"] = std_name
    if plan.keep_observed:
        std_attrs["comment"] = "0 at observed points: observed values are passed through unchanged"
    ds["mean"].attrs = mean_attrs
    ds["std"].attrs = std_attrs
    if "samples" in ds:
        ds["samples"].attrs = {"long_name": f"{long}, posterior samples", **({"units": units} if units else {})}
        if std_name and std_name != "unknown":
            ds["samples"].attrs["standard_name"] = std_name
    ds["mask"].attrs = {"long_name": f"observation mask of {name}", "flag_values": np.array([0, 1], np.int8),
                        "flag_meanings": "missing observed"}
    params = {"method": plan.method, "noise_std": plan.noise_std, "noise_std_units": units, "n_samples": plan.n_samples,
              "keep_observed": plan.keep_observed, "seed": plan.seed, "batch_size": plan.batch_size,
              "grid": plan.align.note, "options": {k: (v if isinstance(v, (int, float, str, bool)) else repr(v))
                                                   for k, v in options.items()}}
    prior_name = None
    if prior_obj is not None:
        prior_name = plan.prior if isinstance(plan.prior, str) else getattr(prior_obj, "name", type(prior_obj).__name__)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    hist = str(da.attrs.get("history", "")).rstrip()
    ds.attrs = {
        "Conventions": "CF-1.10",
        "title": f"{long} with gaps imputed by geoinv ({plan.method})",
        "source_variable": str(name),
        "geoinv_method": plan.method,
        "geoinv_prior": "none" if prior_name is None else str(prior_name),
        "geoinv_prior_domain": str(getattr(prior_obj, "fingerprint", None)),
        "geoinv_version": version,
        "geoinv_parameters": json.dumps(params, default=str),
        "date_created": now,
        "history": (hist + "\n" if hist else "") + f"{now} geoinv {version} climate.impute(method={plan.method!r}, "
                                                   f"prior={prior_name!r})",
    }


SHRINKAGE_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3, 0.5)


def fit_gaussian_prior(train: Any, *, rank: int | None = None, shrinkage: float | str = "auto",
                       validation: str = "last", lat: str | None = None, lon: str | None = None,
                       name: str | None = None):
    """Fit the optimal-interpolation prior (mean and covariance) on complete training fields.

    Parameters
    ----------
    train : xarray.DataArray, dims (time, lat, lon)
        Gap-free training fields (e.g. the first 24 days); one extra dimension.
    rank : int, optional
        See :meth:`geoinv.priors.GaussianPrior.fit` (probabilistic PCA).
    shrinkage : float or "auto"
        Eigenvalue shrinkage towards their mean. ``"auto"`` picks it from
        :data:`SHRINKAGE_GRID` by the Gaussian log-likelihood of held-out training fields.
    validation : {"last", "random"}
        Which fields are held out for ``"auto"``: the last 10 % along the extra dimension
        (default; right for time series, whose neighbouring hours are near-copies, so that
        randomly held-out hours would favour no shrinkage and an over-confident posterior)
        or a random 10 % (:meth:`GaussianPrior.fit`'s own rule; for exchangeable fields).

    Returns
    -------
    GaussianPrior
        On the grid of ``train`` (as given), in its units; ``prior.climate`` records the
        variable, units and long name for the checks of :func:`impute`.
    """
    from geoinv.priors import GaussianPrior
    from geoinv.signals import SphereSignal

    train = _as_dataarray(train)
    la, lo = find_latlon(train, lat, lon)
    extra = [d for d in train.dims if d not in (la, lo)]
    if len(extra) != 1:
        raise CoordinateError(f"training data need exactly one dimension besides {la}/{lo} (e.g. time), got {extra}")
    sig = SphereSignal.from_xarray(train.transpose(extra[0], la, lo), lat=la, lon=lo)
    if validation not in ("last", "random"):
        raise ValueError(f"validation must be 'last' or 'random', got {validation!r}")
    if shrinkage == "auto" and validation == "last" and sig.batch_size >= 10:
        x = sig.point_values().double()
        k = max(1, x.shape[0] // 10)
        fit, val = x[:-k], x[-k:]
        scores = {a: GaussianPrior.fit(fit, rank=rank, shrinkage=a).log_prob(val).mean().item() for a in SHRINKAGE_GRID}
        shrinkage = max(scores, key=scores.get)
        log.info("fit_gaussian_prior: shrinkage %g chosen on the last %d fields", shrinkage, k)
    prior = GaussianPrior.fit(sig, rank=rank, shrinkage=shrinkage, name=name or f"{train.name or 'field'}-gaussian")
    prior.climate = {k: v for k, v in {"variable": train.name, "units": train.attrs.get("units"),
                                       "long_name": train.attrs.get("long_name")}.items() if v is not None}
    return prior


def healpix_roundtrip_error(da: Any, nside: int, lat: str | None = None, lon: str | None = None) -> dict:
    """Error of regridding lat/lon -> HEALPix -> lat/lon (both ways bilinear), in data units.

    HEALPix pixel centres inside the grid's box get bilinear values from the lat/lon grid
    (:class:`scipy.interpolate.RegularGridInterpolator`); the grid points are then
    interpolated back with :func:`healpy.get_interp_val`. Points whose four HEALPix
    neighbours are not all inside the box are skipped.

    Returns
    -------
    dict
        ``rmse`` and ``max_abs`` (units of ``da``), ``n_points`` evaluated, ``nside``.
    """
    import healpy as hp
    from scipy.interpolate import RegularGridInterpolator

    da = _as_dataarray(da)
    la, lo = find_latlon(da, lat, lon)
    extra = [d for d in da.dims if d not in (la, lo)]
    arr = da.transpose(*extra, la, lo).values.reshape(-1, da.sizes[la], da.sizes[lo]).astype(np.float64)
    latv, lonv = np.asarray(da[la].values, np.float64), np.asarray(da[lo].values, np.float64) % 360.0
    oi = np.argsort(lonv)
    li = np.argsort(latv)
    latv, lonv, arr = latv[li], lonv[oi], arr[:, li][:, :, oi]
    glob = abs((lonv[1] - lonv[0]) * len(lonv) - 360.0) < 1e-6
    if glob:  # periodic padding in longitude
        lonv = np.concatenate([lonv, [lonv[0] + 360.0]])
        arr = np.concatenate([arr, arr[:, :, :1]], axis=2)
    npix = hp.nside2npix(nside)
    th, ph = hp.pix2ang(nside, np.arange(npix))
    plat, plon = 90.0 - np.degrees(th), np.degrees(ph) % 360.0
    inside = (plat >= latv[0]) & (plat <= latv[-1]) & (plon >= lonv[0]) & (plon <= lonv[-1])
    glat, glon = np.meshgrid(latv, lonv[: len(lonv) - (1 if glob else 0)], indexing="ij")
    gth, gph = np.radians(90.0 - glat.ravel()), np.radians(glon.ravel())
    nb, _ = hp.get_interp_weights(nside, gth, gph)
    ok = inside[nb].all(0)
    errs = []
    for f in arr:
        interp = RegularGridInterpolator((latv, lonv), f, method="linear")
        hmap = np.full(npix, hp.UNSEEN)
        hmap[inside] = interp(np.stack([plat[inside], plon[inside]], -1))
        back = hp.get_interp_val(hmap, gth[ok], gph[ok])
        truth = f[:, : len(lonv) - (1 if glob else 0)].ravel()[ok]
        errs.append(back - truth)
    e = np.concatenate(errs)
    return {"nside": int(nside), "rmse": float(np.sqrt(np.mean(e**2))), "max_abs": float(np.abs(e).max()),
            "n_points": int(ok.sum())}
