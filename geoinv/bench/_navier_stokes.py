"""Navier-Stokes benchmark: EnKG vs DPS (gradients through the solver) vs EKI on held-out fields.

The InverseBench / EnKG "fluid" problem at 64x64 on CPU: recover the initial vorticity
``w0`` (a GRF evolved 5 time units at Re 200) from ``w(T = 1)`` sub-sampled 2x in each
direction. Everything runs in one process with ``torch.set_num_threads(1)``-style budgets
sized for a shared 2-core machine.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRIOR = "navier-stokes"
RESOLUTION = 64
#: CFL factor of the benchmark's forward model (observations and inversions alike; see NavierStokes2D)
BENCH_CFL = 0.5

#: method budgets (full, quick)
BUDGETS = {
    "enkg": ({"n_samples": 64, "num_steps": 24, "num_updates": 1, "max_ode_steps": 2, "guidance_scale": 2.0},
             {"n_samples": 16, "num_steps": 10, "num_updates": 1, "max_ode_steps": 2, "guidance_scale": 2.0}),
    "dps": ({"n_samples": 1, "num_steps": 30, "step_size": 0.3},
            {"n_samples": 1, "num_steps": 10, "step_size": 0.3}),
    "eki": ({"n_samples": 64, "num_iters": 20, "guidance_scale": 1.0},
            {"n_samples": 16, "num_iters": 4, "guidance_scale": 1.0}),
}
#: largest noise level of the diffusion samplers (normalized data std is about 0.5: 20 data stds)
SIGMA_MAX = 10.0


def make_operator(noise_std: float = 0.0, differentiable: bool = False):
    """The benchmark's observation operator (64x64, T = 1, stride 2, ``x = w / 10``)."""
    from geoinv.operators import NavierStokes2D, NavierStokesObservation

    return NavierStokesObservation(RESOLUTION, noise_std=noise_std, differentiable=differentiable,
                                   solver=NavierStokes2D(RESOLUTION, cfl=BENCH_CFL))


def make_methods(quick: bool, budgets: dict | None = None):
    """``[(name, sampler, n_samples, needs_grad_operator, prior_kind)]``."""
    from geoinv.samplers import DPS, EKI, EnKG

    b = {k: dict(v[1 if quick else 0]) for k, v in BUDGETS.items()}
    for k, v in (budgets or {}).items():
        b[k].update(v)
    e, d, k = b["enkg"], b["dps"], b["eki"]
    return [
        ("enkg", EnKG(num_steps=e["num_steps"], num_updates=e["num_updates"], max_ode_steps=e["max_ode_steps"],
                      guidance_scale=e["guidance_scale"], sigma_max=SIGMA_MAX), e["n_samples"], False, "diffusion"),
        ("dps", DPS(num_steps=d["num_steps"], step_size=d["step_size"], step_rule="norm", sigma_max=SIGMA_MAX), d["n_samples"], True,
         "diffusion"),
        ("eki", EKI(num_iters=k["num_iters"], guidance_scale=k["guidance_scale"]), k["n_samples"], False, "grf"),
    ]


#: the 32 x 32 observation grid resolves the modes with max(|kx|, |ky|) < FINE_K; finer scales of w0 (1.6-4 % of its
#: energy on the test fields) can only come from the prior and from what the dynamics alias into the coarse ones
FINE_K = 16


def _metrics(samples: torch.Tensor, x: torch.Tensor, fine_k: int = FINE_K) -> dict:
    """Relative L2 (per particle, mean; of the ensemble mean, and its part at scales ``max(|kx|, |ky|) >= fine_k``)
    and spread vs error, physical-unit-free."""
    from geoinv.metrics import band_relative_l2

    s = samples.double().flatten(1)
    t = x.double().flatten()
    nt = float(t.norm())
    per = (s - t).norm(dim=1) / nt
    mean = s.mean(0)
    n = math.isqrt(t.numel())
    out = {"rel_l2": float(per.mean()), "rel_l2_mean": float((mean - t).norm() / nt),
           "rel_l2_fine": float(band_relative_l2(mean.reshape(n, n), t.reshape(n, n), (0, fine_k))[1])}
    if s.shape[0] > 1:
        spread = float(s.std(0).pow(2).mean().sqrt())
        rmse = float((mean - t).pow(2).mean().sqrt())
        out["spread"] = spread / float(t.pow(2).mean().sqrt())
        out["spread_skill"] = spread / max(rmse, 1e-12)
    return out


#: observation noise levels of one benchmark run (physical vorticity units; EnKG paper scripts: 0, 1, 2)
NOISE_LEVELS = (0.0, 1.0, 2.0)
#: iterations of the exact-gradient variational reference (Adam, from the training mean), noise 0 only
VAR_ITERS = (300, 30)
#: multiscale Gauss-Newton (geoinv.fluids.multiscale_gauss_newton): Levenberg-Marquardt steps per stage (full:
#: None = DEFAULT_ITERS; quick) and the noise levels it runs at (all: 1.5-2.5 min per field on 2 threads, with the
#: diffusion sampler from it about 3-5 min per field and noise level)
GN_ITERS = (None, 1)
GN_QUICK_STAGES = ((3, 1.0), (8, 4.0), (21, 0.0))
GN_NOISE = NOISE_LEVELS
GN_NAME = "Gauss-Newton (derivative-free)"
#: EnKG warm-started from the Gauss-Newton estimate (x_start, SDEdit): its largest noise level (normalized units,
#: about the estimate's error std; validation fields 2, 3 of seed 2: 0.2 / 0.1 / 0.05 gave 0.154 / 0.147 / 0.152 and
#: 0.189 / 0.178 / 0.185 from 0.162 and 0.196) and its name; EnKG's budget otherwise
WARM_SIGMA = 0.1
WARM_NAME = "enkg from Gauss-Newton"
#: the same start and budget with EnKG's Kalman update (ancestral steps, guidance scale 1, inflation 100 = SCALE**2)
#: and Lagrangian localization (Gaspari-Cohn radius 1.5, each observation at its departure point in the flow of the
#: Gauss-Newton estimate: NavierStokesObservation.localization(radius, flow=...)). Validation fields 0-2 of seed 2
#: (python docs/scripts/ns_diagnostics.py warm 3 0.1 64 24 2 kalman 1.5 0 100 2 - 1): 0.266 / 0.282 / 0.121 against
#: 0.271 / 0.286 / 0.142 unlocalized
WARM_LOC = {"radius": 1.5, "inflation": 100.0}
WARM_LOC_NAME = "enkg from Gauss-Newton, Kalman + Lagrangian localization"
#: diffusion posterior sampling in the Gauss-Newton linearization (geoinv.fluids.gauss_newton_diffusion), from the
#: Gauss-Newton estimate: chains and steps (full, quick); sigma_max and lam = 1 are the function's defaults. The
#: denoiser is averaged over geoinv.fluids.GND_SYMMETRIES of the Kolmogorov flow (geoinv.priors.SymmetrizedPrior).
#: Validation fields 0-7 of seed 2 (python docs/scripts/ns_diagnostics.py gnd 8), ensemble mean: 0.166 with 16
#: chains, sigma_max 0.1 and no averaging; 0.157 with sigma_max 0.2, 0.156 with 0.3; 0.152 with the 4 maps; 0.149
#: with 32 chains as well (the 8,000-step prior; fields 0-3 with the shipped 16,000-step prior: 0.143)
GND_BUDGET = ({"n_samples": 32, "num_steps": 40}, {"n_samples": 4, "num_steps": 10})
GND_NAME = "Gauss-Newton + diffusion (linearized)"
#: the same sampler run again, linearized at its first pass's mean (``assimilate(..., passes=2)``), at noise 0 only:
#: validation fields 0-3 of seed 2 (python docs/scripts/ns_diagnostics.py refine 4) 0.180 / 0.209 / 0.080 / 0.104
#: -> 0.171 / 0.202 / 0.079 / 0.104 (mean 0.1433 -> 0.1390); at noise std 1 it did not help (docs/fluids.md)
GND2_NAME = "Gauss-Newton + diffusion, re-linearized at its mean (2 passes)"


def _oracle_name(k: int) -> str:
    """The name of the oracle row that keeps the truth's modes ``max(|kx|, |ky|) < k`` and nothing finer."""
    return f"oracle: the truth's scales k < {k}, nothing finer"


ORACLE_NAME = _oracle_name(FINE_K)


def variational_fit(operator, y: torch.Tensor, x_init: torch.Tensor, iters: int, lr: float = 0.02) -> torch.Tensor:
    """Least squares ``min_x ||A(x) - y||^2`` by Adam with exact gradients (a 4D-Var-like reference).

    Not a method of geoinv: it shows how the data misfit landscape looks from the prior
    mean (the misfit falls while the error grows when the problem is non-convex).

    Parameters
    ----------
    operator : differentiable Operator
    y : Tensor, shape (1, M)
    x_init : Tensor, shape (1, N, C)
    iters : int
    lr : float

    Returns
    -------
    Tensor, shape of ``x_init``, float64, detached
    """
    z = x_init.detach().clone().double().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(iters):
        loss = (operator(z) - y).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return z.detach()


#: per-field keys averaged over the fields of one (noise level, method)
_AVERAGED = ("rel_l2", "rel_l2_mean", "rel_l2_fine", "spread", "spread_skill", "misfit_ratio", "forward_rounds",
             "n_forward", "n_forward_surrogate", "nfe", "seconds")


def _summary(per_field: list[dict]) -> list[dict]:
    """One row per (noise level, method), in order of appearance: means over the fields that did not fail of
    ``_AVERAGED``, the sd over fields of ``rel_l2``, the number of fields and of failures."""
    rows = []
    for noise_std, name in dict.fromkeys((r["noise_std"], r["method"]) for r in per_field):
        rs = [r for r in per_field if r["method"] == name and r["noise_std"] == noise_std]
        agg = {"noise_std": noise_std, "method": name, "J": rs[0].get("J"), "n_fields": len(rs),
               "failed": sum("failed" in r for r in rs)}
        rs = [r for r in rs if "failed" not in r]
        for key in _AVERAGED:
            vals = [r[key] for r in rs if key in r]
            agg[key] = sum(vals) / len(vals) if vals else None
        vals = [r["rel_l2"] for r in rs]
        agg["rel_l2_sd"] = ((sum((v - agg["rel_l2"]) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
                            if vals else None)
        rows.append(agg)
    return rows


def _columns(fine_k: int) -> list[tuple[str, str, str]]:
    """The result table's columns ``(key, header, format)``; ``fine_k``: the band edge of ``rel_l2_fine``."""
    return [("noise_std", "noise std", "g"), ("method", "method", ""), ("J", "J (particles)", "d"),
            ("failed", "failed fields", "d"), ("rel_l2", "rel. L2 (mean over particles)", ".3f"),
            ("rel_l2_sd", "± sd over fields", ".3f"), ("rel_l2_mean", "rel. L2 of ensemble mean", ".3f"),
            ("rel_l2_fine", f"its part at k >= {fine_k}", ".3f"),
            ("misfit_ratio", "data misfit / misfit of mean", ".2f"),
            ("spread", "spread / rms(x)", ".3f"), ("spread_skill", "spread / error", ".2f"),
            ("forward_rounds", "sequential forward rounds", ".0f"), ("n_forward", "forward evals", ".0f"),
            ("nfe", "denoiser evals", ".0f"), ("seconds", "wall s / field", ".0f")]


def run(*, quick: bool = False, n_test: int | None = None, seed: int = 0, progress: bool = True,
        noise_levels: tuple[float, ...] = NOISE_LEVELS, budgets: dict | None = None,
        img_dir: str | Path | None = "docs/img", prior=None) -> dict:
    """``geoinv bench navier-stokes``: EnKG, DPS and EKI side by side on held-out initial fields.

    Every method sees the same fields and measurements at each noise level in
    ``noise_levels``; two references put the numbers in context: the training mean
    (rel. L2 about 1: no skill) and, at noise 0, :func:`variational_fit` from that mean.
    """
    from geoinv.bench import markdown_table
    from geoinv.fluids import (DEFAULT_ITERS, GND_SYMMETRIES, SCALE, GRFEnsemble, StationaryGaussian,
                               gauss_newton_diffusion, load_fields, multiscale_gauss_newton)
    from geoinv.operators import kolmogorov_symmetries
    from geoinv.priors import SymmetrizedPrior

    if prior is None:
        from geoinv.io import load_shipped_prior

        prior = load_shipped_prior(PRIOR)
    if hasattr(prior, "eval"):
        prior.eval()
    n = n_test or (1 if quick else 5)
    w_test = load_fields("test", RESOLUTION)[:n]
    x_all = (w_test / SCALE).reshape(n, -1, 1).double()
    w_train = load_fields("train", RESOLUTION)
    stationary = StationaryGaussian.fit(w_train.double() / SCALE)
    x_mean = stationary.mean.reshape(1, -1, 1)
    grf = GRFEnsemble(RESOLUTION, std=float(w_train.std()))   # EKI's prior amplitude: the training fields
    methods = make_methods(quick, budgets)
    var_iters = VAR_ITERS[1 if quick else 0]
    gnd_prior = SymmetrizedPrior(prior, *kolmogorov_symmetries(RESOLUTION, **GND_SYMMETRIES))
    warm = [(WARM_NAME, dataclasses.replace(methods[0][1], sigma_max=WARM_SIGMA), *methods[0][2:])]
    per_field = []
    for noise_std in noise_levels:
        op = make_operator(noise_std)
        op_grad = make_operator(noise_std, differentiable=True)
        for i in range(n):
            x = x_all[i:i + 1]
            y = op.measure(x, torch.Generator().manual_seed(10_000 * seed + i + int(1000 * noise_std)))
            base = {"field": i, "noise_std": noise_std}
            with torch.no_grad():
                ref_misfit = (op(x_mean) - y).norm()  # the training mean's data misfit, for misfit_ratio

            @torch.no_grad()
            def ratio(v, x=x, y=y, ref=ref_misfit):  # data misfit of an estimate / the training mean's
                return float((op(v.reshape(x.shape)) - y).norm() / ref)

            def sample_row(name, res, secs, x=x, base=base):  # a SampleResult's metrics and cost
                return {**base, "method": name, "J": res.samples.shape[0], **_metrics(res.samples, x[0]),
                        "misfit_ratio": ratio(res.mean), "forward_rounds": res.forward_rounds,
                        "n_forward": res.n_forward, "nfe": res.nfe, "seconds": secs}
            per_field.append({**base, "method": "training mean", **_metrics(x_mean[0][None], x[0]), "misfit_ratio": 1.0})
            # the truth's own modes below FINE_K and nothing finer: its error is the truth's fine-scale part
            fine = _metrics(torch.zeros_like(x[0])[None], x[0])["rel_l2_fine"]
            per_field.append({**base, "method": ORACLE_NAME, "rel_l2": fine, "rel_l2_mean": fine, "rel_l2_fine": fine})
            if noise_std == 0:
                t0 = time.perf_counter()
                v = variational_fit(op_grad, y, x_mean, var_iters)
                per_field.append({**base, "method": f"variational ({var_iters} Adam its)", **_metrics(v[0][None], x[0]),
                                  "misfit_ratio": ratio(v), "seconds": time.perf_counter() - t0})
            estimates = {}
            if noise_std in GN_NOISE:
                gn = multiscale_gauss_newton(y, op, stationary, iters=GN_ITERS[1 if quick else 0], progress=progress,
                                             **({"stages": GN_QUICK_STAGES} if quick else {}))
                per_field.append({**base, "method": GN_NAME, **_metrics(gn.x[0][None], x[0]), "misfit_ratio": ratio(gn.x),
                                  "forward_rounds": gn.forward_rounds, "n_forward": gn.n_forward, "nfe": 0,
                                  "seconds": gn.seconds})
                estimates["gn"] = gn.x
                log.info("noise %g field %d Gauss-Newton: rel L2 %.3f in %.0f s", noise_std, i,
                         per_field[-1]["rel_l2"], gn.seconds)
                gen = torch.Generator().manual_seed(seed * 7919 + i)
                res = gauss_newton_diffusion(y, op, stationary, gnd_prior, gn.x, progress=progress, generator=gen,
                                             **GND_BUDGET[1 if quick else 0])
                per_field.append(sample_row(GND_NAME, res, res.seconds))
                estimates["gnd"] = res
                log.info("noise %g field %d %s: rel L2 %.3f (mean %.3f) in %.0f s", noise_std, i, GND_NAME,
                         per_field[-1]["rel_l2"], per_field[-1]["rel_l2_mean"], res.seconds)
                if noise_std == 0:  # a second pass (assimilate's passes=2); its cost: both passes
                    res2 = gauss_newton_diffusion(y, op, stationary, gnd_prior, res.mean[None], progress=progress,
                                                  generator=gen, **GND_BUDGET[1 if quick else 0])
                    per_field.append({**sample_row(GND2_NAME, res2, res.seconds + res2.seconds),
                                      "n_forward": res.n_forward + res2.n_forward, "nfe": res.nfe + res2.nfe,
                                      "forward_rounds": res.forward_rounds + res2.forward_rounds})
                    log.info("noise %g field %d %s: rel L2 %.3f (mean %.3f) in %.0f s", noise_std, i, GND2_NAME,
                             per_field[-1]["rel_l2"], per_field[-1]["rel_l2_mean"], res2.seconds)
            warm_here = []
            if "gn" in estimates:
                loc = op.localization(WARM_LOC["radius"], flow=estimates["gn"])
                warm_here = warm + [(WARM_LOC_NAME, dataclasses.replace(
                    warm[0][1], update="kalman", stochastic=True, guidance_scale=1.0, inflation=WARM_LOC["inflation"],
                    localization=loc), *warm[0][2:])]
            for name, sampler, j, grad, kind in methods + warm_here:
                g = torch.Generator().manual_seed(seed * 7919 + i)
                t0 = time.perf_counter()
                try:
                    res = sampler(y, op_grad if grad else op, grf if kind == "grf" else prior, n_samples=j,
                                  generator=g, progress=progress,
                                  x_start=estimates["gn"] if name in (WARM_NAME, WARM_LOC_NAME) else None)
                except (ArithmeticError, ValueError, RuntimeError) as exc:  # NonFiniteError: the solver blew up
                    log.warning("noise %g field %d %s failed: %s", noise_std, i, name, exc)
                    per_field.append({**base, "method": name, "J": j, "failed": str(exc)[:200],
                                      "seconds": time.perf_counter() - t0})
                    continue
                secs = time.perf_counter() - t0
                per_field.append(sample_row(name, res, secs))
                estimates[name] = res
                log.info("noise %g field %d %s: rel L2 %.3f (mean %.3f) in %.0f s", noise_std, i, name,
                         per_field[-1]["rel_l2"], per_field[-1]["rel_l2_mean"], secs)
            if i == 0 and noise_std == noise_levels[0] and img_dir is not None:
                _picture(w_test[0], y, estimates, Path(img_dir) / "navier_stokes.png")
    rows, cols = _summary(per_field), _columns(FINE_K)
    cfg = {name: s.config() for name, s, *_ in methods}
    gn_where = ("" if set(noise_levels) <= set(GN_NOISE)
                else f" (noise {', '.join(f'{v:g}' for v in GN_NOISE)} only, for time)")
    gnd_sigma_max = inspect.signature(gauss_newton_diffusion).parameters["sigma_max"].default
    md = (
        f"Recover the initial vorticity `w0` (64x64, normalized `x = w0 / 10`) of {n} held-out fields of "
        f"`geoinv datasets navier-stokes` (test split, disjoint seed) from `w(T = 1)` sub-sampled 2x "
        f"(32x32 values), noise std {', '.join(f'{v:g}' for v in noise_levels)} (physical units); Re 200, "
        f"Kolmogorov forcing, forward model `NavierStokes2D(64, cfl={BENCH_CFL})` (about 85 steps per solve; "
        f"4.6 % from a converged solve, the same model generates and inverts the data). Relative L2 in physical "
        f"units, averaged over fields; `spread / error` = RMS ensemble std / RMS error of the ensemble mean "
        f"(1 = calibrated); `data misfit / misfit of mean` = `||A(estimate) - y|| / ||A(training mean) - y||`. "
        f"References: `training mean` (the mean of the training fields: no skill, rel. L2 about 1) and, at noise 0, "
        f"`variational` (Adam on `||A(x) - y||^2` with exact gradients through the solver, from the training mean). "
        f"`{ORACLE_NAME}`: every Fourier mode of the true `w0` with `max(|kx|, |ky|) < {FINE_K}` (the band the 32x32 "
        f"observation grid resolves) and none finer, so its error is the truth's fine-scale part; `its part at "
        f"k >= {FINE_K}` is the same restriction of each estimate's error (of the ensemble mean; squares add up: "
        f"coarse part^2 + fine part^2 = total^2). "
        f"`{GN_NAME}`{gn_where}: "
        f"`geoinv.fluids.multiscale_gauss_newton`, "
        f"Levenberg-Marquardt with finite-difference Jacobians (one batched forward call of the black box per step) "
        f"in growing Fourier subspaces and a low-pass continuation of the residual, stationary Gaussian prior fitted "
        f"to the training fields, {GN_ITERS[1 if quick else 0] or DEFAULT_ITERS} steps per stage; no gradients, no "
        f"diffusion prior. `{WARM_NAME}`: EnKG with the budget of the `enkg` row started at the Gauss-Newton estimate "
        f"noised to `sigma_max = {WARM_SIGMA}` (`x_start`, SDEdit) instead of pure noise at {SIGMA_MAX:g}: the "
        f"diffusion prior refines the Gaussian MAP; its cost column does not include the Gauss-Newton's. "
        f"`{WARM_LOC_NAME}`: the same start and budget with EnKG's Kalman update (ancestral steps, guidance scale 1, "
        f"inflation {WARM_LOC['inflation']:g}) and covariance localization of radius {WARM_LOC['radius']:g} with each "
        f"observation placed at its departure point in the flow of the Gauss-Newton estimate "
        f"(`NavierStokesObservation.localization(radius, flow=estimate)`). "
        f"`{GND_NAME}`: `geoinv.fluids.gauss_newton_diffusion` from the Gauss-Newton estimate, "
        f"{GND_BUDGET[1 if quick else 0]['n_samples']} chains of {GND_BUDGET[1 if quick else 0]['num_steps']} steps "
        f"from the estimate noised to `sigma_max = {gnd_sigma_max}` "
        f"that denoise with the diffusion prior (averaged over {gnd_prior.evals_per_call} symmetries of the flow, "
        f"counted in its denoiser evals) and draw from the Gaussian conditional of the forward model "
        f"linearized at the estimate (`geoinv.fluids.linearize`: finite differences along the whitened Fourier modes "
        f"of the de-aliased band, one batched call of p + 1 solves, its `n_forward`; the "
        f"Gauss-Newton's cost not included); J = its chains. `{GND2_NAME}` (noise 0 only): the same sampler run "
        f"again, linearized at the first pass's mean (`geoinv.fluids.assimilate(..., passes=2)`); its cost columns "
        f"count both passes. "
        f"Budgets were sized (on 1 torch thread) so that EnKG stays well under 10 min per field on 2 CPU cores: far "
        f"fewer particles and steps than the reference (J = 2048, 80 steps, 142 forward rounds on an A100).\n\n"
        + markdown_table(rows, cols)
        + "\n\nSettings: " + "; ".join(f"`{k}`: " + ", ".join(f"{a}={v}" for a, v in c.items() if v is not None)
                                       for k, c in cfg.items())
        + f". EKI prior ensemble: {grf.name} (divided by 10). DPS: `step_rule='norm'`, "
          "gradients by autograd through the solver (adaptive steps held fixed). Reading: compare every row with "
          "`training mean` (no skill); docs/fluids.md measures why T = 1 defeats the ensemble and gradient samplers "
          "on these budgets (a 10 % change of `w0` moves `w(T = 1)` by 39 %), why fitting the coarse scales first "
          "(the Gauss-Newton row) finds the basin, why the stationary Gaussian then caps the error near 0.2 and the "
          "diffusion prior in the linearization goes below it, why noise makes the Gauss-Newton start too far from "
          "the truth for the linearization to hold, and where EnKG with covariance localization does work (shorter "
          "horizons)."
    )
    if img_dir is not None:
        md += "\n\n![Navier-Stokes](img/navier_stokes.png)"
    return {"rows": rows + [{"per_field": per_field}], "markdown": md}


def run_noise_free(*, quick: bool = False, n_test: int | None = None, seed: int = 0, progress: bool = True,
                   prior=None) -> dict:
    """``geoinv bench navier-stokes-10``: :func:`run` at noise 0 on 10 held-out fields, InverseBench's protocol.

    The first five fields and their seeds are those of ``geoinv bench navier-stokes``, so its noise-0 rows are
    reproduced field by field; the other five were never used to choose a setting. No picture.
    """
    n = n_test or (1 if quick else 10)
    res = run(quick=quick, n_test=n, seed=seed, progress=progress, noise_levels=(0.0,), img_dir=None, prior=prior)
    lead = (f"The noise-free problem on {n} held-out fields (InverseBench reports its Navier-Stokes results on 10 test "
            f"fields); fields 0-4 and their seeds are the `navier-stokes` section's. ")
    return {**res, "markdown": lead + res["markdown"]}


#: the 128 x 128 option (``geoinv bench navier-stokes-128``): InverseBench's own grid, w(T = 1) observed at 64 x 64
#: values, solved by geoinv.fluids.assimilate's multi-fidelity path with the shipped 64 x 64 prior; its options in a
#: quick run (no fine Jacobian: the sampler's linearization in the band max(|kx|, |ky|) <= 4 only)
FINE_RESOLUTION = 128
FINE_QUICK = {"stages": GN_QUICK_STAGES, "iters": 1, "refine": 0, "band": 4}
FINE_NAME = "Gauss-Newton + diffusion, multi-fidelity (geoinv.fluids.assimilate)"
#: the issue's time budget per field (2 CPU cores)
BUDGET_SECONDS = 600.0


def _budget_sentence(per_field: list[dict], name: str) -> str:
    """How the wall times of ``name``'s fields compare with :data:`BUDGET_SECONDS` (from the measured rows)."""
    secs = [r["seconds"] for r in per_field if r["method"] == name and "seconds" in r]
    if not secs:
        return "No field finished, so the time budget is not measured."
    within = sum(s <= BUDGET_SECONDS for s in secs)
    verdict = "met on every field" if within == len(secs) else f"met on {within} of {len(secs)} fields"
    return (f"The issue's budget of {BUDGET_SECONDS / 60:.0f} min per field on 2 CPU cores is {verdict} "
            f"({min(secs):.0f}-{max(secs):.0f} s per field, mean {sum(secs) / len(secs):.0f} s).")


def run_fine(*, quick: bool = False, n_test: int | None = None, seed: int = 0, progress: bool = True,
             prior=None, img_dir: str | Path | None = "docs/img") -> dict:
    """``geoinv bench navier-stokes-128``: the noise-free problem on InverseBench's 128 x 128 grid.

    Held-out fields generated at 128 x 128 with the test split's seeds (disjoint from the training fields'), each
    observed at T = 1 on every other grid point (64 x 64 values, noise 0) by ``NavierStokes2D(128)``, and recovered
    by :func:`geoinv.fluids.assimilate` with the shipped 64 x 64 prior (its multi-fidelity path: the Gauss-Newton
    on the 64 x 64 solver, ``refine`` rounds of fresh fine Jacobians and secant steps through the 128 x 128 black
    box, then the diffusion sampler linearized there). References: the training mean and the oracle that keeps
    the truth's modes the observation resolves (``max(|kx|, |ky|) < 32``).
    """
    from types import SimpleNamespace

    from geoinv.bench import markdown_table
    from geoinv.fluids import MULTI_FIDELITY, SCALE, StationaryGaussian, assimilate, generate, load_fields
    from geoinv.fluids._data import SEEDS
    from geoinv.operators import NavierStokes2D, NavierStokesObservation, SpectralLift

    n = n_test or (1 if quick else 5)
    op = NavierStokesObservation(FINE_RESOLUTION, solver=NavierStokes2D(FINE_RESOLUTION, cfl=BENCH_CFL))
    fine_k = op.obs_shape[0] // 2                              # the observed 64 x 64 values resolve |k| < 32
    budget = GND_BUDGET[1 if quick else 0]
    w_test = generate(n, FINE_RESOLUTION, SEEDS["test"], progress=progress)
    stationary = StationaryGaussian.fit(load_fields("train", RESOLUTION).double() / SCALE)
    x_mean = SpectralLift(op, RESOLUTION).lift(stationary.mean.reshape(1, -1, 1))   # (1, 128 * 128, 1)
    per_field = []
    for i in range(n):
        x = (w_test[i] / SCALE).double().reshape(1, -1, 1)
        with torch.no_grad():
            y = op(x)
            ref_misfit = (op(x_mean) - y).norm()
        base = {"field": i, "noise_std": 0.0}
        per_field.append({**base, "method": "training mean", **_metrics(x_mean[0][None], x[0], fine_k),
                          "misfit_ratio": 1.0})
        oracle = _metrics(torch.zeros_like(x[0])[None], x[0], fine_k)["rel_l2_fine"]
        per_field.append({**base, "method": _oracle_name(fine_k),
                          "rel_l2": oracle, "rel_l2_mean": oracle, "rel_l2_fine": oracle})
        post = assimilate(y, op, prior=PRIOR if prior is None else prior, gauss=stationary,
                          n_samples=budget["n_samples"], num_steps=budget["num_steps"],
                          generator=torch.Generator().manual_seed(seed * 7919 + i), progress=progress,
                          **(FINE_QUICK if quick else {}))
        mean = post.samples.mean(0, keepdim=True)
        with torch.no_grad():
            misfit = float((op(mean) - y).norm() / ref_misfit)
        st = post.stats
        per_field.append({**base, "method": FINE_NAME, "J": post.samples.shape[0],
                          **_metrics(post.samples, x[0], fine_k), "misfit_ratio": misfit,
                          **{k: st[k] for k in ("forward_rounds", "n_forward", "n_forward_surrogate", "nfe",
                                                "seconds", "gauss_newton_seconds")}})
        log.info("field %d %s: rel L2 %.3f (mean %.3f) in %.0f s", i, FINE_NAME, per_field[-1]["rel_l2"],
                 per_field[-1]["rel_l2_mean"], st["seconds"])
        if i == 0 and img_dir is not None:
            _picture(w_test[0], y, {"gnd": SimpleNamespace(mean=mean[0])}, Path(img_dir) / "navier_stokes_128.png")
    rows = _summary(per_field)
    cols = _columns(fine_k)
    cols.insert(-3, ("n_forward_surrogate", "64 x 64 surrogate evals", ".0f"))
    opts = {**MULTI_FIDELITY, **(FINE_QUICK if quick else {})}
    md = (
        f"The noise-free problem on InverseBench's own grid: {n} held-out initial vorticities `w0` generated at "
        f"128 x 128 with the test split's seeds (`geoinv.fluids.generate(n, 128, seed={SEEDS['test']})`, disjoint "
        f"from the training fields), observed at T = 1 on every other grid point ({op.obs_shape[0]} x {op.obs_shape[1]} "
        f"values) by `NavierStokes2D(128, cfl={BENCH_CFL})`, Re 200, Kolmogorov forcing. `{FINE_NAME}`: the shipped "
        f"64 x 64 prior (no 128 x 128 prior is trained), the unknown kept on the 64 x 64 grid and interpolated "
        f"spectrally before every call of the 128 x 128 black box (`SpectralLift`); the Gauss-Newton first fits "
        f"every other observed value with the 64 x 64 solver as a cheap surrogate (`64 x 64 surrogate evals`), then "
        f"{opts['refine']} rounds of a fresh Jacobian of the 128 x 128 black box (1,850 solves in one batched call) "
        f"and {opts['broyden']} secant-updated Levenberg-Marquardt steps; the diffusion sampler "
        f"({budget['n_samples']} chains of {budget['num_steps']} steps, denoiser averaged over 4 symmetries of the "
        f"flow) then draws in the 128 x 128 black box linearized at the result. Forward evals count 128 x 128 "
        f"solves; the wall time is the whole pipeline per field. Its samples have no modes at `|k| >= 32`, so "
        f"`its part at k >= {fine_k}` of its error is the truth's own fine part, the oracle's number (far smaller "
        f"than at 64 x 64: here the observation resolves nearly all of the field, and the prior fills little). "
        f"{_budget_sentence(per_field, FINE_NAME)} The three fine Jacobians dominate the time; docs/fluids.md "
        f"measures the cheaper variants, all less accurate. Columns as in `navier-stokes`.\n\n"
        + markdown_table(rows, cols)
        + "\n\nOptions: " + ", ".join(f"{k}={v}" for k, v in opts.items()) + "."
    )
    if img_dir is not None:
        md += "\n\n![Navier-Stokes 128 x 128](img/navier_stokes_128.png)"
    return {"rows": rows + [{"per_field": per_field}], "markdown": md}


def _picture(w0: torch.Tensor, y: torch.Tensor, est: dict, path: Path) -> None:
    """truth | observation | G-N + diffusion | EnKG from G-N | EnKG | DPS | their error maps, physical units."""
    from geoinv.fluids import SCALE
    from geoinv.viz import grid_panels

    n = w0.shape[-1]
    m = math.isqrt(y.shape[1])
    panels = {"true w0": w0, f"observed w(T=1), {m}x{m}": y.reshape(m, m).float()}

    def field(name):
        r = est[name]
        v = r.samples[0] if name == "dps" else r.mean
        return v.reshape(n, n).float() * SCALE

    labels = (("gnd", "G-N + diffusion, mean"), (WARM_NAME, "EnKG from G-N, mean"), ("enkg", "EnKG mean"),
              ("dps", "DPS sample"))
    shown = {label: field(name) for name, label in labels if name in est}
    errors = {label + " error": (f - w0).abs() for label, f in shown.items()}
    panels |= shown | errors
    path.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt

    v = float(w0.abs().max())
    # fields on the truth's range (0 = white); the error maps on one range of their own, so that they compare
    groups = {"vorticity": [k for k in panels if k not in errors], "|error|": list(errors)}
    fig = grid_panels(panels, path, shared=groups, origin="lower", panel_width=2.4, clim=(-v, v))
    plt.close(fig)
