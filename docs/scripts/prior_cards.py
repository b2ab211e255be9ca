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
    a = ap.parse_args()
    torch.set_num_threads(1)
    prior = load_prior(a.path) if a.path else load_shipped_prior(a.name)
    prior.eval()
    rows = bench_denoising(prior, harmonic=False)
    if a.harmonic:
        rows += [r for r in bench_denoising(prior, n_test=a.harmonic, harmonic=True) if r["method"] == "harmonic"]
    print("| method | " + " | ".join(f"sigma={s:g}" for s in sorted({r['sigma'] for r in rows})) + " |")
    for m in dict.fromkeys(r["method"] for r in rows):
        rr = sorted((r for r in rows if r["method"] == m), key=lambda r: r["sigma"])
        print(f"| {m} (n={rr[0]['n']}) | " + " | ".join(f"{r['psnr']:.2f}" for r in rr) + " |")
    print(json.dumps(rows))
    if a.samples:
        t0 = time.perf_counter()
        x = edm_sample(prior, a.samples, steps=a.steps, generator=torch.Generator().manual_seed(0))
        print(f"sampling {a.samples} x {2 * a.steps - 1} NFE: {time.perf_counter() - t0:.1f} s")
        from geoinv.training._config import config_from_dict
        from geoinv.training._data import load_split

        sig = load_split(config_from_dict(prior.train_config).data, "test").signal
        out = ROOT / "docs" / "img" / f"{a.name}-samples.png"
        panels = {f"sample {i}": x[i, :, 0].float().numpy() for i in range(a.samples)}
        if sig.kind == "mesh":
            from geoinv.viz import render_mesh_panels

            render_mesh_panels(sig, panels, out, panel_size=(220, 240))
        else:
            from geoinv.viz import map_panels

            map_panels(panels, out, like=sig[0], cmap="RdBu_r" if "grf" in a.name else "inferno", panel_width=2.6, dpi=80)
        print("wrote", out)


if __name__ == "__main__":
    main()
