"""Manifold constrained gradient (MCG, Chung et al. 2022) for masked observations."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from tqdm.auto import tqdm

from geoinv.errors import NotDifferentiableError, ShapeError
from geoinv.samplers._base import STATE_DTYPE, Sampler, _grad, _operator_parts, ancestral_step, karras_sigmas

__all__ = ["MCG"]


def _masks_of(operator: Any) -> list:
    """The Mask parts of an inpainting operator (Mask, optionally with GaussianNoise), or TypeError."""
    from geoinv.operators import Identity, Mask

    parts = _operator_parts(operator)
    masks = [p for p in parts if isinstance(p, Mask)]
    if not masks or not all(isinstance(p, (Mask, Identity)) for p in parts):
        raise TypeError(
            f"MCG's projection needs an inpainting operator (Mask, optionally GaussianNoise(s) @ Mask), got "
            f"{operator!r}; use DPS or EnKG for other forward models"
        )
    for m in masks:
        if m.mask.dim() == 2 and m.mask.shape[0] != 1:
            raise ValueError(f"MCG samples for one measurement: the mask must have shape (N,) or (1, N), "
                             f"got {tuple(m.mask.shape)}")
    return masks


def _mask_weight(operator: Any, y: torch.Tensor) -> torch.Tensor:
    """Observation weight of shape (1, N, 1): 1 where observed (product over Mask parts)."""
    w = torch.ones((), dtype=STATE_DTYPE, device=y.device)
    for m in _masks_of(operator):
        w = w * m.observed_weight(y).to(STATE_DTYPE)
    return w


@dataclasses.dataclass(frozen=True)
class MCG(Sampler):
    r"""Manifold constrained gradient with projection onto the noisy measurement set (inpainting).

    Follows the MCG authors' repository (``HJ-harry/MCG_diffusion``, ``p_sample_loop``
    with ``sample_method="MCG"``), written in the VE / EDM parameterisation on the
    Karras schedule (``sigma_max -> sigma_min``, then 0). With the mask ``m`` (1 =
    observed), at step ``i``:

    1. :math:`\hat x_0 = D(x_i; \sigma_i)`; ancestral step
       :math:`x' \sim q(x_{\sigma_{i+1}} \mid x_i, \hat x_0)`;
    2. :math:`g = \nabla_{x_i} \lVert m \odot (y - \hat x_0) \rVert_2 \odot (1 - m)`
       (norm, not squared; per sample; restricted to the unobserved points);
    3. :math:`x_{i+1} = x' \odot (1 - m) - \alpha g + (y + \sigma_i \epsilon) \odot m`:
       the observed entries are replaced by the measurement noised to the current
       level :math:`\sigma_i` (the repository's ``q_sample(y, t)``; the last step uses
       :math:`\sigma_{min}`, so the observed values of the samples are ``y`` up to
       :math:`\sigma_{min}` noise).

    Only for :class:`~geoinv.operators.Mask` operators (optionally composed with
    :class:`~geoinv.operators.GaussianNoise`); other operators raise ``TypeError``.
    The measurement noise is not modelled (the projection interpolates the noisy data,
    so the samples have no spread at observed points).

    Parameters
    ----------
    num_steps : int
        Number of noise levels (the repository: 1000 DDPM steps).
    step_size : float
        :math:`\alpha`, the weight of the manifold constrained gradient (repository: 1).
        The gradient of a norm has unit size whatever the residual, so the per-point
        effect scales like :math:`\alpha/\sqrt{\text{number of observed values}}`: the
        repository's value suits images (about 10^5 values); on a 32-point Gaussian test
        problem 1000 steps with :math:`\alpha = 1` over-correct (max error 2-3 posterior
        stds) while :math:`\alpha = 0.1` is accurate (about 0.7, the noise-fitting floor).
    sigma_min, sigma_max, rho : float
        Karras schedule (data units).
    batch_size : int, optional
        Process the samples in chunks of this size.
    noise_aware : bool
        Default False (the repository). True (**not in the paper**): the projection uses
        :math:`y + \sqrt{\sigma_i^2 - \sigma_y^2}\,\epsilon` while :math:`\sigma_i > \sigma_y`
        (``y`` already carries noise :math:`\sigma_y`, so this has the marginal noise level
        :math:`\sigma_i`), and no projection below :math:`\sigma_y` (the observed values are
        then denoised by the ancestral steps instead of being pinned to the noisy data).
        With noise-free data it equals the repository. The repository's projection leaves
        the samples equal to the noisy ``y`` at observed points, which caps the PSNR (about
        21 dB on Bunny-MNIST with noise 0.1 at 30 % missing, whatever the prior); the
        noise-aware projection reaches 28.6 dB there (validation digits, 16 samples). On the
        Gaussian ring test (alpha 0.1) it is close to exact: max error 0.17 posterior stds
        (repository: 1.83), spread-skill 0.99.

    Notes
    -----
    The repository takes the norm over the whole batch (which couples the samples);
    here each sample uses its own norm (the repository's behaviour at batch size 1).
    ``callback`` state keys: ``x``, ``sigma``, ``x0``.

    References
    ----------
    Chung, Sim, Ryu, Ye. *Improving Diffusion Models for Inverse Problems using
    Manifold Constraints*, NeurIPS 2022, arXiv:2206.00941.
    """

    num_steps: int = 1000
    step_size: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    batch_size: int | None = None
    noise_aware: bool = False

    name = "mcg"
    warm_start = True

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not self.step_size >= 0:
            raise ValueError(f"step_size must be >= 0, got {self.step_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        karras_sigmas(self.num_steps, self.sigma_min, self.sigma_max, self.rho)

    def _check_operator(self, operator: Any) -> None:
        _masks_of(operator)
        if not getattr(operator, "differentiable", True):
            raise NotDifferentiableError(f"MCG differentiates through the denoiser and {operator!r}")

    def _sample(self, y, operator, prior, event, n_samples, generator, progress, callback, work, x_start):
        dev = y.device
        if tuple(y.shape[1:]) != event:
            raise ShapeError(
                f"MCG needs y of shape (1, {event[0]}, {event[1]}) (a masked signal), got {tuple(y.shape)}"
            )
        m = _mask_weight(operator, y)
        keep = 1 - m
        sig = karras_sigmas(self.num_steps, self.sigma_min, self.sigma_max, self.rho)
        noise_var = float(getattr(operator, "noise_std", 0.0) or 0.0) ** 2 if self.noise_aware else 0.0
        x = self._initial(n_samples, event, generator, dev, x_start)
        bs = self.batch_size or n_samples
        for i in tqdm(range(self.num_steps), disable=not progress, leave=False, desc="MCG"):
            s, s_next = sig[i], sig[i + 1]
            # noise added to y in the projection: sigma_i (repository), or sqrt(sigma_i^2 - sigma_y^2)
            # (noise_aware: y already carries sigma_y; below sigma_y no projection)
            project = s * s > noise_var
            s_proj = (s * s - noise_var) ** 0.5 if project else 0.0
            z = self._noise(x.shape, generator, dev)
            z_obs = self._noise(x.shape, generator, dev)
            outs, x0s = [], []
            for xc, zc, zoc in zip(x.split(bs), z.split(bs), z_obs.split(bs)):
                xc = xc.detach().requires_grad_(True)
                with torch.enable_grad():
                    x0 = self._denoise(prior, xc, s, work)
                    r = (y - self._forward(operator, x0, y, work)).flatten(1)
                    nrm = torch.linalg.vector_norm(r, dim=1)
                    g = _grad(nrm.sum(), xc, "MCG")
                with torch.no_grad():
                    x0 = x0.detach()
                    xp = ancestral_step(xc.detach(), x0, s, s_next, zc)
                    if project:
                        outs.append(xp * keep - self.step_size * (g * keep) + (y + s_proj * zoc) * m)
                    else:
                        outs.append(xp - self.step_size * (g * keep))
                x0s.append(x0)
            x = torch.cat(outs) if len(outs) > 1 else outs[0]
            if callback is not None:
                callback(i, {"x": x, "sigma": s_next, "x0": torch.cat(x0s)})
        return x.to(STATE_DTYPE), {}
