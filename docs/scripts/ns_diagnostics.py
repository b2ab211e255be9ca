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

``python docs/scripts/ns_diagnostics.py var [N] [ITERS] [SIGMA] [START]``: what exact gradients buy (4D-Var, not a
black-box method): L-BFGS on ``||A(x) - y||^2 / (2 SIGMA^2) + ||xi||^2 / 2`` with ``x = mean + C^(1/2) xi``, ``C``
the stationary (per-Fourier-mode) covariance of the training fields, noise 0, on N validation fields; relative
L2, relative data misfit and gradient evaluations. Started from the training mean (``START`` 0, default) or,
to tell a bad landscape from missing information, from the truth moved by ``START`` times its norm along the
difference of two training fields. ``SIGMA`` may be a comma-separated schedule (e.g. ``5,2,1,0.5,0.2,0.1,0.05``):
a continuation in the data weight, ``ITERS`` L-BFGS iterations per stage.

``python docs/scripts/ns_diagnostics.py learned-var [N] [ITERS] [LR] [LAM]``: the same continuation in the data
weight (``SIGMA`` 5 ... 0.05) with the shipped *learned* prior instead of the stationary Gaussian: Adam on
``xi`` with the data gradient plus ``LAM`` times the smoothed prior's score ``(x - D(x + s eps, s)) / s^2`` at a
prior noise level ``s`` annealed with it (1 ... 0.05; RED-diff), ``ITERS`` steps per stage, from the training mean.

``python docs/scripts/ns_diagnostics.py dps [N] [STEPS] [STEP_SIZE] [RULE]``: DPS (gradients through the solver)
with a longer schedule than the benchmark's 30 steps, noise 0, N validation fields.

``python docs/scripts/ns_diagnostics.py resolution``: the same sensitivity at 64x64 and 128x128 (fresh
GRF fields spun up 5 time units at each resolution; perturbations of 1 % and 10 %), to check that the
amplification is the flow's, not an under-resolution artefact of the 64x64 grid.

Validation fields are ``geoinv.fluids.generate(N, 64, seed=2)``: neither the prior's training
split (seed 0) nor the benchmark's test split (seed 1).
"""

import json
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
    from geoinv.operators import NavierStokes2D

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
        yh = torch.fft.rfft2(y)
        o = torch.zeros(y.shape[0], 64, 33, dtype=torch.complex128)
        o[:, :16, :17], o[:, -16:, :17] = yh[:, :16, :17], yh[:, -16:, :17]
        return torch.fft.irfft2(o, s=(64, 64)) * 4

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
    from geoinv.fluids import SCALE, load_fields
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
    """Training fields (K, 64, 64) in normalized units, their mean, per-Fourier-mode std and ``xi -> x``.

    ``x = mean + C^(1/2) xi`` with ``C`` the stationary (per-mode) covariance of the training fields.
    """
    from geoinv.fluids import SCALE, load_fields

    tr = load_fields("train", 64).double().reshape(-1, 64, 64) / SCALE
    mean = tr.mean(0)
    sqrt_c = ((torch.fft.fft2(tr - mean).abs() ** 2).mean(0) / 64**2).sqrt()  # per-mode std, real-space units

    def to_x(v):
        return (mean + torch.fft.ifft2(torch.fft.fft2(v) * sqrt_c).real).reshape(1, -1, 1)

    return tr, mean, sqrt_c, to_x


def variational(n: int = 2, iters: int = 1500, sigma=(0.05,), start: float = 0.0) -> list[dict]:
    torch.set_num_threads(1)
    from geoinv.bench._navier_stokes import make_operator
    from geoinv.fluids import SCALE

    tr, mean, sqrt_c, to_x = _whitening()
    op = make_operator(0.0, differentiable=True)
    rows = []
    for i, w in enumerate(validation_fields(n)):
        xt = (w / SCALE).double().reshape(1, -1, 1)
        y = op(xt)
        xi = torch.zeros(64, 64, dtype=torch.float64)
        if start:
            d = tr[2 * i] - tr[2 * i + 1]
            x0 = xt.reshape(64, 64) + start * d * xt.norm() / d.norm()
            xi = torch.fft.ifft2(torch.fft.fft2(x0 - mean) / sqrt_c.clamp_min(1e-6 * float(sqrt_c.max()))).real
        xi.requires_grad_(True)
        evals, t0 = [0], time.perf_counter()
        for sig in sigma:
            opt = torch.optim.LBFGS([xi], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = 0.5 * (op(to_x(xi)) - y).pow(2).sum() / sig**2 + 0.5 * xi.pow(2).sum()
                loss.backward()
                evals[0] += 1
                return loss

            opt.step(closure)
        with torch.no_grad():
            x = to_x(xi)
            row = {"field": i, "start": start, "sigma": list(sigma), "rel_l2": float((x - xt).norm() / xt.norm()),
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
    _, _, _, to_x = _whitening()
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
    elif cmd == "resolution":
        resolution()
    elif cmd == "var":  # var [N] [ITERS] [SIGMA]
        kw = {"sigma": tuple(float(v) for v in args[2].split(","))} if len(args) > 2 else {}
        if len(args) > 3:
            kw["start"] = float(args[3])
        variational(*[int(v) for v in args[:2]], **kw)
    else:
        a = [int(v) for v in args]
        if cmd == "info":
            info(*a[:1])
        else:
            main(a[0] if a else 1, tuple(a[1:]) or (32, 128, 512))
