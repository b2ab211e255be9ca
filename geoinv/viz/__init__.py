"""Rendering: PNG panels of fields on meshes, spheres and grids.

``import geoinv.viz`` is light: matplotlib, healpy, pyvista and vtk are imported only
inside the functions that need them.

Meshes and globes (PyVista, off-screen through EGL)
    :func:`render_mesh_panels`, :func:`render_mesh`, :func:`globe`
Maps and images (matplotlib, Agg canvas, no pyplot state)
    :func:`mollweide`, :func:`map_panels`, :func:`grid_panels`

Every panel function applies one colour-scale rule: panels named in ``shared``
(default: all whose names do not end with ``std``/``error``) share one range, the
min/max over them ignoring NaN; the other panels get their own range, spread panels
with ``std_cmap``. NaN is drawn in ``nan_color``. PNGs are written atomically
(temporary file in the same directory, then :func:`os.replace`).

Examples
--------
>>> from geoinv import viz
>>> viz.render_mesh_panels(mesh, {"truth": x, "observed": y, "std": s}, "out.png")  # doctest: +SKIP
>>> fig = viz.mollweide(sphere_signal, "map.png", title="t2m")  # doctest: +SKIP
"""

from geoinv.viz._common import colour_scales, is_spread_name
from geoinv.viz._maps import grid_panels, map_panels, mollweide
from geoinv.viz._mesh import (default_camera, frame_camera, globe, painted_camera, render_mesh, render_mesh_panels,
                             sphere_triangulation)

__all__ = [
    "render_mesh_panels",
    "render_mesh",
    "globe",
    "mollweide",
    "map_panels",
    "grid_panels",
    "default_camera",
    "frame_camera",
    "painted_camera",
    "sphere_triangulation",
    "colour_scales",
    "is_spread_name",
]
