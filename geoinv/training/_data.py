"""Training / held-out data for the shipped priors, in the canonical (K, N, C) layout."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geoinv.training._config import DataConfig

__all__ = ["Split", "load_split", "synthetic_fields"]


@dataclass
class Split:
    """Signals of one data set split: the container (geometry, fingerprint) and values (K, N, C)."""

    signal: Any
    x: torch.Tensor
    data_range: float


def synthetic_fields(n: int, seed: int = 0, size: int = 8):
    """Smooth, non-Gaussian random fields on a ``size x size`` periodic grid (for tests).

    ``tanh`` of a sum of three random low-frequency plane waves; values in (-1, 1).
    """
    from geoinv.signals import GridSignal

    g = torch.Generator().manual_seed(seed)
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, size, size, dtype=torch.float64)
    for _ in range(3):
        k = torch.randint(-2, 3, (n, 2), generator=g).double()
        ph = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        amp = torch.randn(n, generator=g, dtype=torch.float64)
        out += amp[:, None, None] * torch.cos(2 * math.pi * (k[:, 0, None, None] * i + k[:, 1, None, None] * j) / size
                                              + ph[:, None, None])
    vals = torch.tanh(out).float()[:, None]
    return GridSignal(vals, periodic=True, name="synthetic")


def _era5_global(level: int):
    from geoinv.datasets import era5_global_t
    from geoinv.signals import SphereSignal

    da = era5_global_t(level)
    return SphereSignal.from_xarray(da), np.asarray(da["sample"].values) % 4


def load_split(cfg: DataConfig, split: str = "train") -> Split:
    """The ``train`` or ``test`` split of a data set (see :class:`DataConfig` for the definitions).

    Parameters
    ----------
    cfg : DataConfig
    split : {"train", "test"}

    Returns
    -------
    Split
        ``x`` float32 (K, N, C); ``data_range`` is the peak-to-peak range used for PSNR
        (1 for Bunny-MNIST; the training data's range otherwise).
    """
    name = cfg.name
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    if name == "bunny-mnist":
        from geoinv.datasets import bunny_mnist

        sig = bunny_mnist(split=split)
        return Split(sig, sig.point_values().float(), 1.0)
    if name == "grf-sphere":
        from geoinv.datasets import grf_sphere

        seed = cfg.seed if split == "train" else cfg.seed + 1_000_003
        n = cfg.n if split == "train" else 200
        sig = grf_sphere(cfg.nside, n, seed)
        return Split(sig, sig.point_values().float(), 8.0)
    if name == "era5-uk-t2m":
        from geoinv.datasets import era5_uk_t2m
        from geoinv.signals import SphereSignal

        da = era5_uk_t2m()
        da = da.isel(time=slice(0, cfg.hours)) if split == "train" else da.isel(time=slice(cfg.hours, None))
        sig = SphereSignal.from_xarray(da)
        return Split(sig, sig.point_values().float(), 30.0)
    if name == "era5-global-t":
        sig, time_idx = _era5_global(cfg.level)
        keep = torch.as_tensor(time_idx < 3) if split == "train" else torch.as_tensor(time_idx == 3)
        x = sig.point_values().float()[keep]
        return Split(sig.with_point_values(x), x, 100.0)
    if name in ("navier-stokes", "navier-stokes-128"):
        from geoinv.fluids import grid_signal, load_fields

        sig = grid_signal(load_fields(split, 128 if name.endswith("128") else 64))
        return Split(sig, sig.point_values().float(), 4.0)
    if name == "synthetic":
        sig = synthetic_fields(cfg.n if split == "train" else 200, cfg.seed if split == "train" else cfg.seed + 1)
        return Split(sig, sig.point_values().float(), 2.0)
    raise ValueError(f"unknown data set {name!r}")


def train_val(cfg: DataConfig, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the training signals into (fit, validation) parts; never touches the test split."""
    k = x.shape[0]
    n_val = max(1, int(round(cfg.val_fraction * k)))
    if cfg.val_split == "last":
        idx = torch.arange(k)
    else:
        idx = torch.randperm(k, generator=torch.Generator().manual_seed(seed + 7919))
    val, fit = x[idx[k - n_val:]] if cfg.val_split == "last" else x[idx[:n_val]], \
        x[idx[:k - n_val]] if cfg.val_split == "last" else x[idx[n_val:]]
    if cfg.n_train is not None:
        fit = fit[: cfg.n_train]
    return fit.contiguous(), val.contiguous()
