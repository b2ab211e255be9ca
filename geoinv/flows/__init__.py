"""Amortized posterior sampling: conditional normalizing flows distilled from a diffusion prior.

A :class:`ConditionalFlow` ``q(x | y, mask)`` is trained *without ground truth* to
minimise the reverse KL divergence to the posterior of a frozen prior (the fidelity term,
the flow's log-density and the denoising-score-matching bound of the prior,
:mod:`geoinv.flows._objective`), on measurements simulated from the training split with
random masks. Afterwards one network pass gives one posterior sample, for any mask.

>>> import geoinv                                                        # doctest: +SKIP
>>> post = geoinv.solve(observed, mask, method="flow", prior="bunny-mnist",
...                     noise_std=0.1, n_samples=128)                   # doctest: +SKIP

References
----------
Mammadov, Chung, Ye. *Amortized Posterior Sampling with Diffusion Prior Distillation*,
arXiv:2407.17907 (2024). Sun, Bouman. *Deep Probabilistic Imaging*, AAAI 2021, arXiv:2010.14462.
"""

from geoinv.flows._io import (has_shipped_flow, list_shipped_flows, load_flow, load_shipped_flow, save_flow,
                              serves_noise, shipped_flow_noise_std)
from geoinv.flows._model import ConditionalFlow, Conditioning, FlowConfig, latent_basis
from geoinv.flows._objective import dsm_bound, flow_loss, gaussian_dsm_term, simulate_measurements
from geoinv.flows._solve import flow_for_prior, solve_with_flow

__all__ = [
    "ConditionalFlow", "FlowConfig", "Conditioning", "latent_basis", "dsm_bound", "gaussian_dsm_term", "flow_loss", "simulate_measurements",
    "save_flow", "load_flow", "load_shipped_flow", "has_shipped_flow", "shipped_flow_noise_std", "serves_noise",
    "list_shipped_flows", "solve_with_flow",
    "flow_for_prior", "fit_flow", "distill_student", "train_flow", "evaluate_flow", "FlowOptimConfig", "FlowTrainConfig", "load_flow_config",
]


def __getattr__(name):
    if name in ("fit_flow", "distill_student", "train_flow", "FlowOptimConfig", "FlowTrainConfig", "load_flow_config", "evaluate_flow"):
        from geoinv.flows import _train

        return getattr(_train, name)
    raise AttributeError(f"module 'geoinv.flows' has no attribute {name!r}")
