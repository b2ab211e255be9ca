"""One call from a Navier-Stokes observation to a posterior over the initial vorticity."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from geoinv.errors import DomainMismatchError, ShapeError

log = logging.getLogger(__name__)

__all__ = ["assimilate", "ASSIMILATION_METHODS", "GND_SYMMETRIES", "MULTI_FIDELITY"]

ASSIMILATION_METHODS = ("gauss-newton-diffusion", "gauss-newton")

#: the symmetries of the Kolmogorov flow the denoiser is averaged over (``geoinv.operators.kolmogorov_symmetries``
#: keywords): the identity, the shift-reflection, the rotation by pi and their product. The x-shifts add nothing
#: measurable (the U-Net is nearly shift-equivariant) at 4x the cost; docs/fluids.md
GND_SYMMETRIES = {"x_shifts": (0,), "half_periods": (0, 1)}
#: defaults of the multi-fidelity path's options (``assimilate(..., refine=, broyden=)``): rounds through the fine
#: black box, each a fresh Jacobian and that many secant-updated steps (docs/fluids.md: 128 x 128)
MULTI_FIDELITY = {"refine": 2, "broyden": 8}


def assimilate(y: Any, operator, *, prior: Any = "navier-stokes", gauss=None, method: str = "gauss-newton-diffusion",
               n_samples: int = 32, symmetries: bool = True, generator: torch.Generator | None = None,
               progress: bool = True, **options: Any):
    r"""Recover the initial vorticity of a 2-D flow from a black-box observation, with forward evaluations only.

    The derivative-free pipeline that reaches relative L2 0.135 on the benchmark's five noise-free test fields
    and 0.147 on ten (docs/fluids.md): :func:`~geoinv.fluids.multiscale_gauss_newton` under a stationary
    Gaussian prior finds the basin, then :func:`~geoinv.fluids.gauss_newton_diffusion` draws posterior samples
    with the diffusion prior in the forward model linearized there (the denoiser averaged over the flow's
    symmetries).

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
        A shipped prior's name (default ``"navier-stokes"``) or a prior object, for a periodic ``m x m`` grid: the
        operator's (``m = n``) or, for a :class:`~geoinv.operators.NavierStokesObservation`, a coarser one that
        divides it (the multi-fidelity path below); :class:`~geoinv.errors.DomainMismatchError` otherwise.
        With ``method="gauss-newton"`` only its grid is used.
    gauss : StationaryGaussian, optional
        The stationary Gaussian of the Gauss-Newton search, on the ``m x m`` grid; default: fitted to the ``m x m``
        training fields (:func:`~geoinv.fluids.load_fields`, generated on first use: minutes).
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
        :func:`~geoinv.fluids.gauss_newton_diffusion`; ``passes`` (default 1): run the sampler that many times, each
        pass after the first linearized at the previous pass's mean (noise-free data: 2 passes lower the error by
        1-5 %, docs/fluids.md; with noise they do not help); ``refine`` (default 2) and ``broyden`` (default 8) to
        the multi-fidelity path.

    Returns
    -------
    geoinv.inference.Posterior
        ``mean`` and ``std`` as periodic :class:`~geoinv.GridSignal` of shape (1, n, n) in normalized units
        ``w0 / SCALE`` (:func:`~geoinv.fluids.grid_signal`; ``std`` None for ``"gauss-newton"``), ``samples``
        (S, n * n, 1), ``mask`` None (the measurement is not a mask), and ``stats``: ``method``, ``prior``,
        ``n_samples``, ``noise_std``, ``seconds``, ``n_forward`` (black-box evaluations), ``forward_rounds``
        (sequential batched calls, of both solvers), ``nfe`` (denoiser evaluations), ``gauss_newton_seconds``,
        ``grid`` (``m``) and ``n_forward_surrogate`` (evaluations of the ``m x m`` surrogate; 0 when ``m = n``).

    Notes
    -----
    **Multi-fidelity path** (a prior for a coarser grid than the operator's, e.g. the shipped 64 x 64 prior and the
    128 x 128 problem of InverseBench): the unknown stays on the ``m x m`` grid and is interpolated spectrally
    before every call of the black box (:class:`~geoinv.operators.SpectralLift`). The Gauss-Newton runs first on a
    cheap surrogate, the same observation with an ``m x m`` solver (``operator.at_resolution(m)``), fitted to every
    ``n / m``-th observed value; then ``refine`` rounds through the ``n x n`` black box correct the surrogate's model
    error, each a fresh full-band Jacobian of the fine black box (``p + 1`` solves in one batched call) followed by
    ``broyden`` Levenberg-Marquardt steps that keep it current by secant updates (one solve per trial;
    :func:`~geoinv.fluids.broyden_gauss_newton`; ``broyden=1`` is a plain Gauss-Newton step); the
    diffusion sampler linearizes the ``n x n`` black box at the result. Samples, mean and std are returned on the
    ``n x n`` grid (interpolated, with no modes at ``|k| >= m / 2``). At 128 x 128 (three fine Jacobians of 1,850
    solves each) this takes 6-11 min per field on 2 CPU cores; relative L2 of the mean 0.117 on five test fields
    (``geoinv bench navier-stokes-128``, docs/benchmarks.md).

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
    from geoinv.fluids._gauss_newton import (StationaryGaussian, _measurement, broyden_gauss_newton,
                                             gauss_newton_diffusion, linearize, multiscale_gauss_newton)
    from geoinv.inference import Posterior, resolve_prior
    from geoinv.operators import SpectralLift

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
    y = _measurement(y, operator, n)[0]          # (1, M) float64; ShapeError / NonFiniteError on a bad y
    both = {"sigma": options.pop("sigma")} if "sigma" in options else {}
    gn_opts = {**both, **{k: options.pop(k) for k in ("iters", "stages") if k in options}}
    gnd_opts = {**both, **{k: options.pop(k) for k in ("sigma_max", "num_steps", "lam", "band") if k in options}}
    refine, broyden = (int(options.pop(k, MULTI_FIDELITY[k])) for k in ("refine", "broyden"))
    passes = options.pop("passes", 1)
    if options:
        raise TypeError(f"unknown options: {', '.join(options)}")
    if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
        raise ValueError(f"passes must be an int >= 1 (sampler runs, each re-linearized at the previous mean); "
                         f"got {passes!r}")
    sampling = method == "gauss-newton-diffusion"
    prior_obj = prior
    if isinstance(prior, str) and (sampling or gauss is None):  # the Gauss-Newton alone only needs the prior's grid
        from geoinv.io import load_shipped_prior

        prior_obj = (resolve_prior(prior, grid_signal(torch.zeros(1, n, n))) if prior == "auto"
                     else load_shipped_prior(prior))
    if sampling and prior_obj is None:
        raise ValueError("method='gauss-newton-diffusion' needs a diffusion prior (e.g. prior='navier-stokes')")
    m = _grid_of(prior_obj, gauss, n)   # a prior left as a name only when gauss is given, which sets the grid
    if m != n and (m > n or n % m or not hasattr(operator, "at_resolution")):
        fp = getattr(prior_obj, "fingerprint", None) or f"a {m} x {m} grid"
        raise DomainMismatchError(
            f"the prior is trained on domain {fp}, but the operator's grid is {n} x {n}: pass a prior for the "
            f"operator's grid, or one for a coarser grid that divides it with a NavierStokesObservation (the "
            f"multi-fidelity path)")
    if sampling:
        prior_obj.check_domain(grid_signal(torch.zeros(1, m, m)))
        if hasattr(prior_obj, "eval"):
            prior_obj.eval()
    if gauss is None:
        gauss = StationaryGaussian.fit(load_fields("train", m).double() / SCALE)
    t0 = time.perf_counter()
    stats = {"method": method, "prior": getattr(prior_obj, "name", None) if sampling else None, "n_samples": 1,
             "grid": m, "noise_std": float(getattr(operator, "noise_std", 0.0) or 0.0), "n_forward_surrogate": 0,
             "nfe": 0}
    target = operator
    if m == n:
        gn = multiscale_gauss_newton(y, operator, gauss, progress=progress, **gn_opts)
        x_est = gn.x
        stats.update(n_forward=gn.n_forward, forward_rounds=gn.forward_rounds)
    else:  # the coarse surrogate, then refining steps through the fine black box
        r = n // m
        coarse = multiscale_gauss_newton(y.reshape(1, *shape)[:, ::r, ::r].reshape(1, -1), operator.at_resolution(m),
                                         gauss, progress=progress, **gn_opts)
        target, x_est = SpectralLift(operator, m), coarse.x
        stats.update(n_forward_surrogate=coarse.n_forward, n_forward=0, forward_rounds=coarse.forward_rounds)
        for _ in range(refine):  # a fresh fine Jacobian, then secant-updated steps
            lin = broyden_gauss_newton(y, target, linearize(target, gauss, x_est), iters=broyden, progress=progress,
                                       **both)
            x_est = lin.x_start.reshape(1, m * m, 1)
            stats.update(n_forward=stats["n_forward"] + lin.n_forward,
                         forward_rounds=stats["forward_rounds"] + lin.forward_rounds)
    stats["gauss_newton_seconds"] = time.perf_counter() - t0
    log.info("assimilate: Gauss-Newton in %.0f s (%d + %d surrogate forward evaluations)",
             stats["gauss_newton_seconds"], stats["n_forward"], stats["n_forward_surrogate"])
    if not sampling:
        samples = x_est
    else:
        if symmetries:
            from geoinv.operators import kolmogorov_symmetries
            from geoinv.priors import SymmetrizedPrior

            prior_obj = SymmetrizedPrior(prior_obj, *kolmogorov_symmetries(m, **GND_SYMMETRIES))
        stats["n_samples"] = n_samples
        x_lin = x_est
        for _ in range(passes):  # each pass after the first linearized at the previous pass's mean
            res = gauss_newton_diffusion(y, target, gauss, prior_obj, x_lin, n_samples=n_samples,
                                         generator=generator, progress=progress, **gnd_opts)
            stats.update(n_forward=stats["n_forward"] + res.n_forward, nfe=stats["nfe"] + res.nfe,
                         forward_rounds=stats["forward_rounds"] + res.forward_rounds)
            x_lin = res.mean[None]
        samples = res.samples
    if m != n:
        samples = target.lift(samples.double())
    mean = samples.mean(0)
    std = samples.std(0) if sampling and samples.shape[0] > 1 else None
    stats["seconds"] = time.perf_counter() - t0

    def field(v):
        return grid_signal(SCALE * v.detach().reshape(1, n, n).cpu())

    return Posterior(mean=field(mean), std=None if std is None else field(std), samples=samples, mask=None,
                     stats=stats)


def _grid_of(prior, gauss, n: int) -> int:
    """The grid size of the unknown: the Gaussian's if given, else the prior's (a square grid), else the operator's."""
    if gauss is not None:
        return gauss.n
    if prior is not None and len(getattr(prior, "event_shape", ())) == 2:
        k = int(prior.event_shape[0])
        m = math.isqrt(k)
        return m if m * m == k else n  # not a square grid: check_domain says what is wrong
    return n
