"""Off-screen PyVista rendering of per-vertex fields on meshes and on the globe.

PyVista/VTK are imported inside the functions. Off-screen rendering goes through EGL
(``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, set here with ``setdefault`` before
the first plotter). Without any working OpenGL, VTK crashes the process instead of
raising, so callers that may run on such machines should probe in a subprocess first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoinv.errors import ShapeError
from geoinv.viz._common import as_field, atomic_png, colour_scales, data_range, panel_titles

__all__ = ["default_camera", "painted_camera", "globe", "render_mesh", "render_mesh_panels"]

logger = logging.getLogger("geoinv.viz")

#: Vertical view angle of VTK's default camera, degrees.
_VIEW_ANGLE = 30.0
#: Viewport fractions kept free for the title (top) and the scalar bar (bottom).
_TOP_MARGIN = 0.11
_BOTTOM_MARGIN = 0.20

Camera = tuple[Sequence[float], Sequence[float], Sequence[float]]


def _pyvista():
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    return pv


def _geometry(mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) float64 and triangles (F, 3) int64 of a MeshSignal or a triangulated PolyData."""
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        v = mesh.vertices.detach().cpu().numpy() if hasattr(mesh.vertices, "detach") else mesh.vertices
        f = mesh.faces.detach().cpu().numpy() if hasattr(mesh.faces, "detach") else mesh.faces
    elif hasattr(mesh, "points") and hasattr(mesh, "regular_faces"):
        if not mesh.is_all_triangles:
            mesh = mesh.triangulate()
        v, f = mesh.points, mesh.regular_faces
    else:
        raise ShapeError(f"expected a MeshSignal or a pyvista.PolyData, got {type(mesh).__name__}")
    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ShapeError(f"mesh must have vertices (N, 3) and triangles (F, 3), got {v.shape} and {f.shape}")
    return v, f


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def _fixed_sign(e: np.ndarray) -> np.ndarray:
    """Flip ``e`` so that its largest-magnitude component is positive (a deterministic choice)."""
    return e if e[np.argmax(np.abs(e))] >= 0 else -e


def default_camera(points: Any, aspect: float = 1.0, *, fill: float = 0.9) -> Camera:
    """Camera that looks at a point cloud along its smallest principal axis.

    The view direction is the axis of least variance (PCA of the points), the view-up
    vector the second axis, so the longest axis runs left to right. The distance frames
    the points in a viewport of the given aspect ratio with VTK's 30 degree view angle,
    keeping the top ``11 %`` free for a title and the bottom ``20 %`` for a scalar bar.

    Parameters
    ----------
    points : array-like, shape (N, 3)
        Vertex positions.
    aspect : float
        Viewport width / height.
    fill : float
        Fraction of the free viewport height (and width) the points may cover.

    Returns
    -------
    (position, focal_point, view_up)
        Three 3-tuples, as accepted by ``pyvista.Plotter.camera_position``.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    c = p.mean(0)
    x = p - c
    if len(p) >= 3 and np.linalg.norm(x) > 0:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        axes = np.zeros((3, 3))
        axes[: len(vt)] = vt
    else:
        axes = np.eye(3)
    e1 = _fixed_sign(axes[0]) if np.linalg.norm(axes[0]) > 0 else np.array([1.0, 0, 0])
    e2 = axes[1] - axes[1] @ e1 * e1
    e2 = _fixed_sign(_unit(e2)) if np.linalg.norm(e2) > 1e-12 else _unit(np.cross(e1, [0, 0, 1.0]) if abs(e1[2]) < 0.9 else np.cross(e1, [0, 1.0, 0]))
    return frame_camera(p, e1, e2, aspect, fill)


def painted_camera(points: Any, aspect: float = 1.0, *, fill: float = 0.9) -> Camera:
    """Camera from which an image painted with :func:`geoinv.datasets.paint_on_mesh` reads upright.

    It looks at the mesh from ``+e3`` with view-up ``+e2`` of
    :func:`geoinv.datasets.bunny_frame` (the painting frame), so a Bunny-MNIST digit appears
    as it does in its 28 x 28 image: not rotated, not mirrored.
    """
    from geoinv.datasets import bunny_frame

    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    _, axes = bunny_frame(p)
    return frame_camera(p, axes[0], axes[1], aspect, fill)


def frame_camera(points: np.ndarray, right: np.ndarray, up: np.ndarray, aspect: float, fill: float) -> Camera:
    """Camera with the given right/up screen axes that frames ``points`` inside the free band.

    The camera sits on ``right x up`` (right-handed, so ``right`` points right on screen).
    """
    c = points.mean(0)
    x = points - c
    back = np.cross(right, up)
    u, v, w = x @ right, x @ up, x @ back
    cu, cv = 0.5 * (u.max() + u.min()), 0.5 * (v.max() + v.min())
    hu = max(0.5 * (u.max() - u.min()), 1e-9)
    hv = max(0.5 * (v.max() - v.min()), 1e-9)
    free_h = 1.0 - _TOP_MARGIN - _BOTTOM_MARGIN
    tan = np.tan(np.radians(_VIEW_ANGLE / 2))
    need = max(hv / (fill * free_h), hu / (fill * aspect))  # half-height of the view at the front of the points
    dist = w.max() + need / tan
    # shift the view so that the points sit in the middle of the free band
    shift = (0.5 * (_BOTTOM_MARGIN + 1.0 - _TOP_MARGIN) - 0.5) * 2 * dist * tan
    focal = c + cu * right + (cv - shift) * up
    position = focal + dist * back
    return tuple(map(float, position)), tuple(map(float, focal)), tuple(map(float, up))


def _labels_below(plotter: Any) -> None:
    """Put scalar-bar labels under the bar so that they never collide with the title above it."""
    for bar in plotter.scalar_bars.values():
        bar.SetTextPositionToPrecedeScalarBar()


def _bar_args(title: str, font_scale: float) -> dict:
    return {
        "title": title,
        "vertical": False,
        "position_x": 0.14,
        "position_y": 0.02,
        "width": 0.72,
        "height": 0.17,
        "n_labels": 3,
        "fmt": "%.3g",
        "title_font_size": max(8, int(round(13 * font_scale))),
        "label_font_size": max(8, int(round(11 * font_scale))),
        "color": "black",
        "font_family": "arial",
    }


def render_mesh_panels(
    mesh: Any,
    panels: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    shared: Sequence[str] | None = None,
    cmap: Any = "viridis",
    std_cmap: Any = "magma",
    camera: Camera | str | None = None,
    window_size: tuple[int, int] | None = None,
    titles: Any = True,
    nan_color: Any = "lightgrey",
    clim: tuple[float, float] | None = None,
    panel_size: tuple[int, int] = (380, 400),
) -> Path:
    """Render per-vertex fields on one mesh as side-by-side panels into one PNG.

    Parameters
    ----------
    mesh : MeshSignal or pyvista.PolyData
        The geometry (its values are not drawn).
    panels : mapping of str to array-like
        Panel name to values of shape ``(N,)`` (tensors, arrays, ``(N, 1)``, or a
        container whose first sample and channel are taken), in drawing order, e.g.
        ``{"truth": x, "observed": y_with_nan, "harmonic": h, "std": s}``.
    path : str or PathLike
        PNG to write (atomically: rendered to a temporary file in the same directory,
        then moved into place).
    shared : sequence of str, sequences of str, or mapping of str to sequence of str, optional
        Panels that share one colour range (min/max over them, ignoring NaN), or several
        such groups (a mapping names their colour bars). Default: every panel whose name
        does not end with ``std``/``error``. Other panels get their own range; spread
        panels use ``std_cmap``.
    cmap, std_cmap : str or Colormap
        Colormaps of value panels and of spread panels.
    camera : (position, focal_point, view_up) or str, optional
        Default: :func:`default_camera` (look along the smallest principal axis).
        ``"painted"``: :func:`painted_camera` (painted images read upright, e.g. Bunny-MNIST
        digits). Another string such as ``"xy"`` or ``"iso"`` is passed to PyVista. All
        panels share (are linked to) one camera.
    window_size : (int, int), optional
        Image ``(width, height)`` in pixels; default ``panel_size`` times the number of panels.
    titles : bool, mapping or sequence
        ``True`` draws the panel names, ``False`` nothing; or the titles to draw.
    nan_color : colour
        Colour of NaN (unobserved) vertices.
    clim : (float, float), optional
        Fixed colour range of the (first) shared group.
    panel_size : (int, int)
        Size of one panel when ``window_size`` is not given.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    There is one scalar bar per colour scale, drawn under the middle panel of the
    shared group and under each panel with its own scale. Surfaces are lit (smooth
    shading), so pixel colours are the colormap's colours times a lighting factor.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ShapeError("panels must be a non-empty mapping {name: values}")
    verts, faces = _geometry(mesh)
    names = [str(k) for k in panels]
    fields = {str(k): as_field(v, len(verts), name=f"panel {k!r}") for k, v in panels.items()}
    scales = colour_scales(fields, shared, cmap, std_cmap, clim)
    k = len(names)
    if window_size is None:
        window_size = (int(panel_size[0]) * k, int(panel_size[1]))
    window_size = (int(window_size[0]), int(window_size[1]))
    if camera is None:
        camera = default_camera(verts, aspect=(window_size[0] / k) / window_size[1])
    elif isinstance(camera, str) and camera == "painted":
        camera = painted_camera(verts, aspect=(window_size[0] / k) / window_size[1])
    font_scale = min(1.4, max(0.7, window_size[1] / 400))
    title_list = panel_titles(names, titles)

    t0 = time.perf_counter()
    pv = _pyvista()
    base = pv.PolyData.from_regular_faces(verts, faces)
    plotter = pv.Plotter(shape=(1, k), off_screen=True, window_size=window_size, border=False)
    try:
        plotter.set_background("white")
        scale_of = {n: s for s in scales for n in s.names}
        for i, name in enumerate(names):
            plotter.subplot(0, i)
            s = scale_of[name]
            poly = base.copy(deep=False)
            key = f"__panel{i}"
            poly.point_data[key] = fields[name]
            bar = s.bar_panel == name
            plotter.add_mesh(
                poly, scalars=key, cmap=s.cmap, clim=s.clim, nan_color=nan_color, smooth_shading=True,
                show_edges=False, show_scalar_bar=bar,
                scalar_bar_args=_bar_args(s.title, font_scale) if bar else None,
            )
            if title_list[i]:
                plotter.add_text(str(title_list[i]), position="upper_edge", font_size=max(7, int(round(10 * font_scale))),
                                 color="black")
        if k > 1:
            plotter.link_views()
        for i in range(k):
            plotter.subplot(0, i)
            plotter.camera_position = camera
        _labels_below(plotter)
        with atomic_png(path) as tmp:
            plotter.screenshot(str(tmp))
    finally:
        plotter.close()
    logger.debug("rendered %d mesh panel(s) %s in %.2f s", k, window_size, time.perf_counter() - t0)
    return Path(path)


def render_mesh(mesh: Any, values: Any, path: str | os.PathLike, **kw: Any) -> Path:
    """Render one per-vertex field on a mesh into a PNG.

    Parameters
    ----------
    mesh : MeshSignal or pyvista.PolyData
        Geometry.
    values : array-like, shape (N,), or None
        Values to draw; ``None`` draws the mesh's own values (first sample, channel 0).
    path : str or PathLike
        PNG to write.
    **kw
        ``name`` (panel title, default the mesh name or ``"values"``) and any keyword of
        :func:`render_mesh_panels`.

    Returns
    -------
    Path
    """
    name = kw.pop("name", None) or getattr(mesh, "name", None) or "values"
    if values is None:
        if not hasattr(mesh, "point_values"):
            raise ShapeError("values=None needs a MeshSignal that carries values")
        values = mesh
    return render_mesh_panels(mesh, {name: values}, path, **kw)


def _lonlat_to_xyz(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)


def sphere_triangulation(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate points on the unit sphere by their convex hull.

    Parameters
    ----------
    lon, lat : array-like, shape (N,)
        Degrees.

    Returns
    -------
    xyz : ndarray, shape (N, 3)
        Unit vectors (duplicates, e.g. several longitudes at a pole, are kept but unused).
    faces : ndarray of int64, shape (F, 3)
        Outward-oriented triangles. For a regional point set the hull's flat "lid" (faces
        with the origin on their outer side, or with a circumradius over 20 times the
        median) is dropped, leaving the spherical cap.
    """
    from scipy.spatial import ConvexHull

    xyz = _lonlat_to_xyz(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    if len(xyz) < 4:
        raise ShapeError(f"a globe needs at least 4 points, got {len(xyz)}")
    hull = ConvexHull(xyz)
    faces = hull.simplices.astype(np.int64)
    normals, offsets = hull.equations[:, :3], hull.equations[:, 3]
    # A face of the sphere surface has the origin on its inner side and a small circumradius
    # sqrt(1 - offset^2); the "lid" of a regional point set fails one of the two.
    radius = np.sqrt(np.clip(1.0 - offsets**2, 0.0, None))
    keep = offsets < -1e-9
    if keep.any():
        keep &= radius <= 20.0 * np.median(radius[keep]) + 1e-12
    faces, normals = faces[keep], normals[keep]
    a, b, c = xyz[faces[:, 0]], xyz[faces[:, 1]], xyz[faces[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), normals) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return xyz, faces


def _globe_camera(xyz: np.ndarray, finite: np.ndarray, aspect: float) -> Camera:
    """Look at the data's mean direction (global data: lon 10, lat 25) with north up."""
    pts = xyz[finite] if finite.any() else xyz
    m = pts.mean(0)
    d = _lonlat_to_xyz(np.array(10.0), np.array(25.0)) if np.linalg.norm(m) < 0.3 else _unit(m)
    up = np.array([0.0, 0.0, 1.0]) - d[2] * d
    up = _unit(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 1.0, 0.0])
    right = np.cross(up, d)
    visible = pts[pts @ d > 0]
    # frame the visible data, never less than a small cap around the view centre
    ring = _lonlat_to_xyz(np.linspace(0, 360, 16, endpoint=False), np.full(16, 90.0 - 5.0))
    ring = ring @ np.stack([right, up, d])  # a 5 degree cap around d, in world coordinates
    return frame_camera(np.concatenate([visible, ring, d[None]]), right, up, aspect, fill=1.0)


def globe(
    signal: Any,
    path: str | os.PathLike,
    *,
    values: Any = None,
    cmap: Any = "RdBu_r",
    clim: tuple[float, float] | None = None,
    camera: Camera | str | None = None,
    title: str | None = None,
    nan_color: Any = "lightgrey",
    mask: Any = None,
    window_size: tuple[int, int] = (600, 600),
    sample: int = 0,
    channel: int = 0,
) -> Path:
    """Render a SphereSignal on a 3-D globe into a PNG.

    The points (HEALPix pixel centres, grid nodes or scattered points) are triangulated
    on the unit sphere by their convex hull and the surface is coloured by the values,
    interpolated between points.

    Parameters
    ----------
    signal : SphereSignal
        Geometry and, unless ``values`` is given, the values (``sample``, ``channel``).
    path : str or PathLike
        PNG to write (atomically).
    values : array-like, shape (N,), optional
        Values to draw instead of the signal's.
    cmap : str or Colormap
    clim : (float, float), optional
        Default: min/max of the finite values.
    camera : (position, focal_point, view_up) or str, optional
        Default: look at the data's mean direction (global data: at lon 10, lat 25)
        with north up.
    title : str, optional
    nan_color : colour
        Colour of NaN values.
    mask : array-like of bool, shape (N,), optional
        True = observed; other points are drawn as NaN.
    window_size : (int, int)
    sample, channel : int
        Batch item and channel of ``signal`` to draw.

    Returns
    -------
    Path
    """
    if not (hasattr(signal, "lon") and hasattr(signal, "lat")):
        raise ShapeError(f"globe needs a SphereSignal, got {type(signal).__name__}")
    n = len(signal.lon)
    vals = as_field(signal if values is None else values, n, name="values", sample=sample, channel=channel)
    if mask is not None:
        m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask).reshape(-1)
        if m.dtype != bool or m.shape != (n,):
            raise ShapeError(f"mask must be boolean of shape ({n},), got {m.dtype} {m.shape}")
        vals[~m] = np.nan
    xyz, faces = sphere_triangulation(signal.lon, signal.lat)
    lo, hi = clim if clim is not None else data_range([vals])
    if camera is None:
        camera = _globe_camera(xyz, np.isfinite(vals), window_size[0] / window_size[1])
    t0 = time.perf_counter()
    pv = _pyvista()
    surf = pv.PolyData.from_regular_faces(xyz, faces)
    surf.point_data["__values"] = vals
    covered = 0.5 * np.linalg.norm(np.cross(xyz[faces[:, 1]] - xyz[faces[:, 0]], xyz[faces[:, 2]] - xyz[faces[:, 0]]), axis=1).sum()
    plotter = pv.Plotter(off_screen=True, window_size=tuple(int(w) for w in window_size))
    try:
        plotter.set_background("white")
        if covered < 0.95 * 4 * np.pi:  # regional data: a grey sphere underneath for context
            plotter.add_mesh(pv.Sphere(radius=0.995, theta_resolution=96, phi_resolution=48), color="whitesmoke",
                             smooth_shading=True)
        font_scale = min(1.4, max(0.7, window_size[1] / 500))
        bar = _bar_args(title or getattr(signal, "name", None) or "values", font_scale)
        bar.update(height=0.12)
        plotter.add_mesh(surf, scalars="__values", cmap=cmap, clim=(float(lo), float(hi)), nan_color=nan_color,
                         smooth_shading=True, show_edges=False, scalar_bar_args=bar)
        if title:
            plotter.add_text(str(title), position="upper_edge", font_size=max(7, int(round(12 * font_scale))), color="black")
        plotter.camera_position = camera
        _labels_below(plotter)
        with atomic_png(path) as tmp:
            plotter.screenshot(str(tmp))
    finally:
        plotter.close()
    logger.debug("rendered globe (%d points, %d faces) in %.2f s", n, len(faces), time.perf_counter() - t0)
    return Path(path)
