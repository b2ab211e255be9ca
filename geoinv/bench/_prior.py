"""Prior benchmark: held-out denoising PSNR of every shipped prior vs the Gaussian and harmonic baselines."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SIGMAS = (0.05, 0.1, 0.2, 0.5)


def run(*, quick: bool = False, n_test: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """``geoinv bench prior``: Tweedie denoising on held-out signals at four noise levels, per shipped prior."""
    from geoinv.bench import markdown_table
    from geoinv.io import list_shipped_priors
    from geoinv.priors import bench_denoising

    n = n_test or (8 if quick else 50)
    rows = []
    for name in sorted(list_shipped_priors()):
        log.info("denoising benchmark of %s", name)
        rows += bench_denoising(name, SIGMAS, n_test=n, seed=seed)
    cols = [("prior", "prior", ""), ("sigma", "noise std", "g"), ("method", "denoiser", ""), ("psnr", "PSNR [dB]", ".2f"),
            ("psnr_std", "± sd", ".2f"), ("rmse", "RMSE", ".4f"), ("n", "signals", "d"), ("seconds", "s", ".1f")]
    md = (f"One-step Tweedie denoising `D(x + sigma*eps; sigma)` on the first {n} held-out test signals of each "
          f"prior's data set, noise std in data units (Bunny-MNIST values are in [0, 1]; ERA5 in K; GRF in unit "
          f"variance). `learned` = the shipped diffusion prior, `gaussian` = the exact denoiser of the Gaussian "
          f"prior fitted to the same training data, `harmonic` = Laplacian smoothing with an empirical-Bayes "
          f"weight. PSNR uses each data set's fixed data range.\n\n" + markdown_table(rows, cols) + _gain_note(rows) + _training_note())
    return {"rows": rows, "markdown": md}


#: unconditional sample pictures of the model cards (``python docs/scripts/prior_cards.py <name>``)
PICTURES = {"bunny-mnist": ["bunny-mnist-samples.png", "bunny-mnist-samples-flat.png", "bunny-mnist-reference.png"]}


def _training_note() -> str:
    """Training record of every shipped prior (read from its checkpoint metadata) and the sample pictures."""
    from geoinv.io import list_shipped_priors, load_shipped_prior

    lines = []
    for name in sorted(list_shipped_priors()):
        t = load_shipped_prior(name).training_stats
        v0 = t.get("initial_val_loss")
        lines.append(f"| {name} | {t.get('n_params', 0):,} | {t.get('train_steps', 0):,} | "
                     f"{t.get('wall_time_s', 0.0):,.0f} | {t.get('steps_per_s', 0.0):.2f} | "
                     f"{'' if v0 is None else f'{v0:.4f} -> '}{t.get('val_loss', float('nan')):.4f} |")
    pics = " ".join(f"![{p}](img/{p})" for name in sorted(list_shipped_priors()) for p in
                    PICTURES.get(name, [f"{name}-samples.png"]))
    return ("\n\nTraining (from each checkpoint's metadata; `geoinv train configs/<name>.yaml`, 1 torch thread on "
            "this 2-core machine; validation loss EDM-weighted on the held-out part of the training split, start = "
            "the untrained model):\n\n| prior | parameters | steps | wall s | steps / s | validation loss |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines)
            + "\n\nUnconditional samples (EDM Heun; the Bunny-MNIST ones with churn, next to test digits and to "
            "samples of the Gaussian base; `python docs/scripts/prior_cards.py <name>`, assessment in "
            "docs/priors.md):\n\n" + pics)


def _gain_note(rows: list[dict]) -> str:
    """Learned minus Gaussian (and minus the best classical) PSNR per prior and noise level, from this run."""
    psnr = {(r["prior"], r["sigma"], r["method"]): r["psnr"] for r in rows}
    lines = []
    for name in dict.fromkeys(r["prior"] for r in rows):
        sig = [s for s in SIGMAS if (name, s, "learned") in psnr]
        vs_g = " / ".join(f"{psnr[name, s, 'learned'] - psnr[name, s, 'gaussian']:+.2f}" for s in sig)
        vs_best = " / ".join(f"{psnr[name, s, 'learned'] - max(psnr[name, s, 'gaussian'], psnr[name, s, 'harmonic']):+.2f}"
                             for s in sig)
        lines.append(f"| {name} | {vs_g} | {vs_best} |")
    return ("\n\nLearned minus baseline PSNR [dB] at noise std " + " / ".join(f"{s:g}" for s in SIGMAS)
            + " (this run; negative = the learned prior loses):\n\n| prior | vs gaussian | vs best of gaussian and harmonic |\n"
            "|---|---|---|\n" + "\n".join(lines))
