"""The training loop: EDM loss, AdamW, EMA, clipping, explicit generators, resumable checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geoinv.errors import CheckpointError
from geoinv.training._config import TrainConfig, config_to_dict, load_config

__all__ = ["train", "build_prior", "edm_loss", "TrainResult"]

log = logging.getLogger(__name__)

STATE_FORMAT = "geoinv-train-state"


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    prior: Any
    path: Path
    stats: dict


# --------------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------------
def build_prior(cfg: TrainConfig, signal: Any, fit_x: torch.Tensor):
    """Build the (untrained) :class:`~geoinv.priors.EDMDenoiser` of a config.

    Normalization statistics and the Gaussian base come from ``fit_x`` (the training part
    of the training split), in data units. Parameters are initialised from ``cfg.train.seed``.
    """
    from geoinv.priors import GaussianPrior
    from geoinv.priors.backbones import GraphUNet, MLPBackbone, MLPConfig, UNet2d, UNetConfig
    from geoinv.priors.edm import EDMDenoiser

    m = cfg.model
    k, n, c = fit_x.shape
    x64 = fit_x.double()
    mean = x64.mean(0) if m.normalize == "point" else x64.mean((0, 1))
    std = float((x64 - mean).std())
    torch.manual_seed(cfg.train.seed)  # parameter initialisation only
    cond = c if m.base_input else 0
    if m.backbone == "mlp":
        o = m.mlp
        bb = MLPBackbone(MLPConfig(n_points=n, channels=c, hidden=o.hidden, depth=o.depth, emb_dim=o.emb_dim,
                                   dropout=o.dropout, cond_channels=cond))
    elif m.backbone == "graph":
        o = m.graph
        bb = GraphUNet.from_signal(signal, widths=o.widths, blocks=o.blocks, emb_dim=o.emb_dim, n_pos=o.n_pos,
                                   factor=o.factor, cond_channels=cond)
    else:
        o = m.unet
        if getattr(signal, "kind", None) == "grid":
            hw = signal.shape
        elif getattr(signal, "grid_shape", None) is not None:
            hw = signal.grid_shape
        else:
            raise ValueError("the unet backbone needs a grid (GridSignal or a lat/lon SphereSignal)")
        bb = UNet2d(UNetConfig(height=hw[0], width=hw[1], channels=c, widths=o.widths, blocks=o.blocks,
                               emb_dim=o.emb_dim, periodic=tuple(o.periodic), cond_channels=cond))
    base = None
    if m.residual:
        base = GaussianPrior.fit(x64, rank=m.gaussian_rank, fingerprint=signal.fingerprint, name=f"{cfg.name}-gaussian")
        base = _float32_exact(base)
    return EDMDenoiser(bb, m.sigma_data, base=base, base_input=m.base_input, data_mean=mean, data_std=std,
                       fingerprint=signal.fingerprint,
                       event_shape=(n, c), name=cfg.name)


def _float32_exact(g):
    """Round a GaussianPrior's tensors to float32-representable values (small, bit-exact checkpoints)."""
    from geoinv.priors import GaussianPrior

    r = lambda t: t.float().double()  # noqa: E731
    out = GaussianPrior(r(g.mean), eigvecs=r(g.eigvecs), eigvals=r(g.eigvals), floor=float(torch.tensor(g.floor).float()),
                        fingerprint=g.fingerprint, name=g.name)
    out.shrinkage = getattr(g, "shrinkage", None)
    return out


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------
def edm_loss(prior, x: torch.Tensor, sigma_n: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r"""EDM loss :math:`\lambda(\sigma) \|D(x + \sigma \epsilon; \sigma) - x\|^2` in normalized units.

    Parameters
    ----------
    prior : EDMDenoiser
    x : Tensor, shape (B, N, C), data units
    sigma_n : Tensor, shape (B,)
        Normalized noise levels (``sigma / data_std``).
    eps : Tensor, shape (B, N, C)
        Standard normal noise.

    Returns
    -------
    Tensor, shape (B,)
        Per-sample loss with :math:`\lambda = (\sigma^2 + \sigma_d^2) / (\sigma \sigma_d)^2`, mean over points.
    """
    std, sd = prior.data_std, prior.sigma_data
    sig = sigma_n * std
    y = x + sig[:, None, None] * eps
    d = prior.denoise(y, sig)
    w = (sigma_n**2 + sd**2) / (sigma_n * sd) ** 2
    return w * (((d - x) / std) ** 2).flatten(1).mean(1)


def _val_batch(val_x: torch.Tensor, cfg, seed: int):
    g = torch.Generator().manual_seed(seed + 104729)
    v = val_x[: cfg.train.val_size]
    sigma_n = torch.exp(cfg.train.p_mean + cfg.train.p_std * torch.randn(v.shape[0], generator=g))
    eps = torch.randn(v.shape, generator=g)
    return v, sigma_n, eps


@torch.no_grad()
def _val_loss(prior, batch, bs: int = 64) -> float:
    v, s, e = batch
    tot = 0.0
    for i in range(0, v.shape[0], bs):
        tot += float(edm_loss(prior, v[i:i + bs], s[i:i + bs], e[i:i + bs]).sum())
    return tot / v.shape[0]


@torch.no_grad()
def _val_mse_at(prior, v: torch.Tensor, sigmas_n=(0.1, 0.3, 1.0), seed: int = 0, bs: int = 64) -> dict:
    """Denoising MSE (normalized units) of the validation signals at fixed noise levels."""
    g = torch.Generator().manual_seed(seed + 1299709)
    out = {}
    for s in sigmas_n:
        e = torch.randn(v.shape, generator=g)
        tot = 0.0
        for i in range(0, v.shape[0], bs):
            xb = v[i:i + bs]
            d = prior.denoise(xb + s * prior.data_std * e[i:i + bs], s * prior.data_std)
            tot += float((((d - xb) / prior.data_std) ** 2).flatten(1).mean(1).sum())
        out[f"{s:g}"] = tot / v.shape[0]
    return out


# --------------------------------------------------------------------------------------------
# resumable state
# --------------------------------------------------------------------------------------------
def _state_tensors(model, ema, opt, gens: dict) -> dict[str, torch.Tensor]:
    t = {f"model.{k}": v for k, v in model.state_dict().items()}
    t.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    params = list(model.parameters())
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        for k, v in st.items():
            t[f"opt.{i}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    for name, g in gens.items():
        t[f"rng.{name}"] = g.get_state()
    t["rng.torch"] = torch.get_rng_state()
    return t


def _save_state(out_dir: Path, step: int, model, ema, opt, gens, stats: dict, cfg_dict: dict) -> None:
    from geoinv.io import atomic_write_json, write_tensors

    fname = f"state-{step:08d}.safetensors"
    dtypes, sha = write_tensors(out_dir / fname, _state_tensors(model, ema, opt, gens), {"format": STATE_FORMAT})
    old = _read_state_meta(out_dir)
    atomic_write_json(out_dir / "state.json", {
        "format": STATE_FORMAT, "step": step, "file": fname, "sha256": sha, "dtypes": dtypes, "config": cfg_dict,
        "stats": stats,
    })
    if old is not None and old.get("file") != fname:
        try:
            (out_dir / old["file"]).unlink()
        except OSError:
            pass


def _read_state_meta(out_dir: Path) -> dict | None:
    from geoinv.io import read_json

    p = out_dir / "state.json"
    if not p.exists():
        return None
    meta = read_json(p)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{p} is not a geoinv training state")
    return meta


def _load_state(out_dir: Path, meta: dict, model, ema, opt, gens) -> None:
    from geoinv.io import read_tensors

    t, _ = read_tensors(out_dir / meta["file"], meta["dtypes"], meta["sha256"])
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")}, strict=True)
    ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")}, strict=True)
    params = list(model.parameters())
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v for k, v in t.items() if k.startswith(f"opt.{i}.")}
        if st:
            opt.state[p] = st
    for name, g in gens.items():
        g.set_state(t[f"rng.{name}"])
    torch.set_rng_state(t["rng.torch"])


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def _lr_at(step: int, o) -> float:
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    if o.schedule == "constant":
        return o.lr
    t = (step - o.warmup) / max(1, o.steps - o.warmup)
    return o.lr * (o.lr_final + (1 - o.lr_final) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def prepare_run(cfg, out_dir, max_steps):
    """Apply ``max_steps`` and the thread count of a run config; its run folder (``runs/<name>``
    by default). Shared by prior and flow training."""
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=int(max_steps)))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return cfg, Path(out_dir) if out_dir is not None else Path("runs") / cfg.name


def train(config_path: str | os.PathLike | TrainConfig, *, out_dir: str | os.PathLike | None = None,
          resume: bool = True, progress: bool = True, max_steps: int | None = None) -> TrainResult:
    """Train a diffusion prior from a YAML config (``geoinv train configs/<name>.yaml``).

    Parameters
    ----------
    config_path : path or TrainConfig
        YAML file read with ``yaml.safe_load`` into :class:`TrainConfig` (unknown keys are errors).
    out_dir : path, optional
        Where the resumable state (``state.json`` + ``state-<step>.safetensors``) and the
        final prior (``<name>.safetensors`` + ``<name>.json``, EMA weights) go; default
        ``runs/<name>``.
    resume : bool
        Continue from ``out_dir/state.json`` when present (same config required). A run
        killed at any moment (even SIGKILL) resumes from its last checkpoint and ends with
        the same weights as an uninterrupted run.
    progress : bool
        tqdm progress bar.
    max_steps : int, optional
        Override ``train.steps`` (total number of optimizer steps).

    Returns
    -------
    TrainResult
        ``prior`` (EMA weights, eval mode), ``path`` of the saved prior (without suffix),
        ``stats`` (wall time, steps/s, losses, validation history).
    """
    from tqdm.auto import tqdm

    from geoinv.io import save_prior
    from geoinv.training._data import load_split, train_val

    cfg = config_path if isinstance(config_path, TrainConfig) else load_config(config_path)
    cfg, out = prepare_run(cfg, out_dir, max_steps)
    o = cfg.train
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = config_to_dict(cfg)

    split = load_split(cfg.data, "train")
    fit_x, val_x = train_val(cfg.data, split.x, o.seed)
    model = build_prior(cfg, split.signal, fit_x)
    ema = copy.deepcopy(model.backbone)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.backbone.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    gens = {"data": torch.Generator().manual_seed(o.seed + 1), "noise": torch.Generator().manual_seed(o.seed + 2)}
    n_params = sum(p.numel() for p in model.backbone.parameters())
    stats: dict[str, Any] = {"history": [], "n_params": n_params, "n_fit": int(fit_x.shape[0]),
                             "n_val": int(val_x.shape[0]), "wall_time_s": 0.0, "train_steps": 0}
    step = 0
    meta = _read_state_meta(out) if resume else None
    if meta is not None:
        old = dict(meta["config"])
        if {k: v for k, v in old.items() if k != "train"} != {k: v for k, v in cfg_dict.items() if k != "train"}:
            raise CheckpointError(f"{out}/state.json was written for a different configuration; use another out_dir "
                                  "or resume=False")
        _load_state(out, meta, model.backbone, ema, opt, gens)
        step, stats = int(meta["step"]), meta["stats"]
        log.info("resuming %s from step %d", cfg.name, step)

    ema_model = _with_backbone(model, ema)  # shares base / normalization, EMA weights
    vbatch = _val_batch(val_x, cfg, o.seed)
    if "gaussian_val_mse" not in stats and model.base is not None:
        stats["gaussian_val_mse"] = _val_mse_at(_GaussianView(model), val_x[: o.val_size], seed=o.seed)
    if step == 0:  # the untrained model: the Gaussian's exact denoiser in residual mode
        ema.eval()
        stats["initial_val_loss"] = _val_loss(ema_model, vbatch)
    t0 = time.perf_counter()
    wall0 = stats["wall_time_s"]
    run_loss, run_n = 0.0, 0
    bar = tqdm(total=o.steps, initial=step, disable=not progress, leave=False, desc=cfg.name)
    model.train()
    while step < o.steps:
        idx = torch.randint(fit_x.shape[0], (o.batch_size,), generator=gens["data"])
        xb = fit_x[idx]
        sigma_n = torch.exp(o.p_mean + o.p_std * torch.randn(o.batch_size, generator=gens["noise"]))
        eps = torch.randn(xb.shape, generator=gens["noise"])
        for gr in opt.param_groups:
            gr["lr"] = _lr_at(step, o)
        loss = edm_loss(model, xb, sigma_n, eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.backbone.parameters(), o.grad_clip)
        opt.step()
        decay = min(o.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.backbone.parameters()):
                pe.lerp_(p, 1 - decay)
            for be, b in zip(ema.buffers(), model.backbone.buffers()):
                be.copy_(b)
        step += 1
        run_loss += float(loss.detach())
        run_n += 1
        bar.update(1)
        if step % o.log_every == 0 or step == o.steps:
            bar.set_postfix(loss=f"{run_loss / run_n:.4f}")
            stats["history"].append({"step": step, "train_loss": run_loss / run_n})
            run_loss, run_n = 0.0, 0
        if step % o.val_every == 0 or step == o.steps:
            ema.eval()
            vl = _val_loss(ema_model, vbatch)
            stats["history"].append({"step": step, "val_loss": vl})
            log.info("%s step %d: val loss %.5f", cfg.name, step, vl)
        elapsed = wall0 + time.perf_counter() - t0
        stats["wall_time_s"] = elapsed
        stats["train_steps"] = step
        timeout = o.max_minutes is not None and elapsed > 60 * o.max_minutes
        if step % o.ckpt_every == 0 or step == o.steps or timeout:
            _save_state(out, step, model.backbone, ema, opt, gens, stats, cfg_dict)
        if timeout:
            log.warning("%s: stopping at step %d after %.1f min (max_minutes)", cfg.name, step, elapsed / 60)
            break
    bar.close()
    ema.eval()
    stats["steps_per_s"] = stats["train_steps"] / max(stats["wall_time_s"], 1e-9)
    stats["val_loss"] = _val_loss(ema_model, vbatch)
    stats["val_mse"] = _val_mse_at(ema_model, val_x[: o.val_size], seed=o.seed)
    stats["data"] = {"name": cfg.data.name, "n_fit": int(fit_x.shape[0]), "n_val": int(val_x.shape[0])}
    ema_model.training_stats = stats
    ema_model.train_config = cfg_dict
    path = out / cfg.name
    save_prior(ema_model, path, weights_dtype=o.weights_dtype)
    return TrainResult(ema_model, path, stats)


def _with_backbone(model, backbone):
    from geoinv.priors.edm import EDMDenoiser

    return EDMDenoiser(backbone, model.sigma_data, base=model.base, base_input=model.base_input,
                       data_mean=model.data_mean, data_std=model.data_std, fingerprint=model.fingerprint, event_shape=model.event_shape,
                       name=model.name)


class _GaussianView:
    """The Gaussian base of an EDMDenoiser with its normalization attributes (for baselines)."""

    def __init__(self, model):
        self.base, self.data_std = model.base, model.data_std

    def denoise(self, x, sigma):
        return self.base.denoise(x, sigma)
