"""Map an ensemble's forward evaluations over a dask.distributed cluster."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from geoinv.operators import Operator

__all__ = ["DaskOperator"]


def _call_chunk(fn: Callable, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fn(x)


class DaskOperator(Operator):
    """A black-box forward model whose batch is split across dask.distributed workers.

    ``forward(x)`` cuts the batch (an EnKG/EKI ensemble) into ``chunks`` contiguous pieces,
    submits ``fn(piece)`` to the workers with ``client.map`` and concatenates the results
    in order, so it returns what ``fn(x)`` would return in-process when ``fn`` treats batch
    members independently, as :class:`~geoinv.operators.NavierStokesObservation` does (up to
    float32 round-off: batched FFT/SIMD paths depend on the chunk size). One ``forward`` call is one sequential round; wall time is that of the slowest chunk.

    Parameters
    ----------
    fn : callable
        ``fn(x (b, N, C)) -> (b, ...)``; must be picklable (a module-level function, an
        operator instance, a ``functools.partial``), e.g. an external simulator wrapper.
    client : distributed.Client
    chunks : int, optional
        Number of pieces (default: the number of worker threads of the cluster).
    noise_std : float
        Measurement noise std (units of ``y``).

    Notes
    -----
    Declared non-differentiable: gradients do not cross process boundaries, so calling it
    on an input that requires grad raises :class:`~geoinv.errors.NotDifferentiableError`.
    Tensors travel to the workers by pickling (CPU tensors); results come back on the
    device of ``x``.

    Examples
    --------
    >>> from distributed import Client, LocalCluster                 # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> op = DaskOperator(NavierStokesObservation(64), client)        # doctest: +SKIP
    >>> EnKG()(y, op, prior, n_samples=256)                           # doctest: +SKIP
    """

    linear = False
    differentiable = False

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], client: Any, chunks: int | None = None, *,
                 noise_std: float | None = None):
        self.fn = fn
        self.client = client
        if chunks is not None and chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        self.chunks = chunks
        self.noise_std = float(getattr(fn, "noise_std", 0.0) if noise_std is None else noise_std)

    def _n_chunks(self) -> int:
        if self.chunks is not None:
            return self.chunks
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # pragma: no cover - client without scheduler info
            return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)`` evaluated piecewise on the workers, concatenated in batch order."""
        b = x.shape[0]
        k = min(self._n_chunks(), b)
        size = math.ceil(b / k)
        pieces = [p.detach().cpu().contiguous() for p in x.split(size)]
        futures = self.client.map(_call_chunk, [self.fn] * len(pieces), pieces, pure=False)
        out = self.client.gather(futures)
        return torch.cat(out).to(x.device)

    def __repr__(self) -> str:
        return f"DaskOperator(fn={self.fn!r}, chunks={self.chunks})"
