"""Adversarial objectives: the critic is the test function of a weak metric.

With critic outputs ``r = f(x_real)`` and ``s = f(G(z))`` (batches), and
``sp(t) = log(1 + e^t)`` (so ``log D = -sp(-f)`` for ``D = sigmoid(f)``):

| name        | critic minimises                      | generator minimises | weak distance estimate      |
|-------------|---------------------------------------|---------------------|-----------------------------|
| ``js``      | ``E sp(-r) + E sp(s)``                | ``-E sp(s)`` (= E log(1-D)) | ``(log 4 - critic loss)/2`` ~ JS |
| ``ns``      | same as js                            | ``E sp(-s)`` (= -E log D)   | same as js                  |
| ``wgan-clip`` | ``E s - E r``, weights clipped to ``[-delta, delta]`` | ``-E s`` | ``E r - E s``       |
| ``wgan-gp`` | ``E s - E r + lambda E(||grad f(x_hat)|| - 1)^2`` | ``-E s``    | ``E r - E s``               |
| ``sn``      | ``E s - E r``, spectrally normalised critic | ``-E s``      | ``E r - E s``               |
| ``hinge``   | ``E relu(1 - r) + E relu(1 + s)`` (spectral norm) | ``-E s``  | ``E r - E s``               |

``js`` is the original minimax GAN (Goodfellow et al. 2014), ``ns`` its
non-saturating generator loss; WGAN (Arjovsky et al. 2017), WGAN-GP
(Gulrajani et al. 2017, ``x_hat = t x_real + (1-t) x_fake``, ``t ~ U[0,1]``),
SN-GAN / hinge (Miyato et al. 2018). Any of them takes an ``r1`` penalty
``(gamma/2) E_real ||grad f(x)||^2`` (Mescheder et al. 2018).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["OBJECTIVES", "AdversarialObjective", "objective", "gradient_penalty", "r1_penalty",
           "critic_input_grad_norms"]

OBJECTIVES = ("js", "ns", "wgan-clip", "wgan-gp", "sn", "hinge")


class AdversarialObjective(NamedTuple):
    """An adversarial objective: losses on critic outputs plus the critic's constraint.

    Attributes:
      name: one of :data:`OBJECTIVES`.
      critic_loss: ``(f_real (n,), f_fake (m,)) -> scalar`` without penalties.
      generator_loss: ``f_fake (m,) -> scalar``.
      distance: ``(f_real, f_fake) -> scalar``: the critic's estimate of the weak distance.
      gp_weight: WGAN-GP weight ``lambda`` (0: none).
      r1_weight: R1 weight ``gamma`` (0: none).
      clip: weight-clipping ``delta`` (None: none).
      spectral_norm: whether the critic must be spectrally normalised.
    """

    name: str
    critic_loss: Callable
    generator_loss: Callable
    distance: Callable
    gp_weight: float
    r1_weight: float
    clip: float | None
    spectral_norm: bool


def _js_critic(r, s):
    return jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(s))


def _js_distance(r, s):
    return 0.5 * (math.log(4.0) - _js_critic(r, s))


def _w_critic(r, s):
    return jnp.mean(s) - jnp.mean(r)


def _w_distance(r, s):
    return jnp.mean(r) - jnp.mean(s)


def _hinge_critic(r, s):
    return jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + s))


def _neg_mean(s):
    return -jnp.mean(s)


_TABLE = {
    # name: (critic_loss, generator_loss, distance, gp, clip, spectral_norm)
    "js": (_js_critic, lambda s: -jnp.mean(jax.nn.softplus(s)), _js_distance, 0.0, None, False),
    "ns": (_js_critic, lambda s: jnp.mean(jax.nn.softplus(-s)), _js_distance, 0.0, None, False),
    "wgan-clip": (_w_critic, _neg_mean, _w_distance, 0.0, 0.01, False),
    "wgan-gp": (_w_critic, _neg_mean, _w_distance, 10.0, None, False),
    "sn": (_w_critic, _neg_mean, _w_distance, 0.0, None, True),
    "hinge": (_hinge_critic, _neg_mean, _w_distance, 0.0, None, True),
}


def _nonneg(value, name) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def objective(
    name: str,
    *,
    gp_weight: float | None = None,
    r1_weight: float = 0.0,
    clip: float | None = None,
    spectral_norm: bool | None = None,
) -> AdversarialObjective:
    """An adversarial objective by name (table in the module docstring).

    Args:
      name: one of :data:`OBJECTIVES`.
      gp_weight: gradient-penalty ``lambda`` (default 10 for ``wgan-gp``, else 0).
      r1_weight: R1 ``gamma >= 0``.
      clip: clipping ``delta > 0`` (default 0.01 for ``wgan-clip``, else none).
      spectral_norm: override the default (True for ``sn`` and ``hinge``).

    Raises:
      ValueError: unknown name, negative penalty weights, ``clip <= 0``.
    """
    if name not in _TABLE:
        raise ValueError(f"unknown adversarial objective {name!r}; choose one of {OBJECTIVES}")
    c_loss, g_loss, dist, gp0, clip0, sn0 = _TABLE[name]
    gp = _nonneg(gp0 if gp_weight is None else gp_weight, "gp_weight (gradient-penalty weight)")
    r1 = _nonneg(r1_weight, "r1_weight (R1 penalty weight)")
    if clip is None:
        clip = clip0
    if clip is not None:
        clip = float(clip)
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip (weight-clipping delta) must be > 0, got {clip!r}")
    sn = sn0 if spectral_norm is None else bool(spectral_norm)
    return AdversarialObjective(name, c_loss, g_loss, dist, gp, r1, clip, sn)


def critic_input_grad_norms(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """``||grad_x f(x_i)||`` for each row of ``x (n, d)``; ``f`` maps ``(n, d) -> (n,)`` row-wise."""
    grads = jax.vmap(jax.grad(lambda xi: f(xi[None])[0]))(x)
    return jnp.sqrt(jnp.sum(grads * grads, axis=1) + 1e-12)


def gradient_penalty(f: Callable, real: jax.Array, fake: jax.Array, key: jax.Array,
                     one_sided: bool = False) -> jax.Array:
    """WGAN-GP: ``E_t (||grad f(t x_real + (1 - t) x_fake)|| - 1)^2``, ``t ~ U[0, 1]`` per pair.

    ``one_sided``: ``E_t max(||grad f|| - 1, 0)^2``, penalising only slopes above 1
    (Petzka et al. 2018).
    """
    t = jax.random.uniform(key, (real.shape[0], 1))
    x_hat = t * real + (1.0 - t) * fake
    excess = critic_input_grad_norms(f, x_hat) - 1.0
    return jnp.mean((jnp.maximum(excess, 0.0) if one_sided else excess) ** 2)


def r1_penalty(f: Callable, real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al. 2018): ``(1/2) E_real ||grad f(x)||^2`` (times ``gamma`` in the loss)."""
    grads = jax.vmap(jax.grad(lambda xi: f(xi[None])[0]))(real)
    return 0.5 * jnp.mean(jnp.sum(grads * grads, axis=1))
