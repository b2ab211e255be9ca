"""Checkpoint input/output: safetensors weights + JSON sidecars, atomic writes, never pickle.

>>> from geoinv.io import load_shipped_prior, list_shipped_priors   # doctest: +SKIP
>>> prior = load_shipped_prior("bunny-mnist")                         # doctest: +SKIP
"""

from geoinv.io._checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    list_shipped_priors,
    load_prior,
    load_shipped_prior,
    save_prior,
)
from geoinv.io._files import (
    WEIGHTS_DTYPES,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    check_weights_dtype,
    read_json,
    read_tensors,
    write_tensors,
)

__all__ = [
    "save_prior", "load_prior", "load_shipped_prior", "list_shipped_priors", "FORMAT", "FORMAT_VERSION",
    "WEIGHTS_DTYPES", "check_weights_dtype", "atomic_path", "atomic_write_bytes", "atomic_write_json", "read_json",
    "read_tensors", "write_tensors",
]
