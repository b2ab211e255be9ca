"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from geoinv import metrics


def test_mse_psnr_relative_l2_by_hand():
    ref = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    x = torch.tensor([[1.0, 1.0, 2.0, 1.0]])
    # errors 1, 0, 0, -2 -> MSE 5/4
    assert metrics.mse(x, ref).item() == pytest.approx(1.25)
    assert metrics.psnr(x, ref, data_range=2.0).item() == pytest.approx(10 * math.log10(4 / 1.25))
    assert metrics.relative_l2(x, ref).item() == pytest.approx(math.sqrt(5) / math.sqrt(14))
    with pytest.raises(ValueError):
        metrics.psnr(x, ref, data_range=0)


def test_area_weighted_rmse_by_hand():
    ref = torch.zeros(1, 3, 1)
    x = torch.tensor([[[1.0], [2.0], [0.0]]])
    w = np.array([1.0, 3.0, 4.0])
    # weighted mean of squared errors: (1*1 + 3*4 + 0) / 8
    assert metrics.area_weighted_rmse(x, ref, w).item() == pytest.approx(math.sqrt(13 / 8))


def test_ssim_identity_and_known_value():
    torch.manual_seed(0)
    a = torch.rand(2, 1, 16, 16)
    assert torch.allclose(metrics.ssim(a, a, data_range=1.0), torch.ones(2, dtype=torch.float64))
    # constant images c1 vs c2: luminance term only, (2 c1 c2 + C1) / (c1^2 + c2^2 + C1)
    c1, c2, C1 = 0.2, 0.6, 0.01**2
    s = metrics.ssim(torch.full((1, 1, 9, 9), c1), torch.full((1, 1, 9, 9), c2), data_range=1.0)
    assert s.item() == pytest.approx((2 * c1 * c2 + C1) / (c1**2 + c2**2 + C1), rel=1e-6)


def test_crps_by_hand_and_against_gaussian_closed_form():
    # ensemble {0, 2}, truth 1: E|X-y| = 1, fair pair term: 1/(2*2*1) * (|0-2|+|2-0|) = 1 -> CRPS 0
    s = torch.tensor([[[0.0]], [[2.0]]])
    assert metrics.crps_ensemble(s, torch.tensor([[1.0]])).item() == pytest.approx(0.0)
    # ensemble {0, 2}, truth 0: E|X-y| = 1 -> CRPS 0
    assert metrics.crps_ensemble(s, torch.tensor([[0.0]])).item() == pytest.approx(0.0)
    # large Gaussian ensemble vs the closed form for N(0,1) at y=0: (sqrt(2)-1)/sqrt(pi)... = 2 phi(0) - 1/sqrt(pi)
    g = torch.randn(20000, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = 2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)
    assert metrics.crps_ensemble(g, torch.zeros(1, 1)).item() == pytest.approx(exact, abs=0.01)


def test_coverage_and_spread_skill_calibrated_ensemble():
    gen = torch.Generator().manual_seed(1)
    truth = torch.randn(1, 4000, 1, generator=gen, dtype=torch.float64)
    samples = torch.randn(1, 200, 4000, 1, generator=gen, dtype=torch.float64)  # same distribution as truth
    cov = metrics.interval_coverage(samples, truth, 0.9).item()
    assert cov == pytest.approx(0.9, abs=0.02)
    assert metrics.spread_skill_ratio(samples, truth).item() == pytest.approx(1.0, abs=0.05)
    narrow = 0.1 * samples
    assert metrics.spread_skill_ratio(narrow, truth).item() == pytest.approx(0.1, abs=0.01)
    assert metrics.interval_coverage(narrow, truth, 0.9).item() < 0.2


def test_band_relative_l2_by_hand_and_parseval():
    n = 16
    g = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    ref = 3 * torch.cos(2 * g)[None, :].expand(n, n) + torch.sin(5 * g)[:, None].expand(n, n)   # k = (2, 0), (0, 5)
    x = ref - 0.5 * torch.cos(2 * g)[None, :] + 2 * torch.cos(3 * g)[:, None] * torch.cos(6 * g)[None, :]
    # error: -0.5 cos(2x) (band [0, 4)) and 2 cos(3y) cos(6x) (max(|k|) = 6: band [4, 8)); rms of a cosine = 1/sqrt 2,
    # of a product of two cosines = 1/2; ||ref||^2 / n^2 = 9/2 + 1/2
    out = metrics.band_relative_l2(x, ref, (0, 4, 8))
    want = torch.tensor([0.5 / math.sqrt(2), 2 * 0.5, 0.0]) / math.sqrt(5.0)
    assert torch.allclose(out, want.double(), atol=1e-12)
    b = torch.randn(3, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = torch.randn(3, n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    parts = metrics.band_relative_l2(b, r, (0, 3, 5, 8))
    assert torch.allclose(parts.pow(2).sum(1).sqrt(), metrics.relative_l2(b, r), atol=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        metrics.band_relative_l2(b, r, (4, 2))
