"""Conditional normalizing flows: invertibility, log-determinants, the KL objective, checkpoints.

The exactness problem: a ring of 8 points, a Gaussian prior with covariance
``exp(-d/2) + 0.05 I`` (``d`` the ring distance) and mean 0.3, points 1, 4 and 6 missing,
noise std 0.3 on the others. The flow (standard-normal base, measurement and mask as
input channels, so nothing of the Gaussian posterior is built in) is trained from
scratch with the real objective - fidelity + log q + the DSM bound of the prior evaluated
through ``GaussianPrior.denoise`` - and its posterior mean and std are compared with
``GaussianPrior.posterior``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from geoinv.errors import CheckpointError
from geoinv.flows import (
    ConditionalFlow,
    FlowConfig,
    FlowOptimConfig,
    dsm_bound,
    flow_loss,
    latent_basis,
    load_flow,
    save_flow,
    simulate_measurements,
)
from geoinv.priors import GaussianPrior

D, NOISE = 8, 0.3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ring_dist(d: int) -> torch.Tensor:
    i = torch.arange(d)
    dist = (i[:, None] - i[None, :]).abs().double()
    return torch.minimum(dist, d - dist)


def ring_prior(d: int = D) -> GaussianPrior:
    return GaussianPrior(0.3 * torch.ones(d, 1), torch.exp(-_ring_dist(d) / 2.0) + 0.05 * torch.eye(d))


def ring_refiner() -> GaussianPrior:
    """A second, different Gaussian standing in for the learned denoiser of a refined base."""
    return GaussianPrior(0.1 * torch.ones(D, 1), 0.7 * torch.exp(-_ring_dist(D) / 1.5) + 0.02 * torch.eye(D))


def _perturbed(flow: ConditionalFlow, seed: int = 0, scale: float = 0.3) -> ConditionalFlow:
    """Give the zero-initialised output layers random weights (an untrained flow is its base)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def _measure(prior, n, seed, missing=(0.2, 0.7)):
    x = prior.sample(n, torch.Generator().manual_seed(seed))
    y, m = simulate_measurements(x, missing=missing, noise_std=NOISE, generator=torch.Generator().manual_seed(seed + 1))
    return x, y, m


@pytest.mark.parametrize("base,context", [("gaussian", "gaussian"), ("standard", "raw")])
def test_inverse_of_forward_is_identity(base, context):
    prior = ring_prior()
    flow = _perturbed(ConditionalFlow(latent_basis(prior), FlowConfig(base=base, context=context, n_couplings=3,
                                                                      hidden=16, context_dim=16, noise_std=NOISE))).double()
    _, y, m = _measure(prior, 4, 0)
    z = torch.randn(4, 5, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x, _ = flow(z, y, m)
    assert x.shape == (4, 5, D, 1)
    z2 = flow.inverse(x, y, m)
    assert torch.allclose(z2, z, atol=1e-10, rtol=0)


def test_logdet_matches_autograd_jacobian():
    """log|det dx/dz| (latent log-det + sum log sqrt(lam)) against the autograd Jacobian, float64."""
    prior = ring_prior()
    flow = _perturbed(ConditionalFlow(latent_basis(prior), FlowConfig(n_couplings=3, hidden=16, context_dim=16,
                                                                      noise_std=NOISE)), seed=1).double()
    _, y, m = _measure(prior, 2, 3)
    z = torch.randn(2, 1, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, logdet = flow(z, y, m)
    for i in range(2):
        cond = flow.condition(y[i:i + 1], m[i:i + 1])
        f = lambda zz: flow.latent_forward(zz.reshape(1, 1, D), cond)[0].reshape(D)  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, z[i, 0])
        ref = torch.linalg.slogdet(jac)[1]
        assert abs(float(logdet[i, 0].detach() - ref)) < 1e-10, (float(logdet[i, 0]), float(ref))
        # the whole map z -> x: W = V sqrt(lam) with V orthonormal to float32 precision
        g = lambda zz: flow(zz.reshape(1, 1, D), y[i:i + 1], m[i:i + 1])[0].reshape(D)  # noqa: E731
        ref_x = torch.linalg.slogdet(torch.autograd.functional.jacobian(g, z[i, 0]))[1]
        assert abs(float(logdet[i, 0].detach() + flow.sqrt_lam.log().sum() - ref_x)) < 1e-6
    # and log_prob is the change-of-variables density of the samples
    x, ld = flow(z, y, m)
    lp = flow.log_prob(x, y, m)
    ref = -0.5 * (z**2).sum(-1) - 0.5 * D * math.log(2 * math.pi) - ld - flow.sqrt_lam.log().sum()
    assert torch.allclose(lp, ref, atol=1e-9)


def test_dsm_bound_gradient_is_gaussian_score():
    """For a Gaussian prior the DSM bound's gradient is -grad log p(x) = Sigma^{-1} (x - mu)."""
    prior = ring_prior()
    b = latent_basis(prior)
    gauss = (b["mean"].reshape(-1), b["eigvecs"], b["eigvals"])
    x = prior.sample(3, torch.Generator().manual_seed(0)).requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    val = dsm_bound(prior, x.repeat(400, 1, 1), sigma_min=0.05, sigma_max=3.0, gaussian=gauss, generator=g)
    (grad,) = torch.autograd.grad(val.sum() / 400, x)
    exact = ((x.detach() - prior.mean).reshape(3, -1) @ torch.linalg.inv(prior.covariance())).reshape(x.shape)
    # antithetic noise cancels the eps-linear term exactly; what is left is the sigma stratification
    assert float((grad - exact).norm() / exact.norm()) < 0.05


def test_dsm_bound_control_variate_same_expectation_less_variance():
    """The Gaussian control variate: exact for prior = control, unbiased and lower-variance otherwise."""
    ctrl = ring_prior()
    i = torch.arange(D)
    dist = (i[:, None] - i[None, :]).abs().double()
    dist = torch.minimum(dist, D - dist)
    other = GaussianPrior(0.2 * torch.ones(D, 1), 1.3 * torch.exp(-dist / 3.0) + 0.05 * torch.eye(D))
    b = latent_basis(ctrl)
    gauss = (b["mean"].reshape(-1), b["eigvecs"], b["eigvals"])
    x = ctrl.sample(2, torch.Generator().manual_seed(0))
    kw = dict(sigma_min=0.05, sigma_max=3.0, gaussian=gauss)
    # prior = control: the estimate is the Gaussian's exact -log p (+ const), whatever the draw
    exact = dsm_bound(ctrl, x, control=ctrl, generator=torch.Generator().manual_seed(5), **kw)
    lp = ctrl.log_prob(x)
    assert abs(float((exact[0] - exact[1]) + (lp[0] - lp[1]))) < 1e-9
    # another prior: same expectation as the plain estimator, up to an x-independent constant
    # (compare the difference between two signals), far smaller spread
    n = 4000
    xr = x.repeat_interleave(n, 0)
    plain = dsm_bound(other, xr, generator=torch.Generator().manual_seed(1), **kw).reshape(2, n)
    cv = dsm_bound(other, xr, control=ctrl, generator=torch.Generator().manual_seed(2), **kw).reshape(2, n)
    d_plain, d_cv = plain[0] - plain[1], cv[0] - cv[1]
    se = (d_plain.var() / n + d_cv.var() / n).sqrt()
    assert abs(float(d_plain.mean() - d_cv.mean())) < 4 * float(se)
    assert float(cv.var(1).max()) < 0.05 * float(plain.var(1).min())
    # a low-rank (PPCA) control: its closed-form term is the Monte-Carlo mean of its own estimator
    from geoinv.flows import gaussian_dsm_term

    ppca = GaussianPrior.fit(ctrl.sample(200, torch.Generator().manual_seed(7)), rank=3)
    mc = dsm_bound(ppca, xr, sigma_min=0.05, sigma_max=3.0, generator=torch.Generator().manual_seed(8))
    mc = (mc - ((xr - ppca.mean) ** 2).flatten(1).sum(1) / (2 * 3.0**2)).reshape(2, n)  # drop the upper tail
    gt = gaussian_dsm_term(ppca, x, 0.05, 3.0)
    se = float((mc[0] - mc[1]).std() / n**0.5)
    assert abs(float((mc[0] - mc[1]).mean() - (gt[0] - gt[1]))) < 4 * se


def test_trained_flow_matches_gaussian_posterior():
    """Train from scratch (~10 s) with the unsupervised KL objective; compare with the exact posterior.

    Tolerances: posterior mean within 0.25 posterior std at every point (max over 16
    held-out measurements; the rms error is about 0.05 std) and the flow's std within
    15 % of the exact std (Monte-Carlo error of 8192 samples: < 2 %).
    """
    prior = ring_prior()
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(base="standard", context="raw", n_couplings=4, hidden=32,
                                                           context_dim=32, noise_std=NOISE))
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    steps, lr = 600, 1e-2
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        x = prior.sample(64, g).float()
        y = torch.where(mask[:, None], x + NOISE * torch.randn(x.shape, generator=g), torch.zeros(()))
        loss = flow_loss(flow, prior, y, mask.expand(64, D), n_z=4, sigma_min=1e-3, sigma_max=100.0, n_sigma=2,
                         generator=g)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        sched.step()
    flow.eval()
    xt = prior.sample(16, torch.Generator().manual_seed(5)).float()
    yt = torch.where(mask[:, None], xt + NOISE * torch.randn(xt.shape, generator=torch.Generator().manual_seed(6)),
                     torch.zeros(()))
    mean, std = flow.posterior(yt, mask, 8192, generator=torch.Generator().manual_seed(1))
    em, es, _ = prior.posterior(yt.double(), mask, NOISE)
    z = (mean.double() - em) / es
    assert float(z.abs().max()) < 0.25, float(z.abs().max())
    ratio = std.double() / es
    assert 0.85 < float(ratio.min()) and float(ratio.max()) < 1.15, (float(ratio.min()), float(ratio.max()))


def test_gaussian_base_is_exact_posterior_and_training_keeps_it():
    """With the Gaussian base an untrained flow is the exact posterior; KL training must not move it away."""
    from geoinv.flows._train import FlowOptimConfig, fit_flow

    prior = ring_prior()
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(n_couplings=2, hidden=16, context_dim=16, noise_std=NOISE))
    xtr = prior.sample(512, torch.Generator().manual_seed(0)).float()
    ema, stats = fit_flow(flow, prior, xtr, FlowOptimConfig(steps=60, batch_size=32, n_z=4, lr=1e-3, warmup=10,
                                                           sigma_min=1e-3, sigma_max=100.0))
    assert stats["train_steps"] == 60
    _, y, m = _measure(prior, 8, 11, missing=(0.4, 0.4))
    mean, std = ema.posterior(y.float(), m, 8192, generator=torch.Generator().manual_seed(2))
    em, es, _ = prior.posterior(y, m, NOISE)
    assert float(((mean.double() - em) / es).abs().max()) < 0.15
    assert float((std.double() / es - 1).abs().max()) < 0.1


def test_refined_base_is_the_priors_tweedie_estimate_of_the_gaussian_mean(tmp_path):
    """base='refined': latent mean = encode(D(Gaussian posterior mean; c * rms posterior std)), same covariance."""
    prior = ring_prior()
    refiner = ring_refiner()
    cfg = dict(n_couplings=2, hidden=16, context_dim=16, noise_std=NOISE)
    gauss = ConditionalFlow(latent_basis(prior), FlowConfig(**cfg)).double()
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(base="refined", refine_scale=2.0, **cfg)).double()
    _, y, m = _measure(prior, 4, 5)
    with pytest.raises(ValueError, match="attach_prior"):
        flow.condition(y, m)
    flow.attach_prior(refiner)
    em, es, _ = prior.posterior(y, m, NOISE)
    s_post = es.pow(2).flatten(1).mean(1).sqrt()
    want = refiner.denoise(em, 2.0 * s_post)
    c_ref, c_g = flow.condition(y, m), gauss.condition(y, m)
    assert torch.allclose(flow.decode(c_ref.mean_u), want, atol=1e-8)
    assert torch.allclose(c_ref.chol, c_g.chol) and torch.allclose(c_ref.base_logdet, c_g.base_logdet)
    # the prior is not part of the flow's state, and load_flow attaches it again
    assert not any(k.startswith("_refiner") for k in flow.state_dict())
    save_flow(flow, tmp_path / "refined")
    with pytest.raises(CheckpointError, match="needs its diffusion prior"):
        load_flow(tmp_path / "refined")
    back = load_flow(tmp_path / "refined", prior=refiner)
    assert torch.allclose(back.decode(back.condition(y.float(), m).mean_u).double(), want, atol=1e-5)


@pytest.mark.parametrize("floor", [0.05, 0.3])
def test_gaussian_base_marginalises_the_complement_exactly(floor):
    """Low-rank prior with a floor: the base is the exact marginal posterior of the latent coordinates.

    The exact posterior of x under the PPCA prior (``GaussianPrior.posterior``, dense algebra) projected
    on the latent span: its mean is ``mu + W m_u`` and its covariance ``W P^-1 W^T`` (the complement is
    orthogonal to that span, so ``encode`` removes it exactly).
    """
    full = ring_prior()
    v, lam = full.eigvecs[:, :5], full.eigvals[:5]  # top 5 of 8 directions (variances >= 0.37)
    prior = GaussianPrior(0.1 * torch.ones(D, 1), eigvecs=v, eigvals=lam, floor=floor)
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(n_couplings=2, hidden=16, context_dim=16,
                                                          noise_std=NOISE)).double()
    assert flow.rank == 5 and flow.floor == pytest.approx(floor)
    _, y, m = _measure(prior, 6, 3)
    em, _, _ = prior.posterior(y, m, NOISE)
    cond = flow.condition(y, m)
    assert torch.allclose(flow.decode(cond.mean_u), flow.decode(flow.encode(em)), atol=1e-9)
    # covariance: exact posterior covariance of the latent coordinates, from the dense joint Gaussian
    pv = flow.V.double()
    wmat = pv * flow.sqrt_lam.double()
    cov_x = wmat @ wmat.T + floor * (torch.eye(D, dtype=torch.float64) - pv @ pv.T)
    for i in range(3):
        o = m[i]
        k = cov_x[:, o] @ torch.linalg.inv(cov_x[o][:, o] + NOISE**2 * torch.eye(int(o.sum()), dtype=torch.float64))
        post = cov_x - k @ cov_x[o]
        pinv = torch.linalg.pinv(wmat)
        want = pinv @ post @ pinv.T
        got = torch.cholesky_inverse(cond.chol[i])
        assert torch.allclose(got, want, atol=1e-6), float((got - want).abs().max())  # float32 basis buffers
    # the complement treated as white noise of variance floor (the earlier approximation) is measurably off
    approx = torch.eye(5, dtype=torch.float64) + flow.gram(m.double())[2] / (NOISE**2 + floor)
    assert (torch.cholesky_inverse(torch.linalg.cholesky(approx)) - want).abs().max() > 1e-4


@pytest.mark.parametrize("missing", [0.2, 0.8])
def test_gram_is_the_masked_product_and_exactly_symmetric(missing):
    """``gram(m) = W^T diag(m) W`` from the observed rows (mostly missing) or from the missing ones
    (mostly observed), padded to the batch; block-upper products mirrored, so exactly symmetric."""
    from geoinv.flows._model import _gram

    g = torch.Generator().manual_seed(5)
    a = torch.randn(2, 11, 7, generator=g, dtype=torch.float64)
    got = _gram(a)
    assert torch.allclose(got, a.transpose(1, 2) @ a, atol=1e-12) and torch.equal(got, got.transpose(1, 2))
    v, _ = torch.linalg.qr(torch.randn(40, 7, generator=g, dtype=torch.float64))
    lam = torch.logspace(0, -2, 7, dtype=torch.float64)
    flow = ConditionalFlow({"mean": torch.zeros(40, 1), "eigvecs": v, "eigvals": lam, "floor": 0.0},
                           FlowConfig(n_couplings=1, hidden=4, context_dim=4)).double()
    m = (torch.rand(3, 40, generator=g) > missing).double()
    m[0] = 1.0  # nothing missing next to partly observed rows: padding must not leak
    want = torch.einsum("di,bd,dj->bij", flow.W, m, flow.W)
    got = flow.gram(m)
    assert torch.allclose(got, want, atol=1e-6) and torch.equal(got, got.transpose(1, 2))  # float32 buffers


def test_learned_contraction_keeps_the_base_mean():
    """The layers act on the deviation from the base mean: a pure scale exp(a) < 1 narrows the
    spread by exp(a) and leaves the posterior mean where the base put it (format 2)."""
    prior = ring_prior()
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(n_couplings=1, hidden=8, context_dim=8,
                                                          noise_std=NOISE)).double()
    with torch.no_grad():
        flow.affine.bias[:D] = -1.0  # log-scale a = -1 for every latent coordinate, shift 0
    _, y, m = _measure(prior, 2, 9)
    em, es, _ = prior.posterior(y, m, NOISE)
    mean, std = flow.posterior(y, m, 20000, generator=torch.Generator().manual_seed(0))
    scale = math.exp(2.0 * math.tanh(-1.0 / 2.0))  # the soft clamp (scale_clamp 2)
    assert float(((mean - em) / (scale * es)).abs().max()) < 0.05
    assert torch.allclose(std, scale * es, rtol=0.03)


def test_multi_step_refined_base_pulls_the_data_in_between_denoiser_calls():
    """refine_steps=(1, 0.5): D at c s_post, observed points -> precision-weighted mean with y, D at c s_post / 2."""
    prior = ring_prior()
    refiner = ring_refiner()
    cfg = dict(n_couplings=2, hidden=16, context_dim=16, noise_std=NOISE, base="refined", refine_scale=2.0)
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(refine_steps=[1.0, 0.5], **cfg)).double().attach_prior(refiner)
    _, y, m = _measure(prior, 4, 5)
    em, es, _ = prior.posterior(y, m, NOISE)
    s_post = es.pow(2).flatten(1).mean(1).sqrt()
    s1 = 2.0 * s_post
    x1 = refiner.denoise(em, s1)
    w = (s1**2 / (s1**2 + NOISE**2))[:, None, None]
    pulled = torch.where(m.unsqueeze(-1), x1 + w * (y - x1), x1)
    want = refiner.denoise(pulled, 1.0 * s_post)
    assert flow.config.refine_steps == (1.0, 0.5)  # lists from YAML/JSON become tuples
    assert torch.allclose(flow.decode(flow.condition(y, m).mean_u), want, atol=1e-8)
    # the data step matters: without it the second call would start from x1 itself
    assert not torch.allclose(want, refiner.denoise(x1, 1.0 * s_post), atol=1e-4)
    for bad in ([], [1.0, 0.0]):
        with pytest.raises(ValueError, match="refine_steps"):
            FlowConfig(refine_steps=bad, **cfg)


def _graph_residual_prior():
    """A small residual EDMDenoiser (graph U-Net on a 42-vertex icosphere, random weights) and training signals."""
    import numpy as np
    import trimesh

    from geoinv.priors import EDMDenoiser
    from geoinv.priors.backbones import GraphUNet
    from geoinv.signals import MeshSignal

    ico = trimesh.creation.icosphere(subdivisions=1)
    mesh = MeshSignal(torch.as_tensor(ico.vertices, dtype=torch.float32), torch.as_tensor(ico.faces), np.zeros((42, 1)))
    g = torch.Generator().manual_seed(0)
    pos = mesh.vertices.double()
    x = torch.tanh(torch.randn(400, 3, generator=g, dtype=torch.float64) @ pos.T).unsqueeze(-1)  # smooth fields
    gp = GaussianPrior.fit(x, rank=12, fingerprint=mesh.fingerprint, name="g")
    net = GraphUNet.from_signal(mesh, widths=(8, 16), cond_channels=1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    prior = EDMDenoiser(net.eval(), 1.0, base=gp, base_input=True, data_mean=0.0, data_std=float(x.std()),
                        fingerprint=mesh.fingerprint, event_shape=(42, 1), name="graph-res")
    return prior, x.float()


def test_distilled_base_starts_at_one_call_and_learns_the_multi_call_teacher(tmp_path):
    """base='distilled': the untrained student is the teacher's first call; distillation (no ground truth)
    brings it to the multi-call teacher on held-out measurements; the flow objective leaves it frozen;
    it is saved with the flow."""
    from geoinv.flows import FlowOptimConfig, distill_student, fit_flow

    prior, x = _graph_residual_prior()
    for p in prior.parameters():
        p.requires_grad_(False)
    cfg = dict(n_couplings=2, hidden=16, context_dim=16, noise_std=0.1, refine_scale=2.0)
    one = ConditionalFlow(latent_basis(prior), FlowConfig(base="refined", refine_steps=(1.0,), **cfg)).attach_prior(prior)
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(base="distilled", refine_steps=(1.0, 0.4), **cfg))
    with pytest.raises(ValueError, match="attach_prior"):
        flow.condition(x[:1], torch.ones(1, 42, dtype=torch.bool))
    flow.attach_prior(prior)
    vx = x[300:332]
    vy, vm = simulate_measurements(vx, missing=(0.2, 0.7), noise_std=0.1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(flow.condition(vy, vm).mean_u, one.condition(vy, vm).mean_u, atol=1e-5)
        before = float(flow.distill_loss(vy, vm).mean())
    assert before > 0
    o = FlowOptimConfig(distill_steps=150, distill_batch_size=16, distill_lr=3e-3, log_every=50, steps=2,
                        batch_size=4, n_z=2, warmup=1)
    stats = distill_student(flow, x[:300], o, val=(vx, vy, vm))
    with torch.no_grad():
        after = float(flow.distill_loss(vy, vm).mean())
    assert after < 0.3 * before, (before, after)
    last = stats["history"][-1]
    assert last["step"] == 150 and abs(last["psnr_student"] - last["psnr_teacher"]) < 1.0
    assert not any(p.requires_grad for p in flow.student.parameters())
    # the flow's own objective does not move the student (stage 2), and does not re-distill a distilled one
    frozen = {k: v.clone() for k, v in flow.student.state_dict().items()}
    ema, st = fit_flow(flow, prior, x[:300], o, stats={"distill": stats})
    assert all(torch.equal(frozen[k], v) for k, v in ema.student.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(ema.couplings.parameters(), one.couplings.parameters()))
    save_flow(ema, tmp_path / "distilled")
    back = load_flow(tmp_path / "distilled", prior=prior)
    with torch.no_grad():
        assert torch.equal(back.condition(vy, vm).mean_u, ema.condition(vy, vm).mean_u)
    with pytest.raises(TypeError, match="graph backbone"):
        ConditionalFlow(latent_basis(ring_prior()), FlowConfig(base="distilled", **cfg)).attach_prior(ring_refiner())


def test_distilled_flow_training_resumes_bit_exact(tmp_path):
    """fit_flow distils first (stage 1, checkpointed) and a run killed after it resumes to the same weights."""
    import dataclasses

    from geoinv.flows._train import FlowOptimConfig, fit_flow

    prior, x = _graph_residual_prior()
    cfg = FlowConfig(base="distilled", refine_steps=(1.0, 0.4), n_couplings=2, hidden=16, context_dim=16,
                     noise_std=0.1, refine_scale=2.0)
    o = FlowOptimConfig(distill_steps=10, distill_batch_size=8, steps=4, batch_size=4, n_z=2, warmup=1,
                        ckpt_every=2, schedule="constant")

    def fresh():
        return ConditionalFlow(latent_basis(prior), cfg).attach_prior(prior)

    full, st = fit_flow(fresh(), prior, x, o, out_dir=tmp_path / "a")
    assert st["distill"]["steps"] == 10
    fit_flow(fresh(), prior, x, dataclasses.replace(o, steps=2), out_dir=tmp_path / "b")
    resumed, st2 = fit_flow(fresh(), prior, x, o, out_dir=tmp_path / "b")
    assert st2["train_steps"] == 4 and st2["distill"] == st["distill"] | {"wall_time_s": st2["distill"]["wall_time_s"]}
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_save_load_round_trip_bit_exact(tmp_path):
    prior = ring_prior()
    flow = _perturbed(ConditionalFlow(latent_basis(prior), FlowConfig(n_couplings=2, hidden=16, context_dim=16,
                                                                      noise_std=NOISE), name="ring"))
    _, y, m = _measure(prior, 3, 7)
    s1 = flow.sample(y.float(), m, 6, generator=torch.Generator().manual_seed(0))
    save_flow(flow, tmp_path / "ring")  # no prior name: the basis is stored in the file
    back = load_flow(tmp_path / "ring")
    for (k, a), (_, b) in zip(flow.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(back.sample(y.float(), m, 6, generator=torch.Generator().manual_seed(0)), s1)
    # a flow saved without its basis rebuilds it from the prior and refuses another prior
    save_flow(flow, tmp_path / "ring2", prior="ring-prior")
    again = load_flow(tmp_path / "ring2", prior=prior)
    assert torch.equal(again.sample(y.float(), m, 6, generator=torch.Generator().manual_seed(0)), s1)
    other = GaussianPrior(0.3 * torch.ones(D, 1), torch.eye(D))
    with pytest.raises(CheckpointError, match="latent basis differs"):
        load_flow(tmp_path / "ring2", prior=other)
    # float16 network weights: half the bytes, loaded as float32, samples within float16 rounding, basis exact
    save_flow(flow, tmp_path / "ring16", weights_dtype="float16")
    half = load_flow(tmp_path / "ring16")
    for (k, a), (_, b) in zip(flow.state_dict().items(), half.state_dict().items()):
        assert b.dtype == a.dtype and torch.equal(b, a.half().float() if a.dtype == torch.float32 else a), k
    assert all(torch.equal(torch.as_tensor(half.basis()[k]), torch.as_tensor(v)) for k, v in flow.basis().items())
    s16 = half.sample(y.float(), m, 6, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(s16, s1) and float((s16 - s1).norm() / s1.norm()) < 1e-2
    assert (tmp_path / "ring16.safetensors").stat().st_size < (tmp_path / "ring.safetensors").stat().st_size
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        FlowOptimConfig(weights_dtype="bfloat16")
    # a format-1 flow (layers on u itself, not on its deviation from the base mean) is refused
    meta = json.loads((tmp_path / "ring.json").read_text())
    (tmp_path / "ring.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(CheckpointError, match="re-train"):
        load_flow(tmp_path / "ring")
    (tmp_path / "ring.json").write_text(json.dumps(meta))
    (tmp_path / "ring.safetensors").write_bytes((tmp_path / "ring.safetensors").read_bytes()[:-10])
    with pytest.raises(CheckpointError):
        load_flow(tmp_path / "ring")


def test_solve_with_flow_interface():
    """``geoinv.solve(..., method="flow", flow=...)`` shapes, counts and the noise-level check."""
    import geoinv
    from geoinv.errors import GeoinvError
    from geoinv.signals import GridSignal

    prior = ring_prior(16)
    flow = ConditionalFlow(latent_basis(prior), FlowConfig(n_couplings=2, hidden=16, context_dim=16, noise_std=NOISE))
    x = prior.sample(2, torch.Generator().manual_seed(0)).float().reshape(2, 1, 4, 4)
    sig = GridSignal(x, periodic=True)
    mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(1)) > 0.4
    post = geoinv.solve(sig, mask, method="flow", prior=prior, flow=flow, noise_std=NOISE, n_samples=32, seed=0,
                        progress=False)
    assert post.samples.shape == (2, 32, 16, 1)
    assert post.stats["nfe"] == 0 and post.stats["flow_evals"] == 64
    em, es, _ = prior.posterior(torch.where(mask[..., None], sig.point_values().double(), 0.0), mask, NOISE)
    assert float(((post.mean.point_values().double() - em) / es).abs().max()) < 1.0  # 32 samples: MC error
    with pytest.raises(GeoinvError, match="trained for measurement noise std"):
        geoinv.solve(sig, mask, method="flow", prior=prior, flow=flow, noise_std=0.05, progress=False)


def test_shipped_bunny_flow_loads_and_samples():
    """The shipped Bunny-MNIST flow matches its prior's latent basis and samples finite signals."""
    from geoinv import flows, io

    if "bunny-mnist" not in io.list_shipped_priors() or not flows.has_shipped_flow("bunny-mnist"):
        pytest.skip("no shipped bunny-mnist prior/flow in this install")
    prior = io.load_shipped_prior("bunny-mnist")
    flow = flows.flow_for_prior(prior)
    assert flow.fingerprint == prior.fingerprint and flow.noise_std == 0.1
    # a flow serves the one noise level it was trained for: benchmarks ask before they run it
    assert flows.has_shipped_flow("bunny-mnist", 0.1) and not flows.has_shipped_flow("bunny-mnist", 0.095)
    assert not flows.has_shipped_flow("bunny-mnist", None) and not flows.has_shipped_flow("no-such-prior", 0.1)
    assert flows.shipped_flow_noise_std("bunny-mnist") == 0.1 and flows.shipped_flow_noise_std("no-such-prior") is None
    y = prior.base.mean.float().unsqueeze(0)
    mask = torch.rand(1, y.shape[1], generator=torch.Generator().manual_seed(0)) > 0.3
    s = flow.sample(torch.where(mask[..., None], y, 0.0), mask, 4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (1, 4, *prior.event_shape) and bool(torch.isfinite(s).all())


def test_train_flow_resume_is_bit_exact(tmp_path):
    """``train_flow`` (the ``geoinv train-flow`` path) resumed from its checkpoint ends at the same weights."""
    from geoinv.flows._train import flow_config_from_dict, train_flow
    from geoinv.io import save_prior
    from geoinv.training import DataConfig, load_split

    split = load_split(DataConfig(name="synthetic", n=64), "train")
    prior = GaussianPrior.fit(split.x.double(), rank=16, fingerprint=split.signal.fingerprint, name="synthetic-gauss")
    save_prior(prior, tmp_path / "gauss")
    cfg = {"name": "synth-flow", "prior": str(tmp_path / "gauss"), "data": {"name": "synthetic", "n": 64},
           "flow": {"n_couplings": 2, "hidden": 16, "context_dim": 16, "noise_std": 0.1},
           "train": {"steps": 6, "batch_size": 4, "n_z": 2, "warmup": 1, "schedule": "constant", "val_every": 3,
                     "ckpt_every": 3, "val_size": 4}}
    full = train_flow(flow_config_from_dict(cfg), out_dir=tmp_path / "a", progress=False)
    train_flow(flow_config_from_dict(cfg), out_dir=tmp_path / "b", progress=False, max_steps=3)
    resumed = train_flow(flow_config_from_dict(cfg), out_dir=tmp_path / "b", progress=False)
    assert resumed.stats["train_steps"] == 6
    for (k, a), (_, b) in zip(full.flow.state_dict().items(), resumed.flow.state_dict().items()):
        assert torch.equal(a, b), k
    again = load_flow(full.path)  # the saved flow rebuilds its basis from the prior checkpoint it names
    assert all(torch.equal(a, b) for a, b in zip(full.flow.state_dict().values(), again.state_dict().values()))
