r"""2-D incompressible Navier-Stokes on the periodic torus, and its observation operators.

The solver follows the InverseBench / EnKG "fluid" problem (our own implementation):

.. math::

    \partial_t w + u \cdot \nabla w = \nu \Delta w + f, \qquad
    u = (\partial_y \psi, -\partial_x \psi), \qquad -\Delta \psi = w,

on :math:`[0, 2\pi]^2` with :math:`\nu = 1/Re`, :math:`Re = 200` and Kolmogorov forcing
:math:`f = -4\cos(4y)`. Fields are arrays ``w[..., i, j]`` with row ``i`` the ``y``
coordinate (:math:`y_i = 2\pi i / H`) and column ``j`` the ``x`` coordinate
(:math:`x_j = 2\pi j / W`), as :class:`~geoinv.GridSignal` (spacing ``(dy, dx)``).

Discretisation: pseudo-spectral (``rfft2``), 2/3-rule de-aliasing of the advection
term, Crank-Nicolson for diffusion and Heun (explicit trapezoidal RK2) for advection and
forcing (second order in time overall), and a CFL-adaptive step
``dt = min(cfl * h / max|u|, cfl * h^2 / nu, dt_max)`` with ``h = 2 pi / N`` chosen per
ensemble member (so a member's trajectory does not depend on the other members of its
batch), clipped to land exactly on the final time.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from geoinv.errors import NonFiniteError, ShapeError
from geoinv.operators import Operator

__all__ = ["NavierStokes2D", "NavierStokesObservation", "SpectralLift", "kolmogorov_forcing", "kolmogorov_symmetries",
           "kolmogorov_symmetry_maps", "spectral_resample", "taylor_green"]


def _band_index(n: int, h: int, device=None) -> torch.Tensor:
    """FFT indices of the wavenumbers ``|k| < h`` on an ``n``-point axis (non-negative first)."""
    return torch.cat([torch.arange(h, device=device), torch.arange(n - h + 1, n, device=device)])


def spectral_resample(w: torch.Tensor, m: int) -> torch.Tensor:
    """Resample periodic fields to an ``m x m`` grid by trigonometric interpolation (Fourier zero-padding or
    truncation).

    The Fourier modes with ``|kx|, |ky| < min(n, m) / 2`` are kept with their amplitudes, all others (including the
    Nyquist modes of an even grid, which have no symmetric partner) are zero. So a field whose modes all lie in that
    band is sampled exactly on the new grid, and ``spectral_resample(spectral_resample(w, m), n)`` returns such a field
    unchanged for ``m >= n``.

    Parameters
    ----------
    w : Tensor, shape (B, n, n)
        Real periodic fields on a square grid; not modified.
    m : int
        The new grid size (larger: interpolation; smaller: the fields' low-pass part).

    Returns
    -------
    Tensor, shape (B, m, m), dtype of ``w``
    """
    if w.dim() != 3 or w.shape[1] != w.shape[2]:
        raise ShapeError(f"w must be square periodic fields (B, n, n), got {tuple(w.shape)}")
    n, m = w.shape[-1], int(m)
    if m < 2:
        raise ValueError(f"m must be at least 2, got {m}")
    h = (min(n, m) + 1) // 2
    src, dst = _band_index(n, h, w.device), _band_index(m, h, w.device)
    wh = torch.fft.fft2(w.to(torch.float64))[:, src][:, :, src]
    out = torch.zeros(w.shape[0], m, m, dtype=wh.dtype, device=w.device)
    out[:, dst[:, None], dst[None, :]] = wh * (m / n) ** 2
    return torch.fft.ifft2(out).real.to(w.dtype)


def kolmogorov_forcing(n: int, *, amplitude: float = -4.0, k: int = 4, dtype=torch.float64,
                       device=None) -> torch.Tensor:
    r"""Kolmogorov forcing :math:`a \cos(k y)` on an ``n x n`` grid (rows = y), shape (n, n)."""
    y = 2 * math.pi * torch.arange(n, dtype=dtype, device=device) / n
    return (amplitude * torch.cos(k * y))[:, None].expand(n, n).contiguous()


def kolmogorov_symmetry_maps(n: int, x_shift, half_period, rotate, *, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Signed grid permutations that map solutions of the Kolmogorov-forced equations to solutions.

    With forcing :math:`a\cos(k y)` and :math:`h = \pi / k` (half its period, ``n / (2 k)`` cells), the vorticity
    equation on the torus is invariant under

    * the shift-reflection :math:`S: w(x, y) \mapsto -w(-x, y + h)` (mirror in x, which flips the sign of the
      vorticity, and a half-period shift in y, which flips the forcing back); :math:`S^2` is the shift by the
      forcing's period,
    * the rotation by pi, :math:`R: w(x, y) \mapsto w(-x, -y)`,
    * shifts in x, :math:`T_s: w(x, y) \mapsto w(x + s, y)`,

    which generate a group of ``4 k n`` grid maps (1,024 at ``n = 64``). Element ``g`` here is
    :math:`(g w)(x, y) = (-1)^m\,w(\epsilon x + s, (-1)^r y + m h)`, :math:`\epsilon = (-1)^{m + r}`, with
    ``s = x_shift[g]`` (cells), ``m = half_period[g]`` (0 ... 2k - 1) and ``r = rotate[g]``.
    A distribution of fields invariant under the dynamics' symmetries (the benchmark's: isotropic zero-mean
    Gaussian fields evolved by the solver) is invariant under these maps: training data may be augmented with
    them and a denoiser averaged over them (:class:`geoinv.priors.SymmetrizedPrior`).

    Parameters
    ----------
    n : int
        Grid size; ``n`` must be divisible by ``2 k`` (the half period is a whole number of cells).
    x_shift, half_period, rotate : sequence or Tensor of int, shape (G,)
        The elements, one entry each (``rotate`` 0 or 1).
    k : int
        Forcing wavenumber.

    Returns
    -------
    perms : Tensor, shape (G, n * n), int64
        ``(g w)[j] = sign * w[perms[g, j]]`` on fields flattened row-major (rows = y).
    signs : Tensor, shape (G,), float64
        :math:`(-1)^m`.
    """
    if n % (2 * k):
        raise ValueError(f"n = {n} must be divisible by 2 k = {2 * k} for the half-period shift to be on the grid")
    s, m, r = (torch.as_tensor(v, dtype=torch.int64).reshape(-1) for v in (x_shift, half_period, rotate))
    if not s.shape == m.shape == r.shape:
        raise ValueError(f"x_shift, half_period and rotate must have one entry per element, got lengths "
                         f"{s.numel()}, {m.numel()}, {r.numel()}")
    h = n // (2 * k)
    i = torch.arange(n)
    iy, ix = i[None, :, None], i[None, None, :]
    flip = 1 - 2 * ((m + r) % 2)[:, None, None]                 # the x index is mirrored by S^m (m odd) and by R
    ry = 1 - 2 * (r % 2)[:, None, None]                         # R mirrors y before S^m shifts it
    my = (ry * iy + (m * h)[:, None, None]) % n
    mx = (flip * ix + s[:, None, None]) % n
    perms = (my * n + mx).reshape(-1, n * n)
    return perms, (1 - 2 * (m % 2)).double()


def kolmogorov_symmetries(n: int, *, k: int = 4, x_shifts=(0,), half_periods=(0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """The elements of :func:`kolmogorov_symmetry_maps` for every ``s`` in ``x_shifts``, ``m`` in
    ``half_periods`` and ``r`` in (0, 1): ``(perms (G, n * n), signs (G,))``, ``G = 2 len(x_shifts) len(half_periods)``,
    the identity first with the defaults. ``x_shifts=range(n), half_periods=range(2 * k)`` is the whole group."""
    s, m, r = torch.meshgrid(torch.as_tensor(list(x_shifts)), torch.as_tensor(list(half_periods)),
                             torch.arange(2), indexing="ij")
    return kolmogorov_symmetry_maps(n, s.reshape(-1), m.reshape(-1), r.reshape(-1), k=k)


def taylor_green(n: int, t: float = 0.0, *, nu: float = 1 / 200, k: int = 1, dtype=torch.float64,
                 device=None) -> torch.Tensor:
    r"""Exact Taylor-Green vortex vorticity :math:`2k\cos(kx)\cos(ky)\,e^{-2\nu k^2 t}`, shape (n, n).

    An exact solution of the unforced equations (the advection term vanishes identically
    because :math:`w = 2k^2\psi`).
    """
    g = 2 * math.pi * torch.arange(n, dtype=dtype, device=device) / n
    return 2 * k * torch.cos(k * g)[None, :] * torch.cos(k * g)[:, None] * math.exp(-2 * nu * k * k * t)


def _block_sizes(b: int, block: int) -> list[int]:
    """``b`` members cut into blocks of ``block``, a trailing single member joined to the block before it (a batch of
    one takes another FFT path than a batch of two or more, which changes float32 round-off)."""
    sizes = [block] * (b // block) + ([b % block] if b % block else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes or [b]


class NavierStokes2D:
    r"""Batched pseudo-spectral solver of 2-D Navier-Stokes in vorticity form on :math:`[0, 2\pi]^2`.

    Parameters
    ----------
    resolution : int
        Grid size ``N`` (``N x N``; even).
    reynolds : float
        :math:`Re`; viscosity :math:`\nu = 1/Re` (default 200, InverseBench).
    forcing : {"kolmogorov", None} or Tensor, shape (N, N)
        ``"kolmogorov"`` is :math:`-4\cos(4y)`; ``None`` gives the unforced equations
        (Taylor-Green tests).
    cfl : float
        Safety factor of the adaptive step, relative to the physical grid spacing
        ``h = 2 pi / N``. Heun is only conditionally stable for advection, so it must stay
        well below 1: against a ``cfl = 0.05`` reference the relative error of ``w(T=1)``
        on the data set's fields is 0.4 % at 0.2, 1.0 % at 0.3 (default, about 130 steps
        per time unit), 4.6 % at 0.5. (InverseBench's ``0.5 * (1/N) / max|u|`` is
        ``cfl = 0.5 / (2 pi) = 0.08`` here.)
    dt_max : float
        Largest step (bounds the step when the flow is nearly at rest).
    dtype : torch.dtype
        float32 (default, the benchmark's) or float64. Inputs are cast to it.
    max_steps : int
        Raise :class:`~geoinv.errors.NonFiniteError` after this many steps (an input far
        outside the data range makes the CFL step collapse; data fields need about 130).
    block : int, optional
        Members integrated together (a batch is cut into blocks of this size, a trailing
        single member joined to the block before it). Default ``max(2, 2**17 // N**2)``
        (32 at 64 x 64, 8 at 128 x 128), so that a block's FFT work stays in the CPU's cache:
        on 2 cores a 128 x 128 ensemble runs 2-3x faster in blocks of 8 than in one call.
        Results do not depend on it (members are independent; checked to the bit on this
        machine for blocks of two or more members). On a GPU pass a large value.

    Notes
    -----
    The solver is stateless apart from spectral constants, which are rebuilt per
    ``(device, dtype)`` on first use, so one instance serves CPU and GPU inputs alike.
    Memory: a block of ``B`` fields needs about ``12 B N^2`` numbers.

    Examples
    --------
    >>> ns = NavierStokes2D(64, forcing=None, dtype=torch.float64)
    >>> w0 = taylor_green(64)[None]
    >>> w1 = ns.solve(w0, 1.0)
    >>> bool(torch.allclose(w1, taylor_green(64, 1.0)[None], atol=1e-9))
    True
    """

    def __init__(self, resolution: int = 64, *, reynolds: float = 200.0, forcing: Any = "kolmogorov",
                 cfl: float = 0.3, dt_max: float = 0.05, dtype: torch.dtype = torch.float32,
                 max_steps: int = 5000, block: int | None = None):
        if resolution < 4 or resolution % 2:
            raise ValueError(f"resolution must be an even integer >= 4, got {resolution}")
        if not reynolds > 0 or not cfl > 0 or not dt_max > 0:
            raise ValueError("reynolds, cfl and dt_max must be positive")
        if block is not None and int(block) < 1:
            raise ValueError(f"block must be a positive number of members, got {block}")
        self.block = int(block) if block is not None else max(2, 2**17 // resolution**2)
        self.n = int(resolution)
        self.reynolds = float(reynolds)
        self.nu = 1.0 / self.reynolds
        self.cfl = float(cfl)
        self.dt_max = float(dt_max)
        self.dtype = dtype
        self.max_steps = int(max_steps)
        if isinstance(forcing, str):
            if forcing != "kolmogorov":
                raise ValueError(f"forcing must be 'kolmogorov', None or a tensor, got {forcing!r}")
            self.forcing = kolmogorov_forcing(self.n)
        elif forcing is None:
            self.forcing = None
        else:
            f = torch.as_tensor(forcing, dtype=torch.float64)
            if f.shape != (self.n, self.n):
                raise ShapeError(f"forcing must have shape ({self.n}, {self.n}), got {tuple(f.shape)}")
            self.forcing = f
        self._consts: dict = {}

    def at_resolution(self, m: int) -> "NavierStokes2D":
        """The same equations (viscosity, step rule, forcing resampled by :func:`spectral_resample`) on an ``m x m``
        grid."""
        f = None if self.forcing is None else spectral_resample(self.forcing[None], m)[0]
        return NavierStokes2D(m, reynolds=self.reynolds, forcing=f, cfl=self.cfl, dt_max=self.dt_max, dtype=self.dtype,
                              max_steps=self.max_steps)   # block: the default for m

    @property
    def h(self) -> float:
        """Grid spacing ``2 pi / N``."""
        return 2 * math.pi / self.n

    def __repr__(self) -> str:
        return (f"NavierStokes2D(resolution={self.n}, reynolds={self.reynolds:g}, "
                f"forcing={'none' if self.forcing is None else 'given'}, dtype={self.dtype})")

    def _c(self, device):
        key = (str(device), self.dtype)
        if key not in self._consts:
            n, dt = self.n, self.dtype
            ky = torch.fft.fftfreq(n, 1.0 / n, dtype=dt, device=device)[:, None].expand(n, n // 2 + 1)
            kx = torch.fft.rfftfreq(n, 1.0 / n, dtype=dt, device=device)[None, :].expand(n, n // 2 + 1)
            lap = kx**2 + ky**2                                   # -Laplacian symbol |k|^2
            inv_lap = torch.where(lap > 0, 1.0 / lap.clamp_min(1e-30), torch.zeros_like(lap))
            kmax = n // 3                                         # 2/3 rule
            dealias = ((kx.abs() <= kmax) & (ky.abs() <= kmax)).to(dt)
            ct = torch.complex64 if dt == torch.float32 else torch.complex128
            # multipliers on the de-aliased spectrum: u = d_y psi, v = -d_x psi, w_x, w_y
            mult = torch.stack([1j * ky * inv_lap, -1j * kx * inv_lap, 1j * kx, 1j * ky]) * dealias
            f_hat = None
            if self.forcing is not None:
                f_hat = torch.fft.rfft2(self.forcing.to(device=device, dtype=dt))
            self._consts[key] = {"kx": kx.contiguous(), "ky": ky.contiguous(), "lap": lap.contiguous(),
                                 "inv_lap": inv_lap, "dealias": dealias.to(ct), "mult": mult.to(ct).contiguous(),
                                 "f_hat": f_hat}
        return self._consts[key]

    # -- pieces ------------------------------------------------------------------------------------
    def velocity(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u, v)`` in physical space from the vorticity spectrum ``w_hat`` (B, N, N//2+1)."""
        c = self._c(w_hat.device)
        psi = w_hat * c["inv_lap"]
        u = torch.fft.irfft2(1j * c["ky"] * psi, s=(self.n, self.n))
        v = torch.fft.irfft2(-1j * c["kx"] * psi, s=(self.n, self.n))
        return u, v

    def _advection(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectrum of ``-u . grad w`` (2/3 de-aliased) and ``max |u|`` per batch member."""
        c = self._c(w_hat.device)
        f = torch.fft.irfft2(w_hat.unsqueeze(1) * c["mult"], s=(self.n, self.n))   # (B, 4, N, N)
        u, v, wx, wy = f.unbind(1)
        nl = torch.fft.rfft2(torch.addcmul(u * wx, v, wy).neg_()) * c["dealias"]
        speed = torch.addcmul(u * u, v, v).flatten(1).amax(1).sqrt()
        return nl, speed

    def step_size(self, speed: torch.Tensor) -> torch.Tensor:
        """Adaptive step per member: ``min(cfl h / max|u|, cfl h^2 / nu, dt_max)``, shape (B,)."""
        h = self.h
        dt = self.cfl * h / speed.clamp_min(1e-12)
        return dt.clamp(max=min(self.cfl * h * h / self.nu, self.dt_max))

    def departure_points(self, w0: torch.Tensor, points: torch.Tensor, t_final: float = 1.0, *,
                         substeps: int = 40) -> torch.Tensor:
        r"""Where the fluid parcels found at ``points`` at ``t_final`` were at ``t = 0``, in the flow of ``w0``.

        The vorticity is solved forward and stored at ``substeps`` equal intervals; the parcels are then traced
        back with the midpoint rule, the velocity interpolated bilinearly on the periodic grid (and linearly
        in time between stored fields).

        Parameters
        ----------
        w0 : Tensor, shape (N, N)
            Initial vorticity (physical units).
        points : Tensor, shape (P, 2)
            ``(y, x)`` coordinates on :math:`[0, 2\pi)^2` (row ``i`` is ``y = i h``).
        t_final : float
        substeps : int

        Returns
        -------
        Tensor, shape (P, 2), float64
            The departure points, wrapped to :math:`[0, 2\pi)^2`.
        """
        if w0.shape != (self.n, self.n):
            raise ShapeError(f"w0 must have shape ({self.n}, {self.n}), got {tuple(w0.shape)}")
        if points.dim() != 2 or points.shape[1] != 2:
            raise ShapeError(f"points must have shape (P, 2) of (y, x) coordinates, got {tuple(points.shape)}")
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        length, dt = 2 * math.pi, float(t_final) / substeps
        ws = [w0.detach()]
        for _ in range(substeps):
            ws.append(self.solve(ws[-1], dt))
        vel = []
        for w in ws:   # (v, u): the velocity along rows (y) and along columns (x)
            u, v = self.velocity(torch.fft.rfft2(w.to(torch.float64))[None])
            vel.append(torch.stack([v[0], u[0]]))

        def at(field, p):   # bilinear on the periodic grid: field (2, N, N), p (P, 2) -> (P, 2)
            g = p / self.h
            i0 = torch.floor(g)
            t = g - i0
            a, b = i0.long().remainder(self.n).unbind(1)
            a1, b1 = (a + 1) % self.n, (b + 1) % self.n
            ty, tx = t[:, 0], t[:, 1]
            return ((field[:, a, b] * (1 - ty) * (1 - tx) + field[:, a1, b] * ty * (1 - tx)
                     + field[:, a, b1] * (1 - ty) * tx + field[:, a1, b1] * ty * tx)).T

        p = points.detach().to(torch.float64).remainder(length)
        for s in range(substeps, 0, -1):
            mid = p - 0.5 * dt * at(vel[s], p)
            p = (p - dt * at(0.5 * (vel[s] + vel[s - 1]), mid)).remainder(length)
        return p

    # -- time stepping ---------------------------------------------------------------------------
    def solve(self, w0: torch.Tensor, t_final: float = 1.0, *, dt: float | None = None,
              return_steps: bool = False):
        r"""Integrate the vorticity from ``t = 0`` to ``t_final``.

        Parameters
        ----------
        w0 : Tensor, shape (B, N, N) or (N, N)
            Initial vorticity (physical units).
        t_final : float
        dt : float, optional
            Fixed step (``t_final / dt`` rounded up to whole steps of equal length);
            default adaptive (CFL) per member. With autograd the adaptive step sizes are
            computed from detached velocities, i.e. the gradient is that of the discrete
            scheme with its step sequence held fixed.
        return_steps : bool
            Also return the number of steps taken per member, shape (B,).

        Returns
        -------
        Tensor, shape of ``w0``, dtype of the solver
            ``w(t_final)``.

        Raises
        ------
        NonFiniteError
            When the solution blows up (NaN/inf).
        """
        squeeze = w0.dim() == 2
        w = w0.unsqueeze(0) if squeeze else w0
        if w.dim() != 3 or tuple(w.shape[1:]) != (self.n, self.n):
            raise ShapeError(f"w0 must have shape (B, {self.n}, {self.n}) or ({self.n}, {self.n}), got {tuple(w0.shape)}")
        w = w.to(self.dtype)
        b = w.shape[0]
        c = self._c(w.device)
        w_hat = torch.fft.rfft2(w)
        if t_final <= 0:
            out = w
            steps = torch.zeros(b, dtype=torch.long)
        else:
            parts = [self._integrate(wh, float(t_final), dt, c) for wh in w_hat.split(_block_sizes(b, self.block))]
            w_hat = torch.cat([p[0] for p in parts])
            steps = torch.cat([p[1] for p in parts])
            out = torch.fft.irfft2(w_hat, s=(self.n, self.n))
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteError("Navier-Stokes solution is not finite (blow-up): reduce cfl or dt")
        out = out[0] if squeeze else out
        return (out, steps) if return_steps else out

    def _integrate(self, w_hat, t_final, dt_fixed, c):
        b = w_hat.shape[0]
        lap, f_hat, nu = c["lap"], c["f_hat"], self.nu
        rdt = torch.float64  # time bookkeeping in float64
        t = torch.zeros(b, dtype=rdt, device=w_hat.device)
        steps = torch.zeros(b, dtype=torch.long, device=w_hat.device)
        n_fixed = None
        if dt_fixed is not None:
            n_fixed = max(1, math.ceil(t_final / dt_fixed - 1e-9))
            dt_fixed = t_final / n_fixed
        k = 0
        while True:
            if n_fixed is not None and k >= n_fixed:
                break
            nl1, speed = self._advection(w_hat)
            if not bool(torch.isfinite(speed).all()):
                raise NonFiniteError(f"Navier-Stokes solution is not finite after {k} steps (blow-up or NaN input): "
                                     "reduce cfl or dt")
            if n_fixed is not None:
                h = torch.full((b,), dt_fixed, dtype=rdt, device=w_hat.device)
            else:
                remaining = t_final - t
                if bool((remaining <= 1e-12 * t_final).all()):
                    break
                h = torch.minimum(self.step_size(speed.detach()).to(rdt), remaining.clamp_min(0))
                h = torch.where(remaining <= 1e-12 * t_final, torch.zeros_like(h), h)
            hd = h.to(w_hat.real.dtype)[:, None, None]
            a_plus = 1 - 0.5 * hd * nu * lap                      # CN explicit half
            a_inv = 1 / (1 + 0.5 * hd * nu * lap)                 # CN implicit half
            rhs = a_plus * w_hat + hd * nl1
            if f_hat is not None:
                rhs = rhs + hd * f_hat
            w1 = rhs * a_inv                                      # predictor
            nl2, _ = self._advection(w1)
            w_hat = (rhs + 0.5 * hd * (nl2 - nl1)) * a_inv        # Heun corrector
            t = t + h
            steps = steps + (h > 0).long()
            k += 1
            if k > self.max_steps:
                raise NonFiniteError(f"Navier-Stokes step size collapsed: more than {self.max_steps} CFL steps "
                                     f"(max |u| = {float(speed.max()):.3g}); the input is far outside the data range")
        return w_hat, steps


class NavierStokesObservation(Operator):
    r"""Observe the vorticity at time ``T`` on a sub-sampled grid: the InverseBench fluid operator.

    ``A(x) = S(w(T))`` where ``w`` solves :class:`NavierStokes2D` from the initial vorticity
    ``w0 = scale * x`` and ``S`` keeps every ``stride``-th grid point in each direction.

    Parameters
    ----------
    resolution : int
        Grid size ``N`` of the unknown (64 by default; InverseBench uses 128).
    t_final : float
        Observation time ``T`` (1.0).
    stride : int
        Sub-sampling factor (2: a ``N/2 x N/2`` observation).
    noise_std : float
        Measurement noise std **in physical vorticity units** (0, 1 or 2 in the benchmark).
    scale : float
        Normalization: the unknown ``x`` is in normalized units ``x = w0 / scale``
        (InverseBench stores ``w / 10``), the output ``y`` is in physical units.
    differentiable : bool
        ``False`` (default): a black box, calling it on an input that requires grad raises
        :class:`~geoinv.errors.NotDifferentiableError` (derivative-free samplers such as
        EnKG only need ``operator(x)``). ``True``: autograd runs through the solver
        (for DPS); the adaptive steps are computed from detached velocities, so the
        gradient is that of the discrete scheme with its step sequence held fixed.
    solver : NavierStokes2D, optional
        Defaults to ``NavierStokes2D(resolution)`` (Re 200, Kolmogorov forcing, float32).

    Notes
    -----
    Input ``x`` has the canonical layout ``(B, N*N, 1)`` (row-major, rows = y, as
    :meth:`geoinv.GridSignal.point_values`), output ``y`` is ``(B, (N/stride)^2, 1)``
    in the input's dtype. The whole batch (an EnKG ensemble) is integrated in one
    vectorised call; each member has its own adaptive step sequence, so results do not
    depend on how a batch is split (see :class:`~geoinv.fluids.DaskOperator`).
    """

    linear = False

    def __init__(self, resolution: int = 64, *, t_final: float = 1.0, stride: int = 2, noise_std: float = 0.0,
                 scale: float = 10.0, differentiable: bool = False, solver: NavierStokes2D | None = None):
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if stride < 1 or resolution % stride:
            raise ValueError(f"stride must divide the resolution, got {stride} for {resolution}")
        self.solver = solver if solver is not None else NavierStokes2D(resolution)
        if self.solver.n != resolution:
            raise ShapeError(f"solver resolution {self.solver.n} != {resolution}")
        self.n = int(resolution)
        self.t_final = float(t_final)
        self.stride = int(stride)
        self.noise_std = float(noise_std)
        self.scale = float(scale)
        self.differentiable = bool(differentiable)

    @property
    def obs_shape(self) -> tuple[int, int]:
        """``(N / stride, N / stride)``."""
        return (self.n // self.stride, self.n // self.stride)

    def at_resolution(self, m: int) -> "NavierStokesObservation":
        """The same observation (time, stride, noise, scale) with its solver on an ``m x m`` grid.

        With ``r = N / m`` an integer it observes every ``r``-th of this operator's points:
        ``y.reshape(obs_shape)[::r, ::r]`` (a cheaper, less accurate surrogate for ``m < N``; see
        :func:`geoinv.fluids.assimilate`).
        """
        return NavierStokesObservation(m, t_final=self.t_final, stride=self.stride, noise_std=self.noise_std,
                                       scale=self.scale, differentiable=self.differentiable,
                                       solver=self.solver.at_resolution(m))

    def localization(self, radius: float, flow: torch.Tensor | None = None):
        """A :class:`~geoinv.samplers.Localization` for EnKG: the unknown's grid and the observed points on the torus.

        Parameters
        ----------
        radius : float
            Gaspari-Cohn length (at most ``pi / 2``).
        flow : Tensor, shape (N*N,) or (1, N*N, 1), optional
            A normalized estimate of ``x``. Given, each observation is placed at its **departure point**
            (:meth:`NavierStokes2D.departure_points` in the flow of ``scale * flow``) instead of where it is
            observed: after ``t_final`` an observed value depends mostly on the vorticity upstream, where its parcel
            started (Lagrangian localization).
        """
        from geoinv.samplers import Localization

        loc = Localization.torus_grid(self.n, self.stride, radius)
        if flow is None:
            return loc
        if flow.numel() != self.n * self.n:
            raise ShapeError(f"flow must hold {self.n * self.n} values (a normalized {self.n}x{self.n} field), got "
                             f"{tuple(flow.shape)}")
        dep = self.solver.departure_points(self.scale * flow.detach().reshape(self.n, self.n), loc.y_points,
                                           self.t_final)
        return Localization(loc.x_points, dep, radius, period=loc.period)

    def observe(self, w: torch.Tensor) -> torch.Tensor:
        """Sub-sample a physical field ``w`` (B, N, N) to the layout of ``y``: (B, M, 1)."""
        return w[:, :: self.stride, :: self.stride].reshape(w.shape[0], -1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = S(w(T))`` for ``x`` of shape (B, N*N, 1) in normalized units; ``y`` physical."""
        if x.dim() != 3 or x.shape[1:] != (self.n * self.n, 1):
            raise ShapeError(f"x must have shape (B, {self.n * self.n}, 1) (normalized vorticity w0 / {self.scale:g}), "
                             f"got {tuple(x.shape)}")
        w0 = self.scale * x.reshape(x.shape[0], self.n, self.n)
        if self.differentiable:
            wt = self.solver.solve(w0, self.t_final)
        else:
            with torch.no_grad():
                wt = self.solver.solve(w0, self.t_final)
        return self.observe(wt).to(x.dtype)

    def __repr__(self) -> str:
        return (f"NavierStokesObservation(resolution={self.n}, t_final={self.t_final:g}, stride={self.stride}, "
                f"noise_std={self.noise_std:g}, scale={self.scale:g}, differentiable={self.differentiable})")


class SpectralLift(Operator):
    """A forward model on an ``N x N`` periodic grid seen from a coarser ``m x m`` grid: ``x -> A(resample(x, N))``.

    The unknown is kept on the coarse grid (where a prior was trained) and interpolated spectrally
    (:func:`spectral_resample`: the modes ``|k| < m / 2``) before every call of the fine black box ``A``; e.g. the
    128 x 128 Navier-Stokes problem with the 64 x 64 prior. Only calls ``A``; no gradients are needed.

    Parameters
    ----------
    operator : Operator
        The fine black box, (B, N * N, 1) -> (B, M, 1), with an int grid size ``n`` (``N``); ``obs_shape`` and
        ``noise_std`` are passed through.
    m : int
        The coarse grid size, ``m <= N``.
    """

    def __init__(self, operator, m: int):
        big = getattr(operator, "n", None)
        if not isinstance(big, int) or not 2 <= int(m) <= big:
            raise ShapeError(f"SpectralLift needs an operator with an int grid size n >= m; got n={big!r}, m={m!r}")
        self.operator, self.n = operator, int(m)
        self.differentiable = bool(getattr(operator, "differentiable", True))   # a black box stays one

    @property
    def noise_std(self) -> float:
        return float(getattr(self.operator, "noise_std", 0.0) or 0.0)

    @property
    def obs_shape(self):
        return getattr(self.operator, "obs_shape", None)

    def lift(self, x: torch.Tensor) -> torch.Tensor:
        """Coarse fields (B, m * m, 1) -> fine fields (B, N * N, 1), same dtype."""
        if x.dim() != 3 or x.shape[1:] != (self.n * self.n, 1):
            raise ShapeError(f"x must have shape (B, {self.n * self.n}, 1), got {tuple(x.shape)}")
        big = self.operator.n
        return spectral_resample(x.reshape(-1, self.n, self.n), big).reshape(x.shape[0], big * big, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator(self.lift(x))

    def __repr__(self) -> str:
        return f"SpectralLift({self.operator!r}, m={self.n})"
