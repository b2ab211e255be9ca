"""Shared error types, input validation and generic graph utilities.

Private module: import the public names from :mod:`geoinv.geometry`.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import scipy.sparse as sp

try:  # project-wide error root; keep this module importable on its own
    from geoinv.errors import GeoinvError as _GeoinvError
except ImportError:  # pragma: no cover
    _GeoinvError = Exception

logger = logging.getLogger(__name__)

__all__ = [
    "GeometryError",
    "MeshError",
    "SphereError",
    "GridError",
    "GraphError",
    "graph_laplacian",
]


class GeometryError(_GeoinvError, ValueError):
    """Base class for invalid inputs to :mod:`geoinv.geometry` functions.

    Subclasses :class:`ValueError` (and :class:`geoinv.errors.GeoinvError`).
    """


class MeshError(GeometryError):
    """Invalid triangle-mesh input (vertices, faces, source indices)."""


class SphereError(GeometryError):
    """Invalid spherical input (longitudes/latitudes, HEALPix ``nside``, ...)."""


class GridError(GeometryError):
    """Invalid regular-grid input (grid sizes, spacings, lat-lon coordinates)."""


class GraphError(GeometryError):
    """Invalid graph input (``edge_index``, edge weights, node count)."""


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _as_count(value, name: str, error: type[GeometryError], minimum: int = 0) -> int:
    """Validate a non-negative (or ``>= minimum``) integer scalar."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise error(
            f"{name} must be an integer, got {value!r} of type {type(value).__name__}; "
            f"pass a Python int such as {name}=int(...)"
        )
    value = int(value)
    if value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    return value


def _as_index_array(arr, name: str, error: type[GeometryError]) -> np.ndarray:
    """Convert to an int64 array, rejecting non-integral values (returns a copy)."""
    a = np.asarray(arr)
    if a.dtype == bool:
        raise error(f"{name} must hold integer indices, got a boolean array")
    if a.size == 0:
        return np.array(a, dtype=np.int64, copy=True)
    if np.issubdtype(a.dtype, np.integer):
        return np.array(a, dtype=np.int64, copy=True)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise error(
                f"{name} must hold integer indices, got non-integral floating values "
                f"(dtype {a.dtype}); cast with .astype(np.int64) only if they are indices"
            )
        return a.astype(np.int64)
    raise error(f"{name} must hold integer indices, got dtype {a.dtype}")


def _as_finite_float(arr, name: str, error: type[GeometryError]) -> np.ndarray:
    """Convert to a float64 array and require all entries finite (never a view)."""
    try:
        a = np.array(arr, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be numeric, could not convert to float64: {exc}") from exc
    if not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise error(f"{name} contains {bad} non-finite value(s) (NaN or inf); remove or fill them")
    return a


def _check_edge_index(edge_index, n: int) -> np.ndarray:
    """Validate a ``(2, E)`` integer edge array with entries in ``[0, n)``."""
    ei = _as_index_array(edge_index, "edge_index", GraphError)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise GraphError(
            f"edge_index must have shape (2, E), got {ei.shape}; "
            "if you have an (E, 2) array pass edge_index.T"
        )
    if ei.size:
        lo, hi = int(ei.min()), int(ei.max())
        if lo < 0:
            raise GraphError(f"edge_index contains negative node index {lo}")
        if hi >= n:
            raise GraphError(f"edge_index node index {hi} out of range for {n} nodes")
    return ei


def _unique_undirected(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Symmetrize, drop self loops, deduplicate and sort a set of edges.

    Parameters
    ----------
    src, dst : numpy.ndarray, shape (M,)
        Edge endpoints (int64, in ``[0, n)``).
    n : int
        Number of nodes.

    Returns
    -------
    numpy.ndarray, shape (2, E), int64
        Both directions of every edge, unique, sorted lexicographically by
        ``(source, target)``, no self loops.
    """
    src = np.asarray(src, dtype=np.int64).ravel()
    dst = np.asarray(dst, dtype=np.int64).ravel()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    a = np.concatenate([src, dst])
    b = np.concatenate([dst, src])
    if a.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    key = np.unique(a * np.int64(n) + b)
    return np.stack([key // n, key % n]).astype(np.int64)


# ---------------------------------------------------------------------------
# graph Laplacian
# ---------------------------------------------------------------------------


def graph_laplacian(edge_index, n, weights=None) -> sp.csr_matrix:
    """Combinatorial graph Laplacian ``L = D - W`` of an undirected graph.

    Parameters
    ----------
    edge_index : array_like of int, shape (2, E)
        Directed edges ``edge_index[0, e] -> edge_index[1, e]``. The graph must
        be undirected, i.e. every edge ``(i, j)`` must also appear as ``(j, i)``
        with the same weight (as returned by :func:`edge_graph`,
        :func:`healpix_neighbour_graph`, :func:`sphere_knn_graph`, ...).
        Duplicate edges are summed; self loops are ignored (they cancel in
        ``D - W``).
    n : int
        Number of nodes ``N``.
    weights : array_like of float, shape (E,), optional
        Weight of each directed edge. Default: all ones.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (N, N), float64
        ``L[i, j] = -w_ij`` for ``i != j`` and ``L[i, i] = sum_j w_ij``.
        Rows sum to zero; ``L`` is symmetric, and positive semi-definite when
        all weights are non-negative.

    Raises
    ------
    GraphError
        If shapes are wrong, indices are out of range, weights are not finite,
        or the weighted adjacency is not symmetric.
    """
    n = _as_count(n, "n", GraphError)
    ei = _check_edge_index(edge_index, n)
    n_edges = ei.shape[1]
    if weights is None:
        w = np.ones(n_edges, dtype=np.float64)
    else:
        w = _as_finite_float(weights, "weights", GraphError)
        if w.shape != (n_edges,):
            raise GraphError(
                f"weights must have shape (E,) = ({n_edges},) matching edge_index, got {w.shape}"
            )
    keep = ei[0] != ei[1]
    src, dst, w = ei[0][keep], ei[1][keep], w[keep]
    W = sp.coo_matrix((w, (src, dst)), shape=(n, n)).tocsr()
    W.sum_duplicates()
    asym = abs(W - W.T)
    if asym.nnz and asym.max() > 1e-12 * max(1.0, float(abs(W).max())):
        raise GraphError(
            "edge_index/weights describe a directed graph: some edge (i, j) has no matching "
            "(j, i) with the same weight; pass both directions (e.g. np.hstack([ei, ei[::-1]]) "
            "with weights repeated)"
        )
    deg = np.asarray(W.sum(axis=1)).ravel()
    L = (sp.diags(deg, format="csr") - W).tocsr()
    L.sum_duplicates()
    L.sort_indices()
    logger.debug("graph_laplacian: %d nodes, %d directed edges", n, int(src.size))
    return L
