"""Metrics on signals in the canonical layout ``(B, N, C)`` (or plain tensors).

Every metric reduces over all but the leading batch axis and returns a tensor of
shape ``(B,)`` (or a 0-d tensor for unbatched input), so tables report the mean over
test signals of per-signal metrics.
"""

from __future__ import annotations

import math

import torch

from geoinv.errors import ShapeError

__all__ = [
    "mse",
    "psnr",
    "relative_l2",
    "band_relative_l2",
    "area_weighted_rmse",
    "ssim",
    "crps_ensemble",
    "interval_coverage",
    "spread_skill_ratio",
]


def _pair(x, ref):
    x, ref = torch.as_tensor(x), torch.as_tensor(ref)
    if x.shape != ref.shape:
        raise ShapeError(f"estimate shape {tuple(x.shape)} differs from reference shape {tuple(ref.shape)}")
    return x.double(), ref.double()


def _batch_reduce(t: torch.Tensor, batched: bool) -> torch.Tensor:
    return t.flatten(1).mean(1) if batched else t.mean()


def mse(x, ref, batched: bool = True) -> torch.Tensor:
    """Mean squared error, per batch item when ``batched`` (first axis = batch)."""
    x, ref = _pair(x, ref)
    return _batch_reduce((x - ref) ** 2, batched and x.dim() > 1)


def psnr(x, ref, data_range: float, batched: bool = True) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    Parameters
    ----------
    data_range : float
        Explicit peak-to-peak range of the data (1.0 for images in [0, 1]); never
        inferred from the data, so numbers are comparable across methods.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return 10 * torch.log10(data_range**2 / mse(x, ref, batched))


def relative_l2(x, ref, batched: bool = True) -> torch.Tensor:
    """``||x - ref||_2 / ||ref||_2`` per batch item."""
    x, ref = _pair(x, ref)
    if batched and x.dim() > 1:
        return (x - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    return (x - ref).norm() / ref.norm()


def band_relative_l2(x, ref, edges) -> torch.Tensor:
    r"""Relative L2 error of fields on a periodic square grid, split by wavenumber band.

    Band ``i`` holds the Fourier modes with :math:`e_i \le \max(|k_x|, |k_y|) < e_{i+1}` (``edges`` in
    integer wavenumbers, increasing; the last band is open-ended, e.g. ``(0, 16)``: the modes a grid of half the
    size resolves, and the rest). Each entry is :math:`\lVert P_i(x - \mathrm{ref})\rVert / \lVert \mathrm{ref}\rVert`,
    so the squares of a partition starting at 0 add up to the squared :func:`relative_l2` (Parseval).

    Parameters
    ----------
    x, ref : Tensor, shape (B, n, n) or (n, n)
    edges : sequence of int

    Returns
    -------
    Tensor, shape (B, len(edges)) or (len(edges),)
    """
    x, ref = _pair(x, ref)
    if x.dim() not in (2, 3) or x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"fields must be (B, n, n) or (n, n) on a square periodic grid, got {tuple(x.shape)}")
    e = [float(v) for v in edges]
    if not e or any(b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"edges must be a non-empty increasing sequence of wavenumbers, got {list(edges)}")
    n = x.shape[-1]
    k = torch.fft.fftfreq(n, 1 / n, dtype=torch.float64).abs()
    kmax = torch.maximum(k[:, None], k[None, :])
    err = torch.fft.fft2(x - ref).abs() ** 2
    masks = torch.stack([(kmax >= a) & (kmax < b) for a, b in zip(e, e[1:] + [math.inf])])   # (nb, n, n)
    band = (err[..., None, :, :] * masks).sum((-2, -1))
    total = (torch.fft.fft2(ref).abs() ** 2).sum((-2, -1))
    return (band / total[..., None]).sqrt()


def area_weighted_rmse(x, ref, weights, batched: bool = True) -> torch.Tensor:
    """Root mean squared error weighted by point areas.

    Parameters
    ----------
    x, ref : Tensor, shape (B, N, C) or (N, C)
    weights : array-like, shape (N,)
        Point areas (e.g. :meth:`SphereSignal.area_weights`); normalised inside.
    """
    x, ref = _pair(x, ref)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (x.shape[-2],):
        raise ShapeError(f"weights must have shape ({x.shape[-2]},), got {tuple(w.shape)}")
    w = (w / w.sum()).unsqueeze(-1)
    se = ((x - ref) ** 2 * w).sum(-2).mean(-1)
    return se.sqrt() if batched and x.dim() == 3 else se.sqrt().reshape(())


def _gauss_window(size: int, sigma: float, dtype) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=dtype) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x, ref, data_range: float, win_size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) for grid signals.

    Parameters
    ----------
    x, ref : Tensor, shape (B, C, H, W)
    data_range : float

    Returns
    -------
    Tensor, shape (B,)
        Mean SSIM over valid windows and channels (Gaussian window, K1=0.01, K2=0.03).
    """
    x, ref = _pair(x, ref)
    if x.dim() != 4:
        raise ShapeError(f"ssim needs (B, C, H, W) grids, got {tuple(x.shape)}")
    c = x.shape[1]
    w = _gauss_window(win_size, sigma, x.dtype).expand(c, 1, win_size, win_size)
    conv = lambda t: torch.nn.functional.conv2d(t, w, groups=c)  # noqa: E731
    mu_x, mu_y = conv(x), conv(ref)
    sxx = conv(x * x) - mu_x**2
    syy = conv(ref * ref) - mu_y**2
    sxy = conv(x * ref) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def crps_ensemble(samples, truth, weights=None) -> torch.Tensor:
    """Continuous ranked probability score of an ensemble, averaged over points.

    ``CRPS = E|X - y| - 0.5 E|X - X'|`` with the unbiased ("fair") pair term
    ``1 / (2 S (S - 1)) sum_{i != j} |x_i - x_j|``.

    Parameters
    ----------
    samples : Tensor, shape (S, N, C) or (B, S, N, C)
    truth : Tensor, shape (N, C) or (B, N, C)
    weights : array-like, shape (N,), optional
        Point areas for an area-weighted mean.
    """
    s, y = torch.as_tensor(samples).double(), torch.as_tensor(truth).double()
    unbatched = s.dim() == 3
    if unbatched:
        s, y = s.unsqueeze(0), y.unsqueeze(0)
    n = s.shape[1]
    skill = (s - y.unsqueeze(1)).abs().mean(1)
    xs = s.sort(dim=1).values
    # sum_{i<j} |x_i - x_j| from sorted samples: sum_k (2k - S + 1) x_(k)
    k = torch.arange(n, dtype=s.dtype).reshape(1, n, 1, 1)
    pair = ((2 * k - n + 1) * xs).sum(1) * 2 / (2 * n * max(n - 1, 1))
    crps = skill - pair
    out = _point_mean(crps, weights)
    return out[0] if unbatched else out


def _point_mean(t: torch.Tensor, weights) -> torch.Tensor:
    """Mean over (N, C) of (B, N, C), area-weighted over N when weights are given."""
    if weights is None:
        return t.flatten(1).mean(1)
    w = torch.as_tensor(weights, dtype=t.dtype)
    return ((t.mean(-1) * w).sum(-1)) / w.sum()


def interval_coverage(samples, truth, level: float = 0.9, weights=None) -> torch.Tensor:
    """Fraction of points whose truth lies in the central ``level`` interval of the samples.

    Parameters
    ----------
    samples : Tensor, shape (S, N, C) or (B, S, N, C)
    truth : Tensor, shape (N, C) or (B, N, C)
    """
    s, y = torch.as_tensor(samples).double(), torch.as_tensor(truth).double()
    unbatched = s.dim() == 3
    if unbatched:
        s, y = s.unsqueeze(0), y.unsqueeze(0)
    a = (1 - level) / 2
    lo, hi = torch.quantile(s, a, dim=1), torch.quantile(s, 1 - a, dim=1)
    inside = ((y >= lo) & (y <= hi)).double()
    out = _point_mean(inside, weights)
    return out[0] if unbatched else out


def spread_skill_ratio(samples, truth) -> torch.Tensor:
    """Ensemble spread over skill: ``sqrt(mean var) / RMSE(ensemble mean)``, corrected by
    ``sqrt((S + 1) / S)`` so a calibrated ensemble gives 1 (Fortin et al. 2014).

    Parameters
    ----------
    samples : Tensor, shape (S, N, C) or (B, S, N, C)
    truth : Tensor, shape (N, C) or (B, N, C)
    """
    s, y = torch.as_tensor(samples).double(), torch.as_tensor(truth).double()
    unbatched = s.dim() == 3
    if unbatched:
        s, y = s.unsqueeze(0), y.unsqueeze(0)
    n = s.shape[1]
    spread = s.var(1, unbiased=True).flatten(1).mean(1).sqrt()
    skill = ((s.mean(1) - y) ** 2).flatten(1).mean(1).sqrt()
    out = math.sqrt((n + 1) / n) * spread / skill
    return out[0] if unbatched else out
