"""Atomic, pickle-free tensor files: safetensors for tensors, JSON for everything else."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from geoinv.errors import CheckpointError

__all__ = ["WEIGHTS_DTYPES", "check_weights_dtype", "atomic_path", "atomic_write_bytes", "atomic_write_json",
           "write_tensors", "read_tensors", "read_json", "sha256_file"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file lives in the target folder (same file system), so :func:`os.replace`
    is atomic: readers see the old file or the complete new one, never a partial one. On an
    exception the temporary file is removed and ``path`` is untouched. The result gets the
    usual permissions (``0o666`` minus the umask). Missing parent folders are created.

    Parameters
    ----------
    path : path-like
        Final file.
    suffix : str
        Suffix of the temporary name (some writers pick the format from it, e.g. ``".png"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"nothing was written to {tmp}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`), fsynced before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``json.dump`` (indented, sorted keys) through :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


WEIGHTS_DTYPES = ("float32", "float16")


def check_weights_dtype(weights_dtype: str) -> str:
    """Validate a storage precision for network weights (``"float32"`` or ``"float16"``)."""
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {WEIGHTS_DTYPES}, got {weights_dtype!r}")
    return weights_dtype


def _pack(tensors: dict[str, torch.Tensor], float16: frozenset[str] = frozenset()):
    """Tensors as stored: float64 tensors exactly representable in float32 are stored as float32;
    float32 tensors named in ``float16`` are rounded to float16 unless a value lies outside its range."""
    stored, dtypes = {}, {}
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        dtypes[k] = str(t.dtype).replace("torch.", "")
        if t.dtype == torch.float64:
            f = t.to(torch.float32)
            if torch.equal(f.to(torch.float64), t):
                t = f
        elif t.dtype == torch.float32 and k in float16:
            h = t.to(torch.float16)
            if torch.equal(torch.isfinite(h), torch.isfinite(t)):  # no finite value overflowed
                t = h
        stored[k] = t
    return stored, dtypes


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None, float16: Iterable[str] = ()) -> tuple[dict[str, str], str]:
    """Write tensors to a safetensors file atomically.

    Parameters
    ----------
    path : path-like
    tensors : dict of Tensor
    metadata : dict of str, optional
        The safetensors header's metadata.
    float16 : collection of str
        Names of float32 tensors to store as float16 (half the bytes, relative rounding error
        at most ``2**-11``; :func:`read_tensors` returns them as float32). A tensor with a
        finite value beyond the float16 range (65,504) is kept in float32.

    Returns
    -------
    dtypes : dict
        Original dtype of every tensor (float64 tensors may be stored as float32 when that
        is exact; :func:`read_tensors` restores them).
    sha256 : str
        Checksum of the written file.
    """
    from safetensors.torch import save

    stored, dtypes = _pack(tensors, frozenset(float16))
    data = save(stored, metadata=metadata)
    atomic_write_bytes(path, data)
    return dtypes, hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_tensors(path: str | os.PathLike, dtypes: dict[str, str] | None = None,
                 sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (never unpickles anything).

    Parameters
    ----------
    path : path
    dtypes : dict, optional
        Original dtypes to restore (from :func:`write_tensors`).
    sha256 : str, optional
        Expected checksum; a mismatch raises :class:`CheckpointError` (corruption).

    Returns
    -------
    tensors : dict of Tensor
    metadata : dict of str
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights {path} not found")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(
            f"{path} is corrupted or truncated: its sha256 differs from the one recorded in its JSON sidecar "
            f"({len(data)} bytes on disk); re-download or re-train it"
        )
    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
        header = json.loads(data[8:8 + n]) if 0 < n <= len(data) - 8 else {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupted, truncated or foreign): {exc}") from exc
    meta = dict(header.get("__metadata__", {}) or {})
    if dtypes:
        for k, dt in dtypes.items():
            if k in tensors:
                tensors[k] = tensors[k].to(getattr(torch, dt))
    return tensors, meta


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON sidecar; :class:`CheckpointError` when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint metadata {path} is missing: a geoinv checkpoint is a pair <name>.safetensors + <name>.json; "
            "copy both files"
        )
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint metadata {path} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint metadata {path} is not a JSON object")
    return obj
