"""Typed training configuration, read from YAML with ``yaml.safe_load``; unknown keys are errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DataConfig", "MLPOptions", "GraphOptions", "UNetOptions", "ModelConfig", "OptimConfig",
           "TrainConfig", "load_config", "config_from_dict", "config_to_dict"]

DATASETS = ("bunny-mnist", "era5-uk-t2m", "era5-global-t", "grf-sphere", "synthetic", "navier-stokes",
            "navier-stokes-128")


@dataclass(frozen=True)
class DataConfig:
    """Which training data.

    Parameters
    ----------
    name : str
        ``bunny-mnist`` (``bunny_mnist(split="train")``), ``era5-uk-t2m`` (the first
        ``hours`` hourly fields of March 2019 only; the rest is the test period),
        ``era5-global-t`` (the global 3-degree ERA5 ensemble at ``level``; the last
        analysis time is held out as test), ``grf-sphere`` (``grf_sphere(nside, n, seed)``),
        ``synthetic`` (smooth random fields on an 8x8 grid; for tests),
        ``navier-stokes`` / ``navier-stokes-128`` (:func:`geoinv.fluids.load_fields` at
        64x64 / 128x128, normalized ``w / 10``; generated into the cache on first use).
    val_fraction : float
        Fraction of the training data held out for the validation loss (never the test split).
    val_split : {"random", "last"}
        Random held-out signals, or the last ones in time order (time series).
    n_train : int, optional
        Use at most this many training signals (after the validation split).
    nside, n, seed : int
        ``grf-sphere`` / ``synthetic`` options.
    level : int
        ``era5-global-t`` pressure level (hPa).
    hours : int
        ``era5-uk-t2m``: number of hourly fields in the training period (576 = 24 days).
    """

    name: str
    val_fraction: float = 0.1
    val_split: str = "random"
    n_train: int | None = None
    nside: int = 16
    n: int = 2000
    seed: int = 0
    level: int = 850
    hours: int = 576

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"unknown data set {self.name!r}; choose one of {', '.join(DATASETS)}")
        if self.val_split not in ("random", "last"):
            raise ValueError("val_split must be 'random' or 'last'")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must lie in (0, 1)")


@dataclass(frozen=True)
class MLPOptions:
    """See :class:`~geoinv.priors.backbones.MLPConfig`."""

    hidden: int = 256
    depth: int = 2
    emb_dim: int = 64
    dropout: float = 0.0


@dataclass(frozen=True)
class GraphOptions:
    """See :class:`~geoinv.priors.backbones.GraphNetConfig`."""

    widths: tuple = (32, 64, 96)
    blocks: int = 1
    emb_dim: int = 64
    n_pos: int = 0
    factor: int = 4


@dataclass(frozen=True)
class UNetOptions:
    """See :class:`~geoinv.priors.backbones.UNetConfig`."""

    widths: tuple = (32, 64, 96)
    blocks: int = 1
    emb_dim: int = 64
    periodic: tuple = (False, False)


@dataclass(frozen=True)
class ModelConfig:
    """The prior: EDM preconditioning around a backbone, optionally residual on a Gaussian.

    Parameters
    ----------
    backbone : {"mlp", "graph", "unet"}
    residual : bool
        Learn a zero-initialised correction on top of a :class:`~geoinv.priors.GaussianPrior`
        fitted to the training part of the data.
    gaussian_rank : int, optional
        Rank of the Gaussian base (probabilistic PCA; ``None`` = full).
    base_input : bool
        Residual mode only: the backbone also sees the Gaussian's estimate as input
        channels (:class:`~geoinv.priors.EDMDenoiser` ``base_input``).
    normalize : {"channel", "point"}
        Subtract the per-channel or the per-point training mean; divide by one scalar std.
    sigma_data : float
        Data std in normalized units (1 by construction of the normalization).
    """

    backbone: str = "mlp"
    residual: bool = True
    gaussian_rank: int | None = 128
    base_input: bool = False
    normalize: str = "channel"
    sigma_data: float = 1.0
    mlp: MLPOptions = field(default_factory=MLPOptions)
    graph: GraphOptions = field(default_factory=GraphOptions)
    unet: UNetOptions = field(default_factory=UNetOptions)

    def __post_init__(self):
        if self.backbone not in ("mlp", "graph", "unet"):
            raise ValueError(f"unknown backbone {self.backbone!r}; choose mlp, graph or unet")
        if self.normalize not in ("channel", "point"):
            raise ValueError("normalize must be 'channel' or 'point'")
        if self.base_input and not self.residual:
            raise ValueError("base_input needs residual: true (the Gaussian base is what it feeds in)")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation and bookkeeping.

    Parameters
    ----------
    steps : int
        Total optimizer steps.
    batch_size : int
    lr, weight_decay : float
        AdamW.
    warmup : int
        Linear learning-rate warm-up steps; then cosine decay to ``lr * lr_final`` (or constant).
    schedule : {"cosine", "constant"}
    lr_final : float
    ema_decay : float
        EMA of the weights, ``decay_t = min(ema_decay, (1 + t) / (10 + t))``; the EMA is shipped.
    grad_clip : float
        Max global gradient norm (0 = off).
    p_mean, p_std : float
        ``ln(sigma_n) ~ N(p_mean, p_std^2)`` in normalized units (EDM: -1.2, 1.2).
    seed : int
        Seeds model initialisation, data order and noise (explicit generators).
    val_every, ckpt_every, log_every : int
    val_size : int
        At most this many validation signals.
    max_minutes : float, optional
        Stop early after this wall time (the run is then not reproducible step for step).
    threads : int, optional
        ``torch.set_num_threads``.
    weights_dtype : {"float32", "float16"}
        Storage precision of the saved prior's network weights (:func:`geoinv.io.save_prior`);
        training itself always runs in float32.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    schedule: str = "cosine"
    lr_final: float = 0.05
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2
    seed: int = 0
    val_every: int = 500
    ckpt_every: int = 500
    log_every: int = 50
    val_size: int = 256
    max_minutes: float | None = None
    threads: int | None = None
    weights_dtype: str = "float32"

    def __post_init__(self):
        from geoinv.io import check_weights_dtype

        if self.schedule not in ("cosine", "constant"):
            raise ValueError("schedule must be 'cosine' or 'constant'")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        check_weights_dtype(self.weights_dtype)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run (one YAML file)."""

    name: str
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: OptimConfig = field(default_factory=OptimConfig)


_NESTED = {
    TrainConfig: {"data": DataConfig, "model": ModelConfig, "train": OptimConfig},
    ModelConfig: {"mlp": MLPOptions, "graph": GraphOptions, "unet": UNetOptions},
}


def _build(cls: type, d: Any, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"config section {where or '<top>'} must be a mapping, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown key(s) in config section {where or '<top>'}: {', '.join(unknown)}; "
                         f"valid keys: {', '.join(sorted(names))}")
    kw = {}
    for k, v in d.items():
        sub = _NESTED.get(cls, {}).get(k)
        if sub is not None:
            kw[k] = _build(sub, v or {}, f"{where}.{k}" if where else k)
        else:
            kw[k] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ValueError(f"config section {where or '<top>'}: {exc}") from exc


def config_from_dict(d: dict) -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain dict (unknown keys raise ``ValueError``)."""
    return _build(TrainConfig, d, "")


def config_to_dict(cfg: TrainConfig) -> dict:
    """JSON/YAML-able dict of a config (tuples become lists)."""
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v
    return conv(dataclasses.asdict(cfg))


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training configuration (``yaml.safe_load``)."""
    import yaml

    with open(path) as fh:
        d = yaml.safe_load(fh)
    return config_from_dict(d or {})
