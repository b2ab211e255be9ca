"""Uniformly random missing points."""

from __future__ import annotations

import logging

import numpy as np
import torch

from geoinv.masks._common import check_count, check_missing, n_points_of

__all__ = ["random"]

logger = logging.getLogger(__name__)


def random(signal, missing: float = 0.3, seed: int | None = None, n: int | None = None) -> torch.Tensor:
    """Mask hiding a uniformly random set of points.

    Parameters
    ----------
    signal : MeshSignal, SphereSignal or GridSignal
        Only its number of points ``N`` is used.
    missing : float in [0, 1)
        Fraction of points hidden: exactly ``round(missing * N)`` (Python's ``round``) points
        are missing in every mask, chosen uniformly without replacement.
    seed : int, optional
        Seed of ``numpy.random.default_rng``; the same seed gives the same masks. ``None``
        draws fresh entropy.
    n : int, optional
        Number of independent masks; ``None`` gives a single mask.

    Returns
    -------
    torch.BoolTensor, shape (N,) or (n, N)
        True = observed, False = missing.

    Raises
    ------
    MaskError
        If ``missing`` is outside [0, 1) or would hide every point.

    Examples
    --------
    >>> from geoinv import masks
    >>> from geoinv.datasets import stanford_bunny
    >>> m = masks.random(stanford_bunny(4), missing=0.25, seed=0)
    >>> m.shape, int((~m).sum())
    (torch.Size([453]), 113)
    """
    n_points = n_points_of(signal)
    k = check_missing(missing, n_points)
    count = check_count(n)
    rng = np.random.default_rng(seed)
    out = np.ones((count or 1, n_points), dtype=bool)
    for row in out:
        row[rng.choice(n_points, size=k, replace=False)] = False
    logger.debug("masks.random: %d mask(s), %d of %d points missing", len(out), k, n_points)
    m = torch.from_numpy(out)
    return m if count is not None else m[0].clone()
