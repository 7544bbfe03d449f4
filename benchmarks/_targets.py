"""Targets with known densities for the learning-curve benchmark (issue 17).

Each target is a :class:`Target`: ``sample(rng, n)`` draws float32 rows with numpy and
``log_prob(x)`` is the exact log-density (float64 numpy), so the held-out
KL(p || q) = E_p[log p - log q] of a model q is estimated without bias from test
draws. ``log_prob`` is the floor of every held-out NLL: a perfect model reaches it.

- ``mixture(d)``: 8 Gaussians with random means and random full covariances;
- ``warped(d)``: a rotated Gaussian pushed through an autoregressive sine warp
  x_i = z_i + a sin(z_{i-1}) (unit-diagonal Jacobian, so log p is log N(z)), then rotated;
- ``funnel(d)``: Neal's funnel with v ~ N(0, 1.5^2), x_i | v ~ N(0, e^v), then rotated;
- ``moons``: genlearn's two moons with its exact density (a Gaussian-smeared arc).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from scipy.special import logsumexp

__all__ = ["Target", "mixture", "warped", "funnel", "moons", "TARGETS", "make_target"]


class Target(NamedTuple):
    name: str
    dim: int
    sample: Callable[[np.random.Generator, int], np.ndarray]
    log_prob: Callable[[np.ndarray], np.ndarray]


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def mixture(d: int, k: int = 8, seed: int = 0) -> Target:
    rng = np.random.default_rng(1000 + seed + d)
    means = rng.normal(size=(k, d)) * 2.0
    chols = []
    for _ in range(k):
        a = rng.normal(size=(d, d)) / np.sqrt(d)
        cov = 0.3 * (a @ a.T) + 0.1 * np.eye(d)
        chols.append(np.linalg.cholesky(cov))
    chols = np.stack(chols)
    logw = np.log(np.full(k, 1.0 / k))

    def sample(r, n):
        c = r.integers(0, k, size=n)
        eps = r.normal(size=(n, d))
        return (means[c] + np.einsum("nij,nj->ni", chols[c], eps)).astype(np.float32)

    def log_prob(x):
        x = np.asarray(x, np.float64)
        out = []
        for j in range(k):
            sol = np.linalg.solve(chols[j], (x - means[j]).T).T
            logdet = np.sum(np.log(np.diag(chols[j])))
            out.append(-0.5 * np.sum(sol**2, 1) - logdet - 0.5 * d * np.log(2 * np.pi))
        return logsumexp(np.stack(out, 1) + logw, axis=1)

    return Target(f"mixture{d}", d, sample, log_prob)


def warped(d: int, amplitude: float = 1.0, seed: int = 0) -> Target:
    rng = np.random.default_rng(2000 + seed + d)
    scales = np.exp(rng.uniform(-1.0, 1.0, size=d))
    rot = _rotation(rng, d)

    def warp(z):
        x = z.copy()
        x[:, 1:] = z[:, 1:] + amplitude * np.sin(z[:, :-1])
        return x

    def unwarp(x):  # x_i = z_i + a sin(z_{i-1}): solve forward in i
        z = np.empty_like(x)
        z[:, 0] = x[:, 0]
        for i in range(1, x.shape[1]):
            z[:, i] = x[:, i] - amplitude * np.sin(z[:, i - 1])
        return z

    def sample(r, n):
        z = r.normal(size=(n, d)) * scales
        return (warp(z) @ rot.T).astype(np.float32)

    def log_prob(x):
        z = unwarp(np.asarray(x, np.float64) @ rot)  # rot orthogonal: |det| = 1; the warp too
        return np.sum(-0.5 * (z / scales) ** 2 - np.log(scales) - 0.5 * np.log(2 * np.pi), 1)

    return Target(f"warped{d}", d, sample, log_prob)


def funnel(d: int, sigma_v: float = 1.5, seed: int = 0) -> Target:
    rng = np.random.default_rng(3000 + seed + d)
    rot = _rotation(rng, d)

    def sample(r, n):
        v = r.normal(size=(n, 1)) * sigma_v
        rest = r.normal(size=(n, d - 1)) * np.exp(v / 2)
        return (np.concatenate([v, rest], 1) @ rot.T).astype(np.float32)

    def log_prob(x):
        y = np.asarray(x, np.float64) @ rot
        v, rest = y[:, 0], y[:, 1:]
        lv = -0.5 * (v / sigma_v) ** 2 - np.log(sigma_v) - 0.5 * np.log(2 * np.pi)
        lr = np.sum(-0.5 * rest**2 * np.exp(-v)[:, None], 1) - 0.5 * (d - 1) * (v + np.log(2 * np.pi))
        return lv + lr

    return Target(f"funnel{d}", d, sample, log_prob)


def moons() -> Target:
    from genlearn.data import two_moons, two_moons_log_prob

    def sample(r, n):
        import jax
        return np.asarray(two_moons(jax.random.PRNGKey(int(r.integers(0, 2**31 - 1))), n), np.float32)

    return Target("moons", 2, sample, lambda x: np.asarray(two_moons_log_prob(np.asarray(x)), np.float64))


TARGETS = {
    "moons": moons,
    "mixture2": lambda: mixture(2),
    "mixture8": lambda: mixture(8),
    "warped16": lambda: warped(16),
    "funnel8": lambda: funnel(8),
    "mixture64": lambda: mixture(64),
    "warped64": lambda: warped(64),
}


def make_target(name: str) -> Target:
    return TARGETS[name]()
