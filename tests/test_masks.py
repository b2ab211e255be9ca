"""geoinv.masks: random points and geodesic patches (True = observed)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from geoinv import GridSignal, SphereSignal, masks
from geoinv.datasets import stanford_bunny
from geoinv.errors import MaskError


@pytest.fixture(scope="module")
def bunny():
    return stanford_bunny(3)


@pytest.fixture(scope="module")
def sphere():
    return SphereSignal.from_healpix(np.zeros(12 * 8 * 8))


@pytest.fixture(scope="module")
def grid():
    return GridSignal(np.zeros((1, 24, 30)))


# -- random -------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", [0.0, 0.1, 0.3, 0.55, 0.9])
def test_random_exact_missing_count(bunny, missing):
    m = masks.random(bunny, missing=missing, seed=1)
    assert m.dtype == torch.bool and m.shape == (bunny.n_points,)
    assert int((~m).sum()) == round(missing * bunny.n_points)


def test_random_many_masks(grid):
    m = masks.random(grid, missing=0.25, seed=0, n=6)
    assert m.shape == (6, 720)
    assert torch.all((~m).sum(1) == 180)
    assert len({tuple(r.tolist()) for r in m}) == 6  # independent draws


def test_random_seeding(sphere):
    a = masks.random(sphere, 0.3, seed=5)
    assert torch.equal(a, masks.random(sphere, 0.3, seed=5))
    assert not torch.equal(a, masks.random(sphere, 0.3, seed=6))


def test_random_is_uniform(grid):
    m = masks.random(grid, missing=0.3, seed=0, n=2000)
    freq = (~m).double().mean(0)
    # each point is missing with probability 0.3; sd of the frequency is sqrt(.21/2000) ~ 0.01
    assert float((freq - 0.3).abs().max()) < 0.06
    assert float(freq.mean()) == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), True, "0.3"])
def test_random_rejects_bad_fraction(grid, bad):
    with pytest.raises(MaskError, match="missing"):
        masks.random(grid, missing=bad)


def test_random_rejects_fraction_that_hides_everything():
    g = GridSignal(np.zeros((1, 2, 2)))
    with pytest.raises(MaskError, match="observed"):
        masks.random(g, missing=0.9)  # round(3.6) = 4 of 4 points


def test_mask_fits_signal(bunny):
    m = masks.random(bunny, 0.3, seed=0)
    assert torch.equal(bunny.check_mask(m), m)


# -- geodesic patches -------------------------------------------------------------------------
def _check_union_of_balls(signal, mask, centres, radius):
    hidden = ~mask.numpy()
    d = np.stack([signal.distances(int(c)) for c in centres]).min(0)
    # every hidden point lies within the radius of some centre, every observed one outside all
    assert np.all(d[hidden] <= radius)
    assert np.all(~(d[~hidden] <= radius))
    assert np.all(hidden[centres])


def _components_each_contain_a_centre(signal, mask, centres):
    hidden = ~mask.numpy()
    ei = signal.edge_index().numpy()
    keep = hidden[ei[0]] & hidden[ei[1]]
    n = signal.n_points
    adj = sp.coo_matrix((np.ones(int(keep.sum())), (ei[0][keep], ei[1][keep])), shape=(n, n))
    _, lab = connected_components(adj, directed=False)
    hole_labels = set(lab[hidden].tolist())
    centre_labels = set(lab[centres].tolist())
    return hole_labels <= centre_labels and len(hole_labels) <= len(centres)


@pytest.mark.parametrize("missing", [0.1, 0.3, 0.5])
def test_patches_fraction_on_bunny(bunny, missing):
    m = masks.geodesic_patches(bunny, missing=missing, n_patches=5, seed=3)
    assert m.dtype == torch.bool and m.shape == (bunny.n_points,)
    assert abs(float((~m).double().mean()) - missing) < 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patches_are_geodesic_balls_on_bunny(bunny, seed):
    m, c, r = masks.geodesic_patches(bunny, missing=0.3, n_patches=4, seed=seed, return_centers=True)
    assert c.shape == (4,) and len(set(c.tolist())) == 4 and np.ndim(r) == 0 and r > 0
    _check_union_of_balls(bunny, m, c, r)
    assert _components_each_contain_a_centre(bunny, m, c)
    # unreferenced vertices are never hidden (no face, no geodesic distance)
    unref = np.setdiff1d(np.arange(bunny.n_points), np.unique(bunny.faces.numpy()))
    assert unref.size == 2 and bool(m[unref].all())


def test_patches_radius_is_optimal(bunny):
    m, c, r = masks.geodesic_patches(bunny, missing=0.3, n_patches=5, seed=7, return_centers=True)
    d = np.stack([bunny.distances(int(s)) for s in c]).min(0)
    target = round(0.3 * bunny.n_points)
    best = abs(int((d <= r).sum()) - target)
    finite = np.unique(d[np.isfinite(d)])
    assert best == min(abs(int((d <= x).sum()) - target) for x in finite)


def test_patches_on_sphere_are_great_circle_balls(sphere):
    m, c, r = masks.geodesic_patches(sphere, missing=0.3, n_patches=3, seed=0, return_centers=True)
    assert abs(float((~m).double().mean()) - 0.3) < 0.01
    _check_union_of_balls(sphere, m, c, r)
    assert _components_each_contain_a_centre(sphere, m, c)
    assert 0 < r < np.pi


def test_patches_on_grid(grid):
    m, c, r = masks.geodesic_patches(grid, missing=0.2, n_patches=2, seed=1, return_centers=True)
    _check_union_of_balls(grid, m, c, r)
    assert abs(float((~m).double().mean()) - 0.2) < 0.02


def test_patches_seeding_and_batches(bunny):
    a = masks.geodesic_patches(bunny, 0.3, seed=11)
    assert torch.equal(a, masks.geodesic_patches(bunny, 0.3, seed=11))
    assert not torch.equal(a, masks.geodesic_patches(bunny, 0.3, seed=12))
    m, c, r = masks.geodesic_patches(bunny, 0.2, n_patches=3, seed=0, n=3, return_centers=True)
    assert m.shape == (3, bunny.n_points) and c.shape == (3, 3) and r.shape == (3,)
    for k in range(3):
        _check_union_of_balls(bunny, m[k], c[k], r[k])
    assert not torch.equal(m[0], m[1])


def test_patches_edge_cases(grid):
    assert bool(masks.geodesic_patches(grid, missing=0.0, seed=0).all())
    with pytest.raises(MaskError):
        masks.geodesic_patches(grid, missing=1.0)
    with pytest.raises(MaskError, match="n_patches"):
        masks.geodesic_patches(grid, missing=0.3, n_patches=0)
    with pytest.raises(MaskError, match="n_patches"):
        masks.geodesic_patches(GridSignal(np.zeros((1, 2, 2))), missing=0.25, n_patches=5)
