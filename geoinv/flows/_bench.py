"""Flow-specific benchmark columns: K=1 PSNR, milliseconds per posterior mean, posterior samples per second."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["flow_bench_columns", "flow_throughput"]


@torch.no_grad()
def flow_bench_columns(observed: Any, mask: torch.Tensor, truth: torch.Tensor, prior: Any, *, noise_std: float,
                       n_samples: int = 128, seed: int = 0, data_range: float = 1.0,
                       latency_threads: int = 1) -> dict:
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
        The latency ``ms_per_mean`` is timed with ``latency_threads`` torch threads (1: one
        small posterior is faster on one thread than on two, which spin-wait on each other's
        tiny kernels); ``samples_per_s`` with the caller's threads.
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
    threads = torch.get_num_threads()
    torch.set_num_threads(latency_threads)
    try:
        flow.posterior(y[:1], mask[:1], n_samples, generator=g, return_std=False)  # warm-up
        times = []
        for i in range(y.shape[0]):
            t0 = time.perf_counter()
            flow.posterior(y[i:i + 1], mask[i:i + 1], n_samples, generator=g, return_std=False)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    flow.sample(y, mask, n_samples, generator=g)
    sps = y.shape[0] * n_samples / (time.perf_counter() - t0)
    times.sort()
    return {"psnr_k1": psnr_k1, "ms_per_mean": 1e3 * times[len(times) // 2], "samples_per_s": sps,
            "threads": threads, "latency_threads": latency_threads}


@torch.no_grad()
def flow_throughput(dim: int = 4140, rank: int = 384, *, n_measurements: int = 16, n_samples: int = 128,
                    floor: float = 0.0, config: Any = None, seed: int = 0, repeats: int = 3) -> dict:
    """Posterior samples per second of a flow on a ``dim``-point domain (the architecture's cost, not its skill).

    Builds a :class:`~geoinv.flows.ConditionalFlow` of the shipped architecture (``config``,
    default :class:`~geoinv.flows.FlowConfig` with the Bunny-MNIST widths and a Gaussian base)
    on a random orthonormal rank-``rank`` basis of a ``dim``-point signal (4,140 = the 46 x 90
    ERA5 grid of the amortized-posterior paper) with complement variance ``floor``, gives its
    zero-initialised layers random weights (so every layer does real work), and times, best
    of ``repeats``, for ``n_measurements`` measurements with half the points missing:
    the conditioning (:meth:`~geoinv.flows.ConditionalFlow.condition`, once per
    measurement) and the sampling of ``n_samples`` samples per measurement given it.

    Returns
    -------
    dict
        ``dim``, ``rank``, ``samples_per_s`` (sampling, conditioning done),
        ``ms_condition`` (per measurement), ``samples_per_s_k`` (end to end with
        ``n_samples`` per measurement), ``threads``.
    """
    from geoinv.flows._model import ConditionalFlow, FlowConfig

    g = torch.Generator().manual_seed(seed)
    cfg = config or FlowConfig(n_couplings=6, hidden=160, context_dim=160, noise_std=0.1)
    q, _ = torch.linalg.qr(torch.randn(dim, rank, generator=g, dtype=torch.float64))
    lam = torch.logspace(0, -3, rank, dtype=torch.float64)
    flow = ConditionalFlow({"mean": torch.zeros(dim, 1, dtype=torch.float64), "eigvecs": q, "eigvals": lam,
                            "floor": torch.tensor(floor, dtype=torch.float64)}, cfg).eval()
    for p in flow.parameters():
        p.add_(0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    y = torch.randn(n_measurements, dim, 1, generator=g)
    mask = torch.rand(n_measurements, dim, generator=g) > 0.5
    flow.sample(y[:2], mask[:2], 8, generator=g)  # warm-up
    t_cond, t_samp = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        cond = flow.condition(y, mask)
        t1 = time.perf_counter()
        flow.sample(y, mask, n_samples, generator=g, cond=cond)
        t2 = time.perf_counter()
        t_cond, t_samp = min(t_cond, t1 - t0), min(t_samp, t2 - t1)
    n = n_measurements * n_samples
    return {"dim": dim, "rank": rank, "samples_per_s": n / t_samp, "ms_condition": 1e3 * t_cond / n_measurements,
            "samples_per_s_k": n / (t_samp + t_cond), "threads": torch.get_num_threads()}
