"""GaussianPrior: exact denoiser, posterior, sampling and fitting against brute-force formulas."""

import math

import pytest
import torch

from geoinv.errors import ShapeError
from geoinv.priors import GaussianPrior

D = 24


def brute(cov, mu, y, idx, sn):
    k = cov[idx][:, idx] + sn**2 * torch.eye(len(idx), dtype=torch.float64)
    pm = mu + cov[:, idx] @ torch.linalg.solve(k, y[idx] - mu[idx])
    pc = cov - cov[:, idx] @ torch.linalg.solve(k, cov[idx])
    return pm, pc


def priors():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = a @ a.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    mu = torch.randn(D, 1, generator=g, dtype=torch.float64)
    data = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, D, generator=g, dtype=torch.float64)
    data = data + 0.3 * torch.randn(300, D, generator=g, dtype=torch.float64)
    return [GaussianPrior(mu, cov), GaussianPrior.fit(data.unsqueeze(-1), rank=6, shrinkage=0.01)]


@pytest.mark.parametrize("prior", priors(), ids=["dense", "low-rank"])
def test_denoiser_is_exact_posterior_mean(prior):
    cov, mu = prior.covariance(), prior.mean.reshape(-1)
    x = torch.randn(3, D, 1, dtype=torch.float64)
    sig = torch.tensor([0.1, 0.7, 3.0], dtype=torch.float64)
    out = prior.denoise(x, sig)
    for i, s in enumerate(sig):
        ref = mu + cov @ torch.linalg.solve(cov + s**2 * torch.eye(D, dtype=torch.float64), x[i, :, 0] - mu)
        assert torch.allclose(out[i, :, 0], ref, atol=1e-10)


@pytest.mark.parametrize("prior", priors(), ids=["dense", "low-rank"])
def test_posterior_matches_kriging_formulas(prior):
    cov, mu = prior.covariance(), prior.mean.reshape(-1)
    g = torch.Generator().manual_seed(3)
    m = torch.rand(D, generator=g) < 0.5
    y = torch.randn(1, D, 1, generator=g, dtype=torch.float64)
    y[0, ~m] = float("nan")  # unobserved values are ignored
    sn = 0.3
    pm, pc = brute(cov, mu, y[0, :, 0], m.nonzero()[:, 0], sn)
    mean, std, samples = prior.posterior(y, m, sn, n_samples=20000, generator=g)
    assert torch.allclose(mean[0, :, 0], pm, atol=1e-10)
    assert torch.allclose(std[0, :, 0], pc.diagonal().sqrt(), atol=1e-10)
    # Matheron samples: mean within 5 standard errors, covariance within sampling error
    se = pc.diagonal().sqrt() / math.sqrt(20000)
    assert ((samples[0].mean(0)[:, 0] - pm).abs() / se).max() < 5
    emp = torch.cov(samples[0, :, :, 0].T)
    assert (emp - pc).abs().max() < 0.05 * pc.diagonal().max()


def test_noise_free_posterior_interpolates():
    prior = priors()[0]
    m = torch.zeros(D, dtype=torch.bool)
    m[::3] = True
    y = torch.randn(2, D, 1, dtype=torch.float64)
    mean, std, _ = prior.posterior(y, m, None)
    assert torch.allclose(mean[:, m], y[:, m], atol=1e-5)
    assert std[:, m].max() < 1e-4


def test_log_prob_and_sampling_match_covariance():
    for prior in priors():
        cov, mu = prior.covariance(), prior.mean.reshape(-1)
        x = torch.randn(4, D, 1, dtype=torch.float64)
        ref = torch.distributions.MultivariateNormal(mu, cov).log_prob(x[:, :, 0])
        assert torch.allclose(prior.log_prob(x), ref, atol=1e-8)
        s = prior.sample(40000, torch.Generator().manual_seed(1))[:, :, 0]
        assert (torch.cov(s.T) - cov).abs().max() < 0.06 * cov.diagonal().max()
        assert torch.allclose(prior.variance[:, 0], cov.diagonal(), atol=1e-10)


def test_fit_recovers_covariance_and_picks_shrinkage_on_train_only():
    g = torch.Generator().manual_seed(2)
    true = priors()[0]
    x = true.sample(5000, g)
    fitted = GaussianPrior.fit(x)
    assert fitted.shrinkage <= 0.01
    assert (fitted.covariance() - true.covariance()).abs().max() < 0.1 * true.covariance().diagonal().max()
    with pytest.raises(ShapeError):
        GaussianPrior.fit(torch.zeros(1, D, 1))
    with pytest.raises(ShapeError):
        GaussianPrior(torch.zeros(D, 1), torch.eye(D + 1))


def test_posterior_is_stable_for_a_nearly_singular_low_rank_prior():
    # rank-3 covariance with a floor of 1e-13: the precision form would be hopeless here
    g = torch.Generator().manual_seed(5)
    v, _ = torch.linalg.qr(torch.randn(D, 3, generator=g, dtype=torch.float64))
    prior = GaussianPrior(torch.zeros(D, 1), eigvecs=v, eigvals=torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64), floor=1e-13)
    cov, mu = prior.covariance(), prior.mean.reshape(-1)
    m = torch.zeros(D, dtype=torch.bool)
    m[:10] = True
    y = prior.sample(1, g) + 0.1 * torch.randn(1, D, 1, generator=g, dtype=torch.float64)
    pm, pc = brute(cov, mu, y[0, :, 0], m.nonzero()[:, 0], 0.1)
    mean, std, _ = prior.posterior(y, m, 0.1)
    assert torch.allclose(mean[0, :, 0], pm, atol=1e-8)
    assert torch.allclose(std[0, :, 0], pc.diagonal().clamp_min(0).sqrt(), atol=1e-6)


def test_low_rank_prior_with_a_floor_above_its_eigenvalues_is_refused():
    """Sigma = V diag(lam) V^T + floor (I - V V^T) needs lam >= floor for the low-rank kriging: a clear error."""
    v, _ = torch.linalg.qr(torch.randn(D, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    with pytest.raises(ValueError, match="eigvals >= floor"):
        GaussianPrior(torch.zeros(D, 1), eigvecs=v, eigvals=torch.tensor([3.0, 2.0, 0.1], dtype=torch.float64), floor=0.5)
    GaussianPrior(torch.zeros(D, 1), eigvecs=v, eigvals=torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64), floor=0.5)
