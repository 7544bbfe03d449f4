"""The GAN min-max update as one jitted ``init`` / ``step`` (blackjax style).

One ``step(key, state, data)`` performs ``m`` critic steps (``lax.scan``),
each ascending the critic's weak-distance objective on a fresh real batch and
fresh generator samples, then one generator step descending the generator
loss against the updated critic:

    phi  <- phi  - opt_c(grad_phi  [critic_loss(f_phi(x), f_phi(G_theta(z))) + penalties])   (m times)
    theta <- theta - opt_g(grad_theta generator_loss(f_phi(G_theta(z))))

with separate optax optimisers (two time-scale update rule, Heusel et al.
2017), optional weight clipping or spectral normalisation of the critic, an
optional exponential moving average of the generator's parameters
(Yazici et al. 2019), and an ``info`` record whose ``distance`` is the
critic's estimate of the weak distance: the progress monitor the lecture
says the min-max game otherwise lacks. Real minibatches are drawn inside the
step (uniformly, with replacement) from the ``(N, d)`` data array.

A non-finite loss, gradient or update is rejected inside the step (the state
is returned unchanged and ``info.nonfinite`` is set), like
``genlearn.train.train_step``.

``weak_generator`` gives a critic-free generator trained on a weak loss
(MMD, energy, Sinkhorn, ...) the same ``init`` / ``step`` interface.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from genlearn.gan.critics import Critic, clip_params
from genlearn.gan.generators import Generator
from genlearn.gan.objectives import AdversarialObjective, gradient_penalty, r1_penalty

__all__ = ["GANState", "GANInfo", "MinMax", "minmax", "weak_generator"]


class GANState(NamedTuple):
    """Everything the min-max loop carries (a pytree).

    Attributes:
      generator: generator params ``theta``.
      critic: critic params ``phi`` (None for ``weak_generator``).
      critic_state: spectral-norm power-iteration vectors (``{}`` without).
      generator_opt, critic_opt: optax states.
      ema: EMA of ``theta`` (equal to ``generator`` when EMA is off).
      step: number of completed generator steps (int32).
    """

    generator: Any
    critic: Any
    critic_state: Any
    generator_opt: Any
    critic_opt: Any
    ema: Any
    step: jax.Array


class GANInfo(NamedTuple):
    """Diagnostics of one step (scalars).

    Attributes:
      distance: the critic's weak-distance estimate on the last critic batch
        (for ``weak_generator``: the weak loss itself).
      critic_loss: critic objective incl. penalties (last critic step).
      generator_loss: generator objective.
      penalty: the penalty part of ``critic_loss`` (GP + R1).
      critic_grad_norm, generator_grad_norm: global gradient norms.
      nonfinite: True when an update was rejected as non-finite.
    """

    distance: jax.Array
    critic_loss: jax.Array
    generator_loss: jax.Array
    penalty: jax.Array
    critic_grad_norm: jax.Array
    generator_grad_norm: jax.Array
    nonfinite: jax.Array


class MinMax(NamedTuple):
    """``init(key) -> GANState``; ``step(key, state, data) -> (state, GANInfo)``.

    ``critic_update`` and ``generator_update`` (same signature as ``step``) are
    the two halves, exposed for loops that call them separately.
    """

    init: Callable[[jax.Array], GANState]
    step: Callable[[jax.Array, GANState, jax.Array], tuple[GANState, GANInfo]]
    critic_update: Callable
    generator_update: Callable
    critic_steps: int
    batch_size: int


def _finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.asarray(True)


def _select(ok, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_ema(ema_decay):
    if ema_decay is None:
        return None
    d = float(ema_decay)
    if not 0.0 <= d < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
    return d


def _batch(key, data, n):
    return data[jax.random.randint(key, (n,), 0, data.shape[0])]


def _check_data(data, dim):
    if data.ndim != 2 or data.shape[1] != dim:
        raise ValueError(f"data must have shape (N, {dim}) to match the generator and critic, got {data.shape}")


def _gen_step(opt, ema_decay, state, loss_fn):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.generator)
    updates, opt_state = opt.update(grads, state.generator_opt, state.generator)
    params = optax.apply_updates(state.generator, updates)
    ema = params if ema_decay is None else optax.incremental_update(params, state.ema, 1.0 - ema_decay)
    ok = jnp.isfinite(loss) & _finite(grads) & _finite(params)
    new = state._replace(generator=params, generator_opt=opt_state, ema=ema, step=state.step + 1)
    return _select(ok, new, state), loss, optax.tree.norm(grads), ~ok, aux


def minmax(
    gen: Generator,
    crit: Critic,
    obj: AdversarialObjective,
    *,
    generator_optimizer: optax.GradientTransformation,
    critic_optimizer: optax.GradientTransformation,
    critic_steps: int = 5,
    batch_size: int = 256,
    ema_decay: float | None = None,
) -> MinMax:
    """Builds the jittable min-max update (module docstring).

    Args:
      gen: a :class:`~genlearn.gan.generators.Generator`.
      crit: a :class:`~genlearn.gan.critics.Critic` with ``crit.dim == gen.dim``.
      obj: an :class:`~genlearn.gan.objectives.AdversarialObjective`; when it
        asks for spectral normalisation the critic must provide it.
      generator_optimizer, critic_optimizer: optax transforms (TTUR: they may differ).
      critic_steps: ``m >= 1`` critic steps per generator step.
      batch_size: real and fake samples per step (``>= 2``).
      ema_decay: generator EMA decay in ``[0, 1)`` or None.

    Raises:
      ValueError: ``m < 1``, mismatched dimensions, spectral-norm mismatch, bad sizes.
    """
    m = _check_int(critic_steps, "critic_steps (m, critic steps per generator step)", 1)
    batch = _check_int(batch_size, "batch_size", 2)
    ema_decay = _check_ema(ema_decay)
    if gen.dim != crit.dim:
        raise ValueError(f"data dimension mismatch: generator outputs dim {gen.dim}, critic takes dim {crit.dim}")
    if obj.spectral_norm and not crit.spectral_norm:
        raise ValueError(f"objective {obj.name!r} needs a spectrally normalised critic (critic(..., spectral_norm=True))")

    def init(key):
        k_g, k_c, k_s = jax.random.split(key, 3)
        g = gen.init(k_g)
        c = crit.init(k_c)
        if obj.clip is not None:
            c = clip_params(c, obj.clip)
        return GANState(g, c, crit.init_state(k_s), generator_optimizer.init(g), critic_optimizer.init(c), g,
                        jnp.zeros((), jnp.int32))

    def critic_update(key, state, data):
        _check_data(data, gen.dim)
        k_real, k_z, k_gp = jax.random.split(key, 3)
        real = _batch(k_real, data, batch)
        fake = jax.lax.stop_gradient(gen.sample(state.generator, k_z, batch))

        def loss_fn(params):
            eff, cstate = crit.normalize(params, state.critic_state)
            f = lambda x: crit.apply(eff, x)
            r, s = f(real), f(fake)
            penalty = jnp.zeros(())
            if obj.gp_weight > 0:
                penalty += obj.gp_weight * gradient_penalty(f, real, fake, k_gp)
            if obj.r1_weight > 0:
                penalty += obj.r1_weight * r1_penalty(f, real)
            loss = obj.critic_loss(r, s) + penalty
            return loss, (obj.distance(r, s), penalty, cstate)

        (loss, (dist, penalty, cstate)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic)
        updates, opt_state = critic_optimizer.update(grads, state.critic_opt, state.critic)
        params = optax.apply_updates(state.critic, updates)
        if obj.clip is not None:
            params = clip_params(params, obj.clip)
        ok = jnp.isfinite(loss) & _finite(grads) & _finite(params)
        new = state._replace(critic=params, critic_opt=opt_state, critic_state=cstate)
        info = GANInfo(dist, loss, jnp.zeros(()), penalty, optax.tree.norm(grads), jnp.zeros(()), ~ok)
        return _select(ok, new, state), info

    def generator_update(key, state, data):
        _check_data(data, gen.dim)
        eff, _ = crit.normalize(state.critic, state.critic_state)
        eff = jax.lax.stop_gradient(eff)

        def loss_fn(params):
            return obj.generator_loss(crit.apply(eff, gen.sample(params, key, batch))), None

        new, loss, gnorm, bad, _ = _gen_step(generator_optimizer, ema_decay, state, loss_fn)
        z = jnp.zeros(())
        return new, GANInfo(z, z, loss, z, z, gnorm, bad)

    def step(key, state, data):
        k_c, k_g = jax.random.split(key)
        state, cinfo = jax.lax.scan(lambda s, k: critic_update(k, s, data), state, jax.random.split(k_c, m))
        state, ginfo = generator_update(k_g, state, data)
        last = jax.tree_util.tree_map(lambda v: v[-1], cinfo)
        return state, last._replace(generator_loss=ginfo.generator_loss,
                                    generator_grad_norm=ginfo.generator_grad_norm,
                                    nonfinite=jnp.any(cinfo.nonfinite) | ginfo.nonfinite)

    return MinMax(init, step, critic_update, generator_update, m, batch)


def weak_generator(
    gen: Generator,
    loss: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    *,
    optimizer: optax.GradientTransformation,
    batch_size: int = 256,
    ema_decay: float | None = None,
) -> MinMax:
    """A generator trained on a weak loss ``loss(fake, real, key)`` (e.g. GMMN on MMD^2), no critic.

    Same ``init`` / ``step`` / :class:`GANState` / :class:`GANInfo` as :func:`minmax`
    (critic fields empty, ``critic_steps = 0``, ``distance`` = the weak loss).
    """
    batch = _check_int(batch_size, "batch_size", 2)
    ema_decay = _check_ema(ema_decay)

    def init(key):
        g = gen.init(key)
        return GANState(g, None, {}, optimizer.init(g), None, g, jnp.zeros((), jnp.int32))

    def generator_update(key, state, data):
        _check_data(data, gen.dim)
        k_real, k_z, k_loss = jax.random.split(key, 3)
        real = _batch(k_real, data, batch)

        def loss_fn(params):
            return loss(gen.sample(params, k_z, batch), real, k_loss), None

        new, value, gnorm, bad, _ = _gen_step(optimizer, ema_decay, state, loss_fn)
        z = jnp.zeros(())
        return new, GANInfo(value, z, value, z, z, gnorm, bad)

    def critic_update(key, state, data):
        z = jnp.zeros(())
        return state, GANInfo(z, z, z, z, z, z, jnp.asarray(False))

    return MinMax(init, generator_update, critic_update, generator_update, 0, batch)
