"""Benchmark machinery: markdown sections are replaced in place; method rows carry the right numbers."""

import math

import numpy as np
import pytest
import torch
import trimesh

from geoinv import MeshSignal, metrics
from geoinv.bench import markdown_table, write_section
from geoinv.bench._common import noisy_observation, run_methods
from geoinv.priors import GaussianPrior


def test_write_section_replaces_only_its_block(tmp_path):
    p = tmp_path / "b.md"
    write_section(p, "a", "first A")
    write_section(p, "b", "first B")
    write_section(p, "a", "second A")
    text = p.read_text()
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.index("second A") < text.index("first B")  # replaced in place, not appended
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left


def test_markdown_table_formats_and_marks_missing():
    t = markdown_table([{"m": "x", "v": 1.23456}, {"m": "y"}], [("m", "method", ""), ("v", "value", ".2f")])
    assert t.splitlines()[2] == "| x | 1.23 |" and t.splitlines()[3] == "| y | – |"


def test_run_methods_rows_match_metrics():
    mesh = trimesh.creation.icosphere(subdivisions=1)
    rng = np.random.default_rng(0)
    truth = MeshSignal.from_trimesh(mesh, values=rng.normal(size=(42, 1))).with_point_values(
        torch.as_tensor(rng.normal(size=(3, 42, 1)), dtype=torch.float32))
    mask = torch.as_tensor(rng.random((3, 42)) < 0.6)
    obs = noisy_observation(truth, mask, 0.1, seed=0)
    assert torch.isnan(obs.point_values()[~mask]).all()
    prior = GaussianPrior(torch.zeros(42, 1), torch.eye(42))
    posts = {}
    rows = run_methods(truth, obs, mask, methods=[("harmonic", {}), ("gaussian", {"prior": prior, "n_samples": 8})],
                       noise_std=0.1, data_range=2.0, posteriors=posts)
    assert [r["method"] for r in rows] == ["harmonic", "gaussian"]
    est = posts["gaussian"].mean.point_values().double()
    expect = metrics.psnr(est, truth.point_values().double(), 2.0).mean().item()
    assert math.isclose(rows[1]["psnr"], expect, rel_tol=1e-12)
    assert 0 <= rows[1]["cover90"] <= 1 and rows[1]["n_samples"] == 8 and "crps" not in rows[0]


def test_gain_notes_are_computed_from_the_rows():
    """The reading notes of the bunny and prior sections state this run's differences, not fixed text."""
    from geoinv.bench._bunny import _gain_note
    from geoinv.bench._prior import SIGMAS
    from geoinv.bench._prior import _gain_note as prior_gain

    rows = [{"missing": 0.3, "method": "harmonic", "psnr": 20.0}, {"missing": 0.3, "method": "gaussian", "psnr": 28.0},
            {"missing": 0.3, "method": "dps", "psnr": 29.5}, {"missing": 0.6, "method": "gaussian", "psnr": 25.0},
            {"missing": 0.6, "method": "dps", "psnr": 24.75}]
    note = _gain_note(rows)
    assert "`dps` 30%: +1.50 dB, 60%: -0.25 dB" in note and "harmonic" not in note
    prow = []
    for i, s in enumerate(SIGMAS):
        prow += [{"prior": "p", "sigma": s, "method": "learned", "psnr": 30.0 + i},
                 {"prior": "p", "sigma": s, "method": "gaussian", "psnr": 29.0},
                 {"prior": "p", "sigma": s, "method": "harmonic", "psnr": 31.0}]
    assert "| p | +1.00 / +2.00 / +3.00 / +4.00 | -1.00 / +0.00 / +1.00 / +2.00 |" in prior_gain(prow)


def test_run_puts_pictures_beside_the_output_file(tmp_path, monkeypatch):
    """A task that draws pictures gets ``<out dir>/img`` (not docs/img); one that does not gets no argument."""
    import geoinv.bench as bench

    seen = {}

    def drawing(*, quick, n_test, seed, progress, img_dir):
        seen["img_dir"] = img_dir
        return {"rows": [{"v": 1.0}], "markdown": "drawn"}

    def plain(*, quick, n_test, seed, progress):
        return {"rows": [], "markdown": "plain"}

    out = tmp_path / "sub" / "b.md"
    out.parent.mkdir()
    for name, fn in (("draw", drawing), ("plain", plain)):
        monkeypatch.setattr(bench, "_task", lambda task, fn=fn: fn)
        bench.run(name, out=out, progress=False)
    assert seen["img_dir"] == tmp_path / "sub" / "img"
    text = out.read_text()
    assert "drawn" in text and "plain" in text and (tmp_path / "sub" / "bench-draw.json").exists()


def test_every_task_resolves_to_a_runner_and_unknown_tasks_are_refused():
    import inspect

    import geoinv.bench as bench
    from geoinv.bench import _navier_stokes

    for name in bench.TASKS:
        params = inspect.signature(bench._task(name)).parameters
        assert {"quick", "n_test", "seed", "progress"} <= set(params), name
    assert bench._task("navier-stokes-10") is _navier_stokes.run_noise_free
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench._task("navier")


def test_navier_stokes_10_is_the_noise_free_run_on_ten_fields(monkeypatch):
    from geoinv.bench import _navier_stokes

    seen = {}

    def fake_run(**kw):
        seen.update(kw)
        return {"rows": [], "markdown": "table"}

    monkeypatch.setattr(_navier_stokes, "run", fake_run)
    res = _navier_stokes.run_noise_free(progress=False)
    assert (seen["n_test"], seen["noise_levels"], seen["img_dir"]) == (10, (0.0,), None)
    assert res["markdown"].endswith("table") and "10 held-out fields" in res["markdown"]
    _navier_stokes.run_noise_free(quick=True, progress=False)
    assert seen["n_test"] == 1 and seen["quick"]


def test_navier_stokes_picture_puts_error_maps_on_one_range(tmp_path, monkeypatch):
    """The error maps of every method share one colour range (so they compare); the fields keep the truth's."""
    from types import SimpleNamespace

    import geoinv.viz as viz
    from geoinv.bench._navier_stokes import _picture
    from geoinv.fluids import SCALE

    seen = {}

    def fake(panels, path, **kw):
        seen.update(panels=panels, **kw)
        import matplotlib.pyplot as plt
        return plt.figure()

    monkeypatch.setattr(viz, "grid_panels", fake)
    w0 = torch.linspace(-4, 4, 64 * 64).reshape(64, 64)
    est = {"gnd": SimpleNamespace(mean=(w0 / SCALE).reshape(-1, 1) + 0.1),
           "dps": SimpleNamespace(samples=torch.zeros(1, 64 * 64, 1))}
    _picture(w0, torch.zeros(1, 32 * 32), est, tmp_path / "ns.png")
    assert list(seen["shared"]) == ["vorticity", "|error|"]
    fields, errors = seen["shared"].values()
    assert errors == ["G-N + diffusion, mean error", "DPS sample error"]
    assert fields == ["true w0", "observed w(T=1), 32x32", "G-N + diffusion, mean", "DPS sample"]
    assert seen["clim"] == (-4.0, 4.0)
    torch.testing.assert_close(seen["panels"]["DPS sample error"], w0.abs())
    assert torch.allclose(seen["panels"]["G-N + diffusion, mean error"], torch.full((64, 64), 0.1 * SCALE), atol=1e-5)
