"""geoinv.solve: the front door, its contracts and its errors."""

import numpy as np
import pytest
import torch
import trimesh

import geoinv
from geoinv import GridSignal, MeshSignal, SphereSignal
from geoinv.errors import DomainMismatchError, GeoinvError, MaskError, NonFiniteError, ShapeError
from geoinv.priors import GaussianPrior


def ico():
    return MeshSignal.from_trimesh(trimesh.creation.icosphere(subdivisions=1), values=np.random.default_rng(0).normal(size=(42, 1)))


def test_same_container_type_out_and_caller_not_mutated():
    for sig in (ico(), SphereSignal.from_healpix(np.arange(48.0)), GridSignal(torch.randn(2, 1, 6, 7))):
        before = sig.values.clone()
        m = torch.rand(sig.n_points) < 0.6
        m[0] = True
        post = geoinv.solve(sig, m, noise_std=0.1)
        assert type(post.mean) is type(sig) and post.mean.values.shape == sig.values.shape
        assert torch.equal(sig.values, before)
        assert post.stats["method"] == "harmonic" and post.stats["seconds"] >= 0


def test_gaussian_method_is_exact_and_returns_samples():
    sig = ico()
    prior = GaussianPrior(torch.zeros(42, 1), torch.eye(42) * 2.0)
    m = torch.zeros(42, dtype=torch.bool)
    m[:10] = True
    post = geoinv.solve(sig, m, method="gaussian", prior=prior, noise_std=1.0, n_samples=8, seed=0)
    # independent prior: observed points shrink by 2/(2+1), unobserved stay at 0 with std sqrt(2)
    pv = post.mean.point_values()[0, :, 0].double()
    assert torch.allclose(pv[:10], sig.values[:10, 0].double() * 2 / 3, atol=1e-6)
    assert torch.allclose(pv[10:], torch.zeros(32, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(post.std.values[10:, 0].double(), torch.full((32,), 2**0.5, dtype=torch.float64), atol=1e-6)
    assert post.samples.shape == (8, 42, 1)
    again = geoinv.solve(sig, m, method="gaussian", prior=prior, noise_std=1.0, n_samples=8, seed=0)
    assert torch.equal(again.samples, post.samples)


def test_auto_method_without_prior_is_harmonic_and_with_gaussian_is_gaussian():
    sig = ico()
    m = torch.ones(42, dtype=torch.bool)
    m[5:] = False
    assert geoinv.solve(sig, m, method="auto").stats["method"] == "harmonic"
    prior = GaussianPrior(torch.zeros(42, 1), torch.eye(42))
    assert geoinv.solve(sig, m, method="auto", prior=prior).stats["method"] == "gaussian"


def test_clear_errors():
    sig = ico()
    with pytest.raises(MaskError, match="42 points"):
        geoinv.solve(sig, np.ones(41, bool))
    with pytest.raises(MaskError, match="boolean"):
        geoinv.solve(sig, np.ones(42, int))
    with pytest.raises(MaskError, match="no point"):
        geoinv.solve(sig, np.zeros(42, bool))
    bad = sig.values.clone()
    bad[3] = float("inf")
    with pytest.raises(NonFiniteError, match="point 3"):
        geoinv.solve(sig.with_point_values(bad), np.ones(42, bool))
    with pytest.raises(ShapeError):
        geoinv.solve(np.zeros(42), np.ones(42, bool))
    with pytest.raises(ValueError, match="unknown method"):
        geoinv.solve(sig, np.ones(42, bool), method="magic")
    with pytest.raises(GeoinvError, match="GaussianPrior"):
        geoinv.solve(sig, np.ones(42, bool), method="gaussian")
    other = GaussianPrior(torch.zeros(42, 1), torch.eye(42), fingerprint="mesh:42:0000")
    with pytest.raises(DomainMismatchError, match="trained on domain"):
        geoinv.solve(sig, np.ones(42, bool), method="gaussian", prior=other)
    with pytest.raises(TypeError, match="unused options"):
        geoinv.solve(sig, np.ones(42, bool), bogus=1)


def test_mask_defaults_to_finite_values():
    sig = ico()
    vals = sig.values.clone()
    vals[7] = float("nan")
    post = geoinv.solve(sig.with_point_values(vals))
    assert not bool(post.mask[7]) and int(post.mask.sum()) == 41
