"""Assertions for geoinv's mathematical tests (usable by downstream code too)."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["assert_permutation_equivariant"]


def assert_permutation_equivariant(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                                   perm: torch.Tensor | None = None, *,
                                   permuted: Callable[[torch.Tensor], torch.Tensor] | None = None,
                                   node_axis: int = 1, atol: float = 1e-5, rtol: float = 1e-4,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Assert ``permuted(x[perm]) == fn(x)[perm]`` along the node axis.

    Parameters
    ----------
    fn : callable
        The function on the original domain, ``x (B, N, C) -> (B, N, C')``.
    x : Tensor
    perm : Tensor of int64, shape (N,), optional
        New node ``i`` is old node ``perm[i]``; random (``generator``) when omitted.
    permuted : callable, optional
        The same function built on the relabelled domain. Defaults to ``fn.permuted(perm)``
        (e.g. :meth:`geoinv.priors.backbones.GraphUNet.permuted`), else ``fn`` itself (for
        functions that take no domain structure).
    node_axis : int
        Axis of ``x`` and of the output holding the nodes.

    Returns
    -------
    Tensor
        The permutation used.
    """
    n = x.shape[node_axis]
    if perm is None:
        perm = torch.randperm(n, generator=generator)
    perm = torch.as_tensor(perm, dtype=torch.long)
    if permuted is None:
        permuted = fn.permuted(perm) if hasattr(fn, "permuted") else fn
    with torch.no_grad():
        ref = fn(x).index_select(node_axis, perm)
        out = permuted(x.index_select(node_axis, perm))
    if not torch.allclose(out, ref, atol=atol, rtol=rtol):
        err = (out - ref).abs().max().item()
        raise AssertionError(f"not permutation-equivariant: max |f_p(P x) - P f(x)| = {err:.3g} "
                             f"(atol {atol}, rtol {rtol})")
    return perm
