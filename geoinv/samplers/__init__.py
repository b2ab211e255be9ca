"""Posterior samplers for ``y = A(x) + noise`` with a diffusion (or Gaussian) prior.

Every sampler is a small configured object with one calling convention::

    result = sampler(y, operator, prior, n_samples=64, generator=g, progress=True)
    result.samples   # (S, N, C), float64
    result.mean, result.std, result.nfe, result.n_forward, result.forward_rounds, result.seconds

They only use ``prior.denoise(x, sigma)`` and ``operator(x)``, so the same code runs on
meshes, spheres and grids (all in the ``(B, N, C)`` layout) with learned or Gaussian
priors.

========================  =====================================  ===========================
sampler                   operators                              needs gradients
========================  =====================================  ===========================
:class:`DPS`              any differentiable                     yes (autograd)
:class:`MCG`              ``Mask`` (+ ``GaussianNoise``)         yes (through the denoiser)
:class:`Tweedie`          ``GaussianNoise`` (denoising)          no, 1 denoiser call
:class:`EnKG`             any, including black-box simulators    no
:class:`EKI`              any (no diffusion prior: an ensemble)  no
========================  =====================================  ===========================
"""

from geoinv.samplers._base import SampleResult, Sampler, ancestral_step, karras_sigmas
from geoinv.samplers._dps import DPS
from geoinv.samplers._eki import EKI
from geoinv.samplers._enkg import EnKG
from geoinv.samplers._localization import Localization, gaspari_cohn
from geoinv.samplers._mcg import MCG
from geoinv.samplers._tweedie import Noise2Score, Tweedie

__all__ = [
    "SampleResult",
    "Sampler",
    "DPS",
    "MCG",
    "Tweedie",
    "Noise2Score",
    "EnKG",
    "EKI",
    "Localization",
    "gaspari_cohn",
    "karras_sigmas",
    "ancestral_step",
]
