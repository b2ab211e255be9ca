"""``geoinv.solve(..., method="flow")``: amortized posterior sampling with the shipped flow of a prior."""

from __future__ import annotations

import logging
from typing import Any

import torch

from geoinv.errors import GeoinvError

__all__ = ["solve_with_flow", "flow_for_prior"]

log = logging.getLogger(__name__)

_CACHE: dict = {}


def flow_for_prior(prior: Any):
    """The shipped flow trained for ``prior`` (matched by domain fingerprint, then by name)."""
    from geoinv.flows._io import list_shipped_flows, load_shipped_flow

    fp = getattr(prior, "fingerprint", None)
    shipped = list_shipped_flows()
    names = [n for n, f in shipped.items() if f == fp]
    if not names:
        raise GeoinvError(
            f"no shipped flow for the domain of prior {getattr(prior, 'name', prior)!r} ({fp}); shipped flows: "
            f"{shipped or 'none'}; train one with `geoinv train-flow configs/<name>.yaml` and pass flow=<ConditionalFlow>")
    name = getattr(prior, "name", None) if getattr(prior, "name", None) in names else names[0]
    key = (name, id(prior))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_shipped_flow(name, prior=prior)
    return _CACHE[key]


def solve_with_flow(x: torch.Tensor, m: torch.Tensor, prior: Any, noise_std: float | None, n_samples: int,
                    gen: torch.Generator, device: Any, options: dict):
    """Posterior mean, std and samples from a conditional flow (one network pass per sample).

    Parameters
    ----------
    x : Tensor, shape (B, N, C)
        Measurements (zeros at unobserved points).
    m : bool Tensor, shape (N,) or (B, N)
    prior : Prior
        The (loaded) diffusion prior; its shipped flow is used unless ``options["flow"]``
        gives a :class:`~geoinv.flows.ConditionalFlow` (or a checkpoint path).
    noise_std : float or None
        Must equal the noise level the flow was trained for.
    n_samples : int
        ``K``: the posterior mean and std are K-sample Monte-Carlo estimates.
    options : dict
        ``flow`` (optional), ``batch_size`` (measurements per pass, default 32); consumed.

    Returns
    -------
    mean, std : Tensor, shape (B, N, C)
    samples : Tensor, shape (B, K, N, C)
    counts : dict
        ``nfe`` = 0 (no denoiser call), ``n_forward`` = 0, ``forward_rounds`` = 0,
        ``flow_evals`` = B * K.
    """
    from geoinv.flows._io import load_flow, serves_noise
    from geoinv.flows._model import ConditionalFlow

    flow = options.pop("flow", None)
    bs = int(options.pop("batch_size", 32))
    if flow is None:
        if prior is None:
            raise GeoinvError("method='flow' needs prior= (a shipped prior name or object) or flow=<ConditionalFlow>")
        flow = flow_for_prior(prior)
    elif not isinstance(flow, ConditionalFlow):
        flow = load_flow(flow, prior=prior)
    s = float(noise_std or 0.0)
    if not serves_noise(flow.noise_std, noise_std):
        raise GeoinvError(f"flow {flow.name!r} was trained for measurement noise std {flow.noise_std:g}, got "
                          f"{noise_std}; an amortized flow serves one noise level: re-train it with "
                          f"flow.noise_std: {s:g} in its config")
    if device is not None:
        flow = flow.to(device)
    b = x.shape[0]
    masks = m.expand(b, -1) if m.dim() == 1 else m
    means, stds, samples = [], [], []
    dt = flow.W.dtype
    for i in range(0, b, bs):
        yi = x[i:i + bs].to(device=flow.W.device, dtype=dt)
        mi = masks[i:i + bs].to(flow.W.device)
        mean, std, smp = flow.posterior(yi, mi, n_samples, generator=gen, return_samples=True)
        means.append(mean.double().cpu())
        stds.append(std.double().cpu())
        samples.append(smp.double().cpu())
    counts = {"nfe": 0, "n_forward": 0, "forward_rounds": 0, "flow_evals": b * n_samples}
    return torch.cat(means), torch.cat(stds), torch.cat(samples), counts
