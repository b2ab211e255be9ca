"""Held-out evaluation of the shipped Bunny-MNIST flow (numbers of the model card in docs/flows.md).

Test digits (the first N of the fixed test split, never seen by the prior or the flow),
masks and noise exactly as in ``geoinv bench bunny-mnist`` (``geoinv.bench._bunny.make_case``); the
untrained flow of the same configuration (its base alone) alongside.
Run: ``python docs/scripts/flow_eval.py [N] [THREADS]``; ``python docs/scripts/flow_eval.py uk [N]`` does the
same for the ERA5 UK flow on the cases of ``geoinv bench sphere``, and ``uk-ranks`` gives the exact
Gaussian posterior there against the PPCA rank (what bounds that flow's base); ``throughput [THREADS]``
times the architecture at 4,140 points.

``python docs/scripts/flow_eval.py cv [N] [REPEATS] [SIGMA_MIN]`` measures what the control variate does to the
DSM bound on N validation digits of the training split: the spread of the one-draw estimate over
REPEATS draws of its value and of its gradient in x, with and without the Gaussian base as control
variate (same expectation up to an x-independent constant).

``python docs/scripts/flow_eval.py refine [N]`` scans ``refine_scale`` of the refined base (the untrained
flow's mean) on N validation digits at the bench's missing levels; ``refine-steps [N]`` scans the number and
levels of its denoiser calls (``refine_steps``) the same way, with the conditioning time per measurement.
"""

import dataclasses
import json
import sys
import torch


def evaluate(prior_name: str, cases: dict, *, noise_std: float, data_range: float, weights=None) -> dict:
    """Trained flow vs the untrained flow of the same configuration (its base alone) on held-out cases."""
    from geoinv import io, metrics
    from geoinv.flows import ConditionalFlow, flow_for_prior
    from geoinv.flows._bench import flow_bench_columns

    prior = io.load_shipped_prior(prior_name)
    flow = flow_for_prior(prior)
    # zero-initialised layers are the identity: an untrained flow is its base (a distilled flow's with its
    # trained student; its teacher, the multi-call refined base, alongside)
    untrained = ConditionalFlow(flow.basis(), flow.config).attach_prior(prior).eval()
    variants = {"flow": flow, "untrained": untrained}
    if flow.config.base == "distilled":
        untrained.student.load_state_dict(flow.student.state_dict())
        teacher = dataclasses.replace(flow.config, base="refined")
        variants["teacher"] = ConditionalFlow(flow.basis(), teacher).attach_prior(prior).eval()
    out = {}
    for label, (truth, observed, mask) in cases.items():
        x = truth.point_values().double()
        y = torch.nan_to_num(observed.point_values().float(), nan=0.0)
        psnr = lambda e: float(metrics.psnr(e.double(), x, data_range=data_range).mean())  # noqa: E731
        row = {}
        for name, f in variants.items():
            mean, _, smp = f.posterior(y, mask, 128, generator=torch.Generator().manual_seed(0), return_samples=True)
            row.update({f"{name}_psnr_k128": psnr(mean), f"{name}_psnr_k1": psnr(smp[:, 0]),
                        f"{name}_crps": float(metrics.crps_ensemble(smp.double(), x, weights).mean()),
                        f"{name}_cover90": float(metrics.interval_coverage(smp.double(), x, 0.9, weights).mean())})
        row.update(flow_bench_columns(observed, mask, truth.point_values(), prior, noise_std=noise_std, seed=0,
                                      data_range=data_range))
        out[label] = row
        print(label, json.dumps(row))
    return out


def main(n: int = 20, threads: int = 1) -> dict:
    """Bunny-MNIST: the bench's cases (first ``n`` test digits, 30 / 60 / 80 % missing, noise 0.1)."""
    torch.set_num_threads(threads)
    from geoinv.bench._bunny import NOISE_STD, make_case

    cases = {f"{m:.0%}": make_case(n, m, seed=0) for m in (0.3, 0.6, 0.8)}
    return {"n": n, "threads": threads, "levels": evaluate("bunny-mnist", cases, noise_std=NOISE_STD, data_range=1.0)}


def uk(n: int = 20) -> dict:
    """ERA5 UK t2m: the cases of ``geoinv bench sphere`` (n test hours, 60 % missing, noise 0.1 K)."""
    torch.set_num_threads(1)
    from geoinv import masks
    from geoinv.bench import _common
    from geoinv.bench._sphere import MISSING, NOISE_K, uk_split

    train, test = uk_split()
    xt = train.point_values().double()
    idx = torch.linspace(0, test.batch_size - 1, n).round().long()
    truth = test.with_point_values(test.point_values()[idx])
    mask = masks.random(truth, missing=MISSING, seed=0, n=n)
    cases = {f"{MISSING:.0%}": (truth, _common.noisy_observation(truth, mask, NOISE_K, 0), mask)}
    return evaluate("era5-uk-t2m", cases, noise_std=NOISE_K, data_range=float(xt.max() - xt.min()),
                    weights=truth.area_weights())


def control_variate(n: int = 16, repeats: int = 32, sigma_min: float | None = None) -> dict:
    from geoinv import io
    from geoinv.flows import dsm_bound
    from geoinv.flows._train import load_flow_config
    from geoinv.training._data import load_split, train_val

    cfg = load_flow_config("configs/flow-bunny-mnist.yaml")
    prior = io.load_shipped_prior("bunny-mnist")
    split = load_split(cfg.data, "train")
    x = train_val(cfg.data, split.x, cfg.train.seed)[1][:n].float()
    smin = cfg.train.sigma_min if sigma_min is None else sigma_min
    out = {"n": n, "repeats": repeats, "sigma_min": smin}
    for name, control in (("plain", None), ("control_variate", prior.base)):
        g = torch.Generator().manual_seed(0)
        vals, grads = [], []
        for _ in range(repeats):
            xr = x.clone().requires_grad_(True)
            b = dsm_bound(prior, xr, sigma_min=smin, sigma_max=cfg.train.sigma_max,
                          control=control, generator=g)
            (gx,) = torch.autograd.grad(b.sum(), xr)
            vals.append(b.detach())
            grads.append(gx)
        est, gr = torch.stack(vals), torch.stack(grads)
        # value: spread over draws (up to an x-independent constant, so only the spread is comparable);
        # gradient (what training sees): total variance over draws vs the squared norm of its mean
        out[name] = {"value_sd_per_digit": float(est.std(0).mean()),
                     "grad_total_variance": float(gr.var(0).sum(dim=(1, 2)).mean()),
                     "grad_mean_sq_norm": float((gr.mean(0) ** 2).sum(dim=(1, 2)).mean())}
    out["grad_variance_ratio"] = out["plain"]["grad_total_variance"] / out["control_variate"]["grad_total_variance"]
    return out


def refine_scan(n: int = 20, scales=(0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0), steps=None) -> dict:
    """Untrained-flow mean PSNR on validation digits per ``refine_scale`` (or, with ``steps``, per ``refine_steps``)."""
    import dataclasses
    import time

    from geoinv import io, metrics
    from geoinv.bench._bunny import make_val_case
    from geoinv.flows import flow_for_prior

    prior = io.load_shipped_prior("bunny-mnist")
    flow = flow_for_prior(prior)
    out = {"n": n}
    c_shipped = flow.config.refine_scale
    for missing in (0.3, 0.6, 0.8):
        truth, observed, mask = make_val_case(n, missing, seed=0)
        x = truth.point_values().double()
        y = torch.nan_to_num(observed.point_values().float(), nan=0.0)
        row = {}
        variants = ([(c_shipped, st) for st in steps] if steps else [(c, (1.0,)) for c in scales])
        for c, st in variants:
            flow.config = dataclasses.replace(flow.config, base="refined" if c > 0 else "gaussian",
                                              refine_scale=c or 1.0, refine_steps=st)
            with torch.no_grad():
                t0 = time.perf_counter()
                base = flow.decode(flow.condition(y, mask).mean_u)
                ms = 1e3 * (time.perf_counter() - t0) / n
            key = ",".join(f"{f:g}" for f in st) if steps else c
            row[key] = float(metrics.psnr(base.double(), x, data_range=1.0).mean())
            if steps:
                row[f"{key} ms/measurement"] = ms
        out[f"{missing:.0%}"] = row
        print(missing, json.dumps(row))
    return out


def uk_gaussian_ranks(n: int = 20) -> dict:
    """OI (exact Gaussian posterior mean) PSNR on the sphere-bench cases vs the PPCA rank and the fitted hours."""
    import geoinv
    from geoinv import masks, metrics
    from geoinv.bench import _common
    from geoinv.bench._sphere import MISSING, NOISE_K, uk_split
    from geoinv.priors import GaussianPrior

    train, test = uk_split()
    xt = train.point_values().double()
    idx = torch.linspace(0, test.batch_size - 1, n).round().long()
    truth = test.with_point_values(test.point_values()[idx])
    mask = masks.random(truth, missing=MISSING, seed=0, n=n)
    obs = _common.noisy_observation(truth, mask, NOISE_K, 0)
    out = {}
    for hours in (518, 576):  # the prior's fit part (validation hours held out) / all training hours
        for rank in (128, 256, 384, None):
            gp = GaussianPrior.fit(train.with_point_values(xt[:hours]), rank=rank)
            post = geoinv.solve(obs, mask, method="gaussian", prior=gp, noise_std=NOISE_K)
            out[f"{hours} h, rank {rank or 'full'}"] = float(metrics.psnr(
                post.mean.point_values().double(), truth.point_values().double(),
                data_range=float(xt.max() - xt.min())).mean())
    print(json.dumps(out, indent=1))
    return out


def throughput(threads: int = 2) -> dict:
    """``flow_throughput`` at 4,140 points on ``threads`` torch threads, without and with complement noise."""
    torch.set_num_threads(threads)
    from geoinv.flows._bench import flow_throughput

    out = {"plain": flow_throughput(), "floor": flow_throughput(floor=1e-4)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["throughput"]:
        throughput(*[int(a) for a in sys.argv[2:3]])
        sys.exit()
    if sys.argv[1:2] == ["uk-ranks"]:
        uk_gaussian_ranks()
        sys.exit()
    if sys.argv[1:2] == ["uk"]:
        print(json.dumps(uk(*[int(a) for a in sys.argv[2:3]]), indent=1))
        sys.exit()
    if sys.argv[1:2] == ["refine-steps"]:
        sched = [(1.0,), (1.0, 0.5), (1.0, 0.5, 0.25), (1.0, 0.6, 0.35), (1.0, 0.6, 0.35, 0.2)]
        print(json.dumps(refine_scan(*[int(a) for a in sys.argv[2:3]], steps=sched), indent=1))
        sys.exit()
    if sys.argv[1:2] == ["refine"]:
        print(json.dumps(refine_scan(*[int(a) for a in sys.argv[2:3]]), indent=1))
        sys.exit()
    if sys.argv[1:2] == ["cv"]:
        args = [int(a) for a in sys.argv[2:4]] + [float(a) for a in sys.argv[4:5]]
        print(json.dumps(control_variate(*args), indent=1))
        sys.exit()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    th = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(json.dumps(main(n, th), indent=1))
