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
  `genlearn.train.fit`.
* `persistent_contrastive_divergence` (PCD, Tieleman 2008, with the replay
  buffer of Du & Mordatch 2019): chains persist across updates in an explicit
  :class:`ReplayBuffer`; each step restarts a fraction ``reinit_prob`` of them
  from uniform noise. Its own ``init`` / ``step`` (the buffer is state), run
  by `fit_pcd` in jitted ``lax.scan`` chunks.

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
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from genlearn.energy.models import EnergyModel
from genlearn.energy.samplers import _positive, _positive_int, independent_mh, kde_proposal, langevin, mala

__all__ = [
    "ReplayBuffer",
    "PCDState",
    "PCDInfo",
    "PCDTrainer",
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
    update was accepted (finite), and the Langevin divergence rate."""

    loss: jax.Array
    energy_data: jax.Array
    energy_samples: jax.Array
    accepted: jax.Array
    divergence_rate: jax.Array


class PCDTrainer(NamedTuple):
    """``init(params, key) -> PCDState``; ``step(key, state, batch) -> (state, PCDInfo)``."""

    init: Callable[[PyTree, jax.Array], PCDState]
    step: Callable[[jax.Array, PCDState, jax.Array], tuple[PCDState, PCDInfo]]


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


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
) -> PCDTrainer:
    """PCD with a replay buffer (Du & Mordatch 2019), as explicit state.

    One ``step``: draw ``b`` buffer rows (``b`` = batch size), restart each
    from ``U[-init_range, init_range]^dim`` with probability ``reinit_prob``,
    run ``k`` Langevin steps, write them back, and take an optimiser step on
    the ML surrogate (module docstring). A non-finite loss/gradient/update is
    rejected (params and optimiser state kept, ``info.accepted`` False).
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

    def init(params, key):
        return PCDState(params, optimizer.init(params), ReplayBuffer(noise(key, buffer_size)), jnp.zeros((), jnp.int32))

    def step(key, state, batch):
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
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ok = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        params = jax.tree_util.tree_map(keep, params, state.params)
        opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
        new_state = PCDState(params, opt_state, buffer, state.step + 1)
        return new_state, PCDInfo(loss, e_pos, e_neg, ok, div)

    return PCDTrainer(init, step)


def fit_pcd(
    trainer: PCDTrainer,
    state: PCDState,
    data,
    *,
    key: jax.Array,
    steps: int,
    batch_size: int = 256,
    chunk: int = 250,
    max_nonfinite: int = 20,
    progress: bool = False,
    progress_desc: str = "PCD",
    max_seconds: float | None = None,
) -> tuple[PCDState, dict]:
    """Runs ``steps`` PCD steps in jitted ``lax.scan`` chunks of ``chunk`` steps.

    Minibatches are drawn uniformly (with replacement across steps) with
    ``fold_in(key, t)``. Returns ``(state, history)`` with numpy arrays
    ``loss``, ``energy_data``, ``energy_samples``, ``accepted``,
    ``divergence_rate`` per step. ``max_seconds``: a wall-clock budget; no new
    chunk starts once it has passed (the history then has fewer steps).

    Raises:
      ValueError: bad data / sizes.
      FloatingPointError: ``max_nonfinite`` consecutive rejected updates.
    """
    data = jnp.asarray(data, jnp.float32)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (n, dim), got {tuple(data.shape)}")
    if not bool(jnp.all(jnp.isfinite(data))):
        raise ValueError("data contain NaN or inf")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    if batch_size > data.shape[0]:
        raise ValueError(f"batch_size {batch_size} exceeds the number of rows {data.shape[0]}")
    chunk = _positive_int(chunk, "chunk")
    if max_seconds is not None:
        max_seconds = _positive(max_seconds, "max_seconds")
    n = data.shape[0]
    start_time = time.perf_counter()

    @jax.jit
    def run_chunk(state, ts):
        def body(state, t):
            k = jax.random.fold_in(key, t)
            k_b, k_s = jax.random.split(k)
            batch = data[jax.random.randint(k_b, (batch_size,), 0, n)]
            return trainer.step(k_s, state, batch)

        return jax.lax.scan(body, state, ts)

    hist = {f: [] for f in PCDInfo._fields}
    bar = tqdm(total=steps, desc=progress_desc, disable=not progress)
    done, bad_run = 0, 0
    while done < steps:
        if max_seconds is not None and done > 0 and time.perf_counter() - start_time >= max_seconds:
            break
        m = min(chunk, steps - done)
        ts = jnp.arange(done, done + m)
        state, info = run_chunk(state, ts)  # a shorter last chunk compiles once more
        for f in PCDInfo._fields:
            hist[f].append(np.asarray(getattr(info, f))[:m])
        acc = np.asarray(info.accepted)[:m]
        for a in acc:
            bad_run = 0 if a else bad_run + 1
            if bad_run >= max_nonfinite:
                bar.close()
                raise FloatingPointError(
                    f"PCD stopped: {max_nonfinite} consecutive non-finite updates at step {done}"
                )
        if (~acc).any():
            import warnings

            warnings.warn(f"PCD: {int((~acc).sum())} non-finite updates rejected in steps {done}..{done + m}")
        done += m
        bar.update(m)
        bar.set_postfix(loss=float(np.nanmean(hist["loss"][-1])))
    bar.close()
    return state, {f: (np.concatenate(v) if v else np.zeros(0)) for f, v in hist.items()}


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
