"""Numbers and pictures of the shipped priors' model cards (docs/priors.md).

Usage: GEOINV_DATA_DIR=../shared/data python docs/scripts/prior_cards.py <name> [--harmonic N]
Writes docs/img/<name>-samples.png (unconditional EDM Heun samples) and prints the
held-out denoising table (geoinv.priors.bench_denoising) as markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from geoinv.io import load_prior, load_shipped_prior
from geoinv.priors import bench_denoising, edm_sample

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--path", default=None, help="checkpoint path instead of the shipped prior")
    ap.add_argument("--harmonic", type=int, default=0, help="test signals for the (slow) harmonic smoother")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--churn", type=float, default=0.0, help="EDM S_churn (stochastic sampler) for the pictures")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5], help="noise std, data units")
    a = ap.parse_args()
    torch.set_num_threads(1)
    prior = load_prior(a.path) if a.path else load_shipped_prior(a.name)
    prior.eval()
    rows = bench_denoising(prior, sigmas=a.sigmas, harmonic=False)
    if a.harmonic:
        rows += [r for r in bench_denoising(prior, sigmas=a.sigmas, n_test=a.harmonic, harmonic=True) if r["method"] == "harmonic"]
    print("| method | " + " | ".join(f"sigma={s:g}" for s in sorted({r['sigma'] for r in rows})) + " |")
    for m in dict.fromkeys(r["method"] for r in rows):
        rr = sorted((r for r in rows if r["method"] == m), key=lambda r: r["sigma"])
        print(f"| {m} (n={rr[0]['n']}) | " + " | ".join(f"{r['psnr']:.2f}" for r in rr) + " |")
    print(json.dumps(rows))
    if a.samples:
        t0 = time.perf_counter()
        x = edm_sample(prior, a.samples, steps=a.steps, churn=a.churn, generator=torch.Generator().manual_seed(0))
        print(f"sampling {a.samples} x {2 * a.steps - 1} NFE (churn {a.churn:g}): {time.perf_counter() - t0:.1f} s")
        from geoinv.training._config import config_from_dict
        from geoinv.training._data import load_split

        sig = load_split(config_from_dict(prior.train_config).data, "test").signal
        out = ROOT / "docs" / "img" / f"{a.name}-samples.png"
        panels = {f"sample {i}": x[i, :, 0].float().numpy() for i in range(a.samples)}
        if sig.kind == "mesh":
            from geoinv.viz import render_mesh_panels

            # painted data (Bunny-MNIST) from the painting frame, so that digits read upright
            painted = "bunny" in a.name
            render_mesh_panels(sig, panels, out, panel_size=(220, 240), clim=(0.0, 1.0) if painted else None,
                               camera="painted" if painted else None)
            if painted:
                _painted_extras(prior, sig, a)
        elif sig.kind == "grid":
            from geoinv.viz import grid_panels

            grid_panels({k: v.reshape(sig.values.shape[-2:]) for k, v in panels.items()}, out, origin="lower",
                        panel_width=2.4)
        else:
            from geoinv.viz import map_panels

            map_panels(panels, out, like=sig[0], cmap="RdBu_r" if "grf" in a.name else "inferno", panel_width=2.6, dpi=80)
        print("wrote", out)


def _painted_extras(prior, sig, a) -> None:
    """Bunny-MNIST: test digits next to Gaussian-base samples on the bunny, and samples in the painting plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoinv.datasets._mnist import _image_coordinates
    from geoinv.viz import render_mesh_panels

    g = prior.base.sample(4, torch.Generator().manual_seed(0))
    ref = {**{f"test digit {i}": sig.values[i * 125, :, 0].numpy() for i in range(4)},
           **{f"Gaussian sample {i}": g[i, :, 0].float().numpy() for i in range(4)}}
    out = ROOT / "docs" / "img" / f"{a.name}-reference.png"
    render_mesh_panels(sig, ref, out, panel_size=(220, 240), clim=(0.0, 1.0), camera="painted")
    print("wrote", out)
    # the painting plane: every vertex at its image coordinates (both sides of the bunny overlap)
    x = edm_sample(prior, 16, steps=a.steps, churn=a.churn, generator=torch.Generator().manual_seed(1))
    row, col = _image_coordinates(sig.vertices.numpy().astype(float), (28, 28), 1.0)
    fig, ax = plt.subplots(2, 12, figsize=(14, 2.9))
    fields = [x[i, :, 0].numpy() for i in range(16)] + [sig.values[i * 62, :, 0].numpy() for i in range(8)]
    for k, (axk, f) in enumerate(zip(ax.flat, fields)):
        axk.scatter(col, -row, c=f, s=2.5, cmap="viridis", vmin=0, vmax=1, linewidths=0)
        axk.set_axis_off()
        axk.set_title(f"sample {k}" if k < 16 else "test digit", fontsize=7)
    fig.tight_layout()
    out = ROOT / "docs" / "img" / f"{a.name}-samples-flat.png"
    fig.savefig(out, dpi=90)
    print("wrote", out)


if __name__ == "__main__":
    main()
