"""Both ways, same budget: the Bunny-MNIST graph U-Net as shipped (residual on the Gaussian, with
the Gaussian's estimate as input), residual without that input, and plain EDM (docs/priors.md).

``GEOINV_DATA_DIR=../shared/data python docs/scripts/prior_ablation.py [STEPS] [VARIANT ...]``
trains each variant of ``configs/bunny-mnist.yaml`` for STEPS steps (default 1500, about 8 min
on one thread) into ``runs/ablation-<variant>`` and prints the validation loss and the
denoising PSNR on the prior's 450 *validation* digits (training split; the test split is the
benchmark's) next to the Gaussian base's.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import torch

VARIANTS = {"base-input": {"residual": True, "base_input": True},
            "residual": {"residual": True, "base_input": False},
            "plain": {"residual": False, "base_input": False}}


@torch.no_grad()
def val_psnr(prior, val: torch.Tensor, sigmas=(0.05, 0.1, 0.2, 0.5), seed: int = 0) -> dict:
    """Mean PSNR (data range 1) of the one-step denoiser on ``val`` at each noise level."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas:
        y = val + s * torch.randn(val.shape, generator=g, dtype=val.dtype)
        d = torch.cat([prior.denoise(y[i:i + 50], s) for i in range(0, len(y), 50)])
        out[s] = float((10 * torch.log10(1 / ((d - val) ** 2).flatten(1).mean(1))).mean())
    return out


def main(steps: int = 1500, variants=tuple(VARIANTS)) -> None:
    from geoinv.priors import GaussianPrior
    from geoinv.training import train
    from geoinv.training._config import load_config
    from geoinv.training._data import load_split, train_val

    base = load_config("configs/bunny-mnist.yaml")
    split = load_split(base.data, "train")
    fit, val = train_val(base.data, split.x, base.train.seed)
    val = val[:200].double()
    gauss = GaussianPrior.fit(fit.double(), rank=base.model.gaussian_rank)
    print(json.dumps({"variant": "gaussian (rank 384)", **val_psnr(gauss, val)}))
    for v in variants:
        cfg = dataclasses.replace(base, name=f"bunny-mnist-{v}", model=dataclasses.replace(base.model, **VARIANTS[v]),
                                  train=dataclasses.replace(base.train, steps=steps, max_minutes=None, val_every=500))
        res = train(cfg, out_dir=f"runs/ablation-{v}", progress=False)
        s = res.stats
        print(json.dumps({"variant": v, "steps": s["train_steps"], "wall_s": round(s["wall_time_s"]),
                          "val_loss": s.get("val_loss"), **val_psnr(res.prior, val)}), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]) if a else 1500, tuple(a[1:]) or tuple(VARIANTS))
