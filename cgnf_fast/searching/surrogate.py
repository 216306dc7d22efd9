"""A Gaussian-process surrogate and expected improvement, for a few hundred observations.

Exact GP regression (float64) with a Matern-5/2 kernel with one lengthscale per input feature
(ARD). The lengthscales, signal and noise variances are the maximum a posteriori values under
weak log-normal priors (lengthscale ~ 1 in standardised features), found by Adam on the exact
marginal likelihood and warm-started from the previous fit. Targets are standardised before
fitting. Small and dependency-free: a search asks it for a few hundred posteriors per query.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

__all__ = ["GaussianProcess", "expected_improvement"]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Matrices of a few hundred rows: one thread is faster, and far faster when another process
    holds a core (torch's pool then spins on every tiny op)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _matern52(a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(a / lengthscale, b / lengthscale).clamp_min(0.0)
    s = math.sqrt(5.0) * d
    return (1.0 + s + s * s / 3.0) * torch.exp(-s)


class GaussianProcess:
    """``fit(x [n, d], y [n])`` then ``posterior(x [m, d]) -> (mean [m], std [m])`` in y's units."""

    def __init__(self, dims: int, steps: int = 80, lr: float = 0.05) -> None:
        self.steps, self.lr = steps, lr
        self.log_ls = torch.zeros(dims, dtype=torch.float64)
        self.log_signal = torch.tensor(0.0, dtype=torch.float64)
        self.log_noise = torch.tensor(math.log(0.1), dtype=torch.float64)
        self._x = self._alpha = self._chol = None
        self._mu = 0.0
        self._sd = 1.0

    def _nll(self, x: torch.Tensor, y: torch.Tensor, log_ls, log_signal, log_noise) -> torch.Tensor:
        n = x.shape[0]
        k = torch.exp(2 * log_signal) * _matern52(x, x, torch.exp(log_ls))
        k = k + (torch.exp(2 * log_noise) + 1e-6) * torch.eye(n, dtype=x.dtype)
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(y[:, None], chol)
        nll = 0.5 * (y[:, None] * alpha).sum() + torch.log(torch.diagonal(chol)).sum()
        prior = (0.5 * (log_ls / 1.0) ** 2).sum() + 0.5 * (log_signal / 1.0) ** 2 \
            + 0.5 * ((log_noise - math.log(0.1)) / 1.0) ** 2
        return (nll + prior) / n

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> GaussianProcess:
        with _one_thread():
            return self._fit(x, y)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> GaussianProcess:
        x = x.to(torch.float64)
        y = y.to(torch.float64)
        self._mu = float(y.mean())
        self._sd = float(y.std()) if y.numel() > 1 and float(y.std()) > 0 else 1.0
        ys = (y - self._mu) / self._sd
        params = [p.clone().requires_grad_(True) for p in (self.log_ls, self.log_signal, self.log_noise)]
        opt = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.steps):
            opt.zero_grad()
            loss = self._nll(x, ys, *params)
            loss.backward()
            opt.step()
            with torch.no_grad():
                params[0].clamp_(-3.0, 4.0)
                params[2].clamp_(-7.0, 1.0)
        self.log_ls, self.log_signal, self.log_noise = (p.detach() for p in params)
        k = torch.exp(2 * self.log_signal) * _matern52(x, x, torch.exp(self.log_ls))
        k = k + (torch.exp(2 * self.log_noise) + 1e-6) * torch.eye(x.shape[0], dtype=x.dtype)
        self._chol = torch.linalg.cholesky(k)
        self._alpha = torch.cholesky_solve(ys[:, None], self._chol)
        self._x = x
        return self

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _one_thread():
            return self._posterior(x)

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(torch.float64)
        ks = torch.exp(2 * self.log_signal) * _matern52(x, self._x, torch.exp(self.log_ls))  # [m, n]
        mean = (ks @ self._alpha)[:, 0]
        v = torch.cholesky_solve(ks.T, self._chol)  # [n, m]
        var = (torch.exp(2 * self.log_signal) - (ks * v.T).sum(1)).clamp_min(1e-12)
        return mean * self._sd + self._mu, var.sqrt() * self._sd


def expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: float, xi: float = 0.0) -> torch.Tensor:
    """``E[max(f - best - xi, 0)]`` under ``N(mean, std^2)``."""
    z = (mean - best - xi) / std
    normal = torch.distributions.Normal(torch.zeros((), dtype=mean.dtype), torch.ones((), dtype=mean.dtype))
    return std * (z * normal.cdf(z) + torch.exp(normal.log_prob(z)))
