"""Mathematical tests for geoinv.geometry (meshes, sphere, grids)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import Delaunay

from geoinv.geometry import (
    COT_CLAMP,
    GeodesicSolver,
    GeometryError,
    GraphError,
    GridError,
    MeshError,
    SphereError,
    cotangent_laplacian,
    edge_graph,
    geodesic_distances,
    graph_laplacian,
    great_circle_distance,
    grid_edge_graph,
    grid_laplacian,
    healpix_areas,
    healpix_lonlat,
    healpix_neighbour_graph,
    latlon_cell_areas,
    lonlat_to_xyz,
    lumped_mass,
    scattered_sphere_areas,
    sphere_knn_graph,
    triangle_areas,
    xyz_to_lonlat,
)

FOUR_PI = 4.0 * np.pi


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _jittered_square(n=9, seed=0):
    """Delaunay triangulation of a jittered n x n grid on [0, 1]^2 (boundary kept straight)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n)
    X, Y = np.meshgrid(t, t, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    boundary = (
        np.isclose(pts[:, 0], 0) | np.isclose(pts[:, 0], 1)
        | np.isclose(pts[:, 1], 0) | np.isclose(pts[:, 1], 1)
    )
    h = t[1] - t[0]
    pts[~boundary] += rng.uniform(-0.3 * h, 0.3 * h, size=(int((~boundary).sum()), 2))
    faces = Delaunay(pts).simplices.astype(np.int64)
    verts = np.concatenate([pts, np.zeros((len(pts), 1))], axis=1)
    return verts, faces, boundary


def _icosphere(subdivisions):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def _edge_set(ei):
    return set(zip(ei[0].tolist(), ei[1].tolist()))


def _assert_undirected_graph(ei, n):
    assert ei.dtype == np.int64 and ei.shape[0] == 2
    assert ei.min() >= 0 and ei.max() < n
    assert np.all(ei[0] != ei[1]), "self loops"
    es = _edge_set(ei)
    assert len(es) == ei.shape[1], "duplicate edges"
    assert all((j, i) in es for i, j in es), "not symmetric"
    key = ei[0] * n + ei[1]
    assert np.all(np.diff(key) > 0), "not sorted"


def _fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    lat = np.rad2deg(np.arcsin(1.0 - 2.0 * i / n))
    lon = np.mod(np.rad2deg(np.pi * (1.0 + 5.0**0.5) * i), 360.0)
    return lon, lat


# ---------------------------------------------------------------------------
# import hygiene and purity
# ---------------------------------------------------------------------------


def test_import_does_not_load_heavy_libraries():
    code = (
        "import sys, geoinv\n"
        "before = set(sys.modules)\n"
        "import geoinv.geometry\n"
        "new = set(sys.modules) - before\n"
        "bad = sorted(m for m in new if m.split('.')[0] in ('healpy', 'potpourri3d', 'trimesh'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_functions_do_not_mutate_inputs():
    verts, faces, _ = _jittered_square(5)
    verts.setflags(write=False)
    faces.setflags(write=False)
    v0, f0 = verts.copy(), faces.copy()
    cotangent_laplacian(verts, faces)
    lumped_mass(verts, faces)
    triangle_areas(verts, faces)
    edge_graph(faces, len(verts))
    geodesic_distances(verts, faces, [0, 3])
    np.testing.assert_array_equal(verts, v0)
    np.testing.assert_array_equal(faces, f0)
    lon, lat = _fibonacci_sphere(50)
    lon.setflags(write=False)
    lat.setflags(write=False)
    sphere_knn_graph(lon, lat, k=4)
    scattered_sphere_areas(lon, lat)
    xyz = lonlat_to_xyz(lon, lat)
    xyz.setflags(write=False)
    xyz_to_lonlat(xyz)


# ---------------------------------------------------------------------------
# cotangent Laplacian / mass
# ---------------------------------------------------------------------------


def test_cotangent_laplacian_linear_precision_on_irregular_flat_mesh():
    verts, faces, boundary = _jittered_square(9)
    L = cotangent_laplacian(verts, faces)
    assert sp.isspmatrix_csr(L) and L.shape == (81, 81)
    f = 2.0 * verts[:, 0] - 3.0 * verts[:, 1] + 1.0
    Lf = L @ f
    np.testing.assert_allclose(Lf[~boundary], 0.0, atol=1e-10)
    assert np.max(np.abs(Lf[boundary])) > 0.1  # boundary flux of a linear function
    # Dirichlet energy of a linear function is exact: |grad f|^2 * area = 13 * 1
    assert f @ Lf == pytest.approx(13.0, rel=1e-10)
    D = L.toarray()
    np.testing.assert_allclose(D, D.T, atol=1e-14)
    np.testing.assert_allclose(D.sum(axis=1), 0.0, atol=1e-12)
    assert np.linalg.eigvalsh(D).min() >= -1e-10


def test_cotangent_weights_and_mass_of_single_right_triangles():
    # isosceles right triangle: right angle at vertex 0 -> zero weight across the hypotenuse
    v = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    f = np.array([[0, 1, 2]])
    L = cotangent_laplacian(v, f).toarray()
    expected = np.array([[1.0, -0.5, -0.5], [-0.5, 0.5, 0.0], [-0.5, 0.0, 0.5]])
    np.testing.assert_allclose(L, expected, atol=1e-15)
    np.testing.assert_allclose(lumped_mass(v, f), np.full(3, 0.5 / 3.0))
    np.testing.assert_allclose(triangle_areas(v, f), [0.5])
    # 3-4-5 triangle: cot at (3,0) is 3/4, cot at (0,4) is 4/3
    v = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    L = cotangent_laplacian(v, f).toarray()
    w01, w02, w12 = 0.5 * 4.0 / 3.0, 0.5 * 3.0 / 4.0, 0.0
    expected = np.array(
        [[w01 + w02, -w01, -w02], [-w01, w01 + w12, -w12], [-w02, -w12, w02 + w12]]
    )
    np.testing.assert_allclose(L, expected, atol=1e-14)
    np.testing.assert_allclose(lumped_mass(v, f), np.full(3, 2.0))


def test_obtuse_triangle_gives_negative_weight_but_psd():
    v = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.2]])  # obtuse angle at vertex 2
    L = cotangent_laplacian(v, [[0, 1, 2]]).toarray()
    a, b = v[0] - v[2], v[1] - v[2]
    cot2 = a @ b / abs(a[0] * b[1] - a[1] * b[0])
    assert cot2 < 0
    assert L[0, 1] == pytest.approx(-0.5 * cot2)
    assert np.linalg.eigvalsh(L).min() >= -1e-12


def test_degenerate_triangles_contribute_nothing():
    good_v = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    good_f = np.array([[0, 1, 2], [1, 3, 2]])
    # add three collinear points and a face with a repeated vertex
    v = np.vstack([good_v, [[2.0, 0.0, 0.0], [3.0, 0.0, 0.0], [4.0, 0.0, 0.0]]])
    f = np.vstack([good_f, [[4, 5, 6], [0, 0, 1], [3, 3, 3]]])
    L = cotangent_laplacian(v, f)
    M = lumped_mass(v, f)
    assert np.all(np.isfinite(L.data)) and np.all(np.isfinite(M))
    ref = cotangent_laplacian(good_v, good_f).toarray()
    D = L.toarray()
    np.testing.assert_allclose(D[:4, :4], ref, atol=1e-15)
    np.testing.assert_array_equal(D[4:], 0.0)
    np.testing.assert_allclose(M[:4], lumped_mass(good_v, good_f), rtol=1e-15)
    assert np.all(M > 0) and np.all(M[4:] < 1e-10)
    np.testing.assert_array_equal(triangle_areas(v, f)[2:], 0.0)


def test_needle_triangle_is_finite_and_clamped():
    v = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 1e-9]])  # nearly flat, not below the eps
    L = cotangent_laplacian(v, [[0, 1, 2]]).toarray()
    assert np.all(np.isfinite(L))
    assert np.max(np.abs(L)) <= COT_CLAMP + 1e-6
    np.testing.assert_allclose(L.sum(axis=1), 0.0, atol=1e-9)


def test_unreferenced_vertex_gives_zero_row_and_floored_mass():
    v = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    f = np.array([[0, 1, 2]])
    L = cotangent_laplacian(v, f).toarray()
    np.testing.assert_array_equal(L[3], 0.0)
    np.testing.assert_array_equal(L[:, 3], 0.0)
    M = lumped_mass(v, f)
    assert 0 < M[3] <= 1e-12 * M[:3].mean() * (1 + 1e-9)
    assert M[:3].sum() == pytest.approx(0.5)


def test_mass_sums_to_area_and_sphere_laplacian_eigenfunction():
    v, f = _icosphere(3)
    M = lumped_mass(v, f)
    assert M.sum() == pytest.approx(triangle_areas(v, f).sum(), rel=1e-12)
    assert M.sum() == pytest.approx(FOUR_PI, rel=0.01)
    # degree-1 spherical harmonics are eigenfunctions of -Delta with eigenvalue 2
    L = cotangent_laplacian(v, f)
    for u in (v[:, 2], v[:, 0] + 0.5 * v[:, 1]):
        lam = (u @ (L @ u)) / (u @ (M * u))
        assert lam == pytest.approx(2.0, rel=0.02)
    np.testing.assert_allclose(L @ np.ones(len(v)), 0.0, atol=1e-10)
    ei = edge_graph(f, len(v))
    # L has exactly the sparsity of the edge graph (plus diagonal)
    offdiag = sp.coo_matrix(L - sp.diags(L.diagonal()))
    assert _edge_set(np.stack([offdiag.row, offdiag.col])) == _edge_set(ei)


def test_edge_graph_matches_mesh_edges():
    v, f = _icosphere(2)
    ei = edge_graph(f, len(v))
    _assert_undirected_graph(ei, len(v))
    # closed triangle mesh: E_undirected = 3F/2, and Euler characteristic 2
    assert ei.shape[1] == 3 * len(f)
    assert len(v) - ei.shape[1] // 2 + len(f) == 2
    tet = edge_graph([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], 5)
    assert _edge_set(tet) == {(i, j) for i in range(4) for j in range(4) if i != j}
    rep = edge_graph([[0, 0, 1]], 2)
    np.testing.assert_array_equal(rep, [[0, 1], [1, 0]])


def test_mesh_input_errors():
    v = np.zeros((1889, 3))
    with pytest.raises(MeshError, match="faces index 2000 out of range for 1889 vertices"):
        cotangent_laplacian(v, [[0, 1, 2000]])
    with pytest.raises(ValueError, match="negative"):
        lumped_mass(v, [[0, -1, 2]])
    with pytest.raises(MeshError, match=r"\(F, 3\)"):
        edge_graph(np.zeros((4, 4), dtype=int), 10)
    with pytest.raises(MeshError, match="non-finite"):
        triangle_areas(np.full((3, 3), np.nan), [[0, 1, 2]])
    with pytest.raises(MeshError, match="integer"):
        edge_graph([[0.5, 1, 2]], 3)
    assert issubclass(MeshError, GeometryError) and issubclass(GeometryError, ValueError)


# ---------------------------------------------------------------------------
# geodesics
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def icosphere4():
    return _icosphere(4)


def test_geodesics_match_great_circle_on_icosphere(icosphere4):
    v, f = icosphere4
    lon, lat = xyz_to_lonlat(v)
    sources = np.array([0, 500, 1234])
    D = geodesic_distances(v, f, sources)
    assert D.shape == (3, len(v))
    h = np.mean(np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1))  # ~0.075
    for row, s in zip(D, sources):
        gc = great_circle_distance(lon[s], lat[s], lon, lat)
        assert row[s] == 0.0 and np.all(row >= 0)
        far = gc >= 0.1
        rel = np.abs(row[far] - gc[far]) / gc[far]
        assert rel.mean() < 0.03
        # heat-method smoothing error is a fraction of an edge length near the source
        assert np.max(np.abs(row - gc)) < 0.5 * h
        # beyond ~7 edge lengths the pointwise relative error is below 3 %
        assert rel[gc[far] >= 0.5].max() < 0.03
        assert np.max(row) == pytest.approx(np.pi, rel=0.03)


def test_geodesic_solver_caches_and_agrees(icosphere4):
    v, f = icosphere4
    solver = GeodesicSolver(v, f)
    np.testing.assert_allclose(solver.distances(7), geodesic_distances(v, f, 7), rtol=1e-12)
    np.testing.assert_allclose(solver.distances(0), geodesic_distances(v, f, [0])[0], rtol=1e-12)
    # symmetry of the distance (approximate for the heat method)
    d0, d9 = solver.distances(0), solver.distances(900)
    assert d0[900] == pytest.approx(d9[0], rel=0.03)
    with pytest.raises(MeshError, match="out of range"):
        solver.distances(len(v))


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_geodesics_with_unreferenced_vertex(position):
    v, f = _icosphere(1)
    n = len(v)
    ref = geodesic_distances(v, f, [0, 5])
    k = {"first": 0, "middle": n // 2, "last": n}[position]
    v2 = np.insert(v, k, [[3.0, 3.0, 3.0]], axis=0)
    f2 = np.where(f >= k, f + 1, f)
    old = np.delete(np.arange(n + 1), k)  # new indices of the original vertices
    D = geodesic_distances(v2, f2, old[[0, 5]])
    assert D.shape == (2, n + 1)
    np.testing.assert_allclose(D[:, old], ref, rtol=1e-10, atol=1e-12)
    assert np.all(np.isinf(D[:, k]))
    solo = geodesic_distances(v2, f2, k)  # source not on the surface
    assert solo[k] == 0.0 and np.all(np.isinf(np.delete(solo, k)))


def test_geodesics_disconnected_components_are_infinite():
    v, f = _icosphere(1)
    n = len(v)
    v2 = np.vstack([v, v + 5.0])
    f2 = np.vstack([f, f + n])
    d = geodesic_distances(v2, f2, 3)
    assert np.all(np.isfinite(d[:n])) and np.all(np.isinf(d[n:]))
    np.testing.assert_allclose(d[:n], geodesic_distances(v, f, 3), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# sphere coordinates and distances
# ---------------------------------------------------------------------------


def test_great_circle_hand_values_and_antipodes():
    gcd = great_circle_distance
    assert gcd(0, 0, 90, 0) == pytest.approx(np.pi / 2, abs=1e-15)
    assert gcd(0, 0, 0, 90) == pytest.approx(np.pi / 2, abs=1e-15)
    assert gcd(10, 0, 55, 0) == pytest.approx(np.pi / 4, abs=1e-15)
    assert gcd(123, 45, 123, -45) == pytest.approx(np.pi / 2, abs=1e-15)
    # (0,0) to (90,45): cos d = cos 45 cos 90 = 0 -> pi/2
    assert gcd(0, 0, 90, 45) == pytest.approx(np.pi / 2, abs=1e-15)
    # (0,45) to (90,45): cos d = sin^2 45 = 1/2 -> pi/3
    assert gcd(0, 45, 90, 45) == pytest.approx(np.pi / 3, abs=1e-14)
    lon = np.array([0.0, 37.0, 200.0, 10.0])
    lat = np.array([0.0, 12.5, -80.0, 90.0])
    np.testing.assert_allclose(gcd(lon, lat, lon + 180.0, -lat), np.pi, rtol=0, atol=1e-12)
    # tiny separations stay accurate (arccos of a dot product would give 0 or noise)
    eps = 1e-9
    assert gcd(20.0, 0.0, 20.0 + eps, 0.0) == pytest.approx(np.deg2rad(eps), rel=1e-6)
    assert gcd(0.0, 30.0, 0.0, 30.0) == 0.0
    # broadcasting
    out = gcd(0.0, 0.0, np.array([0.0, 90.0, 180.0]), 0.0)
    np.testing.assert_allclose(out, [0.0, np.pi / 2, np.pi], atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-360, 360), st.floats(-90, 90), st.floats(-360, 360), st.floats(-90, 90),
)
def test_great_circle_equals_chord_angle(lon1, lat1, lon2, lat2):
    a, b = lonlat_to_xyz(lon1, lat1), lonlat_to_xyz(lon2, lat2)
    d = great_circle_distance(lon1, lat1, lon2, lat2)
    assert 0.0 <= d <= np.pi
    # chord length |a - b| = 2 sin(d / 2)
    assert np.linalg.norm(a - b) == pytest.approx(2.0 * np.sin(d / 2.0), abs=1e-12)
    assert d == pytest.approx(great_circle_distance(lon2, lat2, lon1, lat1), abs=1e-15)


def test_lonlat_xyz_roundtrip():
    xyz = lonlat_to_xyz([0.0, 90.0, 180.0, 0.0, 45.0], [0.0, 0.0, 0.0, 90.0, -30.0])
    np.testing.assert_allclose(
        xyz[:4], [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15
    )
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, rtol=1e-15)
    rng = np.random.default_rng(1)
    lon = rng.uniform(-179, 179, 200)
    lat = rng.uniform(-89.9, 89.9, 200)
    lo, la = xyz_to_lonlat(3.7 * lonlat_to_xyz(lon, lat))  # scale does not matter
    np.testing.assert_allclose(lo, lon, atol=1e-10)
    np.testing.assert_allclose(la, lat, atol=1e-10)
    with pytest.raises(SphereError, match="zero vector"):
        xyz_to_lonlat([[0.0, 0.0, 0.0]])
    with pytest.raises(SphereError, match=r"\[-90, 90\]"):
        lonlat_to_xyz([0.0], [120.0])


# ---------------------------------------------------------------------------
# HEALPix
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("nside", [1, 2, 8])
def test_healpix_areas_equal(nside):
    import healpy as hp

    a = healpix_areas(nside)
    assert a.shape == (12 * nside**2,)
    np.testing.assert_allclose(a, hp.nside2pixarea(nside), rtol=1e-14)
    assert a.sum() == pytest.approx(FOUR_PI, rel=1e-14)


@pytest.mark.parametrize("nside", [2, 4, 8])
def test_healpix_neighbour_graph(nside):
    import healpy as hp

    npix = 12 * nside**2
    ei = healpix_neighbour_graph(nside, nest=True)
    _assert_undirected_graph(ei, npix)
    deg = np.bincount(ei[0], minlength=npix)
    assert np.count_nonzero(deg == 7) == 24
    assert np.count_nonzero(deg == 8) == npix - 24
    # neighbours are spatially adjacent: within ~2 pixel sizes
    lon, lat = healpix_lonlat(nside, nest=True)
    d = great_circle_distance(lon[ei[0]], lat[ei[0]], lon[ei[1]], lat[ei[1]])
    assert d.max() < 2.0 * np.sqrt(hp.nside2pixarea(nside)) * 1.5
    # the RING graph is the NESTED graph relabelled by ring2nest
    ring = healpix_neighbour_graph(nside, nest=False)
    r2n = hp.ring2nest(nside, np.arange(npix))
    assert _edge_set(r2n[ring]) == _edge_set(ei)


def test_healpix_lonlat_orderings_consistent():
    import healpy as hp

    nside = 4
    lon_n, lat_n = healpix_lonlat(nside, nest=True)
    lon_r, lat_r = healpix_lonlat(nside, nest=False)
    r2n = hp.ring2nest(nside, np.arange(12 * nside**2))
    np.testing.assert_allclose(lon_n[r2n], lon_r)
    np.testing.assert_allclose(lat_n[r2n], lat_r)
    # ring scheme: latitudes are non-increasing with pixel index; equator symmetric
    assert np.all(np.diff(lat_r) <= 0)
    np.testing.assert_allclose(np.sort(lat_r), np.sort(-lat_r), atol=1e-12)
    with pytest.raises(SphereError, match="power of two"):
        healpix_neighbour_graph(3, nest=True)


# ---------------------------------------------------------------------------
# area weights
# ---------------------------------------------------------------------------


def test_latlon_areas_global_grid_with_poles():
    lat = np.arange(-90.0, 90.0 + 1e-9, 3.0)
    lon = np.arange(0.0, 360.0, 3.0)
    A = latlon_cell_areas(lat, lon)
    assert A.shape == (61, 120)
    assert abs(A.sum() - FOUR_PI) < 1e-10
    # pole rows are polar caps of half-angle 1.5 degrees, split into 120 sectors
    cap = 2.0 * np.pi * (1.0 - np.cos(np.deg2rad(1.5)))
    np.testing.assert_allclose(A[0], cap / 120, rtol=1e-9)
    np.testing.assert_allclose(A[-1], cap / 120, rtol=1e-9)
    # equatorial cell: dlon * (sin 1.5 - sin -1.5)
    assert A[30, 7] == pytest.approx(np.deg2rad(3.0) * 2.0 * np.sin(np.deg2rad(1.5)), rel=1e-12)
    # reversed latitude order gives the flipped array
    np.testing.assert_allclose(latlon_cell_areas(lat[::-1], lon), A[::-1], rtol=1e-14)


def test_latlon_areas_global_grid_without_poles_and_regional():
    lat = np.arange(-88.5, 88.5 + 1e-9, 3.0)
    lon = np.arange(1.5, 360.0, 3.0)
    A = latlon_cell_areas(lat, lon)
    assert A.shape == (60, 120)
    assert abs(A.sum() - FOUR_PI) < 1e-10
    # areas proportional to cos(lat) to second order
    ratio = A[:, 0] / (np.deg2rad(3.0) ** 2 * np.cos(np.deg2rad(lat)))
    np.testing.assert_allclose(ratio, 1.0, rtol=2e-4)
    # regional box 10..30 N, 100..140 E as a spherical rectangle
    lat_r = np.arange(10.5, 30.0, 1.0)
    lon_r = np.arange(100.25, 140.0, 0.5)
    exact = np.deg2rad(40.0) * (np.sin(np.deg2rad(30.0)) - np.sin(np.deg2rad(10.0)))
    assert latlon_cell_areas(lat_r, lon_r).sum() == pytest.approx(exact, rel=1e-12)
    # longitudes wrapping through 0 are fine
    lon_w = np.mod(np.arange(350.25, 370.0, 0.5), 360.0)
    exact_w = np.deg2rad(20.0) * (np.sin(np.deg2rad(30.0)) - np.sin(np.deg2rad(10.0)))
    assert latlon_cell_areas(lat_r, lon_w).sum() == pytest.approx(exact_w, rel=1e-12)


def test_latlon_area_errors():
    with pytest.raises(GridError, match="uniformly spaced"):
        latlon_cell_areas([0.0, 1.0], [0.0, 1.0, 3.0])
    with pytest.raises(GridError, match="monotonic|increasing"):
        latlon_cell_areas([0.0, 2.0, 1.0], [0.0, 1.0])
    with pytest.raises(GridError, match="360"):
        latlon_cell_areas([0.0, 1.0], np.arange(0.0, 361.0, 3.0))


def test_scattered_areas_fibonacci_sphere():
    lon, lat = _fibonacci_sphere(400)
    a = scattered_sphere_areas(lon, lat)
    assert a.sum() == pytest.approx(FOUR_PI, rel=1e-10)
    # Fibonacci points are nearly equal-area
    np.testing.assert_allclose(a, FOUR_PI / 400, rtol=0.35)
    # HEALPix centres: Voronoi areas close to the (exactly equal) pixel areas
    hlon, hlat = healpix_lonlat(4)
    av = scattered_sphere_areas(hlon, hlat)
    assert av.sum() == pytest.approx(FOUR_PI, rel=1e-10)
    np.testing.assert_allclose(av, healpix_areas(4), rtol=0.35)
    with pytest.raises(SphereError, match="duplicate"):
        scattered_sphere_areas(np.r_[lon, lon[0]], np.r_[lat, lat[0]])


# ---------------------------------------------------------------------------
# kNN graph and graph Laplacian
# ---------------------------------------------------------------------------


def test_sphere_knn_graph_against_brute_force():
    rng = np.random.default_rng(3)
    n, k = 300, 8
    xyz = rng.normal(size=(n, 3))
    lon, lat = xyz_to_lonlat(xyz)
    ei = sphere_knn_graph(lon, lat, k=k)
    _assert_undirected_graph(ei, n)
    assert np.bincount(ei[0], minlength=n).min() >= k
    D = great_circle_distance(lon[:, None], lat[:, None], lon[None, :], lat[None, :])
    np.fill_diagonal(D, np.inf)
    knn = np.argsort(D, axis=1)[:, :k]
    expected = set()
    for i in range(n):
        for j in knn[i]:
            expected |= {(i, int(j)), (int(j), i)}
    assert _edge_set(ei) == expected
    with pytest.raises(SphereError, match="too large"):
        sphere_knn_graph(lon[:5], lat[:5], k=5)


def test_sphere_knn_graph_with_duplicate_points():
    lon = np.array([0.0, 0.0, 10.0, 20.0, 30.0])
    lat = np.zeros(5)
    ei = sphere_knn_graph(lon, lat, k=1)
    _assert_undirected_graph(ei, 5)
    assert (0, 1) in _edge_set(ei) and np.bincount(ei[0], minlength=5).min() >= 1
    # a cluster of many identical points: the tree may not return a point as its own
    # first neighbour, yet every point must still pick exactly k others (<= n*k pairs)
    lon = np.r_[np.zeros(8), 90.0, 180.0]
    lat = np.r_[np.zeros(8), 0.0, 45.0]
    for k in (1, 2):
        ei = sphere_knn_graph(lon, lat, k=k)
        _assert_undirected_graph(ei, 10)
        assert ei.shape[1] // 2 <= 10 * k
        assert np.bincount(ei[0], minlength=10).min() >= k


def test_graph_laplacian_matches_dense_definition():
    ei = np.array([[0, 1, 1, 2, 0, 2], [1, 0, 2, 1, 2, 0]])
    w = np.array([2.0, 2.0, 3.0, 3.0, 0.5, 0.5])
    L = graph_laplacian(ei, 4, w).toarray()
    expected = np.array(
        [[2.5, -2.0, -0.5, 0.0], [-2.0, 5.0, -3.0, 0.0], [-0.5, -3.0, 3.5, 0.0], [0, 0, 0, 0]]
    )
    np.testing.assert_allclose(L, expected)
    # unit weights: degree matrix minus adjacency; x^T L x = sum over edges (x_i - x_j)^2
    v, f = _icosphere(1)
    g = edge_graph(f, len(v))
    Lg = graph_laplacian(g, len(v))
    x = np.random.default_rng(0).normal(size=len(v))
    assert x @ (Lg @ x) == pytest.approx(0.5 * np.sum((x[g[0]] - x[g[1]]) ** 2), rel=1e-12)
    # cotangent weights reproduce the cotangent Laplacian
    Lc = cotangent_laplacian(v, f).tocoo()
    off = Lc.row != Lc.col
    rebuilt = graph_laplacian(np.stack([Lc.row[off], Lc.col[off]]), len(v), -Lc.data[off])
    np.testing.assert_allclose(rebuilt.toarray(), Lc.toarray(), atol=1e-14)
    with pytest.raises(GraphError, match="directed"):
        graph_laplacian([[0], [1]], 2)
    with pytest.raises(GraphError, match="out of range"):
        graph_laplacian([[0, 5], [5, 0]], 3)


# ---------------------------------------------------------------------------
# regular grids
# ---------------------------------------------------------------------------


def test_grid_laplacian_linear_ramp_and_stencil():
    h, w, dy, dx = 6, 7, 0.5, 2.0
    L = grid_laplacian(h, w, spacing=(dy, dx))
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ramp = (3.0 * i * dy - 1.5 * j * dx + 4.0).ravel()
    Lr = (L @ ramp).reshape(h, w)
    np.testing.assert_allclose(Lr[1:-1, 1:-1], 0.0, atol=1e-12)
    assert np.abs(Lr[0]).max() > 1.0 and np.abs(Lr[:, 0]).max() > 1.0
    # interior stencil: (2u - up - down)/dy^2 + (2u - left - right)/dx^2, times dx*dy
    u = np.random.default_rng(0).normal(size=(h, w))
    Lu = (L @ u.ravel()).reshape(h, w)
    ref = ((2 * u - np.roll(u, 1, 0) - np.roll(u, -1, 0)) / dy**2
           + (2 * u - np.roll(u, 1, 1) - np.roll(u, -1, 1)) / dx**2) * dx * dy
    np.testing.assert_allclose(Lu[1:-1, 1:-1], ref[1:-1, 1:-1], rtol=1e-12)
    D = L.toarray()
    np.testing.assert_allclose(D, D.T, atol=0)
    np.testing.assert_allclose(D.sum(axis=1), 0.0, atol=1e-12)
    assert np.linalg.eigvalsh(D).min() >= -1e-10
    # the graph of the Laplacian is the grid edge graph
    offdiag = sp.coo_matrix(L - sp.diags(L.diagonal()))
    assert _edge_set(np.stack([offdiag.row, offdiag.col])) == _edge_set(grid_edge_graph(h, w))


def test_grid_laplacian_periodic_spectrum():
    h, w, dy, dx = 5, 8, 0.7, 1.3
    L = grid_laplacian(h, w, spacing=(dy, dx), periodic=True)
    j = np.tile(np.arange(w), h)
    f = np.sin(2 * np.pi * j / w)
    lam = (2 - 2 * np.cos(2 * np.pi / w)) / dx**2 * dx * dy
    np.testing.assert_allclose(L @ f, lam * f, atol=1e-12)
    i = np.repeat(np.arange(h), w)
    g = np.cos(2 * np.pi * 2 * i / h)
    lam_g = (2 - 2 * np.cos(4 * np.pi / h)) / dy**2 * dx * dy
    np.testing.assert_allclose(L @ g, lam_g * g, atol=1e-12)
    # whole spectrum = Kronecker sum of 1-D periodic spectra
    p, q = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    analytic = dx * dy * ((2 - 2 * np.cos(2 * np.pi * p / h)) / dy**2
                          + (2 - 2 * np.cos(2 * np.pi * q / w)) / dx**2)
    D = L.toarray()
    np.testing.assert_allclose(D, D.T, atol=0)
    np.testing.assert_allclose(np.linalg.eigvalsh(D), np.sort(analytic.ravel()), atol=1e-10)


def test_grid_edge_graph_counts():
    h, w = 4, 5
    ei = grid_edge_graph(h, w)
    _assert_undirected_graph(ei, h * w)
    assert ei.shape[1] == 2 * (h * (w - 1) + w * (h - 1))
    assert (0 * w + 0, 0 * w + 1) in _edge_set(ei) and (0, w) in _edge_set(ei)
    assert (0, w - 1) not in _edge_set(ei)
    ep = grid_edge_graph(h, w, periodic=True)
    _assert_undirected_graph(ep, h * w)
    assert np.all(np.bincount(ep[0], minlength=h * w) == 4)
    assert (0, w - 1) in _edge_set(ep) and (0, (h - 1) * w) in _edge_set(ep)
    # periodic axis of length 2: single edge, doubled weight in the Laplacian
    L2 = grid_laplacian(1, 2, periodic=True).toarray()
    np.testing.assert_allclose(L2, [[2.0, -2.0], [-2.0, 2.0]])
    with pytest.raises(GridError, match="spacing"):
        grid_laplacian(3, 3, spacing=(1.0, -1.0))
    with pytest.raises(GridError, match="h must be"):
        grid_edge_graph(0, 3)
