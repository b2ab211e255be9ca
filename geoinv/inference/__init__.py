"""``geoinv.solve``: one call from a signal with gaps to a posterior of the same type."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from geoinv.errors import DomainMismatchError, GeoinvError, ShapeError
from geoinv.signals import GridSignal, MeshSignal, SphereSignal

__all__ = ["solve", "Posterior", "METHODS", "resolve_prior"]

log = logging.getLogger(__name__)

#: Methods ``solve`` accepts. Classical ones need no learned prior.
METHODS = ("harmonic", "gaussian", "dps", "mcg", "tweedie", "enkg", "flow", "auto")


@dataclass(frozen=True, eq=False)
class Posterior:
    """What :func:`solve` returns.

    Attributes
    ----------
    mean : MeshSignal, SphereSignal or GridSignal
        Posterior mean (or point estimate), same container type and batching as the input.
    std : same type as ``mean``, or None
        Posterior standard deviation per point; None for methods without one.
    samples : Tensor or None
        Shape (S, N, C) for an unbatched input, (B, S, N, C) for a batched one.
    mask : Tensor of bool or None
        The observation mask used, shape (N,) or (B, N); None when the measurement is not a mask (the
        Navier-Stokes observation of :func:`geoinv.fluids.assimilate`).
    stats : dict
        ``method``, ``prior``, ``seconds`` (wall time), ``nfe`` (denoiser evaluations),
        ``n_forward`` (forward-model evaluations), ``forward_rounds``, ``n_samples``,
        ``noise_std``.
    """

    mean: Any
    std: Any
    samples: torch.Tensor | None
    mask: torch.Tensor | None
    stats: dict = field(default_factory=dict)


def resolve_prior(prior: Any, signal: Any) -> Any:
    """A prior object from a shipped prior's name, ``"auto"`` (domain fingerprint match) or an object."""
    if prior is None:
        return None
    if isinstance(prior, str):
        from geoinv import io

        if prior == "auto":
            matches = [name for name, fp in io.list_shipped_priors().items() if fp == signal.fingerprint]
            if not matches:
                raise DomainMismatchError(
                    f"no shipped prior matches this {signal.kind} domain ({signal.fingerprint}); "
                    f"shipped: {io.list_shipped_priors()}; pass prior=<GaussianPrior or checkpoint> or train one"
                )
            prior = matches[0]
        prior = io.load_shipped_prior(prior)
    if hasattr(prior, "check_domain"):
        prior.check_domain(signal)
    return prior


def _auto_method(prior: Any) -> str:
    from geoinv.priors import GaussianPrior

    if prior is None:
        return "harmonic"
    if isinstance(prior, GaussianPrior):
        return "gaussian"
    return "dps"


def solve(signal: Any, mask: Any = None, *, method: str = "harmonic", prior: Any = None,
          noise_std: float | None = None, n_samples: int = 1, seed: int | None = None,
          device: Any = None, progress: bool = True, **options: Any) -> Posterior:
    """Recover a signal from its observed points.

    Parameters
    ----------
    signal : MeshSignal, SphereSignal or GridSignal
        Unbatched or batched. Values at unobserved points are ignored (may be NaN).
    mask : bool array-like, shape (N,) or (B, N), optional
        True = observed (grids also accept (H, W)). Default: the finite values.
    method : str
        ``"harmonic"`` (Laplacian-regularized interpolation), ``"gaussian"`` (exact
        posterior of a :class:`~geoinv.priors.GaussianPrior`: Wiener filter / kriging),
        ``"dps"``, ``"mcg"``, ``"tweedie"``, ``"enkg"``, ``"flow"``, or ``"auto"``
        (the best available for the prior: gaussian for a GaussianPrior, DPS for a
        learned prior, harmonic without a prior).
    prior : str, Prior or None
        A shipped prior's name, ``"auto"`` (the shipped prior whose domain fingerprint
        matches ``signal``), a loaded prior or a ``GaussianPrior``.
    noise_std : float, optional
        Standard deviation of the measurement noise in the units of the values;
        None or 0 means noise-free observations.
    n_samples : int
        Posterior samples (particles for EnKG) per signal.
    seed : int, optional
        Seeds a ``torch.Generator``; the same seed gives the same result.
    device : str or torch.device, optional
        Where samplers run (e.g. ``"cuda"``); default CPU.
    progress : bool
        Show tqdm progress bars.
    **options
        Method hyper-parameters (e.g. ``num_steps``, ``guidance_scale``, ``lam``).

    Returns
    -------
    Posterior
    """
    if not isinstance(signal, (MeshSignal, SphereSignal, GridSignal)):
        raise ShapeError(f"signal must be a MeshSignal, SphereSignal or GridSignal, got {type(signal).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if noise_std is not None and (not math.isfinite(noise_std) or noise_std < 0):
        raise ValueError(f"noise_std must be a finite number >= 0 or None, got {noise_std}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    m = signal.observed() if mask is None else signal.check_mask(mask)
    if mask is None:
        m = signal.check_mask(m)
    signal.observed_values_finite(m)
    prior_obj = resolve_prior(prior, signal)
    if method == "auto":
        method = _auto_method(prior_obj)
    gen = torch.Generator().manual_seed(seed) if seed is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
    t0 = time.perf_counter()
    stats = {"method": method, "prior": getattr(prior_obj, "name", None), "noise_std": noise_std, "n_samples": n_samples,
             "nfe": 0, "n_forward": 0, "forward_rounds": 0}
    x = torch.nan_to_num(signal.point_values().double(), nan=0.0, posinf=0.0, neginf=0.0)
    std = samples = None
    if method == "harmonic":
        from geoinv.baselines import harmonic

        mean = harmonic(signal, m, noise_std, lam=options.pop("lam", None))
    elif method == "gaussian":
        from geoinv.priors import GaussianPrior

        gp = getattr(prior_obj, "base", None) if not isinstance(prior_obj, GaussianPrior) else prior_obj
        if not isinstance(gp, GaussianPrior):
            raise GeoinvError("method='gaussian' needs prior=GaussianPrior (e.g. GaussianPrior.fit(train_signals))")
        mean, std, samples = gp.posterior(x, m, noise_std, n_samples=n_samples if n_samples > 1 else 0, generator=gen)
    else:
        mean, std, samples, counts = _run_sampler(method, x, m, prior_obj, noise_std, n_samples, gen, device, progress, options)
        stats.update(counts)
    if options:
        raise TypeError(f"unused options for method {method!r}: {', '.join(options)}")
    stats["seconds"] = time.perf_counter() - t0
    wrap = (lambda t: signal.with_point_values(t.to(signal.values.dtype).cpu() if signal.is_batched else t[0].to(signal.values.dtype).cpu()))
    if samples is not None and not signal.is_batched:
        samples = samples[0]
    return Posterior(mean=wrap(mean), std=None if std is None else wrap(std), samples=samples, mask=m, stats=stats)


def _run_sampler(method, x, m, prior, noise_std, n_samples, gen, device, progress, options):
    """Run a diffusion sampler per batch item; returns mean, std, samples (B,S,N,C), counts."""
    from geoinv import samplers
    from geoinv.operators import GaussianNoise, Identity, Mask

    if prior is None:
        raise GeoinvError(f"method={method!r} needs a diffusion prior: pass prior='auto', a shipped name or a prior object")
    if method == "flow":
        from geoinv import flows

        return flows.solve_with_flow(x, m, prior, noise_std, n_samples, gen, device, options)
    cls = {"dps": samplers.DPS, "mcg": samplers.MCG, "tweedie": samplers.Tweedie, "enkg": samplers.EnKG}[method]
    sampler = cls(**{k: options.pop(k) for k in list(options) if k in cls.__dataclass_fields__})
    if device is not None and hasattr(prior, "to"):
        prior = prior.to(device)
    means, stds, samples = [], [], []
    counts = {"nfe": 0, "n_forward": 0, "forward_rounds": 0}
    for i in range(x.shape[0]):
        mi = m if m.dim() == 1 else m[i]
        if method == "tweedie":
            if not bool(mi.all()):
                raise GeoinvError("method='tweedie' is for denoising: every point must be observed")
            op = GaussianNoise(noise_std or 0.0) @ Identity()
        else:
            op = GaussianNoise(noise_std or 0.0) @ Mask(mi.to(device) if device else mi)
        y = op.forward(x[i : i + 1].to(device) if device else x[i : i + 1])
        r = sampler(y, op, prior, n_samples=n_samples, generator=gen, progress=progress)
        means.append(r.mean.double().cpu())
        stds.append(None if r.std is None else r.std.double().cpu())
        samples.append(r.samples.double().cpu())
        for k in counts:
            counts[k] += int(getattr(r, k))
    std = None if any(s is None for s in stds) else torch.stack(stds)
    return torch.stack(means), std, torch.stack(samples), counts
