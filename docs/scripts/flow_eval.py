"""Held-out evaluation of the shipped Bunny-MNIST flow (numbers of the model card in docs/flows.md).

Test digits (the first N of the fixed test split, never seen by the prior or the flow),
masks and noise exactly as in ``geoinv bench bunny-mnist`` (``geoinv.bench._bunny.make_case``).
Run: ``python docs/scripts/flow_eval.py [N] [THREADS]``.
"""

import json
import sys
import time

import torch


def main(n: int = 20, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    from geoinv import io, metrics
    from geoinv.bench._bunny import make_case
    from geoinv.flows import flow_for_prior
    from geoinv.flows._bench import flow_bench_columns

    prior = io.load_shipped_prior("bunny-mnist")
    flow = flow_for_prior(prior)
    out = {"n": n, "threads": threads, "levels": {}}
    for missing in (0.3, 0.6, 0.8):
        truth, observed, mask = make_case(n, missing, seed=0)
        x = truth.point_values().double()
        y = torch.nan_to_num(observed.point_values().float(), nan=0.0)
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        mean, std, smp = flow.posterior(y, mask, 128, generator=g, return_samples=True)
        secs = time.perf_counter() - t0
        cond = flow.condition(y, mask)
        base = flow.decode(cond.mean_u)
        psnr = lambda e: float(metrics.psnr(e.double(), x, data_range=1.0).mean())  # noqa: E731
        row = {"psnr_k128": psnr(mean), "psnr_k1": psnr(smp[:, 0]), "psnr_gaussian_base": psnr(base),
               "crps": float(metrics.crps_ensemble(smp.double(), x).mean()),
               "cover90": float(metrics.interval_coverage(smp.double(), x, 0.9).mean()),
               "s_batch_mean_std_samples": secs}
        row.update(flow_bench_columns(observed, mask, truth.point_values(), prior, noise_std=0.1, seed=0))
        out["levels"][f"{missing:.0%}"] = row
        print(missing, json.dumps(row))
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    th = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(json.dumps(main(n, th), indent=1))
