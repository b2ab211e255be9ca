"""Held-out denoising benchmark of a prior: learned Tweedie vs Gaussian vs harmonic smoothing."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

__all__ = ["bench_denoising"]

log = logging.getLogger(__name__)


def _psnr(d: torch.Tensor, x: torch.Tensor, data_range: float) -> torch.Tensor:
    mse = ((d.double() - x.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


@torch.no_grad()
def bench_denoising(prior_name: str | os.PathLike | Any, sigmas=(0.05, 0.1, 0.2, 0.5), n_test: int | None = None,
                    seed: int = 0, *, harmonic: bool = True, batch_size: int = 64) -> list[dict]:
    """Denoising PSNR on the held-out test split of a prior's data set.

    For each noise level ``sigma`` (data units) the test signals get ``y = x + sigma eps``
    (one fixed draw from ``seed``) and are denoised by

    * ``learned``: the prior's one-step Tweedie denoiser ``D(y; sigma)``;
    * ``gaussian``: the exact denoiser of the Gaussian in the checkpoint (the residual base;
      for a non-residual prior a Gaussian of the configured rank is refitted on the
      training part of the training split);
    * ``harmonic``: :func:`geoinv.baselines.harmonic_denoise` (empirical-Bayes Laplacian
      smoothing) when that module exists.

    Parameters
    ----------
    prior_name : str, path or EDMDenoiser
        A shipped prior name (:func:`geoinv.io.list_shipped_priors`), a checkpoint path,
        or a loaded prior (its ``train_config`` names the data set).
    sigmas : sequence of float
    n_test : int, optional
        Use the first ``n_test`` test signals (default: all).
    seed : int
    harmonic : bool
        Include the harmonic smoother (slow: one evidence search per signal).

    Returns
    -------
    list of dict
        One row per (method, sigma): ``prior``, ``method``, ``sigma``, ``psnr`` (mean over
        signals, dB), ``psnr_std``, ``rmse`` (data units), ``n``, ``data_range``, ``seconds``.
        PSNR uses the data set's fixed ``data_range`` (1 for Bunny-MNIST).
    """
    from geoinv.io import list_shipped_priors, load_prior, load_shipped_prior
    from geoinv.training._config import config_from_dict
    from geoinv.training._data import load_split, train_val

    if isinstance(prior_name, (str, os.PathLike)):
        name = str(prior_name)
        prior = load_shipped_prior(name) if name in list_shipped_priors() else load_prior(name)
    else:
        prior = prior_name
    cfg = config_from_dict(prior.train_config)
    test = load_split(cfg.data, "test")
    prior.check_domain(test.signal)
    x = test.x if n_test is None else test.x[:n_test]
    gen = torch.Generator().manual_seed(seed)
    gauss = getattr(prior, "base", None)
    if gauss is None:
        from geoinv.priors import GaussianPrior

        fit_x, _ = train_val(cfg.data, load_split(cfg.data, "train").x, cfg.train.seed)
        gauss = GaussianPrior.fit(fit_x.double(), rank=cfg.model.gaussian_rank)
    methods: dict[str, Any] = {"learned": prior.denoise, "gaussian": gauss.denoise}
    if harmonic:
        try:
            from geoinv.baselines import harmonic_denoise
        except ImportError:
            harmonic_denoise = None
        if harmonic_denoise is not None:
            methods["harmonic"] = lambda y, s: harmonic_denoise(test.signal.with_point_values(y), float(s))
    rows = []
    eval_mode = getattr(prior, "eval", None)
    if eval_mode is not None:
        prior.eval()
    for s in sigmas:
        eps = torch.randn(x.shape, generator=gen)
        y = (x + s * eps).double()
        for m, fn in methods.items():
            t0 = time.perf_counter()
            d = torch.cat([torch.as_tensor(fn(y[i:i + batch_size], s)).double() for i in range(0, y.shape[0], batch_size)])
            p = _psnr(d, x, test.data_range)
            rmse = ((d - x.double()) ** 2).flatten(1).mean(1).sqrt().mean()
            rows.append({"prior": prior.name, "method": m, "sigma": float(s), "psnr": float(p.mean()),
                         "psnr_std": float(p.std()) if len(p) > 1 else 0.0, "rmse": float(rmse), "n": int(x.shape[0]),
                         "data_range": test.data_range, "seconds": time.perf_counter() - t0})
            log.info("bench %s %s sigma=%g: %.2f dB", prior.name, m, s, rows[-1]["psnr"])
    return rows
