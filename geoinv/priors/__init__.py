"""Priors over signals on one domain, all exposed through a denoiser ``D(x; sigma)``.

:class:`GaussianPrior` is exact (closed-form denoiser and posterior); learned diffusion
priors (:class:`EDMDenoiser`, see :mod:`geoinv.priors.edm` and
:mod:`geoinv.priors.backbones`) implement the same :class:`Prior` interface.
Shipped learned priors load with :func:`geoinv.io.load_shipped_prior`.
"""

from geoinv.priors._base import Prior, as_sigma
from geoinv.priors._gaussian import GaussianPrior
from geoinv.priors._symmetrized import SymmetrizedPrior, apply_signed_permutations
from geoinv.priors.edm import (
    EDMDenoiser,
    alpha_bar_from_sigma,
    ddpm_linear_schedule,
    edm_coefficients,
    edm_sample,
    karras_sigmas,
    sigma_from_alpha_bar,
    tweedie,
    ve_to_vp,
    vp_denoise,
    vp_to_ve,
)

__all__ = [
    "Prior", "GaussianPrior", "SymmetrizedPrior", "apply_signed_permutations", "as_sigma", "EDMDenoiser", "edm_coefficients", "edm_sample", "tweedie",
    "karras_sigmas", "sigma_from_alpha_bar", "alpha_bar_from_sigma", "vp_to_ve", "ve_to_vp", "vp_denoise",
    "ddpm_linear_schedule", "bench_denoising",
]


def __getattr__(name):
    if name == "bench_denoising":
        from geoinv.priors._bench import bench_denoising

        return bench_denoising
    raise AttributeError(f"module 'geoinv.priors' has no attribute {name!r}")
