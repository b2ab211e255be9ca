"""A small 2-D U-Net for regular grids, with an optional periodic (circular) padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as fn

from geoinv.priors.backbones._common import Backbone, FiLM, NoiseEmbedding, zero_

__all__ = ["UNet2d", "UNetConfig"]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet2d`.

    Parameters
    ----------
    height, width : int
        Grid shape; points are row-major ``i * width + j`` (the :class:`~geoinv.GridSignal`
        and lat/lon :class:`~geoinv.SphereSignal` layouts).
    channels : int
    cond_channels : int
        Extra input channels (not in the output); see :class:`~geoinv.priors.backbones.GraphNetConfig`.
    widths : tuple of int
        Channels per resolution, finest first (``len - 1`` downsamplings by 2).
    blocks : int
        Residual blocks per resolution.
    emb_dim : int
    periodic : tuple of bool
        ``(periodic_y, periodic_x)``: circular padding along that axis (a torus for fluids;
        ``(False, True)`` for a global lat/lon grid), zero padding otherwise.
    zero_init : bool
    """

    height: int
    width: int
    channels: int = 1
    widths: tuple = (32, 64, 96)
    blocks: int = 1
    emb_dim: int = 64
    periodic: tuple = (False, False)
    zero_init: bool = True
    cond_channels: int = 0


class _Conv(nn.Module):
    def __init__(self, cin, cout, periodic):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=0)
        self.periodic = periodic

    def forward(self, h):
        py, px = self.periodic
        h = fn.pad(h, (1, 1, 0, 0), mode="circular" if px else "constant")
        h = fn.pad(h, (0, 0, 1, 1), mode="circular" if py else "constant")
        return self.conv(h)


class _Block(nn.Module):
    def __init__(self, cin, cout, emb, periodic):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, cin), cin)
        self.conv1 = _Conv(cin, cout, periodic)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.film = FiLM(emb, cout)
        self.conv2 = _Conv(cout, cout, periodic)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, h, e):
        z = self.conv1(fn.silu(self.norm1(h)))
        scale, shift = self.film(e)
        z = self.norm2(z) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.skip(h) + self.conv2(fn.silu(z))


class UNet2d(Backbone):
    """U-Net ``F(x, c_noise)`` on an ``H x W`` grid, taking and returning the canonical (B, N, C).

    Inside it reshapes to (B, C, H, W), pads the grid (circularly along periodic axes) to a
    multiple of ``2 ** (levels - 1)``, and crops back at the end. Average-pool down,
    nearest-neighbour up, skip concatenation, FiLM on the noise embedding.

    Parameters
    ----------
    config : UNetConfig
    """

    kind = "unet"
    Config = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        per = tuple(bool(p) for p in config.periodic)
        ws, emb = config.widths, config.emb_dim
        self.emb = NoiseEmbedding(emb)
        self.inp = _Conv(config.channels + config.cond_channels, ws[0], per)
        self.down = nn.ModuleList()
        for l, w in enumerate(ws):
            cin = ws[l - 1] if l else ws[0]
            self.down.append(nn.ModuleList(_Block(cin if i == 0 else w, w, emb, per) for i in range(config.blocks)))
        self.mid = _Block(ws[-1], ws[-1], emb, per)
        self.up = nn.ModuleList()
        for l, w in enumerate(ws):
            cin = (ws[l + 1] if l < len(ws) - 1 else ws[-1]) + w
            self.up.append(nn.ModuleList(_Block(cin if i == 0 else w, w, emb, per) for i in range(config.blocks)))
        self.norm_out = nn.GroupNorm(min(8, ws[0]), ws[0])
        self.out = _Conv(ws[0], config.channels, per)
        if config.zero_init:
            zero_(self.out)

    @classmethod
    def from_signal(cls, signal, *, widths: tuple = (32, 64, 96), blocks: int = 1, emb_dim: int = 64,
                    periodic: tuple | None = None, zero_init: bool = True, cond_channels: int = 0) -> "UNet2d":
        """Build for a :class:`~geoinv.GridSignal` (periodic as the grid) or a lat/lon :class:`~geoinv.SphereSignal`.

        ``periodic`` defaults to ``(p, p)`` for a grid with ``periodic=p`` and to ``(False, True)``
        for a global lat/lon grid (``(False, False)`` for a regional one).
        """
        import numpy as np

        if getattr(signal, "kind", None) == "grid":
            (h, w), per = signal.shape, (signal.periodic, signal.periodic)
        elif getattr(signal, "grid_shape", None) is not None:
            (h, w) = signal.grid_shape
            lon = np.asarray(signal.grid_lon)
            step = np.median(np.abs(np.diff(lon))) if len(lon) > 1 else 0.0
            per = (False, bool(abs(step * len(lon) - 360.0) < 1e-6 * 360))
        else:
            raise ValueError("UNet2d needs a GridSignal or a SphereSignal on a regular lat/lon grid")
        cfg = UNetConfig(height=h, width=w, channels=signal.n_channels, widths=tuple(widths), blocks=blocks,
                         emb_dim=emb_dim, periodic=tuple(periodic) if periodic is not None else per,
                         zero_init=zero_init, cond_channels=cond_channels)
        return cls(cfg)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """``x`` (B, H*W, C + cond_channels), ``c_noise`` (B,) -> (B, H*W, C)."""
        cfg = self.config
        b, n, c = x.shape
        h = x.transpose(1, 2).reshape(b, c, cfg.height, cfg.width)
        m = 2 ** (len(cfg.widths) - 1)
        ph, pw = (-cfg.height) % m, (-cfg.width) % m
        if ph or pw:
            h = fn.pad(h, (0, pw, 0, 0), mode="circular" if cfg.periodic[1] else "replicate")
            h = fn.pad(h, (0, 0, 0, ph), mode="circular" if cfg.periodic[0] else "replicate")
        e = self.emb(c_noise)
        h = self.inp(h)
        skips = []
        for l, blocks in enumerate(self.down):
            if l:
                h = fn.avg_pool2d(h, 2)
            for blk in blocks:
                h = blk(h, e)
            skips.append(h)
        h = self.mid(h, e)
        for l in reversed(range(len(self.up))):
            if l < len(self.up) - 1:
                h = fn.interpolate(h, scale_factor=2, mode="nearest")
            h = torch.cat([h, skips[l]], 1)
            for blk in self.up[l]:
                h = blk(h, e)
        h = self.out(fn.silu(self.norm_out(h)))[:, :, :cfg.height, :cfg.width]
        return h.reshape(b, cfg.channels, n).transpose(1, 2)
