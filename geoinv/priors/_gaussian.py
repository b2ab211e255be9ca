"""Gaussian prior: fitted mean plus a shrunk low-rank-plus-isotropic covariance, with closed forms."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from geoinv.errors import MaskError, NonFiniteError, ShapeError
from geoinv.priors._base import Prior, as_sigma

__all__ = ["GaussianPrior"]

log = logging.getLogger(__name__)

_SHRINK_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)


def _eig(x: torch.Tensor) -> tuple:
    """Mean, singular values, right singular vectors and total variance of (K, N, C) data."""
    k = x.shape[0]
    mu = x.mean(0)
    xc = (x - mu).reshape(k, -1) / math.sqrt(k - 1)
    _, s, vt = torch.linalg.svd(xc, full_matrices=False)
    return mu, s, vt, float((xc**2).sum())


class GaussianPrior(Prior):
    r"""Gaussian prior :math:`x \sim N(\mu, \Sigma)` on a fixed domain, with exact formulas.

    The covariance is stored in eigen form
    :math:`\Sigma = V \operatorname{diag}(\lambda) V^T + \delta (I - V V^T)` with ``V``
    of shape (D, r), orthonormal columns, ``D = N * C``; ``r = D`` gives a full
    covariance (``delta`` unused). Everything is computed in float64.

    The denoiser is exact, :math:`D(x;\sigma) = \mu + \Sigma(\Sigma + \sigma^2 I)^{-1}(x - \mu)`;
    :meth:`posterior` is the exact posterior under a masked observation with Gaussian
    noise (the Wiener filter; "optimal interpolation" / simple kriging in geostatistics).

    Parameters
    ----------
    mean : Tensor, shape (N, C)
    cov : Tensor, shape (D, D), optional
        Dense covariance (symmetric PSD), eigendecomposed here.
    eigvecs : Tensor, shape (D, r), optional
    eigvals : Tensor, shape (r,), optional
    floor : float
        ``delta``: variance in the directions orthogonal to ``eigvecs``.
    fingerprint : str, optional
        Domain fingerprint; ``None`` accepts any domain with ``N`` points.
    """

    def __init__(self, mean: Any, cov: Any = None, *, eigvecs: Any = None, eigvals: Any = None,
                 floor: float = 0.0, fingerprint: str | None = None, name: str = "gaussian"):
        mu = torch.as_tensor(mean, dtype=torch.float64).clone()
        if mu.dim() == 1:
            mu = mu.unsqueeze(-1)
        if mu.dim() != 2:
            raise ShapeError(f"mean must have shape (N, C), got {tuple(mu.shape)}")
        d = mu.numel()
        if cov is not None:
            c = torch.as_tensor(cov, dtype=torch.float64)
            if c.shape != (d, d):
                raise ShapeError(f"cov must have shape (D, D) = ({d}, {d}) for a mean of shape {tuple(mu.shape)}")
            if not bool(torch.isfinite(c).all()):
                raise NonFiniteError("covariance contains NaN or inf")
            lam, vec = torch.linalg.eigh(0.5 * (c + c.T))
            eigvals, eigvecs, floor = lam.flip(0).clamp_min(0), vec.flip(1), 0.0
        if eigvecs is None or eigvals is None:
            raise ShapeError("give either cov or (eigvecs, eigvals)")
        v = torch.as_tensor(eigvecs, dtype=torch.float64).clone()
        lam = torch.as_tensor(eigvals, dtype=torch.float64).clone()
        if v.dim() != 2 or v.shape[0] != d or lam.shape != (v.shape[1],):
            raise ShapeError(f"eigvecs must be (D, r) with D = {d} and eigvals (r,), got {tuple(v.shape)}, {tuple(lam.shape)}")
        if v.shape[1] < d and floor <= 0:
            raise ValueError("a low-rank covariance needs floor > 0 (variance outside the span of eigvecs)")
        if v.shape[1] < d and bool((lam < float(floor) * (1 - 1e-6)).any()):
            raise ValueError(f"a low-rank covariance needs eigvals >= floor (probabilistic PCA: the floor is the "
                             f"variance of the discarded, smaller directions); got min eigval {float(lam.min()):.4g} "
                             f"< floor {float(floor):.4g}: lower the floor or keep fewer directions")
        self.mean, self.eigvecs, self.eigvals, self.floor = mu, v, lam, float(floor) if v.shape[1] < d else 0.0
        self.event_shape = tuple(mu.shape)
        self.fingerprint = fingerprint
        self.name = name

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: Any, *, rank: int | None = None, shrinkage: float | str = "auto",
            fingerprint: str | None = None, name: str = "gaussian", seed: int = 0) -> "GaussianPrior":
        """Fit mean and covariance to training signals.

        Parameters
        ----------
        train : batched signal container or Tensor, shape (K, N, C)
        rank : int, optional
            Number of principal components kept (default ``min(K - 1, D)``); the
            remaining variance becomes the isotropic floor (probabilistic PCA).
        shrinkage : float or "auto"
            Eigenvalues are shrunk towards their mean, ``(1 - a) lam + a mean(lam)``
            (Ledoit-Wolf form). ``"auto"`` picks ``a`` from a small grid by the
            Gaussian log-likelihood of a held-out 10 % of ``train`` (never test data),
            then refits on all of ``train``.
        """
        if hasattr(train, "point_values"):
            fingerprint = fingerprint or train.fingerprint
            x = train.point_values()
        else:
            x = torch.as_tensor(train)
        x = x.detach().double()
        if x.dim() != 3 or x.shape[0] < 2:
            raise ShapeError(f"need at least 2 training signals of shape (K, N, C), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("training signals contain NaN or inf")
        if shrinkage == "auto":
            g = torch.Generator().manual_seed(seed)
            perm = torch.randperm(x.shape[0], generator=g)
            n_val = max(1, x.shape[0] // 10)
            val, eig = x[perm[:n_val]], _eig(x[perm[n_val:]])
            scores = {a: cls._assemble(eig, rank, a).log_prob(val).mean().item() for a in _SHRINK_GRID}
            shrinkage = max(scores, key=scores.get)
            log.info("GaussianPrior.fit: shrinkage %.0e chosen by held-out log-likelihood", shrinkage)
        prior = cls._assemble(_eig(x), rank, float(shrinkage))
        prior.fingerprint, prior.name, prior.shrinkage = fingerprint, name, float(shrinkage)
        return prior

    @classmethod
    def _assemble(cls, eig: tuple, rank: int | None, a: float) -> "GaussianPrior":
        """Shrunk (probabilistic-PCA when ``rank < D``) prior from :func:`_eig` output."""
        mu, s, vt, total = eig
        d = vt.shape[1]
        r = min(rank or d, s.numel(), d)
        lam = s[:r] ** 2
        m = total / d
        if r < d:
            floor = max((total - float(lam.sum())) / (d - r), 1e-12 * m)
            floor = (1 - a) * floor + a * m
        else:
            floor = 0.0
        # a kept direction has at least the floor's variance (numerically null directions of a
        # rank-deficient sample would otherwise end a rounding error below it)
        lam = ((1 - a) * lam + a * m).clamp_min(max(floor, 1e-12 * m))
        return cls(mu, eigvecs=vt[:r].T, eigvals=lam, floor=floor)

    # -- basic quantities -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """``D = N * C``."""
        return self.mean.numel()

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances, shape (N, C)."""
        v2 = self.eigvecs**2
        var = v2 @ self.eigvals + self.floor * (1 - v2.sum(1))
        return var.reshape(self.event_shape)

    def covariance(self) -> torch.Tensor:
        """Dense covariance, shape (D, D) (for small domains and tests)."""
        v = self.eigvecs
        c = (v * self.eigvals) @ v.T
        if self.floor:
            c = c + self.floor * (torch.eye(self.dim, dtype=torch.float64) - v @ v.T)
        return c

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        self.check_x(x)
        return (x.double() - self.mean.to(x.device)).reshape(x.shape[0], -1)

    def _apply_fn(self, u: torch.Tensor, f_lam: torch.Tensor, f_floor: float | torch.Tensor) -> torch.Tensor:
        """``V diag(f_lam) V^T u + f_floor (I - V V^T) u`` for u (B, D); f_* may be (B, r)/(B, 1)."""
        v = self.eigvecs.to(u.device)
        z = u @ v
        out = (z * f_lam) @ v.T
        if self.eigvecs.shape[1] < self.dim:
            out = out + f_floor * (u - z @ v.T)
        return out

    # -- Prior interface ----------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Exact ``E[x0 | x0 + sigma eps = x]``, shape (B, N, C)."""
        s2 = as_sigma(sigma, x.double()).reshape(-1, 1) ** 2
        lam = self.eigvals.to(x.device)
        u = self._flat(x)
        out = self._apply_fn(u, lam / (lam + s2), self.floor / (self.floor + s2))
        return (out.reshape(x.shape) + self.mean.to(x.device)).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws, shape (n, N, C), float64."""
        v = self.eigvecs
        z1 = torch.randn(n, v.shape[1], generator=generator, dtype=torch.float64)
        x = (z1 * self.eigvals.sqrt()) @ v.T
        if v.shape[1] < self.dim:
            z2 = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
            x = x + math.sqrt(self.floor) * (z2 - (z2 @ v) @ v.T)
        return x.reshape(n, *self.event_shape) + self.mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of ``x`` (B, N, C), shape (B,)."""
        u = self._flat(x)
        z = u @ self.eigvecs
        quad = (z**2 / self.eigvals).sum(1)
        logdet = self.eigvals.log().sum()
        r = self.eigvecs.shape[1]
        if r < self.dim:
            res = (u**2).sum(1) - (z**2).sum(1)
            quad = quad + res / self.floor
            logdet = logdet + (self.dim - r) * math.log(self.floor)
        return -0.5 * (quad + logdet + self.dim * math.log(2 * math.pi))

    # -- exact posterior ------------------------------------------------------------------------
    def posterior(self, y: torch.Tensor, mask: torch.Tensor, noise_std: float | None,
                  n_samples: int = 0, generator: torch.Generator | None = None):
        """Exact posterior under ``y = x + noise`` at the points where ``mask`` is True.

        Parameters
        ----------
        y : Tensor, shape (B, N, C)
            Values at unobserved points are ignored (may be NaN).
        mask : bool Tensor, shape (N,) or (B, N)
        noise_std : float or None
            Noise standard deviation; ``None``/0 conditions on the observed values
            exactly (up to a jitter of ``1e-5`` prior standard deviations).
        n_samples : int
            Posterior draws per signal, by Matheron's rule (prior draw plus the
            posterior-mean correction of its residual).

        Returns
        -------
        mean : Tensor, shape (B, N, C)
        std : Tensor, shape (B, N, C)
        samples : Tensor, shape (B, n_samples, N, C) or None
        """
        if mask.dtype != torch.bool:
            raise MaskError("mask must be boolean (True = observed)")
        y = torch.as_tensor(y).double()
        self.check_x(y)
        b, n, c = y.shape
        masks = mask.expand(b, n) if mask.dim() == 1 else mask
        s2 = max(float(noise_std or 0.0) ** 2, 1e-10 * float(self.eigvals.mean()))
        mu, var = self.mean.reshape(-1), self.variance.reshape(-1)
        means, stds, samples = [], [], []
        for i in range(b):
            o = masks[i].cpu().unsqueeze(-1).expand(n, c).reshape(-1).nonzero()[:, 0]
            gain, reduction = self._kriging(o, s2)
            yo = y[i].reshape(-1)[o]
            means.append((mu + gain((yo - mu[o])[None])[0]).reshape(n, c))
            stds.append((var - reduction()).clamp_min(0).sqrt().reshape(n, c))
            if n_samples:  # Matheron's rule: prior draw + kriging of its residual
                xp = self.sample(n_samples, generator).reshape(n_samples, -1)
                e = math.sqrt(s2) * torch.randn(n_samples, o.numel(), generator=generator, dtype=torch.float64)
                samples.append((xp + gain(yo - xp[:, o] - e)).reshape(n_samples, n, c))
        return torch.stack(means), torch.stack(stds), (torch.stack(samples) if n_samples else None)

    def _kriging(self, o: torch.Tensor, s2: float):
        """Kriging gain ``u -> Sigma[:, o] K^{-1} u`` with ``K = Sigma[o, o] + s2 I``, and the
        variance reduction ``diag(Sigma[:, o] K^{-1} Sigma[o, :])``.

        Works in covariance form, so it stays well conditioned for any ``s2 > 0`` even when
        ``Sigma`` is (nearly) singular. Full rank: dense ``m x m`` Cholesky. Low rank:
        Woodbury with an ``r x r`` system, ``O(D r^2)``, never forming a ``D x m`` matrix.
        """
        v, lam, delta = self.eigvecs, self.eigvals, self.floor
        if v.shape[1] == self.dim:
            if getattr(self, "_cov", None) is None:
                self._cov = self.covariance()
            c_o = self._cov[:, o]
            chol = torch.linalg.cholesky(c_o[o] + s2 * torch.eye(o.numel(), dtype=torch.float64))
            return (lambda u: (c_o @ torch.cholesky_solve(u.T, chol)).T), \
                (lambda: (c_o.T * torch.cholesky_solve(c_o.T, chol)).sum(0))
        lp = (lam - delta).clamp_min(0)
        dp = delta + s2
        vo = v[o]
        g = vo.T @ vo
        r = lam.numel()
        # K^{-1} = (I - vo S vo^T) / dp with S = (dp I + diag(lp) g)^{-1} diag(lp)
        S = torch.linalg.solve(dp * torch.eye(r, dtype=torch.float64) + lp[:, None] * g, torch.diag(lp))

        def gain(u):
            a = (u - (u @ vo) @ S.T @ vo.T) / dp
            out = ((a @ vo) * lp) @ v.T
            out[:, o] += delta * a
            return out

        def reduction():
            m1 = lp[:, None] * (g - g @ S @ g) * lp[None, :]
            red = ((v @ m1) * v).sum(1)
            cross = (vo * lp * (vo - vo @ S.T @ g)).sum(1)
            own = 1 - ((vo @ S) * vo).sum(1)
            red[o] += 2 * delta * cross + delta**2 * own
            return red / dp

        return gain, reduction

    def __repr__(self) -> str:
        return (f"GaussianPrior(name={self.name!r}, event_shape={self.event_shape}, rank={self.eigvecs.shape[1]}, "
                f"floor={self.floor:.3g})")
