"""Signal containers: values on a mesh, on the sphere, or on a grid.

All three share one canonical point layout, ``point_values() -> (B, N, C)``, which is
what operators, priors and samplers work on; converters to PyG, PyVista, trimesh,
healpy and xarray live on the containers (at the edges).
"""

from geoinv.signals._base import SignalBase
from geoinv.signals._grid import GridSignal
from geoinv.signals._mesh import MeshSignal
from geoinv.signals._sphere import SphereSignal, healpix_nside

Signal = MeshSignal | SphereSignal | GridSignal

__all__ = ["MeshSignal", "SphereSignal", "GridSignal", "Signal", "SignalBase", "healpix_nside"]
