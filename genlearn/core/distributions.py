"""Base distributions Q for pushforward models, as NamedTuples of pure functions.

``log_prob(params, z)`` acts on one example of shape (dim,) (vmap for batches,
like bijectors); ``sample(params, key, n)`` returns an (n, dim) array.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import _check_dim, check_example

__all__ = [
    "Distribution",
    "standard_normal",
    "diag_gaussian",
    "logistic",
    "uniform",
    "student_t",
    "gaussian_mixture",
    "make_base",
]

Params = Any
Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


class Distribution(NamedTuple):
    """A base distribution.

    Attributes:
      init: ``init(key) -> params`` (``{}`` for a fixed distribution).
      log_prob: ``(params, z) -> scalar`` for z of shape (dim,).
      sample: ``(params, key, n) -> (n, dim)``.
      dim: the dimension.
      fit: None, or a data-dependent initialisation ``fit(key, z) -> params`` from a batch ``z`` ``(n, dim)``
        of base-space points (`genlearn.core.from_flow`'s ``init(key, data)`` maps the data through the
        freshly initialised bijector's inverse and calls it; e.g. EM for `gaussian_mixture`).
    """

    init: Callable[[Array], Params]
    log_prob: Callable[[Params, Array], Array]
    sample: Callable[[Params, Array, int], Array]
    dim: int
    fit: Callable[[Array, Array], Params] | None = None


def _fixed(key):
    del key
    return {}


def _checked(log_prob, dim):
    def checked(params, z):
        check_example(z, dim, "base log_prob")
        return log_prob(params, z)

    return checked


def standard_normal(dim: int) -> Distribution:
    """N(0, I): log q(z) = -0.5 ||z||^2 - (d/2) log 2 pi."""
    dim = _check_dim(dim)

    def log_prob(params, z):
        del params
        return -0.5 * jnp.sum(z**2) - 0.5 * dim * _LOG_2PI

    def sample(params, key, n):
        del params
        return jax.random.normal(key, (n, dim))

    return Distribution(_fixed, _checked(log_prob, dim), sample, dim)


def diag_gaussian(dim: int) -> Distribution:
    """N(mu, diag(sigma^2)) with learnable ``mean`` and ``log_std`` (start at N(0, I))."""
    dim = _check_dim(dim)

    def init(key):
        del key
        return {"mean": jnp.zeros((dim,)), "log_std": jnp.zeros((dim,))}

    def log_prob(params, z):
        mean = params["mean"].astype(z.dtype)
        log_std = params["log_std"].astype(z.dtype)
        u = (z - mean) * jnp.exp(-log_std)
        return -0.5 * jnp.sum(u**2) - jnp.sum(log_std) - 0.5 * dim * _LOG_2PI

    def sample(params, key, n):
        eps = jax.random.normal(key, (n, dim))
        return params["mean"] + jnp.exp(params["log_std"]) * eps

    return Distribution(init, _checked(log_prob, dim), sample, dim)


def logistic(dim: int) -> Distribution:
    """Independent standard logistics, the NICE prior: log q(z) = -sum softplus(z) + softplus(-z)."""
    dim = _check_dim(dim)

    def log_prob(params, z):
        del params
        return -jnp.sum(jax.nn.softplus(z) + jax.nn.softplus(-z))

    def sample(params, key, n):
        del params
        return jax.random.logistic(key, (n, dim))

    return Distribution(_fixed, _checked(log_prob, dim), sample, dim)


def uniform(dim: int, low: float = 0.0, high: float = 1.0) -> Distribution:
    """Uniform on the box [low, high]^dim; log q = -d log(high - low) inside, -inf outside."""
    dim = _check_dim(dim)
    if not high > low:
        raise ValueError(f"uniform: need high > low, got low={low}, high={high}")
    log_vol = dim * math.log(high - low)

    def log_prob(params, z):
        del params
        inside = jnp.all((z >= low) & (z <= high))
        return jnp.where(inside, -log_vol, -jnp.inf).astype(z.dtype)

    def sample(params, key, n):
        del params
        return jax.random.uniform(key, (n, dim), minval=low, maxval=high)

    return Distribution(_fixed, _checked(log_prob, dim), sample, dim)


def student_t(dim: int, df: float | None = None) -> Distribution:
    """The multivariate Student-t with ``df`` degrees of freedom, location 0 and scale I.

    log q(z) = log G((df + d)/2) - log G(df/2) - (d/2) log(df pi) - ((df + d)/2) log(1 + |z|^2 / df).
    Its tails are polynomial, so a flow with this base is robust to points it maps
    far out: their negative log-likelihood grows like log|z| (not |z|^2 / 2) and
    the gradient of log q is bounded by (df + d) / (2 sqrt(df)) ("Studentising
    flows", Alexanderson & Henter 2020; learnable tails: Jaini et al. 2020). Unlike
    N(0, I), its coordinates are dependent, which also breaks the saddle an
    identity-initialised flow sits on when the data's coordinates are
    independent. ``df=None`` takes df = 5 d (>= 10): its cost on Gaussian data
    (KL to the best rescaled N(0, I) fit) is about 0.01 nats in every dimension.
    Samples: N(0, I) / sqrt(chi2_df / df).
    """
    dim = _check_dim(dim)
    df = float(max(5.0 * dim, 10.0) if df is None else df)
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"student_t: df must be a finite number > 0, got {df}")
    const = math.lgamma((df + dim) / 2) - math.lgamma(df / 2) - 0.5 * dim * math.log(df * math.pi)

    def log_prob(params, z):
        del params
        return const - 0.5 * (df + dim) * jnp.log1p(jnp.sum(z**2) / df)

    def sample(params, key, n):
        del params
        k_normal, k_chi2 = jax.random.split(key)
        g = jax.random.normal(k_normal, (n, dim))
        chi2 = 2.0 * jax.random.gamma(k_chi2, df / 2, (n, 1))
        return g * jnp.sqrt(df / chi2)

    return Distribution(_fixed, _checked(log_prob, dim), sample, dim)


def gaussian_mixture(dim: int, components: int = 8, *, spread: float = 1.0) -> Distribution:
    """A learnable mixture of K diagonal Gaussians: sum_k w_k N(mu_k, diag(sigma_k^2)).

    Params ``{"logits": (K,), "means": (K, dim), "log_std": (K, dim)}``; ``init(key)`` gives equal
    weights, unit scales and means drawn from N(0, spread^2 I), so the components start apart and
    each can move to a mode. A flow on this base only has to warp the data's modes onto the
    components' rather than split one Gaussian into many (a multimodal base: e.g. normflows'
    ``GaussianMixture``; Stimper et al. 2022 show affine flows failing on multimodal 2-D targets with a
    unimodal base). ``log_prob`` is a logsumexp over the components; ``sample`` draws a component, then
    a Gaussian (not reparameterised through the component choice). ``fit(key, z)`` starts the mixture at a
    diagonal Gaussian mixture fitted by EM to a batch of base-space points (`genlearn.classical.gmm`,
    k-means++ seeding, float64): a flow whose bijector starts near the identity then starts at a GMM of
    the data, and learns the rest.
    """
    dim = _check_dim(dim)
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"gaussian_mixture: components must be an int >= 1, got {components!r}")
    if not (math.isfinite(spread) and spread >= 0):
        raise ValueError(f"gaussian_mixture: spread must be a finite number >= 0, got {spread}")
    k = components
    # each component is a diag_gaussian; its log-density mapped over the stacked components
    per_component = jax.vmap(diag_gaussian(dim).log_prob, ({"mean": 0, "log_std": 0}, None))

    def init(key):
        return {"logits": jnp.zeros((k,)), "means": spread * jax.random.normal(key, (k, dim)),
                "log_std": jnp.zeros((k, dim))}

    def log_prob(params, z):
        per = per_component({"mean": params["means"], "log_std": params["log_std"]}, z)
        return jax.nn.logsumexp(per + jax.nn.log_softmax(params["logits"].astype(z.dtype)))

    def sample(params, key, n):
        k_component, k_noise = jax.random.split(key)
        c = jax.random.categorical(k_component, params["logits"], shape=(n,))
        eps = jax.random.normal(k_noise, (n, dim))
        return params["means"][c] + jnp.exp(params["log_std"][c]) * eps

    def fit(key, z):
        from genlearn.classical.gmm import gmm  # classical is built on core; imported when used

        z = np.asarray(z)
        if z.ndim != 2 or z.shape[1] != dim:
            raise ValueError(f"gaussian_mixture.fit: expected a batch of shape (n, {dim}), got {z.shape}")
        if z.shape[0] < k:
            raise ValueError(f"gaussian_mixture.fit: {k} components need at least {k} points, got {z.shape[0]}")
        em = gmm(k, "diag").fit(key, z)  # diag prec_chol is log(1 / sigma)
        return {"logits": em["logits"], "means": em["means"], "log_std": -em["prec_chol"]}

    return Distribution(init, _checked(log_prob, dim), sample, dim, fit)


_BASES = {
    "normal": standard_normal,
    "diag_gaussian": diag_gaussian,
    "logistic": logistic,
    "uniform": uniform,
    "student_t": student_t,
    "mixture": gaussian_mixture,
}


def make_base(base: str | Distribution, dim: int) -> Distribution:
    """Returns ``base`` if it is a Distribution, else builds one by name."""
    if isinstance(base, Distribution):
        if base.dim != dim:
            raise ValueError(f"base distribution has dim {base.dim}, model has dim {dim}")
        return base
    if base not in _BASES:
        raise ValueError(f"unknown base distribution {base!r}; choose one of {sorted(_BASES)}")
    return _BASES[base](dim)
