"""Shared helpers of the plotting functions: value coercion, colour scales, atomic PNG writes.

Nothing here imports matplotlib, pyvista or vtk at module level.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoinv.errors import ShapeError

__all__ = [
    "ColourScale",
    "as_field",
    "atomic_png",
    "colour_scales",
    "data_range",
    "is_spread_name",
    "panel_titles",
]

logger = logging.getLogger("geoinv.viz")

#: Name endings of panels that hold a spread (std, error) rather than a field value.
SPREAD_SUFFIXES = ("std", "stddev", "error", "err")


def is_spread_name(name: str) -> bool:
    """True when a panel called ``name`` shows a spread or error (``"std"``, ``"abs_error"``, ...).

    Parameters
    ----------
    name : str
        Panel name.

    Returns
    -------
    bool
    """
    return str(name).strip().lower().endswith(SPREAD_SUFFIXES)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_field(x: Any, n: int | None = None, *, name: str = "values", sample: int = 0, channel: int = 0,
             ndim: int = 1) -> np.ndarray:
    """One scalar field as a float64 numpy array.

    Parameters
    ----------
    x : Tensor, ndarray, array-like or signal container
        For a container (anything with ``point_values()``) the values of batch item
        ``sample`` and channel ``channel`` are taken. Leading and trailing axes of
        length 1 are dropped, so ``(N,)``, ``(N, 1)``, ``(1, N)`` and ``(1, N, 1)`` all work.
    n : int, optional
        Expected number of points (checked for ``ndim == 1``).
    name : str
        Used in error messages.
    sample, channel : int
        Batch item and channel to take from a container.
    ndim : int
        1 for point fields, 2 for images ``(H, W)``.

    Returns
    -------
    ndarray of float64, shape (N,) or (H, W)
        A copy; NaN stays NaN, infinities become NaN.
    """
    if hasattr(x, "point_values"):
        if ndim == 2 and getattr(x, "kind", None) == "grid":
            v = x.values if not x.is_batched else x.values[sample]
            a = _to_numpy(v)[channel]
        else:
            pv = x.point_values()
            if sample >= pv.shape[0] or channel >= pv.shape[-1]:
                raise ShapeError(
                    f"{name}: asked for sample {sample}, channel {channel} of values with shape {tuple(pv.shape)}"
                )
            a = _to_numpy(pv[sample, :, channel])
    else:
        a = _to_numpy(x)
    shape0 = a.shape
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    while a.ndim > ndim and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != ndim:
        want = "(N,)" if ndim == 1 else "(H, W)"
        raise ShapeError(
            f"{name} has shape {shape0}; expected one scalar field {want} "
            "(select a batch item / channel first, e.g. x[0, :, 0])"
        )
    if ndim == 1 and n is not None and a.shape[0] != n:
        raise ShapeError(f"{name} has {a.shape[0]} values but the domain has {n} points")
    a = np.array(a, dtype=np.float64, copy=True)
    a[~np.isfinite(a)] = np.nan
    return a


def data_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(min, max)`` over the finite entries of ``arrays``, widened when degenerate.

    Parameters
    ----------
    arrays : sequence of ndarray

    Returns
    -------
    (float, float)
        ``(0, 1)`` when nothing is finite; ``(v - d, v + d)`` with a tiny ``d`` when all
        finite values equal ``v`` (a constant field then shows the middle colour).
    """
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [f for f in finite if f.size]
    if not finite:
        return 0.0, 1.0
    lo = float(min(f.min() for f in finite))
    hi = float(max(f.max() for f in finite))
    if hi <= lo:
        d = max(abs(lo), 1.0) * 1e-6
        return lo - d, hi + d
    return lo, hi


@dataclass
class ColourScale:
    """One colour scale shared by one or more panels.

    Attributes
    ----------
    names : list of str
        Panels drawn with this scale, in panel order.
    clim : (float, float)
        Colour range.
    cmap : str or Colormap
        Colormap.
    title : str
        Scalar bar / colour bar title (unique among the scales of one figure).
    shared : bool
        True for the shared group.
    """

    names: list[str]
    clim: tuple[float, float]
    cmap: Any
    title: str
    shared: bool = False

    @property
    def bar_panel(self) -> str:
        """Panel whose viewport carries this scale's bar (the middle one of the group)."""
        return self.names[(len(self.names) - 1) // 2]


def colour_scales(
    fields: Mapping[str, np.ndarray],
    shared: Sequence[str] | Sequence[Sequence[str]] | Mapping[str, Sequence[str]] | None,
    cmap: Any,
    std_cmap: Any,
    clim: tuple[float, float] | None = None,
) -> list[ColourScale]:
    """Group panels into colour scales.

    Parameters
    ----------
    fields : mapping of str to ndarray
        Panel name to values, in panel order.
    shared : sequence of str, sequence of sequences of str, or mapping of str to sequence of str, optional
        Panels that share one colour range, or several such groups (e.g. the estimates and, separately, their
        error maps, so that errors compare across methods); a mapping names each group's colour bar (otherwise
        the bar lists the group's panels). Default: one group of every panel whose name is not a spread name
        (see :func:`is_spread_name`).
    cmap, std_cmap : str or Colormap
        Colormap of value groups and panels; colormap of spread panels and of groups made only of spread panels.
    clim : (float, float), optional
        Fixed range of the first shared group instead of its min/max.

    Returns
    -------
    list of ColourScale
        The shared groups first (non-empty ones, in the order given), then one scale per remaining panel.

    Raises
    ------
    ShapeError
        A shared name that is not a panel, a panel in two groups, or ``clim`` not increasing.
    """
    names = list(fields)
    if shared is None:
        titled = [(None, [k for k in names if not is_spread_name(k)])]
    elif isinstance(shared, Mapping):                                           # {bar title: names}
        titled = [(t, [g] if isinstance(g, str) else list(g)) for t, g in shared.items()]
    elif isinstance(shared, str) or all(isinstance(g, str) for g in shared):   # names: one group
        titled = [(None, [shared] if isinstance(shared, str) else list(shared))]
    else:                                                                       # groups (a bare name: its own)
        titled = [(None, [g] if isinstance(g, str) else list(g)) for g in shared]
    flat = [k for _, g in titled for k in g]
    unknown = [k for k in flat if k not in fields]
    if unknown:
        raise ShapeError(f"shared names {unknown} are not panels (panels: {names})")
    twice = sorted({k for k in flat if flat.count(k) > 1})
    if twice:
        raise ShapeError(f"panels {twice} are in more than one shared group")
    groups = [(t, [k for k in names if k in g]) for t, g in titled]
    groups = [(t, g) for t, g in groups if g]
    scales: list[ColourScale] = []
    used: set[str] = set()

    def title_of(text: str) -> str:
        if len(text) > 36:
            text = text[:33] + "..."
        while text in used:
            text += " "
        used.add(text)
        return text

    for i, (title, group) in enumerate(groups):
        rng = tuple(float(c) for c in clim) if (clim is not None and i == 0) else data_range([fields[k] for k in group])
        if not rng[1] > rng[0]:
            raise ShapeError(f"clim must be (low, high) with low < high, got {clim}")
        cm = std_cmap if all(is_spread_name(k) for k in group) else cmap
        scales.append(ColourScale(group, rng, cm, title_of(title or ", ".join(group)), shared=True))
    grouped = {k for _, g in groups for k in g}
    for k in names:
        if k not in grouped:
            scales.append(ColourScale([k], data_range([fields[k]]), std_cmap if is_spread_name(k) else cmap,
                                      title_of(k)))
    return scales


def panel_titles(names: Sequence[str], titles: Any) -> list[str | None]:
    """Titles to draw: ``True`` -> the panel names, ``False``/``None`` -> none, a mapping or sequence -> as given."""
    if titles is True:
        return list(names)
    if not titles:
        return [None] * len(names)
    if isinstance(titles, Mapping):
        return [titles.get(k, k) for k in names]
    titles = list(titles)
    if len(titles) != len(names):
        raise ShapeError(f"{len(titles)} titles given for {len(names)} panels")
    return titles


def atomic_png(path: str | os.PathLike):
    """:func:`geoinv.io.atomic_path` with a ``.png`` temporary name (renderers pick the format from it)."""
    from geoinv.io import atomic_path

    return atomic_path(path, suffix=".png")
