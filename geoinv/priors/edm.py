r"""EDM-preconditioned denoisers, VE <-> VP conversions, the EDM Heun sampler and Tweedie.

Conventions
-----------
geoinv's priors all expose a denoiser ``D(x; sigma) = E[x0 | x0 + sigma * eps = x]`` in the
variance-exploding (VE / EDM) convention, with ``sigma`` in *data units*. A sampler written
in the variance-preserving (VP / DDPM) convention, ``x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps``,
uses the same denoiser through

.. math::

    x_{ve} = x_{vp} / \sqrt{\bar\alpha}, \qquad \sigma = \sqrt{(1 - \bar\alpha) / \bar\alpha},

(:func:`vp_to_ve`, :func:`sigma_from_alpha_bar`, :func:`vp_denoise`).

The learned prior :class:`EDMDenoiser` wraps any backbone ``F(x, c_noise)`` in the
preconditioning of Karras et al. (2022), in normalized units
(``x_n = (x - mean) / std``, ``sigma_n = sigma / std``):

.. math::

    D_n(x_n; \sigma_n) = c_{skip}(\sigma_n) x_n + c_{out}(\sigma_n) F(c_{in}(\sigma_n) x_n, c_{noise}(\sigma_n)),

with :math:`c_{skip} = \sigma_d^2 / (\sigma^2 + \sigma_d^2)`, :math:`c_{out} = \sigma \sigma_d / \sqrt{\sigma^2 + \sigma_d^2}`,
:math:`c_{in} = 1 / \sqrt{\sigma^2 + \sigma_d^2}`, :math:`c_{noise} = \ln(\sigma) / 4`.
In the *residual* mode a fitted :class:`~geoinv.priors.GaussianPrior` replaces the skip term:
``D(x; sigma) = D_gauss(x; sigma) + std * c_out * F(...)``; with ``F``'s last layer
zero-initialised, training starts exactly at the Gaussian's exact denoiser. With
``base_input`` the backbone also sees the Gaussian's estimate as extra input channels,
``F([c_in x_n, (D_gauss - mean) / std], c_noise)``: a local network (graph or grid U-Net)
then refines a global linear estimate instead of having to rebuild it from its receptive
field (on a painted mesh, for example, it gets the average of the front and the back).

References
----------
Karras, Aittala, Aila, Laine. *Elucidating the Design Space of Diffusion-Based Generative
Models*, NeurIPS 2022, arXiv:2206.00364.
Ho, Jain, Abbeel. *Denoising Diffusion Probabilistic Models*, NeurIPS 2020, arXiv:2006.11239.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from geoinv.errors import ShapeError
from geoinv.priors._base import Prior, as_sigma

__all__ = [
    "EDMDenoiser",
    "edm_coefficients",
    "sigma_from_alpha_bar",
    "alpha_bar_from_sigma",
    "vp_to_ve",
    "ve_to_vp",
    "vp_denoise",
    "ddpm_linear_schedule",
    "karras_sigmas",
    "edm_sample",
    "tweedie",
]

SIGMA_FLOOR = 1e-6  # noise level used for c_noise when sigma = 0 (D(x; 0) = x exactly anyway)


# --------------------------------------------------------------------------------------------
# preconditioning
# --------------------------------------------------------------------------------------------
def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma``.

    Parameters
    ----------
    sigma : Tensor, any shape
        Noise standard deviations (normalized units), ``>= 0``.
    sigma_data : float
        Standard deviation of the (normalized) data.

    Returns
    -------
    tuple of Tensor, each shaped like ``sigma``
        ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
        ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(max(s, 1e-6)) / 4``.
    """
    sd2 = sigma_data**2
    s2 = sigma**2
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / (s2 + sd2).sqrt()
    c_in = 1 / (s2 + sd2).sqrt()
    c_noise = sigma.clamp_min(SIGMA_FLOOR).log() / 4
    return c_skip, c_out, c_in, c_noise


def _center(prior: Prior) -> torch.Tensor | float:
    """A central value of the prior's data (its mean), used to start samplers."""
    if hasattr(prior, "data_mean"):
        return prior.data_mean.detach().double().cpu()
    if hasattr(prior, "mean") and isinstance(prior.mean, torch.Tensor):
        return prior.mean.detach().double().cpu()
    return 0.0


def _scale(prior: Prior) -> float:
    """Data standard deviation of a prior (1 if unknown); scales default sigma ranges."""
    if hasattr(prior, "data_std"):
        return float(prior.data_std)
    if hasattr(prior, "eigvals") and isinstance(prior.eigvals, torch.Tensor):
        return math.sqrt(float(prior.variance.mean()))
    return 1.0


class EDMDenoiser(nn.Module, Prior):
    r"""A learned prior: a backbone network in EDM preconditioning, optionally residual on a Gaussian.

    Parameters
    ----------
    backbone : nn.Module
        ``F(x, c_noise)`` with ``x`` of shape (B, N, C) and ``c_noise`` of shape (B,),
        returning (B, N, C). Built so that its last layer can be zero-initialised.
    sigma_data : float
        Data standard deviation in normalized units (1.0 when ``data_std`` is the data's std).
    base : GaussianPrior, optional
        Residual mode: ``D(x; s) = base.denoise(x; s) + std * c_out(s / std) * F(...)``.
        The base is fitted on the training split, in data units.
    base_input : bool
        Feed the normalized base estimate to the backbone as ``C`` extra input channels
        (the backbone must be built with ``cond_channels = C``). Needs ``base``.
    data_mean : float or Tensor, shape (C,) or (N, C)
    data_std : float
        One scalar for all channels (so that isotropic noise stays isotropic).
    fingerprint : str, optional
        Domain fingerprint of the training data.
    event_shape : tuple of int
        ``(N, C)``.
    name : str

    Notes
    -----
    The network runs in the dtype of its parameters (float32); inputs may be float64
    (samplers keep their state in float64); the output has the input's dtype.
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 1.0, *, base: Prior | None = None,
                 base_input: bool = False, data_mean: Any = 0.0, data_std: float = 1.0,
                 fingerprint: str | None = None, event_shape: tuple[int, int] = (0, 0), name: str = "edm"):
        nn.Module.__init__(self)
        self.backbone = backbone
        self.sigma_data = float(sigma_data)
        self.base = base
        self.base_input = bool(base_input)
        if self.base_input and base is None:
            raise ValueError("base_input=True needs a Gaussian base (residual mode)")
        cond = getattr(getattr(backbone, "config", None), "cond_channels", 0)
        n_ch = int(event_shape[1]) if len(event_shape) > 1 else 0
        if self.base_input and n_ch and cond != n_ch:
            raise ShapeError(f"base_input needs a backbone with cond_channels={n_ch} (the signal's channels), "
                             f"got {cond}")
        self.register_buffer("data_mean", torch.as_tensor(data_mean, dtype=torch.float64).clone())
        self.data_std = float(data_std)
        if self.data_std <= 0:
            raise ValueError(f"data_std must be positive, got {data_std}")
        self.fingerprint = fingerprint
        self.event_shape = tuple(int(e) for e in event_shape)
        self.name = name
        if base is not None and tuple(base.event_shape) != self.event_shape:
            raise ShapeError(f"base prior event shape {base.event_shape} differs from {self.event_shape}")

    @property
    def residual(self) -> bool:
        """True when the network learns a correction on top of a Gaussian denoiser."""
        return self.base is not None

    def preconditioning(self, sigma: torch.Tensor):
        """``(c_skip, c_out, c_in, c_noise)`` at data-unit noise levels ``sigma`` (normalized inside)."""
        return edm_coefficients(sigma / self.data_std, self.sigma_data)

    def denoise(self, x: torch.Tensor, sigma: Any, *, extra: torch.Tensor | None = None,
                backbone: nn.Module | None = None) -> torch.Tensor:
        """Denoised estimate ``D(x; sigma)``.

        Parameters
        ----------
        x : Tensor, shape (B, N, C)
            Noisy signals, data units.
        sigma : float or Tensor, shape (B,)
            Noise standard deviations, data units.
        extra : Tensor, shape (B, N, k), optional
            More input channels, appended after the usual ones; only for a ``backbone``
            built with ``k`` more input channels.
        backbone : nn.Module, optional
            Evaluate this network instead of the prior's own, with the prior's
            preconditioning and Gaussian base (a flow's distilled student,
            :meth:`~geoinv.priors.backbones.GraphUNet.with_extra_inputs`).

        Returns
        -------
        Tensor, shape (B, N, C), dtype of ``x``
        """
        self.check_x(x)
        net = self.backbone if backbone is None else backbone
        s = as_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = self.preconditioning(s)
        mean = self.data_mean.to(device=x.device, dtype=x.dtype)
        xn = (x - mean) / self.data_std
        wd = next((p.dtype for p in net.parameters()), torch.float32)
        inp = c_in * xn
        if self.base is not None:
            d_base = self.base.denoise(x, s.reshape(-1))
            if self.base_input:
                inp = torch.cat([inp, (d_base - mean) / self.data_std], -1)
        if extra is not None:
            inp = torch.cat([inp, extra.to(inp.dtype)], -1)
        f = net(inp.to(wd), c_noise.reshape(-1).to(wd)).to(x.dtype)
        if self.base is not None:
            return d_base + (self.data_std * c_out) * f
        return mean + self.data_std * (c_skip * xn + c_out * f)

    def forward(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:  # noqa: D102
        return self.denoise(x, sigma)

    def __repr__(self) -> str:
        return (f"EDMDenoiser(name={self.name!r}, backbone={type(self.backbone).__name__}, "
                f"residual={self.residual}, base_input={self.base_input}, event_shape={self.event_shape}, "
                f"data_std={self.data_std:.4g})")


# --------------------------------------------------------------------------------------------
# VE <-> VP
# --------------------------------------------------------------------------------------------
def sigma_from_alpha_bar(alpha_bar: Any) -> torch.Tensor:
    r"""VE noise level of a VP time step: :math:`\sigma = \sqrt{(1 - \bar\alpha) / \bar\alpha}`."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return ((1 - a) / a).sqrt()


def alpha_bar_from_sigma(sigma: Any) -> torch.Tensor:
    r"""VP :math:`\bar\alpha = 1 / (1 + \sigma^2)` of a VE noise level."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return 1 / (1 + s**2)


def _bcast(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    return a.reshape(-1, *([1] * (x.dim() - 1))) if a.dim() == 1 else a


def vp_to_ve(x_vp: torch.Tensor, alpha_bar: Any):
    r"""Convert a VP state to the VE state the denoiser takes.

    Parameters
    ----------
    x_vp : Tensor, shape (B, N, C)
        ``sqrt(abar) x0 + sqrt(1 - abar) eps``.
    alpha_bar : float or Tensor, shape (B,)

    Returns
    -------
    x_ve : Tensor, shape (B, N, C)
        ``x_vp / sqrt(abar) = x0 + sigma eps``.
    sigma : Tensor, shape () or (B,)
    """
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return x_vp / _bcast(a.sqrt(), x_vp), sigma_from_alpha_bar(a)


def ve_to_vp(x_ve: torch.Tensor, sigma: Any):
    """Inverse of :func:`vp_to_ve`: returns ``(x_vp, alpha_bar)``."""
    a = alpha_bar_from_sigma(sigma)
    return x_ve * _bcast(a.sqrt(), x_ve), a


def vp_denoise(prior: Prior, x_vp: torch.Tensor, alpha_bar: Any):
    """Clean estimate and predicted noise of a VP state, through the VE denoiser.

    Returns
    -------
    x0_hat : Tensor, shape (B, N, C)
    eps_hat : Tensor, shape (B, N, C)
        ``(x_vp - sqrt(abar) x0_hat) / sqrt(1 - abar)``.
    """
    x_ve, sigma = vp_to_ve(x_vp, alpha_bar)
    sig = sigma.expand(x_vp.shape[0]) if sigma.dim() == 0 else sigma
    x0 = prior.denoise(x_ve, sig.to(x_vp.dtype))
    a = _bcast(torch.as_tensor(alpha_bar, dtype=torch.float64), x_vp)
    eps = (x_vp - a.sqrt() * x0) / (1 - a).sqrt()
    return x0, eps


def ddpm_linear_schedule(n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """The DDPM linear-beta schedule (Ho et al. 2020).

    Returns
    -------
    betas : Tensor, shape (n_steps,), float64
    alpha_bars : Tensor, shape (n_steps,), float64
        ``prod_{s <= t} (1 - beta_s)``; ``sigma_from_alpha_bar(alpha_bars)`` gives the VE levels.
    """
    betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
    return betas, torch.cumprod(1 - betas, 0)


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  append_zero: bool = True) -> torch.Tensor:
    r"""EDM time steps :math:`(\sigma_{max}^{1/\rho} + i/(n-1) (\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`.

    Returns
    -------
    Tensor, shape (n + 1,) (trailing 0) or (n,), float64, decreasing
    """
    if n < 1:
        raise ValueError("need at least one step")
    i = torch.arange(n, dtype=torch.float64)
    t = i / max(n - 1, 1)
    s = (sigma_max ** (1 / rho) + t * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)]) if append_zero else s


@torch.no_grad()
def edm_sample(prior: Prior, n: int, *, steps: int = 32, sigma_min: float | None = None,
               sigma_max: float | None = None, rho: float = 7.0, generator: torch.Generator | None = None,
               progress: bool = False, batch_size: int | None = None, churn: float = 0.0,
               churn_range: tuple[float, float] = (0.0, float("inf")), s_noise: float = 1.0) -> torch.Tensor:
    """Unconditional samples with the EDM Heun sampler (Karras et al. 2022, Alg. 1; Alg. 2 when ``churn > 0``).

    Works for any :class:`Prior` (learned or Gaussian). The state is float64.

    Parameters
    ----------
    prior : Prior
    n : int
        Number of samples.
    steps : int
        Number of noise levels (``2 * steps - 1`` denoiser calls).
    sigma_min, sigma_max : float, optional
        Data units; default ``0.002`` and ``80`` times the prior's data std.
    generator : torch.Generator, optional
        Draws the initial noise.
    batch_size : int, optional
        Denoise in chunks of this size (the result does not depend on it).
    churn : float
        EDM's ``S_churn``: at every level in ``churn_range`` (data units) the state is first
        re-noised from ``sigma`` to ``sigma (1 + gamma)``, ``gamma = min(churn / steps, sqrt(2) - 1)``,
        with fresh noise times ``s_noise`` (stochastic sampler; 0 = deterministic ODE).

    Returns
    -------
    Tensor, shape (n, N, C), float64
    """
    from tqdm.auto import tqdm

    scale = _scale(prior)
    smin = 0.002 * scale if sigma_min is None else sigma_min
    smax = 80.0 * scale if sigma_max is None else sigma_max
    sig = karras_sigmas(steps, smin, smax, rho)
    center = _center(prior)
    params = list(prior.parameters()) if isinstance(prior, nn.Module) else []
    dev = params[0].device if params else torch.device("cpu")
    z = torch.randn(n, *prior.event_shape, generator=generator, dtype=torch.float64)
    x = (center + smax * z).to(dev)
    bs = batch_size or n

    def den(xx, s):
        return torch.cat([prior.denoise(xx[i:i + bs], float(s)).double() for i in range(0, xx.shape[0], bs)])

    for i in tqdm(range(steps), disable=not progress, leave=False, desc="edm_sample"):
        s0, s1 = float(sig[i]), float(sig[i + 1])
        if churn > 0 and churn_range[0] <= s0 <= churn_range[1]:
            gamma = min(churn / steps, math.sqrt(2) - 1)
            s_hat = s0 * (1 + gamma)
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
            x = x + math.sqrt(s_hat**2 - s0**2) * s_noise * noise
            s0 = s_hat
        d = (x - den(x, s0)) / s0
        x1 = x + (s1 - s0) * d
        if s1 > 0:
            d1 = (x1 - den(x1, s1)) / s1
            x1 = x + (s1 - s0) * 0.5 * (d + d1)
        x = x1
    return x.cpu()


def tweedie(prior: Prior, y: Any, sigma: Any):
    """One-step Tweedie denoiser ``E[x | y = x + sigma eps]``.

    Parameters
    ----------
    prior : Prior
    y : Tensor, shape (B, N, C), or a signal container
        Noisy signals; a container gives a container of the same type back.
    sigma : float or Tensor, shape (B,)
        Noise standard deviation (data units).
    """
    if hasattr(y, "point_values"):
        prior.check_domain(y)
        x = y.point_values()
        out = prior.denoise(x, sigma)
        if not y.is_batched:
            out = out[0]
        return y.with_point_values(out.to(x.dtype))
    return prior.denoise(torch.as_tensor(y), sigma)
