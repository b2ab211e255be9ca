"""Triangle-mesh geometry: edge graph, cotangent Laplacian, lumped mass, geodesics.

Private module: import the public names from :mod:`geoinv.geometry`.
All functions are pure: they never modify their input arrays.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ._graph import (
    MeshError,
    _as_count,
    _as_finite_float,
    _as_index_array,
    _unique_undirected,
)

logger = logging.getLogger(__name__)

__all__ = [
    "edge_graph",
    "triangle_areas",
    "cotangent_laplacian",
    "lumped_mass",
    "geodesic_distances",
    "GeodesicSolver",
    "COT_CLAMP",
    "DEGENERATE_REL_EPS",
    "MASS_FLOOR_REL",
]

#: Cotangent weights are clipped to ``[-COT_CLAMP, COT_CLAMP]``.
COT_CLAMP = 1e5
#: A triangle is treated as degenerate (zero area, contributes nothing) when
#: ``|e1 x e2| <= DEGENERATE_REL_EPS * (|e1|^2 + |e2|^2 + |e3|^2)``.
DEGENERATE_REL_EPS = 1e-12
#: Vertices with zero lumped mass get ``MASS_FLOOR_REL * mean(nonzero masses)``.
MASS_FLOOR_REL = 1e-12

_TINY = np.finfo(np.float64).tiny


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _check_vertices(vertices) -> np.ndarray:
    """Return a float64 ``(N, 3)`` copy; ``(N, 2)`` input is padded with ``z = 0``."""
    v = _as_finite_float(vertices, "vertices", MeshError)
    if v.ndim != 2 or v.shape[1] not in (2, 3):
        raise MeshError(
            f"vertices must have shape (N, 3) (or (N, 2) for planar meshes), got {v.shape}"
        )
    if v.shape[1] == 2:
        v = np.concatenate([v, np.zeros((v.shape[0], 1))], axis=1)
    return v


def _check_faces(faces, n_vertices: int) -> np.ndarray:
    """Return an int64 ``(F, 3)`` copy with all indices in ``[0, n_vertices)``."""
    f = _as_index_array(faces, "faces", MeshError)
    if f.ndim != 2 or f.shape[1] != 3:
        if f.size == 0:
            return np.zeros((0, 3), dtype=np.int64)
        raise MeshError(f"faces must have shape (F, 3) (triangles), got {f.shape}")
    if f.size:
        lo, hi = int(f.min()), int(f.max())
        if lo < 0:
            raise MeshError(
                f"faces contain negative index {lo}; indices must be 0-based vertex rows"
            )
        if hi >= n_vertices:
            raise MeshError(
                f"faces index {hi} out of range for {n_vertices} vertices "
                "(faces must be 0-based indices into vertices)"
            )
    return f


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = _check_vertices(vertices)
    f = _check_faces(faces, v.shape[0])
    return v, f


# ---------------------------------------------------------------------------
# combinatorics
# ---------------------------------------------------------------------------


def edge_graph(faces, n_vertices) -> np.ndarray:
    """Undirected edge graph of a triangle mesh.

    Parameters
    ----------
    faces : array_like of int, shape (F, 3)
        Triangle vertex indices (0-based).
    n_vertices : int
        Number of vertices ``N`` (unreferenced vertices become isolated nodes).

    Returns
    -------
    numpy.ndarray, shape (2, E), int64
        Every mesh edge in both directions, unique, sorted lexicographically by
        ``(source, target)``, without self loops (faces with a repeated vertex
        only contribute their proper edges).

    Raises
    ------
    MeshError
        If ``faces`` is not ``(F, 3)`` integer or indexes outside ``[0, N)``.
    """
    n = _as_count(n_vertices, "n_vertices", MeshError)
    f = _check_faces(faces, n)
    src = f[:, [0, 1, 2]].ravel()
    dst = f[:, [1, 2, 0]].ravel()
    return _unique_undirected(src, dst, n)


# ---------------------------------------------------------------------------
# metric quantities
# ---------------------------------------------------------------------------


def triangle_areas(vertices, faces) -> np.ndarray:
    """Area of every triangle.

    Parameters
    ----------
    vertices : array_like of float, shape (N, 3) or (N, 2)
        Vertex positions (planar ``(N, 2)`` input is treated as ``z = 0``).
    faces : array_like of int, shape (F, 3)
        Triangle vertex indices.

    Returns
    -------
    numpy.ndarray, shape (F,), float64
        ``0.5 * |(v1 - v0) x (v2 - v0)|`` (zero for degenerate triangles).
    """
    v, f = _check_mesh(vertices, faces)
    e1 = v[f[:, 1]] - v[f[:, 0]]
    e2 = v[f[:, 2]] - v[f[:, 0]]
    return 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)


def _nondegenerate_mask(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(double_area, ok)`` with ``ok`` False for (near) zero-area triangles."""
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(p1 - p0, p2 - p0)
    dbl = np.linalg.norm(cross, axis=1)
    scale = (
        np.sum((p1 - p0) ** 2, axis=1)
        + np.sum((p2 - p1) ** 2, axis=1)
        + np.sum((p0 - p2) ** 2, axis=1)
    )
    ok = dbl > DEGENERATE_REL_EPS * scale
    # repeated vertex indices are degenerate even if coordinates were huge
    ok &= (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    return dbl, ok


def cotangent_laplacian(vertices, faces) -> sp.csr_matrix:
    """Positive semi-definite cotangent stiffness matrix ``L = D - W``.

    For an edge ``(i, j)`` with opposite angles ``a`` and ``b`` (one of them
    missing on a boundary edge), ``w_ij = (cot a + cot b) / 2`` and
    ``L[i, j] = -w_ij``, ``L[i, i] = sum_j w_ij``. ``L`` is the P1 finite
    element stiffness matrix: ``u^T L u = integral |grad u|^2``.

    Parameters
    ----------
    vertices : array_like of float, shape (N, 3) or (N, 2)
        Vertex positions (planar ``(N, 2)`` input is treated as ``z = 0``).
    faces : array_like of int, shape (F, 3)
        Triangle vertex indices.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (N, N), float64
        Symmetric, rows sum to zero (diagonal is the row sum of the
        off-diagonal weights). Vertices not referenced by any
        (non-degenerate) face give all-zero rows and columns.

    Notes
    -----
    Robustness to bad triangles:

    * Each corner cotangent is ``dot(a, b) / max(|a x b|, tiny)`` where ``a``,
      ``b`` are the two edge vectors leaving that corner (``|a x b|`` is twice
      the triangle area, the same for all three corners).
    * A triangle with ``|a x b| <= DEGENERATE_REL_EPS * (sum of squared edge
      lengths)`` (collinear points, repeated vertex, zero area) is skipped and
      contributes nothing, so the output never contains NaN or inf.
    * Cotangents are clipped to ``[-COT_CLAMP, COT_CLAMP]`` (``1e5``) to bound
      the influence of needle / cap triangles. For such clipped, nearly
      degenerate triangles the element matrix may lose exact semi-definiteness;
      for reasonable meshes no clipping occurs and ``L`` is exactly PSD.
    * Obtuse angles give negative cotangents; the result is still PSD
      (it is a Gram-type FEM matrix) but it is not an M-matrix.

    Raises
    ------
    MeshError
        On malformed ``vertices`` / ``faces``.
    """
    v, f = _check_mesh(vertices, faces)
    n = v.shape[0]
    if f.shape[0] == 0:
        return sp.csr_matrix((n, n), dtype=np.float64)
    dbl, ok = _nondegenerate_mask(v, f)
    n_bad = int(np.count_nonzero(~ok))
    if n_bad:
        logger.info("cotangent_laplacian: skipping %d degenerate triangle(s)", n_bad)
    f, dbl = f[ok], dbl[ok]
    denom = np.maximum(dbl, _TINY)
    rows, cols, vals = [], [], []
    n_clamped = 0
    for k in range(3):
        i = f[:, (k + 1) % 3]
        j = f[:, (k + 2) % 3]
        a = v[i] - v[f[:, k]]
        b = v[j] - v[f[:, k]]
        cot = np.einsum("ij,ij->i", a, b) / denom
        n_clamped += int(np.count_nonzero(np.abs(cot) > COT_CLAMP))
        cot = np.clip(cot, -COT_CLAMP, COT_CLAMP)
        half = 0.5 * cot
        rows += [i, j]
        cols += [j, i]
        vals += [half, half]
    if n_clamped:
        logger.info("cotangent_laplacian: clamped %d cotangent(s) to +-%g", n_clamped, COT_CLAMP)
    W = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsr()
    W.sum_duplicates()
    deg = np.asarray(W.sum(axis=1)).ravel()
    L = (sp.diags(deg, format="csr") - W).tocsr()
    L.sum_duplicates()
    L.sort_indices()
    return L


def lumped_mass(vertices, faces) -> np.ndarray:
    """Barycentric lumped mass: one third of the area of each incident triangle.

    Parameters
    ----------
    vertices : array_like of float, shape (N, 3) or (N, 2)
        Vertex positions.
    faces : array_like of int, shape (F, 3)
        Triangle vertex indices.

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        Strictly positive masses. ``sum(mass)`` equals the total surface area
        (up to the floor below).

    Notes
    -----
    Vertices with zero mass (not referenced by any face, or only by
    zero-area triangles) get the floor ``MASS_FLOOR_REL * mean(nonzero
    masses)`` (``1e-12`` relative) so that ``M`` stays invertible; if every
    mass is zero the floor is ``MASS_FLOOR_REL`` in absolute units.
    """
    v, f = _check_mesh(vertices, faces)
    n = v.shape[0]
    area = triangle_areas(v, f)
    mass = np.zeros(n, dtype=np.float64)
    for k in range(3):
        np.add.at(mass, f[:, k], area / 3.0)
    zero = mass <= 0.0
    if np.any(zero):
        nz = mass[~zero]
        floor = MASS_FLOOR_REL * (float(nz.mean()) if nz.size else 1.0)
        logger.info("lumped_mass: %d vertex/vertices with zero area get floor %g",
                    int(zero.sum()), floor)
        mass[zero] = floor
    return mass


# ---------------------------------------------------------------------------
# geodesics (heat method, potpourri3d)
# ---------------------------------------------------------------------------


class GeodesicSolver:
    """Cached heat-method geodesic distance solver (wraps potpourri3d).

    The potpourri3d ``MeshHeatMethodDistanceSolver`` (which prefactors the
    heat and Poisson systems) is built once in the constructor; each
    :meth:`distances` call is then a pair of back-substitutions.

    Parameters
    ----------
    vertices : array_like of float, shape (N, 3) or (N, 2)
        Vertex positions.
    faces : array_like of int, shape (F, 3)
        Triangle vertex indices.
    t_coef : float, optional
        Heat-method time step multiplier (potpourri3d default ``1.0``).

    Notes
    -----
    potpourri3d (geometry-central) aborts on a vertex that no face references
    when it is not the last one, and silently returns a shorter array when it
    is. The solver is therefore built on the sub-mesh of referenced vertices;
    unreferenced vertices get distance ``+inf``. Vertices in a different
    connected component than the source also get ``+inf`` (the heat method
    would return meaningless finite values there). Tiny negative values from
    round-off are clipped to zero and the source gets exactly zero.
    """

    def __init__(self, vertices, faces, t_coef: float = 1.0):
        import potpourri3d as pp3d  # lazy: heavy compiled dependency

        v, f = _check_mesh(vertices, faces)
        if f.shape[0] == 0:
            raise MeshError("faces is empty; geodesic distances need at least one triangle")
        self.n_vertices = int(v.shape[0])
        used = np.unique(f)
        self._referenced = np.zeros(self.n_vertices, dtype=bool)
        self._referenced[used] = True
        # old -> new index map (-1 for unreferenced vertices)
        self._old2new = np.full(self.n_vertices, -1, dtype=np.int64)
        self._old2new[used] = np.arange(used.size, dtype=np.int64)
        self._new2old = used
        sub_v = np.ascontiguousarray(v[used])
        sub_f = np.ascontiguousarray(self._old2new[f])
        n_unref = self.n_vertices - used.size
        if n_unref:
            logger.info("GeodesicSolver: %d unreferenced vertex/vertices get distance inf",
                        n_unref)
        ei = edge_graph(sub_f, used.size)
        adj = sp.coo_matrix(
            (np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(used.size, used.size)
        )
        self._n_components, self._labels = connected_components(adj, directed=False)
        try:
            self._solver = pp3d.MeshHeatMethodDistanceSolver(sub_v, sub_f, t_coef=float(t_coef))
        except Exception as exc:  # geometry-central raises RuntimeError on bad meshes
            raise MeshError(f"potpourri3d could not build a heat-method solver: {exc}") from exc

    def distances(self, source_index) -> np.ndarray:
        """Geodesic distance from one vertex to all vertices.

        Parameters
        ----------
        source_index : int
            Source vertex in ``[0, N)``.

        Returns
        -------
        numpy.ndarray, shape (N,), float64
            Non-negative distances; ``0`` at the source, ``+inf`` at vertices
            unreachable from it (unreferenced or other connected component).
            If the source itself is unreferenced, every other entry is ``inf``.
        """
        if isinstance(source_index, (bool, np.bool_)) or not isinstance(
            source_index, numbers.Integral
        ):
            raise MeshError(f"source_index must be an integer, got {source_index!r}")
        s = int(source_index)
        if not 0 <= s < self.n_vertices:
            raise MeshError(
                f"source index {s} out of range for {self.n_vertices} vertices"
            )
        out = np.full(self.n_vertices, np.inf, dtype=np.float64)
        out[s] = 0.0
        if not self._referenced[s]:
            logger.warning("GeodesicSolver: source vertex %d is not referenced by any face", s)
            return out
        s_new = int(self._old2new[s])
        d = np.asarray(self._solver.compute_distance(s_new), dtype=np.float64)
        d = np.maximum(d, 0.0)
        d[self._labels != self._labels[s_new]] = np.inf
        d[s_new] = 0.0
        out[self._new2old] = d
        return out


def geodesic_distances(vertices, faces, sources) -> np.ndarray:
    """Heat-method geodesic distances on a triangle mesh (potpourri3d).

    Parameters
    ----------
    vertices : array_like of float, shape (N, 3) or (N, 2)
        Vertex positions.
    faces : array_like of int, shape (F, 3)
        Triangle vertex indices.
    sources : int or array_like of int, shape (S,)
        Source vertex index / indices.

    Returns
    -------
    numpy.ndarray, shape (N,) for a scalar source, else (S, N), float64
        ``out[s, i]`` = approximate geodesic distance from ``sources[s]`` to
        vertex ``i``; ``+inf`` for unreachable vertices (see
        :class:`GeodesicSolver`).

    Notes
    -----
    Builds one :class:`GeodesicSolver` per call; for repeated queries on the
    same mesh construct a :class:`GeodesicSolver` yourself.
    """
    scalar = np.ndim(sources) == 0
    src = _as_index_array(sources, "sources", MeshError).reshape(-1)
    solver = GeodesicSolver(vertices, faces)
    if src.size:
        bad = src[(src < 0) | (src >= solver.n_vertices)]
        if bad.size:
            raise MeshError(
                f"source index {int(bad[0])} out of range for {solver.n_vertices} vertices"
            )
    out = np.empty((src.size, solver.n_vertices), dtype=np.float64)
    for r, s in enumerate(src):
        out[r] = solver.distances(int(s))
    return out[0] if scalar else out
