"""Backbones: graph U-Net equivariance and hierarchy, U-Net translation equivariance, zero init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoinv.priors.backbones import (
    GraphUNet,
    MLPBackbone,
    MLPConfig,
    UNet2d,
    UNetConfig,
    build_hierarchy,
)
from geoinv.priors.backbones._graph import farthest_point_clusters
from geoinv.signals import MeshSignal, SphereSignal
from geoinv.testing import assert_permutation_equivariant


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _icosphere(subdiv=2):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdiv)
    return MeshSignal(torch.as_tensor(m.vertices, dtype=torch.float32), torch.as_tensor(m.faces), np.zeros((len(m.vertices), 1)))


def _randomize(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_graph_unet_is_permutation_equivariant():
    mesh = _icosphere(2)  # 162 vertices
    torch.manual_seed(0)
    net = _randomize(GraphUNet.from_signal(mesh, widths=(8, 16, 16), n_pos=4)).eval()
    x = torch.randn(3, mesh.n_points, 1)
    c = torch.tensor([-1.0, 0.0, 0.5])
    out = net(x, c)
    assert out.abs().max() > 1e-3  # not trivially zero
    perm = torch.randperm(mesh.n_points, generator=torch.Generator().manual_seed(1))
    net_p = net.permuted(perm)
    assert_permutation_equivariant(lambda v: net(v, c), x, perm, permuted=lambda v: net_p(v, c), atol=2e-5)
    # and a net built from the relabelled mesh: same clusters (FPS is order-independent), so
    # the same function once the weights are shared
    mesh_p = MeshSignal(mesh.vertices[perm], torch.argsort(perm)[mesh.faces], np.zeros((mesh.n_points, 1)))
    net_q = GraphUNet.from_signal(mesh_p, widths=(8, 16, 16), n_pos=0)
    net0 = GraphUNet.from_signal(mesh, widths=(8, 16, 16), n_pos=0)
    _randomize(net0)
    net_q.load_state_dict({k: v for k, v in net0.state_dict().items() if not k.startswith(("adj", "cluster"))},
                          strict=False)
    assert_permutation_equivariant(lambda v: net0(v, c), x, perm, permuted=lambda v: net_q(v, c), atol=2e-5)


def test_node_group_norm_with_film_matches_the_unfused_reference():
    from geoinv.priors.backbones._graph import NodeGroupNorm

    torch.manual_seed(0)
    norm = NodeGroupNorm(12, groups=4).double()
    with torch.no_grad():
        norm.weight.add_(torch.randn(12, dtype=torch.float64))
        norm.bias.add_(torch.randn(12, dtype=torch.float64))
    h = 3 + 2 * torch.randn(50, 3, 12, dtype=torch.float64)  # [N, B, C], far from zero mean
    scale, shift = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    # reference: torch's GroupNorm over (B, C, N), then the affine, then FiLM
    ref = torch.nn.functional.group_norm(h.permute(1, 2, 0), 4, norm.weight, norm.bias, eps=norm.eps).permute(2, 0, 1)
    assert torch.allclose(norm(h), ref, atol=1e-10)
    assert torch.allclose(norm(h, scale, shift), ref * (1 + scale) + shift, atol=1e-10)


def test_graph_conv_equals_linear_on_the_concatenation():
    from geoinv.priors.backbones._graph import GraphConv

    torch.manual_seed(0)
    n = 30
    a = torch.rand(n, n, dtype=torch.float64)
    a = a + a.T  # symmetric, as the normalized adjacency
    conv = GraphConv(5, 7).double()
    h = torch.randn(n, 2, 5, dtype=torch.float64)
    ref = conv.lin(torch.cat([h, torch.einsum("ij,jbc->ibc", a, h)], -1))
    out = conv(h, a.to_sparse_csr())
    assert torch.allclose(out, ref, atol=1e-10)


def test_cond_channels_widen_the_input_only():
    mesh = _icosphere(1)
    for net, n in ((GraphUNet.from_signal(mesh, widths=(4, 8), cond_channels=2), 42),
                   (MLPBackbone(MLPConfig(n_points=20, hidden=8, cond_channels=2)), 20),
                   (UNet2d(UNetConfig(height=4, width=5, widths=(4, 4), cond_channels=2)), 20)):
        out = _randomize(net)(torch.randn(2, n, 3), torch.zeros(2))
        assert out.shape == (2, n, 1)


def test_fps_clustering_is_order_independent():
    g = np.random.default_rng(0)
    pos = g.normal(size=(300, 3))
    lab = farthest_point_clusters(pos, 40)
    perm = g.permutation(300)
    lab_p = farthest_point_clusters(pos[perm], 40)
    # same partition (labels are numbered by pick order, which is order-independent too)
    assert np.array_equal(lab[perm], lab_p)
    assert lab.max() + 1 == 40


def test_healpix_hierarchy_is_nested_parent_pooling():
    import healpy as hp

    nside = 8
    sig = SphereSignal(torch.zeros(12 * nside**2, 1), nside=nside)
    h = build_hierarchy(sig, levels=3)
    assert torch.equal(h["cluster0"], torch.arange(12 * nside**2) // 4)
    net = GraphUNet(GraphUNet.Config(n_points=sig.n_points, widths=(4, 4, 4)), h)
    m = torch.randn(12 * nside**2, 2, 3, dtype=torch.float64)  # [N, B, C]
    pooled = net._pool(m, 0)
    want = hp.ud_grade(m[:, 0, 0].numpy(), nside // 2, order_in="NESTED", order_out="NESTED")
    assert np.allclose(pooled[:, 0, 0].numpy(), want)
    # the normalized adjacency is symmetric with a unit top eigenvalue
    n = sig.n_points
    a = torch.sparse_coo_tensor(h["adj_idx0"], h["adj_w0"].double(), (n, n), check_invariants=True).to_dense()
    assert torch.allclose(a, a.T)
    assert abs(float(torch.linalg.eigvalsh(a).max()) - 1) < 1e-8


def test_unet_periodic_is_translation_equivariant():
    torch.manual_seed(0)
    cfg = UNetConfig(height=16, width=12, widths=(8, 16, 16), periodic=(True, True))
    net = _randomize(UNet2d(cfg)).eval()
    x = torch.randn(2, 16 * 12, 1)
    c = torch.tensor([0.1, -0.4])

    def shift(v, dy, dx):
        return v.reshape(2, 16, 12, 1).roll((dy, dx), (1, 2)).reshape(2, -1, 1)

    with torch.no_grad():
        out = net(x, c)
        for dy, dx in ((4, 0), (0, 8), (12, 4)):  # multiples of the coarsest stride 4
            assert torch.allclose(net(shift(x, dy, dx), c), shift(out, dy, dx), atol=1e-5)


def test_unet_non_periodic_handles_odd_shapes():
    net = _randomize(UNet2d(UNetConfig(height=33, width=49, widths=(8, 8, 8))))
    out = net(torch.randn(2, 33 * 49, 1), torch.zeros(2))
    assert out.shape == (2, 33 * 49, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("make", [
    lambda: MLPBackbone(MLPConfig(n_points=20, hidden=16)),
    lambda: UNet2d(UNetConfig(height=4, width=5, widths=(4, 4))),
    lambda: GraphUNet.from_signal(_icosphere(1), widths=(4, 8)),
])
def test_zero_init_output_is_zero_and_trainable(make):
    net = make()
    n = 20 if not isinstance(net, GraphUNet) else net.config.n_points
    x = torch.randn(2, n, 1)
    out = net(x, torch.zeros(2))
    assert torch.equal(out, torch.zeros_like(out))
    (out - x).square().sum().backward()
    assert net.out.weight.grad.abs().sum() > 0 if hasattr(net.out, "weight") else net.out.conv.weight.grad.abs().sum() > 0


def test_laplacian_eigenvectors_solve_the_generalized_problem():
    import scipy.sparse as sp

    from geoinv.priors.backbones import laplacian_eigenvectors

    mesh = _icosphere(2)
    v = laplacian_eigenvectors(mesh, 5).astype(np.float64)
    lap, mass = mesh.laplacian()
    m = sp.diags(mass)
    lam = np.einsum("ik,ik->k", v, lap @ v) / np.einsum("ik,ik->k", v, m @ v)
    assert np.all(lam > 1e-6)  # the constant mode is skipped
    resid = lap @ v - (m @ v) * lam
    assert np.abs(resid).max() < 1e-4 * np.abs(lap @ v).max()
    gram = v.T @ (m @ v)
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-4 * np.diag(gram).min()
    # on the sphere the first three non-constant modes are the l = 1 harmonics: linear in x, y, z
    xyz = mesh.vertices.double().numpy()
    coef, *_ = np.linalg.lstsq(xyz, v[:, :3], rcond=None)
    assert np.abs(xyz @ coef - v[:, :3]).max() < 0.05 * np.abs(v[:, :3]).max()


def test_with_extra_inputs_is_the_same_function_until_trained():
    """The widened copy ignores its new channels (zero weights), owns its weights, and can learn to use them."""
    net = _randomize(GraphUNet.from_signal(_icosphere(1), widths=(4, 8), cond_channels=1)).eval()
    wide = net.with_extra_inputs(2).eval()
    assert wide.config.cond_channels == 3 and net.config.cond_channels == 1
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 42, 2, generator=g), torch.tensor([0.3, -1.0])
    ex1, ex2 = torch.randn(2, 42, 2, generator=g), torch.randn(2, 42, 2, generator=g)
    with torch.no_grad():
        want = net(x, c)
        assert torch.allclose(wide(torch.cat([x, ex1], -1), c), want, atol=1e-6)
        assert torch.allclose(wide(torch.cat([x, ex2], -1), c), want, atol=1e-6)
        wide.lin_in.weight[:, 2:].normal_(generator=g)
        assert not torch.allclose(wide(torch.cat([x, ex1], -1), c), wide(torch.cat([x, ex2], -1), c), atol=1e-3)
        assert torch.equal(net(x, c), want)  # the original is untouched
