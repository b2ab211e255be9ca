r"""Derivative-free multiscale Gauss-Newton for periodic-grid inverse problems (the fluid task's strongest method).

The misfit of the Navier-Stokes problem at ``T = 1`` behaves like full-waveform inversion's: a structure of ``w0``
put in the wrong place is a large misfit whatever its shape, so a fit started far from the truth lands in a wrong
basin. FWI's cure, fitting the coarse scales first, carries over: stage ``s`` minimises

.. math::

    \Phi_s(\xi) = \frac{1}{2\sigma^2}\lVert L_{\kappa_s}(A(m + C^{1/2}\xi) - y)\rVert^2 + \frac12\lVert\xi\rVert^2

over :math:`\xi` in the span of the real Fourier modes with :math:`\max(|k_x|, |k_y|) \le K_s`, with
:math:`L_\kappa` a Gaussian low-pass of the residual on the observation grid and :math:`(m, C)` a stationary
Gaussian fitted to training fields (:class:`StationaryGaussian`). Each Levenberg-Marquardt step takes the
Jacobian in that subspace from one-sided finite differences, all ``p`` perturbed inputs in **one batched call** of
the black-box forward model: the "bundle" form of an iterative ensemble Kalman smoother whose ensemble is the
prior's ``p`` leading Fourier modes (Bocquet & Sakov 2012). No gradient of the forward model is ever taken.

References
----------
Bunks, Saleck, Zaleski, Chavent. *Multiscale seismic waveform inversion*, Geophysics 60 (1995).
Bocquet, Sakov. *Combining inflation-free and iterative ensemble Kalman filters for strongly nonlinear systems*,
Nonlin. Processes Geophys. 19 (2012).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import torch
from tqdm.auto import tqdm

from geoinv.errors import NonFiniteError, ShapeError
from geoinv.operators import Operator

__all__ = ["StationaryGaussian", "fourier_basis", "lowpass", "multiscale_gauss_newton", "GaussNewtonResult",
           "gauss_newton_diffusion", "linearize", "Linearization", "broyden_gauss_newton", "stage_misfit_scale",
           "DEFAULT_STAGES", "DEFAULT_ITERS"]

log = logging.getLogger(__name__)

#: ``(K, kappa)`` per stage: subspace ``max(|kx|, |ky|) <= K``, residual low-pass cut-off ``kappa`` (0 = none).
#: Ends at K = 21, the 2/3-de-aliased band of a 64 x 64 solver (tuned on validation fields, seed 2).
DEFAULT_STAGES = ((3, 1.0), (4, 2.0), (6, 3.0), (8, 4.0), (12, 6.0), (16, 8.0), (21, 12.0), (21, 0.0))
#: Levenberg-Marquardt steps per stage of ``DEFAULT_STAGES``: many where a step is cheap (small ``p``) and the basin
#: is chosen, few where it is dear (validation fields 0-3, seed 2: mean rel. L2 0.240 vs 0.417 with 2 steps per stage
#: at the same cost).
DEFAULT_ITERS = (8, 8, 6, 4, 3, 2, 2, 1)
#: Modes whose prior std is below this fraction of the largest are left out of a linearization: they carry no
#: information, and their finite differences (a step of ``fd_step`` such stds) are the black box's round-off. The
#: constant mode of zero-mean vorticity has 3e-8 of the largest std on the Navier-Stokes training fields.
NEGLIGIBLE_STD = 1e-6
#: Smallest default misfit scale (units of ``y``): noise-free data are fitted to this, not to float32 round-off.
MISFIT_FLOOR = 0.05


@dataclasses.dataclass(frozen=True, eq=False)
class StationaryGaussian:
    r"""A translation-invariant Gaussian on the ``n x n`` torus: mean field and one std per Fourier mode.

    ``x = mean + C^{1/2} xi`` with :math:`C^{1/2}` diagonal in the (unitary) Fourier basis, so
    ``xi ~ N(0, I)`` gives ``x ~ N(mean, C)``.

    Parameters
    ----------
    mean : Tensor, shape (n, n)
    mode_std : Tensor, shape (n, n)
        Std of each Fourier coefficient, unitary normalization (symmetric under ``k -> -k``).
    """

    mean: torch.Tensor
    mode_std: torch.Tensor

    def __post_init__(self):
        if self.mean.dim() != 2 or self.mean.shape != self.mode_std.shape or self.mean.shape[0] != self.mean.shape[1]:
            raise ShapeError(f"mean and mode_std must be the same (n, n), got {tuple(self.mean.shape)} and "
                             f"{tuple(self.mode_std.shape)}")

    @classmethod
    def fit(cls, fields: torch.Tensor) -> "StationaryGaussian":
        """Mean and per-mode std of training fields (K, n, n) (the stationary approximation of their covariance)."""
        if fields.dim() != 3 or fields.shape[0] < 2:
            raise ShapeError(f"fields must be (K >= 2, n, n), got {tuple(fields.shape)}")
        f = fields.double()
        mean = f.mean(0)
        std = (torch.fft.fft2(f - mean).abs() ** 2).mean(0).sqrt() / f.shape[-1]
        return cls(mean, std)

    @property
    def n(self) -> int:
        return self.mean.shape[0]

    def to(self, device) -> "StationaryGaussian":
        """The same Gaussian with its tensors on ``device``."""
        return StationaryGaussian(self.mean.to(device), self.mode_std.to(device))

    def apply_sqrt(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`C^{1/2} v` for fields (..., n, n)."""
        return torch.fft.ifft2(torch.fft.fft2(v) * self.mode_std).real

    def to_x(self, xi: torch.Tensor) -> torch.Tensor:
        """``mean + C^{1/2} xi`` for (..., n, n)."""
        return self.mean + self.apply_sqrt(xi)

    def to_xi(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_x` (modes with zero std map to 0)."""
        s = self.mode_std
        inv = torch.where(s > 1e-12 * float(s.max()), 1 / s.clamp_min(1e-300), torch.zeros_like(s))
        return torch.fft.ifft2(torch.fft.fft2(x - self.mean) * inv).real


def fourier_basis(n: int, k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal real Fourier modes with ``max(|kx|, |ky|) <= k < n / 2`` on an ``n x n`` grid, rows (p, n, n).

    ``p = (2k + 1)^2``: the constant, then a cosine and a sine per wave vector of the upper half plane.
    """
    if not 0 <= k < n / 2:
        raise ValueError(f"k must be in [0, n/2) for an {n} x {n} grid, got {k}")
    g = torch.arange(n, dtype=dtype) * 2 * math.pi / n
    ky, kx = torch.meshgrid(torch.arange(k + 1, dtype=dtype), torch.arange(-k, k + 1, dtype=dtype), indexing="ij")
    keep = (ky > 0) | (kx > 0)
    ph = ky[keep][:, None, None] * g[None, :, None] + kx[keep][:, None, None] * g[None, None, :]
    c = math.sqrt(2) / n
    const = torch.full((1, n, n), 1.0 / n, dtype=dtype)
    return torch.cat([const, torch.stack([torch.cos(ph) * c, torch.sin(ph) * c], 1).flatten(0, 1)])


def _lowpass_filter(kappa: float, shape: tuple[int, int]) -> torch.Tensor:
    """The transfer function ``exp(-|k|^2 / (2 kappa^2))`` on the FFT grid of ``shape`` (kappa > 0), default dtype."""
    k2 = (torch.fft.fftfreq(shape[0], 1 / shape[0])[:, None] ** 2
          + torch.fft.fftfreq(shape[1], 1 / shape[1])[None, :] ** 2)
    return torch.exp(-k2 / (2 * kappa * kappa))


def lowpass(r: torch.Tensor, kappa: float, shape: tuple[int, int]) -> torch.Tensor:
    """Gaussian low-pass ``exp(-|k|^2 / (2 kappa^2))`` of values (B, M) on a periodic grid ``shape``; 0 = identity."""
    if not kappa:
        return r
    f = torch.fft.ifft2(torch.fft.fft2(r.reshape(-1, *shape)) * _lowpass_filter(kappa, shape).to(r.device, r.dtype))
    return f.real.reshape(r.shape)


def stage_misfit_scale(sigma: float, kappa: float, shape: tuple[int, int], floor: float = MISFIT_FLOOR) -> float:
    r"""Misfit scale of the residual low-passed with cut-off ``kappa``, for a measurement of noise scale ``sigma``.

    White noise of std :math:`\sigma` keeps std :math:`\sigma\,g_\kappa` after the low-pass, with
    :math:`g_\kappa^2` the mean of the squared transfer function over the grid (about
    :math:`\pi\kappa^2 / M` for small ``kappa``), so a coarse stage weighs the data by that much less noise:
    :math:`\max(\sigma\,g_\kappa, \min(\sigma, \text{floor}))`. The floor stands for what no subspace
    fits (the model error of a coarse stage, and float32 round-off); noise-free data use ``sigma`` itself at every
    stage. ``kappa = 0`` (no filter) gives ``sigma``.

    Parameters
    ----------
    sigma : float
        Noise scale of the unfiltered residual (units of ``y``).
    kappa : float
        Low-pass cut-off of :func:`lowpass` (0 = none).
    shape : tuple of int
        The observation grid ``(H, W)``.
    floor : float

    Returns
    -------
    float
    """
    if not kappa:
        return float(sigma)
    g = float(_lowpass_filter(kappa, shape).double().pow(2).mean().sqrt())
    return max(sigma * g, min(sigma, floor))


@dataclasses.dataclass
class GaussNewtonResult:
    """Estimate and cost of :func:`multiscale_gauss_newton`.

    Attributes
    ----------
    x : Tensor, shape (1, n * n, 1), float64
        The estimate (MAP of the last stage).
    n_forward, forward_rounds : int
        Forward evaluations and sequential batched calls.
    seconds : float
    trace : list of dict
        Per stage: ``K``, ``kappa``, ``p``, misfit scale ``sigma``, relative data misfit ``||A(x) - y|| / ||y||``,
        damping ``lam``.
    """

    x: torch.Tensor
    n_forward: int
    forward_rounds: int
    seconds: float
    trace: list


def _measurement(y: torch.Tensor, operator, n: int) -> tuple[torch.Tensor, tuple]:
    """``y`` checked against ``operator.obs_shape`` and the prior's resolution ``n``, as (1, M) float64."""
    shape = tuple(getattr(operator, "obs_shape", ()))
    if y.dim() < 2 or y.shape[0] != 1 or len(shape) != 2 or math.prod(shape) != y[0].numel():
        raise ShapeError(f"y must be (1, M, ...) with M = prod(operator.obs_shape) values; got y {tuple(y.shape)} and "
                         f"obs_shape {shape or None}")
    if getattr(operator, "n", n) != n:
        raise ShapeError(f"the prior is for {n} x {n} fields but the operator takes {operator.n} x {operator.n}; fit "
                         f"StationaryGaussian on fields of the operator's resolution")
    if not torch.isfinite(y).all():
        raise NonFiniteError("y contains NaN or inf; mask or drop those measurements first")
    return y.reshape(1, -1).double(), shape


def _misfit_scale(sigma, operator) -> float:
    """``sigma``, or by default the operator's noise std floored at ``MISFIT_FLOOR`` (units of ``y``)."""
    return float(sigma if sigma is not None else max(float(getattr(operator, "noise_std", 0.0) or 0.0), MISFIT_FLOOR))


def _counted(operator, n: int, chunk: int, counts: dict):
    """``fwd(xs)``: the black box on fields (B, n, n) -> (B, M) float64 in one sequential round, counted (and the
    black box's output shape per field in ``counts["out_shape"]``)."""

    @torch.no_grad()
    def fwd(xs):
        counts["n"] += xs.shape[0]
        counts["rounds"] += 1
        outs = [operator(c.reshape(-1, n * n, 1)) for c in xs.split(chunk)]
        counts["out_shape"] = tuple(outs[0].shape[1:])
        return torch.cat([o.double().reshape(o.shape[0], -1) for o in outs])

    return fwd


def _damped_step(hess: torch.Tensor, grad: torch.Tensor, phi0, lam: float, trial):
    """One Levenberg-Marquardt step: solve ``(hess + (1 + lam) I) step = -grad``, raising the damping (x4, at most 8
    tries) until ``trial(step) -> (objective, value)`` falls below ``phi0``. Returns ``(step, value, lam)`` with the
    damping lowered (/3) after a success, or ``(None, None, lam)`` when no damping lowers the objective."""
    eye = torch.eye(hess.shape[0], dtype=hess.dtype, device=hess.device)
    for _ in range(8):
        step = torch.linalg.solve(hess + (1 + lam) * eye, -grad)
        phi, value = trial(step)
        if phi < phi0:
            return step, value, max(lam / 3, 1e-6)
        lam *= 4
    return None, None, lam


def multiscale_gauss_newton(y: torch.Tensor, operator, prior: StationaryGaussian, *, stages=DEFAULT_STAGES,
                            iters=None, fd_step: float = 0.1, sigma: float | None = None,
                            x_start: torch.Tensor | None = None, chunk: int = 256,
                            progress: bool = True) -> GaussNewtonResult:
    r"""Derivative-free MAP estimate by Levenberg-Marquardt in growing Fourier subspaces (module docstring).

    Parameters
    ----------
    y : Tensor, shape (1, M) or (1, M, 1)
        Measurement on a periodic grid ``operator.obs_shape`` (``M = prod(obs_shape)``); not modified.
    operator : Operator
        Black box ``(B, n * n, 1) -> (B, M, ...)`` (only called, under ``torch.no_grad``), with ``obs_shape``
        and ``noise_std``.
    prior : StationaryGaussian
        In the operator's input units.
    stages : sequence of (int, float)
        ``(K, kappa)``: subspace half-width and residual low-pass cut-off (0 = none) per stage.
    iters : int or sequence of int, optional
        Levenberg-Marquardt steps per stage (or one count per stage); each costs ``p + 1`` forward evaluations in
        one batched call, plus one per trial of the damping (``p = (2K + 1)^2``). Default ``DEFAULT_ITERS`` with
        the default stages (about 12,800 forward evaluations), else 2 per stage.
    fd_step : float
        One-sided difference step in ``xi`` units (prior stds; 0.1 keeps float32 solvers accurate).
    sigma : float, optional
        Misfit scale in the units of ``y``; default ``max(operator.noise_std, 0.05)``. A stage that low-passes the
        residual uses the scale of the noise that the filter lets through (:func:`stage_misfit_scale`).
    x_start : Tensor, shape (1, n * n, 1), optional
        Where the iterations start (default: the prior mean), e.g. the previous estimate of a cycle, or a single
        full-band stage refining a known field; modes outside every stage's band keep their start values. Not
        modified.
    chunk : int
        Batch size of the forward calls.
    progress : bool

    Returns
    -------
    GaussNewtonResult
    """
    n = prior.n
    y, shape = _measurement(y, operator, n)
    if iters is None:
        iters = DEFAULT_ITERS if tuple(map(tuple, stages)) == DEFAULT_STAGES else 2
    its = [int(iters)] * len(stages) if isinstance(iters, int) else [int(v) for v in iters]
    if len(its) != len(stages) or min(its, default=0) < 1 or not fd_step > 0:
        raise ValueError(f"iters must be >= 1 (an int or one per stage: {len(stages)}) and fd_step > 0, got "
                         f"{iters} and {fd_step}")
    sigma = _misfit_scale(sigma, operator)
    dev = y.device
    prior = prior.to(dev)
    counts = {"n": 0, "rounds": 0}
    fwd = _counted(operator, n, chunk, counts)

    if x_start is None:
        xi = torch.zeros(n, n, dtype=torch.float64, device=dev)
    elif x_start.shape != (1, n * n, 1) or not torch.isfinite(x_start).all():
        raise ShapeError(f"x_start must be a finite (1, {n * n}, 1) field, got {tuple(x_start.shape)}")
    else:
        xi = prior.to_xi(x_start.detach().to(dev, torch.float64).reshape(n, n))
    t0, trace = time.perf_counter(), []
    bar = tqdm(total=sum(its), disable=not progress, leave=False, desc="Gauss-Newton")
    with torch.no_grad():
        for (k, kappa), n_its in zip(stages, its):
            b = fourier_basis(n, k).to(dev)                                         # (p, n, n)
            p = b.shape[0]
            dx = prior.apply_sqrt(b)                                                # C^(1/2) b_i
            lam, sig = 1e-2, stage_misfit_scale(sigma, kappa, shape)
            for _ in range(n_its):
                x = prior.to_x(xi)
                ys = fwd(torch.cat([x[None], x[None] + fd_step * dx]))
                r = lowpass(ys - y, kappa, shape) / sig
                jac = (r[1:] - r[:1]) / fd_step                                     # (p, M)
                phi0 = 0.5 * r[0].pow(2).sum() + 0.5 * xi.pow(2).sum()
                hess = jac @ jac.T
                grad = jac @ r[0] + (b * xi).sum((1, 2))

                def trial(step, xi=xi, b=b, kappa=kappa, sig=sig):
                    xn = xi + torch.einsum("p,pij->ij", step, b)
                    rn = lowpass(fwd(prior.to_x(xn)[None]) - y, kappa, shape) / sig
                    return 0.5 * rn.pow(2).sum() + 0.5 * xn.pow(2).sum(), xn

                step, xn, lam = _damped_step(hess, grad, phi0, lam, trial)
                if step is not None:
                    xi = xn
                bar.update()
            mis = float((fwd(prior.to_x(xi)[None]) - y).norm() / y.norm().clamp_min(1e-300))
            trace.append({"K": k, "kappa": kappa, "p": p, "sigma": sig, "rel_misfit": mis, "lam": lam})
            log.info("Gauss-Newton stage K=%d kappa=%g: relative misfit %.4f", k, kappa, mis)
    bar.close()
    return GaussNewtonResult(prior.to_x(xi).reshape(1, n * n, 1), counts["n"], counts["rounds"],
                             time.perf_counter() - t0, trace)


class Linearization(Operator):
    r"""A black-box forward model linearized at a field: :math:`A(x) \approx A(x_s) + J\,\xi(x - x_s)`.

    Built by :func:`linearize`. ``J`` (``jac``, (p, M)) holds the derivatives of the ``M`` outputs along the ``p``
    whitened Fourier modes of a band (``basis`` (p, n, n), orthonormal, with prior stds ``mode_std`` (p,)):
    :math:`\xi_i(v) = \langle v - m, b_i\rangle / s_i` are the coordinates of a field in those modes, and what lies
    outside the band does not move the output (the de-aliased solver discards it). Calling it evaluates the affine
    model for a batch (B, n * n, 1) -> (B, ...) (the black box's output shape), cheaply and differentiably, so any
    sampler can run on it; ``tangent`` / ``tangent_adjoint`` are its linear part and that part's adjoint.

    Attributes
    ----------
    x_start : Tensor, shape (n, n), float64
    y_start : Tensor, shape (M,), float64
        ``A(x_start)``.
    jac : Tensor, shape (p, M), float64
    basis : Tensor, shape (p, n, n), float64
    mode_std : Tensor, shape (p,), float64
    mean : Tensor, shape (n, n), float64
        The stationary Gaussian's mean (origin of the coordinates).
    out_shape : tuple
        The black box's output shape per field.
    obs_shape : tuple or None
        The black box's observation grid (``obs_shape``), so that the linearization can stand in for it, e.g. in
        :func:`gauss_newton_diffusion` (whose own finite differences of an affine model are then exact and cheap).
    n_forward, forward_rounds : int
        Black-box evaluations spent (``p + 1`` in one round).
    noise_std : float
        The black box's.
    """

    linear = False

    def __init__(self, x_start, y_start, jac, basis, mode_std, mean, out_shape, n_forward, forward_rounds,
                 noise_std=0.0, obs_shape=None):
        self.x_start, self.y_start, self.jac, self.basis, self.mode_std, self.mean = (
            x_start, y_start, jac, basis, mode_std, mean)
        self.out_shape, self.n_forward, self.forward_rounds = tuple(out_shape), n_forward, forward_rounds
        self.obs_shape = None if obs_shape is None else tuple(obs_shape)
        self.noise_std = float(noise_std)
        self.n = x_start.shape[-1]
        self.xi_start = self.coef(x_start[None])[0]

    def _whiten(self, v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kij,pij->kp", v, self.basis) / self.mode_std

    def coef(self, v: torch.Tensor) -> torch.Tensor:
        r"""Whitened band coordinates :math:`\xi` of fields (K, n, n) -> (K, p)."""
        return self._whiten(v - self.mean)

    def tangent(self, dx: torch.Tensor) -> torch.Tensor:
        """The linear part: field increments (B, n * n, 1) -> output increments (B, M)."""
        return self._whiten(dx.to(self.jac.dtype).reshape(-1, self.n, self.n)) @ self.jac

    def tangent_adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`tangent`: (B, M) -> (B, n * n, 1)."""
        c = r.to(self.jac.dtype).reshape(r.shape[0], -1) @ self.jac.T / self.mode_std
        return torch.einsum("kp,pij->kij", c, self.basis).reshape(r.shape[0], self.n * self.n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = x.to(self.jac.dtype).reshape(-1, self.n, self.n) - self.x_start
        return (self.y_start + self.tangent(dx)).reshape(x.shape[0], *self.out_shape)


def linearize(operator, gauss: StationaryGaussian, x: torch.Tensor, *, band: int | None = None, fd_step: float = 0.1,
              chunk: int = 256) -> Linearization:
    """Linearize a black box at ``x`` by one-sided finite differences along the whitened Fourier modes.

    ``p + 1`` forward evaluations (``p <= (2 band + 1)^2``: the band's modes whose prior std is not negligible,
    ``NEGLIGIBLE_STD`` of the largest; the constant mode of a zero-mean field is left out) in **one**
    sequential round, no gradients: the Jacobian of :func:`gauss_newton_diffusion` and of the floor diagnostic.

    Parameters
    ----------
    operator : Operator
        Black box (B, n * n, 1) -> (B, ...) (only called, under ``torch.no_grad``).
    gauss : StationaryGaussian
        Whitening (mode stds) and origin of the coordinates.
    x : Tensor, shape (1, n * n, 1)
        Linearization point; not modified.
    band : int, optional
        Half-width of the Fourier band; default ``n // 3`` (the 2/3-de-aliased band).
    fd_step : float
        Difference step in prior stds (0.1 keeps float32 solvers accurate).
    chunk : int
        Largest batch passed to the black box at once.

    Returns
    -------
    Linearization
    """
    n = gauss.n
    if x.shape != (1, n * n, 1) or not torch.isfinite(x).all():
        raise ShapeError(f"the linearization point (x_start) must be a finite (1, {n * n}, 1) field, got "
                         f"{tuple(x.shape)}")
    dev = x.device
    gauss = gauss.to(dev)
    b = fourier_basis(n, n // 3 if band is None else band).to(dev)                     # (p, n, n)
    dx = gauss.apply_sqrt(b)
    s = (dx * b).sum((1, 2))                                                            # mode std of each row
    keep = s > NEGLIGIBLE_STD * float(s.max())                                        # e.g. the mean mode
    b, dx, s = b[keep], dx[keep], s[keep]
    counts = {"n": 0, "rounds": 0}
    xs = x.detach().to(dev, torch.float64).reshape(n, n)
    ys = _counted(operator, n, chunk, counts)(torch.cat([xs[None], xs[None] + fd_step * dx]))
    return Linearization(xs, ys[0], (ys[1:] - ys[:1]) / fd_step, b, s, gauss.mean, counts["out_shape"], counts["n"],
                         counts["rounds"], getattr(operator, "noise_std", 0.0) or 0.0,
                         getattr(operator, "obs_shape", None))


def broyden_gauss_newton(y: torch.Tensor, operator, lin: Linearization, *, iters: int = 8,
                         sigma: float | None = None, progress: bool = True) -> Linearization:
    r"""Levenberg-Marquardt steps from a linearization's point, its Jacobian kept current by Broyden updates.

    Minimises the full-band objective of :func:`multiscale_gauss_newton`'s last stage,
    :math:`\tfrac{1}{2\sigma^2}\lVert A(x) - y\rVert^2 + \tfrac12\lVert\xi\rVert^2` over the whitened band
    coordinates :math:`\xi` of ``lin``, starting at ``lin.x_start`` with ``lin.jac``. Each trial step costs **one**
    black-box evaluation (where a Gauss-Newton step with a fresh Jacobian costs ``p + 1``), and every accepted
    step :math:`\delta` updates the Jacobian by Broyden's rank-one secant correction
    :math:`J \leftarrow J + \delta\,(A(x + \delta) - A(x) - \delta^\top J)^\top / \lVert\delta\rVert^2`.
    This is the cheap way to correct an estimate whose Jacobian is dear, e.g. on the 128 x 128 grid, where one
    Jacobian is 1,850 fine solves (docs/fluids.md).

    Parameters
    ----------
    y : Tensor, shape (1, M) or (1, M, 1)
        Measurement; not modified.
    operator : Operator
        The black box ``lin`` was taken of (only called, under ``torch.no_grad``).
    lin : Linearization
        Start point and Jacobian (:func:`linearize`).
    iters : int
        Accepted steps at most (each tries at most 8 dampings).
    sigma : float, optional
        Misfit scale in the units of ``y``; default ``max(operator.noise_std, 0.05)``.
    progress : bool

    Returns
    -------
    Linearization
        At the last accepted point: ``y_start`` its exact black-box output, ``jac`` the updated Jacobian; its
        ``n_forward`` and ``forward_rounds`` add this call's evaluations to ``lin``'s.
    """
    if not isinstance(lin, Linearization):
        raise TypeError(f"lin must be a Linearization (geoinv.fluids.linearize), got {type(lin).__name__}")
    y, _ = _measurement(y, operator, lin.n)
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    sigma = _misfit_scale(sigma, operator)
    counts = {"n": 0, "rounds": 0}
    fwd = _counted(operator, lin.n, 256, counts)
    b, s, jac = lin.basis, lin.mode_std, lin.jac.clone()
    xi, x, out = lin.xi_start.clone(), lin.x_start.clone(), lin.y_start.clone()

    def phi(out, xi):
        return 0.5 * ((out - y[0]) / sigma).pow(2).sum() + 0.5 * xi.pow(2).sum()

    def trial(step):
        xn = x + torch.einsum("p,pij->ij", step * s, b)
        on = fwd(xn[None])[0]
        return phi(on, xi + step), (xn, on)

    lam = 1e-2
    with torch.no_grad():
        for _ in tqdm(range(iters), disable=not progress, leave=False, desc="Broyden Gauss-Newton"):
            js = jac / sigma
            grad, hess, phi0 = js @ ((out - y[0]) / sigma) + xi, js @ js.T, phi(out, xi)
            step, new, lam = _damped_step(hess, grad, phi0, lam, trial)
            if step is None:
                break  # no damping lowers the objective: converged as far as this Jacobian can tell
            jac += torch.outer(step, new[1] - out - step @ jac) / step.pow(2).sum()
            xi, (x, out) = xi + step, new
            log.info("Broyden Gauss-Newton: relative misfit %.4f", float((out - y[0]).norm() / y[0].norm()))
    return Linearization(x, out, jac, b, s, lin.mean, lin.out_shape, lin.n_forward + counts["n"],
                         lin.forward_rounds + counts["rounds"], lin.noise_std, lin.obs_shape)


def gauss_newton_diffusion(y: torch.Tensor, operator, gauss: StationaryGaussian, prior, x_start: torch.Tensor, *,
                           n_samples: int = 16, sigma_max: float = 0.3, num_steps: int = 40, lam: float = 1.0,
                           sigma: float | None = None, band: int | None = None, fd_step: float = 0.1,
                           sigma_min: float = 0.002, sample: bool = True, chunk: int = 256,
                           generator: torch.Generator | None = None, progress: bool = True):
    r"""Diffusion posterior samples in the Gauss-Newton linearization of a black box at ``x_start``.

    The forward model is linearized once at ``x_start`` (e.g. :func:`multiscale_gauss_newton`'s estimate):
    :math:`A(x) \approx A(x_s) + J\,(x - x_s)` with ``J`` taken by finite differences along the whitened Fourier
    modes of the band ``max(|kx|, |ky|) <= band`` (``p + 1`` forward evaluations in one batched call: the only
    ones). ``n_samples`` chains then start at ``x_start + sigma_max * eps`` (SDEdit) and at each noise level
    :math:`\sigma_t` of a Karras schedule (1) denoise with the diffusion prior, :math:`\hat x = D(x_t; \sigma_t)`,
    (2) take the exact proximal step of the linearized likelihood in the band,

    .. math::

        x_0 = \arg\min_x \frac{1}{2\sigma^2}\lVert A(x_s) + J(x - x_s) - y\rVert^2
              + \frac{1}{2\rho_t^2}\lVert x - \hat x\rVert^2, \qquad \rho_t = \lambda\,\sigma_t,

    a ``p x p`` Cholesky solve (modes outside the band keep :math:`\hat x`); with ``sample`` (default) ``x_0`` is
    drawn from that Gaussian conditional instead of taken at its mode, and (3) re-noise,
    :math:`x_{t+1} = x_0 + \sigma_{t+1}\,\varepsilon` (DiffPIR with :math:`\zeta = 1`, Zhu et al. 2023, with the
    exact conditional draw of decoupled annealing, Zhang et al. 2025). :math:`\lambda = 1` treats the denoiser's
    error as :math:`\sigma_t`, its size at small noise: with an exact Gaussian prior and a linear forward model
    the samples then follow the exact posterior (mean and spread; ``tests/test_fluids.py``). The diffusion prior
    supplies what the observation leaves out (with the stationary Gaussian as prior, the linearized posterior
    keeps about 22 % of the prior's error on the Navier-Stokes task; docs/fluids.md).

    Parameters
    ----------
    y : Tensor, shape (1, M) or (1, M, 1)
        Measurement on the grid ``operator.obs_shape``; not modified.
    operator : Operator or Linearization
        Black box ``(B, n * n, 1) -> (B, M, ...)`` with ``obs_shape`` (only called, under ``torch.no_grad``), or a
        :class:`Linearization` of one, used as it is (``band`` and ``fd_step`` then do not apply, and the result
        counts no forward evaluations: they are the linearization's).
    gauss : StationaryGaussian
        Sets the whitened coordinates of the Jacobian and of the proximal step (not a prior here).
    prior : Prior
        Diffusion prior with ``denoise(x (B, n * n, 1), sigma)`` in the operator's input units.
    x_start : Tensor, shape (1, n * n, 1)
        Linearization point and warm start; not modified.
    n_samples : int
        Chains ``K`` (denoised in one batch).
    sigma_max, num_steps, sigma_min : float, int, float
        Karras schedule of the chains (``rho = 7``). ``sigma_max`` 0.3 (normalized units, about 2.5 times the
        Gauss-Newton estimate's error per value) lets the prior redraw the scales the data leave out; on the Navier-Stokes validation fields it beat 0.1
        and 0.2 and tied with 0.5, and more steps (60, 80) did worse (docs/fluids.md).
    lam : float
        :math:`\lambda`: the proximal step trusts the denoiser to :math:`\lambda\sigma_t` (1: calibrated).
    sigma : float, optional
        Misfit scale in the units of ``y``; default ``max(operator.noise_std, 0.05)``.
    band : int, optional
        Half-width of the Fourier band; default ``n // 3`` (the 2/3-de-aliased band).
    fd_step : float
        Difference step in prior stds.
    sample : bool
        Draw ``x_0`` from the Gaussian conditional (posterior samples) rather than take its mode.
    chunk : int
    generator : torch.Generator, optional
    progress : bool

    Returns
    -------
    geoinv.samplers.SampleResult
        ``samples`` (K, n * n, 1) float64, their mean and std, and the work (``n_forward = p + 1``, one round).
    """
    from geoinv.samplers import SampleResult, karras_sigmas
    from geoinv.samplers._base import _call_dtype

    n = gauss.n
    y, _ = _measurement(y, operator, n)
    if n_samples < 1 or num_steps < 1 or not lam > 0 or not 0 < sigma_min < sigma_max:
        raise ValueError(f"need n_samples >= 1, num_steps >= 1, lam > 0 and 0 < sigma_min < sigma_max; got {n_samples}, "
                         f"{num_steps}, {lam}, {sigma_min}, {sigma_max}")
    sigma = _misfit_scale(sigma, operator)
    t0 = time.perf_counter()
    given = isinstance(operator, Linearization)
    lin = operator if given else linearize(operator, gauss, x_start.to(y.device), band=band, fd_step=fd_step,
                                           chunk=chunk)
    jac, b, s = lin.jac, lin.basis, lin.mode_std
    hess = jac @ jac.T / sigma**2
    data = hess @ lin.xi_start - jac @ (lin.y_start - y[0]) / sigma**2
    dev, xs = y.device, lin.x_start
    sig = karras_sigmas(num_steps, sigma_min, sigma_max, 7.0)
    dt = _call_dtype(prior)
    x = xs + sigma_max * torch.randn((n_samples, n, n), generator=generator, dtype=torch.float64, device=dev)
    nfe = 0
    with torch.no_grad():
        for i in tqdm(range(num_steps), disable=not progress, leave=False, desc="Gauss-Newton diffusion"):
            den = prior.denoise(x.reshape(n_samples, n * n, 1).to(dt), sig[i]).double().reshape(n_samples, n, n)
            nfe += n_samples * getattr(prior, "evals_per_call", 1)
            w = s * s / (lam * sig[i]) ** 2
            c_den = lin.coef(den)
            chol = torch.linalg.cholesky(hess + torch.diag(w))
            c = torch.cholesky_solve((data[None] + w * c_den).T, chol).T                        # (K, p): the mode
            if sample:  # a draw of the Gaussian conditional, covariance (hess + diag(w))^(-1)
                z = torch.randn(c.shape, generator=generator, dtype=torch.float64, device=dev)
                c = c + torch.linalg.solve_triangular(chol.T, z.T, upper=True).T
            x0 = den + torch.einsum("kp,pij->kij", (c - c_den) * s, b)
            x = x0 + sig[i + 1] * torch.randn(x0.shape, generator=generator, dtype=torch.float64, device=dev)
    samples = x0.reshape(n_samples, n * n, 1)
    return SampleResult(samples=samples, mean=samples.mean(0), std=samples.std(0) if n_samples > 1 else None,
                        nfe=nfe, n_forward=0 if given else lin.n_forward,
                        forward_rounds=0 if given else lin.forward_rounds,
                        seconds=time.perf_counter() - t0, method="gauss-newton-diffusion",
                        info={"sigma_max": sigma_max, "num_steps": num_steps, "lam": lam, "sigma": sigma,
                              "sample": sample, "modes": int(b.shape[0])})
