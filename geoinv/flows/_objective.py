r"""The unsupervised training objective: reverse KL to the posterior under a frozen diffusion prior.

For a measurement ``y = m * (x + s * eps)`` the flow ``q_phi(x | y, m)`` minimises, up to
constants, :math:`\mathrm{KL}(q_\phi(\cdot|y,m) \,\|\, p(\cdot|y,m))`:

.. math::

    L(\phi) = E_{y} E_{z}\Big[\frac{\|m \odot (y - G_\phi(z,y))\|^2}{2 s^2}
              + \log q_\phi(G_\phi(z,y) | y)
              + \lambda\, B(G_\phi(z,y))\Big],

with :math:`\log q_\phi(x) = \log N(z) - \log|\det \partial G_\phi / \partial z|` and
:math:`B(x) \ge -\log p(x) + \text{const}` the denoising-score-matching (ELBO) bound of
the frozen prior. No ground-truth signal appears in the loss: the training signals are
only used to *simulate measurements*.

The prior bound (derivation)
----------------------------
For the variance-exploding diffusion ``x_sigma = x + sigma * eps`` with an exact
denoiser ``D(x; sigma) = E[x | x_sigma]``, the continuous-time ELBO (Song et al. 2021,
Thm. 1 with likelihood weighting ``lambda(t) = g(t)^2``; Kingma et al. 2021, eq. 17 with
``SNR = 1 / sigma^2``) reads

.. math::

    -\log p(x) \le \int_{\sigma_{min}}^{\sigma_{max}} \sigma^{-3}\,
        E_\epsilon \|D(x + \sigma\epsilon; \sigma) - x\|^2 \, d\sigma
      + \frac{\|x - \mu\|^2}{2\sigma_{max}^2} + \text{const}.

Indeed ``g^2 dt = d(sigma^2) = 2 sigma d sigma`` and the score-matching residual is
``(D - x) / sigma^2``, so ``1/2 g^2 ||(D - x)/sigma^2||^2 dt = sigma^{-3} ||D - x||^2 d sigma``
(the ``g^2 / sigma^4`` weight of the issue). The last term is the prior-matching term
``KL(N(x, sigma_max^2) || N(mu, sigma_max^2))``, i.e. the integral's tail above
``sigma_max``. Sampling ``ln sigma`` uniformly on ``[ln sigma_min, ln sigma_max]``
(``d sigma = sigma d ln sigma``) gives the unbiased one-sample estimator

.. math::

    \hat B(x) = \ln(\sigma_{max}/\sigma_{min})\, \sigma^{-2} \|D(x + \sigma\epsilon;\sigma) - x\|^2
        + \|x - \mu\|^2 / (2 \sigma_{max}^2).

Check on ``x ~ N(0, 1)`` in 1-D: ``D = x_sigma / (1 + sigma^2)`` and the x-dependent part of
the integral is ``x^2 int_0^inf sigma / (1 + sigma^2)^2 d sigma = x^2 / 2 = -log p(x) + const``.
:func:`dsm_bound` is tested to give this gradient for a :class:`~geoinv.priors.GaussianPrior`.
Gradients flow through the frozen denoiser into ``x`` only (its parameters have
``requires_grad=False`` during flow training).

References
----------
Song, Durkan, Murray, Ermon. *Maximum Likelihood Training of Score-Based Diffusion Models*,
NeurIPS 2021, arXiv:2101.09258.
Kingma, Salimans, Poole, Ho. *Variational Diffusion Models*, NeurIPS 2021, arXiv:2107.00630.
Feng, Bouman et al. *Score-Based Diffusion Models as Principled Priors for Inverse Imaging*,
ICCV 2023, arXiv:2304.11751.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["dsm_bound", "gaussian_dsm_term", "flow_loss", "simulate_measurements"]


def dsm_bound(prior: Any, x: torch.Tensor, *, sigma_min: float, sigma_max: float, mean: torch.Tensor | float = 0.0,
              n_sigma: int = 1, antithetic: bool = True, gaussian: tuple | None = None, control: Any = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Monte-Carlo estimate of the DSM bound on ``-log p(x)`` (up to an x-independent constant).

    Variance reduction: the ``B * n_sigma`` values of ``ln sigma`` are stratified over the
    integration range (one per equal-width stratum, randomly assigned), and each noise
    draw is used with both signs (``+eps`` and ``-eps``, antithetic): for a linear (Gaussian)
    denoiser the term of ``||D - x||^2`` linear in ``eps`` then cancels exactly.

    Tails: with ``gaussian = (mean, eigvecs, eigvals)`` (the prior's Gaussian part), the
    integral outside ``[sigma_min, sigma_max]`` is completed analytically with that
    Gaussian's denoiser: per eigen-direction ``a = v^T (x - mu)`` of variance ``lam``,
    ``int_0^{s_min} = a^2 s_min^2 / (2 lam (lam + s_min^2))`` and
    ``int_{s_max}^inf = a^2 / (2 (lam + s_max^2))`` (their sum with the middle part is
    ``a^2 / (2 lam)``, exact for a Gaussian). This keeps the bound tight for directions of
    tiny variance without evaluating a learned denoiser at noise levels it was never
    trained on. Without it the upper tail is ``||x - mean||^2 / (2 s_max^2)`` and the lower
    one is dropped.

    Parameters
    ----------
    prior : Prior
        Frozen denoiser ``prior.denoise(x, sigma)``.
    x : Tensor, shape (B, N, C)
    sigma_min, sigma_max : float
        Monte-Carlo integration range in data units.
    mean : Tensor (N, C) or float
        Prior mean for the upper tail term (without ``gaussian``).
    n_sigma : int
        Noise levels per signal (averaged).
    antithetic : bool
        Use ``+eps`` and ``-eps`` (twice the denoiser calls).
    gaussian : (Tensor (D,), Tensor (D, r), Tensor (r,)), optional
    control : GaussianPrior, optional
        Control variate (the Gaussian base of a residual prior). The bound is written as
        the Gaussian's exact one plus the Monte-Carlo estimate of the difference,

        .. math::

            \hat B(x) = M_G(x) + \ln\frac{\sigma_{max}}{\sigma_{min}} \sigma^{-2}
                \big(\|D(x_\sigma;\sigma) - x\|^2 - \|D_G(x_\sigma;\sigma) - x\|^2\big) + \text{tails},

        with the same ``(sigma, eps)`` in both terms and :math:`M_G` the closed-form mean of
        the Gaussian's Monte-Carlo term (:func:`gaussian_dsm_term`). Same expectation as the
        plain estimator, but the part of its noise that the Gaussian explains cancels: for a
        residual prior ``D = D_G + c`` the random term is ``2 <D_G - x, c> + ||c||^2``,
        small where the correction is; for ``prior = control`` the estimate is exact (zero
        variance). The tails are added as without it.

    Returns
    -------
    Tensor, shape (B,)
    """
    b = x.shape[0]
    span = math.log(sigma_max / sigma_min)
    k = b * n_sigma
    u = (torch.randperm(k, generator=generator).to(x.device, x.dtype)
         + torch.rand(k, generator=generator, dtype=x.dtype, device=x.device)) / k
    sig = (math.log(sigma_min) + span * u).exp()
    xr = x.repeat(n_sigma, 1, 1) if n_sigma > 1 else x
    eps = torch.randn(xr.shape, generator=generator, dtype=x.dtype, device=x.device)
    if antithetic:
        xr, sig, eps = torch.cat([xr, xr]), torch.cat([sig, sig]), torch.cat([eps, -eps])
    xs = xr + sig[:, None, None] * eps
    d = prior.denoise(xs, sig)
    sq = ((d - xr) ** 2).flatten(1).sum(1)
    if control is not None:
        sq = sq - ((control.denoise(xs, sig) - xr) ** 2).flatten(1).sum(1)
    term = (span * sq / sig**2).reshape(-1, b).mean(0)
    if control is not None:
        term = term + gaussian_dsm_term(control, x, sigma_min, sigma_max).to(term.dtype)
    if gaussian is None:
        return term + ((x - mean) ** 2).flatten(1).sum(1) / (2 * sigma_max**2)
    mu, v, lam = gaussian
    a2 = (((x.reshape(b, -1) - mu) @ v) ** 2)
    tails = a2 * (sigma_min**2 / (lam * (lam + sigma_min**2)) + 1 / (lam + sigma_max**2)) / 2
    return term + tails.sum(1)


def gaussian_dsm_term(prior: Any, x: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    r"""Closed-form mean of the Monte-Carlo term of :func:`dsm_bound` for a :class:`~geoinv.priors.GaussianPrior`.

    With ``D_G`` the Gaussian's exact denoiser, ``E ||D_G(x + sigma eps) - x||^2 = sum_i a_i^2
    sigma^4 / (lam_i + sigma^2)^2 + const`` per principal direction (coordinate
    ``a_i = v_i^T (x - mu)``, variance ``lam_i``; the isotropic complement likewise with the
    floor), and the ``sigma^-3`` integral over ``[sigma_min, sigma_max]`` is

    .. math::

        \tfrac12 \sum_i a_i^2 \Big(\frac{1}{\lambda_i + \sigma_{min}^2} - \frac{1}{\lambda_i + \sigma_{max}^2}\Big)
        + \tfrac12 \|P_\perp (x - \mu)\|^2 \Big(\frac{1}{c + \sigma_{min}^2} - \frac{1}{c + \sigma_{max}^2}\Big).

    Adding the analytic tails of :func:`dsm_bound` gives ``a_i^2 / 2 lam_i``, the Gaussian's
    ``-log p``. The complement energy is computed by an explicit projection, so it is never
    negative even for a float32-rounded basis.

    Parameters
    ----------
    prior : GaussianPrior
    x : Tensor, shape (B, N, C)

    Returns
    -------
    Tensor, shape (B,), float64
    """
    u = (x.double() - prior.mean.to(x.device)).reshape(x.shape[0], -1)
    v = prior.eigvecs.to(x.device)
    lam = prior.eigvals.to(x.device)
    z = u @ v
    mid = lambda l: 1 / (l + sigma_min**2) - 1 / (l + sigma_max**2)  # noqa: E731
    out = 0.5 * (z**2 * mid(lam)).sum(1)
    if v.shape[1] < u.shape[1]:
        perp = u - z @ v.T
        out = out + 0.5 * (perp**2).sum(1) * mid(prior.floor)
    return out


def simulate_measurements(x: torch.Tensor, *, missing: tuple[float, float], noise_std: float,
                          generator: torch.Generator | None = None):
    """Random masks (missing fraction uniform in ``missing``) and noisy masked measurements.

    Parameters
    ----------
    x : Tensor, shape (B, N, C)
        Signals (from the *training* split).

    Returns
    -------
    y : Tensor, shape (B, N, C)
        ``x + noise_std * eps`` at observed points, 0 elsewhere.
    mask : bool Tensor, shape (B, N)
    """
    b, n, _ = x.shape
    frac = missing[0] + (missing[1] - missing[0]) * torch.rand(b, 1, generator=generator)
    k = (frac * n).round()
    ranks = torch.rand(b, n, generator=generator).argsort(1).argsort(1)
    mask = ranks >= k  # exactly round(frac * n) points missing per row
    y = x + noise_std * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return torch.where(mask.unsqueeze(-1), y, torch.zeros((), dtype=x.dtype)), mask


def flow_loss(flow: Any, prior: Any, y: torch.Tensor, mask: torch.Tensor, *, n_z: int = 1, lam: float = 1.0,
              sigma_min: float, sigma_max: float, n_sigma: int = 1, control: Any = None,
              generator: torch.Generator | None = None) -> dict:
    r"""Per-measurement loss terms of the reverse-KL objective (see the module docstring).

    Parameters
    ----------
    flow : ConditionalFlow
    prior : Prior
        Frozen diffusion prior (or GaussianPrior) giving the DSM bound.
    y : Tensor, shape (B, N, C)
    mask : bool Tensor, shape (B, N)
    n_z : int
        Flow samples per measurement.
    lam : float
        Weight of the prior term (1 = the Bayesian posterior).
    control : GaussianPrior, optional
        Control variate of the DSM bound (:func:`dsm_bound`); default: Gaussian tails only.

    Returns
    -------
    dict of Tensor, each shape (B,)
        ``loss`` (the objective), ``fidelity``, ``log_q``, ``prior``.
    """
    s = flow.noise_std
    dt = flow.W.dtype
    cond = flow.condition(y, mask)
    b = y.shape[0]
    z = torch.randn(b, n_z, flow.rank, generator=generator, dtype=dt, device=y.device)
    xi = None
    if flow.floor > 0 and flow.dim > flow.rank:
        xi = torch.randn(b, n_z, flow.dim, generator=generator, dtype=dt, device=y.device)
    x, logdet = flow(z, y, mask, xi=xi, cond=cond)  # (B, S, N, C), (B, S)
    m = mask.unsqueeze(1).unsqueeze(-1).to(dt)
    fid = ((m * (y.to(dt).unsqueeze(1) - x)) ** 2).flatten(2).sum(-1) / (2 * s * s)
    log_q = -0.5 * (z**2).sum(-1) - logdet
    xs = x.reshape(b * n_z, *x.shape[2:])
    pb = dsm_bound(prior, xs, sigma_min=sigma_min, sigma_max=sigma_max, n_sigma=n_sigma, generator=generator,
                   gaussian=(flow.mu, flow.V, flow.sqrt_lam**2), control=control).reshape(b, n_z)
    loss = fid + log_q + lam * pb
    return {"loss": loss.mean(1), "fidelity": fid.mean(1), "log_q": log_q.mean(1), "prior": pb.mean(1)}
