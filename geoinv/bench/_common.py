"""Shared benchmark machinery: run methods through ``geoinv.solve`` and score them."""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger(__name__)

COLUMNS = [("method", "method", ""), ("psnr", "PSNR [dB]", ".2f"), ("psnr_sd", "± sd", ".2f"), ("mse", "MSE", ".5f"),
           ("s_per_signal", "s / signal", ".3f"), ("s_per_sample", "s / sample", ".4f"), ("n_samples", "samples", "d"),
           ("nfe", "NFE / signal", ".0f"), ("n_forward", "forward evals / signal", ".0f")]
PROB_COLUMNS = [("crps", "CRPS", ".4f"), ("cover90", "90 % coverage", ".2f")]
#: the flow's own columns (:func:`geoinv.flows._bench.flow_bench_columns`)
FLOW_COLUMNS = [("psnr_k1", "flow K=1 PSNR", ".2f"), ("ms_per_mean", "flow ms / mean", ".1f"),
                ("samples_per_s", "flow samples / s", ".0f")]


def noisy_observation(truth, mask: torch.Tensor, noise_std: float, seed: int):
    """``truth`` plus Gaussian noise at observed points and NaN elsewhere (a new container)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x = truth.point_values()
    noisy = x + noise_std * torch.randn(x.shape, generator=g, dtype=x.dtype)
    m = mask if mask.dim() == 2 else mask.expand(x.shape[0], -1)
    noisy = torch.where(m.unsqueeze(-1), noisy, torch.full_like(noisy, float("nan")))
    return truth.with_point_values(noisy)


def run_methods(truth, observed, mask, *, methods, noise_std: float, data_range: float, weights=None,
                seed: int = 0, progress: bool = False, posteriors: dict | None = None) -> list[dict]:
    """Solve with each ``(name, options)`` and score against ``truth`` (batched containers).

    Returns one row per method: PSNR (mean and sd over signals), MSE, seconds per signal and
    per sample, NFE and forward evaluations per signal, and, for sampling methods with
    more than one sample, area-weighted RMSE, CRPS and 90 % interval coverage. When a dict is
    passed as ``posteriors`` it receives each method's :class:`~geoinv.Posterior`.
    """
    import geoinv
    from geoinv import metrics

    x = truth.point_values().double()
    n = x.shape[0]
    rows = []
    for name, opts in methods:
        opts = dict(opts)
        prior = opts.pop("prior", None)
        label = opts.pop("label", name)
        t0 = time.perf_counter()
        post = geoinv.solve(observed, mask, method=name, prior=prior, noise_std=noise_std, seed=seed,
                            progress=progress, **opts)
        secs = time.perf_counter() - t0
        if posteriors is not None:
            posteriors[label] = post
        est = post.mean.point_values().double()
        psnr = metrics.psnr(est, x, data_range=data_range)
        s = post.stats
        row = {"method": label, "psnr": psnr.mean().item(), "psnr_sd": psnr.std().item() if n > 1 else 0.0,
               "mse": metrics.mse(est, x).mean().item(), "s_per_signal": secs / n,
               "s_per_sample": secs / (n * max(s["n_samples"], 1)), "n_samples": s["n_samples"],
               "nfe": s["nfe"] / n, "n_forward": s["n_forward"] / n, "n": n}
        if weights is not None:
            row["rmse"] = metrics.area_weighted_rmse(est, x, weights).mean().item()
        if post.samples is not None and s["n_samples"] > 1:
            smp = post.samples.double() if post.samples.dim() == 4 else post.samples.double().unsqueeze(0)
            row["crps"] = metrics.crps_ensemble(smp, x, weights).mean().item()
            row["cover90"] = metrics.interval_coverage(smp, x, 0.9, weights).mean().item()
            row["ssr"] = metrics.spread_skill_ratio(smp, x).mean().item()
        rows.append(row)
        log.info("%s: %.2f dB (%.2f s/signal)", label, row["psnr"], secs / n)
    return rows


def add_flow_columns(rows: list[dict], truth, observed, mask: torch.Tensor, *, prior: str, noise_std: float,
                     data_range: float, seed: int) -> list[dict]:
    """Add the flow-only columns (K=1 PSNR, ms per posterior mean, samples / s) to the ``flow`` row."""
    from geoinv.flows._bench import flow_bench_columns

    for r in rows:
        if r["method"] == "flow":
            r.update(flow_bench_columns(observed, mask, truth.point_values(), prior, noise_std=noise_std,
                                        n_samples=r["n_samples"], seed=seed, data_range=data_range))
    return rows
