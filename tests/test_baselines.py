"""Harmonic interpolation: exactness on harmonic functions, noise handling, the lambda rule."""

import numpy as np
import torch
from scipy.spatial import Delaunay

import geoinv
from geoinv import GridSignal, MeshSignal
from geoinv.baselines import harmonic, harmonic_lambda


def flat_mesh(n=15, seed=0):
    rng = np.random.default_rng(seed)
    g = np.linspace(0, 1, n)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    interior = (xy > 0).all(1) & (xy < 1).all(1)
    xy[interior] += rng.uniform(-0.2, 0.2, (interior.sum(), 2)) / n
    tri = Delaunay(xy).simplices
    v = np.c_[xy, np.zeros(len(xy))]
    return MeshSignal(v, tri, np.zeros((len(v), 1))), xy


def test_noise_free_harmonic_reproduces_linear_function_from_boundary():
    s, xy = flat_mesh()
    f = 2 * xy[:, 0] - 3 * xy[:, 1] + 1
    boundary = ~((xy > 1e-9).all(1) & (xy < 1 - 1e-9).all(1))
    sig = s.with_point_values(torch.as_tensor(f).reshape(-1, 1))
    out = harmonic(sig, torch.as_tensor(boundary))
    np.testing.assert_allclose(out[0, :, 0].numpy(), f, atol=1e-8)


def test_observed_values_kept_and_unobserved_nan_ignored():
    s, xy = flat_mesh()
    vals = torch.as_tensor(np.sin(3 * xy[:, 0])).reshape(-1, 1)
    m = torch.rand(s.n_points) < 0.5
    vals[~m] = float("nan")
    post = geoinv.solve(s.with_point_values(vals), m)
    pv = post.mean.point_values()[0]
    assert torch.isfinite(pv).all()
    assert torch.allclose(pv[m].double(), vals[m], atol=1e-6)
    assert isinstance(post.mean, MeshSignal) and post.std is None


def test_noisy_harmonic_smooths_and_beats_noise_on_grid():
    h = w = 32
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    truth = np.sin(2 * np.pi * i / h) * np.cos(2 * np.pi * j / w)
    rng = np.random.default_rng(0)
    noisy = truth + 0.3 * rng.normal(size=truth.shape)
    g = GridSignal(torch.as_tensor(noisy)[None], periodic=True)
    full = torch.ones(h * w, dtype=torch.bool)
    out = harmonic(g, full, noise_std=0.3)[0, :, 0].numpy().reshape(h, w)
    assert np.mean((out - truth) ** 2) < 0.25 * np.mean((noisy - truth) ** 2)


def test_lambda_rule_recovers_gmrf_precision_order_and_noise():
    # draw from a GMRF with precision lam*L (+ small ridge) on a grid; the evidence rule should find lam
    g = GridSignal(torch.zeros(1, 24, 24), periodic=True)
    L, _ = g.laplacian()
    import scipy.linalg as sl

    q = 10.0 * L.toarray() + 1e-3 * np.eye(576)
    rng = np.random.default_rng(1)
    c = sl.cholesky(q, lower=False)
    x = sl.solve_triangular(c, rng.normal(size=(576, 4)), lower=False)
    y = x + 0.05 * rng.normal(size=x.shape)
    m = rng.random(576) < 0.7
    lam = harmonic_lambda(L, y, m, 0.05)
    assert 10 / 3.2 <= lam <= 10 * 3.2  # grid spacing is a factor 10^0.5
    # pure white noise (no spatial structure): the rule smooths far more than for the GMRF
    assert harmonic_lambda(L, rng.normal(size=(576, 4)), m, 1.0) > 5 * lam
