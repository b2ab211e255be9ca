"""Geometry of meshes, spheres and regular grids (pure numpy / scipy).

Discrete operators (cotangent / graph / grid Laplacians), quadrature weights
(lumped mass, spherical cell areas), neighbour graphs and geodesic distances.
Heavy optional libraries (potpourri3d, healpy, trimesh) are imported lazily
inside the functions that need them.

Conventions
-----------
* Graphs are ``(2, E)`` int64 ``edge_index`` arrays holding both directions
  of each undirected edge, unique and sorted, without self loops.
* Laplacians are positive semi-definite stiffness matrices ``L = D - W``
  (``scipy.sparse.csr_matrix``); pair them with a mass / area vector.
* Angles are in degrees; spherical distances in radians and areas in
  steradians on the unit sphere.
* Invalid inputs raise :class:`GeometryError` (a :class:`ValueError`).
"""

from ._graph import (
    GeometryError,
    GraphError,
    GridError,
    MeshError,
    SphereError,
    graph_laplacian,
)
from ._grid import grid_edge_graph, grid_laplacian
from ._mesh import (
    COT_CLAMP,
    DEGENERATE_REL_EPS,
    MASS_FLOOR_REL,
    GeodesicSolver,
    cotangent_laplacian,
    edge_graph,
    geodesic_distances,
    lumped_mass,
    triangle_areas,
)
from ._sphere import (
    great_circle_distance,
    healpix_areas,
    healpix_lonlat,
    healpix_neighbour_graph,
    latlon_cell_areas,
    lonlat_to_xyz,
    scattered_sphere_areas,
    sphere_knn_graph,
    xyz_to_lonlat,
)

__all__ = [
    # errors
    "GeometryError",
    "MeshError",
    "SphereError",
    "GridError",
    "GraphError",
    # meshes
    "edge_graph",
    "triangle_areas",
    "cotangent_laplacian",
    "lumped_mass",
    "geodesic_distances",
    "GeodesicSolver",
    "COT_CLAMP",
    "DEGENERATE_REL_EPS",
    "MASS_FLOOR_REL",
    # graphs
    "graph_laplacian",
    # sphere
    "lonlat_to_xyz",
    "xyz_to_lonlat",
    "great_circle_distance",
    "healpix_neighbour_graph",
    "healpix_lonlat",
    "healpix_areas",
    "sphere_knn_graph",
    "latlon_cell_areas",
    "scattered_sphere_areas",
    # grids
    "grid_edge_graph",
    "grid_laplacian",
]
