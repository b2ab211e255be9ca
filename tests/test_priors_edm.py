"""EDM preconditioning, residual mode, VE/VP conversions, the Heun sampler and Tweedie."""

from __future__ import annotations

import math

import pytest
import torch

from geoinv.priors import (
    EDMDenoiser,
    GaussianPrior,
    SymmetrizedPrior,
    alpha_bar_from_sigma,
    ddpm_linear_schedule,
    edm_coefficients,
    edm_sample,
    karras_sigmas,
    sigma_from_alpha_bar,
    tweedie,
    ve_to_vp,
    vp_denoise,
    vp_to_ve,
)
from geoinv.priors.backbones import MLPBackbone, MLPConfig


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread avoids OpenMP oversubscription on a shared machine
    yield
    torch.set_num_threads(old)


def _gaussian(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov = a @ a.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    mean = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return GaussianPrior(mean, cov)


class _Const(torch.nn.Module):
    """A backbone returning a fixed function of its inputs, to check the preconditioning algebra."""

    kind = "const"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.seen = None

    def forward(self, x, c_noise):
        self.seen = (x.clone(), c_noise.clone())
        return self.w * torch.sin(x) + c_noise[:, None, None]


def test_coefficients_match_formulas():
    s = torch.tensor([0.002, 0.1, 0.5, 1.0, 3.0, 80.0], dtype=torch.float64)
    sd = 0.5
    c_skip, c_out, c_in, c_noise = edm_coefficients(s, sd)
    assert torch.allclose(c_skip, sd**2 / (s**2 + sd**2))
    assert torch.allclose(c_out, s * sd / torch.sqrt(s**2 + sd**2))
    assert torch.allclose(c_in, 1 / torch.sqrt(s**2 + sd**2))
    assert torch.allclose(c_noise, torch.log(s) / 4)
    # the EDM identity: the effective training target has unit variance, c_skip^2 sd^2 + c_out^2 = sd^2 ... per
    # Karras et al. eq. (1): c_in^2 (sd^2 + s^2) = 1 and c_out^2 = sd^2 - c_skip^2 sd^2 - c_skip^2 s^2 + ... check two
    assert torch.allclose(c_in**2 * (sd**2 + s**2), torch.ones_like(s))
    assert torch.allclose(c_out**2, (1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2)


def test_denoiser_applies_preconditioning_in_normalized_units():
    bb = _Const().double()
    mean, std, sd = 2.0, 3.0, 0.8
    prior = EDMDenoiser(bb, sd, data_mean=mean, data_std=std, event_shape=(5, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 1, generator=g, dtype=torch.float64) * 3 + 2
    sigma = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64)
    out = prior.denoise(x, sigma)
    sn = (sigma / std)[:, None, None]
    xn = (x - mean) / std
    c_skip = sd**2 / (sn**2 + sd**2)
    c_out = sn * sd / (sn**2 + sd**2).sqrt()
    c_in = 1 / (sn**2 + sd**2).sqrt()
    c_noise = torch.log(sn) / 4
    f = 0.7 * torch.sin(c_in * xn) + c_noise
    want = mean + std * (c_skip * xn + c_out * f)
    assert torch.allclose(out, want, atol=1e-12)
    assert torch.allclose(bb.seen[0], c_in * xn) and torch.allclose(bb.seen[1], c_noise.reshape(-1))


def test_residual_mode_with_zero_init_is_exactly_the_gaussian():
    gp = _gaussian(8)
    bb = MLPBackbone(MLPConfig(n_points=8, hidden=16, depth=1))
    prior = EDMDenoiser(bb, 1.0, base=gp, data_mean=gp.mean, data_std=1.7, event_shape=(8, 1))
    x = gp.sample(5, torch.Generator().manual_seed(0)) + 0.3 * torch.randn(5, 8, 1, dtype=torch.float64)
    for s in (0.01, 0.3, 2.0):
        assert torch.equal(prior.denoise(x, s), gp.denoise(x, s))
    # plain mode with zero init is the c_skip term: D = mean + c_skip (x - mean)
    plain = EDMDenoiser(MLPBackbone(MLPConfig(n_points=8, hidden=16, depth=1)), 1.0, data_mean=0.5, data_std=2.0,
                        event_shape=(8, 1))
    s = 0.7
    c_skip = 1 / ((s / 2.0) ** 2 + 1)
    assert torch.allclose(plain.denoise(x, s), 0.5 + c_skip * (x - 0.5), atol=1e-12)
    # but the residual correction is trainable: a gradient reaches the zero-initialised layer
    loss = prior.denoise(x.float(), 0.3).square().sum()
    loss.backward()
    assert bb.out.weight.grad is not None and bb.out.weight.grad.abs().sum() > 0


def test_base_input_feeds_the_gaussian_estimate_to_the_backbone():
    """``base_input``: the backbone sees [c_in x_n, (D_gauss - mean) / std]; zero init is still the Gaussian."""
    gp = _gaussian(8)
    bb = _Const()
    bb.config = type("Cfg", (), {"cond_channels": 1})()
    prior = EDMDenoiser(bb, 1.0, base=gp, base_input=True, data_mean=gp.mean, data_std=1.7, event_shape=(8, 1))
    x = gp.sample(4, torch.Generator().manual_seed(1)).double()
    s = torch.tensor([0.05, 0.3, 1.0, 4.0], dtype=torch.float64)
    out = prior.denoise(x, s)
    sn = (s / 1.7)[:, None, None]
    c_in, c_out = 1 / (sn**2 + 1).sqrt(), sn / (sn**2 + 1).sqrt()
    d_g = gp.denoise(x, s)
    seen = bb.seen[0].double()
    assert seen.shape == (4, 8, 2)
    assert torch.allclose(seen[..., :1], (c_in * (x - gp.mean) / 1.7), atol=1e-6)
    assert torch.allclose(seen[..., 1:], (d_g - gp.mean) / 1.7, atol=1e-6)
    f = bb.w.detach().double() * torch.sin(bb.seen[0].double()) + bb.seen[1].double()[:, None, None]
    assert torch.allclose(out, d_g + 1.7 * c_out * f, atol=1e-5)
    # a zero-initialised backbone with the extra channel starts at the Gaussian's exact denoiser
    net = MLPBackbone(MLPConfig(n_points=8, hidden=16, depth=1, cond_channels=1))
    zero = EDMDenoiser(net, 1.0, base=gp, base_input=True, data_mean=gp.mean, data_std=1.7, event_shape=(8, 1))
    assert torch.equal(zero.denoise(x, 0.3), gp.denoise(x, 0.3))
    # clear errors: no base, or a backbone without the extra input channel
    with pytest.raises(ValueError, match="needs a Gaussian base"):
        EDMDenoiser(net, 1.0, base_input=True, event_shape=(8, 1))
    from geoinv.errors import ShapeError

    with pytest.raises(ShapeError, match="cond_channels=1"):
        EDMDenoiser(MLPBackbone(MLPConfig(n_points=8, hidden=16)), 1.0, base=gp, base_input=True, event_shape=(8, 1))


def test_gaussian_denoiser_is_the_exact_posterior_mean():
    gp = _gaussian(6)
    y = gp.sample(3, torch.Generator().manual_seed(2)) + 0.5 * torch.randn(3, 6, 1, dtype=torch.float64)
    sigma = 0.5
    post_mean, _, _ = gp.posterior(y, torch.ones(6, dtype=torch.bool), noise_std=sigma)
    assert torch.allclose(gp.denoise(y, sigma), post_mean, atol=1e-10)
    # and by brute force: E[x | y] = mu + C (C + s^2 I)^-1 (y - mu)
    c = gp.covariance()
    want = gp.mean + (c @ torch.linalg.solve(c + sigma**2 * torch.eye(6, dtype=torch.float64),
                                             (y - gp.mean)[..., 0].T)).T[..., None]
    assert torch.allclose(tweedie(gp, y, sigma), want, atol=1e-10)


def test_ve_vp_conversions_invert_each_other():
    _, abar = ddpm_linear_schedule(1000)
    assert abar.dtype == torch.float64 and torch.all(abar[1:] < abar[:-1])
    s = sigma_from_alpha_bar(abar)
    assert torch.allclose(alpha_bar_from_sigma(s), abar, rtol=1e-12)
    assert torch.allclose(sigma_from_alpha_bar(alpha_bar_from_sigma(s)), s, rtol=1e-10)
    x = torch.randn(4, 7, 2, dtype=torch.float64)
    a = abar[torch.tensor([0, 10, 500, 999])]
    x_ve, sig = vp_to_ve(x, a)
    assert torch.allclose(sig, sigma_from_alpha_bar(a))
    x_back, a_back = ve_to_vp(x_ve, sig)
    assert torch.allclose(x_back, x, atol=1e-12) and torch.allclose(a_back, a, rtol=1e-12)
    # VP marginal sqrt(a) x0 + sqrt(1 - a) eps is x0 + sigma eps after the conversion
    x0, eps = torch.randn(4, 7, 2, dtype=torch.float64), torch.randn(4, 7, 2, dtype=torch.float64)
    xv = a.sqrt()[:, None, None] * x0 + (1 - a).sqrt()[:, None, None] * eps
    assert torch.allclose(vp_to_ve(xv, a)[0], x0 + sig[:, None, None] * eps, atol=1e-10)


def test_vp_denoise_uses_the_same_network():
    gp = _gaussian(6)
    a = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    x0 = gp.sample(3, torch.Generator().manual_seed(3))
    eps = torch.randn(3, 6, 1, dtype=torch.float64)
    xv = a.sqrt()[:, None, None] * x0 + (1 - a).sqrt()[:, None, None] * eps
    x0_hat, eps_hat = vp_denoise(gp, xv, a)
    x_ve, s = vp_to_ve(xv, a)
    assert torch.allclose(x0_hat, gp.denoise(x_ve, s), atol=1e-12)
    assert torch.allclose(a.sqrt()[:, None, None] * x0_hat + (1 - a).sqrt()[:, None, None] * eps_hat, xv, atol=1e-10)


def test_karras_sigmas():
    s = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert s.shape == (19,) and s[-1] == 0
    assert math.isclose(float(s[0]), 80.0, rel_tol=1e-12) and math.isclose(float(s[-2]), 0.002, rel_tol=1e-9)
    assert torch.all(s[1:] < s[:-1])
    # rho-th roots are equally spaced
    r = s[:-1] ** (1 / 7)
    assert torch.allclose(r.diff(), r.diff()[0].expand(17), rtol=1e-9)


def test_edm_sample_reproduces_a_gaussian():
    """Heun-sampled draws of a GaussianPrior have its mean and covariance.

    Tolerances: with n = 4000 draws the sample mean has standard error sqrt(var / n), we
    allow 5 standard errors; covariance entries have standard error about
    sqrt((C_ii C_jj + C_ij^2) / n), we allow 5 of those (plus the sampler's own bias,
    which is below 1e-3 of the variance at 40 Heun steps).
    """
    gp = _gaussian(5, seed=4)
    n = 4000
    x = edm_sample(gp, n, steps=40, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and x.shape == (n, 5, 1)
    flat = x[..., 0]
    c = gp.covariance()
    d = c.diagonal()
    se_mean = (d / n).sqrt()
    assert torch.all((flat.mean(0) - gp.mean[:, 0]).abs() < 5 * se_mean)
    emp = torch.cov(flat.T)
    se_cov = ((d[:, None] * d[None, :] + c**2) / n).sqrt()
    assert torch.all((emp - c).abs() < 5 * se_cov + 1e-3 * d.max())


def test_tweedie_keeps_the_container_type():
    from geoinv.signals import GridSignal

    gp = _gaussian(4)
    sig = GridSignal(torch.randn(2, 1, 2, 2), name="t")
    out = tweedie(gp, sig, 0.3)
    assert isinstance(out, GridSignal) and out.values.shape == sig.values.shape
    assert torch.allclose(out.point_values().double(), gp.denoise(sig.point_values().double(), 0.3), atol=1e-6)


def _ring_maps(n, flips=(1.0, -1.0)):
    """Signed cyclic shifts of a ring of n points: a group of 2 n signed permutations."""
    shifts = [(s, f) for f in flips for s in range(n)]
    perms = torch.stack([torch.roll(torch.arange(n), -s) for s, _ in shifts])   # (g x)[j] = f x[j + s]
    return perms, torch.tensor([f for _, f in shifts], dtype=torch.float64), shifts


def test_symmetrized_prior_leaves_an_invariant_prior_unchanged():
    n = 8
    g = torch.Generator().manual_seed(1)
    spec = torch.rand(n // 2 + 1, generator=g, dtype=torch.float64) + 0.1          # a stationary, zero-mean Gaussian
    row = torch.fft.irfft(spec, n)
    cov = torch.stack([torch.roll(row, i) for i in range(n)])
    prior = GaussianPrior(torch.zeros(n, 1, dtype=torch.float64), cov)
    perms, signs, _ = _ring_maps(n)
    x = torch.randn(3, n, 1, generator=g, dtype=torch.float64)
    sym = SymmetrizedPrior(prior, perms, signs)
    assert torch.allclose(sym.denoise(x, 0.7), prior.denoise(x, 0.7), atol=1e-12)


def test_symmetrized_prior_is_the_group_average_and_equivariant():
    n = 6
    prior = _gaussian(n, seed=3)                                                     # not invariant under the maps
    perms, signs, shifts = _ring_maps(n)
    sym = SymmetrizedPrior(prior, perms, signs)
    assert sym.evals_per_call == 2 * n
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, n, 1, generator=g, dtype=torch.float64)
    x_before = x.clone()
    sigma = torch.tensor([0.3, 1.2], dtype=torch.float64)
    by_hand = sum(f * torch.roll(prior.denoise(f * torch.roll(x, -s, 1), sigma), s, 1) for s, f in shifts) / len(shifts)
    assert torch.allclose(sym.denoise(x, sigma), by_hand, atol=1e-12)
    assert not torch.allclose(by_hand, prior.denoise(x, sigma), atol=1e-3)         # the average does change it
    gx = -torch.roll(x, -2, 1)
    assert torch.allclose(sym.denoise(gx, sigma), -torch.roll(sym.denoise(x, sigma), -2, 1), atol=1e-12)
    assert torch.equal(x, x_before)                                                 # the caller's array is kept


def test_symmetrized_prior_input_errors():
    prior = _gaussian(4)
    perms, signs, _ = _ring_maps(4)
    with pytest.raises(ValueError, match="permutation"):
        SymmetrizedPrior(prior, torch.zeros(2, 4, dtype=torch.int64), torch.ones(2))
    with pytest.raises(ValueError, match="must be"):
        SymmetrizedPrior(prior, perms[:, :3], signs)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        SymmetrizedPrior(prior, perms, 2 * signs)
