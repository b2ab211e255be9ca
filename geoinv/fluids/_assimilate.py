"""One call from a Navier-Stokes observation to a posterior over the initial vorticity."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from geoinv.errors import NonFiniteError, ShapeError

log = logging.getLogger(__name__)

__all__ = ["assimilate", "ASSIMILATION_METHODS", "GND_SYMMETRIES"]

ASSIMILATION_METHODS = ("gauss-newton-diffusion", "gauss-newton")

#: the symmetries of the Kolmogorov flow the denoiser is averaged over (``geoinv.operators.kolmogorov_symmetries``
#: keywords): the identity, the shift-reflection, the rotation by pi and their product. The x-shifts add nothing
#: measurable (the U-Net is nearly shift-equivariant) at 4x the cost; docs/fluids.md
GND_SYMMETRIES = {"x_shifts": (0,), "half_periods": (0, 1)}


def assimilate(y: Any, operator, *, prior: Any = "navier-stokes", gauss=None, method: str = "gauss-newton-diffusion",
               n_samples: int = 32, symmetries: bool = True, generator: torch.Generator | None = None,
               progress: bool = True, **options: Any):
    r"""Recover the initial vorticity of a 2-D flow from a black-box observation, with forward evaluations only.

    The derivative-free pipeline that reaches relative L2 0.139 on the benchmark's noise-free test fields
    (docs/fluids.md): :func:`~geoinv.fluids.multiscale_gauss_newton` under a stationary Gaussian prior finds the
    basin, then :func:`~geoinv.fluids.gauss_newton_diffusion` draws posterior samples with the diffusion prior in
    the forward model linearized there (the denoiser averaged over the flow's symmetries).

    Parameters
    ----------
    y : Tensor or array, shape ``operator.obs_shape``, (1, M) or (1, M, 1)
        The measurement, in the operator's output units (physical vorticity for
        :class:`~geoinv.operators.NavierStokesObservation`); finite; not modified.
    operator : Operator
        The black box ``(B, n * n, 1) -> (B, M, 1)`` with ``n``, ``obs_shape`` and ``noise_std`` (the misfit
        scale, floored at 0.05), e.g. ``NavierStokesObservation(64, noise_std=1.0)``. Only called, never
        differentiated.
    prior : str or Prior
        A shipped prior's name (default ``"navier-stokes"``) or a prior object; it must be for the operator's
        ``n x n`` periodic grid (:class:`~geoinv.errors.DomainMismatchError` otherwise). Unused by
        ``method="gauss-newton"``.
    gauss : StationaryGaussian, optional
        The stationary Gaussian of the Gauss-Newton search; default: fitted to the ``n x n`` training fields
        (:func:`~geoinv.fluids.load_fields`, generated on first use: minutes).
    method : str
        ``"gauss-newton-diffusion"`` (posterior samples; default) or ``"gauss-newton"`` (the MAP estimate only).
    n_samples : int
        Chains of the diffusion sampler.
    symmetries : bool
        Average the denoiser over :data:`GND_SYMMETRIES` (4 evaluations per call; needs ``n`` divisible by 8).
    generator : torch.Generator, optional
        Seeds the chains.
    progress : bool
        tqdm progress bars.
    **options
        Passed on: ``sigma`` (the misfit scale in the units of ``y``) to both steps; ``iters``, ``stages`` to
        :func:`~geoinv.fluids.multiscale_gauss_newton`; ``sigma_max``, ``num_steps``, ``lam``, ``band`` to
        :func:`~geoinv.fluids.gauss_newton_diffusion`.

    Returns
    -------
    geoinv.inference.Posterior
        ``mean`` and ``std`` as periodic :class:`~geoinv.GridSignal` of shape (1, n, n) in normalized units
        ``w0 / SCALE`` (:func:`~geoinv.fluids.grid_signal`; ``std`` None for ``"gauss-newton"``), ``samples``
        (S, n * n, 1), ``mask`` None (the measurement is not a mask), and ``stats``: ``method``, ``prior``,
        ``n_samples``, ``noise_std``, ``seconds``, ``n_forward`` (black-box evaluations), ``forward_rounds``
        (sequential batched calls), ``nfe`` (denoiser evaluations), ``gauss_newton_seconds``.

    Examples
    --------
    >>> import torch
    >>> from geoinv.fluids import assimilate
    >>> from geoinv.operators import NavierStokesObservation
    >>> op = NavierStokesObservation(64, noise_std=1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> post = assimilate(op.measure(x_true, g), op, generator=g)   # doctest: +SKIP
    >>> w0, w0_std = post.mean, post.std                             # doctest: +SKIP
    """
    from geoinv.fluids._data import SCALE, grid_signal, load_fields
    from geoinv.fluids._gauss_newton import StationaryGaussian, gauss_newton_diffusion, multiscale_gauss_newton
    from geoinv.inference import Posterior, resolve_prior

    if method not in ASSIMILATION_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ASSIMILATION_METHODS)}")
    n = getattr(operator, "n", None)
    shape = tuple(getattr(operator, "obs_shape", ()))
    if not isinstance(n, int) or len(shape) != 2:
        raise ShapeError(f"operator must have an int grid size n and a 2-D obs_shape (e.g. NavierStokesObservation); "
                         f"got n={n!r}, obs_shape={shape or None}")
    y = torch.as_tensor(y)
    if y.shape == shape:
        y = y[None]
    if not torch.isfinite(y).all():
        raise NonFiniteError("y contains NaN or inf; the observation must be complete (drop or fill those values first)")
    both = {"sigma": options.pop("sigma")} if "sigma" in options else {}
    gn_opts = {**both, **{k: options.pop(k) for k in ("iters", "stages") if k in options}}
    gnd_opts = {**both, **{k: options.pop(k) for k in ("sigma_max", "num_steps", "lam", "band") if k in options}}
    if options:
        raise TypeError(f"unknown options: {', '.join(options)}")
    domain = grid_signal(torch.zeros(1, n, n))
    prior_obj = None
    if method == "gauss-newton-diffusion":
        prior_obj = resolve_prior(prior, domain)
        if prior_obj is None:
            raise ValueError("method='gauss-newton-diffusion' needs a diffusion prior (e.g. prior='navier-stokes')")
        prior_obj.check_domain(domain)
        if hasattr(prior_obj, "eval"):
            prior_obj.eval()
    if gauss is None:
        gauss = StationaryGaussian.fit(load_fields("train", n).double() / SCALE)
    t0 = time.perf_counter()
    gn = multiscale_gauss_newton(y, operator, gauss, progress=progress, **gn_opts)
    stats = {"method": method, "prior": getattr(prior_obj, "name", None), "n_samples": 1,
             "noise_std": float(getattr(operator, "noise_std", 0.0) or 0.0), "n_forward": gn.n_forward,
             "forward_rounds": gn.forward_rounds, "nfe": 0, "gauss_newton_seconds": gn.seconds}
    log.info("assimilate: Gauss-Newton in %.0f s (%d forward evaluations)", gn.seconds, gn.n_forward)
    if method == "gauss-newton":
        mean, std, samples = gn.x, None, gn.x
    else:
        if symmetries:
            from geoinv.operators import kolmogorov_symmetries
            from geoinv.priors import SymmetrizedPrior

            prior_obj = SymmetrizedPrior(prior_obj, *kolmogorov_symmetries(n, **GND_SYMMETRIES))
        res = gauss_newton_diffusion(y, operator, gauss, prior_obj, gn.x, n_samples=n_samples, generator=generator,
                                     progress=progress, **gnd_opts)
        mean, std, samples = res.mean[None], res.std[None], res.samples
        stats.update(n_samples=n_samples, n_forward=gn.n_forward + res.n_forward,
                     forward_rounds=gn.forward_rounds + res.forward_rounds, nfe=res.nfe)
    stats["seconds"] = time.perf_counter() - t0

    def field(v):
        return grid_signal(SCALE * v.detach().reshape(1, n, n).cpu())

    return Posterior(mean=field(mean), std=None if std is None else field(std), samples=samples, mask=None,
                     stats=stats)
