"""Signal containers: validation, layouts, converters (round trips), no mutation."""

import numpy as np
import pytest
import torch

import geoinv
from geoinv import GridSignal, MeshSignal, SphereSignal
from geoinv.errors import MaskError, NonFiniteError, ShapeError


def tetra(values=None):
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return MeshSignal(v, f, torch.arange(4.0).reshape(4, 1) if values is None else values, name="t")


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, geoinv; heavy = [m for m in ('torch_geometric', 'pyvista', 'vtk', 'healpy', 'xarray', "
            "'trimesh', 'potpourri3d', 'matplotlib', 'scipy') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import geoinv pulled in {out}"


def test_mesh_validation_errors():
    v = torch.zeros(4, 3)
    with pytest.raises(ShapeError, match="out of range"):
        MeshSignal(v, torch.tensor([[0, 1, 4]]), torch.zeros(4, 1))
    with pytest.raises(NonFiniteError):
        MeshSignal(torch.tensor([[0.0, 0, float("nan")]] * 4), torch.tensor([[0, 1, 2]]), torch.zeros(4, 1))
    with pytest.raises(ShapeError, match=r"\(N, C\)"):
        MeshSignal(v, torch.tensor([[0, 1, 2]]), torch.zeros(5, 1))
    with pytest.raises(ShapeError):
        MeshSignal(v, torch.tensor([[0, 1]]), torch.zeros(4, 1))


def test_caller_arrays_never_aliased():
    vals = np.arange(4.0).reshape(4, 1)
    s = tetra(vals)
    s.values[0, 0] = 99.0
    assert vals[0, 0] == 0.0
    t = torch.arange(4.0).reshape(4, 1)
    s2 = tetra(t)
    s2.values.add_(1)
    assert t[0, 0] == 0.0


def test_point_layout_roundtrip_all_kinds():
    g = GridSignal(torch.randn(2, 3, 4, 5))
    pv = g.point_values()
    assert pv.shape == (2, 20, 3)
    # point i*W + j, channel c == values[b, c, i, j]
    assert pv[1, 2 * 5 + 3, 2] == g.values[1, 2, 2, 3]
    assert torch.equal(g.with_point_values(pv).values, g.values)
    m = tetra(torch.randn(3, 4, 2))
    assert torch.equal(m.with_point_values(m.point_values()).values, m.values)
    assert m[1].values.shape == (4, 2) and torch.equal(m[1].values, m.values[1])


def test_mask_checks():
    s = tetra()
    with pytest.raises(MaskError, match="boolean"):
        s.check_mask(np.array([1, 0, 1, 1]))
    with pytest.raises(MaskError, match="4 points"):
        s.check_mask(np.ones(5, bool))
    with pytest.raises(MaskError, match="no point"):
        s.check_mask(np.zeros(4, bool))
    g = GridSignal(torch.zeros(1, 3, 3))
    assert g.check_mask(np.ones((3, 3), bool)).shape == (9,)


def test_fingerprint_depends_on_geometry_not_values_or_dtype():
    a, b = tetra(), tetra(torch.randn(4, 1))
    assert a.fingerprint == b.fingerprint == a.to(torch.float64).fingerprint
    moved = MeshSignal(a.vertices + 0.1, a.faces, a.values)
    assert moved.fingerprint != a.fingerprint
    assert GridSignal(torch.zeros(1, 4, 4)).fingerprint != GridSignal(torch.zeros(1, 4, 4), periodic=True).fingerprint


def test_to_dtype_and_cache_sharing():
    s = tetra()
    d = s.to(torch.float64)
    assert d.values.dtype == torch.float64 and d.vertices.dtype == torch.float64 and d.faces.dtype == torch.int64
    assert d._cache is s._cache


def test_mesh_file_trimesh_pyvista_pyg_roundtrips(tmp_path):
    s = tetra(torch.randn(4, 1))
    for ext in ("ply", "obj", "off"):
        p = tmp_path / f"m.{ext}"
        s.to_trimesh().export(p)
        r = MeshSignal.from_file(p)
        assert torch.allclose(r.vertices, s.vertices) and torch.equal(r.faces, s.faces)
    pv_mesh = s.to_pyvista()
    back = MeshSignal.from_pyvista(pv_mesh, scalars="t")
    assert torch.allclose(back.values, s.values) and torch.equal(back.faces, s.faces)
    data = s.to_pyg()
    assert data.face.shape == (3, 4) and data.edge_index.shape == (2, 12)
    back = MeshSignal.from_pyg(data)
    assert torch.equal(back.values, s.values) and torch.equal(back.faces, s.faces)
    sb = tetra(torch.randn(2, 4, 3))
    assert torch.equal(MeshSignal.from_pyg(sb.to_pyg()).values, sb.values)


def test_healpix_ring_nest_roundtrip_and_errors():
    import healpy as hp

    nside = 4
    ring = np.random.default_rng(0).normal(size=12 * nside**2)
    s = SphereSignal.from_healpix(ring)  # RING at IO
    assert s.nside == nside
    np.testing.assert_allclose(s.to_healpix(), ring, rtol=1e-6)
    # inside is NESTED: value at nest pixel p equals ring value at nest2ring(p)
    np.testing.assert_allclose(s.values[:, 0].numpy(), ring[hp.nest2ring(nside, np.arange(12 * nside**2))], rtol=1e-6)
    np.testing.assert_allclose(SphereSignal.from_healpix(ring, nest=True).to_healpix(nest=True), ring, rtol=1e-6)
    with pytest.raises(ShapeError, match="12\\*nside\\^2"):
        SphereSignal.from_healpix(np.zeros(100))
    with pytest.raises(ShapeError, match="nside"):
        SphereSignal.from_healpix(np.zeros(192), nside=8)
    # lat/lon of NESTED pixel centres are right
    lon, lat = hp.pix2ang(nside, np.arange(12 * nside**2), nest=True, lonlat=True)
    np.testing.assert_allclose(s.lat, lat)
    np.testing.assert_allclose(s.lon, lon)


def test_xarray_roundtrip_grid_keeps_coords_attrs_and_nan():
    import xarray as xr

    lat = np.array([60.0, 57.0, 54.0])  # descending, as ERA5 stores it
    lon = np.array([-5.0, -2.0, 1.0, 4.0])
    time = np.array(["2019-03-01T00", "2019-03-01T01"], dtype="datetime64[ns]")
    data = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    data[0, 1, 2] = np.nan
    da = xr.DataArray(data, dims=("time", "latitude", "longitude"),
                      coords={"time": time, "latitude": lat, "longitude": lon, "number": 0},
                      name="t2m", attrs={"units": "K", "long_name": "2 metre temperature"})
    s = SphereSignal.from_xarray(da)
    assert s.grid_shape == (3, 4) and s.is_batched and s.batch_size == 2
    assert not bool(s.observed()[0, 1 * 4 + 2]) and bool(s.observed()[1].all())
    back = s.to_xarray()
    xr.testing.assert_identical(back, da)
    # transposed dims come back in the caller's order
    dat = da.transpose("latitude", "longitude", "time")
    xr.testing.assert_identical(SphereSignal.from_xarray(dat).to_xarray(), dat)


def test_xarray_errors():
    import xarray as xr

    da = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"))
    with pytest.raises(ShapeError, match="lat"):
        SphereSignal.from_xarray(da)
    with pytest.raises(ShapeError, match="DataArray"):
        SphereSignal.from_xarray(xr.Dataset({"a": da}))


def test_xarray_healpix_roundtrip():
    import xarray as xr

    vals = np.arange(48.0)
    da = xr.DataArray(vals, dims="cells", name="t",
                      coords={"cell_ids": ("cells", np.arange(48), {"grid_name": "healpix", "level": 1, "indexing_scheme": "ring"})})
    s = SphereSignal.from_xarray(da)
    assert s.nside == 2
    np.testing.assert_allclose(s.to_healpix(), vals)
    xr.testing.assert_identical(s.to_xarray(), da)


def test_scattered_points_and_validation():
    s = SphereSignal.from_latlon(np.ones(5), lat=[0, 10, 20, 30, 40], lon=[0, 0, 0, 0, 0])
    assert s.n_points == 5 and s.grid_shape is None
    with pytest.raises(ShapeError, match="latitudes"):
        SphereSignal.from_latlon(np.ones(2), lat=[0, 100], lon=[0, 0])
    da = s.to_xarray()
    np.testing.assert_allclose(da["lat"].values, [0, 10, 20, 30, 40])


def test_grid_laplacian_area_and_distances_periodic():
    g = GridSignal(torch.zeros(1, 4, 6), spacing=(0.5, 2.0), periodic=True)
    assert np.allclose(g.area_weights(), 1.0)
    d = g.distances(0)
    assert d[5] == pytest.approx(2.0)  # wraps: (0,5) is one step from (0,0)
    assert d[3 * 6] == pytest.approx(0.5)


def test_package_exports():
    assert geoinv.solve is not None and geoinv.Posterior is not None
    with pytest.raises(AttributeError):
        geoinv.does_not_exist
