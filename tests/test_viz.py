"""Rendering: PNGs are read back and checked for behaviour (size, colours, NaN, shared scales, atomic writes).

PyVista tests take the ``can_render`` fixture (GL probed in a subprocess); matplotlib tests
need no GL. The mesh is an icosphere stretched to a 3:2:1 ellipsoid so that the default
PCA camera is well defined: it looks along z, with y up and x running left to right.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoinv import MeshSignal, SphereSignal
from geoinv import viz
from geoinv.errors import ShapeError
from geoinv.viz._common import atomic_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers --------------------------------------------------------------------------------
def _ellipsoid(nsub: int = 3) -> MeshSignal:
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=nsub)
    v = np.asarray(m.vertices) * np.array([3.0, 2.0, 1.0])
    return MeshSignal(torch.tensor(v, dtype=torch.float32), torch.tensor(np.asarray(m.faces)), np.zeros(len(v)))


def _read_png(path: Path) -> np.ndarray:
    """RGB uint8 image of a PNG file (checks the PNG signature first)."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    if img.dtype != np.uint8:
        img = np.round(img * 255).astype(np.uint8)
    return img[..., :3]


def _cmap_position(rgb: np.ndarray, cmap: str = "viridis") -> float:
    """Position in [0, 1] of the colormap colour with the closest direction to ``rgb``.

    Lighting scales a surface colour by a roughly colour-neutral factor, so the direction
    of the RGB vector (not its length) identifies the colormap entry.
    """
    import matplotlib

    lut = matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    lut = lut / np.linalg.norm(lut, axis=1, keepdims=True)
    a = np.asarray(rgb, np.float64)
    return float(np.argmax(lut @ (a / np.linalg.norm(a)))) / 255.0


def _panel(img: np.ndarray, i: int, k: int) -> np.ndarray:
    """Panel ``i`` of ``k``, cut to the band between title and scalar bar (rows 15 %..78 %)."""
    h, w = img.shape[:2]
    return img[int(0.15 * h) : int(0.78 * h), i * w // k : (i + 1) * w // k]


def _patch(panel: np.ndarray, fx: float, fy: float = 0.5, r: int = 3) -> np.ndarray:
    h, w = panel.shape[:2]
    y, x = int(fy * h), int(fx * w)
    return np.median(panel[y - r : y + r + 1, x - r : x + r + 1].reshape(-1, 3).astype(float), axis=0)


def _is_magenta(px: np.ndarray) -> np.ndarray:
    r, g, b = (px[..., c].astype(int) for c in range(3))
    return (r > 100) & (b > 100) & (g < 0.35 * np.minimum(r, b))


def _surface(panel: np.ndarray) -> np.ndarray:
    """Pixels that are not (near-)white background, as (M, 3)."""
    px = panel.reshape(-1, 3)
    return px[px.min(1) < 245]


def _pixel(fig, ax, fx: float, fy: float) -> np.ndarray:
    """RGB of the drawn figure at axes fraction (fx, fy)."""
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    x, y = ax.transAxes.transform((fx, fy))
    return buf[buf.shape[0] - int(round(y)), int(round(x))].astype(int)


def _rgb255(colour) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.round(np.array(to_rgb(colour)) * 255).astype(int)


def _map_axes(fig) -> list:
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


# -- pure logic (no rendering) --------------------------------------------------------------
def test_colour_scales_shared_rule():
    f = {
        "truth": np.array([0.0, 2.0]),
        "observed": np.array([np.nan, 5.0]),
        "harmonic": np.array([-1.0, 1.0]),
        "std": np.array([0.1, 0.3]),
        "abs_error": np.array([0.0, 9.0]),
    }
    scales = viz.colour_scales(f, None, "viridis", "magma")
    assert scales[0].shared and scales[0].names == ["truth", "observed", "harmonic"]
    assert scales[0].clim == (-1.0, 5.0)  # NaN ignored
    rest = {s.names[0]: s for s in scales[1:]}
    assert set(rest) == {"std", "abs_error"}
    assert rest["std"].clim == (0.1, 0.3) and rest["std"].cmap == "magma"
    assert rest["abs_error"].clim == (0.0, 9.0)
    assert len({s.title for s in scales}) == len(scales)

    custom = viz.colour_scales(f, ["truth", "harmonic"], "viridis", "magma")
    assert custom[0].names == ["truth", "harmonic"] and custom[0].clim == (-1.0, 2.0)
    assert {s.names[0]: s.cmap for s in custom[1:]}["observed"] == "viridis"
    with pytest.raises(ShapeError, match="not panels"):
        viz.colour_scales(f, ["nope"], "viridis", "magma")

    # groups: the estimates on one range, the spread panels on another (compared with each other)
    grouped = viz.colour_scales(f, [["truth", "harmonic"], ["std", "abs_error"]], "viridis", "magma", clim=(-3, 3))
    assert [s.names for s in grouped] == [["truth", "harmonic"], ["std", "abs_error"], ["observed"]]
    assert grouped[0].clim == (-3.0, 3.0) and grouped[0].cmap == "viridis"     # clim: the first group only
    assert grouped[1].clim == (0.0, 9.0) and grouped[1].cmap == "magma" and grouped[1].shared
    assert len({s.title for s in grouped}) == 3
    assert [s.names for s in viz.colour_scales(f, [["truth"], "std"], "viridis", "magma")][:2] == [["truth"], ["std"]]
    named = viz.colour_scales(f, {"values": ["truth", "harmonic"], "|error|": ["abs_error"]}, "viridis", "magma")
    assert [(s.title, s.names) for s in named][:2] == [("values", ["truth", "harmonic"]), ("|error|", ["abs_error"])]
    with pytest.raises(ShapeError, match="more than one"):
        viz.colour_scales(f, [["truth", "std"], ["std"]], "viridis", "magma")
    with pytest.raises(ShapeError, match="not panels"):
        viz.colour_scales(f, [["truth"], ["nope"]], "viridis", "magma")


def test_default_camera_looks_along_smallest_axis():
    v = _ellipsoid(2).vertices.numpy().astype(float)
    pos, focal, up = (np.array(a) for a in viz.default_camera(v, aspect=1.0))
    view = (focal - pos) / np.linalg.norm(focal - pos)
    assert abs(abs(view[2]) - 1) < 1e-6  # along z, the 1-axis
    assert abs(abs(up[1]) - 1) < 1e-6  # view-up y, the 2-axis
    assert np.linalg.norm(pos) > 3.0  # outside the mesh


def test_painted_camera_shows_painted_images_upright():
    """From the painted camera, image column j runs left to right and row 0 sits at the top."""
    from geoinv.datasets import paint_on_mesh

    v = _ellipsoid(2).vertices.numpy().astype(float)
    pos, focal, up = (np.array(a) for a in viz.painted_camera(v, aspect=1.0))
    view = (focal - pos) / np.linalg.norm(focal - pos)
    right = np.cross(view, up)  # screen right for a camera looking along `view` with `up` up
    # paint the column index and the row index: they must grow to the right and downwards on screen
    cols = paint_on_mesh(v, np.tile(np.arange(28.0), (28, 1)))[0]
    rows = paint_on_mesh(v, np.tile(np.arange(28.0)[:, None], (1, 28)))[0]
    c = v - v.mean(0)
    assert np.corrcoef(c @ right, cols)[0, 1] > 0.99
    assert np.corrcoef(c @ up, rows)[0, 1] < -0.99


def test_sphere_triangulation_global_and_regional():
    s = SphereSignal(np.zeros(12 * 4**2), nside=4)
    xyz, faces = viz.sphere_triangulation(s.lon, s.lat)
    assert len(faces) == 2 * len(xyz) - 4  # closed convex polyhedron on all points
    a, b, c = (xyz[faces[:, i]] for i in range(3))
    n = np.cross(b - a, c - a)
    assert (np.einsum("ij,ij->i", n, a + b + c) > 0).all()  # outward
    lat, lon = np.linspace(49, 61, 33), np.linspace(-8, 2, 49)
    g = SphereSignal.from_grid(np.zeros((33, 49)), lat, lon)
    xyz, faces = viz.sphere_triangulation(g.lon, g.lat)
    a, b, c = (xyz[faces[:, i]] for i in range(3))
    n = np.cross(b - a, c - a)
    assert (np.einsum("ij,ij->i", n, a + b + c) > 0).all()
    assert len(faces) == 2 * (33 - 1) * (49 - 1)  # the cap only, no flat lid


def test_atomic_png_cleans_up_on_failure(tmp_path):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_png(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("renderer crashed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_import_is_light():
    code = (
        "import sys, geoinv.viz; heavy = [m for m in ('matplotlib', 'pyvista', 'vtk', 'healpy') if m in sys.modules]; "
        "sys.exit(repr(heavy) if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]


# -- matplotlib maps ------------------------------------------------------------------------
def test_mollweide_healpix_north_south(tmp_path):
    s = SphereSignal(np.zeros(12 * 8**2), nside=8)
    s = SphereSignal(np.where(s.lat >= 0, 1.0, -1.0), nside=8, name="sign")
    fig = viz.mollweide(s, tmp_path / "moll.png", title="sign")
    assert len(fig.axes) == 2 and fig.axes[0].name == "mollweide"
    top, bottom = _pixel(fig, fig.axes[0], 0.54, 0.8), _pixel(fig, fig.axes[0], 0.54, 0.2)  # off the grid lines
    assert top[0] > top[2] + 50 and bottom[2] > bottom[0] + 50  # RdBu_r: red north, blue south
    img = _read_png(tmp_path / "moll.png")
    w, h = fig.get_size_inches() * fig.dpi
    assert img.shape[:2] == (round(h), round(w))
    assert [p.name for p in tmp_path.iterdir()] == ["moll.png"]


def test_mollweide_regular_grid_and_points(tmp_path):
    lat, lon = np.linspace(-87.5, 87.5, 36), np.arange(0, 360, 10.0)  # lon in [0, 360): wrapped for plotting
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    g = SphereSignal.from_grid(np.where(lo < 180, 1.0, -1.0), lat, lon)
    fig = viz.mollweide(g)
    ax = fig.axes[0]
    east, west = _pixel(fig, ax, 0.71, 0.56), _pixel(fig, ax, 0.29, 0.56)  # off the grid lines
    assert east[0] > east[2] + 50 and west[2] > west[0] + 50  # lon 0..180 east of Greenwich, on the right
    rng = np.random.default_rng(0)
    p = SphereSignal.from_latlon(rng.normal(size=50), rng.uniform(-80, 80, 50), rng.uniform(0, 360, 50))
    fig = viz.mollweide(p, mask=np.arange(50) % 2 == 0, colorbar=False)
    assert len(fig.axes) == 1


def test_map_panels_regional_grid(tmp_path):
    lat, lon = np.linspace(49, 61, 33), np.linspace(-8, 2, 49)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    truth = SphereSignal.from_grid(np.sin(la / 3) + np.cos(lo / 2), lat, lon)
    t = truth.point_values()[0, :, 0].numpy()
    gaps = t.reshape(33, 49).copy()
    gaps[8:26, 10:40] = np.nan
    panels = {"truth": truth, "gaps": gaps.ravel(), "mean": np.full_like(t, t.max()), "std": np.abs(t)}
    fig = viz.map_panels(panels, tmp_path / "uk.png", projection="platecarree")
    maps = _map_axes(fig)
    assert len(maps) == 4 and len(fig.axes) == 6  # 4 maps + shared and std colour bars
    assert all(a.name == "rectilinear" for a in maps)
    assert [a.get_title() for a in maps] == list(panels)
    nan_px = _pixel(fig, maps[1], 0.5, 0.5)  # inside the NaN block
    assert np.abs(nan_px - _rgb255("lightgrey")).max() <= 2
    import matplotlib

    top = np.round(np.array(matplotlib.colormaps["RdBu_r"](1.0)[:3]) * 255)
    assert np.abs(_pixel(fig, maps[2], 0.5, 0.5) - top).max() <= 2  # all at the shared max
    assert _read_png(tmp_path / "uk.png").shape[2] == 3
    assert viz.map_panels({"truth": truth}, projection="auto").axes[0].name == "rectilinear"


def test_map_panels_healpix_global():
    s = SphereSignal(np.zeros(12 * 4**2), nside=4)
    s = SphereSignal(np.sin(np.radians(s.lat)), nside=4)
    v = s.point_values()[0, :, 0].numpy()
    fig = viz.map_panels({"truth": s, "mean": v * 0.5, "std": np.abs(v)})
    maps = _map_axes(fig)
    assert len(maps) == 3 and all(a.name == "mollweide" for a in maps)
    with pytest.raises(ShapeError, match="like="):
        viz.map_panels({"truth": v})
    with pytest.raises(ShapeError):
        viz.map_panels({"truth": s}, projection="robinson")


def test_grid_panels(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(24, 32))
    obs = truth.copy()
    obs[:, :16] = np.nan
    panels = {"truth": torch.tensor(truth), "observed": obs[None], "mean": np.full_like(truth, truth.max()),
              "std": rng.uniform(size=(24, 32))}
    fig = viz.grid_panels(panels, tmp_path / "grid.png")
    maps = _map_axes(fig)
    assert len(maps) == 4 and len(fig.axes) == 6
    assert np.abs(_pixel(fig, maps[1], 0.25, 0.5) - _rgb255("lightgrey")).max() <= 2
    import matplotlib

    top = np.round(np.array(matplotlib.colormaps["RdBu_r"](1.0)[:3]) * 255)
    assert np.abs(_pixel(fig, maps[2], 0.5, 0.5) - top).max() <= 2
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ShapeError):
        viz.grid_panels({"bad": np.zeros((2, 3, 4))})


# -- pyvista renders ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mesh_render(can_render, tmp_path_factory):
    """One 4-panel render shared by the checks below (each render costs seconds)."""
    mesh = _ellipsoid(3)
    v = mesh.vertices.numpy()
    truth = np.where(v[:, 0] > 0, 1.0, 0.0)  # 0 on one half, 1 on the other (x is left-right)
    observed = truth.copy()
    observed[v[:, 1] > 0] = np.nan  # upper half unobserved
    panels = {"truth": torch.tensor(truth), "observed": observed, "max": np.ones(len(v)), "std": np.abs(v[:, 1])}
    d = tmp_path_factory.mktemp("mesh_render")
    out = viz.render_mesh_panels(mesh, panels, d / "panels.png", panel_size=(260, 260), nan_color="magenta")
    return out, _read_png(out)


def test_render_mesh_panels_png(mesh_render):
    out, img = mesh_render
    assert out.is_file() and out.name == "panels.png"
    assert img.shape == (260, 4 * 260, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["panels.png"]  # no temp file left behind
    quantised = {tuple(c) for c in (img.reshape(-1, 3) // 16)}
    assert len(quantised) > 20  # not blank


def test_render_mesh_panels_halves_differ(mesh_render):
    _, img = mesh_render
    truth = _panel(img, 0, 4)
    left, right = _patch(truth, 0.3), _patch(truth, 0.7)
    assert _cmap_position(left) < 0.15 and _cmap_position(right) > 0.85


def test_render_mesh_panels_nan_colour(mesh_render):
    _, img = mesh_render
    obs, truth = _panel(img, 1, 4), _panel(img, 0, 4)
    frac = _is_magenta(_surface(obs)).mean()
    assert 0.2 < frac < 0.8  # the unobserved half
    assert _is_magenta(_surface(truth)).mean() == 0
    assert _is_magenta(_patch(obs, 0.5, 0.25)) and not _is_magenta(_patch(obs, 0.5, 0.75))  # y up


def test_render_mesh_panels_shared_max(mesh_render):
    _, img = mesh_render
    top = _panel(img, 2, 4)
    assert _cmap_position(_patch(top, 0.5)) > 0.95
    std = _panel(img, 3, 4)
    assert len({tuple(c) for c in (_surface(std) // 16)}) > 5  # own scale, varied colours


def test_render_mesh_single_with_camera(can_render, tmp_path):
    mesh = _ellipsoid(2)
    cam = ((0.0, 0.0, -12.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    out = viz.render_mesh(mesh, mesh.vertices[:, 0], tmp_path / "sub" / "one.png", window_size=(320, 240),
                          camera=cam, titles=False)
    img = _read_png(out)
    assert img.shape == (240, 320, 3)
    assert len({tuple(c) for c in (img.reshape(-1, 3) // 16)}) > 10
    assert sorted(p.name for p in out.parent.iterdir()) == ["one.png"]


def test_globe(can_render, tmp_path):
    s = SphereSignal(np.zeros(12 * 8**2), nside=8)
    s = SphereSignal(np.where(s.lat >= 0, 1.0, -1.0), nside=8)
    out = viz.globe(s, tmp_path / "globe.png", window_size=(300, 300))
    img = _read_png(out)
    assert img.shape == (300, 300, 3)
    col = img[:, 140:160].astype(int)
    surf = [r for r in range(int(0.8 * 300)) if col[r].min() < 240]  # above the scalar bar
    top, bottom = col[surf[len(surf) // 5]].mean(0), col[surf[4 * len(surf) // 5]].mean(0)
    assert top[0] > top[2] + 30 and bottom[2] > bottom[0] + 30  # north red, south blue
