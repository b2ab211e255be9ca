"""Flow-specific benchmark columns: K=1 PSNR, milliseconds per posterior mean, posterior samples per second."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["flow_bench_columns"]


@torch.no_grad()
def flow_bench_columns(observed: Any, mask: torch.Tensor, truth: torch.Tensor, prior: Any, *, noise_std: float,
                       n_samples: int = 128, seed: int = 0, data_range: float = 1.0) -> dict:
    """Extra benchmark numbers of the shipped flow of ``prior`` on a batch of measurements.

    Parameters
    ----------
    observed : batched signal container (NaN at unobserved points)
    mask : bool Tensor, shape (B, N)
    truth : Tensor, shape (B, N, C)
        Ground truth, for the K=1 PSNR only.
    prior : str or Prior

    Returns
    -------
    dict
        ``psnr_k1`` (one posterior sample per signal), ``ms_per_mean`` (wall time of one
        K-sample posterior mean for one measurement, conditioning included, median over
        the batch), ``samples_per_s`` (posterior samples per second, the whole batch of
        measurements x K samples in one call, conditioning included), ``threads``.
    """
    from geoinv import metrics
    from geoinv.flows._solve import flow_for_prior
    from geoinv.inference import resolve_prior

    prior = resolve_prior(prior, observed)
    flow = flow_for_prior(prior)
    y = torch.nan_to_num(observed.point_values().float(), nan=0.0)
    g = torch.Generator().manual_seed(seed)
    one = flow.sample(y, mask, 1, generator=g)[:, 0]
    psnr_k1 = float(metrics.psnr(one.double(), truth.double(), data_range=data_range).mean())
    flow.posterior(y[:1], mask[:1], n_samples, generator=g, return_std=False)  # warm-up
    times = []
    for i in range(y.shape[0]):
        t0 = time.perf_counter()
        flow.posterior(y[i:i + 1], mask[i:i + 1], n_samples, generator=g, return_std=False)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    flow.sample(y, mask, n_samples, generator=g)
    sps = y.shape[0] * n_samples / (time.perf_counter() - t0)
    times.sort()
    return {"psnr_k1": psnr_k1, "ms_per_mean": 1e3 * times[len(times) // 2], "samples_per_s": sps,
            "threads": torch.get_num_threads()}
