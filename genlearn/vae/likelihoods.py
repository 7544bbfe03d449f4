r"""Decoder likelihoods p(x | z): the observation models of a VAE.

A :class:`Likelihood` turns the decoder network's raw output for one latent
code, an array ``raw`` of shape ``(..., dim, params_per_dim)``, into a
distribution over x in R^dim that factorises over coordinates:

    log p(x | z) = sum_i log p(x_i | raw_i(z)).

All functions broadcast over the leading batch axes of ``raw`` and ``x``.

* :func:`gaussian` -- N(mu, sigma^2) per coordinate; sigma fixed (``scale=``) or
  learned, i.e. an output of the decoder (``log sigma`` soft-clamped below at
  ``min_log_scale`` so the density stays bounded).
* :func:`bernoulli` -- x in {0, 1}, logits from the decoder.
* :func:`discretized_logistic` -- x in {0, ..., L-1} (the 17 levels of the
  digits), the PixelCNN++ likelihood (Salimans et al. 2017) with
  ``num_mixtures`` logistic components: with the levels mapped to
  c_k = 2k/(L-1) - 1 in [-1, 1] and the half bin width h = 1/(L-1),

      P(x = k) = sum_j pi_j [F_j(c_k + h) - F_j(c_k - h)],    F_j = sigmoid((. - mu_j) / s_j),

  where the first bin extends to -inf and the last to +inf, so the masses of
  the L levels telescope to exactly 1.

Each likelihood also gives ``sample(raw, key)``, the conditional ``mean(raw)``
and ``to_distrax(raw)``, the same distribution built from distrax's own parts
(``Normal``, ``Bernoulli``, ``Quantized(Logistic)`` in a ``MixtureSameFamily``)
with event shape ``(dim,)``: an independent reference the tests check against.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Likelihood", "gaussian", "bernoulli", "discretized_logistic", "log_sub_sigmoid"]

Array = jax.Array

_LOG_2PI = float(np.log(2.0 * np.pi))


class Likelihood(NamedTuple):
    """An observation model p(x | z) that factorises over the ``dim`` coordinates.

    Attributes:
      name: "gaussian", "bernoulli" or "discretized_logistic".
      params_per_dim: P, the decoder outputs per coordinate (``raw`` has shape ``(..., dim, P)``).
      log_prob: ``(raw, x) -> (...)``, log p(x | z) summed over the coordinates.
      sample: ``(raw, key) -> (..., dim)``, a draw x ~ p(x | z).
      mean: ``(raw) -> (..., dim)``, E[x | z].
      to_distrax: ``(raw) -> distrax.Distribution`` with event shape ``(dim,)``.
      discrete_levels: L for a likelihood over {0, ..., L-1}; None for a density.
    """

    name: str
    params_per_dim: int
    log_prob: Callable[[Array, Array], Array]
    sample: Callable[[Array, Array], Array]
    mean: Callable[[Array], Array]
    to_distrax: Callable[[Array], object]
    discrete_levels: int | None = None


def _positive(value, what: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return value


def gaussian(scale: float | None = None, *, min_log_scale: float = -7.0) -> Likelihood:
    r"""Gaussian p(x | z) = prod_i N(x_i; mu_i, sigma_i^2).

    Args:
      scale: a fixed sigma > 0 shared by all coordinates (``raw`` is ``mu``,
        P = 1); None: learned, the decoder outputs ``(mu, log sigma)`` per
        coordinate (P = 2) and log sigma is smoothly bounded below,
        ``m + softplus(log sigma - m)`` with ``m = min_log_scale``.
    """
    fixed = scale is not None
    if fixed:
        scale = _positive(scale, "gaussian: scale")
    min_log_scale = float(min_log_scale)

    def split(raw):
        mu = raw[..., 0]
        if fixed:
            return mu, jnp.full_like(mu, np.log(scale))
        return mu, min_log_scale + jax.nn.softplus(raw[..., 1] - min_log_scale)

    def log_prob(raw, x):
        mu, log_s = split(raw)
        z = (x - mu) * jnp.exp(-log_s)
        return jnp.sum(-0.5 * z**2 - log_s - 0.5 * _LOG_2PI, axis=-1)

    def sample(raw, key):
        mu, log_s = split(raw)
        return mu + jnp.exp(log_s) * jax.random.normal(key, mu.shape, mu.dtype)

    def to_distrax(raw):
        import distrax

        mu, log_s = split(raw)
        return distrax.MultivariateNormalDiag(mu, jnp.exp(log_s))

    return Likelihood("gaussian", 1 if fixed else 2, log_prob, sample, lambda raw: split(raw)[0], to_distrax)


def bernoulli() -> Likelihood:
    r"""Bernoulli p(x | z) = prod_i sigma(l_i)^{x_i} sigma(-l_i)^{1 - x_i} for x in {0, 1}^dim; P = 1 (logits)."""

    def log_prob(raw, x):
        logits = raw[..., 0]
        return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits), axis=-1)

    def sample(raw, key):
        logits = raw[..., 0]
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)

    def to_distrax(raw):
        import distrax

        return distrax.Independent(distrax.Bernoulli(logits=raw[..., 0]), 1)

    return Likelihood("bernoulli", 1, log_prob, sample, lambda raw: jax.nn.sigmoid(raw[..., 0]), to_distrax)


def _log1mexp(d: Array) -> Array:
    """log(1 - e^d) for d <= 0, accurate on both sides of -log 2 (Maechler 2012)."""
    d = jnp.minimum(d, 0.0)
    safe = jnp.minimum(d, -1e-30)
    return jnp.where(d > -np.log(2.0), jnp.log(-jnp.expm1(safe)), jnp.log1p(-jnp.exp(safe)))


def log_sub_sigmoid(a: Array, b: Array) -> Array:
    r"""log(sigmoid(a) - sigmoid(b)) for a > b, stable in both tails.

    sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a); the form whose
    arguments are on the negative side (where log sigmoid(t) ~ t is exact) is
    used: log sigmoid(a) + log(1 - exp(log sigmoid(b) - log sigmoid(a))).
    """
    flip = (a + b) > 0
    hi, lo = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
    ls_hi, ls_lo = jax.nn.log_sigmoid(hi), jax.nn.log_sigmoid(lo)
    return ls_hi + _log1mexp(ls_lo - ls_hi)


def discretized_logistic(levels: int, num_mixtures: int = 1, *, min_log_scale: float = -7.0) -> Likelihood:
    r"""(Mixture of) discretised logistic p(x | z) over x in {0, ..., L-1} (PixelCNN++).

    Per coordinate the decoder outputs, for each of the M components, a logit
    of its weight (only when M > 1), a location mu_j (in the [-1, 1] units of
    the levels) and log s_j (bounded below like :func:`gaussian`'s), so
    P = 2 for M = 1 and 3M otherwise. The probability of level k is the mass
    of the logistic over the bin [c_k - h, c_k + h], the end bins open to
    -inf / +inf (module docstring), so the L masses sum to 1 exactly;
    ``log_prob`` rounds x to the nearest level and clips it to [0, L-1].

    Args:
      levels: L >= 2 (17 for the digits).
      num_mixtures: M >= 1 logistic components per coordinate.
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ValueError(f"discretized_logistic: levels must be an integer >= 2, got {levels!r}")
    if isinstance(num_mixtures, bool) or not isinstance(num_mixtures, (int, np.integer)) or num_mixtures < 1:
        raise ValueError(f"discretized_logistic: num_mixtures must be an integer >= 1, got {num_mixtures!r}")
    levels, m = int(levels), int(num_mixtures)
    half = 1.0 / (levels - 1)
    min_log_scale = float(min_log_scale)

    def split(raw):
        """(log weights (..., dim, M), mu (..., dim, M), log s (..., dim, M))."""
        if m == 1:
            mu, ls = raw[..., 0:1], raw[..., 1:2]
            logw = jnp.zeros_like(mu)
        else:
            logw = jax.nn.log_softmax(raw[..., :m], axis=-1)
            mu, ls = raw[..., m:2 * m], raw[..., 2 * m:3 * m]
        return logw, mu, min_log_scale + jax.nn.softplus(ls - min_log_scale)

    def _component_log_mass(k, mu, log_s):
        """log P_j(x = k) for integer-valued k (..., dim, 1) against components (..., dim, M)."""
        c = 2.0 * k * half - 1.0
        inv_s = jnp.exp(-log_s)
        upper = (c + half - mu) * inv_s
        lower = (c - half - mu) * inv_s
        first, last = k <= 0, k >= levels - 1
        middle = log_sub_sigmoid(jnp.where(first | last, 1.0, upper), jnp.where(first | last, 0.0, lower))
        return jnp.where(first, jax.nn.log_sigmoid(upper), jnp.where(last, jax.nn.log_sigmoid(-lower), middle))

    def log_prob_levels(raw, x):
        """log P(x_i = level) per coordinate, (..., dim)."""
        logw, mu, log_s = split(raw)
        k = jnp.clip(jnp.round(x), 0, levels - 1)[..., None].astype(mu.dtype)
        return jax.nn.logsumexp(logw + _component_log_mass(k, mu, log_s), axis=-1)

    def log_prob(raw, x):
        return jnp.sum(log_prob_levels(raw, x), axis=-1)

    def _all_levels(raw):
        """log P(x_i = k) for every level k: (..., dim, L)."""
        ks = jnp.arange(levels, dtype=raw.dtype)
        return jax.vmap(lambda k: log_prob_levels(raw, jnp.full(raw.shape[:-1], k)), out_axes=-1)(ks)

    def sample(raw, key):
        return jax.random.categorical(key, _all_levels(raw), axis=-1).astype(raw.dtype)

    def mean(raw):
        return jnp.sum(jnp.exp(_all_levels(raw)) * jnp.arange(levels, dtype=raw.dtype), axis=-1)

    def to_distrax(raw):
        """distrax's own quantisation Y = ceil(X) of a logistic in pixel units, X shifted by half a bin."""
        import distrax

        logw, mu, log_s = split(raw)
        loc = (mu + 1.0) / (2.0 * half) - 0.5  # P(Y = k) = P(k - 1 < X <= k) = P(level k's bin)
        comp = distrax.Quantized(distrax.Logistic(loc, jnp.exp(log_s) / (2.0 * half)), low=0.0,
                                 high=float(levels - 1))
        if m == 1:
            return distrax.Independent(distrax.Quantized(distrax.Logistic(loc[..., 0], jnp.exp(log_s[..., 0])
                                                                          / (2.0 * half)), low=0.0,
                                                         high=float(levels - 1)), 1)
        return distrax.Independent(distrax.MixtureSameFamily(distrax.Categorical(logits=logw), comp), 1)

    return Likelihood("discretized_logistic", 2 if m == 1 else 3 * m, log_prob, sample, mean, to_distrax, levels)
