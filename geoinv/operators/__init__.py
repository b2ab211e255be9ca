"""Forward models ``y = A(x) + noise`` acting on signals in the canonical layout.

Every operator maps ``x`` of shape ``(B, N, C)`` (see
:meth:`geoinv.signals.SignalBase.point_values`) to a measurement tensor whose first
axis is the batch. Operators carry two flags: ``linear`` (then :meth:`Operator.adjoint`
exists and passes :func:`adjointness_error`) and ``differentiable`` (samplers that
need gradients, such as DPS, refuse operators without it; EnKG only calls
``operator(x)``). ``noise_std`` is the standard deviation of the additive Gaussian
measurement noise, in the units of ``y``; :meth:`Operator.measure` draws a noisy
measurement, ``operator(x)`` is always noise-free.

Compose with ``@``: ``GaussianNoise(0.1) @ Mask(m)`` observes the points of ``m`` with
noise std 0.1.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from geoinv.errors import MaskError, NotDifferentiableError, ShapeError

__all__ = [
    "Operator",
    "Identity",
    "Mask",
    "GaussianNoise",
    "Compose",
    "HeatBlur",
    "FunctionOperator",
    "adjointness_error",
    "NavierStokes2D",
    "NavierStokesObservation",
    "SpectralLift",
    "kolmogorov_symmetries",
    "kolmogorov_symmetry_maps",
    "spectral_resample",
]


class Operator:
    """Base class of forward models.

    Subclasses implement :meth:`forward` (and :meth:`adjoint` when ``linear``).
    """

    linear: bool = False
    differentiable: bool = True
    noise_std: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free forward model.

        Parameters
        ----------
        x : Tensor, shape (B, N, C)

        Returns
        -------
        Tensor, shape (B, ...)
        """
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint ``A^T y`` of a linear operator (Euclidean inner products)."""
        raise NotImplementedError(f"{type(self).__name__} is not linear; it has no adjoint")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.differentiable and torch.is_grad_enabled() and x.requires_grad:
            raise NotDifferentiableError(
                f"{type(self).__name__} is declared non-differentiable: use a derivative-free "
                "sampler (method='enkg') or a differentiable variant of the forward model"
            )
        return self.forward(x)

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy measurement ``A(x) + noise_std * eps`` with ``eps ~ N(0, I)``."""
        with torch.no_grad():
            y = self.forward(x)
            if self.noise_std > 0:
                eps = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
                y = y + self.noise_std * eps * self.observed_weight(y)
        return y

    def observed_weight(self, y: torch.Tensor) -> torch.Tensor | float:
        """Where the measurement carries information (1) or is a structural zero (0)."""
        return 1.0

    def __matmul__(self, other: "Operator") -> "Compose":
        return Compose(self, other)


class Identity(Operator):
    """``A = I`` (denoising)."""

    linear = True

    def forward(self, x):
        return x

    def adjoint(self, y):
        return y


class GaussianNoise(Identity):
    """Additive white Gaussian noise of standard deviation ``std`` (an identity forward model).

    Compose it after a noise-free operator: ``GaussianNoise(0.1) @ Mask(m)``.
    """

    def __init__(self, std: float):
        if not np.isfinite(std) or std < 0:
            raise ValueError(f"noise std must be a finite number >= 0, got {std}")
        self.noise_std = float(std)

    def __repr__(self) -> str:
        return f"GaussianNoise({self.noise_std:g})"


class Mask(Operator):
    """Observe a subset of points: ``y = m * x`` (unobserved entries are structural zeros).

    Parameters
    ----------
    mask : bool Tensor, shape (N,) or (B, N)
        True = observed. A ``(B, N)`` mask gives every batch item its own mask.

    Notes
    -----
    ``y`` keeps the shape of ``x`` (as deepinv's ``Inpainting``), so one operator serves
    batches with different masks; the operator is an orthogonal projection, hence
    self-adjoint.
    """

    linear = True

    def __init__(self, mask: torch.Tensor):
        m = torch.as_tensor(mask)
        if m.dtype != torch.bool:
            raise MaskError(f"mask must be boolean (True = observed), got {m.dtype}")
        if m.dim() not in (1, 2):
            raise MaskError(f"mask must have shape (N,) or (B, N), got {tuple(m.shape)}")
        self.mask = m.clone()

    def _w(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device)
        if m.shape[-1] != x.shape[1]:
            raise ShapeError(f"mask has {m.shape[-1]} points but x has {x.shape[1]} (x must be (B, N, C))")
        m = m.unsqueeze(0) if m.dim() == 1 else m
        return m.unsqueeze(-1).to(x.dtype)

    def forward(self, x):
        return x * self._w(x)

    def adjoint(self, y):
        return y * self._w(y)

    def observed_weight(self, y):
        return self._w(y)

    def __repr__(self) -> str:
        return f"Mask(observed={int(self.mask.sum())}/{self.mask.numel()})"


class Compose(Operator):
    """``outer(inner(x))``; noise std is the outer operator's (noise is added last)."""

    def __init__(self, outer: Operator, inner: Operator):
        self.outer, self.inner = outer, inner
        self.linear = outer.linear and inner.linear
        self.differentiable = outer.differentiable and inner.differentiable
        if inner.noise_std > 0 and not isinstance(outer, Identity):
            raise ValueError("noise must be the last operator: write GaussianNoise(s) @ (A @ B)")
        self.noise_std = outer.noise_std if outer.noise_std > 0 else inner.noise_std

    def forward(self, x):
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))

    def observed_weight(self, y):
        w = self.outer.observed_weight(y)
        return self.inner.observed_weight(y) if isinstance(self.outer, Identity) else w

    def parts(self) -> list[Operator]:
        """The flat list of composed operators, outermost first."""
        out = []
        for op in (self.outer, self.inner):
            out.extend(op.parts() if isinstance(op, Compose) else [op])
        return out

    def __repr__(self) -> str:
        return f"{self.outer!r} @ {self.inner!r}"


class _SparseSolve(torch.autograd.Function):
    """``x -> (M + tL)^{-1} M x`` with a prefactorized scipy LU; backward applies the adjoint."""

    @staticmethod
    def forward(ctx, x, op):
        ctx.op = op
        return op._apply(x, adjoint=False)

    @staticmethod
    def backward(ctx, g):
        return ctx.op._apply(g, adjoint=True), None


class HeatBlur(Operator):
    """One implicit heat-equation step on a mesh, sphere or grid: ``A = (M + t L)^{-1} M``.

    Parameters
    ----------
    signal : MeshSignal, SphereSignal or GridSignal
        Supplies the domain's Laplacian ``L`` (PSD stiffness) and lumped mass ``M``.
    t : float
        Diffusion time in the domain's squared length units (larger blurs more).

    Notes
    -----
    ``A`` is linear with adjoint ``A^T = M (M + t L)^{-1}`` (``L``, ``M`` symmetric).
    It preserves constants. Gradients flow through it with autograd.
    """

    linear = True

    def __init__(self, signal: Any, t: float):
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        if t <= 0:
            raise ValueError(f"diffusion time t must be > 0, got {t}")
        L, mass = signal.laplacian()
        self.t = float(t)
        self.n = signal.n_points
        self._mass = np.asarray(mass, dtype=np.float64)
        self._lu = spla.splu((sp.diags(self._mass) + self.t * L).tocsc())
        self.fingerprint = signal.fingerprint

    def _apply(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        b, n, c = x.shape
        if n != self.n:
            raise ShapeError(f"HeatBlur was built for {self.n} points, got x with {n}")
        a = x.detach().permute(1, 0, 2).reshape(n, b * c).cpu().double().numpy()
        if adjoint:
            r = self._mass[:, None] * self._lu.solve(a)
        else:
            r = self._lu.solve(self._mass[:, None] * a)
        return torch.as_tensor(r, dtype=x.dtype, device=x.device).reshape(n, b, c).permute(1, 0, 2)

    def forward(self, x):
        return _SparseSolve.apply(x, self)

    def adjoint(self, y):
        return self._apply(y, adjoint=True)

    def __repr__(self) -> str:
        return f"HeatBlur(t={self.t:g}, n={self.n})"


class FunctionOperator(Operator):
    """Wrap a user callable (e.g. a simulator) as a forward model.

    Parameters
    ----------
    fn : callable
        ``fn(x) -> y`` with ``x`` of shape (B, N, C); called once per batch.
    differentiable : bool
        If False, calling with an input that requires grad raises
        :class:`~geoinv.errors.NotDifferentiableError`, and the call runs under
        ``torch.no_grad``.
    noise_std : float
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, differentiable: bool = False,
                 noise_std: float = 0.0, linear: bool = False, adjoint: Callable | None = None):
        self.fn = fn
        self.differentiable = differentiable
        self.noise_std = float(noise_std)
        self.linear = linear and adjoint is not None
        self._adjoint = adjoint

    def forward(self, x):
        if self.differentiable:
            return self.fn(x)
        with torch.no_grad():
            return self.fn(x)

    def adjoint(self, y):
        if self._adjoint is None:
            return super().adjoint(y)
        return self._adjoint(y)


def adjointness_error(op: Operator, x_shape: tuple[int, ...], generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64) -> float:
    """Relative error ``|<Ax, y> - <x, A^T y>| / (|Ax| |y|)`` for random ``x`` and ``y``.

    A correct adjoint gives round-off (about 1e-12 in float64).
    """
    x = torch.randn(x_shape, generator=generator, dtype=dtype)
    ax = op.forward(x)
    y = torch.randn(ax.shape, generator=generator, dtype=dtype)
    aty = op.adjoint(y)
    lhs = float((ax * y).sum())
    rhs = float((x * aty).sum())
    return abs(lhs - rhs) / max(float(ax.norm() * y.norm()), 1e-300)


from geoinv.operators._navier_stokes import (NavierStokes2D, NavierStokesObservation, SpectralLift,  # noqa: E402
                                              kolmogorov_symmetries, kolmogorov_symmetry_maps, spectral_resample)
