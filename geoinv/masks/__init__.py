"""Observation masks: boolean, True = observed, shape (N,) or (n, N).

>>> from geoinv import masks
>>> m = masks.random(signal, missing=0.3, seed=0)               # doctest: +SKIP
>>> m = masks.geodesic_patches(signal, missing=0.3, seed=0)     # doctest: +SKIP
>>> m = masks.moving_patches(sphere_signal, n=168, missing=0.4)   # doctest: +SKIP
"""

from geoinv.masks._patches import geodesic_patches
from geoinv.masks._moving import moving_patches
from geoinv.masks._random import random

__all__ = ["random", "geodesic_patches", "moving_patches"]
