"""The GAN min-max update as a `genlearn.train.Trainer` (blackjax-style ``init`` / ``step``).

One ``step(state, batch, key)`` takes ``m * b`` real rows and performs ``m``
critic steps (``lax.scan`` over ``batch.reshape(m, b, d)``), each ascending
the critic's weak-distance objective on its ``b`` real rows and ``b`` fresh
generator samples, then one generator step descending the generator loss
against the updated critic:

    phi  <- phi  - opt_c(grad_phi  [critic_loss(f_phi(x), f_phi(G_theta(z))) + penalties])   (m times)
    theta <- theta - opt_g(grad_theta generator_loss(f_phi(G_theta(z))))

with separate optax optimisers (two time-scale update rule, Heusel et al.
2017), optional weight clipping or spectral normalisation of the critic, an
optional exponential moving average of the generator's parameters
(Yazici et al. 2019), and an ``info`` record whose ``distance`` is the
critic's estimate of the weak distance: the progress monitor the lecture
says the min-max game otherwise lacks (also ``info.loss``, the value the driver
monitors). `genlearn.train.run_trainer` draws the real rows (``batches_per_step
= m``); `train_gan` is a shorthand for it.

A non-finite loss, gradient or update of either player is rejected by
`genlearn.train.guarded_update` (that half of the state is kept and
``info.nonfinite`` is set).

``weak_generator`` gives a critic-free generator trained on a weak loss
(MMD, energy, Sinkhorn, ...) the same interface.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from genlearn.gan.critics import Critic, clip_params
from genlearn.gan.generators import Generator
from genlearn.gan.objectives import AdversarialObjective, gradient_penalty, r1_penalty
from genlearn.train import guarded_update, keep_if

__all__ = ["GANState", "GANInfo", "MinMax", "minmax", "weak_generator"]


class GANState(NamedTuple):
    """Everything the min-max loop carries (a pytree).

    Attributes:
      generator: generator params ``theta``.
      critic: critic params ``phi`` (None for ``weak_generator``).
      critic_state: spectral-norm power-iteration vectors (``{}`` without).
      generator_opt, critic_opt: optax states.
      ema: EMA of ``theta`` (equal to ``generator`` when EMA is off).
      step: number of accepted generator steps (int32).
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
      loss: what the driver monitors: ``distance``.
      distance: the critic's weak-distance estimate on the last critic batch
        (for ``weak_generator``: the weak loss itself).
      critic_loss: critic objective incl. penalties (last critic step).
      generator_loss: generator objective.
      penalty: the penalty part of ``critic_loss`` (GP + R1).
      critic_grad_norm, generator_grad_norm: global gradient norms.
      nonfinite: True when an update was rejected as non-finite.
    """

    loss: jax.Array
    distance: jax.Array
    critic_loss: jax.Array
    generator_loss: jax.Array
    penalty: jax.Array
    critic_grad_norm: jax.Array
    generator_grad_norm: jax.Array
    nonfinite: jax.Array


class MinMax(NamedTuple):
    """A `genlearn.train.Trainer` with the two halves of the step exposed.

    ``init(key, params=None) -> GANState`` (``params``: generator params; None:
    ``gen.init``); ``step(state, batch, key) -> (state, GANInfo)`` with ``batch``
    of ``critic_steps * b`` rows; ``params(state)``: the EMA generator params
    when EMA is on, else the generator's. ``critic_update`` and
    ``generator_update`` (same signature as ``step``, ``b`` rows) are the two
    halves, for loops that call them separately; ``batch_size`` is the ``b``
    the factory was given (the driver's default).
    """

    init: Callable
    step: Callable
    params: Callable
    loss: None
    batches_per_step: int
    critic_update: Callable
    generator_update: Callable
    critic_steps: int
    batch_size: int


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


def _check_batch(batch, dim, m=1):
    if batch.ndim != 2 or batch.shape[1] != dim or batch.shape[0] % m:
        raise ValueError(f"batch must have shape (N, {dim}) to match the generator and critic, with N a multiple "
                         f"of the {m} critic step(s), got {batch.shape}")
    return batch.shape[0] // m


def _gen_step(opt, ema_decay, state, loss_fn):
    loss, grads = jax.value_and_grad(loss_fn)(state.generator)
    params, opt_state, ok = guarded_update(opt, loss, grads, state.generator, state.generator_opt)
    ema = params if ema_decay is None else keep_if(ok, optax.incremental_update(params, state.ema, 1.0 - ema_decay),
                                                   state.ema)
    new = state._replace(generator=params, generator_opt=opt_state, ema=ema, step=state.step + ok.astype(jnp.int32))
    return new, loss, optax.tree.norm(grads), ~ok


def _params(ema_decay):
    return (lambda state: state.generator) if ema_decay is None else (lambda state: state.ema)


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
    """Builds the jittable min-max trainer (module docstring).

    Args:
      gen: a :class:`~genlearn.gan.generators.Generator`.
      crit: a :class:`~genlearn.gan.critics.Critic` with ``crit.dim == gen.dim``.
      obj: an :class:`~genlearn.gan.objectives.AdversarialObjective`; when it
        asks for spectral normalisation the critic must provide it.
      generator_optimizer, critic_optimizer: optax transforms (TTUR: they may differ).
      critic_steps: ``m >= 1`` critic steps per generator step.
      batch_size: real and fake samples per critic step (``>= 2``), for `train_gan`.
      ema_decay: generator EMA decay in ``[0, 1)`` or None.

    Raises:
      ValueError: ``m < 1``, mismatched dimensions, spectral-norm mismatch, bad sizes.
    """
    m = _check_int(critic_steps, "critic_steps (m, critic steps per generator step)", 1)
    batch_size = _check_int(batch_size, "batch_size", 2)
    ema_decay = _check_ema(ema_decay)
    if gen.dim != crit.dim:
        raise ValueError(f"data dimension mismatch: generator outputs dim {gen.dim}, critic takes dim {crit.dim}")
    if obj.spectral_norm and not crit.spectral_norm:
        raise ValueError(f"objective {obj.name!r} needs a spectrally normalised critic (critic(..., spectral_norm=True))")
    clip = None if obj.clip is None else (lambda c: clip_params(c, obj.clip))

    def init(key, params=None):
        k_g, k_c, k_s = jax.random.split(key, 3)
        g = gen.init(k_g) if params is None else params
        c = crit.init(k_c)
        c = c if clip is None else clip(c)
        return GANState(g, c, crit.init_state(k_s), generator_optimizer.init(g), critic_optimizer.init(c), g,
                        jnp.zeros((), jnp.int32))

    def critic_update(state, real, key):
        b = _check_batch(real, gen.dim)
        k_z, k_gp = jax.random.split(key)
        fake = jax.lax.stop_gradient(gen.sample(state.generator, k_z, b))

        def loss_fn(params):
            eff, cstate = crit.normalize(params, state.critic_state)
            f = lambda x: crit.apply(eff, x)  # noqa: E731
            r, s = f(real), f(fake)
            penalty = jnp.zeros(())
            if obj.gp_weight > 0:
                penalty += obj.gp_weight * gradient_penalty(f, real, fake, k_gp)
            if obj.r1_weight > 0:
                penalty += obj.r1_weight * r1_penalty(f, real)
            return obj.critic_loss(r, s) + penalty, (obj.distance(r, s), penalty, cstate)

        (loss, (dist, penalty, cstate)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic)
        params, opt_state, ok = guarded_update(critic_optimizer, loss, grads, state.critic, state.critic_opt, clip)
        state = state._replace(critic=params, critic_opt=opt_state,
                               critic_state=keep_if(ok, cstate, state.critic_state))
        z = jnp.zeros(())
        return state, GANInfo(dist, dist, loss, z, penalty, optax.tree.norm(grads), z, ~ok)

    def generator_update(state, batch, key):
        b = _check_batch(batch, gen.dim)
        eff = jax.lax.stop_gradient(crit.normalize(state.critic, state.critic_state)[0])
        loss_fn = lambda params: obj.generator_loss(crit.apply(eff, gen.sample(params, key, b)))  # noqa: E731
        state, loss, gnorm, bad = _gen_step(generator_optimizer, ema_decay, state, loss_fn)
        z = jnp.zeros(())
        return state, GANInfo(z, z, z, loss, z, z, gnorm, bad)

    def step(state, batch, key):
        b = _check_batch(batch, gen.dim, m)
        k_c, k_g = jax.random.split(key)
        reals = batch.reshape(m, b, gen.dim)
        state, cinfo = jax.lax.scan(lambda s, xk: critic_update(s, *xk), state, (reals, jax.random.split(k_c, m)))
        state, ginfo = generator_update(state, reals[-1], k_g)
        last = jax.tree_util.tree_map(lambda v: v[-1], cinfo)
        return state, last._replace(generator_loss=ginfo.generator_loss,
                                    generator_grad_norm=ginfo.generator_grad_norm,
                                    nonfinite=jnp.any(cinfo.nonfinite) | ginfo.nonfinite)

    return MinMax(init, step, _params(ema_decay), None, m, critic_update, generator_update, m, batch_size)


def weak_generator(
    gen: Generator,
    loss: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    *,
    optimizer: optax.GradientTransformation,
    batch_size: int = 256,
    ema_decay: float | None = None,
) -> MinMax:
    """A generator trained on a weak loss ``loss(fake, real, key)`` (e.g. GMMN on MMD^2), no critic.

    The same :class:`MinMax` / :class:`GANState` / :class:`GANInfo` as :func:`minmax`
    (critic fields empty, ``critic_steps = 0``, ``batches_per_step = 1``;
    ``loss`` and ``distance`` are the weak loss). ``step(state, batch, key)``
    compares ``b`` generator samples with the ``b`` rows of ``batch``.
    """
    batch_size = _check_int(batch_size, "batch_size", 2)
    ema_decay = _check_ema(ema_decay)

    def init(key, params=None):
        g = gen.init(key) if params is None else params
        return GANState(g, None, {}, optimizer.init(g), None, g, jnp.zeros((), jnp.int32))

    def step(state, batch, key):
        b = _check_batch(batch, gen.dim)
        k_z, k_loss = jax.random.split(key)
        loss_fn = lambda params: loss(gen.sample(params, k_z, b), batch, k_loss)  # noqa: E731
        state, value, gnorm, bad = _gen_step(optimizer, ema_decay, state, loss_fn)
        z = jnp.zeros(())
        return state, GANInfo(value, value, z, value, z, z, gnorm, bad)

    def critic_update(state, batch, key):
        z = jnp.zeros(())
        return state, GANInfo(z, z, z, z, z, z, z, jnp.asarray(False))

    return MinMax(init, step, _params(ema_decay), None, 1, critic_update, step, 0, batch_size)
