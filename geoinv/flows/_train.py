"""Training a conditional flow against a frozen prior: typed YAML config, resumable loop.

The checkpoint / resume machinery (atomic ``state.json`` + ``state-<step>.safetensors``
with model, EMA, optimizer and generator states; learning-rate schedule) is the one of
:mod:`geoinv.training`, reused as is.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geoinv.errors import CheckpointError
from geoinv.flows._model import ConditionalFlow, FlowConfig, latent_basis
from geoinv.flows._objective import flow_loss, simulate_measurements
from geoinv.training._config import DataConfig, _build

__all__ = ["FlowOptimConfig", "FlowTrainConfig", "load_flow_config", "flow_config_from_dict", "fit_flow",
           "distill_student", "train_flow", "evaluate_flow", "FlowTrainResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowOptimConfig:
    """Optimisation of a flow.

    Parameters
    ----------
    steps : int
    batch_size : int
        Measurements per step.
    n_z : int
        Flow samples per measurement per step.
    lr, weight_decay, warmup, schedule, lr_final, grad_clip, ema_decay :
        As in :class:`geoinv.training.OptimConfig` (AdamW, linear warm-up then cosine).
    lam : float
        Weight of the prior term (1 = Bayes).
    sigma_min, sigma_max : float, optional
        DSM-bound integration range in data units; default ``1e-3`` and ``100`` times the
        prior's typical scale (sqrt of its mean marginal variance).
    n_sigma : int
        Noise levels per flow sample in the DSM bound.
    control_variate : bool
        Use the prior's Gaussian base as a control variate of the DSM bound
        (:func:`~geoinv.flows.dsm_bound` ``control``; residual priors only): same expectation,
        much lower variance.
    missing : (float, float)
        Missing fraction of the simulated training masks, uniform in this range.
    distill_steps, distill_batch_size, distill_lr :
        First stage of a ``base="distilled"`` flow (:func:`distill_student`): Adam steps,
        measurements per step and learning rate (5 % linear warm-up, then cosine to ``lr_final``
        times it) of the student's distillation, before the flow's own steps. A run killed during
        this stage repeats it on resume (its state is saved once, when it ends).
    seed, val_every, ckpt_every, log_every, val_size, max_minutes, threads, weights_dtype :
        As in :class:`geoinv.training.OptimConfig` (``weights_dtype``: storage precision of the
        saved flow's network weights, :func:`save_flow`).
    """

    steps: int = 2000
    batch_size: int = 16
    n_z: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    schedule: str = "cosine"
    lr_final: float = 0.05
    grad_clip: float = 10.0
    ema_decay: float = 0.99
    lam: float = 1.0
    sigma_min: float | None = None
    sigma_max: float | None = None
    n_sigma: int = 1
    control_variate: bool = False
    missing: tuple = (0.2, 0.7)
    distill_steps: int = 1000
    distill_batch_size: int = 16
    distill_lr: float = 3e-4
    seed: int = 0
    val_every: int = 250
    ckpt_every: int = 250
    log_every: int = 50
    val_size: int = 64
    max_minutes: float | None = None
    threads: int | None = None
    weights_dtype: str = "float32"

    def __post_init__(self):
        from geoinv.io import check_weights_dtype

        check_weights_dtype(self.weights_dtype)
        if self.schedule not in ("cosine", "constant"):
            raise ValueError("schedule must be 'cosine' or 'constant'")
        if self.steps < 1 or self.batch_size < 1 or self.n_z < 1 or self.n_sigma < 1 or self.distill_batch_size < 1:
            raise ValueError("steps, batch_size, n_z, n_sigma and distill_batch_size must be positive")
        if self.distill_steps < 0:
            raise ValueError("distill_steps must be >= 0")
        lo, hi = self.missing
        if not 0 <= lo <= hi < 1:
            raise ValueError(f"missing must be a range inside [0, 1), got {self.missing}")


@dataclass(frozen=True)
class FlowTrainConfig:
    """A flow training run (one YAML file, ``geoinv train-flow configs/<name>.yaml``).

    Parameters
    ----------
    name : str
        Name of the flow (the shipped flow for a prior carries the prior's name).
    prior : str
        Shipped prior name (:func:`geoinv.io.load_shipped_prior`) or a checkpoint path.
    data : DataConfig
        Training split whose signals are used to *simulate measurements* (never the test split).
    flow : FlowConfig
    train : FlowOptimConfig
    """

    name: str
    prior: str
    data: DataConfig
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: FlowOptimConfig = field(default_factory=FlowOptimConfig)


_NESTED = {FlowTrainConfig: {"data": DataConfig, "flow": FlowConfig, "train": FlowOptimConfig}}


def _build_flow_cfg(cls, d, where):
    if cls in _NESTED:
        if not isinstance(d, dict):
            raise ValueError(f"config section {where or '<top>'} must be a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown key(s) in config section {where or '<top>'}: {', '.join(unknown)}; "
                             f"valid keys: {', '.join(sorted(names))}")
        kw = {k: (_build(_NESTED[cls][k], v or {}, k) if k in _NESTED[cls] else v) for k, v in d.items()}
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ValueError(f"config section {where or '<top>'}: {exc}") from exc
    return _build(cls, d, where)


def flow_config_from_dict(d: dict) -> FlowTrainConfig:
    """Build a :class:`FlowTrainConfig` from a plain dict (unknown keys raise ``ValueError``)."""
    return _build_flow_cfg(FlowTrainConfig, d, "")


def load_flow_config(path: str | os.PathLike) -> FlowTrainConfig:
    """Read a YAML flow-training configuration (``yaml.safe_load``)."""
    import yaml

    with open(path) as fh:
        return flow_config_from_dict(yaml.safe_load(fh) or {})


def _cfg_to_dict(cfg) -> dict:
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v
    return conv(dataclasses.asdict(cfg))


def _sigma_range(prior: Any, o: FlowOptimConfig) -> tuple[float, float]:
    from geoinv.priors.edm import _scale

    sc = _scale(prior)
    return (o.sigma_min if o.sigma_min is not None else 1e-3 * sc,
            o.sigma_max if o.sigma_max is not None else 1e2 * sc)


def _freeze(prior: Any) -> None:
    if isinstance(prior, torch.nn.Module):
        prior.eval()
        for p in prior.parameters():
            p.requires_grad_(False)


@torch.no_grad()
def evaluate_flow(flow: ConditionalFlow, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, n_samples: int = 64,
                  data_range: float = 1.0, generator: torch.Generator | None = None, batch: int = 64) -> dict:
    """Held-out metrics of a flow: PSNR of the K-sample mean, of one sample and of its base mean (the untrained flow).

    ``x`` (ground truth) is used for the metrics only.
    """
    from geoinv import metrics

    means, ones, bases = [], [], []
    for i in range(0, x.shape[0], batch):
        yi, mi = y[i:i + batch], mask[i:i + batch]
        mean, _, smp = flow.posterior(yi, mi, n_samples, generator=generator, return_samples=True)
        means.append(mean.double())
        ones.append(smp[:, 0].double())
        cond = flow.condition(yi, mi)
        bases.append(flow.decode(cond.mean_u if cond.chol is not None else flow.encode(mean)).double())
    xd = x.double()
    out = {}
    for k, v in (("psnr_mean", means), ("psnr_k1", ones), ("psnr_base", bases)):
        out[k] = float(metrics.psnr(torch.cat(v), xd, data_range=data_range).mean())
    return out


def distill_student(flow: ConditionalFlow, train_x: torch.Tensor, opts: FlowOptimConfig = FlowOptimConfig(), *,
                    progress: bool = False, val: tuple | None = None, data_range: float = 1.0) -> dict:
    """First training stage of a ``base="distilled"`` flow: fit its student to its teacher, in place.

    Measurements are simulated from ``train_x`` as in :func:`fit_flow`; the loss is
    :meth:`~geoinv.flows.ConditionalFlow.distill_loss` (student against the frozen prior's
    ``len(refine_steps)``-call estimate; no ground truth). The student is frozen again at the end.

    Returns
    -------
    dict
        ``steps``, ``wall_time_s``, ``history`` (train loss; with ``val``: validation loss
        and the PSNR of the student's and the teacher's base means, truth used for the metric only).
    """
    from tqdm.auto import tqdm

    from geoinv import metrics

    o = opts
    student = flow.student
    params = list(student.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=o.distill_lr)
    gen = torch.Generator().manual_seed(o.seed + 21)
    warm = max(1, o.distill_steps // 20)
    hist, run, t0 = [], 0.0, time.perf_counter()

    def validate(step):
        vx, vy, vm = val
        with torch.no_grad():
            loss = float(flow.distill_loss(vy.to(flow.W.dtype), vm).mean())
            yc, m = flow._flat_inputs(vy.to(flow.W.dtype), vm)
            _, chol, mg = flow._gaussian(yc, m, flow.noise_std)
            rec = {"step": step, "val_loss": loss}
            for k, teacher in (("psnr_student", False), ("psnr_teacher", True)):
                est = flow.decode(flow._refine(mg, chol, yc, m, flow.noise_std, teacher=teacher)).double()
                rec[k] = float(metrics.psnr(est, vx.double(), data_range=data_range).mean())
        hist.append(rec)
        log.info("distill step %d: val loss %.3g, val PSNR student %.2f dB, teacher %.2f dB", step, loss,
                 rec["psnr_student"], rec["psnr_teacher"])

    if val is not None:
        validate(0)
    student.train()
    bar = tqdm(total=o.distill_steps, disable=not progress, leave=False, desc="distill")
    for step in range(1, o.distill_steps + 1):
        idx = torch.randint(train_x.shape[0], (o.distill_batch_size,), generator=gen)
        y, mask = simulate_measurements(train_x[idx], missing=tuple(o.missing), noise_std=flow.noise_std, generator=gen)
        cos = 0.5 * (1 + math.cos(math.pi * max(0, step - warm) / max(1, o.distill_steps - warm)))
        for gr in opt.param_groups:
            gr["lr"] = o.distill_lr * min(1.0, step / warm) * (o.lr_final + (1 - o.lr_final) * cos)
        loss = flow.distill_loss(y.to(flow.W.dtype), mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        run += float(loss.detach())
        bar.update(1)
        if step % o.log_every == 0 or step == o.distill_steps:
            hist.append({"step": step, "train_loss": run / (o.log_every if step % o.log_every == 0 else
                                                            step % o.log_every)})
            bar.set_postfix(loss=f"{hist[-1]['train_loss']:.3g}")
            run = 0.0
    bar.close()
    student.eval()
    for p in params:
        p.requires_grad_(False)
    if val is not None:
        validate(o.distill_steps)
    return {"steps": o.distill_steps, "wall_time_s": time.perf_counter() - t0, "history": hist}


def fit_flow(flow: ConditionalFlow, prior: Any, train_x: torch.Tensor, opts: FlowOptimConfig = FlowOptimConfig(), *,
             progress: bool = False, val: tuple | None = None, out_dir: str | os.PathLike | None = None,
             resume: bool = True, cfg_dict: dict | None = None, stats: dict | None = None,
             data_range: float = 1.0) -> tuple[ConditionalFlow, dict]:
    """Train ``flow`` in place with the unsupervised reverse-KL objective; returns the EMA flow and stats.

    Parameters
    ----------
    flow : ConditionalFlow
    prior : Prior
        Frozen prior (a residual :class:`~geoinv.priors.EDMDenoiser` or a GaussianPrior).
    train_x : Tensor, shape (K, N, C)
        Training signals, used *only* to simulate measurements ``(y, mask)``.
    opts : FlowOptimConfig
    val : (x, y, mask), optional
        Validation measurements (from the training split) for the validation loss and PSNR.
    out_dir : path, optional
        Resumable state (``state.json`` + ``state-<step>.safetensors``) is written here.
    """
    from tqdm.auto import tqdm

    from geoinv.training._train import _load_state, _lr_at, _read_state_meta, _save_state

    o = opts
    _freeze(prior)
    smin, smax = _sigma_range(prior, o)
    control = None
    if o.control_variate:
        control = getattr(prior, "base", None)
        if control is None:
            raise ValueError("control_variate needs a residual prior (one with a Gaussian base)")
    distilled = flow.config.base == "distilled"
    if distilled and getattr(flow, "student", None) is None:
        flow.attach_prior(prior)
    ema = copy.deepcopy(flow, {id(prior): prior})  # the frozen prior (a "refined" base) is shared, not copied
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in flow.parameters() if p.requires_grad], lr=o.lr, weight_decay=o.weight_decay)
    gens = {"data": torch.Generator().manual_seed(o.seed + 11), "noise": torch.Generator().manual_seed(o.seed + 12)}
    stats = dict(stats or {})
    stats.setdefault("history", [])
    stats.setdefault("wall_time_s", 0.0)
    stats.setdefault("train_steps", 0)
    stats.update({"sigma_min": smin, "sigma_max": smax, "n_params": sum(p.numel() for p in flow.parameters())})
    step = 0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        meta = _read_state_meta(out) if resume else None
        if meta is not None:
            old = dict(meta["config"])
            new = dict(cfg_dict or {})
            if {k: v for k, v in old.items() if k != "train"} != {k: v for k, v in new.items() if k != "train"}:
                raise CheckpointError(f"{out}/state.json was written for a different configuration; use another "
                                      "out_dir or resume=False")
            _load_state(out, meta, flow, ema, opt, gens)
            step, stats = int(meta["step"]), meta["stats"]
            log.info("resuming flow training from step %d", step)
    if distilled and "distill" not in stats:
        # stage 1 (the student's weights are part of the flow's state: a resumed run has them)
        stats["distill"] = distill_student(flow, train_x, o, progress=progress, val=val, data_range=data_range)
        ema.load_state_dict(flow.state_dict())
        if out is not None:
            _save_state(out, step, flow, ema, opt, gens, stats, cfg_dict or {})
    vgen_seed = o.seed + 104729
    t0 = time.perf_counter()
    wall0 = stats["wall_time_s"]
    run = {"loss": 0.0, "fidelity": 0.0, "log_q": 0.0, "prior": 0.0}
    run_n = 0
    bar = tqdm(total=o.steps, initial=step, disable=not progress, leave=False, desc="train-flow")
    flow.train()
    n_train = train_x.shape[0]
    while step < o.steps:
        idx = torch.randint(n_train, (o.batch_size,), generator=gens["data"])
        y, mask = simulate_measurements(train_x[idx], missing=tuple(o.missing), noise_std=flow.noise_std,
                                        generator=gens["data"])
        for gr in opt.param_groups:
            gr["lr"] = _lr_at(step, o)
        terms = flow_loss(flow, prior, y.to(flow.W.dtype), mask, n_z=o.n_z, lam=o.lam, sigma_min=smin,
                          sigma_max=smax, n_sigma=o.n_sigma, control=control, generator=gens["noise"])
        loss = terms["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(flow.parameters(), o.grad_clip)
        opt.step()
        decay = min(o.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), flow.parameters()):
                pe.lerp_(p, 1 - decay)
        step += 1
        for k in run:
            run[k] += float(terms[k].detach().mean())
        run_n += 1
        bar.update(1)
        if step % o.log_every == 0 or step == o.steps:
            rec = {"step": step, **{f"train_{k}": v / run_n for k, v in run.items()}}
            stats["history"].append(rec)
            bar.set_postfix(loss=f"{rec['train_loss']:.1f}")
            run = dict.fromkeys(run, 0.0)
            run_n = 0
        if val is not None and (step % o.val_every == 0 or step == o.steps):
            ema.eval()
            vx, vy, vm = val
            g = torch.Generator().manual_seed(vgen_seed)
            with torch.no_grad():
                vt = flow_loss(ema, prior, vy.to(flow.W.dtype), vm, n_z=o.n_z, lam=o.lam, sigma_min=smin,
                               sigma_max=smax, n_sigma=o.n_sigma, control=control, generator=g)
            rec = {"step": step, "val_loss": float(vt["loss"].mean()),
                   **evaluate_flow(ema, vx, vy, vm, generator=torch.Generator().manual_seed(vgen_seed),
                                   data_range=data_range)}
            stats["history"].append(rec)
            log.info("flow step %d: val loss %.2f, val PSNR mean %.2f dB (base %.2f dB)", step, rec["val_loss"],
                     rec["psnr_mean"], rec["psnr_base"])
        elapsed = wall0 + time.perf_counter() - t0
        stats["wall_time_s"] = elapsed
        stats["train_steps"] = step
        timeout = o.max_minutes is not None and elapsed > 60 * o.max_minutes
        if out is not None and (step % o.ckpt_every == 0 or step == o.steps or timeout):
            _save_state(out, step, flow, ema, opt, gens, stats, cfg_dict or {})
        if timeout:
            log.warning("flow training: stopping at step %d after %.1f min (max_minutes)", step, elapsed / 60)
            break
    bar.close()
    ema.eval()
    flow.eval()
    stats["steps_per_s"] = stats["train_steps"] / max(stats["wall_time_s"], 1e-9)
    return ema, stats


@dataclass
class FlowTrainResult:
    """What :func:`train_flow` returns."""

    flow: ConditionalFlow
    path: Path
    stats: dict


def train_flow(config_path: str | os.PathLike | FlowTrainConfig, *, out_dir: str | os.PathLike | None = None,
               resume: bool = True, progress: bool = True, max_steps: int | None = None) -> FlowTrainResult:
    """Train a conditional flow from a YAML config (``geoinv train-flow configs/<name>.yaml``).

    Measurements are simulated from the *training* split only (random masks with a missing
    fraction uniform in ``train.missing``, noise std ``flow.noise_std``); a validation part of
    the training split (``data.val_fraction``) gives the validation loss and PSNR. The final
    flow (EMA weights) is saved as ``<out_dir>/<name>.safetensors`` + ``.json``; the run
    resumes from ``<out_dir>/state.json`` when present.
    """
    from geoinv.flows._io import load_prior_spec, save_flow
    from geoinv.training._data import load_split, train_val
    from geoinv.training._train import prepare_run

    cfg = config_path if isinstance(config_path, FlowTrainConfig) else load_flow_config(config_path)
    cfg, out = prepare_run(cfg, out_dir, max_steps)
    o = cfg.train
    prior = load_prior_spec(cfg.prior)
    split = load_split(cfg.data, "train")
    if prior.fingerprint is not None and split.signal.fingerprint != prior.fingerprint:
        raise CheckpointError(f"prior {cfg.prior!r} is on domain {prior.fingerprint}, the data on {split.signal.fingerprint}")
    fit_x, val_x = train_val(cfg.data, split.x, o.seed)
    flow = ConditionalFlow(latent_basis(prior, cfg.flow.rank), cfg.flow, fingerprint=prior.fingerprint,
                           name=cfg.name).attach_prior(prior)
    vx = val_x[: o.val_size]
    vy, vm = simulate_measurements(vx, missing=tuple(o.missing), noise_std=cfg.flow.noise_std,
                                   generator=torch.Generator().manual_seed(o.seed + 7))
    cfg_dict = _cfg_to_dict(cfg)
    ema, stats = fit_flow(flow, prior, fit_x, o, progress=progress, val=(vx, vy, vm), out_dir=out, resume=resume,
                          cfg_dict=cfg_dict, data_range=split.data_range,
                          stats={"data": {"name": cfg.data.name, "n_fit": int(fit_x.shape[0]), "n_val": int(vx.shape[0])},
                                 "threads": torch.get_num_threads()})
    path = out / cfg.name
    save_flow(ema, path, prior=cfg.prior, training=stats, config=cfg_dict, weights_dtype=o.weights_dtype)
    return FlowTrainResult(ema, path, stats)
