"""Bunny-MNIST inpainting benchmark: every available method side by side on held-out digits."""

from __future__ import annotations

import functools
import logging
import time

from geoinv.bench import _common
from geoinv.bench._common import noisy_observation

log = logging.getLogger(__name__)

LEVELS = (0.3, 0.6, 0.8)
NOISE_STD = 0.1
NOTE = ("\n\nReading the table: sampler settings were tuned on validation digits of the training split "
        "(docs/samplers.md); `enkg (kalman, stochastic)` is the EnKG option with a Kalman-gain update and ancestral "
        "outer steps, the published update (w/||C||_F, deterministic ODE) reached only about 14 dB on validation "
        "digits. How much better the learned prior denoises than the Gaussian one is measured by "
        "`geoinv bench prior`. The flow's columns: PSNR of one sample (K=1), milliseconds per 128-sample posterior "
        "mean, and posterior samples per second.")


def _gain_note(rows: list[dict]) -> str:
    """Measured PSNR gain of each learned method over the exact Gaussian posterior, per missing level."""
    gauss = {r["missing"]: r["psnr"] for r in rows if r["method"] == "gaussian"}
    learned = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("gaussian", "harmonic")]
    parts = []
    for m in learned:
        gains = ", ".join(f"{r['missing']:.0%}: {r['psnr'] - gauss[r['missing']]:+.2f} dB"
                          for r in rows if r["method"] == m and r["missing"] in gauss)
        parts.append(f"`{m}` {gains}")
    return ("\n\nPSNR over the exact Gaussian posterior (this run): " + "; ".join(parts) + ".") if parts else ""


@functools.lru_cache(maxsize=1)
def fitted_gaussian():
    """The full-rank GaussianPrior fitted to the Bunny-MNIST training split (cached per process)."""
    from geoinv import datasets
    from geoinv.priors import GaussianPrior

    t0 = time.perf_counter()
    prior = GaussianPrior.fit(datasets.bunny_mnist("train"), name="bunny-mnist-gaussian")
    log.info("fitted Gaussian prior on 4,500 training digits in %.1f s", time.perf_counter() - t0)
    return prior


def make_case(n: int, missing: float, seed: int = 0, noise_std: float = NOISE_STD):
    """``n`` held-out digits, their random masks and noisy observations.

    Returns
    -------
    truth : MeshSignal, batched (n, N, 1)
    observed : MeshSignal, batched, NaN at unobserved vertices, noise on observed ones
    mask : bool Tensor, shape (n, N)
    """
    from geoinv import datasets, masks

    test = datasets.bunny_mnist("test")
    truth = test.with_point_values(test.point_values()[:n])
    mask = masks.random(truth, missing=missing, seed=seed, n=n)
    return truth, noisy_observation(truth, mask, noise_std, seed), mask


#: Sampler settings tuned on Bunny-MNIST *validation* digits (never test digits; see
#: docs/samplers.md). With the graph-U-Net prior one digit costs DPS ~25 s, MCG ~25 s and
#: EnKG ~20 s on one thread, so 12 digits x 3 levels take about 45 min (``--n 12``, the
#: docs run). Posterior means are averages of ``n_samples`` draws (below the MMSE for small
#: counts: on validation, DPS gained ~1.9 dB from 1 to 16 samples at 30 % missing).
TUNED: list[tuple[str, dict]] = [
    # DPS defaults: step_rule="inflated", inflation=0.1, step_size=1, 100 steps
    ("dps", {"n_samples": 16}),
    # MCG with the noise-aware projection (repository projection: capped near 21 dB by the noise)
    ("mcg", {"n_samples": 16, "num_steps": 100, "step_size": 0.3, "noise_aware": True, "label": "mcg (noise-aware)"}),
    # EnKG with the Kalman-gain update and ancestral outer steps (published defaults: ~15 dB at J = 32);
    # J = 32 since the graph-U-Net prior (J = 128 costs ~5 min per digit; 32 reached 29.98 dB on 3
    # validation digits at 60 % missing vs DPS 31.97 and Gaussian 26.43, docs/samplers.md)
    ("enkg", {"n_samples": 32, "num_steps": 40, "num_updates": 1, "max_ode_steps": 1, "update": "kalman",
              "guidance_scale": 1.0, "inflation": 0.1, "stochastic": True, "label": "enkg (kalman, stochastic)"}),
]


def make_val_case(n: int, missing: float, seed: int = 0, noise_std: float = NOISE_STD, prior_name: str = "bunny-mnist"):
    """Like :func:`make_case`, but on the shipped prior's *validation* digits (for tuning).

    The digits are the first ``n`` of the validation part of the training split that the
    prior held out when it was trained (``geoinv.training._data.train_val`` with the
    checkpoint's ``train_config``), so neither the prior nor the test split is touched.
    Masks and noise are drawn exactly as in :func:`make_case`.

    Returns
    -------
    truth, observed, mask : as in :func:`make_case`
    """
    from geoinv import datasets, io, masks
    from geoinv.training._config import config_from_dict
    from geoinv.training._data import train_val

    cfg = config_from_dict(io.load_shipped_prior(prior_name).train_config)
    train = datasets.bunny_mnist("train")
    _, val = train_val(cfg.data, train.point_values(), cfg.train.seed)
    truth = train.with_point_values(val[:n])
    mask = masks.random(truth, missing=missing, seed=seed, n=n)
    return truth, noisy_observation(truth, mask, noise_std, seed), mask


def learned_methods(prior_name: str = "bunny-mnist") -> list[tuple[str, dict]]:
    """The learned methods available in this install for a shipped prior, with the benchmark settings.

    The samplers get :data:`TUNED` (tuned on Bunny-MNIST validation digits) and ``prior``;
    the flow (128 samples) is added when one is shipped for that prior.
    """
    out = []
    try:
        from geoinv import io, samplers  # noqa: F401

        if prior_name in io.list_shipped_priors():
            out += [(m, {**o, "prior": prior_name}) for m, o in TUNED]
    except ImportError:
        pass
    try:
        from geoinv import flows

        if flows.has_shipped_flow(prior_name):
            out += [("flow", {"n_samples": 128, "prior": prior_name})]
    except (ImportError, AttributeError):
        pass
    return out


COLUMNS = [("missing", "missing", ".0%"), *_common.COLUMNS, *_common.PROB_COLUMNS, *_common.FLOW_COLUMNS]


def _flow_speed_note(rows: list[dict]) -> str:
    """Measured speed of the flow against DPS (per posterior mean) and its throughput at 4,140 points."""
    flow = {r["missing"]: r for r in rows if r["method"] == "flow"}
    dps = {r["missing"]: r for r in rows if r["method"] == "dps"}
    if not flow:
        return ""
    from geoinv.flows._bench import flow_throughput

    parts = []
    if dps:
        ratio = ", ".join(f"{m:.0%}: {dps[m]['s_per_signal'] / (flow[m]['ms_per_mean'] / 1e3):,.0f}x"
                          for m in sorted(flow) if m in dps)
        parts.append(f"Speed-up of one flow posterior mean (K=128, conditioning included, timed on 1 thread) over "
                     f"one DPS posterior mean (16 samples, the run's threads): {ratio}.")
    t0, t1 = flow_throughput(), flow_throughput(floor=1e-4)
    parts.append(f"Flow throughput at {t0['dim']:,} points (the 46 x 90 ERA5 grid of the amortized-posterior paper; "
                 f"same architecture, rank {t0['rank']}, {t0['threads']} thread(s), `geoinv.flows._bench.flow_throughput`): "
                 f"{t0['samples_per_s']:,.0f} posterior samples / s once a measurement is conditioned "
                 f"({t0['ms_condition']:.1f} ms per measurement; {t0['samples_per_s_k']:,.0f} / s end to end at K=128); "
                 f"with isotropic complement noise (a low-rank prior with a floor) {t1['samples_per_s']:,.0f} / s.")
    return "\n\n" + " ".join(parts)


def run(*, quick: bool = False, n_test: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """``geoinv bench bunny-mnist``: 30/60/80 % of vertices missing, noise std 0.1."""
    n = n_test or (5 if quick else 20)
    gp = fitted_gaussian()
    methods = [("harmonic", {}), ("gaussian", {"prior": gp})] + learned_methods()
    rows = []
    for missing in LEVELS:
        truth, observed, mask = make_case(n, missing, seed)
        level = _common.run_methods(truth, observed, mask, methods=methods, noise_std=NOISE_STD, data_range=1.0,
                                    seed=seed, progress=progress)
        _common.add_flow_columns(level, truth, observed, mask, prior="bunny-mnist", noise_std=NOISE_STD,
                                 data_range=1.0, seed=seed)
        rows += [{"missing": missing, **r} for r in level]
    from geoinv.bench import markdown_table

    md = (f"Held-out Bunny-MNIST test digits (first {n} of the fixed 10 % split), vertices missing "
          f"uniformly at random, Gaussian noise std {NOISE_STD} on observed vertices, PSNR over all "
          f"1,889 vertices with data range 1. `gaussian` is the exact posterior of a full-rank Gaussian "
          f"prior fitted to the 4,500 training digits (shrinkage picked on a held-out part of train); "
          f"`harmonic` chooses its weight by empirical Bayes on the observed values only.\n\n"
          + markdown_table(rows, COLUMNS) + _gain_note(rows) + NOTE + _flow_speed_note(rows))
    return {"rows": rows, "markdown": md}
