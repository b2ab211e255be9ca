"""geoinv.datasets: data-file resolution, bunny, Bunny-MNIST, ERA5, WMAP, random fields."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_data
from geoinv import datasets
from geoinv.datasets import _bunny, _era5, _mnist, _sphere
from geoinv.errors import DataNotFoundError, ShapeError


# -- data_file --------------------------------------------------------------------------------
def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_data_file_prefers_data_dir(tmp_path, monkeypatch):
    env_file = _write(tmp_path / "env" / "meshes" / "thing.ply", "env")
    pkg_file = _write(tmp_path / "pkg" / "thing.ply", "pkg")
    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path / "env"))
    assert datasets.data_file("meshes/thing.ply", package_file=pkg_file) == env_file


def test_data_file_falls_back_to_package_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path / "empty"))
    pkg_file = _write(tmp_path / "pkg" / "thing.ply", "pkg")
    assert datasets.data_file("meshes/thing.ply", package_file=pkg_file) == pkg_file
    # a missing package copy is skipped, not returned
    with pytest.raises(DataNotFoundError):
        datasets.data_file("meshes/thing.ply", package_file=tmp_path / "nope.ply")


def test_data_file_missing_without_url(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        datasets.data_file("meshes/unknown_mesh.ply")
    msg = str(info.value)
    assert "meshes/unknown_mesh.ply" in msg and "GEOINV_DATA_DIR" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_data_file_download_failure_is_explained(tmp_path, monkeypatch):
    import pooch

    def fail(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(pooch, "retrieve", fail)
    url = datasets.SOURCES["meshes/bun_zipper.ply"][0]
    with pytest.raises(DataNotFoundError) as info:
        datasets.data_file("meshes/bun_zipper.ply")
    msg = str(info.value)
    assert "meshes/bun_zipper.ply" in msg and "GEOINV_DATA_DIR" in msg and url in msg and "no network" in msg


def test_data_file_download_passes_hash_and_name(tmp_path, monkeypatch):
    import pooch

    seen = {}
    fake = _write(tmp_path / "cache" / "era5_2t_1.nc")

    def retrieve(url, known_hash, fname=None, path=None, **kwargs):
        seen.update(url=url, known_hash=known_hash, fname=fname, path=Path(path))
        return str(fake)

    monkeypatch.delenv("GEOINV_DATA_DIR", raising=False)
    monkeypatch.setattr(pooch, "retrieve", retrieve)
    assert datasets.data_file("climate/era5_2t_1.nc") == fake
    url, md5 = datasets.SOURCES["climate/era5_2t_1.nc"]
    assert seen["url"] == url and seen["known_hash"] == md5 and seen["fname"] == "era5_2t_1.nc"
    assert seen["path"].parts[-1] == "climate"
    # an explicit URL / hash wins over the registry
    datasets.data_file("x/y.bin", url="https://example.org/y.bin", known_hash="md5:" + "0" * 32)
    assert seen["url"] == "https://example.org/y.bin" and seen["fname"] == "y.bin"


def test_sources_are_md5_pinned_https():
    for rel, (url, h) in datasets.SOURCES.items():
        assert url.startswith("https://github.com/"), rel
        assert h.startswith("md5:") and len(h) == 4 + 32, rel


@needs_data
def test_sources_md5_match_offline_files():
    root = Path(os.environ["GEOINV_DATA_DIR"])
    checked = 0
    for rel, (_, h) in datasets.SOURCES.items():
        p = root / rel
        if p.is_file():
            assert "md5:" + hashlib.md5(p.read_bytes()).hexdigest() == h, rel
            checked += 1
    assert checked >= 8


def test_grib_fallback_needs_cfgrib(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(_era5, "_has_cfgrib", lambda: False)
    with pytest.raises(ImportError, match="pip install cfgrib"):
        datasets.era5_uk_t2m()


def test_grib_fallback_download_failure(tmp_path, monkeypatch):
    import pooch

    def fail(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(_era5, "_has_cfgrib", lambda: True)
    monkeypatch.setattr(pooch, "retrieve", fail)
    with pytest.raises(DataNotFoundError, match="era5-2mt-2019-03-uk.grib"):
        datasets.era5_uk_t2m()


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, geoinv.datasets, geoinv.masks; "
        "heavy = [m for m in ('xarray', 'healpy', 'trimesh', 'pooch', 'potpourri3d', 'mlxtend') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# -- bunny ------------------------------------------------------------------------------------
@pytest.mark.parametrize("res, nv, nf", [(2, 8171, 16301), (3, 1889, 3851), (4, 453, 948)])
def test_bunny_counts(res, nv, nf):
    b = datasets.stanford_bunny(res)
    assert b.vertices.shape == (nv, 3) and b.faces.shape == (nf, 3)
    assert b.faces.dtype == torch.int64
    assert b.values.shape == (nv, 1) and float(b.values.abs().sum()) == 0.0
    assert b.name == f"bunny_res{res}"


def test_bunny_res3_keeps_file_vertex_order_and_unreferenced_vertices():
    b = datasets.stanford_bunny(3)
    # first vertex line of bun_zipper_res3.ply
    np.testing.assert_allclose(b.vertices[0].numpy(), [-0.0369122, 0.127512, 0.00276757], rtol=1e-6)
    used = np.unique(b.faces.numpy())
    assert b.n_points - used.size == 2
    # ears up: the top of the bunny is at +y
    assert float(b.vertices[:, 1].max()) > 0.18


def test_bunny_returns_new_containers():
    a = datasets.stanford_bunny(4)
    a.vertices[0, 0] = 123.0
    b = datasets.stanford_bunny(4)
    assert float(b.vertices[0, 0]) != 123.0


@needs_data
def test_bunny_full_scan():
    b = datasets.stanford_bunny("full")
    assert b.vertices.shape == (35947, 3) and b.faces.shape == (69451, 3)
    assert datasets.stanford_bunny(0).n_points == 35947


def test_bunny_bad_resolution():
    with pytest.raises(DataNotFoundError, match="resolution"):
        datasets.stanford_bunny(7)


@pytest.fixture
def _clear_bunny_cache():
    _bunny._bunny_arrays.cache_clear()
    _bunny._shared_cache.cache_clear()
    _mnist._painted_split.cache_clear()
    yield
    _bunny._bunny_arrays.cache_clear()
    _bunny._shared_cache.cache_clear()
    _mnist._painted_split.cache_clear()


def test_bunny_data_dir_overrides_shipped_copy(tmp_path, monkeypatch, _clear_bunny_cache):
    import trimesh

    mesh = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 2], [0, 1, 3]], process=False)
    (tmp_path / "meshes").mkdir()
    mesh.export(tmp_path / "meshes" / "bun_zipper_res4.ply")
    monkeypatch.setenv("GEOINV_DATA_DIR", str(tmp_path))
    assert datasets.stanford_bunny(4).n_points == 4


# -- MNIST / Bunny-MNIST --------------------------------------------------------------------
def test_mnist_split_is_disjoint_stratified_and_fixed():
    idx = _mnist._split_indices()
    train, test = idx["train"], idx["test"]
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).size == 5000
    xtr, ytr = datasets.mnist_digits("train")
    xte, yte = datasets.mnist_digits("test")
    assert xtr.shape == (4500, 28, 28) and xte.shape == (500, 28, 28)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert np.array_equal(np.bincount(yte, minlength=10), np.full(10, 50))
    assert np.array_equal(np.bincount(ytr, minlength=10), np.full(10, 450))
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0 and xtr.max() == 1.0
    # no test digit appears in train (by content)
    train_hashes = {hashlib.md5(x.tobytes()).hexdigest() for x in xtr}
    assert not any(hashlib.md5(x.tobytes()).hexdigest() in train_hashes for x in xte)
    # fixed: the same split every call, new arrays every call
    xte2, yte2 = datasets.mnist_digits("test")
    assert np.array_equal(xte, xte2) and np.array_equal(yte, yte2)
    xte2[0] = 7.0
    assert datasets.mnist_digits("test")[0][0].max() <= 1.0
    # the split follows the documented rule
    _, labels = _mnist._mnist_raw()
    rng = np.random.default_rng(20240501)
    expect = []
    for c in range(10):
        cls = np.flatnonzero(labels == c)
        expect.append(cls[rng.permutation(len(cls))[:50]])
    assert np.array_equal(np.sort(np.concatenate(expect)), test)


def test_mnist_bad_split():
    with pytest.raises(DataNotFoundError, match="train"):
        datasets.mnist_digits("val")


def test_bunny_frame_orientation():
    b = datasets.stanford_bunny(3)
    c, axes = datasets.bunny_frame(b.vertices)
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(np.cross(axes[0], axes[1]), axes[2], atol=1e-10)  # right-handed
    assert axes[1, 1] > 0 and axes[2, 2] > 0  # e2 towards the ears (+y), seen from +z
    x = b.vertices.double().numpy() - c
    var = ((x @ axes.T) ** 2).mean(0)
    assert var[0] > var[1] > var[2]  # principal axes, largest variance first


def _uv(vertices):
    c, axes = datasets.bunny_frame(vertices)
    return (np.asarray(vertices, np.float64) - c) @ axes[:2].T


def test_paint_constant_image_gives_constant():
    v = datasets.stanford_bunny(3).vertices.numpy()
    vals = datasets.paint_on_mesh(v, np.full((2, 28, 28), 0.37))
    assert vals.shape == (2, v.shape[0]) and vals.dtype == np.float32
    np.testing.assert_allclose(vals, 0.37, atol=1e-6)


def test_paint_ramps_follow_u_and_v():
    v = datasets.stanford_bunny(3).vertices.numpy()
    u, w = _uv(v).T
    cols = np.tile(np.arange(28.0) / 27, (28, 1))  # grows to the right
    rows = cols.T  # grows downwards
    vals = datasets.paint_on_mesh(v, np.stack([cols, rows]))
    ramp_u = vals[0][np.argsort(u)]
    assert np.all(np.diff(ramp_u) >= -1e-6) and ramp_u[-1] - ramp_u[0] > 0.8
    # bilinear sampling of a linear ramp is exact: the values are affine in u (and in -v)
    assert np.corrcoef(vals[0], u)[0, 1] > 0.9999
    ramp_v = vals[1][np.argsort(w)]
    assert np.all(np.diff(ramp_v) <= 1e-6)  # row 0 (top) at the largest v
    assert np.corrcoef(vals[1], w)[0, 1] < -0.9999
    # bounding box fitted with a 1-pixel margin, aspect ratio kept
    assert vals[0].min() == pytest.approx(1 / 27, abs=1e-5) and vals[0].max() == pytest.approx(26 / 27, abs=1e-5)


def test_paint_not_mirrored():
    # an "L": ink in the left column and the bottom row; seen from +e3 with up +e2,
    # the ink must be at small u (left) and small v (bottom)
    v = datasets.stanford_bunny(3).vertices.numpy()
    img = np.zeros((28, 28))
    img[:, :14] = 1.0
    vals = datasets.paint_on_mesh(v, img)[0]
    u, w = _uv(v).T
    assert u[vals > 0.99].max() < u[vals < 0.01].min()
    img = np.zeros((28, 28))
    img[14:, :] = 1.0
    vals = datasets.paint_on_mesh(v, img)[0]
    assert w[vals > 0.99].max() < w[vals < 0.01].min()


def test_paint_does_not_modify_caller_images():
    v = datasets.stanford_bunny(4).vertices.numpy()
    img = np.random.default_rng(0).random((3, 28, 28))
    before = img.copy()
    datasets.paint_on_mesh(v, img)
    sig = datasets.bunny_mnist(images=img, resolution=4)
    assert np.array_equal(img, before)
    t = torch.as_tensor(img)
    datasets.bunny_mnist(images=t, resolution=4)
    assert np.array_equal(t.numpy(), before)
    assert sig.values.shape == (3, 453, 1)


def test_paint_rejects_bad_images():
    v = datasets.stanford_bunny(4).vertices.numpy()
    with pytest.raises(ShapeError):
        datasets.paint_on_mesh(v, np.zeros((2, 3, 28, 28)))
    with pytest.raises(ShapeError, match="NaN"):
        datasets.paint_on_mesh(v, np.full((28, 28), np.nan))


def test_bunny_mnist_splits_and_values():
    train, ytr = datasets.bunny_mnist("train", return_labels=True)
    test, yte = datasets.bunny_mnist("test", return_labels=True)
    assert train.values.shape == (4500, 1889, 1) and test.values.shape == (500, 1889, 1)
    assert np.array_equal(ytr, datasets.mnist_digits("train")[1])
    assert np.array_equal(np.bincount(yte), np.full(10, 50))
    for s in (train, test):
        assert float(s.values.min()) >= 0.0 and float(s.values.max()) <= 1.0
    assert float(train.values.max()) > 0.99  # the digits' ink reaches the surface
    # the same projection as paint_on_mesh on the split's digits
    xte, _ = datasets.mnist_digits("test")
    np.testing.assert_allclose(test.values[:, :, 0].numpy(), datasets.paint_on_mesh(test.vertices, xte), atol=1e-6)
    # no painted test field equals a painted train field
    tr = {hashlib.md5(x.tobytes()).hexdigest() for x in train.values.numpy()}
    assert not any(hashlib.md5(x.tobytes()).hexdigest() in tr for x in test.values.numpy())


def test_bunny_mnist_returns_new_containers():
    a = datasets.bunny_mnist("test")
    a.values.fill_(5.0)
    b = datasets.bunny_mnist("test")
    assert float(b.values.max()) <= 1.0
    assert a is not b and b.is_batched


def test_bunny_mnist_labels_need_builtin_digits():
    with pytest.raises(DataNotFoundError, match="labels"):
        datasets.bunny_mnist(images=np.zeros((1, 28, 28)), resolution=4, return_labels=True)


# -- ERA5 / WMAP -------------------------------------------------------------------------------
@needs_data
def test_era5_uk_t2m():
    da = datasets.era5_uk_t2m()
    assert da.dims == ("time", "latitude", "longitude") and da.shape == (744, 33, 49)
    assert da.attrs["units"] == "K" and da.name == "t2m"
    lat, lon = da["latitude"].values, da["longitude"].values
    assert lat[0] == 58.0 and lat[-1] == 50.0 and np.all(np.diff(lat) == -0.25)
    assert lon[0] == -10.0 and lon[-1] == 2.0
    x = da.values
    assert np.isfinite(x).all() and 250 < x.min() < x.max() < 300
    assert str(da["time"].values[0])[:13] == "2019-03-01T00" and str(da["time"].values[-1])[:13] == "2019-03-31T23"


@needs_data
def test_era5_global_t():
    da = datasets.era5_global_t(850)
    assert da.dims == ("sample", "latitude", "longitude") and da.shape == (40, 61, 120)
    assert da.attrs["units"] == "K" and float(da["isobaricInhPa"]) == 850.0
    assert da["latitude"].values[0] == 90.0 and da["longitude"].values[-1] == 357.0
    assert np.array_equal(da["number"].values, np.repeat(np.arange(10), 4))
    x = da.values.reshape(10, 4, -1)
    member_spread = x.std(axis=0).mean()
    time_spread = x.mean(axis=0).std(axis=0).mean()
    assert 0.1 < member_spread < 0.6 and time_spread > 3 * member_spread
    hi = datasets.era5_global_t(500)
    assert float(hi.mean()) < float(da.mean()) - 10  # colder aloft
    with pytest.raises(DataNotFoundError, match="850"):
        datasets.era5_global_t(700)


@needs_data
def test_era5_20deg():
    for i in (1, 2):
        da = datasets.era5_t2m_20deg(i)
        assert da.shape == (1, 9, 18) and da.attrs["units"] == "K"
        assert 200 < float(da.min()) < float(da.max()) < 330
    with pytest.raises(DataNotFoundError):
        datasets.era5_t2m_20deg(3)


@needs_data
def test_era5_to_sphere_signal():
    from geoinv import SphereSignal

    s = SphereSignal.from_xarray(datasets.era5_global_t())
    assert s.values.shape == (40, 61 * 120, 1)


@needs_data
def test_wmap():
    m = datasets.wmap_mask()
    assert m.dtype == bool and m.shape == (12288,)
    assert m.mean() == pytest.approx(0.619, abs=0.001)
    w = datasets.wmap_map("W")
    assert w.shape == (12288,) and np.isfinite(w).all()
    # the galactic plane (masked) is much brighter than the kept sky
    assert np.median(w[~m]) > np.median(w[m])
    assert not np.array_equal(w, datasets.wmap_map("v"))
    with pytest.raises(DataNotFoundError):
        datasets.wmap_map("K")


# -- Gaussian random fields ---------------------------------------------------------------------
def test_grf_cl_normalised():
    cl = datasets.grf_sphere_cl(16)
    ell = np.arange(len(cl))
    assert len(cl) == 48 and cl[0] == 0 and cl[1] == 0 and np.all(cl[2:] > 0)
    assert np.sum((2 * ell + 1) * cl) / (4 * np.pi) == pytest.approx(1.0, rel=1e-12)
    assert len(datasets.grf_sphere_cl(8, lmax=10)) == 11
    with pytest.raises(ShapeError):
        datasets.grf_sphere_cl(12)


def test_grf_seeding_is_reproducible_and_local():
    state = np.random.get_state()
    a = datasets.grf_sphere(8, n=4, seed=3)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]
    b = datasets.grf_sphere(8, n=4, seed=3)
    c = datasets.grf_sphere(8, n=4, seed=4)
    assert torch.equal(a.values, b.values) and not torch.allclose(a.values, c.values)
    assert a.values.shape == (4, 768, 1) and a.nside == 8


@pytest.fixture(scope="module")
def grf16():
    s = datasets.grf_sphere(16, n=1000, seed=0)
    return s, s.to_healpix()  # (n, npix) RING


def test_grf_variance_and_nested_order(grf16):
    import healpy as hp

    s, ring = grf16
    assert s.values.shape == (1000, 3072, 1) and s.nside == 16
    nest = s.values[:, :, 0].numpy()
    assert np.array_equal(nest, ring[:, hp.nest2ring(16, np.arange(3072))])
    var = (ring.astype(np.float64) ** 2).mean(axis=0)  # per pixel, zero-mean field
    assert var.mean() == pytest.approx(1.0, abs=0.015)
    assert abs(ring.mean()) < 0.05


def test_grf_covariance_matches_spectrum(grf16):
    import healpy as hp
    from scipy.special import eval_legendre

    _, ring = grf16
    x = ring.astype(np.float64)
    cl = datasets.grf_sphere_cl(16)
    ell = np.arange(len(cl))
    npix = x.shape[1]
    nb = hp.get_all_neighbours(16, np.arange(npix))  # (8, npix), RING
    for k in (0, 2):  # two neighbour directions
        j = nb[k]
        ok = j >= 0
        i, j = np.arange(npix)[ok], j[ok]
        cosg = np.sum(np.array(hp.pix2vec(16, i)) * np.array(hp.pix2vec(16, j)), axis=0)
        theory = np.sum((2 * ell + 1)[:, None] / (4 * np.pi) * cl[:, None] * eval_legendre(ell[:, None], cosg[None]), axis=0)
        emp = (x[:, i] * x[:, j]).mean(axis=0)
        assert emp.mean() == pytest.approx(theory.mean(), abs=0.015)
        assert 0.5 < theory.mean() < 0.99  # a real correlation, not the variance


def test_grf_power_spectrum_matches_input(grf16):
    import healpy as hp

    _, ring = grf16
    n = 200
    cl = datasets.grf_sphere_cl(16)
    with _sphere._openmp_single_thread():  # tiny transforms: one thread is fastest
        est = np.mean([hp.anafast(m.astype(np.float64), lmax=47) for m in ring[:n]], axis=0)
    for ell in (2, 5, 10, 20):
        sigma = np.sqrt(2.0 / ((2 * ell + 1) * n))  # relative error of the mean of n estimates
        assert est[ell] / cl[ell] == pytest.approx(1.0, abs=4 * sigma + 0.02), ell
