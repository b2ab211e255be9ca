"""Regular 2-D grid graphs and 5-point Laplacians.

Private module: import the public names from :mod:`geoinv.geometry`.
Grids of shape ``(h, w)`` are flattened row-major: node ``i * w + j`` is row
``i`` (axis 0, ``0 <= i < h``) and column ``j`` (axis 1, ``0 <= j < w``).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from ._graph import GridError, _as_count, _as_finite_float, _unique_undirected

logger = logging.getLogger(__name__)

__all__ = ["grid_edge_graph", "grid_laplacian"]


def _stencil_edges(h: int, w: int, periodic: bool):
    """Horizontal and vertical nearest-neighbour pairs (may contain duplicates/self pairs)."""
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    if periodic:
        hs, hd = idx, np.roll(idx, -1, axis=1)
        vs, vd = idx, np.roll(idx, -1, axis=0)
    else:
        hs, hd = idx[:, :-1], idx[:, 1:]
        vs, vd = idx[:-1, :], idx[1:, :]
    return (hs.ravel(), hd.ravel()), (vs.ravel(), vd.ravel())


def _check_hw(h, w) -> tuple[int, int]:
    return (_as_count(h, "h", GridError, minimum=1), _as_count(w, "w", GridError, minimum=1))


def grid_edge_graph(h, w, periodic=False) -> np.ndarray:
    """4-neighbour graph of an ``h x w`` grid.

    Parameters
    ----------
    h, w : int
        Number of rows and columns (``>= 1``).
    periodic : bool, optional
        If True, wrap around both axes (torus).

    Returns
    -------
    numpy.ndarray, shape (2, E), int64
        Edges in both directions, unique, sorted, no self loops (on a periodic
        axis of length 1 or 2 the wrap edge coincides with a self loop or an
        existing edge and is dropped). Row-major node numbering
        ``i * w + j``.
    """
    h, w = _check_hw(h, w)
    (hs, hd), (vs, vd) = _stencil_edges(h, w, bool(periodic))
    return _unique_undirected(np.concatenate([hs, vs]), np.concatenate([hd, vd]), h * w)


def grid_laplacian(h, w, spacing=(1.0, 1.0), periodic=False) -> sp.csr_matrix:
    """5-point finite-difference Laplacian in PSD stiffness form.

    ``L = (D - W) * dx * dy`` with weight ``1/dy^2`` between vertical
    neighbours and ``1/dx^2`` between horizontal neighbours, so
    ``u^T L u`` approximates ``integral |grad u|^2`` and ``L`` pairs with the
    lumped mass ``dx * dy`` per node (``M^{-1} L`` approximates ``-Delta``).
    Non-periodic boundaries have natural (Neumann) behaviour: missing
    neighbours are simply absent.

    Parameters
    ----------
    h, w : int
        Number of rows (axis 0) and columns (axis 1).
    spacing : tuple of float, optional
        ``(dy, dx)``: spacing along axis 0 (rows, index ``i``) and along
        axis 1 (columns, index ``j``), in numpy axis order. Must be positive.
    periodic : bool, optional
        If True, wrap both axes. For an axis of length 2 both stencil arms
        point to the same node, which then gets twice the weight (exactly the
        periodic second difference); an axis of length 1 contributes nothing.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (h * w, h * w), float64
        Symmetric positive semi-definite, rows sum to zero, row-major
        numbering ``i * w + j``.
    """
    h, w = _check_hw(h, w)
    sp_arr = _as_finite_float(spacing, "spacing", GridError)
    if sp_arr.shape != (2,) or np.any(sp_arr <= 0):
        raise GridError(f"spacing must be a pair of positive numbers (dy, dx), got {spacing!r}")
    dy, dx = float(sp_arr[0]), float(sp_arr[1])
    cell = dx * dy
    (hs, hd), (vs, vd) = _stencil_edges(h, w, bool(periodic))
    src = np.concatenate([hs, vs])
    dst = np.concatenate([hd, vd])
    wt = np.concatenate([np.full(hs.size, cell / dx**2), np.full(vs.size, cell / dy**2)])
    keep = src != dst
    src, dst, wt = src[keep], dst[keep], wt[keep]
    n = h * w
    W = sp.coo_matrix(
        (np.concatenate([wt, wt]), (np.concatenate([src, dst]), np.concatenate([dst, src]))),
        shape=(n, n),
    ).tocsr()
    W.sum_duplicates()
    deg = np.asarray(W.sum(axis=1)).ravel()
    L = (sp.diags(deg, format="csr") - W).tocsr()
    L.sum_duplicates()
    L.sort_indices()
    return L
