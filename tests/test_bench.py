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


def test_navier_stokes_summary_averages_fields_and_skips_failures():
    from geoinv.bench._navier_stokes import _summary

    per_field = [{"noise_std": 0.0, "method": "a", "J": 4, "rel_l2": 0.2, "seconds": 10.0},
                 {"noise_std": 0.0, "method": "a", "J": 4, "rel_l2": 0.4, "seconds": 30.0},
                 {"noise_std": 0.0, "method": "b", "rel_l2": 0.9},
                 {"noise_std": 0.0, "method": "a", "J": 4, "failed": "NonFiniteError"},
                 {"noise_std": 1.0, "method": "a", "J": 4, "rel_l2": 0.7}]
    rows = _summary(per_field)
    assert [(r["noise_std"], r["method"]) for r in rows] == [(0.0, "a"), (0.0, "b"), (1.0, "a")]
    a = rows[0]
    assert (a["n_fields"], a["failed"], a["J"]) == (3, 1, 4)
    assert a["rel_l2"] == pytest.approx(0.3) and a["seconds"] == pytest.approx(20.0)
    assert a["rel_l2_sd"] == pytest.approx(2 ** 0.5 * 0.1)        # sample sd of (0.2, 0.4)
    assert rows[1]["rel_l2_sd"] == 0.0 and rows[1]["spread"] is None


def test_navier_stokes_128_scores_assimilate_on_the_fine_truth(monkeypatch):
    """The 128 x 128 bench hands assimilate the fine black box's noise-free observation of the truth and scores its
    samples against that truth: a posterior of truth + known offsets gives the hand-computed errors."""
    from types import SimpleNamespace

    import geoinv.fluids as fluids
    from geoinv.bench import _navier_stokes as ns
    from geoinv.fluids import SCALE
    from geoinv.fluids._data import SEEDS
    from geoinv.metrics import band_relative_l2

    k = torch.arange(128, dtype=torch.float64) * 2 * torch.pi / 128
    w = (3 * torch.sin(2 * k)[:, None] * torch.cos(k)[None, :] + 0.5 * torch.cos(40 * k)[None, :]).float()[None]
    seen = {}

    def fake_generate(n, resolution, seed, progress=False):
        seen["generate"] = (n, resolution, seed)
        return w.repeat(n, 1, 1)

    def fake_assimilate(y, op, *, prior, gauss, n_samples, num_steps, generator, progress, **options):
        seen.update(y=y, op=op, prior=prior, options=options, n_samples=n_samples)
        x = (w[0] / SCALE).double().reshape(1, -1, 1)
        offsets = torch.tensor([0.1, 0.3], dtype=torch.float64).reshape(2, 1, 1)
        return SimpleNamespace(samples=x + offsets * x, stats={"forward_rounds": 3, "n_forward": 10,
                                                              "n_forward_surrogate": 20, "nfe": 5, "seconds": 1.0,
                                                              "gauss_newton_seconds": 0.5})

    monkeypatch.setattr(fluids, "generate", fake_generate)
    monkeypatch.setattr(fluids, "load_fields", lambda split, res: torch.randn(8, res, res,
                                                                             generator=torch.Generator().manual_seed(0)))
    monkeypatch.setattr(fluids, "assimilate", fake_assimilate)
    res = ns.run_fine(quick=True, progress=False, prior="my-prior", img_dir=None)
    assert seen["generate"] == (1, 128, SEEDS["test"]) and seen["prior"] == "my-prior"
    assert seen["op"].n == 128 and tuple(seen["op"].obs_shape) == (64, 64) and seen["op"].noise_std == 0
    with torch.no_grad():
        torch.testing.assert_close(seen["y"], seen["op"]((w[0] / SCALE).double().reshape(1, -1, 1)))
    assert seen["options"] == ns.FINE_QUICK
    per = {r["method"]: r for r in res["rows"][-1]["per_field"]}
    gnd = per[ns.FINE_NAME]
    assert gnd["rel_l2"] == pytest.approx(0.2) and gnd["rel_l2_mean"] == pytest.approx(0.2)
    assert gnd["spread_skill"] == pytest.approx(0.1 * 2 ** 0.5 / 0.2)    # sample std of the offsets / mean offset
    assert (gnd["J"], gnd["n_forward_surrogate"], gnd["seconds"]) == (2, 20, 1.0)
    oracle = float(band_relative_l2(torch.zeros(128, 128), w[0], (0, 32))[1])   # the cos(40 x) part only
    assert oracle == pytest.approx(0.5 / (3 ** 2 / 2 + 0.5 ** 2) ** 0.5, rel=1e-4)
    assert per[ns._oracle_name(32)]["rel_l2"] == pytest.approx(oracle, rel=1e-6)
    assert "64 x 64 surrogate evals" in res["markdown"] and "refine=0" in res["markdown"]
    assert "is met on every field (1-1 s per field, mean 1 s)" in res["markdown"]


def test_navier_stokes_budget_sentence_counts_fields_within_ten_minutes():
    from geoinv.bench._navier_stokes import _budget_sentence

    rows = [{"method": "m", "seconds": 500.0}, {"method": "m", "seconds": 700.0}, {"method": "m", "failed": "X"},
            {"method": "other", "seconds": 9000.0}]
    assert _budget_sentence(rows, "m") == ("The issue's budget of 10 min per field on 2 CPU cores is met on 1 of 2 "
                                           "fields (500-700 s per field, mean 600 s).")
    assert "met on every field" in _budget_sentence(rows[:1], "m")
    assert "not measured" in _budget_sentence(rows[2:3], "m")
