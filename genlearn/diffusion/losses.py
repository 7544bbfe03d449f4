"""Denoising score matching (Vincent 2011; Song et al. 2021) with weightings and time sampling.

For data x_0, t in [t_min, 1], eps ~ N(0, I) and x_t = m(t) x_0 + s(t) eps,
the conditional score is grad log p_0t(x_t | x_0) = -eps / s, so with the
model's score s_theta = -eps_hat / s (`genlearn.diffusion.model`):

    L(theta) = E_t E_{x_0, eps} [ 1/2 lambda(t) || s_theta(x_t, t) - grad log p_0t(x_t | x_0) ||^2 ]
             = E_t E [ 1/2 lambda(t) / s(t)^2 || eps_hat(x_t, t) - eps ||^2 ],

summed over dimensions, t uniform on [t_min, 1]. Its minimiser over all
functions is the true score of p_t (the conditional expectation of the
target), whatever the positive weighting lambda:

* ``weighting="sigma2"``: lambda = s^2, the epsilon-MSE of DDPM;
* ``weighting="likelihood"``: lambda = g^2 (Song, Durkan, Murray & Ermon
  2021): then L is the diffusion term of the continuous-time ELBO
  (`genlearn.diffusion.likelihood.variational_bound`), since g^2 / s^2 =
  -d log SNR / dt for every linear SDE.

The parameterisation (eps, v, score) only changes what the network outputs;
the objective is the same function of the implied score.

Time sampling (``time_sampling``):

* ``"uniform"``: t_i ~ U[t_min, 1] independently;
* ``"antithetic"``: u_i for the first half of the batch, 1 - u_i for the second;
* ``"stratified"``: t_i = t_min + (1 - t_min) (u + i) / n mod 1 (one shared u);
* ``"importance"``: t ~ q(t) proportional to lambda(t) / s(t)^2, and the
  example is weighted by (lambda / s^2)(t) / ((1 - t_min) q(t)), so the
  estimate has the same expectation as under uniform t and far less
  variance for the likelihood weighting, whose weight g^2 / s^2 ~ 1 / t
  near 0 (q is the inverse-CDF of the tabulated weight on a fine
  geometric grid; its density is piecewise constant and used exactly).

Every loss here is ``loss(params, batch, key)``, so
`genlearn.train.gradient_trainer` trains it through `genlearn.train.run_trainer`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.diffusion.model import Diffusion
from genlearn.diffusion.sde import SDE, _rows

__all__ = ["WEIGHTINGS", "TIME_SAMPLINGS", "TimeSampler", "time_sampler", "weight", "dsm_loss", "split_labels"]

Array = jax.Array
WEIGHTINGS = ("sigma2", "likelihood")
TIME_SAMPLINGS = ("uniform", "antithetic", "stratified", "importance")


def weight(sde: SDE, weighting: str, t: Array) -> Array:
    """lambda(t) / s(t)^2: 1 for ``"sigma2"``, g(t)^2 / s(t)^2 for ``"likelihood"``."""
    if weighting == "sigma2":
        return jnp.ones_like(t)
    if weighting == "likelihood":
        return (sde.diffusion(t) / sde.std(t)) ** 2
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


class TimeSampler(NamedTuple):
    """``sample(key, n) -> (t, w)``: times and per-example factors such that E[w f(t)] = E_{U[t_min,1]}[f(t)]."""

    sample: Callable[[Array, int], tuple[Array, Array]]
    kind: str


def time_sampler(sde: SDE, kind: str = "uniform", weighting: str = "sigma2", grid_size: int = 4096) -> TimeSampler:
    """A :class:`TimeSampler` of the given kind (module docstring); ``weighting`` sets q for ``"importance"``."""
    if kind not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    t0 = sde.t_min
    span = 1.0 - t0

    def uniform(u):
        return t0 + span * u

    if kind == "uniform":
        def sample(key, n):
            u = jax.random.uniform(key, (n,))
            return uniform(u), jnp.ones((n,))
    elif kind == "antithetic":
        def sample(key, n):
            half = n // 2
            k1, k2 = jax.random.split(key)
            u = jax.random.uniform(k1, (half,))
            extra = jax.random.uniform(k2, (n - 2 * half,))
            return uniform(jnp.concatenate([u, 1.0 - u, extra])), jnp.ones((n,))
    elif kind == "stratified":
        def sample(key, n):
            u = jax.random.uniform(key, ())
            return uniform(jnp.mod(u + jnp.arange(n) / n, 1.0)), jnp.ones((n,))
    else:
        # tabulate w = lambda / s^2 on a grid dense near t_min (geometric) and even elsewhere (linear)
        lo = max(t0, 1e-8)
        grid = np.unique(np.concatenate([np.geomspace(lo, 1.0, grid_size), np.linspace(lo, 1.0, grid_size)]))
        grid[0] = t0
        with jax.ensure_compile_time_eval():  # a constant table, also when built inside a jitted function
            w = np.asarray(weight(sde, weighting, jnp.asarray(grid, jnp.float32)), np.float64)
        mass = 0.5 * (w[1:] + w[:-1]) * np.diff(grid)  # trapezoid mass per segment
        cdf = np.concatenate([[0.0], np.cumsum(mass)])
        total = cdf[-1]
        density = mass / total / np.diff(grid)  # q(t) on each segment (piecewise constant)
        grid_j, cdf_j, dens_j = (jnp.asarray(a, jnp.float32) for a in (grid, cdf / total, density))

        def sample(key, n):
            u = jax.random.uniform(key, (n,))
            seg = jnp.clip(jnp.searchsorted(cdf_j, u, side="right") - 1, 0, grid_j.shape[0] - 2)
            frac = (u - cdf_j[seg]) / jnp.maximum(cdf_j[seg + 1] - cdf_j[seg], 1e-30)
            t = grid_j[seg] + frac * (grid_j[seg + 1] - grid_j[seg])
            return t, weight(sde, weighting, t) / (span * dens_j[seg])

    return TimeSampler(sample, kind)


def split_labels(batch: Array, num_classes: int) -> tuple[Array, Array | None]:
    """``(x, labels)``: a conditional model's batches carry the class label in their last column."""
    if not num_classes:
        return batch, None
    return batch[:, :-1], jnp.round(batch[:, -1]).astype(jnp.int32)


def dsm_loss(model: Diffusion, *, weighting: str = "sigma2", time_sampling: str = "uniform",
             label_dropout: float = 0.0) -> Callable:
    """The DSM loss ``loss(params, batch, key)`` (module docstring), mean over the batch.

    Args:
      model: the diffusion model (its SDE, network and parameterisation).
      weighting: "sigma2" (lambda = s^2) or "likelihood" (lambda = g^2).
      time_sampling: "uniform", "antithetic", "stratified" or "importance".
      label_dropout: for a class-conditional model, the probability that an
        example's label is replaced by the null label (classifier-free
        guidance trains the unconditional model alongside); batches are
        ``(n, d + 1)`` with the label in the last column.
    """
    if not 0.0 <= float(label_dropout) < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout!r}")
    if label_dropout and not model.num_classes:
        raise ValueError("label_dropout needs a class-conditional model (num_classes > 0)")
    sampler = time_sampler(model.sde, time_sampling, weighting)
    sde = model.sde

    def loss(params, batch, key):
        x0, label = split_labels(batch, model.num_classes)
        n = x0.shape[0]
        k_t, k_eps, k_drop = jax.random.split(key, 3)
        t, w = sampler.sample(k_t, n)
        t = t.astype(x0.dtype)
        if label is not None and label_dropout:
            label = jnp.where(jax.random.uniform(k_drop, (n,)) < label_dropout, model.num_classes, label)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        xt = _rows(sde.mean_coeff(t), x0) * x0 + _rows(sde.std(t), x0) * eps
        err = jnp.sum((model.eps(params, xt, t, label) - eps) ** 2, -1)
        return jnp.mean(0.5 * w.astype(x0.dtype) * weight(sde, weighting, t) * err) if time_sampling != "importance" \
            else jnp.mean(0.5 * w.astype(x0.dtype) * err)

    return loss
