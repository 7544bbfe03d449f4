r"""Estimating ``Z`` and the likelihood of an energy model.

Annealed importance sampling (Neal 2001). With a tractable normalised base
``q`` (a Gaussian fitted to data), the target ``f = exp(-V)`` and the geometric
path ``pi_t(x) ∝ q(x)^{1 - beta_t} f(x)^{beta_t}``,
``0 = beta_0 < beta_1 < ... < beta_T = 1``: draw ``x_0 ~ q``; for
``t = 1..T`` add ``(beta_t - beta_{t-1}) (log f(x) - log q(x))`` to the log
weight and move ``x`` by MCMC transitions leaving ``pi_t`` invariant (MALA
or HMC, blackjax kernels). Then ``E[w] = Z`` and

.. math::

    \widehat{\log Z} = \log \frac{1}{N} \sum_i w_i, \qquad
    \mathrm{se}(\widehat{\log Z}) \approx \frac{\mathrm{sd}(w)}{\sqrt{N}\, \bar w}
    \ \text{(delta method)}.

The ``beta`` grid is geometric by default (``beta_t`` log-spaced from
``beta_min`` to 1): for a target much sharper than the base, the width of
``pi_t`` shrinks geometrically in ``beta / sigma^2``, so equal steps in
``log beta`` are equal steps in difficulty. The MCMC step size follows the
annealing: it is adapted between temperatures towards a target acceptance
rate from the mean acceptance over all chains (a stochastic-approximation
heuristic; the bias this introduces is negligible next to the Monte-Carlo error).

`ais_log_z_from` runs the same path from any normalised base ``q`` given by
``log q`` and a sampler (e.g. the Gaussian mixture of a residual energy
``V = -log q + E``: the path is then ``q exp(-beta E)`` and the weights only
carry ``E``); `ais_log_z` is it with a Gaussian base.

``log_likelihood`` returns ``log p(x) = -V(x) - log Z``; `grid_log_z` is the
2-D quadrature reference (midpoint rule on a fine grid, ``logsumexp`` for
stability).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from genlearn.energy.models import EnergyModel
from genlearn.energy.samplers import _positive, _positive_int

__all__ = ["AISResult", "LogLikelihood", "gaussian_base", "ais_log_z", "ais_log_z_from", "log_likelihood", "grid_log_z",
           "beta_schedule"]


class AISResult(NamedTuple):
    """``log_z`` and its standard error, the ``(N,)`` log weights, their effective
    sample size ``(sum w)^2 / sum w^2`` and the mean MCMC acceptance rate."""

    log_z: float
    stderr: float
    log_weights: np.ndarray
    ess: float
    acceptance_rate: float


class LogLikelihood(NamedTuple):
    """``log_prob`` ``(n,)`` per example; ``nll`` their negated mean; ``nll_stderr``
    the AIS standard error of ``log Z`` (the estimator's uncertainty for these
    examples); ``sample_stderr`` the standard error of the mean over examples."""

    log_prob: np.ndarray
    nll: float
    nll_stderr: float
    sample_stderr: float
    log_z: float
    ais: AISResult


def gaussian_base(x, inflate: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """``(mean, cov)`` of a Gaussian fitted to ``x`` ``(n, dim)``, covariance times ``inflate^2``
    (plus a small ridge so it is always positive definite)."""
    x = jnp.asarray(x, jnp.result_type(x, jnp.float32))  # float64 stays float64 under x64
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (n >= 2, dim), got {tuple(x.shape)}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf")
    mean = jnp.mean(x, 0)
    cov = jnp.atleast_2d(jnp.cov(x.T)) * inflate**2
    cov = cov + 1e-6 * jnp.trace(cov) / x.shape[1] * jnp.eye(x.shape[1])
    return mean, cov


def beta_schedule(num_temperatures: int, kind: str = "geometric", beta_min: float = 1e-4) -> jax.Array:
    """``(T + 1,)`` inverse temperatures from 0 to 1: ``"geometric"`` (``0`` then
    log-spaced ``beta_min .. 1``) or ``"linear"``."""
    num_temperatures = _positive_int(num_temperatures, "num_temperatures")
    if kind == "geometric":
        if not 0 < beta_min < 1:
            raise ValueError(f"beta_min must be in (0, 1), got {beta_min}")
        return jnp.concatenate([jnp.zeros(1), jnp.geomspace(beta_min, 1.0, num_temperatures)])
    if kind == "linear":
        return jnp.linspace(0.0, 1.0, num_temperatures + 1)
    raise ValueError(f"unknown schedule {kind!r}; choose 'geometric' or 'linear'")


def ais_log_z(
    log_unnormalized: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    base_mean,
    base_cov,
    *,
    num_chains: int = 1000,
    num_temperatures: int = 500,
    num_mcmc_steps: int = 1,
    transition: str = "mala",
    schedule: str = "geometric",
    beta_min: float = 1e-4,
    step_size: float | None = None,
    num_integration_steps: int = 5,
    target_acceptance: float | None = None,
) -> AISResult:
    """Annealed importance sampling estimate of ``log Z = log ∫ exp(log_unnormalized(x)) dx``.

    Args:
      log_unnormalized: ``-V(x)`` for one ``x`` of shape ``(dim,)`` -> scalar.
      key: PRNG key.
      base_mean, base_cov: the Gaussian base ``q`` (``(dim,)``, ``(dim, dim)``),
        e.g. from `gaussian_base`.
      num_chains: ``N`` independent AIS runs.
      num_temperatures: ``T``.
      num_mcmc_steps: transitions per temperature.
      transition: ``"mala"`` or ``"hmc"`` (blackjax kernels).
      schedule, beta_min: of `beta_schedule`.
      step_size: initial step size; default ``0.25 * min eigenvalue of base_cov``
        (MALA) or ``0.5 * min base std`` (HMC); then adapted.
      num_integration_steps: HMC leapfrog steps.
      target_acceptance: default 0.57 (MALA) / 0.65 (HMC).

    Raises:
      ValueError: bad shapes, non-positive-definite covariance, bad counts or
        step size, a non-scalar log-density.
    """
    mean = jnp.asarray(base_mean, jnp.float32).reshape(-1)
    dim = mean.shape[0]
    cov = jnp.asarray(base_cov, jnp.float32)
    if cov.shape != (dim, dim):
        raise ValueError(f"base_cov must have shape ({dim}, {dim}), got {cov.shape}")
    chol = jnp.linalg.cholesky(cov)
    if not bool(jnp.all(jnp.isfinite(chol))):
        raise ValueError("base_cov must be symmetric positive definite")
    eig_min = float(jnp.min(jnp.linalg.eigvalsh(cov)))
    if step_size is None:
        step_size = 0.25 * eig_min if transition == "mala" else 0.5 * math.sqrt(eig_min)
    prec_chol = jnp.linalg.inv(chol)
    log_norm = -0.5 * dim * math.log(2 * math.pi) - jnp.sum(jnp.log(jnp.diag(chol)))

    def log_base(x):
        z = prec_chol @ (x - mean)
        return log_norm - 0.5 * jnp.dot(z, z)

    def sample_base(key, n):
        return mean + jax.random.normal(key, (n, dim)) @ chol.T

    return ais_log_z_from(log_unnormalized, key, log_base, sample_base, dim, step_size=step_size,
                          num_chains=num_chains, num_temperatures=num_temperatures, num_mcmc_steps=num_mcmc_steps,
                          transition=transition, schedule=schedule, beta_min=beta_min,
                          num_integration_steps=num_integration_steps, target_acceptance=target_acceptance)


def ais_log_z_from(
    log_unnormalized: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    log_base: Callable[[jax.Array], jax.Array],
    sample_base: Callable[[jax.Array, int], jax.Array],
    dim: int,
    *,
    step_size: float,
    num_chains: int = 1000,
    num_temperatures: int = 500,
    num_mcmc_steps: int = 1,
    transition: str = "mala",
    schedule: str = "geometric",
    beta_min: float = 1e-4,
    num_integration_steps: int = 5,
    target_acceptance: float | None = None,
) -> AISResult:
    """`ais_log_z` from any normalised base ``q``, e.g. a Gaussian mixture fitted to the data.

    Args:
      log_unnormalized: ``-V(x)`` for one ``x`` of shape ``(dim,)`` -> scalar.
      key: PRNG key.
      log_base: ``log q(x)`` for one ``x`` of shape ``(dim,)`` (normalised: the
        estimate is of ``Z`` relative to ``q``'s, i.e. of ``Z`` itself).
      sample_base: ``(key, n) -> (n, dim)`` draws from ``q``.
      dim: the dimension.
      step_size: initial MCMC step size (> 0; then adapted), e.g. a quarter of
        the smallest variance of ``q``'s components for MALA.
      the rest: of `ais_log_z`.

    Raises:
      ValueError: bad counts or step size, a non-scalar log-density, base draws
        of the wrong shape.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    dim = int(dim)
    num_chains = _positive_int(num_chains, "num_chains", minimum=2)
    num_mcmc_steps = _positive_int(num_mcmc_steps, "num_mcmc_steps")
    betas = beta_schedule(num_temperatures, schedule, beta_min)
    for fn, what in ((log_unnormalized, "log_unnormalized"), (log_base, "log_base")):
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct((dim,), jnp.float32))
        if getattr(out, "shape", None) != ():
            raise ValueError(f"{what} must return a scalar for a ({dim},) input, got {getattr(out, 'shape', out)}")
    drawn = jax.eval_shape(lambda k: sample_base(k, num_chains), jax.random.PRNGKey(0))
    if getattr(drawn, "shape", None) != (num_chains, dim):
        raise ValueError(f"sample_base(key, n) must return shape (n, {dim}), got {getattr(drawn, 'shape', drawn)}")
    if transition == "mala":
        eps0 = _positive(step_size, "step_size")
        target = 0.57 if target_acceptance is None else float(target_acceptance)
        kernel = blackjax.mala.build_kernel()

        def move(k, x, logdens, eps):
            state = blackjax.mala.init(x, logdens)
            state, info = kernel(k, state, logdens, eps)
            return state.position, info.acceptance_rate
    elif transition == "hmc":
        eps0 = _positive(step_size, "step_size")
        target = 0.65 if target_acceptance is None else float(target_acceptance)
        n_leap = _positive_int(num_integration_steps, "num_integration_steps")
        kernel = blackjax.hmc.build_kernel()
        imm = jnp.ones((dim,), jnp.float32)

        def move(k, x, logdens, eps):
            state = blackjax.hmc.init(x, logdens)
            state, info = kernel(k, state, logdens, eps, imm, n_leap)
            return state.position, info.acceptance_rate
    else:
        raise ValueError(f"transition must be 'mala' or 'hmc', got {transition!r}")
    if not 0 < target < 1:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target}")

    def log_ratio(x):
        return log_unnormalized(x) - log_base(x)

    @jax.jit
    def run(key):
        k0, k_run = jax.random.split(key)
        x = sample_base(k0, num_chains)

        def temp_body(carry, inp):
            x, lw, log_eps, acc_sum = carry
            b_prev, b, k = inp
            lw = lw + (b - b_prev) * jax.vmap(log_ratio)(x)
            logdens = lambda y: log_base(y) + b * log_ratio(y)  # noqa: E731

            def mcmc(c, kk):
                x, = c
                x_new, acc = jax.vmap(lambda kc, xc: move(kc, xc, logdens, jnp.exp(log_eps)))(
                    jax.random.split(kk, num_chains), x)
                acc = jnp.where(jnp.isfinite(acc), acc, 0.0)
                return (x_new,), jnp.mean(acc)

            (x,), accs = jax.lax.scan(mcmc, (x,), jax.random.split(k, num_mcmc_steps))
            acc = jnp.mean(accs)
            log_eps = log_eps + jnp.clip(2.0 * (acc - target), -0.5, 0.5)
            return (x, lw, log_eps, acc_sum + acc), None

        keys = jax.random.split(k_run, betas.shape[0] - 1)
        init = (x, jnp.zeros(num_chains), jnp.log(jnp.asarray(eps0, x.dtype)), jnp.zeros(()))  # x64: carry dtypes
        (x, lw, _, acc_sum), _ = jax.lax.scan(temp_body, init, (betas[:-1], betas[1:], keys))
        return lw, acc_sum / (betas.shape[0] - 1)

    lw, acc = run(key)
    lw = np.asarray(lw, np.float64)
    if not np.all(np.isfinite(lw)):
        bad = int(np.sum(~np.isfinite(lw)))
        lw = np.where(np.isfinite(lw), lw, -np.inf)
        if bad == lw.size:
            raise FloatingPointError("AIS: every log weight is non-finite (diverging energy?)")
    m = lw.max()
    w = np.exp(lw - m)
    log_z = float(m + np.log(w.mean()))
    stderr = float(w.std(ddof=1) / (math.sqrt(w.size) * w.mean()))
    ess = float(w.sum() ** 2 / np.sum(w**2))
    return AISResult(log_z, stderr, lw, ess, float(acc))


def log_likelihood(
    model: EnergyModel,
    params: Any,
    x,
    key: jax.Array,
    *,
    base: tuple | None = None,
    base_inflate: float = 1.5,
    **ais_options,
) -> LogLikelihood:
    """``log p(x) = -V(x) - log Z`` with ``log Z`` from `ais_log_z`.

    Args:
      model, params: the energy model.
      x: ``(n, dim)`` examples.
      key: PRNG key for AIS.
      base: ``(mean, cov)`` of the AIS base; default a Gaussian fitted to ``x``
        with its std inflated by ``base_inflate`` (any base gives an unbiased
        ``Z``; a wider one covers the tails). Or ``(log_base, sample_base)``,
        the functions of `ais_log_z_from` for any normalised base (then
        ``step_size`` must be among ``ais_options``).
      **ais_options: passed to `ais_log_z` / `ais_log_z_from` (num_chains, num_temperatures, ...).
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2 or x.shape[1] != model.dim or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n, {model.dim}), got {tuple(x.shape)}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf")
    if base is None:
        base = gaussian_base(x, inflate=base_inflate)
    if len(base) == 2 and callable(base[0]) and callable(base[1]):
        res = ais_log_z_from(lambda y: model.unnormalized_log_prob(params, y), key, *base, model.dim, **ais_options)
    else:
        res = ais_log_z(lambda y: model.unnormalized_log_prob(params, y), key, *base, **ais_options)
    log_unnorm = np.asarray(jax.jit(model.unnormalized_log_prob)(params, x), np.float64)
    log_prob = log_unnorm - res.log_z
    n = log_prob.size
    sample_se = float(log_prob.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return LogLikelihood(log_prob, float(-log_prob.mean()), res.stderr, sample_se, res.log_z, res)


def grid_log_z(
    log_unnormalized_batch: Callable[[jax.Array], jax.Array],
    low,
    high,
    resolution: int = 1000,
    block: int = 65536,
) -> float:
    """2-D quadrature ``log ∫_box exp(f(x)) dx`` by the midpoint rule.

    Args:
      log_unnormalized_batch: ``(m, 2) -> (m,)`` log-density (e.g.
        ``lambda x: model.unnormalized_log_prob(params, x)``).
      low, high: corners ``(2,)`` of the box (mass outside is ignored: choose
        a box that holds it).
      resolution: points per axis (``>= 2``); the cell must be small next to
        the narrowest feature of the density.
      block: points evaluated per call.
    """
    low = np.asarray(low, np.float64).reshape(-1)
    high = np.asarray(high, np.float64).reshape(-1)
    if low.shape != (2,) or high.shape != (2,) or not np.all(high > low):
        raise ValueError(f"low/high must be (2,) with high > low, got {low} and {high}")
    resolution = _positive_int(resolution, "resolution", minimum=2)
    h = (high - low) / resolution
    gx = low[0] + h[0] * (np.arange(resolution) + 0.5)
    gy = low[1] + h[1] * (np.arange(resolution) + 0.5)
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    f = jax.jit(log_unnormalized_batch)
    parts = []
    for i in range(0, pts.shape[0], block):
        chunk = pts[i : i + block]
        if chunk.shape[0] < block:  # one compiled shape
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], block - chunk.shape[0], 0)])
            vals = np.asarray(f(jnp.asarray(chunk)), np.float64)[: pts.shape[0] - i]
        else:
            vals = np.asarray(f(jnp.asarray(chunk)), np.float64)
        parts.append(_lse(vals))
    total = _lse(np.array(parts))
    return float(total + np.log(h[0] * h[1]))


def _lse(v: np.ndarray) -> float:
    m = np.max(v)
    if not np.isfinite(m):
        return float(m)
    return float(m + np.log(np.sum(np.exp(v - m))))
