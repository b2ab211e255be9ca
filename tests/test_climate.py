"""geoinv.climate: xarray imputation, bad input, dask scale-out, atomic NetCDF, CLI, moving masks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

xr = pytest.importorskip("xarray")

import geoinv.climate as gc  # noqa: E402  (registers da.geoinv)
from geoinv import SphereSignal, masks  # noqa: E402
from geoinv.errors import CoordinateError, DomainMismatchError, MaskError, UnitsError  # noqa: E402

NLAT, NLON = 7, 9


def _fields(n, seed=0, lat=None, lon=None):
    """Smooth random temperature-like fields (K) on a small regional grid, time x lat x lon."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(58.0, 50.0, NLAT) if lat is None else lat  # descending, as ERA5
    lon = np.linspace(-10.0, 6.0, NLON) if lon is None else lon
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    out = np.zeros((n, NLAT, NLON))
    for _ in range(4):
        kx, ky = rng.integers(1, 4, size=2)
        amp, ph = rng.normal(size=(n, 1, 1)), rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
        out += amp * np.cos(kx * 6 * lo + ky * 6 * la + ph)
    out += 0.2 * rng.normal(size=out.shape)  # small-scale variability: a well-conditioned covariance
    time = np.datetime64("2019-03-01T00", "h") + np.arange(n).astype("timedelta64[h]")
    return xr.DataArray(280.0 + out, dims=("time", "latitude", "longitude"),
                        coords={"time": time, "latitude": lat, "longitude": lon}, name="t2m",
                        attrs={"units": "K", "long_name": "2 metre temperature"})


@pytest.fixture(scope="module")
def data():
    train = _fields(80, seed=1)
    test = _fields(6, seed=2)
    prior = gc.fit_gaussian_prior(train)
    rng = np.random.default_rng(3)
    gappy = test.where(rng.random(test.shape) > 0.5)
    return train, test, gappy, prior


def test_accessor_registered(data):
    _, _, gappy, _ = data
    assert hasattr(gappy, "geoinv") and callable(gappy.geoinv.impute)


def test_observed_values_unchanged_bit_for_bit(data):
    _, _, gappy, prior = data
    g32 = gappy.astype(np.float32)
    ds = g32.geoinv.impute(prior=prior, n_samples=3, noise_std=0.1, progress=False)
    obs = g32.notnull().values
    assert ds["mean"].dtype == np.float32
    assert np.array_equal(ds["mean"].values[obs].view(np.uint32), g32.values[obs].view(np.uint32))
    for k in range(3):
        assert np.array_equal(ds["samples"].isel(sample=k).values[obs], g32.values[obs])
    assert (ds["std"].values[obs] == 0).all() and (ds["std"].values[~obs] > 0).all()
    assert np.isfinite(ds["mean"].values).all()
    assert np.array_equal(ds["mask"].values, obs.astype(np.int8))
    # CF + provenance
    assert ds["mean"].attrs["units"] == "K" and "cell_methods" in ds["mean"].attrs
    assert ds.attrs["geoinv_method"] == "gaussian" and ds.attrs["geoinv_version"]
    assert ds["mask"].attrs["flag_meanings"] == "missing observed"


def test_gaussian_mean_equals_exact_posterior(data):
    _, _, gappy, prior = data
    sigma = 0.2
    ds = gappy.geoinv.impute(prior=prior, method="gaussian", noise_std=sigma, keep_observed=False, progress=False)
    cov = prior.covariance().numpy()
    mu = prior.mean[:, 0].numpy()
    for t in range(gappy.sizes["time"]):
        y = gappy.isel(time=t).values.reshape(-1)  # prior grid = input grid here
        o = np.isfinite(y)
        k = cov[:, o] @ np.linalg.inv(cov[np.ix_(o, o)] + sigma**2 * np.eye(o.sum()))
        mean = mu + k @ (y[o] - mu[o])
        std = np.sqrt(np.clip(np.diag(cov - k @ cov[o, :]), 0, None))
        np.testing.assert_allclose(ds["mean"].isel(time=t).values.reshape(-1), mean, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ds["std"].isel(time=t).values.reshape(-1), std, rtol=0, atol=1e-6)


def test_descending_latitudes_and_longitude_conventions_match_prior(data):
    _, _, gappy, prior = data  # the prior was fitted on descending lat, lon in [-10, 6]
    ref = gappy.geoinv.impute(prior=prior, n_samples=2, progress=False)
    flipped = gappy.sortby("latitude")  # ascending
    wrapped = gappy.assign_coords(longitude=gappy.longitude % 360).sortby("longitude")  # [0, 360)
    for variant in (flipped, wrapped, flipped.assign_coords(longitude=flipped.longitude % 360)):
        ds = variant.geoinv.impute(prior=prior, n_samples=2, progress=False)
        back = ds.assign_coords(longitude=(ds.longitude + 180) % 360 - 180).sortby("longitude").sortby(
            "latitude", ascending=False)
        np.testing.assert_array_equal(back["mean"].values, ref["mean"].values)
        np.testing.assert_array_equal(back["samples"].values, ref["samples"].values)
    # without a prior the grid is used as given: harmonic is orientation independent
    h1 = gappy.geoinv.impute(method="harmonic", progress=False)["mean"]
    h2 = flipped.geoinv.impute(method="harmonic", progress=False)["mean"].sortby("latitude", ascending=False)
    np.testing.assert_allclose(h1.values, h2.values, atol=1e-9)


def test_missing_or_misnamed_coordinates(data):
    _, _, gappy, _ = data
    bad = gappy.rename(latitude="y", longitude="x")
    with pytest.raises(CoordinateError, match=r"rename"):
        bad.geoinv.impute(progress=False)
    with pytest.raises(CoordinateError):
        xr.DataArray(gappy.values, dims=("time", "latitude", "longitude")).geoinv.impute(progress=False)
    # CF attributes identify renamed dims
    cf = bad.copy()
    cf["y"].attrs["standard_name"] = "latitude"
    cf["x"].attrs["units"] = "degrees_east"
    ds = cf.geoinv.impute(method="harmonic", progress=False)
    assert ds["mean"].dims == ("time", "y", "x")
    with pytest.raises(Exception, match="Dataset"):
        gc.impute(gappy.to_dataset(), progress=False)


def test_nothing_to_impute(data):
    _, test, _, _ = data
    with pytest.raises(MaskError, match="nothing to impute"):
        test.geoinv.impute(progress=False)
    # an explicit mask makes a complete field imputable
    mask = np.ones((NLAT, NLON), bool)
    mask[2:4, 3:6] = False
    ds = test.geoinv.impute(mask=mask, method="harmonic", progress=False)
    assert (ds["mask"].isel(time=0).values == mask).all()
    assert not np.array_equal(ds["mean"].values[:, ~mask], test.values[:, ~mask])


def test_all_nan_time_step(data):
    _, _, gappy, prior = data
    g = gappy.copy()
    g[1] = np.nan
    ds = g.geoinv.impute(prior=prior, progress=False)
    np.testing.assert_allclose(ds["mean"].isel(time=1).values.reshape(-1), prior.mean[:, 0].numpy(), atol=1e-9)
    np.testing.assert_allclose(ds["std"].isel(time=1).values.reshape(-1), prior.variance[:, 0].sqrt().numpy(),
                               atol=1e-9)
    assert (ds["mask"].isel(time=1) == 0).all()
    assert np.isfinite(ds["mean"].isel(time=0)).all()
    h = g.geoinv.impute(method="harmonic", progress=False)
    assert h["mean"].isel(time=1).isnull().all() and np.isfinite(h["mean"].isel(time=0)).all()


def test_prior_for_other_grid_variable_or_units(data):
    train, _, gappy, prior = data
    other = gc.fit_gaussian_prior(_fields(30, lat=np.linspace(60, 52, NLAT)))
    with pytest.raises(DomainMismatchError, match="grid"):
        gappy.geoinv.impute(prior=other, progress=False)
    with pytest.raises(DomainMismatchError, match="variable"):
        gappy.rename("msl").geoinv.impute(prior=prior, progress=False)
    celsius = (gappy - 273.15).assign_attrs(units="degC")
    with pytest.raises(UnitsError, match=r"273\.15"):
        celsius.geoinv.impute(prior=prior, progress=False)
    # aliases and unit spellings are accepted
    gappy.rename("2t").assign_attrs(units="kelvin").geoinv.impute(prior=prior, progress=False)


def test_dask_lazy_equals_serial_on_local_cluster(data):
    distributed = pytest.importorskip("distributed")
    _, _, gappy, prior = data
    serial = gappy.geoinv.impute(prior=prior, n_samples=3, batch_size=2, progress=False)
    lazy = gappy.chunk(time=3).geoinv.impute(prior=prior, n_samples=3, batch_size=2)
    assert lazy["mean"].chunks is not None  # lazy: nothing computed yet
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl):
        out = lazy.compute()
    for k in ("mean", "std", "samples", "mask"):  # equal up to floating-point rounding (other processes)
        np.testing.assert_allclose(out[k].values, serial[k].values, rtol=1e-12, atol=1e-12)


def test_atomic_write_leaves_no_partial_output(data, tmp_path, monkeypatch):
    _, _, gappy, prior = data
    ds = gappy.geoinv.impute(method="harmonic", progress=False)
    target = tmp_path / "out.nc"
    target.write_bytes(b"previous result")

    def broken(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"CDF\x01 half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        gc.write_netcdf(ds, target)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nc"]
    monkeypatch.undo()
    gc.write_netcdf(ds, target)
    with xr.open_dataset(target) as back:
        np.testing.assert_array_equal(back["mean"].values, ds["mean"].values)


def test_killed_writer_leaves_no_output(tmp_path):
    """SIGKILL in the middle of to_netcdf: the target path never appears."""
    io_path = os.path.join(os.path.dirname(gc.__file__), "_io.py")  # stdlib only: load it without geoinv/torch
    script = textwrap.dedent(f"""
        import importlib.util, os, signal, numpy as np, xarray as xr
        spec = importlib.util.spec_from_file_location("geoinv_io", {io_path!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        write_netcdf = mod.write_netcdf
        def dying(self, path, **kw):
            open(path, "wb").write(b"CDF partial")
            os.kill(os.getpid(), signal.SIGKILL)
        xr.Dataset.to_netcdf = dying
        write_netcdf(xr.Dataset({{"a": ("x", np.arange(3.0))}}), {str(tmp_path / "out.nc")!r})
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert r.returncode == -9
    assert not (tmp_path / "out.nc").exists()


def test_cli_impute(data, tmp_path):
    from geoinv.cli import main

    _, _, gappy, _ = data
    src = tmp_path / "in.nc"
    gappy.to_dataset().to_netcdf(src)
    out, png = tmp_path / "out.nc", tmp_path / "out.png"
    assert main(["impute", str(src), "--var", "t2m", "-o", str(out), "--method", "harmonic", "--plot", str(png),
                 "--no-progress"]) == 0
    with xr.open_dataset(out) as ds:
        assert set(ds.data_vars) == {"mean", "std", "mask"}
        obs = gappy.notnull().values
        assert np.array_equal(ds["mean"].values[obs], gappy.values[obs])
    assert png.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_moving_patches_fraction_motion_and_seed():
    sig = SphereSignal.from_grid(np.zeros((20, 30)), np.linspace(50, 58, 20), np.linspace(-10, 2, 30))
    m, centres, radii = masks.moving_patches(sig, n=12, missing=0.4, n_patches=3, speed=0.5, seed=4,
                                             return_centers=True)
    assert m.shape == (12, 600) and m.dtype == torch.bool
    assert torch.allclose((~m).double().mean(1), torch.full((12,), 0.4, dtype=torch.float64), atol=0.02)
    step = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
    assert 0.2 < np.median(step) < 1.0  # the patches move by ~speed degrees per step (except when wrapping)
    overlap = ((~m[1:]) & (~m[:-1])).double().sum(1) / (~m[1:]).double().sum(1)
    assert overlap.min() > 0.5  # gaps are persistent, not re-drawn at random
    assert torch.equal(m, masks.moving_patches(sig, n=12, missing=0.4, n_patches=3, speed=0.5, seed=4))


def test_healpix_roundtrip_error_constant_field_is_exact(data):
    _, test, _, _ = data
    const = xr.full_like(test.isel(time=slice(0, 1)), 280.0)
    assert gc.healpix_roundtrip_error(const, 64)["rmse"] < 1e-9
    r = gc.healpix_roundtrip_error(test.isel(time=slice(0, 2)), 64)
    assert r["n_points"] > 0 and 0 < r["rmse"] < r["max_abs"]


def test_normalized_prior_is_the_standardized_gaussian(data):
    """NormalizedPrior(GaussianPrior N(mu, S)) has the exact denoiser of N((mu - c) / s, S / s^2)."""
    from geoinv.priors import GaussianPrior

    _, _, _, prior = data
    norm = gc.NormalizedPrior(prior)
    c, s = gc.prior_normalization(prior)
    assert torch.allclose(c, prior.mean) and s == pytest.approx(float(prior.variance.mean()) ** 0.5)
    ref = GaussianPrior((prior.mean - c) / s, prior.covariance() / s**2)
    x = torch.randn(3, *prior.event_shape, dtype=torch.float64)
    for sigma in (0.05, 0.7, 5.0):
        torch.testing.assert_close(norm.denoise(x, sigma), ref.denoise(x, sigma), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(norm.to_normalized(norm.to_data(x)), x)
