"""Navier-Stokes solver, observation operators, data set, EKI and the dask scale-out."""

from __future__ import annotations

import math

import pytest
import torch

from geoinv.errors import NonFiniteError, NotDifferentiableError, ShapeError
from geoinv.fluids import generate, grf_torus
from geoinv.operators import (NavierStokes2D, NavierStokesObservation, kolmogorov_symmetries,
                              kolmogorov_symmetry_maps)
from geoinv.operators._navier_stokes import _block_sizes, taylor_green
from geoinv.samplers import EKI
from geoinv.samplers._enkg import ensemble_kalman_update


def _smooth_field(n=32, seed=0, amp=5.0):
    """A smooth, strongly nonlinear vorticity field (a few low modes)."""
    w = grf_torus(1, n, alpha=4.0, tau=3.0, generator=torch.Generator().manual_seed(seed))[0]
    return amp * w / w.std()


# -- solver validation --------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_taylor_green_decay_is_exact(k):
    ns = NavierStokes2D(32, forcing=None, dtype=torch.float64)
    w1 = ns.solve(taylor_green(32, k=k), 1.0)
    exact = taylor_green(32, 1.0, k=k)
    rel = float((w1 - exact).norm() / exact.norm())
    # the advection term vanishes identically; what is left is Crank-Nicolson's O((nu k^2 dt)^3)/step error
    assert rel < 2e-6, rel


def test_laminar_kolmogorov_flow_with_forcing():
    """From rest, w(t) = -(4 / (16 nu)) (1 - exp(-16 nu t)) cos(4y) exactly (a shear flow: no advection)."""
    ns = NavierStokes2D(32, dtype=torch.float64)
    w = ns.solve(torch.zeros(32, 32, dtype=torch.float64), 2.0)
    y = 2 * math.pi * torch.arange(32, dtype=torch.float64) / 32
    exact = (-(4 / (16 * ns.nu)) * (1 - math.exp(-16 * ns.nu * 2.0)) * torch.cos(4 * y))[:, None].expand(32, 32)
    assert float((w - exact).norm() / exact.norm()) < 3e-6  # O(dt^2) with dt = dt_max = 0.05


def test_second_order_in_time():
    ns = NavierStokes2D(16, dtype=torch.float64)
    w0 = _smooth_field(16)
    ref = ns.solve(w0, 0.4, dt=0.4 / 160)
    e20, e40 = (float((ns.solve(w0, 0.4, dt=0.4 / m) - ref).norm() / ref.norm()) for m in (20, 40))
    assert e20 < 1e-2 and math.log2(e20 / e40) > 1.85, (e20, e40)  # measured order about 2.0-2.3


def test_batch_members_are_independent_and_float32_matches_float64():
    w0 = torch.stack([_smooth_field(seed=s) for s in range(3)])
    ns64 = NavierStokes2D(32, dtype=torch.float64)
    both, steps = ns64.solve(w0, 0.3, return_steps=True)
    one = torch.stack([ns64.solve(w0[i], 0.3) for i in range(3)])
    assert torch.allclose(both, one, atol=1e-10)
    assert len(set(steps.tolist())) > 1  # every member has its own CFL step sequence
    w32 = NavierStokes2D(32).solve(w0, 0.3)
    assert w32.dtype == torch.float32
    assert float((w32.double() - both).norm() / both.norm()) < 1e-4


def test_blocks_do_not_change_the_solution_or_its_gradient():
    """A batch cut into cache-sized blocks (a trailing single member joined to the block before it) integrates each
    member exactly as one call would, steps and gradients included."""
    assert _block_sizes(7, 3) == [3, 4] and _block_sizes(8, 3) == [3, 3, 2] and _block_sizes(1, 8) == [1]
    assert _block_sizes(0, 8) == [0] and NavierStokes2D(128).block == 8 and NavierStokes2D(64).block == 32
    w0 = torch.stack([_smooth_field(seed=s) for s in range(7)]).requires_grad_()
    whole, steps = NavierStokes2D(32, block=7).solve(w0, 0.3, return_steps=True)
    blocked, bsteps = NavierStokes2D(32, block=3).solve(w0, 0.3, return_steps=True)
    assert torch.equal(steps, bsteps) and len(set(steps.tolist())) > 1
    assert float((blocked - whole).abs().max() / whole.abs().max()) < 1e-6
    weights = torch.randn(whole.shape, generator=torch.Generator().manual_seed(0))
    g_whole, = torch.autograd.grad((whole * weights).sum(), w0)
    g_blocked, = torch.autograd.grad((blocked * weights).sum(), w0)
    assert float((g_blocked - g_whole).norm() / g_whole.norm()) < 1e-5
    with pytest.raises(ValueError, match="block"):
        NavierStokes2D(32, block=0)


def test_solver_errors():
    ns = NavierStokes2D(16)
    with pytest.raises(ShapeError):
        ns.solve(torch.zeros(2, 8, 8), 1.0)
    with pytest.raises(NonFiniteError):
        ns.solve(torch.full((16, 16), float("nan")), 0.1)
    with pytest.raises(ValueError):
        NavierStokes2D(15)


def test_kolmogorov_symmetries_map_solutions_to_solutions():
    """Every map of the group commutes with the forced solver; a half-period y-shift alone does not."""
    n = 16
    ns = NavierStokes2D(n, dtype=torch.float64)
    w0 = torch.stack([_smooth_field(n, seed=s) for s in range(2)])
    perms, signs = kolmogorov_symmetries(n, x_shifts=(0, 3), half_periods=range(8))
    assert len({tuple(p) for p in perms.tolist()}) == 32 and torch.equal(perms[0], torch.arange(n * n))
    act = lambda w: (signs[:, None] * w.reshape(w.shape[0], -1)[:, perms]).reshape(-1, n, n)  # noqa: E731
    solved_then_mapped = act(ns.solve(w0, 0.3))
    mapped_then_solved = ns.solve(act(w0), 0.3)
    err = (solved_then_mapped - mapped_then_solved).flatten(1).norm(dim=1) / solved_then_mapped.flatten(1).norm(dim=1)
    assert float(err.max()) < 1e-10, float(err.max())
    shifted = torch.roll(w0, n // 8, dims=1)  # y + h without the mirror and sign flip: not a symmetry
    assert float((ns.solve(shifted, 0.3) - torch.roll(ns.solve(w0, 0.3), n // 8, dims=1)).norm()) > 0.1


def test_kolmogorov_symmetries_form_the_whole_group():
    n, k = 16, 4
    perms, signs = kolmogorov_symmetries(n, k=k, x_shifts=range(n), half_periods=range(2 * k))
    elems = {(tuple(p), float(s)) for p, s in zip(perms.tolist(), signs)}
    assert len(elems) == 4 * k * n
    g = torch.Generator().manual_seed(0)
    for a, b in torch.randint(len(perms), (50, 2), generator=g).tolist():  # (g_a g_b w)[j] = s_a s_b w[p_b[p_a[j]]]
        assert (tuple(perms[b][perms[a]].tolist()), float(signs[a] * signs[b])) in elems
    one, one_s = kolmogorov_symmetry_maps(n, [5], [3], [1], k=k)
    assert torch.equal(one[0], perms[(5 * 2 * k + 3) * 2 + 1]) and float(one_s[0]) == -1.0
    with pytest.raises(ValueError, match="divisible"):
        kolmogorov_symmetries(12, k=4)


# -- observation operators ---------------------------------------------------------------------
def test_observation_operator_units_layout_and_flags():
    op = NavierStokesObservation(16, noise_std=1.0)
    x = (_smooth_field(16) / 10).reshape(1, 256, 1)
    y = op(x)
    assert y.shape == (1, 64, 1)
    w = op.solver.solve(10 * x.reshape(1, 16, 16), 1.0)
    assert torch.allclose(y, w[:, ::2, ::2].reshape(1, 64, 1).to(y.dtype), atol=1e-6)
    ym = op.measure(x, torch.Generator().manual_seed(0))
    assert 0.7 < float((ym - y).std()) < 1.3  # noise std in physical vorticity units
    with pytest.raises(NotDifferentiableError):
        op(x.clone().requires_grad_(True))
    with pytest.raises(ShapeError):
        op(torch.zeros(1, 100, 1))


def test_departure_points_of_a_decaying_shear_flow_are_exact():
    # w = a sin(y) (unforced): psi = a sin(y), u = a cos(y) e^{-nu t}, v = 0, so a parcel at (y, x) at T started at
    # (y, x - a cos(y) (1 - e^{-nu T}) / nu); rows are y, columns x
    ns = NavierStokes2D(32, forcing=None, dtype=torch.float64)
    a, t_final = 1.5, 1.0
    y = torch.arange(32, dtype=torch.float64) * ns.h
    w0 = (a * torch.sin(y))[:, None].expand(32, 32).clone()
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([y[torch.randint(0, 32, (20,), generator=g)], 2 * math.pi * torch.rand(20, generator=g,
                                                                                          dtype=torch.float64)], 1)
    dep = ns.departure_points(w0, pts, t_final, substeps=20)
    shift = a * torch.cos(pts[:, 0]) * (1 - math.exp(-ns.nu * t_final)) / ns.nu
    want = torch.stack([pts[:, 0], (pts[:, 1] - shift) % (2 * math.pi)], 1)
    d = (dep - want).abs()
    assert float(torch.minimum(d, 2 * math.pi - d).max()) < 1e-3 * float(shift.abs().max())
    # at rest a parcel stays where it is; a Lagrangian localization moves the observed points, not the unknowns
    assert torch.allclose(ns.departure_points(torch.zeros(32, 32, dtype=torch.float64), pts), pts % (2 * math.pi))
    op = NavierStokesObservation(32, solver=ns)
    lag, eul = op.localization(1.0, flow=w0 / op.scale), op.localization(1.0)
    assert torch.equal(lag.x_points, eul.x_points) and not torch.allclose(lag.y_points, eul.y_points)
    i = torch.arange(16) * 2   # observed rows: their departure points keep y and move along x by the exact shift
    sy = a * torch.cos(i * ns.h) * (1 - math.exp(-ns.nu)) / ns.nu
    dx = (eul.y_points[:, 1] - lag.y_points[:, 1]).reshape(16, 16) - sy[:, None].double()
    assert float(torch.remainder(dx + math.pi, 2 * math.pi).sub(math.pi).abs().max()) < 1e-3
    with pytest.raises(ShapeError):
        op.localization(1.0, flow=torch.zeros(100))
    with pytest.raises(ShapeError):
        ns.departure_points(w0, pts[:, :1])


def test_differentiable_variant_gradient_matches_finite_differences():
    solver = NavierStokes2D(16, dtype=torch.float64)
    op = NavierStokesObservation(16, t_final=0.2, solver=solver, differentiable=True)
    x = (_smooth_field(16, seed=3) / 10).reshape(1, 256, 1)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    loss = (op(xr) ** 2).sum()
    (g,) = torch.autograd.grad(loss, xr)
    eps = 1e-6
    fd = float(((op(x + eps * v) ** 2).sum() - (op(x - eps * v) ** 2).sum()) / (2 * eps))
    # adaptive steps are held fixed in the gradient: agreement to the (small) dt-sensitivity
    assert abs(float((g * v).sum()) - fd) < 1e-3 * abs(fd), (float((g * v).sum()), fd)


# -- data ----------------------------------------------------------------------------------------
def test_grf_variance_and_determinism():
    g = grf_torus(400, 16, generator=torch.Generator().manual_seed(0), std=2.0)
    assert abs(float(g.std()) - 2.0) < 0.1
    assert abs(float(g.mean())) < 0.1
    a = generate(3, 16, seed=5, t_spinup=0.2, batch_size=2)
    b = generate(2, 16, seed=5, t_spinup=0.2, batch_size=8)
    assert torch.allclose(a[:2], b, atol=1e-5)  # per-field generators: independent of batching
    c = generate(2, 16, seed=6, t_spinup=0.2)
    assert not torch.allclose(b, c)


@pytest.mark.slow
def test_datasets_cli_writes_train_and_test(tmp_path):
    from geoinv.cli import main
    from geoinv.fluids import load_fields

    assert main(["datasets", "navier-stokes", "--n", "2", "--n-test", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    tr = load_fields("train", 64, tmp_path, generate_missing=False)
    te = load_fields("test", 64, tmp_path, generate_missing=False)
    assert tr.shape == (2, 64, 64) and te.shape == (1, 64, 64)
    assert 2 < float(tr.std()) < 10  # forced turbulence after 5 time units, |w| of order 10
    assert not torch.allclose(tr[:1], te)


def test_training_config_parses():
    from pathlib import Path

    from geoinv.training import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "navier-stokes.yaml")
    assert cfg.data.name == "navier-stokes" and cfg.model.unet.periodic == (True, True)


# -- ensemble Kalman ----------------------------------------------------------------------------------
def test_kalman_update_is_the_statistically_linearised_gradient_step():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 1, generator=g, dtype=torch.float64)
    a = torch.randn(3, 5, generator=g, dtype=torch.float64)
    ys = (x[..., 0] @ a.T)[..., None]
    y = torch.randn(1, 3, 1, generator=g, dtype=torch.float64)
    new, misfit = ensemble_kalman_update(x, ys, y, 0.5)
    dx, dy = (x - x.mean(0)).flatten(1), (ys - ys.mean(0)).flatten(1)
    e = (ys - y).flatten(1)
    c = e @ dy.T / 8
    expected = x.flatten(1) - 0.5 / torch.linalg.matrix_norm(c) * (e @ (dy.T @ dx) / 8)  # -w C^{xy} e / ||C||
    assert torch.allclose(new.flatten(1), expected)
    assert torch.allclose(misfit, (e * e).sum(1))


def test_eki_fits_a_linear_problem_and_counts_work():
    from geoinv.operators import FunctionOperator
    from geoinv.priors import GaussianPrior

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 6, generator=g, dtype=torch.float64)
    op = FunctionOperator(lambda x: (x[..., 0] @ a.T)[..., None])
    prior = GaussianPrior(torch.zeros(6, 1, dtype=torch.float64), cov=torch.eye(6, dtype=torch.float64))
    x_true = torch.randn(1, 6, 1, generator=g, dtype=torch.float64)
    y = op(x_true)
    r = EKI(num_iters=60, guidance_scale=1.0)(y, op, prior, n_samples=32, generator=g)
    res0 = float((op(prior.sample(32, generator=torch.Generator().manual_seed(1))) - y).norm(dim=1).mean())
    res = float((op(r.samples) - y).norm(dim=1).mean())
    assert res < 0.05 * res0
    assert (r.nfe, r.n_forward, r.forward_rounds) == (0, 32 * 60, 60)


def test_benchmark_metrics_by_hand():
    """Per-particle and ensemble-mean relative L2, the fine-scale part, spread / error, and the oracle's error."""
    from geoinv.bench._navier_stokes import FINE_K, _metrics

    n = 64
    g = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    t = (torch.cos(2 * g)[None, :] + 0.5 * torch.cos(20 * g)[None, :]).expand(n, n)     # ||t||^2 / n^2 = 1/2 + 1/8
    a = 0.1 * torch.cos(3 * g)[:, None].expand(n, n)                                  # a coarse error, +-
    b = 0.2 * torch.cos(18 * g)[:, None].expand(n, n)                                 # a fine one, shared
    m = _metrics(torch.stack([t + a + b, t - a + b]).reshape(2, -1, 1), t.reshape(-1, 1))
    # the mean is t + b: its error is all fine-scale, b^2 averages 0.02; a^2 averages 0.005
    assert FINE_K == 16
    assert m["rel_l2_mean"] == pytest.approx(math.sqrt(0.02 / 0.625)) and m["rel_l2_fine"] == pytest.approx(m["rel_l2_mean"])
    assert m["rel_l2"] == pytest.approx(math.sqrt((0.005 + 0.02) / 0.625))            # both particles: coarse + fine
    assert m["spread_skill"] == pytest.approx(math.sqrt(2 * 0.005) / math.sqrt(0.02))  # std over 2 = |d_coarse| sqrt 2
    oracle = _metrics(torch.zeros(1, n * n, 1, dtype=torch.float64), t.reshape(-1, 1))["rel_l2_fine"]
    assert oracle == pytest.approx(math.sqrt(0.125 / 0.625))                          # 0.5 cos(20 x) is finer than 16


# -- scale-out -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dask_operator_matches_in_process():
    distributed = pytest.importorskip("distributed")
    from geoinv.fluids import DaskOperator

    op = NavierStokesObservation(16, t_final=0.5)
    x = torch.stack([_smooth_field(16, seed=s) / 10 for s in range(5)]).reshape(5, 256, 1)
    expected = op(x)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        dop = DaskOperator(op, client, chunks=3)
        got = dop(x)
        assert dop.differentiable is False and dop.noise_std == op.noise_std
        with pytest.raises(NotDifferentiableError):
            dop(x.clone().requires_grad_(True))
    # same numbers up to float32 round-off (batched FFT/SIMD paths differ with the chunk size)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), float((got - expected).abs().max())


# -- derivative-free multiscale Gauss-Newton ----------------------------------------------------------
def _stationary(n=8, seed=0):
    from geoinv.fluids import StationaryGaussian

    return StationaryGaussian.fit(grf_torus(400, n, alpha=3.0, tau=3.0, generator=torch.Generator().manual_seed(seed)))


def test_stationary_gaussian_whitens_and_has_the_fitted_spectrum():
    g = _stationary()
    xi = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xi = xi - xi.mean((1, 2), keepdim=True)  # the GRF training fields have no mean mode: it has zero std
    assert float(g.mode_std[0, 0]) < 1e-12 * float(g.mode_std.max())
    assert torch.allclose(g.to_xi(g.to_x(xi)), xi, atol=1e-10)
    z = g.to_x(torch.randn(20_000, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    emp = (torch.fft.fft2(z - g.mean).abs() ** 2).mean(0).sqrt() / 8
    assert torch.allclose(emp, g.mode_std, rtol=0.03, atol=1e-3 * float(g.mode_std.max()))


def test_fourier_basis_is_orthonormal_and_spans_the_square_band():
    from geoinv.fluids import fourier_basis

    b = fourier_basis(8, 2).flatten(1)
    assert b.shape == (25, 64)
    assert torch.allclose(b @ b.T, torch.eye(25, dtype=b.dtype), atol=1e-12)
    v = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    proj = (b.T @ (b @ v.flatten())).reshape(8, 8)
    f = torch.fft.fftfreq(8, 1 / 8).abs()
    band = (torch.maximum(f[:, None], f[None, :]) <= 2).to(torch.complex128)
    assert torch.allclose(proj, torch.fft.ifft2(torch.fft.fft2(v) * band).real, atol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        fourier_basis(8, 4)


def test_lowpass_damps_a_cosine_by_the_gaussian_factor():
    from geoinv.fluids import lowpass

    g = 2 * math.pi * torch.arange(16, dtype=torch.float64) / 16
    c = torch.cos(3 * g)[None, :].expand(16, 16).reshape(1, -1)
    assert torch.allclose(lowpass(c, 2.0, (16, 16)), math.exp(-9 / 8) * c, atol=1e-12)
    assert lowpass(c, 0.0, (16, 16)) is c


def test_stage_misfit_scale_is_the_std_of_low_passed_white_noise():
    from geoinv.fluids import lowpass, stage_misfit_scale

    noise = torch.randn(4000, 1024, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for kappa in (1.0, 3.0, 8.0):
        emp = float(lowpass(noise, kappa, (32, 32)).std())
        assert stage_misfit_scale(1.0, kappa, (32, 32), floor=0.0) == pytest.approx(emp, rel=0.02)
    # small kappa: the filter passes about pi kappa^2 of the M modes
    assert stage_misfit_scale(2.0, 2.0, (32, 32)) == pytest.approx(2 * math.sqrt(4 * math.pi / 1024), rel=1e-3)
    # noise-free data (at or below the floor) and the unfiltered stage keep the given scale
    assert stage_misfit_scale(0.05, 1.0, (32, 32)) == 0.05 and stage_misfit_scale(0.02, 3.0, (32, 32)) == 0.02
    assert stage_misfit_scale(1.5, 0.0, (32, 32)) == 1.5
    assert stage_misfit_scale(0.5, 1.0, (32, 32)) == 0.05                     # 0.5 * 0.055 is below the floor


class _LinearGridObservation:
    """y = (heat-smoothed x)[::2, ::2] on an n x n torus: a linear black box with obs_shape and noise_std."""

    noise_std = 0.3

    def __init__(self, n=8):
        self.n, self.obs_shape = n, (n // 2, n // 2)
        f = torch.fft.fftfreq(n, 1 / n)
        self.kernel = torch.exp(-0.05 * (f[:, None] ** 2 + f[None, :] ** 2))

    def __call__(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise AssertionError("the black box must not be differentiated")
        v = torch.fft.ifft2(torch.fft.fft2(x.reshape(-1, self.n, self.n)) * self.kernel).real
        return v[:, ::2, ::2].reshape(x.shape[0], -1)


def test_gauss_newton_reaches_the_exact_map_of_a_linear_gaussian_problem():
    """For a linear operator the finite differences are exact and Levenberg-Marquardt converges to the MAP."""
    from geoinv.fluids import fourier_basis, multiscale_gauss_newton, stage_misfit_scale

    g, op = _stationary(), _LinearGridObservation()
    xt = g.to_x(torch.randn(8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    y = op(xt.reshape(1, 64, 1)) + 0.3 * torch.randn(1, 16, generator=torch.Generator().manual_seed(4),
                                                       dtype=torch.float64)
    y0 = y.clone()
    res = multiscale_gauss_newton(y, op, g, stages=((1, 1.0), (3, 0.0)), iters=(4, 12), progress=False)
    assert torch.equal(y, y0)
    # exact MAP over the last stage's subspace: x = mean + C^(1/2) B^T a, min |H x - y|^2 / (2 s^2) + |a|^2 / 2
    b = fourier_basis(8, 3)
    cols = op(g.apply_sqrt(b).reshape(-1, 64, 1))                                  # (p, M): H C^(1/2) b_i
    r0 = op(g.mean.reshape(1, 64, 1)) - y
    s2 = 0.3**2
    a = torch.linalg.solve(cols @ cols.T / s2 + torch.eye(b.shape[0], dtype=torch.float64), -(cols @ r0[0]) / s2)
    x_map = g.to_x(torch.einsum("p,pij->ij", a, b)).reshape(1, 64, 1)
    assert float((res.x - x_map).norm() / x_map.norm()) < 1e-6
    # each step: one batched round of p + 1 evaluations; damping trials and stage misfits: one each
    assert res.n_forward == res.forward_rounds + 4 * 9 + 12 * 49
    assert [t["p"] for t in res.trace] == [9, 49]
    # the coarse stage fitted the low-passed residual at the scale of the noise its filter passes
    assert [t["sigma"] for t in res.trace] == [stage_misfit_scale(0.3, 1.0, (4, 4)), 0.3]
    assert res.trace[0]["sigma"] < 0.3
    # a warm start (x_start) in the band, far from the MAP, reaches it in one stage; the caller's start is untouched
    a0 = 3 * torch.randn(b.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    start = g.to_x(torch.einsum("p,pij->ij", a0, b)).reshape(1, 64, 1)
    start0 = start.clone()
    warm = multiscale_gauss_newton(y, op, g, stages=((3, 0.0),), iters=12, x_start=start, progress=False)
    assert torch.equal(start, start0)
    assert float((start - x_map).norm() / x_map.norm()) > 1
    assert float((warm.x - x_map).norm() / x_map.norm()) < 1e-6


def test_gauss_newton_inverts_a_short_navier_stokes_horizon_without_gradients():
    from geoinv.fluids import StationaryGaussian, multiscale_gauss_newton

    n = 16
    fields = torch.stack([_smooth_field(n, seed=s) for s in range(40)]) / 10
    g = StationaryGaussian.fit(fields)
    op = NavierStokesObservation(n, t_final=0.1, solver=NavierStokes2D(n, cfl=0.5))   # black box: raises on autograd
    xt = (_smooth_field(n, seed=99) / 10).double().reshape(1, -1, 1)
    y = op(xt).double()
    res = multiscale_gauss_newton(y, op, g, stages=((2, 1.0), (5, 0.0)), iters=3, progress=False)
    base = float((op(g.mean.reshape(1, -1, 1)) - y).norm() / y.norm())
    assert res.trace[-1]["rel_misfit"] < 0.1 * base
    assert float((res.x - xt).norm() / xt.norm()) < 0.5


def test_gauss_newton_input_errors():
    from geoinv.fluids import multiscale_gauss_newton

    g, op = _stationary(), _LinearGridObservation()
    with pytest.raises(ShapeError, match="obs_shape"):
        multiscale_gauss_newton(torch.zeros(1, 15), op, g, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        multiscale_gauss_newton(torch.full((1, 16), float("nan")), op, g, progress=False)
    with pytest.raises(ValueError, match="one per stage"):
        multiscale_gauss_newton(torch.zeros(1, 16), op, g, iters=(2, 2), progress=False)
    with pytest.raises(ShapeError, match="prior is for 8 x 8"):
        multiscale_gauss_newton(torch.zeros(1, 64), _LinearGridObservation(16), g, progress=False)
    with pytest.raises(ShapeError, match="x_start"):
        multiscale_gauss_newton(torch.zeros(1, 16), op, g, x_start=torch.zeros(1, 63, 1), progress=False)
    with pytest.raises(ShapeError, match="x_start"):
        multiscale_gauss_newton(torch.zeros(1, 16), op, g, x_start=torch.full((1, 64, 1), float("nan")),
                                progress=False)
    # default steps: DEFAULT_ITERS with the default stages (needs n >= 44), else 2 per stage
    stages = ((1, 1.0), (2, 0.0))
    a = multiscale_gauss_newton(torch.ones(1, 16), op, g, stages=stages, progress=False)
    b = multiscale_gauss_newton(torch.ones(1, 16), op, g, stages=stages, iters=2, progress=False)
    assert torch.equal(a.x, b.x) and a.n_forward == b.n_forward


def test_linearize_reproduces_a_linear_black_box_and_its_tangent_has_the_adjoint():
    from geoinv.fluids import StationaryGaussian, linearize
    from geoinv.operators import FunctionOperator, adjointness_error

    g, op = _stationary(), _LinearGridObservation()
    gen = torch.Generator().manual_seed(5)
    xs = g.to_x(torch.randn(8, 8, generator=gen, dtype=torch.float64)).reshape(1, 64, 1)
    x0 = xs.clone()
    lin = linearize(op, g, xs, band=3)
    assert torch.equal(xs, x0)
    assert (lin.n_forward, lin.forward_rounds, lin.jac.shape, lin.noise_std) == (49, 1, (48, 16), 0.3)
    # finite differences of a linear map are exact: in the band, the surrogate is the black box
    dx = torch.einsum("kp,pij->kij", torch.randn(5, 48, generator=gen, dtype=torch.float64), lin.basis)
    x = xs + dx.reshape(5, 64, 1)
    assert lin(x).shape == op(x).shape
    assert float((lin(x) - op(x)).abs().max()) < 1e-9 * float(op(x).abs().max())
    # a mode outside the band (the Nyquist cosine) does not move it, though it moves the black box
    nyq = torch.cos(math.pi * torch.arange(8, dtype=torch.float64)).expand(8, 8).reshape(1, 64, 1)
    assert torch.allclose(lin(xs + nyq), lin(xs), atol=1e-12) and not torch.allclose(op(xs + nyq), op(xs))
    # the linear part and its adjoint; autograd through the surrogate gives the same gradient
    tangent = FunctionOperator(lin.tangent, differentiable=True, linear=True, adjoint=lin.tangent_adjoint)
    assert adjointness_error(tangent, (3, 64, 1), generator=gen) < 1e-12
    xg = x.clone().requires_grad_(True)
    r = lin(xg) - op(x0)
    (0.5 * r.pow(2).sum()).backward()
    assert torch.allclose(xg.grad, lin.tangent_adjoint(r.detach()), atol=1e-10)
    with pytest.raises(ShapeError, match="x_start"):
        linearize(op, g, torch.zeros(1, 63, 1))
    # a mode with a negligible (round-off) prior std is left out, one with a small real std is kept
    for rel, p in ((1e-8, 48), (1e-3, 49)):
        std = g.mode_std.clone()
        std[0, 0] = rel * float(std.max())
        assert linearize(op, StationaryGaussian(g.mean, std), xs, band=3).jac.shape[0] == p


class _QuadraticGridObservation(_LinearGridObservation):
    """A smooth nonlinear black box: the linear one plus 0.2 times its square."""

    def __call__(self, x):
        v = super().__call__(x)
        return v + 0.2 * v**2


def test_broyden_gauss_newton_reaches_the_linear_map_and_keeps_the_secant_condition():
    from geoinv.fluids import broyden_gauss_newton, fourier_basis, linearize

    g, op = _stationary(), _LinearGridObservation()
    y = op(g.to_x(torch.randn(8, 8, generator=torch.Generator().manual_seed(3),
                              dtype=torch.float64)).reshape(1, 64, 1))
    y = y + 0.3 * torch.randn(1, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    b = fourier_basis(8, 3)
    start = g.to_x(torch.einsum("p,pij->ij", 3 * torch.randn(49, generator=torch.Generator().manual_seed(5),
                                                             dtype=torch.float64), b)).reshape(1, 64, 1)
    # the exact MAP over the band (as in the Gauss-Newton test above)
    cols = op(g.apply_sqrt(b).reshape(-1, 64, 1))
    a = torch.linalg.solve(cols @ cols.T / 0.09 + torch.eye(49, dtype=torch.float64),
                           -(cols @ (op(g.mean.reshape(1, 64, 1)) - y)[0]) / 0.09)
    x_map = g.to_x(torch.einsum("p,pij->ij", a, b))
    lin = linearize(op, g, start, band=3)
    y0, jac0 = y.clone(), lin.jac.clone()
    out = broyden_gauss_newton(y, op, lin, iters=30, progress=False)
    assert torch.equal(y, y0) and torch.equal(lin.jac, jac0)                         # inputs untouched
    assert float((out.x_start - x_map).norm() / x_map.norm()) < 1e-6
    # a linear map's secants are its Jacobian: the updates leave it as it was (up to round-off, amplified by the
    # tiny last steps); each trial costs one evaluation
    assert float((out.jac - jac0).abs().max()) < 1e-6 * float(jac0.abs().max())
    assert out.n_forward - lin.n_forward == out.forward_rounds - lin.forward_rounds > 0
    assert torch.allclose(out.y_start, op(out.x_start.reshape(1, 64, 1))[0])

    # a nonlinear black box: one accepted step fixes the Jacobian along the step (the secant) and nowhere else
    qop = _QuadraticGridObservation()
    qlin = linearize(qop, g, start, band=3)
    one = broyden_gauss_newton(y, qop, qlin, iters=1, progress=False)
    step = one.xi_start - qlin.xi_start
    assert float(step.norm()) > 0.1
    assert torch.allclose(step @ one.jac, one.y_start - qlin.y_start, atol=1e-10)
    ortho = torch.randn(3, step.shape[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ortho = ortho - (ortho @ step)[:, None] * step / step.pow(2).sum()
    assert torch.allclose(ortho @ one.jac, ortho @ qlin.jac, atol=1e-10)

    def phi(lz):
        return float(((lz.y_start - y[0]) / 0.3).pow(2).sum() + lz.xi_start.pow(2).sum())

    more = broyden_gauss_newton(y, qop, qlin, iters=10, progress=False)
    assert phi(more) < phi(one) < phi(qlin)
    with pytest.raises(TypeError, match="Linearization"):
        broyden_gauss_newton(y, qop, qop, progress=False)
    with pytest.raises(ValueError, match="iters"):
        broyden_gauss_newton(y, qop, qlin, iters=-1, progress=False)


class _LinearGaussianCase:
    """The stationary Gaussian's exact prior with the linear black box on the 8 x 8 torus, and its closed-form
    posterior: where the linearization is exact and the Gaussian prior's denoiser is exact."""

    def __init__(self):
        from geoinv.priors import GaussianPrior

        self.g, self.op = _stationary(), _LinearGridObservation()
        n = 8
        eye = torch.eye(n * n, dtype=torch.float64)
        self.a = self.op(eye.reshape(-1, n * n, 1)).T                                  # (M, N)
        root = self.g.apply_sqrt(eye.reshape(-1, n, n)).reshape(-1, n * n).T
        self.cov, self.m = root @ root.T, self.g.mean.reshape(-1)
        self.prior = GaussianPrior(self.m.reshape(-1, 1), self.cov + 1e-9 * eye)
        self.xt = self.g.to_x(torch.randn(n, n, generator=torch.Generator().manual_seed(3),
                                          dtype=torch.float64)).reshape(-1)

    def measure(self, noise):
        return (self.a @ self.xt + noise * torch.randn(16, generator=torch.Generator().manual_seed(4),
                                                       dtype=torch.float64))[None]

    def posterior(self, y, noise):
        """Closed-form posterior mean and std, shape (N,) each."""
        a, cov = self.a, self.cov
        gain = cov @ a.T @ torch.linalg.inv(a @ cov @ a.T + noise**2 * torch.eye(16, dtype=torch.float64))
        return self.m + gain @ (y[0] - a @ self.m), (cov - gain @ a @ cov).diagonal().clamp_min(0).sqrt()


def test_gauss_newton_diffusion_samples_the_exact_linear_gaussian_posterior():
    # With the exact denoiser of a Gaussian prior and a linear black box the linearization is exact, and the
    # denoise / conditional-draw / re-noise chain must sample the closed-form posterior: mean and spread.
    from geoinv.fluids import gauss_newton_diffusion

    case = _LinearGaussianCase()
    g, op, prior, m = case.g, case.op, case.prior, case.m
    for noise in (0.3, 0.02):  # data weaker / stronger than the prior
        y = case.measure(noise)
        post_mean, post_sd = case.posterior(y, noise)
        x_start, y0 = m.reshape(1, -1, 1).clone(), y.clone()
        r = gauss_newton_diffusion(y, op, g, prior, x_start, n_samples=2000, sigma_max=1.0, sigma=noise, band=3,
                                   progress=False, generator=torch.Generator().manual_seed(0))
        assert torch.equal(y, y0) and torch.equal(x_start, m.reshape(1, -1, 1))
        # one batched call: the 48 modes of the band with prior variance (not the mean mode) plus the start
        assert (r.n_forward, r.forward_rounds, r.nfe) == (48 + 1, 1, 2000 * 40)
        ok = post_sd > 1e-6  # the band's 49 modes carry the prior; the Nyquist modes have (almost) no variance
        z = ((r.mean[:, 0] - post_mean) / post_sd)[ok]
        # Monte-Carlo error of a 2000-sample mean: 0.022 posterior stds per point; 40 Karras steps add a little
        assert float(z.pow(2).mean().sqrt()) < 0.15 and float(z.abs().max()) < 0.35
        assert 0.9 < float((r.std[:, 0][ok] / post_sd[ok]).mean()) < 1.15
    # a linearization passed as the operator is used as it is: the same samples, no black-box evaluation
    from geoinv.fluids import linearize

    kw = {"n_samples": 50, "sigma_max": 1.0, "sigma": noise, "band": 3, "num_steps": 8, "progress": False}
    ref = gauss_newton_diffusion(y, op, g, prior, x_start, generator=torch.Generator().manual_seed(1), **kw)
    own = gauss_newton_diffusion(y, linearize(op, g, x_start, band=3), g, prior, x_start,
                                 generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(own.samples, ref.samples, atol=1e-9) and (own.n_forward, own.forward_rounds) == (0, 0)
    # the mode instead of draws: the mean stays, the spread collapses
    r = gauss_newton_diffusion(y, op, g, prior, x_start, n_samples=500, sigma_max=1.0, sigma=0.02, band=3,
                               sample=False, progress=False, generator=torch.Generator().manual_seed(0))
    assert float((r.std[:, 0][ok] / post_sd[ok]).mean()) < 0.8


def test_assimilate_samples_the_exact_posterior_through_the_gauss_newton_pipeline():
    """One call: Gauss-Newton, then the linearized diffusion sampler from its estimate; posterior as grid signals."""
    from geoinv.fluids import assimilate, gauss_newton_diffusion, multiscale_gauss_newton
    from geoinv.signals import GridSignal

    case = _LinearGaussianCase()
    g, op, prior = case.g, case.op, case.prior
    y = case.measure(0.3)
    y0 = y.clone()
    post_mean, post_sd = case.posterior(y, 0.3)
    kw, gn_kw = {"sigma_max": 1.0, "band": 3}, {"stages": ((1, 1.0), (3, 0.0)), "iters": (4, 12)}
    post = assimilate(y, op, prior=prior, gauss=g, n_samples=2000, symmetries=False, progress=False,
                      generator=torch.Generator().manual_seed(0), **kw, **gn_kw)
    assert torch.equal(y, y0)
    # the same numbers as the two steps by hand
    gn = multiscale_gauss_newton(y, op, g, progress=False, **gn_kw)
    res = gauss_newton_diffusion(y, op, g, prior, gn.x, n_samples=2000, progress=False,
                                 generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(post.samples, res.samples)
    assert isinstance(post.mean, GridSignal) and post.mean.periodic and post.mean.values.shape == (1, 1, 8, 8)
    # grid signals hold w0 / SCALE (the operator's input units, as the priors and geoinv.fluids.grid_signal)
    got, sd = post.mean.values.double().reshape(-1), post.std.values.double().reshape(-1)
    assert torch.allclose(got, res.mean.reshape(-1), atol=1e-6) and torch.allclose(sd, res.std.reshape(-1), atol=1e-6)
    # ... and they are the closed-form posterior (Monte-Carlo error of 2000 samples: 0.022 posterior stds)
    ok = post_sd > 1e-6
    z = ((got - post_mean) / post_sd)[ok]
    assert float(z.pow(2).mean().sqrt()) < 0.15 and 0.9 < float((sd[ok] / post_sd[ok]).mean()) < 1.15
    assert post.mask is None and post.stats["method"] == "gauss-newton-diffusion"
    assert post.stats["n_forward"] == gn.n_forward + res.n_forward and post.stats["nfe"] == 2000 * 40
    assert post.stats["forward_rounds"] == gn.forward_rounds + 1
    # the MAP only; and the denoiser averaged over the flow's 4 symmetries costs 4 evaluations per call
    gn_only = assimilate(y.reshape(4, 4), op, gauss=g, method="gauss-newton", progress=False, **gn_kw)
    assert gn_only.std is None and gn_only.stats["nfe"] == 0
    assert torch.allclose(gn_only.mean.values.double().reshape(-1), gn.x.reshape(-1), atol=1e-6)
    sym = assimilate(y, op, prior=prior, gauss=g, n_samples=3, progress=False, num_steps=5,
                     generator=torch.Generator().manual_seed(0), **gn_kw)
    assert sym.stats["nfe"] == 4 * 3 * 5
    # two passes: the second linearized at the first pass's mean, the generator carried on; costs add up
    two = assimilate(y, op, prior=prior, gauss=g, n_samples=500, symmetries=False, progress=False, passes=2,
                     generator=torch.Generator().manual_seed(0), **kw, **gn_kw)
    gen = torch.Generator().manual_seed(0)
    first = gauss_newton_diffusion(y, op, g, prior, gn.x, n_samples=500, progress=False, generator=gen, **kw)
    second = gauss_newton_diffusion(y, op, g, prior, first.mean[None], n_samples=500, progress=False, generator=gen,
                                    **kw)
    assert torch.equal(two.samples, second.samples) and not torch.equal(second.samples, first.samples)
    assert two.stats["n_forward"] == gn.n_forward + first.n_forward + second.n_forward
    assert two.stats["nfe"] == 2 * 500 * 40 and two.stats["forward_rounds"] == gn.forward_rounds + 2
    # a linear black box has the same linearization everywhere: the second pass samples the same posterior
    z2 = ((two.mean.values.double().reshape(-1) - post_mean) / post_sd)[ok]
    assert float(z2.pow(2).mean().sqrt()) < 0.25


def test_assimilate_input_errors():
    from geoinv.errors import DomainMismatchError
    from geoinv.fluids import assimilate

    case = _LinearGaussianCase()
    g, op, prior = case.g, case.op, case.prior
    y = case.measure(0.3)
    with pytest.raises(ValueError, match="unknown method"):
        assimilate(y, op, prior=prior, gauss=g, method="enkf", progress=False)
    bad = y.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        assimilate(bad, op, prior=prior, gauss=g, progress=False)
    with pytest.raises(DomainMismatchError, match="trained on domain"):   # the shipped 64 x 64 prior, an 8 x 8 grid
        assimilate(y, op, prior="navier-stokes", gauss=g, progress=False)
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        assimilate(y, op, prior=prior, gauss=g, passes=0, progress=False)
    with pytest.raises(TypeError, match="unknown options: chains"):
        assimilate(y, op, prior=prior, gauss=g, chains=4, progress=False)
    with pytest.raises(ShapeError, match="obs_shape"):
        assimilate(y, lambda x: x, prior=prior, gauss=g, progress=False)
    with pytest.raises(ShapeError, match="y must be"):
        assimilate(y[:, :15], op, prior=prior, gauss=g, progress=False)


def _trig_field(n, modes=((1, 2, 0.7), (-3, 1, -0.4), (0, 3, 1.1), (2, 0, 0.5))):
    """A real trigonometric polynomial sampled on the n x n grid of [0, 2 pi)^2 (rows = y), float64."""
    t = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    w = 0.3 + sum(a * torch.cos(ky * t[:, None] + kx * t[None, :] + 0.2 * kx) for ky, kx, a in modes)
    return w[None]


def test_spectral_resample_interpolates_band_limited_fields_exactly():
    from geoinv.operators import spectral_resample

    f = _trig_field(12)
    f0 = f.clone()
    for m in (12, 16, 30, 7, 8):   # up, down (to a grid that still resolves |k| <= 3), odd and even
        assert torch.allclose(spectral_resample(f, m), _trig_field(m), atol=1e-12), m
    assert torch.equal(f, f0) and spectral_resample(f.float(), 16).dtype == torch.float32
    # up and back down is the identity for a field of the coarse band; down keeps exactly the coarse band's modes
    w = _smooth_field(16).double()[None]
    back = spectral_resample(spectral_resample(w, 40), 16)
    fh = torch.fft.fft2(w)
    k = torch.fft.fftfreq(16, 1 / 16).abs()
    fh[:, (k[:, None] >= 8) | (k[None, :] >= 8)] = 0      # the Nyquist row and column have no partner: dropped
    band = torch.fft.ifft2(fh).real
    assert torch.allclose(back, band, atol=1e-12)
    low = spectral_resample(w, 6)
    fh[:, (k[:, None] >= 3) | (k[None, :] >= 3)] = 0
    assert torch.allclose(spectral_resample(low, 16), torch.fft.ifft2(fh).real, atol=1e-12)
    with pytest.raises(ShapeError, match="square"):
        spectral_resample(torch.zeros(1, 4, 6), 8)


def test_coarse_navier_stokes_observation_is_a_surrogate_of_the_fine_one():
    from geoinv.errors import NotDifferentiableError
    from geoinv.operators import SpectralLift
    from geoinv.operators._navier_stokes import kolmogorov_forcing

    fine = NavierStokesObservation(32, t_final=0.2, stride=2, noise_std=0.5, solver=NavierStokes2D(32, cfl=0.5))
    coarse = fine.at_resolution(16)
    assert (coarse.n, coarse.stride, coarse.t_final, coarse.noise_std, coarse.solver.cfl) == (16, 2, 0.2, 0.5, 0.5)
    assert torch.allclose(coarse.solver.forcing, kolmogorov_forcing(16), atol=1e-13)
    # a field of few modes: both grids resolve it, so the coarse operator sees the fine operator's every other
    # observed value (y[::2, ::2]) up to the coarse grid's truncation of the flow (1 % over 0.2 time units here)
    x = (_trig_field(16, ((1, 1, 2.0), (0, 2, -1.5), (1, -1, 1.0))) / 10).reshape(1, -1, 1)
    lift = SpectralLift(fine, 16)
    yf, yc = lift(x).reshape(16, 16), coarse(x).reshape(8, 8)

    def rel(a):
        return float((a - yc).norm() / yc.norm())
    assert rel(yf[::2, ::2]) < 0.02 and min(rel(yf[1::2, ::2]), rel(yf[::2, 1::2])) > 0.2   # the right points
    assert (lift.obs_shape, lift.noise_std, lift.n) == ((16, 16), 0.5, 16)
    with pytest.raises(NotDifferentiableError):
        lift(x.clone().requires_grad_(True))
    with pytest.raises(ShapeError, match="grid size"):
        SpectralLift(fine, 64)


def test_assimilate_multi_fidelity_path_equals_its_steps_and_recovers_the_field():
    """A prior for a coarser grid than the operator's: surrogate Gauss-Newton, refining steps through the fine black
    box, the linearized sampler there; the posterior on the fine grid."""
    from geoinv.errors import DomainMismatchError
    from geoinv.fluids import (StationaryGaussian, assimilate, broyden_gauss_newton, gauss_newton_diffusion, linearize,
                               multiscale_gauss_newton)
    from geoinv.operators import SpectralLift, spectral_resample
    from geoinv.priors import GaussianPrior

    m, n = 8, 16
    fields = torch.stack([_smooth_field(m, seed=s) for s in range(60)]).double() / 10
    g = StationaryGaussian.fit(fields)
    flat = fields.reshape(60, -1)
    prior = GaussianPrior(flat.mean(0)[:, None], torch.cov(flat.T) + 1e-6 * torch.eye(m * m, dtype=torch.float64))
    op = NavierStokesObservation(n, t_final=0.1, solver=NavierStokes2D(n, cfl=0.5))
    xt = (_smooth_field(m, seed=99) / 10).double()
    y = op(spectral_resample(xt[None], n).reshape(1, -1, 1)).double()
    y0 = y.clone()
    gn_kw, kw = {"stages": ((1, 1.0), (2, 0.0)), "iters": 3}, {"num_steps": 6, "sigma_max": 0.3}
    post = assimilate(y, op, prior=prior, gauss=g, n_samples=4, symmetries=False, progress=False, refine=1,
                      broyden=3, generator=torch.Generator().manual_seed(0), **gn_kw, **kw)
    assert torch.equal(y, y0)
    # by hand: the coarse surrogate on every other observed value, then a fresh Jacobian of the lifted black box and
    # three secant-updated steps with it
    coarse = multiscale_gauss_newton(y.reshape(1, 8, 8)[:, ::2, ::2].reshape(1, -1), op.at_resolution(m), g,
                                     progress=False, **gn_kw)
    lift = SpectralLift(op, m)
    lin = broyden_gauss_newton(y, lift, linearize(lift, g, coarse.x), iters=3, progress=False)
    gn = lin.x_start.reshape(1, -1, 1)
    res = gauss_newton_diffusion(y, lift, g, prior, gn, n_samples=4, progress=False,
                                 generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(post.samples, lift.lift(res.samples.double()), atol=1e-12)
    assert post.mean.values.shape == (1, 1, n, n) and post.stats["grid"] == m
    assert (post.stats["n_forward_surrogate"], post.stats["n_forward"]) == (coarse.n_forward,
                                                                            lin.n_forward + res.n_forward)
    # the estimate: the surrogate alone is off by the coarse solver's model error, the fine steps remove most of it
    def err(v):
        return float((v.reshape(m, m) - xt).norm() / xt.norm())
    got = float((post.mean.values.double().reshape(n, n) - spectral_resample(xt[None], n)[0]).norm() / xt.norm())
    assert err(gn) < 0.6 * err(coarse.x) and got < 0.1, (err(coarse.x), err(gn), got)
    # a prior for a grid that does not divide the operator's, or a black box without a coarse surrogate
    with pytest.raises(DomainMismatchError, match="multi-fidelity"):
        assimilate(torch.zeros(1, 36), NavierStokesObservation(12, t_final=0.1), prior=prior, gauss=g, progress=False)
    with pytest.raises(DomainMismatchError, match="multi-fidelity"):
        assimilate(torch.zeros(1, 16), _LinearGridObservation(), prior=prior, gauss=_stationary(4), progress=False)


def test_gauss_newton_diffusion_input_errors():
    from geoinv.fluids import gauss_newton_diffusion
    from geoinv.priors import GaussianPrior

    g, op = _stationary(), _LinearGridObservation()
    prior = GaussianPrior(torch.zeros(64, 1, dtype=torch.float64), torch.eye(64, dtype=torch.float64))
    with pytest.raises(ShapeError, match="x_start"):
        gauss_newton_diffusion(torch.zeros(1, 16), op, g, prior, torch.zeros(1, 64), progress=False)
    with pytest.raises(ShapeError, match="obs_shape"):
        gauss_newton_diffusion(torch.zeros(1, 15), op, g, prior, torch.zeros(1, 64, 1), progress=False)
    with pytest.raises(ValueError, match="lam > 0"):
        gauss_newton_diffusion(torch.zeros(1, 16), op, g, prior, torch.zeros(1, 64, 1), lam=0.0, progress=False)
