"""Pushforward generators ``x = G_theta(z)``, ``z ~ Q`` (lecture, second half).

A generator maps a latent ``z in R^D`` drawn from a fixed base ``Q`` (standard
normal or uniform on ``[-1, 1]^D``) to ``x in R^d`` through a ``flax.linen``
MLP. Nothing requires ``D = d``: with ``D < d`` (the lecture's singular case)
the model distribution ``P_theta = G_theta # Q`` lives on a ``D``-dimensional
manifold and has no density, so it offers ``sample`` only and is trained with
weak losses

    L(P, P_theta) = sup_{f in F} E_P f - E_{P_theta} f,
    E_{P_theta} f = E_Q f(G_theta(z)) ~= (1/n) sum_i f(G_theta(z_i)).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from genlearn.nn import MLP

__all__ = ["Generator", "generator", "expectation", "BASES"]

BASES = ("normal", "uniform")
OUTPUTS = ("linear", "tanh")


class Generator(NamedTuple):
    """A pushforward model ``G_theta # Q`` (sample-only).

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, z) -> x`` for latents ``z (n, latent_dim)``, ``x (n, dim)``.
      sample: ``sample(params, key, n) -> (n, dim)``.
      sample_latent: ``sample_latent(key, n) -> (n, latent_dim)``, draws from ``Q``.
      latent_dim: ``D``.
      dim: ``d``.
      base: ``"normal"`` or ``"uniform"``.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    sample: Callable[[Any, jax.Array, int], jax.Array]
    sample_latent: Callable[[jax.Array, int], jax.Array]
    latent_dim: int
    dim: int
    base: str


def _check_dim(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def generator(
    data_dim: int,
    latent_dim: int,
    hidden: Sequence[int] = (128, 128, 128),
    base: str = "normal",
    *,
    activation: str | Callable = "relu",
    output: str = "linear",
) -> Generator:
    """An MLP generator ``G_theta: R^latent_dim -> R^data_dim``.

    Args:
      data_dim: ``d >= 1``.
      latent_dim: ``D >= 1``; any ``D`` (``D << d`` allowed: no density then).
      hidden: hidden-layer widths (each ``>= 1``).
      base: ``Q``: ``"normal"`` (``N(0, I_D)``) or ``"uniform"`` (``U[-1, 1]^D``).
      activation: hidden activation (a name from ``genlearn.nn.ACTIVATIONS``).
      output: ``"linear"`` or ``"tanh"`` (outputs in ``(-1, 1)``, for pixels
        rescaled to that box).

    Raises:
      ValueError: a dimension < 1, an empty/invalid hidden width, an unknown
        base or output.
    """
    d = _check_dim(data_dim, "data_dim")
    latent = _check_dim(latent_dim, "latent_dim")
    hidden = tuple(hidden)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty sequence of integers >= 1, got {hidden!r}")
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    net = MLP(hidden, d, activation)

    def sample_latent(key, n):
        if base == "normal":
            return jax.random.normal(key, (n, latent))
        return jax.random.uniform(key, (n, latent), minval=-1.0, maxval=1.0)

    def init(key):
        return net.init(key, jnp.zeros((1, latent)))

    def apply(params, z):
        if z.ndim != 2 or z.shape[1] != latent:
            raise ValueError(f"generator: latents must have shape (n, {latent}), got {z.shape}")
        x = net.apply(params, z)
        return jnp.tanh(x) if output == "tanh" else x

    def sample(params, key, n):
        return apply(params, sample_latent(key, n))

    return Generator(init, apply, sample, sample_latent, latent, d, base)


def expectation(gen: Generator, params: Any, f: Callable[[jax.Array], jax.Array], key: jax.Array,
                n: int) -> jax.Array:
    """Monte-Carlo ``E_{P_theta} f = (1/n) sum_i f(G_theta(z_i))``, ``z_i ~ Q`` iid.

    ``f`` maps a batch ``(n, d)`` to ``(n,)`` or ``(n, k)``; the mean is over the batch.
    Differentiable in ``params`` (reparameterisation), which is what weak losses need.
    """
    return jnp.mean(f(gen.sample(params, key, n)), axis=0)
