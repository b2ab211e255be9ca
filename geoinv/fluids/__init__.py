"""Fluids: the 2-D Navier-Stokes inverse problem (InverseBench / EnKG "fluid" task) on 2 CPU cores.

* :func:`generate`, :func:`generate_splits`, :func:`load_fields`: the data set (GRF initial
  vorticity evolved 5 time units at Re 200 with :class:`geoinv.operators.NavierStokes2D`),
  written to ``~/.cache/geoinv/navier-stokes`` (or a given folder) as safetensors;
  ``geoinv datasets navier-stokes --n N --resolution 64`` on the command line.
* :func:`grf_torus`: the spectral Gaussian random field sampler.
* :func:`multiscale_gauss_newton` with :class:`StationaryGaussian`: derivative-free MAP by
  Levenberg-Marquardt in growing Fourier subspaces with a scale continuation (finite-difference
  Jacobians, one batched forward call per step); the best estimator of this task on a CPU budget.
* :func:`linearize`: a black box linearized at a field by finite differences along the whitened Fourier
  modes (one batched call), as a cheap differentiable :class:`Linearization` operator any sampler can run on;
  :func:`gauss_newton_diffusion` samples the diffusion posterior in it exactly.
* :func:`assimilate`: one call from an observation to a posterior over the initial vorticity (the two above,
  with the shipped diffusion prior averaged over the flow's symmetries), as a :class:`~geoinv.inference.Posterior`
  of periodic grid signals; on a finer grid than the prior's (128 x 128 with the 64 x 64 prior) multi-fidelity.
* :class:`DaskOperator`: map an ensemble's forward evaluations over a dask.distributed client.
* :class:`EKI`: ensemble Kalman inversion (no diffusion prior), sharing EnKG's update.

Units: priors and operators work on normalized vorticity ``x = w / 10`` (``SCALE``);
observations ``y`` are in physical vorticity units.
"""

from geoinv.fluids._assimilate import ASSIMILATION_METHODS, GND_SYMMETRIES, MULTI_FIDELITY, assimilate
from geoinv.fluids._data import SCALE, default_dir, generate, generate_splits, grid_signal, load_fields
from geoinv.fluids._grf import GRFEnsemble, grf_torus
from geoinv.fluids._gauss_newton import (DEFAULT_ITERS, DEFAULT_STAGES, GaussNewtonResult, Linearization,
                                         StationaryGaussian, broyden_gauss_newton, fourier_basis,
                                         gauss_newton_diffusion, linearize, lowpass, multiscale_gauss_newton,
                                         stage_misfit_scale)

__all__ = ["assimilate", "ASSIMILATION_METHODS", "GND_SYMMETRIES", "MULTI_FIDELITY", "generate", "generate_splits",
           "load_fields", "grid_signal", "default_dir", "grf_torus", "GRFEnsemble", "SCALE",
           "StationaryGaussian", "multiscale_gauss_newton", "GaussNewtonResult", "fourier_basis", "lowpass",
           "gauss_newton_diffusion", "linearize", "Linearization", "broyden_gauss_newton", "stage_misfit_scale",
           "DEFAULT_STAGES", "DEFAULT_ITERS", "DaskOperator", "EKI"]


def __getattr__(name):
    if name == "DaskOperator":
        from geoinv.fluids._dask import DaskOperator

        return DaskOperator
    if name == "EKI":
        from geoinv.samplers._eki import EKI

        return EKI
    raise AttributeError(f"module 'geoinv.fluids' has no attribute {name!r}")
