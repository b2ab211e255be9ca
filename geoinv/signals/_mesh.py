"""Signals on triangle meshes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoinv.errors import NonFiniteError, ShapeError
from geoinv.signals._base import SignalBase, as_float_tensor, geometry_hash

__all__ = ["MeshSignal"]


@dataclass(frozen=True, eq=False)
class MeshSignal(SignalBase):
    """Values on the vertices of a triangle mesh.

    Parameters
    ----------
    vertices : Tensor, shape (N, 3)
        Vertex positions (float).
    faces : Tensor, shape (F, 3), int64
        Triangles as vertex indices. Converters to PyG ``[2, E]`` / ``face [3, F]`` and
        VTK padded faces live at the edges (:meth:`to_pyg`, :meth:`to_pyvista`).
    values : Tensor, shape (N, C) or (B, N, C)
        Signal values; NaN may mark missing values.
    name : str, optional
        Name used for plots and exported arrays.

    Examples
    --------
    >>> import torch, geoinv
    >>> v = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 1, 0]]); f = torch.tensor([[0, 1, 2]])
    >>> s = geoinv.MeshSignal(v, f, torch.ones(3, 1))
    >>> s.n_points, s.point_values().shape
    (3, torch.Size([1, 3, 1]))
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    values: torch.Tensor
    name: str | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    kind = "mesh"
    _batched_ndim = 3

    def __post_init__(self) -> None:
        v = as_float_tensor(self.vertices, "vertices")
        f = torch.as_tensor(np.array(self.faces, copy=True)) if not isinstance(self.faces, torch.Tensor) else self.faces.detach().clone()
        if v.dim() != 2 or v.shape[1] != 3:
            raise ShapeError(f"vertices must have shape (N, 3), got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise NonFiniteError("vertices contain NaN or inf; clean the mesh before building a MeshSignal")
        if f.dim() != 2 or f.shape[1] != 3:
            raise ShapeError(f"faces must have shape (F, 3) (triangles), got {tuple(f.shape)}")
        if f.is_floating_point():
            if not bool((f == f.round()).all()):
                raise ShapeError("faces must be integer vertex indices")
        f = f.to(torch.int64)
        n = v.shape[0]
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= n):
            bad = int(f.max()) if int(f.max()) >= n else int(f.min())
            raise ShapeError(f"face index {bad} is out of range for {n} vertices (valid: 0..{n - 1})")
        vals = as_float_tensor(self.values, "values")
        if vals.dim() == 1:
            vals = vals.unsqueeze(-1)
        if vals.dim() not in (2, 3) or vals.shape[-2] != n:
            raise ShapeError(
                f"values of shape {tuple(vals.shape)} do not fit {n} vertices: expected (N, C) or (B, N, C) with N = {n}"
            )
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        object.__setattr__(self, "values", vals)

    @property
    def n_points(self) -> int:
        """Number of vertices ``N``."""
        return self.vertices.shape[0]

    def _point_layout(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def _from_point_layout(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # -- geometry -------------------------------------------------------------------------
    def _np(self):
        return self.vertices.detach().cpu().double().numpy(), self.faces.detach().cpu().numpy()

    def _geometry_key(self) -> str:
        return geometry_hash(*self._np())

    def _laplacian(self):
        from geoinv import geometry

        v, f = self._np()
        return geometry.cotangent_laplacian(v, f), geometry.lumped_mass(v, f)

    def _area_weights(self) -> np.ndarray:
        return self.laplacian()[1]

    def _edge_index(self) -> np.ndarray:
        from geoinv import geometry

        return geometry.edge_graph(self._np()[1], self.n_points)

    def _distances(self, source: int) -> np.ndarray:
        from geoinv import geometry

        solver = self._cached("geodesic_solver", lambda: geometry.GeodesicSolver(*self._np()))
        return solver.distances(source)

    # -- converters -----------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, values: Any = None, name: str | None = None) -> "MeshSignal":
        """Read a mesh (ply, obj, off, ...) with trimesh, keeping the file's vertex order.

        Parameters
        ----------
        path : str or Path
        values : array-like, shape (N, C) or (N,), optional
            Defaults to zeros of shape (N, 1).
        """
        import trimesh

        mesh = trimesh.load(str(path), force="mesh", process=False)
        return cls.from_trimesh(mesh, values=values, name=name or Path(path).stem)

    @classmethod
    def from_trimesh(cls, mesh: Any, values: Any = None, name: str | None = None) -> "MeshSignal":
        """Build from a ``trimesh.Trimesh`` (vertex order kept)."""
        v = np.asarray(mesh.vertices, dtype=np.float64)
        vals = np.zeros((len(v), 1), np.float32) if values is None else values
        return cls(torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(np.asarray(mesh.faces, np.int64)), vals, name)

    @classmethod
    def from_pyvista(cls, mesh: Any, scalars: str | None = None, name: str | None = None) -> "MeshSignal":
        """Build from a triangulated ``pyvista.PolyData``; ``scalars`` names a point-data array."""
        if not mesh.is_all_triangles:
            mesh = mesh.triangulate()
        faces = np.asarray(mesh.regular_faces, dtype=np.int64)
        if scalars is None:
            vals = np.zeros((mesh.n_points, 1), np.float32)
        else:
            vals = np.asarray(mesh.point_data[scalars])
        return cls(torch.as_tensor(np.asarray(mesh.points, np.float32)), torch.as_tensor(faces), vals, name or scalars)

    def to_trimesh(self):
        """``trimesh.Trimesh`` of the geometry (values not attached)."""
        import trimesh

        v, f = self._np()
        return trimesh.Trimesh(v, f, process=False)

    def to_pyvista(self):
        """``pyvista.PolyData`` with the values in ``point_data``.

        An unbatched signal stores one array named ``name`` (or ``"values"``), of shape
        (N,) when C = 1 else (N, C); a batched one stores ``"<name>[b]"`` per batch item.
        """
        import pyvista as pv

        v, f = self._np()
        mesh = pv.PolyData.from_regular_faces(v, f)
        key = self.name or "values"
        x = self.point_values().detach().cpu().numpy()
        arrays = {key: x[0]} if not self.is_batched else {f"{key}[{b}]": x[b] for b in range(x.shape[0])}
        for k, a in arrays.items():
            mesh.point_data[k] = a[:, 0] if a.shape[1] == 1 else a
        return mesh

    def to_pyg(self):
        """``torch_geometric.data.Data`` with ``pos``, ``face`` ``[3, F]``, ``edge_index`` ``[2, E]`` and ``x``.

        ``x`` has shape (N, C) for an unbatched signal and (N, B, C) for a batched one.
        """
        from torch_geometric.data import Data

        x = self.values if not self.is_batched else self.values.permute(1, 0, 2)
        return Data(x=x, pos=self.vertices, face=self.faces.t().contiguous(), edge_index=self.edge_index())

    @classmethod
    def from_pyg(cls, data: Any, name: str | None = None) -> "MeshSignal":
        """Inverse of :meth:`to_pyg`."""
        x = data.x
        if x.dim() == 3:
            x = x.permute(1, 0, 2)
        return cls(data.pos, data.face.t(), x, name)

    def __repr__(self) -> str:  # keep reprs short: no tensor dumps
        return (
            f"MeshSignal(name={self.name!r}, vertices={self.n_points}, faces={self.faces.shape[0]}, "
            f"values={tuple(self.values.shape)}, dtype={self.values.dtype})"
        )

