r"""Training energy models without ever computing ``Z_theta``.

Maximum likelihood. For ``p_theta = exp(-V_theta) / Z_theta``,

.. math::

    \nabla_\theta\, \mathbb{E}_{data}[-\log p_\theta(x)]
      = \mathbb{E}_{data}[\nabla_\theta V_\theta(x)]
      - \mathbb{E}_{p_\theta}[\nabla_\theta V_\theta(x^-)],

so the surrogate ``L = mean V(x+) - mean V(stop_grad(x-))`` with negatives
``x-`` drawn (approximately) from the model has the ML gradient.

* `contrastive_divergence` (CD-k, Hinton 2002): ``x-`` = ``k`` Langevin steps
  started at the data batch. A plain loss ``loss(params, batch, key)`` for
  `genlearn.train.fit` (`genlearn.train.gradient_trainer`).
* `persistent_contrastive_divergence` (PCD, Tieleman 2008, with the replay
  buffer of Du & Mordatch 2019): chains persist across updates in an explicit
  :class:`ReplayBuffer`; each step restarts a fraction ``reinit_prob`` of them
  from uniform noise. A `genlearn.train.Trainer` (the buffer is state), run by
  `genlearn.train.run_trainer` (`fit_pcd` is a shorthand).

Both add Du & Mordatch's energy-magnitude penalty
``alpha (V(x+)^2 + V(x-)^2)``.

Score matching (Z-free because the score ``-grad_x V`` does not contain Z):

* `denoising_score_matching` (Vincent 2011): with ``x~ = x + sigma eps``,
  ``L = 1/2 E || sigma s_theta(x~) + eps ||^2`` (``= sigma^2`` times the DSM
  objective), whose minimiser is the score of the data smoothed by
  ``N(0, sigma^2 I)``.
* `sliced_score_matching` (Song et al. 2019, SSM-VR):
  ``L = E_x E_v [ v^T (grad_x s_theta(x)) v + 1/2 ||s_theta(x)||^2 ]``,
  ``v ~ N(0, I)``, with ``v^T J v`` from one Jacobian-vector product.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from genlearn.energy.models import EnergyModel
from genlearn.energy.samplers import _positive, _positive_int, independent_mh, kde_proposal, langevin, mala
from genlearn.train import FitResult, Trainer, guarded_update, run_trainer

__all__ = [
    "ReplayBuffer",
    "PCDState",
    "PCDInfo",
    "contrastive_divergence",
    "persistent_contrastive_divergence",
    "fit_pcd",
    "denoising_score_matching",
    "sliced_score_matching",
]

PyTree = Any


def _langevin_chain(model, params, x0, key, k, step_size, noise_scale, grad_clip, kind="langevin",
                    proposal=None):
    """``k`` Langevin / MALA / MALA+independent-MH steps from each row of ``x0`` at frozen
    params; returns (x, divergence rate)."""
    params = jax.lax.stop_gradient(params)
    logdens = lambda x: model.unnormalized_log_prob(params, x)  # noqa: E731
    if kind == "langevin":
        sampler = langevin(logdens, step_size, noise_scale=noise_scale, grad_clip=grad_clip)
    else:
        sampler = mala(logdens, step_size)
    jump = independent_mh(logdens, *proposal) if kind == "mala_jump" else None

    def one(key, x):
        def body(state, k_t):
            state, info = sampler.step(k_t, state)
            div = info.is_divergent
            if jump is not None:
                k_j = jax.random.fold_in(k_t, 1)
                j_state, j_info = jump.step(k_j, jump.init(state.position))
                state = sampler.init(j_state.position)
                div = div | j_info.is_divergent
            return state, div

        state, div = jax.lax.scan(body, sampler.init(x), jax.random.split(key, k))
        return state.position, jnp.mean(div.astype(jnp.float32))

    xs, div = jax.vmap(one)(jax.random.split(key, x0.shape[0]), x0)
    return jax.lax.stop_gradient(xs), jnp.mean(div)


def _check_common(k, step_size, noise_scale, grad_clip, alpha):
    k = _positive_int(k, "k (number of Langevin steps)")
    step_size = _positive(step_size, "step_size")
    noise_scale = float(noise_scale)
    if not noise_scale >= 0 or math.isinf(noise_scale):
        raise ValueError(f"noise_scale must be >= 0 and finite, got {noise_scale}")
    if grad_clip is not None:
        grad_clip = _positive(grad_clip, "grad_clip")
    alpha = float(alpha)
    if not alpha >= 0 or math.isinf(alpha):
        raise ValueError(f"alpha must be >= 0 and finite, got {alpha}")
    return k, step_size, noise_scale, grad_clip, alpha


def _ml_surrogate(model, params, pos, neg, alpha):
    e_pos = model.energy(params, pos)
    e_neg = model.energy(params, neg)
    loss = jnp.mean(e_pos) - jnp.mean(e_neg)
    if alpha:
        loss = loss + alpha * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
    return loss, (jnp.mean(e_pos), jnp.mean(e_neg))


def contrastive_divergence(
    model: EnergyModel,
    *,
    k: int = 10,
    step_size: float = 1e-2,
    noise_scale: float = 1.0,
    grad_clip: float | None = None,
    alpha: float = 0.0,
) -> Callable:
    """CD-k surrogate loss ``loss(params, batch, key)`` for `genlearn.train.fit`.

    Args:
      model: an :class:`EnergyModel`.
      k: Langevin steps from the data (``>= 1``).
      step_size, noise_scale, grad_clip: of `genlearn.energy.langevin`.
      alpha: energy-magnitude penalty weight (``>= 0``).
    """
    k, step_size, noise_scale, grad_clip, alpha = _check_common(k, step_size, noise_scale, grad_clip, alpha)

    def loss(params, batch, key):
        neg, _ = _langevin_chain(model, params, batch, key, k, step_size, noise_scale, grad_clip)
        return _ml_surrogate(model, params, batch, neg, alpha)[0]

    return loss


class ReplayBuffer(NamedTuple):
    """Persistent chains: ``positions`` of shape ``(buffer_size, dim)``."""

    positions: jax.Array


class PCDState(NamedTuple):
    """Everything PCD training carries: params, optimiser state, buffer, step count."""

    params: PyTree
    opt_state: PyTree
    buffer: ReplayBuffer
    step: jax.Array


class PCDInfo(NamedTuple):
    """Per-step report: surrogate loss, mean energies of data and negatives, whether the
    update was rejected as non-finite, and the Langevin divergence rate."""

    loss: jax.Array
    energy_data: jax.Array
    energy_samples: jax.Array
    nonfinite: jax.Array
    divergence_rate: jax.Array


def persistent_contrastive_divergence(
    model: EnergyModel,
    optimizer: optax.GradientTransformation,
    *,
    buffer_size: int = 10_000,
    k: int = 20,
    step_size: float = 1e-2,
    noise_scale: float = 1.0,
    grad_clip: float | None = None,
    alpha: float = 0.0,
    reinit_prob: float = 0.05,
    init_range: float = 3.0,
    sampler: str = "langevin",
    proposal_bandwidth: float = 0.1,
    proposal_wide_weight: float = 0.1,
) -> Trainer:
    """PCD with a replay buffer (Du & Mordatch 2019), as a `genlearn.train.Trainer`.

    ``init(key, params) -> PCDState`` fills the buffer with uniform noise;
    ``step(state, batch, key) -> (PCDState, PCDInfo)``: draw ``b`` buffer rows (``b`` = batch size), restart each
    from ``U[-init_range, init_range]^dim`` with probability ``reinit_prob``,
    run ``k`` Langevin steps, write them back, and take an optimiser step on
    the ML surrogate (module docstring). A non-finite loss/gradient/update is
    rejected by `genlearn.train.guarded_update` (params and optimiser state
    kept, ``info.nonfinite`` True). ``params(state)`` is ``state.params``; there
    is no validation loss.
    ``sampler="mala"`` replaces the Langevin steps by MALA (exact for the
    model at any step size; ``noise_scale`` and ``grad_clip`` are then unused),
    which matters when the trained model's likelihood is evaluated.
    ``sampler="mala_jump"`` follows every MALA step by an independent
    Metropolis-Hastings step whose proposal is a KDE on the current data batch
    (bandwidth ``proposal_bandwidth``) mixed with a wide Gaussian (weight
    ``proposal_wide_weight``; `genlearn.energy.kde_proposal`): still an exact
    MCMC kernel for the model, but chains can move between separated modes, so
    the negatives see the model's relative mode weights.

    Raises:
      ValueError: bad hyperparameters (non-positive sizes/steps, probabilities
        outside [0, 1]).
    """
    k, step_size, noise_scale, grad_clip, alpha = _check_common(k, step_size, noise_scale, grad_clip, alpha)
    buffer_size = _positive_int(buffer_size, "buffer_size")
    reinit_prob = float(reinit_prob)
    if not 0.0 <= reinit_prob <= 1.0:
        raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
    init_range = _positive(init_range, "init_range")
    if sampler not in ("langevin", "mala", "mala_jump"):
        raise ValueError(f"sampler must be 'langevin', 'mala' or 'mala_jump', got {sampler!r}")
    proposal_bandwidth = _positive(proposal_bandwidth, "proposal_bandwidth")
    if not 0.0 <= float(proposal_wide_weight) <= 1.0:
        raise ValueError(f"proposal_wide_weight must be in [0, 1], got {proposal_wide_weight}")
    dim = model.dim

    def noise(key, n):
        return jax.random.uniform(key, (n, dim), jnp.float32, -init_range, init_range)

    def init(key, params):
        return PCDState(params, optimizer.init(params), ReplayBuffer(noise(key, buffer_size)), jnp.zeros((), jnp.int32))

    def step(state, batch, key):
        if batch.ndim != 2 or batch.shape[1] != dim:
            raise ValueError(f"batch must have shape (b, {dim}), got {batch.shape}")
        b = batch.shape[0]
        k_idx, k_re, k_noise, k_mc = jax.random.split(key, 4)
        idx = jax.random.choice(k_idx, buffer_size, (b,), replace=False)
        start = state.buffer.positions[idx]
        restart = jax.random.bernoulli(k_re, reinit_prob, (b, 1))
        start = jnp.where(restart, noise(k_noise, b), start)
        proposal = (
            kde_proposal(batch, proposal_bandwidth, wide_weight=proposal_wide_weight)
            if sampler == "mala_jump" else None
        )
        neg, div = _langevin_chain(model, state.params, start, k_mc, k, step_size, noise_scale,
                                   grad_clip, sampler, proposal)
        buffer = ReplayBuffer(state.buffer.positions.at[idx].set(neg))

        def objective(p):
            return _ml_surrogate(model, p, batch, neg, alpha)

        (loss, (e_pos, e_neg)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        params, opt_state, ok = guarded_update(optimizer, loss, grads, state.params, state.opt_state)
        return PCDState(params, opt_state, buffer, state.step + 1), PCDInfo(loss, e_pos, e_neg, ~ok, div)

    return Trainer(init, step, lambda state: state.params)


def fit_pcd(trainer: Trainer, params: PyTree, data, *, key: jax.Array, steps: int, batch_size: int = 256,
            chunk: int = 250, max_nonfinite: int | None = 20, progress: bool = False, progress_desc: str = "PCD",
            max_seconds: float | None = None, **kwargs) -> FitResult:
    """``run_trainer(trainer, params, data, eval_every=chunk, ...)`` with PCD's defaults.

    ``kwargs`` go to `genlearn.train.run_trainer` (``checkpoint_dir``,
    ``resume``, ...). The history holds ``train_loss`` (the surrogate loss),
    ``energy_data``, ``energy_samples``, ``nonfinite`` and ``divergence_rate``
    per step; ``result.state`` is the final `PCDState` (with its buffer).
    """
    return run_trainer(trainer, params, data, key=key, steps=steps, batch_size=batch_size, eval_every=chunk,
                       max_nonfinite=max_nonfinite, progress=progress, progress_desc=progress_desc,
                       max_seconds=max_seconds, **kwargs)


def denoising_score_matching(model: EnergyModel, sigma: float) -> Callable:
    """DSM loss ``loss(params, batch, key)`` (module docstring), noise std ``sigma > 0``."""
    sigma = _positive(sigma, "sigma")

    def loss(params, batch, key):
        eps = jax.random.normal(key, batch.shape, batch.dtype)
        s = model.score(params, batch + sigma * eps)
        return 0.5 * jnp.mean(jnp.sum((sigma * s + eps) ** 2, axis=-1))

    return loss


def sliced_score_matching(model: EnergyModel, num_projections: int = 1) -> Callable:
    """SSM-VR loss ``loss(params, batch, key)`` with ``num_projections`` Gaussian directions."""
    num_projections = _positive_int(num_projections, "num_projections")

    def loss(params, batch, key):
        v = jax.random.normal(key, (num_projections,) + batch.shape, batch.dtype)
        score1 = lambda x: model.score(params, x)  # noqa: E731

        def per_example(x, vs):
            def quad(v1):
                s, jv = jax.jvp(score1, (x,), (v1,))
                return jnp.dot(v1, jv), s

            q, s = jax.vmap(quad)(vs)
            return jnp.mean(q) + 0.5 * jnp.sum(s[0] ** 2)

        return jnp.mean(jax.vmap(per_example, in_axes=(0, 1))(batch, v))

    return loss
