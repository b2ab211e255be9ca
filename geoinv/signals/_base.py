"""What every signal container shares: value handling, masks, fingerprints, caches."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import torch

from geoinv.errors import MaskError, NonFiniteError, ShapeError

__all__ = ["SignalBase", "as_float_tensor", "geometry_hash"]


def as_float_tensor(x: Any, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy ``x`` (array-like) into a new floating tensor; never aliases the caller's memory."""
    if isinstance(x, torch.Tensor):
        t = x.detach().clone()
    else:
        try:
            t = torch.as_tensor(np.array(x, copy=True))
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"{name} must be numeric array-like, got {type(x).__name__}") from exc
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.uint8, torch.bool)):
        raise ShapeError(f"{name} must be real-valued, got dtype {t.dtype}")
    if dtype is not None:
        return t.to(dtype)
    return t if t.is_floating_point() and t.dtype != torch.float16 else t.to(torch.float32)


def geometry_hash(*arrays: np.ndarray, decimals: int = 5) -> str:
    """Short sha256 of geometry arrays, rounded so that dtype changes do not alter it."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating):
            a = np.round(a.astype(np.float64), decimals).astype(np.float32)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class SignalBase:
    """Mixin for the frozen signal dataclasses.

    Subclasses define the ``values`` field, ``n_points``, ``kind``, ``_point_layout``
    (values -> ``(B, N, C)``), ``_from_point_layout`` and the geometry hooks
    ``_geometry_key`` / ``_laplacian`` / ``_area_weights`` / ``_edge_index`` /
    ``_distances``. Geometry results are cached in ``_cache``, a dict that is
    shared between containers on the same domain (``with_point_values``, ``to``).
    """

    kind: str = "signal"

    # -- values ---------------------------------------------------------------------------
    @property
    def is_batched(self) -> bool:
        """True when values carry a leading batch axis."""
        return self.values.dim() == self._batched_ndim

    @property
    def batch_size(self) -> int:
        """Number of signals in the batch (1 when unbatched)."""
        return self.values.shape[0] if self.is_batched else 1

    @property
    def n_channels(self) -> int:
        """Number of channels ``C``."""
        return self.point_values().shape[-1]

    def point_values(self) -> torch.Tensor:
        """Values in geoinv's canonical layout.

        Returns
        -------
        Tensor, shape (B, N, C)
            ``B = 1`` for an unbatched signal. A view where possible.
        """
        v = self.values if self.is_batched else self.values.unsqueeze(0)
        return self._point_layout(v)

    def with_point_values(self, x: torch.Tensor) -> "SignalBase":
        """New container on the same domain with values ``x``.

        Parameters
        ----------
        x : Tensor, shape (B, N, C) or (N, C)
            Values in the canonical point layout. ``(N, C)`` gives an unbatched signal.
        """
        x = torch.as_tensor(x)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[1] != self.n_points:
            raise ShapeError(
                f"values of shape {tuple(x.shape)} do not fit a {self.kind} domain of "
                f"{self.n_points} points: expected (B, {self.n_points}, C) or ({self.n_points}, C)"
            )
        v = self._from_point_layout(x)
        if unbatched:
            v = v[0]
        return dataclasses.replace(self, values=v, _cache=self._cache)

    def __getitem__(self, index: int) -> "SignalBase":
        """The ``index``-th signal of a batch, as an unbatched container."""
        if not self.is_batched:
            raise IndexError("this signal is not batched; there is nothing to index")
        return dataclasses.replace(self, values=self.values[index], _cache=self._cache)

    def observed(self) -> torch.Tensor:
        """Boolean mask of points whose values are all finite (NaN marks missing).

        Returns
        -------
        Tensor of bool, shape (N,) or (B, N)
        """
        m = torch.isfinite(self.point_values()).all(-1)
        return m if self.is_batched else m[0]

    # -- masks ----------------------------------------------------------------------------
    def check_mask(self, mask: Any) -> torch.Tensor:
        """Validate a boolean observation mask (True = observed) against this domain.

        Parameters
        ----------
        mask : array-like of bool, shape (N,) or (B, N)
            For a :class:`GridSignal` also ``(H, W)`` or ``(B, H, W)``.

        Returns
        -------
        Tensor of bool, shape (N,) or (B, N)
            A new tensor on the values' device.
        """
        m = mask.detach().clone() if isinstance(mask, torch.Tensor) else torch.as_tensor(np.array(mask, copy=True))
        if m.dtype != torch.bool:
            raise MaskError(
                f"mask must be boolean (True = observed), got dtype {m.dtype}; "
                "convert with mask.astype(bool) / mask.bool() if 0/1 was meant"
            )
        m = self._flatten_mask(m)
        if m.dim() not in (1, 2) or m.shape[-1] != self.n_points:
            raise MaskError(
                f"mask of shape {tuple(mask.shape)} does not match the {self.n_points} points of this "
                f"{self.kind} signal: expected ({self.n_points},)" + (" or (B, N)" if self.is_batched else "")
            )
        if m.dim() == 2 and m.shape[0] not in (1, self.batch_size):
            raise MaskError(f"mask batch size {m.shape[0]} does not match signal batch size {self.batch_size}")
        if not bool(m.any(-1).all()):
            raise MaskError("the mask observes no point at all (every value is missing); nothing to condition on")
        return m.to(self.values.device)

    def _flatten_mask(self, m: torch.Tensor) -> torch.Tensor:
        return m

    def observed_values_finite(self, mask: torch.Tensor) -> None:
        """Raise :class:`NonFiniteError` if an observed value is NaN or inf."""
        x = self.point_values()
        m = mask if mask.dim() == 2 else mask.unsqueeze(0)
        bad = (~torch.isfinite(x)).any(-1) & m
        if bool(bad.any()):
            b, i = (int(t) for t in bad.nonzero()[0])
            raise NonFiniteError(
                f"{int(bad.sum())} observed value(s) are NaN or inf (first: batch {b}, point {i}); "
                "mark them unobserved in the mask or fix the data"
            )

    # -- domain ---------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Domain fingerprint: kind, point count and a hash of the geometry."""
        if "fingerprint" not in self._cache:
            self._cache["fingerprint"] = f"{self.kind}:{self.n_points}:{self._geometry_key()}"
        return self._cache["fingerprint"]

    def _cached(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def laplacian(self):
        """Positive semi-definite Laplacian (stiffness) ``L`` and lumped mass ``m``.

        Returns
        -------
        L : scipy.sparse.csr_matrix, shape (N, N)
        mass : ndarray, shape (N,)
        """
        return self._cached("laplacian", self._laplacian)

    def area_weights(self) -> np.ndarray:
        """Area (or volume) weight of every point, shape (N,)."""
        return self._cached("area_weights", self._area_weights)

    def edge_index(self) -> torch.Tensor:
        """Undirected neighbour graph in PyG layout, ``(2, E)`` int64, both directions."""
        return self._cached("edge_index", lambda: torch.as_tensor(self._edge_index(), dtype=torch.long))

    def distances(self, source: int) -> np.ndarray:
        """Intrinsic distance from point ``source`` to every point, shape (N,)."""
        return self._distances(int(source))

    def to(self, *args, **kwargs) -> "SignalBase":
        """Move/cast floating tensors like :meth:`torch.Tensor.to`; integer tensors only move."""
        changes = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                if v.is_floating_point():
                    changes[f.name] = v.to(*args, **kwargs)
                else:
                    dev = kwargs.get("device")
                    for a in args:
                        if isinstance(a, (str, torch.device)):
                            dev = a
                    changes[f.name] = v.to(device=dev) if dev is not None else v
        return dataclasses.replace(self, **changes, _cache=self._cache)
