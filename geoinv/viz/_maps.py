"""Matplotlib maps of sphere signals (Mollweide / plate carree) and image panels of grid signals.

Figures are built with :class:`matplotlib.figure.Figure` and an Agg canvas (never
``pyplot``), so nothing here changes the caller's backend or keeps global figure state.
Matplotlib and healpy are imported inside the functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geoinv.errors import ShapeError
from geoinv.viz._common import ColourScale, as_field, atomic_png, colour_scales, data_range, panel_titles

__all__ = ["grid_panels", "map_panels", "mollweide", "sphere_layout"]

logger = logging.getLogger("geoinv.viz")

PROJECTIONS = ("auto", "mollweide", "platecarree")


# -- figure plumbing ------------------------------------------------------------------------
def _figure(figsize: tuple[float, float], dpi: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike | None) -> None:
    if path is None:
        return
    with atomic_png(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, facecolor="white")


def _cmap(cmap: Any, nan_color: Any):
    import matplotlib

    cm = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return cm.with_extremes(bad=nan_color)


def _norm(clim: tuple[float, float]):
    from matplotlib.colors import Normalize

    return Normalize(vmin=float(clim[0]), vmax=float(clim[1]))


def _colourbar(fig, scale: ColourScale, axes: list, nan_color: Any) -> None:
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=_norm(scale.clim), cmap=_cmap(scale.cmap, nan_color))
    cb = fig.colorbar(sm, ax=axes, location="bottom", shrink=0.8 if len(axes) > 1 else 0.9, aspect=25 * len(axes) ** 0.5,
                      pad=0.02)
    cb.set_label(scale.title, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    cb.ax.xaxis.get_major_locator().set_params(nbins=4)


# -- sphere geometry ------------------------------------------------------------------------
def sphere_layout(signal: Any) -> str:
    """``"healpix"``, ``"grid"`` (regular lat/lon) or ``"points"`` for a SphereSignal."""
    if not (hasattr(signal, "lon") and hasattr(signal, "lat")):
        raise ShapeError(f"expected a SphereSignal, got {type(signal).__name__}")
    if getattr(signal, "nside", None):
        return "healpix"
    if getattr(signal, "grid_shape", None):
        return "grid"
    return "points"


def _wrap(lon: np.ndarray) -> np.ndarray:
    return (np.asarray(lon, np.float64) + 180.0) % 360.0 - 180.0


def _lon_span(lon: np.ndarray) -> float:
    """Smallest longitude interval (degrees) that holds every point: 360 minus the largest gap."""
    u = np.unique(np.asarray(lon, np.float64) % 360.0)
    if len(u) < 2:
        return 0.0
    gaps = np.diff(np.concatenate([u, [u[0] + 360.0]]))
    return float(360.0 - gaps.max())


def _is_global(signal: Any) -> bool:
    if sphere_layout(signal) == "healpix":
        return True
    lat = np.asarray(signal.lat)
    if sphere_layout(signal) == "grid":
        lon = signal.grid_lon
        step = np.median(np.abs(np.diff(np.sort(lon % 360.0)))) if len(lon) > 1 else 0.0
        return _lon_span(lon) + step >= 350.0 and np.ptp(lat) >= 120.0
    return _lon_span(signal.lon) >= 300.0 and np.ptp(lat) >= 120.0


def _edges(c: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres ``c`` (midpoints, half a step beyond the ends)."""
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _grid_raster(signal: Any, vals: np.ndarray, periodic_ok: bool):
    """Sorted lon/lat cell edges (degrees, lon wrapped to [-180, 180]) and the (nlat, nlon) image."""
    lat = np.asarray(signal.grid_lat, np.float64)
    lon = _wrap(signal.grid_lon)
    img = vals.reshape(signal.grid_shape)
    lon, keep = np.unique(lon, return_index=True)  # sorts; drops a duplicated 0/360 column
    img = img[:, keep]
    order = np.argsort(lat, kind="stable")
    lat, img = lat[order], img[order]
    if periodic_ok and len(lon) > 2:
        step = np.median(np.diff(lon))
        if abs(step * len(lon) - 360.0) < 0.5 * step:  # global in longitude: pad so the seam is covered
            lon = np.concatenate([[lon[-1] - 360.0], lon, [lon[0] + 360.0]])
            img = np.concatenate([img[:, -1:], img, img[:, :1]], axis=1)
    lon_e = _edges(lon)
    lat_e = np.clip(_edges(lat), -90.0, 90.0)
    if periodic_ok:
        lon_e = np.clip(lon_e, -180.0, 180.0)
    return lon_e, lat_e, img


def _healpix_raster(nside: int, vals: np.ndarray):
    """Nearest-pixel lat/lon raster of a NESTED HEALPix map."""
    import healpy as hp

    nlat = int(min(1024, max(180, 4 * nside)))
    lat_e = np.linspace(-90.0, 90.0, nlat + 1)
    lon_e = np.linspace(-180.0, 180.0, 2 * nlat + 1)
    la, lo = np.meshgrid(0.5 * (lat_e[1:] + lat_e[:-1]), 0.5 * (lon_e[1:] + lon_e[:-1]), indexing="ij")
    pix = hp.ang2pix(nside, np.radians(90.0 - la), np.radians(lo % 360.0), nest=True)
    return lon_e, lat_e, vals[pix]


def _draw_sphere(ax, signal: Any, vals: np.ndarray, projection: str, cmap, norm):
    """Draw one field of ``signal`` on ``ax``; return the artist."""
    conv = np.radians if projection == "mollweide" else (lambda a: a)
    layout = sphere_layout(signal)
    if layout == "points":
        lon = _wrap(signal.lon) if projection == "mollweide" or _lon_span(signal.lon) > 300 else _unwrapped(signal.lon)
        size = float(np.clip(6000.0 / max(len(vals), 1), 1.0, 30.0))
        return ax.scatter(conv(lon), conv(np.asarray(signal.lat)), c=vals, s=size, cmap=cmap, norm=norm,
                          linewidths=0, plotnonfinite=True, rasterized=True)
    if layout == "healpix":
        lon_e, lat_e, img = _healpix_raster(int(signal.nside), vals)
    else:
        lon_e, lat_e, img = _grid_raster(signal, vals, periodic_ok=projection == "mollweide" or _is_global(signal))
    return ax.pcolormesh(conv(lon_e), conv(lat_e), np.ma.masked_invalid(img), cmap=cmap, norm=norm,
                         shading="flat", rasterized=True)


def _unwrapped(lon: Any) -> np.ndarray:
    """Longitudes made contiguous for a regional plot (e.g. 350..10 -> -10..10)."""
    lon = np.asarray(lon, np.float64) % 360.0
    u = np.unique(lon)
    if len(u) < 2:
        return _wrap(lon)
    gaps = np.diff(np.concatenate([u, [u[0] + 360.0]]))
    start = u[(np.argmax(gaps) + 1) % len(u)]  # first longitude after the largest gap
    out = (lon - start) % 360.0 + start
    return out - 360.0 if out.min() >= 180.0 else out


def _style_axes(ax, projection: str, signal: Any, title: str | None) -> None:
    if projection == "mollweide":
        ax.grid(True, linewidth=0.4, alpha=0.5, color="0.4")
        ax.set_xticklabels([])
        ax.tick_params(labelsize=6)
    else:
        layout = sphere_layout(signal)
        if layout == "healpix":
            ax.set_xlim(-180, 180)
            ax.set_ylim(-90, 90)
        mid = np.radians(np.clip(np.mean(ax.get_ylim()), -80, 80))
        ax.set_aspect(1.0 / np.cos(mid))
        ax.set_xlabel("lon (deg)", fontsize=7)
        ax.set_ylabel("lat (deg)", fontsize=7)
        ax.tick_params(labelsize=6)
    if title:
        ax.set_title(str(title), fontsize=9)


def _resolve_projection(projection: str, signal: Any) -> str:
    p = str(projection).lower().replace("_", "").replace(" ", "").replace("-", "")
    p = {"platecarree": "platecarree", "latlon": "platecarree", "plate": "platecarree", "pc": "platecarree",
         "mollweide": "mollweide", "moll": "mollweide", "auto": "auto"}.get(p)
    if p is None:
        raise ShapeError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if p == "auto":
        p = "mollweide" if _is_global(signal) else "platecarree"
    return p


def _masked(vals: np.ndarray, mask: Any, n: int) -> np.ndarray:
    if mask is None:
        return vals
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    while m.ndim > 1 and m.shape[0] == 1:
        m = m[0]
    m = m.reshape(-1) if m.size == n else m
    if m.dtype != bool or m.shape != (n,):
        raise ShapeError(f"mask must be boolean (True = observed) of shape ({n},), got {m.dtype} {m.shape}")
    out = vals.copy()
    out[~m] = np.nan
    return out


# -- public ---------------------------------------------------------------------------------
def mollweide(
    signal: Any,
    path: str | os.PathLike | None = None,
    *,
    ax: Any = None,
    title: str | None = None,
    cmap: Any = "RdBu_r",
    clim: tuple[float, float] | None = None,
    mask: Any = None,
    values: Any = None,
    nan_color: Any = "lightgrey",
    colorbar: bool = True,
    sample: int = 0,
    channel: int = 0,
    dpi: float = 110,
):
    """Draw a SphereSignal on a Mollweide map (matplotlib's built-in projection).

    HEALPix maps are sampled by nearest pixel onto a lat/lon raster (at least 180 x 360,
    finer for ``nside > 45``) and drawn with ``pcolormesh``; regular lat/lon grids are
    drawn cell by cell (longitudes wrapped to [-180, 180) and sorted); scattered points
    with ``scatter``. Longitude grows to the right (geographic convention), north is up.

    Parameters
    ----------
    signal : SphereSignal
    path : str or PathLike, optional
        PNG to write (atomically).
    ax : matplotlib Axes, optional
        An axes created with ``projection="mollweide"`` to draw into; default a new figure.
    title : str, optional
        Default: the signal's name.
    cmap : str or Colormap
    clim : (float, float), optional
        Default: min/max of the finite values.
    mask : array-like of bool, shape (N,), optional
        True = observed; other points are shown as NaN.
    values : array-like, shape (N,), optional
        Values to draw instead of the signal's.
    nan_color : colour
        Colour of NaN / masked points.
    colorbar : bool
        Add a horizontal colour bar under the map.
    sample, channel : int
        Batch item and channel of ``signal`` to draw.
    dpi : float
        Resolution of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    sphere_layout(signal)
    n = len(signal.lon)
    vals = _masked(as_field(signal if values is None else values, n, name="values", sample=sample, channel=channel),
                   mask, n)
    if ax is None:
        fig = _figure((6.4, 3.7 if colorbar else 3.3), dpi)
        ax = fig.add_subplot(projection="mollweide")
    else:
        if getattr(ax, "name", None) != "mollweide":
            raise ShapeError(f"ax must be a mollweide axes (projection='mollweide'), got {getattr(ax, 'name', ax)!r}")
        fig = ax.figure
    lo, hi = (float(c) for c in clim) if clim is not None else data_range([vals])
    scale = ColourScale(["values"], (lo, hi), cmap, "")
    _draw_sphere(ax, signal, vals, "mollweide", _cmap(cmap, nan_color), _norm(scale.clim))
    _style_axes(ax, "mollweide", signal, title if title is not None else getattr(signal, "name", None))
    if colorbar:
        _colourbar(fig, scale, [ax], nan_color)
    _save(fig, path)
    return fig


def map_panels(
    panels: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    like: Any = None,
    projection: str = "auto",
    shared: Sequence[str] | None = None,
    cmap: Any = "RdBu_r",
    std_cmap: Any = "magma",
    clim: tuple[float, float] | None = None,
    nan_color: Any = "lightgrey",
    titles: Any = True,
    panel_width: float = 3.6,
    dpi: float = 110,
):
    """Maps of several fields on the sphere side by side (e.g. truth | gaps | mean | std).

    Parameters
    ----------
    panels : mapping of str to SphereSignal or array-like
        Panel name to a SphereSignal (its first sample and channel) or to values of
        shape ``(N,)`` on the points of ``like``; NaN is shown in ``nan_color``.
    path : str or PathLike, optional
        PNG to write (atomically).
    like : SphereSignal, optional
        Geometry of array panels; default the first SphereSignal among the panels.
    projection : {"auto", "mollweide", "platecarree"}
        ``"mollweide"`` for global data, ``"platecarree"`` for plain lon/lat axes
        (regional data such as a UK grid); ``"auto"`` picks Mollweide for HEALPix and
        for data spanning at least 300 degrees of longitude and 120 of latitude.
    shared : sequence of str, sequences of str, or mapping of str to sequence of str, optional
        Panels sharing one colour range, or several such groups (a mapping names their colour
        bars); default every panel whose name does not end with ``std``/``error``. Other panels
        get their own range (spread panels ``std_cmap``).
    cmap, std_cmap : str or Colormap
    clim : (float, float), optional
        Fixed range of the (first) shared group.
    nan_color : colour
    titles : bool, mapping or sequence
        ``True`` titles the panels with their names.
    panel_width : float
        Width of one panel in inches.
    dpi : float

    Returns
    -------
    matplotlib.figure.Figure
        One map axes per panel plus one colour-bar axes per colour scale.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ShapeError("panels must be a non-empty mapping {name: SphereSignal or values}")
    if like is None:
        like = next((v for v in panels.values() if hasattr(v, "lon") and hasattr(v, "lat")), None)
        if like is None:
            raise ShapeError("no SphereSignal among the panels: pass like=<SphereSignal> for the geometry")
    sphere_layout(like)
    geoms, fields = {}, {}
    for k, v in panels.items():
        g = v if (hasattr(v, "lon") and hasattr(v, "lat")) else like
        geoms[str(k)] = g
        fields[str(k)] = as_field(v, len(g.lon), name=f"panel {k!r}")
    proj = _resolve_projection(projection, like)
    names = list(fields)
    scales = colour_scales(fields, shared, cmap, std_cmap, clim)
    k = len(names)
    if proj == "mollweide":
        h = panel_width / 2.0 + 1.0
    else:
        lat = np.asarray(like.lat)
        lon = _unwrapped(like.lon) if sphere_layout(like) != "healpix" else np.array([-180.0, 180.0])
        lat_span = max(np.ptp(lat), 1e-3) if sphere_layout(like) != "healpix" else 180.0
        ratio = max(np.ptp(lon), 1e-3) * np.cos(np.radians(np.clip(np.mean(lat), -80, 80))) / lat_span
        map_h = float(np.clip(panel_width / ratio, 1.2, 1.3 * panel_width))
        h = map_h + 1.1
        panel_width = min(panel_width, map_h * ratio + 0.7)
    fig = _figure((panel_width * k, h), dpi)
    axes = [fig.add_subplot(1, k, i + 1, projection="mollweide" if proj == "mollweide" else None) for i in range(k)]
    tl = panel_titles(names, titles)
    scale_of = {n: s for s in scales for n in s.names}
    for i, name in enumerate(names):
        s = scale_of[name]
        _draw_sphere(axes[i], geoms[name], fields[name], proj, _cmap(s.cmap, nan_color), _norm(s.clim))
        _style_axes(axes[i], proj, geoms[name], tl[i])
        if i and proj == "platecarree":
            axes[i].set_ylabel("")
    for s in scales:
        _colourbar(fig, s, [axes[names.index(n)] for n in s.names], nan_color)
    _save(fig, path)
    return fig


def grid_panels(
    panels: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    shared: Sequence[str] | None = None,
    cmap: Any = "RdBu_r",
    std_cmap: Any = "magma",
    clim: tuple[float, float] | None = None,
    nan_color: Any = "lightgrey",
    titles: Any = True,
    origin: str = "upper",
    panel_width: float = 3.0,
    dpi: float = 110,
):
    """Images of 2-D grid fields side by side, with the shared-colour-scale rule.

    Parameters
    ----------
    panels : mapping of str to array-like or GridSignal
        Panel name to an ``(H, W)`` array/tensor (leading/trailing axes of length 1 are
        dropped) or a GridSignal (first sample, channel 0). NaN is shown in ``nan_color``.
    path : str or PathLike, optional
        PNG to write (atomically).
    shared : sequence of str, sequences of str, or mapping of str to sequence of str, optional
        Panels sharing one colour range, or several such groups (e.g. estimates, and their error
        maps apart; a mapping names their colour bars); default every panel whose name does not
        end with ``std``/``error``.
    cmap, std_cmap : str or Colormap
    clim : (float, float), optional
        Fixed range of the (first) shared group.
    nan_color : colour
    titles : bool, mapping or sequence
    origin : {"upper", "lower"}
        Row 0 at the top (image/torch convention, default) or at the bottom.
    panel_width : float
        Width of one panel in inches.
    dpi : float

    Returns
    -------
    matplotlib.figure.Figure
        One image axes per panel plus one colour-bar axes per colour scale.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ShapeError("panels must be a non-empty mapping {name: (H, W) values}")
    fields = {str(k): as_field(v, name=f"panel {k!r}", ndim=2) for k, v in panels.items()}
    names = list(fields)
    scales = colour_scales(fields, shared, cmap, std_cmap, clim)
    k = len(names)
    hh, ww = fields[names[0]].shape
    h = float(np.clip(panel_width * hh / ww, 0.8, 3 * panel_width)) + 1.0
    fig = _figure((panel_width * k, h), dpi)
    axes = [fig.add_subplot(1, k, i + 1) for i in range(k)]
    tl = panel_titles(names, titles)
    scale_of = {n: s for s in scales for n in s.names}
    for i, name in enumerate(names):
        s = scale_of[name]
        axes[i].imshow(np.ma.masked_invalid(fields[name]), cmap=_cmap(s.cmap, nan_color), norm=_norm(s.clim),
                       origin=origin, interpolation="nearest")
        axes[i].set_xticks([])
        axes[i].set_yticks([])
        if tl[i]:
            axes[i].set_title(str(tl[i]), fontsize=9)
    for s in scales:
        _colourbar(fig, s, [axes[names.index(n)] for n in s.names], nan_color)
    _save(fig, path)
    return fig
