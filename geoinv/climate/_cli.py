"""``geoinv impute``: fill the gaps of a NetCDF variable, write NetCDF atomically (and a picture)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_parser", "impute_command", "plot_imputation"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    """Register ``geoinv impute`` (heavy imports happen inside :func:`impute_command`)."""
    p = subparsers.add_parser(
        "impute", help="fill the gaps (NaN) of a gridded NetCDF variable with uncertainty; writes NetCDF",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Fill the gaps of a lat/lon(/time) variable per time step. The output has mean, std, "
                    "(samples,) mask, CF and provenance attributes, and is written atomically.")
    p.add_argument("input", help="input NetCDF file")
    p.add_argument("--var", default=None, help="variable name (default: the only data variable)")
    p.add_argument("-o", "--output", required=True, help="output NetCDF file")
    p.add_argument("--method", default="auto", help="auto | harmonic | gaussian | dps | mcg | enkg | flow")
    p.add_argument("--prior", default=None, help="shipped prior name (e.g. era5-uk-t2m) or checkpoint path")
    p.add_argument("--samples", type=int, default=None, help="posterior samples per time step (stored when >= 2)")
    p.add_argument("--noise-std", type=float, default=None, help="observation noise std, in the variable's units")
    p.add_argument("--mask-var", default=None, help="boolean/0-1 variable of the input file: 1 = observed")
    p.add_argument("--no-keep-observed", action="store_true", help="return the posterior also at observed points")
    p.add_argument("--batch-size", type=int, default=24, help="time steps per solver call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunks", type=int, default=None, help="open with dask, this many time steps per chunk")
    p.add_argument("--scheduler", default=None, help="dask.distributed scheduler address (implies --chunks)")
    p.add_argument("--plot", default=None, help="PNG of data | mean | std at one time step")
    p.add_argument("--plot-step", type=int, default=None, help="time step to plot (default: the one with most gaps)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=impute_command)


def _pick_var(ds, var):
    if var is not None:
        if var not in ds.data_vars:
            raise SystemExit(f"geoinv impute: no variable {var!r} in the file; variables: {', '.join(ds.data_vars)}")
        return ds[var]
    names = [n for n in ds.data_vars if ds[n].ndim >= 2]
    if len(names) != 1:
        raise SystemExit(f"geoinv impute: choose a variable with --var (candidates: {', '.join(names) or 'none'})")
    return ds[names[0]]


def impute_command(args: argparse.Namespace) -> int:
    """Run ``geoinv impute``."""
    import torch
    import xarray as xr

    from geoinv.climate import impute, write_netcdf

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    chunks = args.chunks or (args.batch_size * 4 if args.scheduler else None)
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
        print(f"dask.distributed: {client}", file=sys.stderr)
    with xr.open_dataset(args.input, chunks={} if chunks else None) as src:
        da = _pick_var(src, args.var)
        extra = [d for d in da.dims if d not in ("latitude", "longitude", "lat", "lon")]
        if chunks and extra:
            da = da.chunk({extra[0]: chunks})
        if not chunks:
            da = da.load()
        mask = None
        if args.mask_var:
            mask = src[args.mask_var].astype(bool)
            mask = mask if chunks else mask.load()
        ds = impute(da, mask=mask, method=args.method, prior=args.prior, n_samples=args.samples,
                    keep_observed=not args.no_keep_observed, noise_std=args.noise_std, seed=args.seed,
                    progress=not args.no_progress, batch_size=args.batch_size)
        if chunks and not args.no_progress and client is None:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                write_netcdf(ds, args.output)
        else:
            write_netcdf(ds, args.output)
    print(f"wrote {args.output}: {', '.join(ds.data_vars)} ({ds.attrs['geoinv_method']}, prior "
          f"{ds.attrs['geoinv_prior']})")
    if args.plot:
        with xr.open_dataset(args.output) as out:
            path = plot_imputation(out.load(), args.plot, step=args.plot_step)
        print(f"wrote {path}")
    if client is not None:
        client.close()
    return 0


def plot_imputation(ds, path, *, step: int | None = None, truth=None, projection: str = "auto"):
    """Maps ``[truth |] data with gaps | mean | std`` of one field of an :func:`impute` result.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`geoinv.climate.impute` (``mean``, ``std``, ``mask``).
    path : path-like
        PNG (written atomically).
    step : int, optional
        Index along the non-spatial dimension; default the field with most gaps.
    truth : xarray.DataArray, optional
        Ground truth on the same grid (benchmarks).
    projection : {"auto", "platecarree", "mollweide"}
        ``auto``: Mollweide for global grids, plate carree for regional ones.
    """
    import numpy as np

    from geoinv import viz
    from geoinv.climate._grid import find_latlon
    from geoinv.signals import SphereSignal

    mean = ds["mean"]
    la, lo = find_latlon(mean)
    extra = [d for d in mean.dims if d not in (la, lo)]
    sel = {}
    if extra:
        if step is None:
            missing = (1 - ds["mask"]).sum([la, lo]).values.reshape(-1)
            step = int(np.argmax(missing))
        idx = np.unravel_index(step, [mean.sizes[d] for d in extra])
        sel = dict(zip(extra, (int(i) for i in idx)))
    m = ds["mean"].isel(sel)
    obs = ds["mask"].isel(sel).astype(bool)
    sig = SphereSignal.from_xarray(m, lat=la, lon=lo)
    units = ds["mean"].attrs.get("units", "")
    panels = {}
    if truth is not None:
        panels["truth"] = SphereSignal.from_xarray(truth.isel(sel) if sel else truth, lat=la, lon=lo)
    panels["data with gaps"] = SphereSignal.from_xarray(m.where(obs), lat=la, lon=lo)
    panels[f"mean ({ds.attrs.get('geoinv_method', '')})"] = sig
    std = ds["std"].isel(sel)
    if bool(np.isfinite(std.where(~obs)).any()):  # harmonic has no std
        panels["std"] = SphereSignal.from_xarray(std, lat=la, lon=lo)
    title = ", ".join(f"{k}={np.asarray(ds[k].values)[v] if k in ds.coords else v}" for k, v in sel.items())
    log.info("plot %s (%s) [%s]", path, title, units)
    viz.map_panels(panels, path, projection=projection)
    return path
