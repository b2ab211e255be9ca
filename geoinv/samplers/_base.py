"""What every posterior sampler shares: the result type, the call protocol, schedules, work counters."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Mapping

import torch

from geoinv.errors import NonFiniteError, ShapeError

__all__ = ["SampleResult", "Sampler", "karras_sigmas", "Callback"]

log = logging.getLogger(__name__)

STATE_DTYPE = torch.float64

#: ``callback(step, state)``: called once per outer step with the step index and a dict of
#: tensors (keys documented per sampler; at least ``"x"``, the current state (S, N, C), and
#: ``"sigma"``, the noise level of that state, a float).
Callback = Callable[[int, Mapping[str, Any]], None]


@dataclasses.dataclass(frozen=True, repr=False)
class SampleResult:
    """Posterior samples for one measurement, with the work it took to draw them.

    Attributes
    ----------
    samples : Tensor, shape (S, N, C), float64
        Posterior samples (EnKG: the final ensemble; Tweedie: its one estimate, S = 1).
    mean : Tensor, shape (N, C)
        Sample mean.
    std : Tensor, shape (N, C), or None
        Sample standard deviation (unbiased); ``None`` when it is not available
        (one sample, or a point estimator such as :class:`~geoinv.samplers.Tweedie`).
    nfe : int
        Denoiser evaluations, counting every sample: one call on a batch of S counts S.
        Inner ODE solves (EnKG) are included.
    n_forward : int
        Forward-model evaluations, counting every sample likewise.
    forward_rounds : int
        Sequential (batched) calls of the forward model: the latency axis for expensive
        simulators, where a batch of S runs in parallel.
    seconds : float
        Wall-clock time of the call.
    method : str
        Name of the sampler that produced the result.
    info : dict
        Method-specific extras (e.g. the resolved hyper-parameters).
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor | None
    nfe: int
    n_forward: int
    forward_rounds: int
    seconds: float
    method: str = ""
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of samples ``S``."""
        return self.samples.shape[0]

    def __repr__(self) -> str:
        return (f"SampleResult(method={self.method!r}, samples={tuple(self.samples.shape)}, nfe={self.nfe}, "
                f"n_forward={self.n_forward}, forward_rounds={self.forward_rounds}, seconds={self.seconds:.3g})")


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0) -> list[float]:
    """:func:`geoinv.priors.edm.karras_sigmas` as Python floats (no device syncs in sampling loops),
    with validated arguments and exact end points.

    Returns
    -------
    list of float, length ``num_steps + 1``, decreasing from ``sigma_max`` to 0
    """
    from geoinv.priors.edm import karras_sigmas as _karras

    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    sig = _karras(num_steps, sigma_min, sigma_max, rho).tolist()
    sig[0] = float(sigma_max)  # exact end points (no round-off from the 1/rho powers)
    if num_steps > 1:
        sig[-2] = float(sigma_min)
    return sig


@dataclasses.dataclass
class _Work:
    """Work counters (Python ints: counting never syncs with the device)."""

    nfe: int = 0
    n_forward: int = 0
    forward_rounds: int = 0


def _call_dtype(prior: Any) -> torch.dtype:
    """Dtype the prior is called in; the result is cast back to the float64 state.

    The prior's ``dtype`` attribute if it has one; else, for an ``nn.Module``, the dtype
    of its first floating parameter (float32 networks); else float64 (e.g. the exact
    :class:`~geoinv.priors.GaussianPrior`).
    """
    dt = getattr(prior, "dtype", None)
    if isinstance(dt, torch.dtype):
        return dt
    if isinstance(prior, torch.nn.Module):
        for p in prior.parameters():
            if p.is_floating_point():
                return p.dtype
    return STATE_DTYPE


class Sampler:
    """Base class of posterior samplers.

    A sampler is configured by its hyper-parameters at construction and called as
    ``sampler(y, operator, prior, n_samples=..., generator=..., progress=..., callback=...)``;
    it only uses ``prior.denoise`` (the :class:`~geoinv.priors.Prior` interface) and
    ``operator(x)``, so it works on every domain (mesh, sphere, grid: all in the
    ``(B, N, C)`` layout) and with learned or Gaussian priors alike.

    Subclasses implement :meth:`_check_operator` and :meth:`_sample`.
    """

    name: str = "sampler"
    min_samples: int = 1
    #: Whether the sampler takes ``x_start`` (the diffusion samplers that start at ``sigma_max``).
    warm_start: bool = False

    def __call__(self, y: torch.Tensor, operator: Any, prior: Any, *, n_samples: int = 1,
                 generator: torch.Generator | None = None, progress: bool = False,
                 callback: Callback | None = None, x_start: torch.Tensor | None = None) -> SampleResult:
        """Draw posterior samples of ``x`` given one measurement ``y = operator(x) + noise``.

        Parameters
        ----------
        y : Tensor, shape (1, ...)
            One measurement, as returned by ``operator.measure(x)`` for ``x`` of shape
            (1, N, C). It is never modified.
        operator : geoinv.operators.Operator
            Forward model; ``operator.noise_std`` is the noise std in the units of ``y``.
        prior : geoinv.priors.Prior
            Supplies ``denoise(x, sigma)`` and ``event_shape = (N, C)``.
        n_samples : int
            Number of samples ``S`` (EnKG: ensemble size ``J``).
        generator : torch.Generator, optional
            Source of all randomness (on the device of ``y``); ``None`` uses torch's
            global generator.
        progress : bool
            Show a tqdm progress bar.
        callback : callable, optional
            ``callback(step, state)`` after every outer step.
        x_start : Tensor, shape (1, N, C) or (S, N, C), optional
            Warm start (SDEdit, Meng et al. 2022): the chain starts at ``x_start + sigma_max * eps`` instead of
            ``sigma_max * eps``, i.e. ``x_start`` is treated as a sample of the data noised to ``sigma_max``.
            Set ``sigma_max`` to about the error std of ``x_start`` (e.g. an estimate from
            :func:`geoinv.fluids.multiscale_gauss_newton`); only for samplers with ``warm_start = True``.
            Not modified.

        Returns
        -------
        SampleResult
        """
        y = self._check_y(y)
        n_samples = int(n_samples)
        if n_samples < self.min_samples:
            raise ValueError(f"{self.name} needs n_samples >= {self.min_samples}, got {n_samples}")
        event = tuple(int(e) for e in getattr(prior, "event_shape", ()))
        if len(event) != 2 or min(event) < 1:
            raise ShapeError(f"prior.event_shape must be (N, C), got {event}")
        self._check_operator(operator)
        x_start = self._check_start(x_start, n_samples, event, y.device)
        work = _Work()
        t0 = time.perf_counter()
        samples, info = self._sample(y, operator, prior, event, n_samples, generator, progress, callback, work,
                                     x_start)
        samples = samples.detach()
        mean = samples.mean(0)
        std = samples.std(0) if samples.shape[0] > 1 else None
        seconds = time.perf_counter() - t0
        log.info("%s: %d sample(s) in %.2f s, nfe=%d, n_forward=%d, forward_rounds=%d", self.name,
                 samples.shape[0], seconds, work.nfe, work.n_forward, work.forward_rounds)
        return SampleResult(samples=samples, mean=mean, std=std, nfe=work.nfe, n_forward=work.n_forward,
                            forward_rounds=work.forward_rounds, seconds=seconds, method=self.name,
                            info={**self.config(), **info})

    # -- to implement --------------------------------------------------------------------------
    def _check_operator(self, operator: Any) -> None:
        """Raise if this method cannot handle ``operator``."""

    def _sample(self, y, operator, prior, event, n_samples, generator, progress, callback,
                work, x_start) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The hyper-parameters as a dict (for logs and result ``info``)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @staticmethod
    def _check_y(y: Any) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise ShapeError(f"y must be a tensor of shape (1, ...) (one measurement), got {type(y).__name__}")
        if y.dim() < 1 or y.shape[0] != 1:
            raise ShapeError(
                f"y must hold one measurement with a leading axis of size 1, shape (1, ...), got {tuple(y.shape)}; "
                "call the sampler once per measurement"
            )
        if not y.is_floating_point():
            raise ShapeError(f"y must be a floating tensor, got {y.dtype}")
        y = y.detach().to(STATE_DTYPE, copy=True)
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteError("y contains NaN or inf; unobserved entries must be zeros (use operators.Mask)")
        return y

    def _check_start(self, x_start, n_samples: int, event: tuple, device) -> torch.Tensor | None:
        """``x_start`` validated and copied to the float64 state on ``device`` (``None`` stays ``None``)."""
        if x_start is None:
            return None
        if not self.warm_start:
            raise ValueError(f"{self.name} does not take x_start (only the samplers that start from noise at "
                             "sigma_max: DPS, MCG, EnKG)")
        if not isinstance(x_start, torch.Tensor) or x_start.dim() != 3 or tuple(x_start.shape[1:]) != event \
                or x_start.shape[0] not in (1, n_samples):
            got = tuple(x_start.shape) if isinstance(x_start, torch.Tensor) else type(x_start).__name__
            raise ShapeError(f"x_start must be (1, {event[0]}, {event[1]}) or ({n_samples}, {event[0]}, {event[1]}) "
                             f"(the prior's event shape), got {got}")
        if not bool(torch.isfinite(x_start).all()):
            raise NonFiniteError("x_start contains NaN or inf")
        return x_start.detach().to(device=device, dtype=STATE_DTYPE)

    def _initial(self, n_samples: int, event: tuple, generator, device, x_start) -> torch.Tensor:
        """The chain's start ``x_start + sigma_max * eps`` (S, N, C), ``x_start = 0`` when not given."""
        x = self.sigma_max * self._noise((n_samples, *event), generator, device)
        return x if x_start is None else x + x_start

    @staticmethod
    def _noise(shape, generator, device) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=STATE_DTYPE, device=device)

    @staticmethod
    def _denoise(prior: Any, x: torch.Tensor, sigma: float, work: _Work, batch_size: int | None = None) -> torch.Tensor:
        """``D(x; sigma)`` in float64 for a batch (S, N, C), chunked by ``batch_size``; counts nfe."""
        work.nfe += x.shape[0] * getattr(prior, "evals_per_call", 1)
        dt = _call_dtype(prior)
        if batch_size is None or x.shape[0] <= batch_size:
            return prior.denoise(x.to(dt), sigma).to(STATE_DTYPE)
        return torch.cat([prior.denoise(c.to(dt), sigma).to(STATE_DTYPE) for c in x.split(batch_size)])

    @staticmethod
    def _forward(operator: Any, x0: torch.Tensor, y: torch.Tensor, work: _Work) -> torch.Tensor:
        """``operator(x0)`` for a batch, checked against the measurement shape; counts the work."""
        work.n_forward += x0.shape[0]
        work.forward_rounds += 1
        out = operator(x0)
        if tuple(out.shape[1:]) != tuple(y.shape[1:]) or out.shape[0] != x0.shape[0]:
            raise ShapeError(
                f"operator output has shape {tuple(out.shape)} but the measurement y has shape {tuple(y.shape)}: "
                f"expected ({x0.shape[0]}, {', '.join(str(s) for s in y.shape[1:])})"
            )
        return out.to(STATE_DTYPE)


def _grad(loss: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    """``d loss / d x``, with a clear error when the graph was cut (a non-differentiable prior)."""
    if not loss.requires_grad:
        raise RuntimeError(
            f"{what} needs gradients through prior.denoise and the operator, but the result does not depend on "
            "x through autograd (the prior or operator detaches its input); use EnKG for derivative-free sampling"
        )
    (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def _operator_parts(operator: Any) -> list:
    """Flat list of composed operators (outermost first)."""
    return operator.parts() if hasattr(operator, "parts") else [operator]


def ancestral_step(x: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float,
                   z: torch.Tensor) -> torch.Tensor:
    r"""One ancestral (DDPM-posterior) step of the VE diffusion from ``sigma`` to ``sigma_next``.

    Samples :math:`q(x_{\sigma'} \mid x_\sigma, x_0 = \hat x_0)`, the Gaussian bridge of
    :math:`x_\sigma = x_0 + \sigma\epsilon`:
    mean :math:`r x + (1 - r)\hat x_0`, variance :math:`\sigma'^2 (1 - r)` with
    :math:`r = \sigma'^2/\sigma^2` (``sigma_next = 0`` returns ``x0``). This is DDPM's
    ancestral step written in VE coordinates.
    """
    if sigma_next <= 0:
        return x0
    r = (sigma_next / sigma) ** 2
    return r * x + (1 - r) * x0 + (sigma_next * math.sqrt(1 - r)) * z
