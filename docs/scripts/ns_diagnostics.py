"""Why the 64x64 Navier-Stokes inversion is hard, and EnKG versus ensemble size (docs/fluids.md).

``python docs/scripts/ns_diagnostics.py info [N]``: on the first N held-out fields, the energy
fraction of ``w(T=1)`` the 2x sub-sampled observation cannot resolve, and the relative L2 of
integrating the equations *backwards* (``w -> -w`` with viscosity ``-nu``, fixed step 0.004,
non-black-box, a diagnostic only) from the exact ``w(T)`` and from the observed 32x32 field.

``python docs/scripts/ns_diagnostics.py enkg [N] [J ...]``: EnKG with the settings of
``geoinv bench navier-stokes`` (noise 0) for each J (default 32 128 512) on N validation fields,
with the trajectory (outer step, rms data misfit, rel. L2 of the denoised ensemble mean).

``python docs/scripts/ns_diagnostics.py horizon [N] [J] [RADIUS] [T]``: how the difficulty grows with the
observation time T (0.05, 0.25, 0.5, 1): EnKG (Kalman update, stochastic steps) with J particles
(default 64), without and with covariance localization (``operator.localization(radius)``), on N
validation fields, and the forward model's sensitivity (relative change of ``A(x)`` for a 10 %
perturbation of ``x`` along the difference of two training fields).

``python docs/scripts/ns_diagnostics.py var [N] [ITERS] [SIGMA] [START] [SCALES]``: what exact gradients buy
(4D-Var, not a black-box method): L-BFGS on ``||A(x) - y||^2 / (2 SIGMA^2) + ||xi||^2 / 2`` with
``x = mean + C^(1/2) xi``, ``C`` the stationary (per-Fourier-mode) covariance of the training fields, noise 0,
on N validation fields; relative L2, relative data misfit and gradient evaluations. Started from the training
mean (``START`` 0, default) or,
to tell a bad landscape from missing information, from the truth moved by ``START`` times its norm along the
difference of two training fields. ``SIGMA`` may be a comma-separated schedule (e.g. ``5,2,1,0.5,0.2,0.1,0.05``):
a continuation in the data weight, ``ITERS`` L-BFGS iterations per stage. ``SCALES`` (5th argument, e.g.
``1,2,3,4,6,8,12,0``) is a continuation in scale instead (full-waveform inversion's frequency continuation):
stage ``k`` fits the residual low-passed by ``exp(-|kappa|^2 / (2 K_k^2))`` on the 32 x 32 observation grid
(``0`` = no filter), each ``SIGMA`` stage inside each ``SCALES`` stage.

``python docs/scripts/ns_diagnostics.py learned-var [N] [ITERS] [LR] [LAM]``: the same continuation in the data
weight (``SIGMA`` 5 ... 0.05) with the shipped *learned* prior instead of the stationary Gaussian: Adam on
``xi`` with the data gradient plus ``LAM`` times the smoothed prior's score ``(x - D(x + s eps, s)) / s^2`` at a
prior noise level ``s`` annealed with it (1 ... 0.05; RED-diff), ``ITERS`` steps per stage, from the training mean.

``python docs/scripts/ns_diagnostics.py dps [N] [STEPS] [STEP_SIZE] [RULE]``: DPS (gradients through the solver)
with a longer schedule than the benchmark's 30 steps, noise 0, N validation fields.

``python docs/scripts/ns_diagnostics.py enkg-variant [N] [J] [STEPS] [UPDATES] [SCALE] [K0] [K1] [UPDATE]``: EnKG on
N validation fields with more steps, corrections per step or guidance than the benchmark, optionally with the
residual low-passed from cut-off ``K0`` to ``K1`` (a derivative-free scale continuation; ``K0 = 0``: none), and
``UPDATE`` ``published`` (default) or ``kalman``.

``python docs/scripts/ns_diagnostics.py gn [N] [ITERS] [FD_STEP] [SIGMA]``:
:func:`geoinv.fluids.multiscale_gauss_newton` (Levenberg-Marquardt with finite-difference Jacobians in growing
Fourier subspaces and the same scale continuation, the objective of ``var``; forward evaluations only), ``ITERS``
steps per stage (or a comma-separated count per stage), from the training mean.

``python docs/scripts/ns_diagnostics.py floor [N] [RESOLUTION]``: the information the observation leaves out under
the stationary Gaussian prior: the share of the prior's RMS error that the posterior mean of the problem linearized
at the true field keeps (finite-difference Jacobian in the whitened Fourier modes of the de-aliased band, sigma 0.05
and 0.001), and that times the training mean's error, on N validation fields: the floor of every method with that
prior. ``RESOLUTION`` 128: the same at 128 x 128 (64 x 64 observed values), fresh fields. ``SIGMAS``: the misfit
scales (e.g. ``1,2``: the benchmark's noise levels).

``python docs/scripts/ns_diagnostics.py warm [N] [SIGMA_MAX] [J] [STEPS] [SCALE] [UPDATE] [RADIUS] [LINEARIZED]
[INFLATION] [ODE]``: EnKG warm-started from the Gauss-Newton estimate (``x_start``: the ensemble starts at
``estimate + SIGMA_MAX * eps``, SDEdit) on N validation fields: the diffusion prior refines what the stationary
Gaussian's MAP leaves. ``SCALE``: guidance scale of the published update (2); ``UPDATE`` ``published`` (default) or
``kalman`` (inflation ``INFLATION``, default 100, with covariance localization of radius ``RADIUS`` when > 0);
``LINEARIZED`` 1: EnKG on the black box linearized at the estimate (the forward model of ``gnd``); ``ODE``: EnKG's
``max_ode_steps`` (2; 1 = Tweedie); ``LAGRANGIAN`` 1 (after a placeholder for the Gauss-Newton's ``ITERS``, e.g.
``-``): localization at the observations' departure points in the flow of the estimate.

``python docs/scripts/ns_diagnostics.py gnd [N] [LAM] [SAMPLE] [SIGMA_MAX] [PASSES] [NOISE] [CHAINS] [PRIOR] [SYM]
[BROYDEN]``:
:func:`geoinv.fluids.gauss_newton_diffusion` (CHAINS chains, default 16, 40 steps) from the Gauss-Newton estimate on
N validation fields: ensemble-mean and per-sample relative L2, spread / error; ``SAMPLE`` 0 takes the conditional's
mode instead of a draw; ``PASSES`` > 1 re-linearizes at the previous mean; ``NOISE``: observation noise std
(default 0); ``PRIOR``: a prior checkpoint path instead of the shipped prior (``-``: the shipped one); ``SYM`` 1:
the denoiser averaged over the benchmark's symmetries of the flow; ``BROYDEN`` > 0: that many secant-updated
Gauss-Newton steps from a fresh Jacobian at the estimate before the sampler. Prints the ensemble mean's error at scales
``max(|kx|, |ky|) >= 16`` (finer than the observation grid) too.

``python docs/scripts/ns_diagnostics.py basin [N] [NOISE] [STEPS]``: why the noisy case stays far from the truth, on N
validation fields at noise std ``NOISE`` (default 1): the rms data misfit, ``||xi||^2`` and Gaussian-prior
objective of the Gauss-Newton estimate, of the truth, and of the Gaussian-prior MAP found by ``STEPS`` (default 4)
full-band Gauss-Newton steps *started at the truth* (``x_start``); and the benchmark's Gauss-Newton + diffusion
sampler (32 chains, symmetrized prior) linearized at the estimate (as benchmarked), at the estimate with the misfit
scale inflated by the linearization's own error on the chains (``sqrt(NOISE^2 + r^2)``, ``r`` the rms of ``A(x) -
lin(x)`` over them), and at the truth (an unreachable lower bound: the truth's linearization).

``python docs/scripts/ns_diagnostics.py hop [N] [NOISE] [ROUNDS] [CHAINS]``: a basin hop that the learned prior
proposes and the data select, on N validation fields at noise std ``NOISE`` (default 1): the benchmark's Gauss-Newton +
diffusion sampler (``CHAINS`` chains, default 32, symmetrized prior) linearized at the Gauss-Newton estimate, then
``ROUNDS`` times (default 2) re-linearized at the chain sample with the smallest misfit through the nonlinear black box
and run again from it; per pass the ensemble's errors, the samples' misfits and the rank correlation of misfit and
error.

``python docs/scripts/ns_diagnostics.py refine [N] [SIGMA_MEAN] [SIGMA_SAMPLES] [THREADS]``: whether anything refines
the benchmark's Gauss-Newton + diffusion posterior through the nonlinear black box, on N validation fields (default
4) at noise 0: the benchmark's EnKG started from that posterior's mean noised to ``SIGMA_MEAN`` (default 0.1, J =
64) and from its 32 samples noised to ``SIGMA_SAMPLES`` (default 0.05), and the sampler re-linearized at the mean.

``python docs/scripts/ns_diagnostics.py blocks RESOLUTION MEMBERS [T] [BLOCKS] [REPS] [THREADS]``: wall time per
member of ``NavierStokes2D(RESOLUTION, cfl=0.5).solve`` over ``T`` (default 1) for an ensemble of ``MEMBERS``
(the first test field plus 10 % noise) integrated in blocks of each size in ``BLOCKS`` (comma-separated; default the
solver's own and the whole batch at once), best and median of ``REPS`` interleaved repetitions on ``THREADS`` torch
threads (default 2), and whether every blocking gives the whole batch's solution to the bit.

``python docs/scripts/ns_diagnostics.py gnblocks [BLOCKS] [THREADS]``: wall time of the benchmark's derivative-free
Gauss-Newton (``geoinv.fluids.multiscale_gauss_newton``, 64 x 64, noise 0) on test field 0 with the solver cut into
blocks of each size in ``BLOCKS`` (comma-separated; default the solver's own and 10^6, one call per batch) on
``THREADS`` torch threads (default 2): the end-to-end effect of the blocks where the solver dominates.

``python docs/scripts/ns_diagnostics.py steps [RESOLUTION] [N]``: the CFL-adaptive solver's number of steps to
T = 1 (``cfl = 0.5``) and the RMS vorticity of the first ``N`` test fields (default 5) generated at ``RESOLUTION``
(default 128) with the test split's seeds, the benchmark's fields: a solve's cost is proportional to its steps.

``python docs/scripts/ns_diagnostics.py oracle [N]``: the relative L2 of an estimate that knows every mode the
observation grid resolves and nothing finer (the truth's share beyond it), at 64 x 64 (``k < 16``) and at 128 x 128
(the reference problem, ``k < 32``), N fresh fields each.

``python docs/scripts/ns_diagnostics.py upstream [POINTS] [FIELD]``: where an observed value at T = 1 gets its
sensitivity to ``w0`` (autograd through the solver, ``POINTS`` random observed points of validation field ``FIELD``): its
peak and the share of the squared gradient within distance 1 of the observed point, and within 0.5 / 1 / 2 of the
departure point (``NavierStokes2D.departure_points`` in the true flow); the case for Lagrangian localization.

``python docs/scripts/ns_diagnostics.py symmetry [N]``: denoising MSE of the shipped prior on N validation fields,
plain and averaged over the Kolmogorov flow's symmetries (``geoinv.priors.SymmetrizedPrior``).

``python docs/scripts/ns_diagnostics.py resolution``: the same sensitivity at 64x64 and 128x128 (fresh
GRF fields spun up 5 time units at each resolution; perturbations of 1 % and 10 %), to check that the
amplification is the flow's, not an under-resolution artefact of the 64x64 grid.

Validation fields are ``geoinv.fluids.generate(N, 64, seed=2)``: neither the prior's training
split (seed 0) nor the benchmark's test split (seed 1).

``python docs/scripts/ns_diagnostics.py jac128 [N] [DIRECTIONS] [STEP]``: whether the 64 x 64 scheme's directional derivatives
of the 128 x 128 observation match the 128 x 128 scheme's (the multi-fidelity path's missing shortcut).

``python docs/scripts/ns_diagnostics.py res128 [N] [REFINE] [CHAINS] [BROYDEN] [FIRST] [FRESH]``: the 128 x 128 option
(64 x 64 observed values, noise 0) on N fresh validation fields: the benchmark's Gauss-Newton with the 64 x 64 solver
as a surrogate on every other observed value, ``REFINE`` rounds through the 128 x 128 black box (the unknown on the
64 x 64 grid, spectrally interpolated), each a fresh Jacobian and ``BROYDEN`` secant-updated steps, then the
linearized diffusion sampler there with the shipped prior; errors against the 128 x 128 truth, wall time per stage.
``FIRST`` (fine / a band K / coarse) and ``FRESH`` (1 / 0) measure cheaper Jacobians.
"""

import json
import math
import sys
import time

import torch


def validation_fields(n: int) -> torch.Tensor:
    from geoinv.fluids._data import generate

    return generate(n, 64, seed=2)


def horizon(n: int = 2, j: int = 64, horizons=(0.05, 0.25, 0.5, 1.0), radius: float = 1.0) -> list[dict]:
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import BENCH_CFL, SIGMA_MAX, _metrics
    from geoinv.fluids import SCALE, load_fields
    from geoinv.io import load_shipped_prior
    from geoinv.operators import NavierStokes2D, NavierStokesObservation
    from geoinv.samplers import EnKG

    prior = load_shipped_prior("navier-stokes").eval()
    w = validation_fields(n)
    tr = load_fields("train", 64)[:2 * n].double() / SCALE
    rows = []
    for t in horizons:
        op = NavierStokesObservation(64, t_final=t, solver=NavierStokes2D(64, cfl=BENCH_CFL))
        for i in range(n):
            x = (w[i:i + 1] / SCALE).reshape(1, -1, 1).double()
            y = op(x)
            d = (tr[2 * i] - tr[2 * i + 1]).reshape(1, -1, 1)
            d = 0.1 * d * x.norm() / d.norm()
            sens = float((op(x + d) - y).norm() / y.norm())
            for loc in (None, radius):
                s = EnKG(num_steps=24, num_updates=1, max_ode_steps=1, update="kalman", guidance_scale=1.0,
                         inflation=SCALE**2, stochastic=True, sigma_max=SIGMA_MAX,  # x0 error sigma_i in y units
                         localization=op.localization(loc) if loc else None)
                t0 = time.perf_counter()
                res = s(y, op, prior, n_samples=j, generator=torch.Generator().manual_seed(i))
                row = {"T": t, "field": i, "J": j, "localization": loc, "sensitivity_10pct": round(sens, 3),
                       **{k: round(v, 3) for k, v in _metrics(res.samples, x[0]).items()},
                       "seconds": round(time.perf_counter() - t0, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def info(n: int = 8) -> None:
    torch.set_num_threads(1)
    from geoinv.fluids import load_fields
    from geoinv.operators import NavierStokes2D, spectral_resample

    w = load_fields("test", 64)[:n].double()
    fw = NavierStokes2D(64, cfl=0.5, dtype=torch.float64)
    bw = NavierStokes2D(64, cfl=0.5, dtype=torch.float64)
    bw.nu = -bw.nu
    wt = fw.solve(w, 1.0)
    k = torch.fft.fftfreq(64, 1 / 64).abs()
    kmax = torch.maximum(k[:, None], k[None, :])
    for name, f in (("w0", w), ("w(T)", wt)):
        e = torch.fft.fft2(f).abs() ** 2
        frac = (e * (kmax >= 16)).sum((1, 2)) / e.sum((1, 2))
        print(f"{name}: energy fraction at max(|kx|, |ky|) >= 16 (beyond the 32x32 grid): {float(frac.mean()):.4f}")

    def up(y):  # spectral interpolation of the 32x32 samples to 64x64
        return spectral_resample(y, 64)

    def rel(a, b):
        return ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).mean().item()

    for name, start in (("exact w(T), 64x64", wt), ("observed w(T), 32x32 interpolated", up(wt[:, ::2, ::2]))):
        g = -bw.solve(-start, 1.0, dt=0.004)
        print(f"backward integration from {name}: rel. L2 to w0 {rel(g, w):.3f}")
    print(f"persistence (w0 = interpolated observation): rel. L2 {rel(up(wt[:, ::2, ::2]), w):.3f}")


def resolution(sizes=(64, 128), eps=(0.01, 0.1)) -> list[dict]:
    """Relative change of w(T = 1) for relative perturbations ``eps`` of w0, per grid size."""
    torch.set_num_threads(1)
    from geoinv.fluids import generate
    from geoinv.operators import NavierStokes2D

    rows = []
    for n in sizes:
        ns = NavierStokes2D(n)
        w = generate(4, n, seed=2, solver=ns)
        for i in range(2):
            x, d = w[2 * i], w[2 * i + 1] - w[2 * i]
            for e in eps:
                u = ns.solve(torch.stack([x, x + e * x.norm() * d / d.norm()]), 1.0)
                rows.append({"resolution": n, "field": i, "eps": e,
                             "output_change": float((u[1] - u[0]).norm() / u[0].norm())})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(n: int = 1, sizes=(32, 128, 512)) -> list[dict]:
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import _metrics, make_methods, make_operator
    from geoinv.fluids import SCALE
    from geoinv.io import load_shipped_prior

    prior = load_shipped_prior("navier-stokes").eval()
    enkg = next(m[1] for m in make_methods(False) if m[0] == "enkg")
    op = make_operator(0.0)
    w = validation_fields(n)
    rows = []
    for j in sizes:
        for i in range(n):
            x = (w[i:i + 1] / SCALE).reshape(1, -1, 1).double()
            y = op.measure(x, torch.Generator().manual_seed(i))
            trace = []

            def cb(k, st, x=x, trace=trace):
                if st["misfit"] is not None:
                    m0 = st["x0"].double().mean(0)
                    trace.append((k, round(float(st["misfit"].mean().sqrt()), 1),
                                  round(float((m0 - x[0]).norm() / x.norm()), 3)))

            t0 = time.perf_counter()
            res = enkg(y, op, prior, n_samples=j, generator=torch.Generator().manual_seed(7919 * 0 + i),
                       progress=False, callback=cb)
            row = {"J": j, "field": i, **_metrics(res.samples, x[0]), "seconds": time.perf_counter() - t0,
                   "trace (step, rms misfit, rel L2 of denoised mean)": trace[::4]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _whitening():
    """Training fields (K, 64, 64), normalized, their :class:`~geoinv.fluids.StationaryGaussian` and ``xi -> x``.

    ``x = mean + C^(1/2) xi`` with ``C`` the stationary (per-mode) covariance of the training fields.
    """
    from geoinv.fluids import SCALE, StationaryGaussian, load_fields

    tr = load_fields("train", 64).double().reshape(-1, 64, 64) / SCALE
    g = StationaryGaussian.fit(tr)

    def to_x(v):
        return g.to_x(v).reshape(1, -1, 1)

    return tr, g, to_x


def enkg_variant(n: int = 1, j: int = 64, steps: int = 24, updates: int = 1, scale: float = 2.0,
                 k0: float = 0.0, k1: float = 16.0, update: str = "published") -> list[dict]:
    """EnKG (bench settings otherwise, noise 0) with more steps, updates or guidance, or a scale continuation.

    ``k0 > 0``: the residual ``A(x0) - y`` that the ensemble update sees is low-passed
    (:func:`geoinv.fluids.lowpass`) with a cut-off growing geometrically from ``k0`` to ``k1`` over the first 3/4
    of the steps, unfiltered after (the frequency continuation of the ``var`` command, made derivative-free).
    ``update="kalman"``: the Kalman option (``inflation = SCALE**2``, stochastic steps, ``guidance_scale = 1``).
    """
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import SIGMA_MAX, _metrics, make_operator
    from geoinv.fluids import SCALE, lowpass
    from geoinv.io import load_shipped_prior
    from geoinv.samplers import EnKG

    prior = load_shipped_prior("navier-stokes").eval()
    base = make_operator(0.0)
    n_filt = int(0.75 * steps)
    kw = (dict(update="kalman", guidance_scale=1.0, inflation=SCALE**2, stochastic=True) if update == "kalman"
          else dict(guidance_scale=scale))
    sampler = EnKG(num_steps=steps, num_updates=updates, max_ode_steps=2, sigma_max=SIGMA_MAX, **kw)
    rows = []
    for i, w in enumerate(validation_fields(n)):
        x = (w / SCALE).double().reshape(1, -1, 1)
        y = base(x)

        class Filtered:  # the black box, with the residual it returns low-passed at the current cut-off
            noise_std, kc = 0.0, (k0 or None)

            def __call__(self, v):
                out = base(v).double()
                return lowpass(out - y, self.kc or 0.0, base.obs_shape) + y

        op = Filtered()

        def cb(step, state, op=op):
            op.kc = (k0 * (k1 / k0) ** ((step + 1) / max(n_filt - 1, 1)) if k0 and step + 1 < n_filt else None)

        t0 = time.perf_counter()
        res = sampler(y, op, prior, n_samples=j, generator=torch.Generator().manual_seed(i), callback=cb)
        with torch.no_grad():
            mis = float((base(res.mean.reshape(x.shape)) - y).norm() / y.norm())
        row = {"field": i, "J": j, "steps": steps, "updates": updates, "update": update, "guidance_scale": scale,
               "lowpass": [k0, k1] if k0 else None, **{a: round(b, 3) for a, b in _metrics(res.samples, x[0]).items()},
               "rel_misfit": round(mis, 3), "seconds": round(time.perf_counter() - t0)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _cases(n: int, noise: float = 0.0):
    """The stationary Gaussian of the training fields, the benchmark operator with noise std ``noise``, and
    ``(i, x, y)`` per validation field (``x`` (1, 4096, 1) normalized, ``y`` float64, noise seeded by ``i``)."""
    from geoinv.bench._navier_stokes import make_operator
    from geoinv.fluids import SCALE, StationaryGaussian, load_fields

    gauss, op = StationaryGaussian.fit(load_fields("train", 64) / SCALE), make_operator(noise)
    xs = [(w / SCALE).double().reshape(1, -1, 1) for w in validation_fields(n)]
    return gauss, op, [(i, x, op.measure(x, torch.Generator().manual_seed(i)).double()) for i, x in enumerate(xs)]


def gauss_newton(n: int = 2, iters=2, fd_step: float = 0.1, sigma: float = 0.05) -> list[dict]:
    """:func:`geoinv.fluids.multiscale_gauss_newton` (forward evaluations only) on ``n`` validation fields, noise 0."""
    torch.set_num_threads(1)
    from geoinv.fluids import multiscale_gauss_newton

    prior, op, cases = _cases(n)
    rows = []
    for i, xt, y in cases:
        res = multiscale_gauss_newton(y, op, prior, iters=iters, fd_step=fd_step, sigma=sigma, progress=False)
        row = {"field": i, "iters": iters, "fd_step": fd_step, "sigma": sigma,
               "rel_l2": round(float((res.x - xt).norm() / xt.norm()), 3),
               "rel_misfit": round(res.trace[-1]["rel_misfit"], 4), "forward_evals": res.n_forward,
               "sequential_rounds": res.forward_rounds, "seconds": round(res.seconds),
               "xi2 (estimate, truth)": [round(float(prior.to_xi(v.reshape(64, 64)).pow(2).sum()))
                                         for v in (res.x, xt)],
               "trace (K, kappa, rel misfit)": [(t["K"], t["kappa"], round(t["rel_misfit"], 4)) for t in res.trace]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def warm(n: int = 2, sigma_max: float = 0.1, j: int = 64, steps: int = 24, scale: float = 2.0,
         update: str = "published", radius: float = 0.0, linearized: bool = False, inflation: float = 100.0,
         ode_steps: int = 2, iters=None, lagrangian: bool = False) -> list[dict]:
    """EnKG warm-started (``x_start``) from :func:`geoinv.fluids.multiscale_gauss_newton` at ``sigma_max``, noise 0.

    ``update="kalman"``: the Kalman option (``inflation``, default 100 = ``SCALE**2``, stochastic steps,
    ``guidance_scale = 1``), with covariance localization of radius ``radius`` when > 0. ``linearized``: EnKG runs on
    the black box linearized at the estimate (:func:`geoinv.fluids.linearize`, 1,849 solves; the forward model of
    :func:`geoinv.fluids.gauss_newton_diffusion`), so that only EnKG's update, not the forward model's nonlinearity,
    separates the two.
    """
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import _metrics
    from geoinv.fluids import linearize, multiscale_gauss_newton
    from geoinv.io import load_shipped_prior
    from geoinv.samplers import EnKG

    prior = load_shipped_prior("navier-stokes").eval()
    gauss, op, cases = _cases(n)
    rows = []
    for i, xt, y in cases:
        gn = multiscale_gauss_newton(y, op, gauss, iters=iters, progress=False)
        kw = (dict(update="kalman", guidance_scale=1.0, inflation=inflation, stochastic=True,
                   localization=op.localization(radius, flow=gn.x if lagrangian else None) if radius else None)
              if update == "kalman" else dict(guidance_scale=scale))
        sampler = EnKG(num_steps=steps, num_updates=1, max_ode_steps=ode_steps, sigma_max=sigma_max, **kw)
        t0 = time.perf_counter()
        model = linearize(op, gauss, gn.x) if linearized else op
        res = sampler(y, model, prior, n_samples=j, generator=torch.Generator().manual_seed(i), x_start=gn.x)
        with torch.no_grad():
            mis = float((op(res.mean.reshape(xt.shape)) - y).norm() / y.norm())
        row = {"field": i, "sigma_max": sigma_max, "J": j, "steps": steps, "guidance_scale": scale, "update": update,
               "radius": radius, "lagrangian": lagrangian, "linearized": linearized,
               "inflation": inflation if update == "kalman" else None, "ode_steps": ode_steps,
               "gn_rel_l2": round(float((gn.x - xt).norm() / xt.norm()), 3),
               **{a: round(b, 3) for a, b in _metrics(res.samples, xt[0]).items()}, "rel_misfit": round(mis, 4),
               "seconds": round(time.perf_counter() - t0)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def floor(n: int = 2, resolution: int = 64, sigmas=(0.05, 0.001), fd_step: float = 0.1) -> list[dict]:
    """What the observation leaves unknown under the stationary Gaussian prior, linearized at the truth.

    With ``J`` the finite-difference Jacobian of ``A`` at the true field in the whitened Fourier coordinates
    (``x = m + C^(1/2) xi``, the modes of the de-aliased band: 1,849 at 64 x 64), the linear-Gaussian posterior
    covariance is ``P = (I + J J^T / sigma^2)^(-1)``; ``sqrt(trace(C^(1/2) P C^(1/2)) / trace(C))`` is the share
    of the prior's RMS error that the posterior mean of that problem keeps on average, and that times the training
    mean's relative L2 on the field (``floor_rel_l2``) the error to expect of any method with this prior near the
    truth. At resolutions other than 64 the Gaussian is fitted to 64 fresh fields (seed 0) and the fields are fresh
    too (seed 2), observed like the benchmark's (``T = 1``, stride 2).
    """
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import BENCH_CFL, make_operator
    from geoinv.fluids import SCALE, StationaryGaussian, generate, linearize, load_fields
    from geoinv.operators import NavierStokes2D, NavierStokesObservation

    if resolution == 64:
        tr, op, ws = load_fields("train", 64), make_operator(0.0), validation_fields(n)
    else:
        solver = NavierStokes2D(resolution, cfl=BENCH_CFL)
        tr, ws = generate(64, resolution, seed=0, solver=solver), generate(n, resolution, seed=2, solver=solver)
        op = NavierStokesObservation(resolution, solver=solver)
    gauss = StationaryGaussian.fit(tr.double() / SCALE)
    rows = []
    for i, w in enumerate(ws):
        xt = (w / SCALE).double()
        lin = linearize(op, gauss, xt.reshape(1, -1, 1), fd_step=fd_step)
        jac, s2 = lin.jac, lin.mode_std**2                      # (p, M): dy / dxi_i; prior variance of each mode
        for sig in sigmas:
            post = torch.linalg.inv(torch.eye(jac.shape[0], dtype=jac.dtype) + jac @ jac.T / sig**2)
            left = float((s2 * post.diagonal()).sum().sqrt() / s2.sum().sqrt())    # posterior / prior rms error
            mean_err = float((xt - gauss.mean).norm() / xt.norm())
            row = {"resolution": resolution, "field": i, "sigma": sig, "modes": jac.shape[0], "observed": jac.shape[1],
                   "posterior_over_prior_rms": round(left, 3), "training_mean_rel_l2": round(mean_err, 3),
                   "floor_rel_l2": round(left * mean_err, 3)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def gnd(n: int = 2, lam: float = 1.0, sample: bool = True, sigma_max: float = 0.3, passes: int = 1,
        noise: float = 0.0, chains: int = 16, prior_path: str | None = None, sym: bool = False,
        broyden: int = 0) -> list[dict]:
    """:func:`geoinv.fluids.gauss_newton_diffusion` from the Gauss-Newton estimate on ``n`` validation fields.

    ``passes > 1``: re-linearize at the previous ensemble mean and run again. ``noise``: observation noise std
    (physical units; both methods then use it as their misfit scale). ``chains``: posterior samples;
    ``prior_path``: a prior checkpoint instead of the shipped one (e.g. a longer training run); ``sym``: average
    the denoiser over the benchmark's symmetries of the flow (``GND_SYMMETRIES``); ``broyden > 0``: that many
    secant-updated steps (:func:`geoinv.fluids.broyden_gauss_newton`) from a fresh Jacobian at the estimate first.
    """
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import _metrics
    from geoinv.fluids import (GND_SYMMETRIES, broyden_gauss_newton, gauss_newton_diffusion, linearize,
                               multiscale_gauss_newton)
    from geoinv.io import load_prior, load_shipped_prior
    from geoinv.operators import kolmogorov_symmetries
    from geoinv.priors import SymmetrizedPrior

    prior = (load_prior(prior_path) if prior_path else load_shipped_prior("navier-stokes")).eval()
    if sym:
        prior = SymmetrizedPrior(prior, *kolmogorov_symmetries(64, **GND_SYMMETRIES))
    gauss, op, cases = _cases(n, noise)
    rows = []
    for i, xt, y in cases:
        t0 = time.perf_counter()
        x = multiscale_gauss_newton(y, op, gauss, progress=False).x
        row = {"field": i, "noise": noise, "lam": lam, "sample": sample, "sigma_max": sigma_max, "chains": chains,
               "symmetrized": sym, "gn_rel_l2": round(float((x - xt).norm() / xt.norm()), 3),
               "s_gn": round(time.perf_counter() - t0), "passes": []}
        if broyden:
            t0 = time.perf_counter()
            lin = broyden_gauss_newton(y, op, linearize(op, gauss, x), iters=broyden, progress=False)
            x = lin.x_start.reshape(x.shape)
            row.update(broyden=broyden, broyden_rel_l2=round(float((x - xt).norm() / xt.norm()), 3),
                       s_broyden=round(time.perf_counter() - t0))
        for _ in range(passes):
            r = gauss_newton_diffusion(y, op, gauss, prior, x, lam=lam, sample=sample, sigma_max=sigma_max,
                                       n_samples=chains, generator=torch.Generator().manual_seed(i), progress=False)
            x, m = r.mean[None], _metrics(r.samples, xt[0])
            row["passes"].append({"rel_l2_mean": round(m["rel_l2_mean"], 3), "of_which_k_ge_16": round(m["rel_l2_fine"], 3),
                                  "rel_l2_per_sample": round(m["rel_l2"], 3),
                                  "spread_skill": round(m["spread_skill"], 2), "seconds": round(r.seconds)})
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _benchmark_gnd_prior():
    """The shipped prior averaged over the benchmark's symmetries of the flow (the Gauss-Newton + diffusion row's)."""
    from geoinv.fluids import GND_SYMMETRIES
    from geoinv.io import load_shipped_prior
    from geoinv.operators import kolmogorov_symmetries
    from geoinv.priors import SymmetrizedPrior

    return SymmetrizedPrior(load_shipped_prior("navier-stokes").eval(), *kolmogorov_symmetries(64, **GND_SYMMETRIES))


def basin(n: int = 2, noise: float = 1.0, steps: int = 4) -> list[dict]:
    """Misfit and prior cost of the Gauss-Newton estimate, the truth and the Gaussian MAP in the truth's basin, and
    the linearized diffusion sampler at the estimate (plain and with a model-error-inflated misfit scale) and at the
    truth, on ``n`` validation fields at noise std ``noise`` (the module docstring)."""
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import _metrics
    from geoinv.fluids import gauss_newton_diffusion, linearize, multiscale_gauss_newton

    prior, (gauss, op, cases) = _benchmark_gnd_prior(), _cases(n, noise)
    sig = max(noise, 0.05)
    rows = []
    for i, xt, y in cases:
        rel = lambda x: round(float((x.reshape(xt.shape) - xt).norm() / xt.norm()), 3)

        def cost(x):
            with torch.no_grad():
                r = op(x.reshape(xt.shape).float()).double().flatten() - y.flatten()
            xi2 = float(gauss.to_xi(x.reshape(64, 64)).pow(2).sum())
            return {"rel_l2": rel(x), "misfit_rms": round(float(r.pow(2).mean().sqrt()), 3), "xi2": round(xi2),
                    "objective": round(float(r.pow(2).sum()) / (2 * sig**2) + xi2 / 2)}

        gn = multiscale_gauss_newton(y, op, gauss, progress=False).x
        local = multiscale_gauss_newton(y, op, gauss, stages=((21, 0.0),), iters=steps, x_start=xt, progress=False).x
        row = {"field": i, "noise": noise, "gauss_newton": cost(gn), "truth": cost(xt),
               f"gaussian_map_from_truth ({steps} steps)": cost(local)}

        def sampler(tag, lin, s):  # the linearization stands in for the black box: its own Jacobian is exact
            x0 = lin.x_start.reshape(xt.shape)
            r = gauss_newton_diffusion(y, lin, gauss, prior, x0, sigma=s, n_samples=32,
                                       generator=torch.Generator().manual_seed(i), progress=False)
            with torch.no_grad():
                resid = float((op(r.samples.float()).double() - lin(r.samples).double()).pow(2).mean().sqrt())
            m = _metrics(r.samples, xt[0])
            row[tag] = {"sigma": round(s, 3), "rel_l2_mean": round(m["rel_l2_mean"], 3),
                        "rel_l2_per_sample": round(m["rel_l2"], 3), "spread_skill": round(m["spread_skill"], 2),
                        "linearization_error_rms": round(resid, 3)}
            return resid

        at_gn = linearize(op, gauss, gn)                                # 1,849 solves, used twice
        r = sampler("gnd_at_estimate", at_gn, sig)
        sampler("gnd_at_estimate_inflated", at_gn, (sig**2 + r**2) ** 0.5)
        sampler("gnd_at_truth", linearize(op, gauss, xt), sig)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def refine(n: int = 4, sigma_mean: float = 0.1, sigma_samples: float = 0.05, threads: int = 2) -> list[dict]:
    """Does anything refine the benchmark's Gauss-Newton + diffusion posterior through the *nonlinear* black box?

    On ``n`` validation fields at noise 0, after the benchmark's Gauss-Newton and its diffusion sampler (32 chains,
    symmetrized prior): the benchmark's EnKG (published update, its budget, the bare prior, forward evaluations of
    the black box) started from that posterior's mean noised to ``sigma_mean`` (J = 64) and from its 32 samples
    noised to ``sigma_samples`` (J = 32), and the diffusion sampler again, linearized at that mean (a second pass).
    """
    torch.set_num_threads(threads)
    import dataclasses

    from geoinv.bench._navier_stokes import GND_BUDGET, _metrics, make_methods
    from geoinv.fluids import gauss_newton_diffusion, multiscale_gauss_newton

    sym = _benchmark_gnd_prior()
    bare = sym.prior                         # the same network, not averaged (the benchmark's EnKG rows)
    enkg = make_methods(False)[0][1]
    gauss, op, cases = _cases(n)

    def summary(res, t0, xt):
        m = _metrics(res.samples, xt[0])
        return {"rel_l2_mean": round(m["rel_l2_mean"], 3), "per_sample": round(m["rel_l2"], 3),
                "spread_skill": round(m["spread_skill"], 2), "seconds": round(time.perf_counter() - t0)}

    rows = []
    for i, xt, y in cases:
        gn = multiscale_gauss_newton(y, op, gauss, progress=False).x
        t0 = time.perf_counter()
        first = gauss_newton_diffusion(y, op, gauss, sym, gn, generator=torch.Generator().manual_seed(i),
                                       progress=False, **GND_BUDGET[0])
        row = {"field": i, "gn_rel_l2": round(float((gn - xt).norm() / xt.norm()), 3), "gnd": summary(first, t0, xt)}
        for name, start, sigma, j in (("enkg_from_mean", first.mean[None], sigma_mean, 64),
                                      ("enkg_from_samples", first.samples, sigma_samples, first.samples.shape[0])):
            t0 = time.perf_counter()
            res = dataclasses.replace(enkg, sigma_max=sigma)(y, op, bare, n_samples=j, x_start=start,
                                                              generator=torch.Generator().manual_seed(i),
                                                              progress=False)
            row[name] = {"sigma_max": sigma, "J": j, **summary(res, t0, xt)}
        t0 = time.perf_counter()
        second = gauss_newton_diffusion(y, op, gauss, sym, first.mean[None], progress=False,
                                        generator=torch.Generator().manual_seed(i), **GND_BUDGET[0])
        row["gnd_second_pass"] = summary(second, t0, xt)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def hop(n: int = 2, noise: float = 1.0, rounds: int = 2, chains: int = 32) -> list[dict]:
    """Prior-proposed, data-selected linearization points: the benchmark's Gauss-Newton + diffusion sampler
    linearized at the Gauss-Newton estimate, then ``rounds`` times re-linearized at the chain sample that fits the
    data best through the *nonlinear* black box (``chains`` solves) and run again from it, on ``n`` validation
    fields at noise std ``noise``. Prints, per round, the ensemble's errors, the rms misfit of the samples and the
    rank correlation between a sample's misfit and its error (does the data pick the samples nearer the truth?)."""
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import _metrics
    from geoinv.fluids import gauss_newton_diffusion, linearize, multiscale_gauss_newton

    prior, (gauss, op, cases) = _benchmark_gnd_prior(), _cases(n, noise)
    sig = max(noise, 0.05)
    rows = []
    for i, xt, y in cases:
        t0 = time.perf_counter()
        point = multiscale_gauss_newton(y, op, gauss, progress=False).x
        row = {"field": i, "noise": noise, "chains": chains,
               "gn_rel_l2": round(float((point - xt).norm() / xt.norm()), 3), "rounds": []}
        for r in range(rounds + 1):
            res = gauss_newton_diffusion(y, linearize(op, gauss, point), gauss, prior, point, sigma=sig,
                                         n_samples=chains, generator=torch.Generator().manual_seed(100 * r + i),
                                         progress=False)
            with torch.no_grad():
                mis = (op(res.samples.float()).double().flatten(1) - y.flatten()[None]).pow(2).mean(1).sqrt()
                mis_mean = float((op(res.mean[None].float()).double().flatten() - y.flatten()).pow(2).mean().sqrt())
            err = (res.samples.flatten(1) - xt.flatten()[None]).norm(dim=1) / xt.norm()
            rank = lambda v: v.argsort().argsort().double()
            corr = float(torch.corrcoef(torch.stack([rank(mis), rank(err)]))[0, 1])
            m, best = _metrics(res.samples, xt[0]), int(mis.argmin())
            row["rounds"].append({"rel_l2_mean": round(m["rel_l2_mean"], 3), "rel_l2_per_sample": round(m["rel_l2"], 3),
                                  "spread_skill": round(m["spread_skill"], 2), "misfit_rms_mean": round(mis_mean, 3),
                                  "misfit_rms_samples (min, median)": [round(float(mis.min()), 3),
                                                                       round(float(mis.median()), 3)],
                                  "best_fit_sample_rel_l2": round(float(err[best]), 3),
                                  "best_sample_rel_l2": round(float(err.min()), 3),
                                  "rank_corr_misfit_error": round(corr, 2)})
            point = res.samples[best:best + 1]
        row["seconds"] = round(time.perf_counter() - t0)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def res128(n: int = 1, refine: int = 2, chains: int = 32, broyden: int = 8, first: str = "fine",
           fresh: int = 1) -> list[dict]:
    """The 128 x 128 option (InverseBench's grid: 64 x 64 observed values, noise 0) on ``n`` fresh validation fields
    (seed 2): the multi-fidelity path of ``geoinv.fluids.assimilate`` with the shipped 64 x 64 prior, step by step
    (tests/test_fluids.py checks that ``assimilate`` gives the same samples): the benchmark's Gauss-Newton with the
    64 x 64 solver as a cheap surrogate on the observation's every other value (the 32 x 32 points the 64 x 64
    benchmark observes), then ``refine`` (0: none) rounds through the 128 x 128 black box (the unknown kept on the
    64 x 64 grid, spectrally interpolated), each a fresh full-band Jacobian and ``broyden`` secant-updated steps with
    it, then the benchmark's linearized diffusion sampler (``chains`` chains, the prior symmetrized) in the 128 x 128
    black box linearized there. Errors against the 128 x 128 truth, with its oracle (k < 32).

    Cheaper variants, to measure what they cost in accuracy: ``first`` sets the first round's Jacobian ("fine"; an
    int K: the fine one in the band ``max(|kx|, |ky|) <= K`` only; "coarse": the 64 x 64 scheme's Jacobian of the
    128 x 128 observation, about 20x cheaper), and ``fresh = 0`` samples in the last round's secant-updated
    linearization instead of a fresh one (one Jacobian fewer)."""
    from geoinv.bench._navier_stokes import BENCH_CFL
    from geoinv.fluids import (SCALE, Linearization, StationaryGaussian, broyden_gauss_newton, gauss_newton_diffusion,
                               generate, linearize, load_fields, multiscale_gauss_newton)
    from geoinv.metrics import band_relative_l2
    from geoinv.operators import NavierStokes2D, NavierStokesObservation, SpectralLift

    gauss = StationaryGaussian.fit(load_fields("train", 64).double() / SCALE)
    prior = _benchmark_gnd_prior()
    op = NavierStokesObservation(128, solver=NavierStokes2D(128, cfl=BENCH_CFL))
    lifted = SpectralLift(op, 64)
    coarse_full = NavierStokesObservation(64, stride=1, solver=NavierStokes2D(64, cfl=BENCH_CFL))
    w = generate(n, 128, seed=2).double()
    rows = []
    for i in range(n):
        x = w[i:i + 1] / SCALE
        y = op(x.reshape(1, -1, 1))                                               # (1, 4096, 1), noise 0

        def err(v, x=x):
            return round(float((lifted.lift(v.reshape(-1, 64 * 64, 1))[0, :, 0] - x.flatten()).norm() / x.norm()), 4)

        t0 = time.perf_counter()
        gn = multiscale_gauss_newton(y.reshape(1, 64, 64)[:, ::2, ::2].reshape(1, -1), op.at_resolution(64), gauss,
                                     progress=False)
        t1 = time.perf_counter()
        xv, lin, solves, errs = gn.x, None, 0, []
        for r in range(refine):
            if r == 0 and first == "coarse":  # the coarse scheme's Jacobian, the fine black box's value
                lc = linearize(coarse_full, gauss, xv)
                lin = Linearization(lc.x_start, lifted(xv)[0].double().flatten(), lc.jac, lc.basis, lc.mode_std,
                                    lc.mean, lc.out_shape, 1, 1, 0.0, lc.obs_shape)
            else:
                lin = linearize(lifted, gauss, xv, band=int(first) if r == 0 and first != "fine" else None)
            lin = broyden_gauss_newton(y, lifted, lin, iters=broyden, progress=False)
            xv, solves = lin.x_start.reshape(1, -1, 1), solves + lin.n_forward
            errs.append(err(xv))
        t2 = time.perf_counter()
        res = gauss_newton_diffusion(y, lifted if fresh or lin is None else lin, gauss, prior, xv, n_samples=chains,
                                     progress=False, generator=torch.Generator().manual_seed(i))
        t3 = time.perf_counter()
        up = lifted.lift(res.samples.double())[:, :, 0]
        row = {"field": i, "oracle_k<32": round(float(band_relative_l2(torch.zeros_like(x), x, (0, 32))[0, 1]), 4),
               "gn64_rel_l2": err(gn.x), "refined_rel_l2": errs, "gnd_mean_rel_l2": err(res.mean),
               "gnd_sample_rel_l2": round(sum(err(s) for s in res.samples) / chains, 4),
               "spread_over_error": round(float(up.std(0).pow(2).mean().sqrt()
                                                / (up.mean(0) - x.flatten()).pow(2).mean().sqrt()), 3),
               "solves_64": gn.n_forward, "solves_128": solves + res.n_forward,
               "s_gn64": round(t1 - t0), "s_refine": round(t2 - t1), "s_gnd": round(t3 - t2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def jac128(n: int = 2, directions: int = 12, step: float = 0.01) -> list[dict]:
    """Can the 64 x 64 scheme stand in for the 128 x 128 one's Jacobian? On ``n`` fresh validation fields (seed 2),
    at the truth's part on the 64 x 64 grid and 30 % of its norm away along a prior draw: the two schemes' observations
    of the 128 x 128 problem (64 x 64 values; the coarse scheme observes every point of its grid) and their
    directional derivatives along ``directions`` prior draws (finite differences with a step of ``step`` in
    normalized units per grid value, 2 % of a field's norm for 0.01)."""
    from geoinv.bench._navier_stokes import BENCH_CFL
    from geoinv.fluids import SCALE, StationaryGaussian, fourier_basis, generate, load_fields
    from geoinv.operators import NavierStokes2D, NavierStokesObservation, SpectralLift, spectral_resample

    gauss = StationaryGaussian.fit(load_fields("train", 64).double() / SCALE)
    fine = SpectralLift(NavierStokesObservation(128, solver=NavierStokes2D(128, cfl=BENCH_CFL)), 64)
    coarse = NavierStokesObservation(64, stride=1, solver=NavierStokes2D(64, cfl=BENCH_CFL))
    b = fourier_basis(64, 21)
    g = torch.Generator().manual_seed(0)

    def draw(k):  # prior draws (k, 64, 64), zero mean
        v = gauss.apply_sqrt(torch.einsum("kp,pij->kij", torch.randn(k, b.shape[0], generator=g, dtype=torch.float64), b))
        return v - v.mean((1, 2), keepdim=True)

    def both(x):
        x = x.reshape(-1, 64 * 64, 1)
        return fine(x.float()).double(), coarse(x.float()).double()

    w = generate(n, 128, seed=2).double() / SCALE
    rows = []
    for i in range(n):
        x0 = spectral_resample(w[i:i + 1], 64)
        for away in (0.0, 0.3):
            d = draw(1)
            x = x0 + away * d * x0.norm() / d.norm()
            yf, yc = both(x)
            v = draw(directions)
            v = step * v / v.flatten(1).std(1)[:, None, None]
            df, dc = both(x + v)
            df, dc = df - yf, dc - yc
            rel = (dc - df).flatten(1).norm(dim=1) / df.flatten(1).norm(dim=1)
            cos = (dc * df).flatten(1).sum(1) / dc.flatten(1).norm(dim=1) / df.flatten(1).norm(dim=1)
            row = {"field": i, "away": away, "output_difference": round(float((yc - yf).norm() / yf.norm()), 3),
                   "jacobian_direction_rel_error": [round(float(r), 3) for r in rel],
                   "cosine": [round(float(c), 3) for c in cos]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def upstream(points: int = 12, field: int = 0) -> list[dict]:
    """Share of an observed value's squared sensitivity to ``w0`` near the observed point and near its departure point."""
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import make_operator

    op = make_operator(differentiable=True)
    ns, n, length = op.solver, op.n, 2 * math.pi
    w0 = validation_fields(field + 1)[field].double()
    w = w0.clone().requires_grad_(True)
    wt = ns.solve(w, op.t_final)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    grid = torch.stack([i, j], -1).double() * ns.h

    def dist(a, b):
        d = (a - b).abs()
        return torch.minimum(d, length - d).pow(2).sum(-1).sqrt()

    rows = []
    for a, b in torch.randint(0, n // op.stride, (points, 2), generator=torch.Generator().manual_seed(field)).tolist():
        g, = torch.autograd.grad(wt[op.stride * a, op.stride * b], w, retain_graph=True)
        p = torch.tensor([[op.stride * a, op.stride * b]], dtype=torch.float64) * ns.h
        dep = ns.departure_points(w0, p, op.t_final)[0]
        m = g.pow(2) / g.pow(2).sum()
        d_obs, d_dep = dist(grid, p[0]), dist(grid, dep)
        peak = grid.reshape(-1, 2)[m.flatten().argmax()]
        row = {"observed": [round(v, 2) for v in p[0].tolist()], "departure": [round(v, 2) for v in dep.tolist()],
               "peak": [round(v, 2) for v in peak.tolist()], "observed-departure": round(float(dist(p[0], dep)), 2),
               "peak-departure": round(float(dist(peak, dep)), 2), "share <1 of observed": round(float(m[d_obs < 1].sum()), 3),
               **{f"share <{r:g} of departure": round(float(m[d_dep < r].sum()), 3) for r in (0.5, 1, 2)}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def oracle(n: int = 4) -> None:
    """The error of an estimate that knows every mode the observation grid resolves and nothing finer, i.e. the
    truth's share beyond it (relative L2): at 64 x 64 (32 x 32 observed: k < 16) and at 128 x 128 (the reference
    problem, 64 x 64 observed: k < 32), on ``n`` fresh fields each (seed 2)."""
    torch.set_num_threads(1)
    from geoinv.fluids import generate
    from geoinv.metrics import band_relative_l2

    for res, k in ((64, 16), (128, 32)):
        w = generate(n, res, seed=2).double()
        fine = band_relative_l2(torch.zeros_like(w), w, (0, k))[:, 1]
        print(json.dumps({"resolution": res, "observed_band": f"k < {k}", "oracle_rel_l2": [round(float(v), 3) for v in fine],
                          "mean": round(float(fine.mean()), 3)}), flush=True)


def blocks(resolution: int, members: int, t: float = 1.0, sizes=None, reps: int = 2, threads: int = 2) -> list[dict]:
    """Wall time per member of the solver for ``members`` fields in blocks of each of ``sizes`` (the module doc)."""
    import statistics
    import time

    from geoinv.fluids import load_fields
    from geoinv.operators import NavierStokes2D, spectral_resample

    torch.set_num_threads(threads)
    w = spectral_resample(load_fields("test", 64)[:1].float(), resolution).repeat(members, 1, 1)
    w = w + 0.1 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    sizes = sizes or (NavierStokes2D(resolution).block, members)
    solvers = {b: NavierStokes2D(resolution, cfl=0.5, block=b) for b in sizes}
    times, outs = {b: [] for b in sizes}, {}
    for _ in range(reps):
        for b, ns in solvers.items():
            t0 = time.perf_counter()
            outs[b] = ns.solve(w, t)
            times[b].append((time.perf_counter() - t0) / members * 1000)
    rows = [{"resolution": resolution, "members": members, "t": t, "threads": threads, "block": b,
             "ms_per_member_best": round(min(v), 1), "ms_per_member_median": round(statistics.median(v), 1),
             "equal_to_whole_batch": bool(torch.equal(outs[b], outs[sizes[-1]]))} for b, v in times.items()]
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def gn_blocks(sizes=None, threads: int = 2) -> list[dict]:
    """Seconds of the benchmark's Gauss-Newton on test field 0 with the solver in blocks of each of ``sizes``."""
    import time

    from geoinv.bench._navier_stokes import RESOLUTION, make_operator
    from geoinv.fluids import SCALE, StationaryGaussian, load_fields, multiscale_gauss_newton

    torch.set_num_threads(threads)
    x = (load_fields("test", RESOLUTION)[:1] / SCALE).reshape(1, -1, 1).double()
    stationary = StationaryGaussian.fit(load_fields("train", RESOLUTION).double() / SCALE)
    rows = []
    for b in sizes or (make_operator().solver.block, 10**6):
        op = make_operator(0.0)
        op.solver.block = b
        y = op.measure(x, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        gn = multiscale_gauss_newton(y, op, stationary, progress=False)
        rows.append({"block": b, "threads": threads, "seconds": round(time.perf_counter() - t0, 1),
                     "n_forward": gn.n_forward, "forward_rounds": gn.forward_rounds,
                     "rel_l2": round(float((gn.x - x).norm() / x.norm()), 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cfl_steps(resolution: int = 128, n: int = 5) -> list[dict]:
    """Steps to T = 1 of the CFL-adaptive solver on the first ``n`` test fields at ``resolution`` (the module doc)."""
    from geoinv.bench._navier_stokes import BENCH_CFL
    from geoinv.fluids import generate
    from geoinv.fluids._data import SEEDS
    from geoinv.operators import NavierStokes2D

    w = generate(n, resolution, SEEDS["test"])
    _, steps = NavierStokes2D(resolution, cfl=BENCH_CFL).solve(w, 1.0, return_steps=True)
    rows = [{"resolution": resolution, "field": i, "steps_to_t1": int(s), "rms_vorticity": round(float(r), 2)}
            for i, (s, r) in enumerate(zip(steps, w.pow(2).mean((1, 2)).sqrt()))]
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def symmetry(n: int = 32, sigmas=(0.02, 0.05, 0.1, 0.3, 1.0)) -> list[dict]:
    """Denoising MSE of the shipped prior on ``n`` validation fields, plain and averaged over the flow's symmetries
    (:class:`geoinv.priors.SymmetrizedPrior`: the 4 maps of the benchmark, and with x-shifts 0, 2, 4, 6)."""
    torch.set_num_threads(1)
    from geoinv.fluids import GND_SYMMETRIES, SCALE
    from geoinv.io import load_shipped_prior
    from geoinv.operators import kolmogorov_symmetries
    from geoinv.priors import SymmetrizedPrior

    prior = load_shipped_prior("navier-stokes").eval()
    x = (validation_fields(n) / SCALE).reshape(n, -1, 1)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    shifts = {**GND_SYMMETRIES, "x_shifts": (0, 2, 4, 6)}
    variants = {"plain": prior, "4 maps": SymmetrizedPrior(prior, *kolmogorov_symmetries(64, **GND_SYMMETRIES)),
                "4 maps x 4 shifts": SymmetrizedPrior(prior, *kolmogorov_symmetries(64, **shifts))}
    rows = []
    with torch.no_grad():
        for sig in sigmas:
            mse = {k: float((p.denoise(x + sig * eps, sig) - x).pow(2).mean()) for k, p in variants.items()}
            row = {"sigma": sig, **{k: round(v, 6) for k, v in mse.items()},
                   **{f"gain {k} [dB]": round(10 * math.log10(mse["plain"] / v), 3) for k, v in mse.items() if k != "plain"}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def variational(n: int = 2, iters: int = 1500, sigma=(0.05,), start: float = 0.0, scales=(0.0,)) -> list[dict]:
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import make_operator
    from geoinv.fluids import SCALE, lowpass

    tr, gauss, to_x = _whitening()
    op = make_operator(0.0, differentiable=True)
    rows = []
    for i, w in enumerate(validation_fields(n)):
        xt = (w / SCALE).double().reshape(1, -1, 1)
        y = op(xt)
        xi = torch.zeros(64, 64, dtype=torch.float64)
        if start:
            d = tr[2 * i] - tr[2 * i + 1]
            x0 = xt.reshape(64, 64) + start * d * xt.norm() / d.norm()
            xi = gauss.to_xi(x0)
        xi.requires_grad_(True)
        evals, t0 = [0], time.perf_counter()
        stages = [(sig, kc) for kc in scales for sig in sigma]
        for sig, kc in stages:
            opt = torch.optim.LBFGS([xi], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = 0.5 * lowpass(op(to_x(xi)) - y, kc, op.obs_shape).pow(2).sum() / sig**2 + 0.5 * xi.pow(2).sum()
                loss.backward()
                evals[0] += 1
                return loss

            opt.step(closure)
        with torch.no_grad():
            x = to_x(xi)
            row = {"field": i, "start": start, "sigma": list(sigma), "scales": list(scales),
                   "rel_l2": float((x - xt).norm() / xt.norm()),
                   "rel_misfit": float((op(x) - y).norm() / y.norm()), "gradient_evals": evals[0],
                   "seconds": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def learned_var(n: int = 2, iters: int = 150, sigma=(5, 2, 1, 0.5, 0.2, 0.1, 0.05),
                sigma_prior=(1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05), lr: float = 0.01, lam: float = 1.0) -> list[dict]:
    """Annealed MAP with the learned prior (exact gradients; a diagnostic, not a black-box method).

    Stage ``k``: ``iters`` Adam steps on the whitened ``xi`` (``x = mean + C^(1/2) xi``, as in :func:`variational`)
    with the gradient in ``x``
    ``grad ||A(x) - y||^2 / (2 sigma_k^2) + lam * (x - D(x + s_k eps, s_k)) / s_k^2`` (``D`` the shipped
    prior's denoiser at noise level ``s_k = sigma_prior[k]``, fresh ``eps`` per step: the RED-diff form of the
    smoothed prior's score), from the training mean, noise 0, on ``n`` validation fields.
    """
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import make_operator
    from geoinv.fluids import SCALE
    from geoinv.io import load_shipped_prior

    prior = load_shipped_prior("navier-stokes").eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    _, _, to_x = _whitening()
    op = make_operator(0.0, differentiable=True)
    g = torch.Generator().manual_seed(0)
    rows = []
    for i, w in enumerate(validation_fields(n)):
        xt = (w / SCALE).double().reshape(1, -1, 1)
        y = op(xt).detach()
        xi = torch.zeros(64, 64, dtype=torch.float64, requires_grad=True)  # x = training mean
        opt = torch.optim.Adam([xi], lr=lr)
        t0, trace = time.perf_counter(), []
        for sig, sp in zip(sigma, sigma_prior):
            for _ in range(iters):
                opt.zero_grad()
                x = to_x(xi)
                with torch.no_grad():  # RED-diff: <stop-grad (x - D(x + s eps, s)) / s^2, x> has that gradient
                    score = (x - prior.denoise((x + sp * torch.randn(x.shape, generator=g, dtype=x.dtype)).float(),
                                               sp).double()) / sp**2
                (0.5 * (op(x) - y).pow(2).sum() / sig**2 + lam * (score * x).sum()).backward()
                opt.step()
            with torch.no_grad():
                x = to_x(xi)
                trace.append((sig, sp, round(float((x - xt).norm() / xt.norm()), 3),
                              round(float((op(x) - y).norm() / y.norm()), 3)))
        row = {"field": i, "iters": iters, "lr": lr, "lam": lam, "rel_l2": trace[-1][2], "rel_misfit": trace[-1][3],
               "seconds": time.perf_counter() - t0, "trace (sigma, sigma_prior, rel L2, rel misfit)": trace}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def dps(n: int = 2, steps: int = 300, step_size: float = 0.3, rule: str = "norm") -> list[dict]:
    """DPS (gradients through the solver) with a longer schedule than the benchmark's, noise 0, n validation fields."""
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import SIGMA_MAX, _metrics, make_operator
    from geoinv.fluids import SCALE
    from geoinv.io import load_shipped_prior
    from geoinv.samplers import DPS

    prior = load_shipped_prior("navier-stokes").eval()
    op = make_operator(0.0, differentiable=True)
    sampler = DPS(num_steps=steps, step_size=step_size, step_rule=rule, sigma_max=SIGMA_MAX)
    rows = []
    for i, w in enumerate(validation_fields(n)):
        x = (w / SCALE).double().reshape(1, -1, 1)
        y = op(x).detach()
        t0 = time.perf_counter()
        res = sampler(y, op, prior, n_samples=1, generator=torch.Generator().manual_seed(i), progress=False)
        with torch.no_grad():
            mis = float((op(res.mean.reshape(x.shape).double()) - y).norm() / y.norm())
        row = {"field": i, "steps": steps, "step_size": step_size, "rule": rule, **_metrics(res.samples, x[0]),
               "rel_misfit": mis, "seconds": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "horizon":  # horizon [N] [J] [RADIUS] [T]
        kw = {"radius": float(args[2])} if len(args) > 2 else {}
        if len(args) > 3:
            kw["horizons"] = (float(args[3]),)
        horizon(*[int(v) for v in args[:2]], **kw)
    elif cmd == "learned-var":  # learned-var [N] [ITERS] [LR] [LAM]
        learned_var(*[int(v) for v in args[:2]], **dict(zip(("lr", "lam"), (float(v) for v in args[2:4]))))
    elif cmd == "dps":  # dps [N] [STEPS] [STEP_SIZE] [RULE]
        dps(*[int(v) for v in args[:2]], *([float(args[2])] if len(args) > 2 else []), *args[3:4])
    elif cmd == "enkg-variant":  # enkg-variant [N] [J] [STEPS] [UPDATES] [SCALE] [K0] [K1] [UPDATE]
        enkg_variant(*[int(v) for v in args[:4]], *[float(v) for v in args[4:7]], *args[7:8])
    elif cmd == "gn":  # gn [N] [ITERS (int or one per stage, comma-separated)] [FD_STEP] [SIGMA]
        its = [int(v) for v in args[1].split(",")] if len(args) > 1 else [2]
        gauss_newton(int(args[0]) if args else 2, its[0] if len(its) == 1 else tuple(its),
                     *[float(v) for v in args[2:4]])
    elif cmd == "gnd":  # gnd [N] [LAM] [SAMPLE 0/1] [SIGMA_MAX] [PASSES] [NOISE] [CHAINS] [PRIOR or -] [SYM 0/1] [BROYDEN]
        conv = (int, float, lambda v: v != "0", float, int, float, int, lambda v: None if v == "-" else v,
                lambda v: v != "0", int)
        gnd(*[c(v) for c, v in zip(conv, args)])
    elif cmd == "floor":  # floor [N] [RESOLUTION] [SIGMAS, comma-separated]
        floor(*[int(v) for v in args[:2]], *([tuple(float(v) for v in args[2].split(","))] if len(args) > 2 else []))
    elif cmd == "warm":  # warm [N] [SIGMA_MAX] [J] [STEPS] [SCALE] [UPDATE] [RADIUS] [LINEARIZED 0/1] [INFLATION] [ODE]
        #                      [-] [LAGRANGIAN 0/1]
        conv = (int, float, int, int, float, str, float, lambda v: v != "0", float, int, lambda v: None,
                lambda v: v != "0")
        warm(*[c(v) for c, v in zip(conv, args)])
    elif cmd == "basin":  # basin [N] [NOISE] [STEPS]
        basin(*[c(v) for c, v in zip((int, float, int), args)])
    elif cmd == "refine":  # refine [N] [SIGMA_MEAN] [SIGMA_SAMPLES] [THREADS]
        refine(*[c(v) for c, v in zip((int, float, float, int), args)])
    elif cmd == "hop":  # hop [N] [NOISE] [ROUNDS] [CHAINS]
        hop(*[c(v) for c, v in zip((int, float, int, int), args)])
    elif cmd == "res128":  # res128 [N] [REFINE] [CHAINS] [BROYDEN] [FIRST] [FRESH]
        res128(*[c(v) for c, v in zip((int, int, int, int, str, int), args)])
    elif cmd == "jac128":  # jac128 [N] [DIRECTIONS] [STEP]
        jac128(*[int(v) for v in args[:2]], *[float(v) for v in args[2:3]])
    elif cmd == "blocks":  # blocks RESOLUTION MEMBERS [T] [BLOCKS] [REPS] [THREADS]
        sizes = tuple(int(v) for v in args[3].split(",")) if len(args) > 3 else None
        blocks(int(args[0]), int(args[1]), *[float(v) for v in args[2:3]], sizes,
               *[int(v) for v in args[4:6]])
    elif cmd == "gnblocks":  # gnblocks [BLOCKS] [THREADS]
        gn_blocks(tuple(int(v) for v in args[0].split(",")) if args else None, *[int(v) for v in args[1:2]])
    elif cmd == "steps":  # steps [RESOLUTION] [N]
        cfl_steps(*[int(v) for v in args[:2]])
    elif cmd == "upstream":  # upstream [POINTS] [FIELD]
        upstream(*[int(v) for v in args[:2]])
    elif cmd == "oracle":  # oracle [N]
        oracle(*[int(v) for v in args[:1]])
    elif cmd == "symmetry":  # symmetry [N]
        symmetry(*[int(v) for v in args[:1]])
    elif cmd == "resolution":
        resolution()
    elif cmd == "var":  # var [N] [ITERS] [SIGMA] [START] [SCALES]
        kw = {"sigma": tuple(float(v) for v in args[2].split(","))} if len(args) > 2 else {}
        if len(args) > 3:
            kw["start"] = float(args[3])
        if len(args) > 4:
            kw["scales"] = tuple(float(v) for v in args[4].split(","))
        variational(*[int(v) for v in args[:2]], **kw)
    else:
        a = [int(v) for v in args]
        if cmd == "info":
            info(*a[:1])
        else:
            main(a[0] if a else 1, tuple(a[1:]) or (32, 128, 512))
