"""Checkpoints: bit-exact round trips, clear errors for damaged or foreign files, no unpickling."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from geoinv.errors import CheckpointError, DomainMismatchError
from geoinv.io import list_shipped_priors, load_prior, load_shipped_prior, save_prior
from geoinv.priors import EDMDenoiser, GaussianPrior
from geoinv.priors.backbones import GraphUNet, MLPBackbone, MLPConfig, UNet2d, UNetConfig
from geoinv.signals import GridSignal, MeshSignal


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch):
    """Any attempt to unpickle during these tests fails loudly."""
    def boom(*a, **k):
        raise AssertionError("something tried to unpickle")
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)


def _mesh():
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=1)
    return MeshSignal(torch.as_tensor(m.vertices, dtype=torch.float32), torch.as_tensor(m.faces), np.zeros((42, 1)))


def _randomize(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _priors():
    torch.manual_seed(0)
    mesh = _mesh()
    train = torch.randn(30, 42, 1, dtype=torch.float64)
    gp = GaussianPrior.fit(train, rank=8, fingerprint=mesh.fingerprint, name="g")
    grid = GridSignal(torch.zeros(1, 4, 6))
    yield "mlp-residual", EDMDenoiser(_randomize(MLPBackbone(MLPConfig(n_points=42, hidden=16))), 1.0, base=gp,
                                      data_mean=0.1, data_std=1.3, fingerprint=mesh.fingerprint, event_shape=(42, 1),
                                      name="m")
    yield "graph-plain", EDMDenoiser(_randomize(GraphUNet.from_signal(mesh, widths=(4, 8), n_pos=3)), 0.5,
                                     data_mean=torch.randn(42, 1), data_std=2.0, fingerprint=mesh.fingerprint,
                                     event_shape=(42, 1), name="gr")
    yield "unet-residual", EDMDenoiser(_randomize(UNet2d(UNetConfig(height=4, width=6, widths=(4, 4)))), 1.0,
                                       base=GaussianPrior.fit(torch.randn(10, 24, 1), rank=4), data_std=1.0,
                                       fingerprint=grid.fingerprint, event_shape=(24, 1), name="u")
    yield "graph-residual-base-input", EDMDenoiser(
        _randomize(GraphUNet.from_signal(mesh, widths=(4, 8), cond_channels=1)), 1.0, base=gp, base_input=True,
        data_mean=0.1, data_std=1.3, fingerprint=mesh.fingerprint, event_shape=(42, 1), name="gb")
    yield "gaussian", gp


@pytest.mark.parametrize("name,prior", list(_priors()), ids=lambda v: v if isinstance(v, str) else "")
def test_round_trip_is_bit_exact(tmp_path, name, prior):
    st, js = save_prior(prior, tmp_path / name, training={"steps": 3})
    assert st.exists() and js.exists() and not list(tmp_path.glob(".*tmp*"))
    back = load_prior(tmp_path / name)
    assert type(back) is type(prior)
    assert back.fingerprint == prior.fingerprint and back.event_shape == prior.event_shape
    assert back.training_stats == {"steps": 3}
    if isinstance(prior, EDMDenoiser):
        sd0, sd1 = prior.backbone.state_dict(), back.backbone.state_dict()
        assert sd0.keys() == sd1.keys()
        for k in sd0:
            assert sd0[k].dtype == sd1[k].dtype and torch.equal(sd0[k], sd1[k]), k
        assert torch.equal(prior.data_mean, back.data_mean) and prior.data_std == back.data_std
        assert back.base_input == prior.base_input
        g0, g1 = prior.base, back.base
    else:
        g0, g1 = prior, back
    if g0 is not None:
        for attr in ("mean", "eigvecs", "eigvals"):
            assert torch.equal(getattr(g0, attr), getattr(g1, attr))
        assert g0.floor == g1.floor
    x = torch.randn(2, *prior.event_shape, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(prior.denoise(x, 0.3), back.denoise(x, 0.3))


def test_float16_weights(tmp_path):
    """weights_dtype="float16" rounds the network weights only: half their bytes, loaded as float32, the Gaussian
    base and data statistics exact, the denoiser within float16 rounding of the original."""
    prior = dict(_priors())["graph-residual-base-input"]
    st32, _ = save_prior(prior, tmp_path / "p32")
    st16, js16 = save_prior(prior, tmp_path / "p16", weights_dtype="float16")
    back = load_prior(tmp_path / "p16")
    assert json.loads(js16.read_text())["weights_dtype"] == "float16"
    sd0, sd1 = prior.backbone.state_dict(), back.backbone.state_dict()
    n_float = 0
    for k in sd0:
        assert sd1[k].dtype == sd0[k].dtype, k
        if sd0[k].dtype == torch.float32:
            n_float += sd0[k].numel()
            assert torch.equal(sd1[k], sd0[k].half().float()), k
        else:
            assert torch.equal(sd1[k], sd0[k]), k
    assert st32.stat().st_size - st16.stat().st_size >= 2 * n_float - 4096  # 2 bytes saved per weight
    for attr in ("mean", "eigvecs", "eigvals"):
        assert torch.equal(getattr(prior.base, attr), getattr(back.base, attr))
    assert torch.equal(prior.data_mean, back.data_mean)
    x = torch.randn(4, *prior.event_shape, dtype=torch.float64)
    with torch.no_grad():
        d0, d1 = prior.denoise(x, 0.3), back.denoise(x, 0.3)
    assert not torch.equal(d0, d1) and float((d0 - d1).norm() / d0.norm()) < 1e-2
    with pytest.raises(ValueError, match="weights_dtype"):
        save_prior(prior, tmp_path / "bad", weights_dtype="bfloat16")


def test_float16_storage_keeps_out_of_range_tensors_exact(tmp_path):
    from geoinv.io import read_tensors, write_tensors

    t = {"small": torch.tensor([0.1, -2.5, 1e-3]), "huge": torch.tensor([1.0, 1e5]), "idx": torch.arange(3),
         "f64": torch.tensor([0.1], dtype=torch.float64)}
    dtypes, sha = write_tensors(tmp_path / "t.safetensors", t, float16=["small", "huge", "idx", "f64"])
    back, _ = read_tensors(tmp_path / "t.safetensors", dtypes, sha)
    assert all(back[k].dtype == t[k].dtype for k in t)
    assert torch.equal(back["small"], t["small"].half().float()) and not torch.equal(back["small"], t["small"])
    assert torch.equal(back["huge"], t["huge"]) and torch.equal(back["idx"], t["idx"])
    assert torch.equal(back["f64"], t["f64"])  # only float32 tensors are rounded


def _saved(tmp_path):
    prior = next(iter(_priors()))[1]
    save_prior(prior, tmp_path / "p")
    return prior, tmp_path / "p.safetensors", tmp_path / "p.json"


def test_corrupted_checkpoint(tmp_path):
    _, st, _ = _saved(tmp_path)
    data = bytearray(st.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    st.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_prior(tmp_path / "p")


def test_truncated_checkpoint(tmp_path):
    _, st, js = _saved(tmp_path)
    st.write_bytes(st.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_prior(tmp_path / "p")
    # even without a recorded checksum the parser refuses the truncated file
    meta = json.loads(js.read_text())
    meta.pop("sha256")
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_prior(tmp_path / "p")


def test_missing_sidecar_and_missing_files(tmp_path):
    _, _, js = _saved(tmp_path)
    js.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_prior(tmp_path / "p")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_prior(tmp_path / "nothing")


def test_foreign_files(tmp_path):
    from safetensors.torch import save_file

    # a safetensors file from elsewhere, with a JSON that is not ours
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "f.safetensors"))
    (tmp_path / "f.json").write_text(json.dumps({"model": "resnet"}))
    with pytest.raises(CheckpointError, match="not a geoinv"):
        load_prior(tmp_path / "f")
    # a foreign safetensors file next to a genuine sidecar (keys do not match)
    _, st, js = _saved(tmp_path)
    meta = json.loads(js.read_text())
    meta.pop("sha256")
    js.write_text(json.dumps(meta))
    save_file({"weight": torch.zeros(3)}, str(st))
    with pytest.raises(CheckpointError):
        load_prior(tmp_path / "p")
    # not JSON at all
    (tmp_path / "f.json").write_text("\x00\x01garbage")
    with pytest.raises(CheckpointError, match="JSON"):
        load_prior(tmp_path / "f")


def test_shape_mismatch_between_config_and_weights(tmp_path):
    _, _, js = _saved(tmp_path)
    meta = json.loads(js.read_text())
    meta["edm"]["backbone"]["config"]["hidden"] = 32  # the weights were saved with hidden=16
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="could not be rebuilt"):
        load_prior(tmp_path / "p")


@pytest.mark.parametrize("field,value", [("geoinv_version", "7.0.0"), ("format_version", 99), ("geoinv_version", "0.99.0")])
def test_incompatible_versions(tmp_path, field, value):
    _, _, js = _saved(tmp_path)
    meta = json.loads(js.read_text())
    meta[field] = value
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="version"):
        load_prior(tmp_path / "p")


def test_domain_mismatch(tmp_path):
    prior, _, _ = _saved(tmp_path)
    back = load_prior(tmp_path / "p")
    back.check_domain(_mesh())  # same geometry: fine
    other = _mesh()
    moved = MeshSignal(other.vertices * 1.5, other.faces, np.zeros((42, 1)))  # same size, other geometry
    with pytest.raises(DomainMismatchError, match="trained on domain"):
        back.check_domain(moved)
    with pytest.raises(DomainMismatchError):
        back.check_domain(GridSignal(torch.zeros(1, 6, 7)))


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    import os

    prior, st, js = _saved(tmp_path)
    before = st.read_bytes()

    def fail(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        save_prior(prior, tmp_path / "p")
    assert st.read_bytes() == before and not list(tmp_path.glob(".*tmp*"))


def test_shipped_priors_load():
    shipped = list_shipped_priors()
    for name, fp in shipped.items():
        p = load_shipped_prior(name)
        assert p.fingerprint == fp
    with pytest.raises(CheckpointError, match="no shipped prior"):
        load_shipped_prior("no-such-prior")
