"""What every backbone shares: the noise embedding, FiLM, the config/rebuild protocol."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Backbone", "NoiseEmbedding", "FiLM"]


class NoiseEmbedding(nn.Module):
    """Embedding of ``c_noise = ln(sigma) / 4``: fixed sinusoids followed by a 2-layer MLP.

    The sinusoid frequencies are a fixed geometric ladder (no random draw, nothing to store),
    spanning periods from about 0.2 to 25 units of ``c_noise``, i.e. of ``ln(sigma) / 4``.

    Parameters
    ----------
    dim : int
        Output size.
    n_freq : int
        Number of sinusoid frequencies (features ``2 * n_freq``).
    """

    def __init__(self, dim: int, n_freq: int = 16):
        super().__init__()
        self.n_freq = n_freq
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """``c_noise`` (B,) -> (B, dim)."""
        freqs = torch.exp(torch.linspace(math.log(0.25), math.log(32.0), self.n_freq,
                                         device=c_noise.device, dtype=c_noise.dtype))
        arg = c_noise[:, None] * freqs[None]
        return self.mlp(torch.cat([arg.cos(), arg.sin()], -1))


class FiLM(nn.Module):
    """Feature-wise affine modulation ``h * (1 + scale(e)) + shift(e)`` (zero-initialised)."""

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.lin = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, e: torch.Tensor):
        """``e`` (B, E) -> ``(scale, shift)``, each (B, channels)."""
        return self.lin(torch.nn.functional.silu(e)).chunk(2, -1)


class Backbone(nn.Module):
    """Base class of geoinv backbones ``F(x, c_noise)``.

    Subclasses define a frozen dataclass ``Config`` (JSON-able hyper-parameters), store
    it as ``self.config`` and implement ``forward(x (B, N, C), c_noise (B,)) -> (B, N, C)``.
    Everything else a checkpoint needs (graph hierarchies, positional features) must be
    a registered buffer, so that checkpoints are safetensors-only.

    The last layer is zero-initialised when ``config.zero_init`` is true, so that an
    :class:`~geoinv.priors.EDMDenoiser` starts at its skip term (or its Gaussian base).
    """

    kind: ClassVar[str] = "backbone"
    Config: ClassVar[type]

    def get_config(self) -> dict:
        """Hyper-parameters as a JSON-able dict (enough, with the buffers, to rebuild)."""
        return dataclasses.asdict(self.config)

    @classmethod
    def from_config(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Backbone":
        """Rebuild an (untrained) backbone from :meth:`get_config` and the stored tensors.

        ``tensors`` holds the backbone's state-dict entries; subclasses whose structure
        lives in buffers (the graph network) read them here.
        """
        return cls(cls.Config(**_tuples(config)))


def _tuples(d: dict) -> dict:
    """JSON gives lists back; the config dataclasses use tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def zero_(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def parse_config(cls: type, d: dict | Any):
    """Build the dataclass ``cls`` from a dict, rejecting unknown keys."""
    if isinstance(d, cls):
        return d
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}; valid: {', '.join(sorted(names))}")
    return cls(**_tuples(d))
