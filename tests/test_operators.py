"""Forward operators: adjointness, flags, composition, noise, autograd refusal."""

import pytest
import torch
import trimesh

from geoinv import GridSignal, MeshSignal, SphereSignal
from geoinv.errors import NotDifferentiableError
from geoinv.operators import (Compose, FunctionOperator, GaussianNoise, HeatBlur, Identity, Mask,
                              adjointness_error)


def ico(sub=2):
    m = trimesh.creation.icosphere(subdivisions=sub)
    return MeshSignal.from_trimesh(m)


def domains():
    return [ico(2), SphereSignal.from_healpix(torch.zeros(192)), GridSignal(torch.zeros(1, 8, 10), periodic=True),
            GridSignal(torch.zeros(1, 7, 5), spacing=(0.5, 2.0))]


@pytest.mark.parametrize("dom", domains(), ids=lambda d: d.kind)
def test_every_linear_operator_is_adjoint(dom):
    g = torch.Generator().manual_seed(0)
    n = dom.n_points
    mask = torch.rand(n, generator=g) < 0.5
    bmask = torch.rand(3, n, generator=g) < 0.5
    ops = [Identity(), Mask(mask), Mask(bmask), HeatBlur(dom, 0.05), Mask(mask) @ HeatBlur(dom, 0.3),
           GaussianNoise(0.1) @ (Mask(mask) @ HeatBlur(dom, 0.02))]
    for op in ops:
        assert op.linear
        assert adjointness_error(op, (3, n, 2), generator=g) < 1e-12, op


def test_wrong_adjoint_is_detected():
    class Bad(Mask):
        def adjoint(self, y):
            return 2 * super().adjoint(y)

    assert adjointness_error(Bad(torch.ones(5, dtype=torch.bool)), (2, 5, 1)) > 0.1


def test_mask_zeroes_unobserved_and_keeps_observed():
    x = torch.randn(2, 5, 3)
    m = torch.tensor([True, False, True, False, True])
    y = Mask(m)(x)
    assert torch.equal(y[:, m], x[:, m]) and torch.all(y[:, ~m] == 0)


def test_heat_blur_preserves_constants_mass_and_smooths():
    s = ico(3)
    op = HeatBlur(s, 0.05)
    ones = torch.ones(1, s.n_points, 1, dtype=torch.float64)
    assert torch.allclose(op(ones), ones, atol=1e-10)
    x = torch.randn(1, s.n_points, 1, dtype=torch.float64)
    L, mass = s.laplacian()
    m = torch.as_tensor(mass)
    # mass-weighted integral is conserved by an implicit heat step: 1^T M A x = 1^T M x
    assert torch.allclose((m * op(x)[0, :, 0]).sum(), (m * x[0, :, 0]).sum(), rtol=1e-8)
    # Dirichlet energy decreases
    energy = lambda v: float(v[0, :, 0] @ torch.as_tensor(L @ v[0, :, 0].numpy()))  # noqa: E731
    assert energy(op(x)) < 0.5 * energy(x)


def test_heat_blur_autograd_matches_adjoint():
    s = ico(1)
    op = HeatBlur(s, 0.1)
    x = torch.randn(2, s.n_points, 1, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, s.n_points, 1, dtype=torch.float64)
    (op(x) * w).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(w), atol=1e-12)


def test_noise_composition_and_measure():
    m = torch.ones(1000, dtype=torch.bool)
    m[:500] = False
    op = GaussianNoise(0.5) @ Mask(m)
    assert isinstance(op, Compose) and op.noise_std == 0.5 and op.linear
    x = torch.zeros(4, 1000, 1, dtype=torch.float64)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert torch.all(y[:, :500] == 0)  # no noise on structural zeros
    assert abs(float(y[:, 500:].std()) - 0.5) < 0.03
    assert torch.equal(op(x), x)  # calling is noise-free
    with pytest.raises(ValueError):
        Mask(m) @ GaussianNoise(0.1) @ Mask(m)
    with pytest.raises(ValueError):
        GaussianNoise(-1.0)


def test_black_box_operator_refuses_autograd():
    op = FunctionOperator(lambda x: x**2, differentiable=False)
    x = torch.randn(2, 3, 1, requires_grad=True)
    with pytest.raises(NotDifferentiableError):
        op(x)
    with torch.no_grad():
        assert torch.allclose(op(x), x.detach() ** 2)
    assert not (op @ Identity()).differentiable
