r"""Variational autoencoders: the ELBO, beta-VAE, the IWAE bound and a flow posterior.

A latent-variable model p(x) = int p(x | z) p(z) dz with the prior
p(z) = N(0, I_D) (or a learnable ``prior``, e.g. a Gaussian mixture, or the
VampPrior's mixture of posteriors at learnable pseudo-inputs), a
decoder likelihood p(x | z) (`genlearn.vae.likelihoods`) and an amortised
posterior q(z | x) (Kingma & Welling 2014):

* **Gaussian posterior**: z = mu(x) + sigma(x) * eps, eps ~ N(0, I) (the
  reparameterisation trick), mu and log sigma two dense heads on the
  encoder's features h(x).
* **Flow posterior** (Kingma et al. 2016): that Gaussian draw z_0 pushed
  through a conditional bijector whose context is h(x), z = f(z_0; h(x)),
  log q(z | x) = log N(z_0; mu, sigma^2) - log|det dz/dz_0|. Any genlearn
  bijector on R^D with ``context_dim`` 0 or F fits; :func:`iaf_posterior`
  builds the paper's IAF from `genlearn.flows.iaf` (sampling, all the bound
  needs, is one MADE pass per layer; each layer starts at the identity).

With importance weights w_j = p(x | z_j) p(z_j) / q(z_j | x), z_j ~ q(. | x):

    ELBO_beta(x) = E_q[log p(x | z)] - beta KL(q(z | x) || p(z))
                 ~= (1/m) sum_j [log p(x | z_j) + beta (log p(z_j) - log q(z_j | x))]
    IWAE_k(x)    = E[log (1/k) sum_{j<=k} w_j]  <=  log p(x)        (Burda et al. 2016)

IWAE_1 = ELBO_1 (beta = 1), IWAE_k increases with k and tends to log p(x);
the *bound gap* IWAE_k - ELBO (:func:`bounds`) measures how far q(z | x) is
from the true posterior (Cremer et al. 2018, the inference gap's estimate).
The IWAE bound with k = 1000 is the log-likelihood the VAE reports: the k
samples are drawn in chunks of at most ``max_rows`` decoder rows
(``lax.map``), so k = 1000 on a whole test set fits in memory.

Params are ``{"encoder": ..., "decoder": ...[, "flow": ...][, "prior": ...]
[, "pseudo_inputs": ...]}`` (flax params; the prior's; the VampPrior's (K, dim)
array). Every function takes batches ``(n, dim)`` and jit-compiles; dtypes
follow the data and params (float64 under ``jax.enable_x64``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import Bijector
from genlearn.core.distributions import Distribution
from genlearn.core.flow import check_batch
from genlearn.vae.likelihoods import Likelihood, gaussian
from genlearn.vae.networks import MLPDecoder, MLPEncoder

__all__ = ["VAE", "Bounds", "vae", "iaf_posterior", "features_dim", "bounds", "iwae_loss", "annealed_loss", "posterior_to_distrax",
           "decoder_to_distrax"]

Array = jax.Array
PyTree = Any
_LOG_2PI = float(np.log(2.0 * np.pi))


class VAE(NamedTuple):
    """A VAE as pure functions over ``params`` (module docstring).

    Attributes:
      init: ``init(key) -> params``.
      encode: ``encode(params, x) -> (mu, log_sigma, h)``, the Gaussian posterior's
        ``(n, D)`` mean and log-std and the encoder features ``(n, F)``.
      sample_posterior: ``(params, x, key, m) -> (z, log_q)``: m draws per row,
        ``(n, m, D)`` and log q(z | x) ``(n, m)``.
      decode: ``decode(params, z) -> raw`` likelihood parameters ``(..., dim, P)``.
      log_weights: ``(params, x, key, m) -> (log_px_z, log_pz, log_q)``, each ``(n, m)``.
      elbo: ``elbo(params, x, key, num_samples=1, beta=None) -> (n,)``: the
        Monte-Carlo ELBO_beta (``beta=None``: the model's beta; the analytic KL
        of a Gaussian posterior when built with ``analytic_kl=True``).
      iwae: ``iwae(params, x, key, k) -> (n,)``: the IWAE_k bound, k >= 1.
      log_prob: ``log_prob(params, x, key) -> (n,)``: IWAE with ``eval_samples``.
      sample: ``sample(params, key, n) -> (n, dim)``: z ~ p(z), x ~ p(x | z).
      sample_mean: ``(params, key, n) -> (n, dim)``: E[x | z] for z ~ p(z).
      loss: ``loss(params, batch, key) -> scalar``, the mean negative ELBO_beta:
        the `genlearn.train.gradient_trainer` loss.
      dim, latent_dim, features: data, latent and encoder-feature widths.
      likelihood: the decoder's :class:`~genlearn.vae.likelihoods.Likelihood`.
      beta: the KL weight of ``loss``.
      flow: the posterior's bijector, or None for the Gaussian posterior.
      eval_samples: k of ``log_prob``.
      prior: the learnable prior's `genlearn.core.Distribution`, or None for N(0, I).
      pseudo_inputs: K of the VampPrior (``params["pseudo_inputs"]``), 0 without one.
    """

    init: Callable[[Array], PyTree]
    encode: Callable
    sample_posterior: Callable
    decode: Callable
    log_weights: Callable
    elbo: Callable
    iwae: Callable
    log_prob: Callable
    sample: Callable
    sample_mean: Callable
    loss: Callable
    dim: int
    latent_dim: int
    features: int
    likelihood: Likelihood
    beta: float
    flow: Bijector | None
    eval_samples: int
    prior: Distribution | None = None
    pseudo_inputs: int = 0


class Bounds(NamedTuple):
    """Mean bounds in nats per example: ``elbo`` (beta = 1), ``iwae`` (k samples) and ``gap = iwae - elbo``."""

    elbo: float
    iwae: float
    gap: float
    k: int


def _check_int(value, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _Heads(nn.Module):
    """The encoder and the Gaussian posterior's two dense heads on its features."""

    encoder: nn.Module
    latent_dim: int
    min_log_sigma: float

    @nn.compact
    def __call__(self, x):
        h = self.encoder(x)
        mu = nn.Dense(self.latent_dim, name="mu")(h)
        raw = nn.Dense(self.latent_dim, name="log_sigma")(h)
        return mu, self.min_log_sigma + jax.nn.softplus(raw - self.min_log_sigma), h


def features_dim(encoder: nn.Module, dim: int) -> int:
    """F, the width of ``encoder``'s features on rows of width ``dim`` (a flow posterior's context_dim).

    Raises ValueError (from the encoder) when ``dim`` does not fit it, e.g. images of the wrong shape.
    """
    x = jnp.zeros((1, dim))
    out = jax.eval_shape(lambda: encoder.init_with_output(jax.random.PRNGKey(0), x)[0])
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(f"the encoder must map (n, {dim}) to features (n, F), got shape {out.shape}")
    return int(out.shape[1])


def iaf_posterior(latent_dim: int, context_dim: int, num_layers: int = 2, hidden: tuple[int, ...] | None = None,
                  **iaf_options) -> Bijector:
    """The IAF refinement of the posterior: `genlearn.flows.iaf`'s bijector with ``context_dim`` = F.

    ``hidden`` defaults to two MADE layers of width max(2 D, 32) (each must be >= D); ``iaf_options``
    go to `genlearn.flows.iaf` (``order``, ``max_log_scale``, ...). D must be >= 2 (a MADE needs two
    variables).
    """
    from genlearn.flows import iaf

    latent_dim = _check_int(latent_dim, 1, "latent_dim")
    if latent_dim < 2:
        raise ValueError(f"an IAF posterior needs latent_dim >= 2, got {latent_dim}")
    hidden = hidden or (max(2 * latent_dim, 32),) * 2
    return iaf(latent_dim, num_layers, tuple(hidden), context_dim=context_dim, **iaf_options).bijector


def vae(dim: int, latent_dim: int, *, encoder: nn.Module | None = None, decoder: nn.Module | None = None,
        likelihood: Likelihood | None = None, flow: Bijector | None = None, beta: float = 1.0,
        analytic_kl: bool = False, eval_samples: int = 1000, max_rows: int = 65536,
        preprocess: Callable[[Array], Array] | None = None, min_log_sigma: float = -7.0,
        prior: Distribution | None = None, pseudo_inputs: int = 0) -> VAE:
    r"""A VAE on R^dim with a D-dimensional latent space (module docstring for the math).

    Args:
      dim: data dimension, >= 1.
      latent_dim: D, >= 1.
      encoder: a flax module ``(n, dim) -> (n, F)``; default ``MLPEncoder((256, 256))``.
      decoder: a flax module ``(..., D) -> (..., dim, P)`` with fields ``dim`` and
        ``params_per_dim`` (filled in here); default ``MLPDecoder((256, 256))``.
      likelihood: p(x | z); default ``gaussian()`` (learned variance).
      flow: a bijector on R^D refining the Gaussian posterior (``context_dim`` 0, or F
        for a context h(x)), e.g. :func:`iaf_posterior`; None: the Gaussian posterior.
      beta: the KL weight of ``loss`` and ``elbo`` (beta-VAE, Higgins et al. 2017), >= 0.
      analytic_kl: ``elbo`` uses KL(N(mu, sigma^2) || N(0, I)) in closed form
        (Gaussian posterior only) instead of its one-sample estimate.
      eval_samples: k of ``log_prob`` (IWAE_k), >= 1.
      max_rows: the most decoder rows ``iwae`` evaluates at once (n x chunk).
      preprocess: applied to x before the encoder only (e.g. pixels to [-1, 1]);
        the likelihood always sees x as given.
      min_log_sigma: soft lower bound of the posterior's log-std.
      prior: a `genlearn.core.Distribution` on R^D whose params (``params["prior"]``) train with the rest,
        e.g. ``genlearn.core.gaussian_mixture(D, 32)``: a multimodal prior, so that separated modes of the data
        need not be decoded from one connected Gaussian (Dilokthanakul et al. 2016; Tomczak & Welling 2018
        learn the prior too). None: the fixed N(0, I).
      pseudo_inputs: K > 0: the VampPrior (Tomczak & Welling 2018), p(z) = (1/K) sum_k q(z | u_k), the
        Gaussian posterior's mixture at K learnable pseudo-inputs u_k in data space (``params["pseudo_inputs"]``,
        ``(K, dim)``, drawn from N(0, I) by ``init``; a trainer sets them to data rows, e.g. k-means++ seeds
        as `genlearn.vae.run` does). The prior shares the encoder, so it puts its mass where the posteriors of
        data-like points are: on the 2-D mixtures (grid25) the latent space holds no mass that decodes between
        the modes. With a ``flow`` posterior the components are its Gaussian part N(mu(u_k), sigma(u_k)^2)
        (before the flow; still a density, a flow's q(z | u) has no cheap log-density at a given z).
        Not with ``prior``. 0: no VampPrior.

    Raises:
      ValueError: latent_dim < 1, a bad k / beta, a flow of the wrong size, or an
        encoder/decoder that does not fit ``dim`` (e.g. images of the wrong shape).
    """
    dim = _check_int(dim, 1, "dim")
    latent_dim = _check_int(latent_dim, 1, "latent_dim")
    eval_samples = _check_int(eval_samples, 1, "eval_samples (k of the IWAE bound)")
    max_rows = _check_int(max_rows, 1, "max_rows")
    beta = float(beta)
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    likelihood = gaussian() if likelihood is None else likelihood
    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a genlearn.vae.Likelihood, got {type(likelihood).__name__}")
    encoder = MLPEncoder() if encoder is None else encoder
    decoder = (MLPDecoder() if decoder is None else decoder).clone(dim=dim, params_per_dim=likelihood.params_per_dim)
    features = features_dim(encoder, dim)
    out = jax.eval_shape(lambda: decoder.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, latent_dim)))[0])
    if out.shape != (1, dim, likelihood.params_per_dim):
        raise ValueError(f"the decoder must map (n, {latent_dim}) to (n, {dim}, {likelihood.params_per_dim}), "
                         f"got shape {out.shape}")
    heads = _Heads(encoder, latent_dim, float(min_log_sigma))
    if flow is not None:
        if not isinstance(flow, Bijector):
            raise TypeError(f"flow must be a genlearn Bijector on R^{latent_dim}, got {type(flow).__name__}")
        if flow.dim != latent_dim:
            raise ValueError(f"the posterior flow acts on R^{flow.dim} but latent_dim is {latent_dim}")
        if flow.context_dim not in (0, features):
            raise ValueError(f"the posterior flow's context_dim is {flow.context_dim}; it must be 0 or the "
                             f"encoder's feature width {features}")
        if analytic_kl:
            raise ValueError("analytic_kl needs the Gaussian posterior; a flow posterior's KL has no closed form")
    if prior is not None:
        if not isinstance(prior, Distribution):
            raise TypeError(f"prior must be a genlearn.core.Distribution on R^{latent_dim}, got {type(prior).__name__}")
        if prior.dim != latent_dim:
            raise ValueError(f"the prior is a distribution on R^{prior.dim} but latent_dim is {latent_dim}")
        if analytic_kl:
            raise ValueError("analytic_kl is KL(q || N(0, I)); a learnable prior's KL has no closed form")
    pseudo_inputs = _check_int(pseudo_inputs, 0, "pseudo_inputs (VampPrior components)")
    if pseudo_inputs:
        if prior is not None:
            raise ValueError("pseudo_inputs (the VampPrior) and prior= are two priors; give one of them")
        if analytic_kl:
            raise ValueError("analytic_kl is KL(q || N(0, I)); the VampPrior's KL has no closed form")
    prep = (lambda x: x) if preprocess is None else preprocess

    def init(key):
        ke, kd, kf = jax.random.split(key, 3)
        params = {"encoder": heads.init(ke, jnp.zeros((1, dim))),
                  "decoder": decoder.init(kd, jnp.zeros((1, latent_dim)))}
        if flow is not None:
            params["flow"] = flow.init(kf)
        if prior is not None:
            params["prior"] = prior.init(jax.random.fold_in(key, 3))
        if pseudo_inputs:
            dtype = jax.tree_util.tree_leaves(params["decoder"])[0].dtype
            params["pseudo_inputs"] = jax.random.normal(jax.random.fold_in(key, 4), (pseudo_inputs, dim), dtype)
        return params

    def _rows(x, what="x"):
        x = jnp.asarray(x)
        check_batch(x, dim, what)
        return x

    def encode(params, x):
        x = _rows(x)
        return heads.apply(params["encoder"], prep(x))

    def decode(params, z):
        return decoder.apply(params["decoder"], z)

    def _refine(params, z0, h):
        """z = f(z0; h) and log|det dz/dz0| for z0 (n, m, D), h (n, F)."""
        if flow.context_dim:
            one = lambda v, c: flow.apply_and_log_det(params["flow"], v, c)  # noqa: E731
            return jax.vmap(jax.vmap(one, (0, None)), (0, 0))(z0, h)
        one = lambda v: flow.apply_and_log_det(params["flow"], v)  # noqa: E731
        return jax.vmap(jax.vmap(one))(z0)

    def sample_posterior(params, x, key, m):
        return _sample_posterior(params, encode(params, x), key, m)

    def _sample_posterior(params, encoded, key, m):
        mu, log_s, h = encoded
        eps = jax.random.normal(key, mu.shape[:1] + (m, latent_dim), mu.dtype)
        z = mu[:, None] + jnp.exp(log_s)[:, None] * eps
        log_q = jnp.sum(-0.5 * eps**2 - log_s[:, None] - 0.5 * _LOG_2PI, axis=-1)
        if flow is not None:
            z, log_det = _refine(params, z, h)
            log_q = log_q - log_det
        return z, log_q

    def _vamp_components(params):
        mu, log_s, _ = heads.apply(params["encoder"], prep(params["pseudo_inputs"]))
        return mu, log_s  # (K, D) each

    def _log_prior(params, z):
        if pseudo_inputs:
            mu, log_s = _vamp_components(params)
            inv_s = jnp.exp(-log_s)
            log_n = -jnp.sum(log_s, axis=-1) - 0.5 * latent_dim * _LOG_2PI  # (K,)
            for d in range(latent_dim):  # (..., K) per latent coordinate: 3x faster on CPU than a (..., K, D) array
                log_n = log_n - 0.5 * ((z[..., d:d + 1] - mu[:, d]) * inv_s[:, d]) ** 2
            return jax.nn.logsumexp(log_n, axis=-1) - jnp.log(jnp.asarray(pseudo_inputs, log_n.dtype))
        if prior is None:
            return jnp.sum(-0.5 * z**2 - 0.5 * _LOG_2PI, axis=-1)
        one = lambda v: prior.log_prob(params["prior"], v)  # noqa: E731
        return jax.vmap(jax.vmap(one))(z)

    def _log_weights(params, x, encoded, key, m):
        z, log_q = _sample_posterior(params, encoded, key, m)
        log_px_z = likelihood.log_prob(decode(params, z), x[:, None])
        return log_px_z, _log_prior(params, z), log_q

    def log_weights(params, x, key, m):
        x = _rows(x)
        return _log_weights(params, x, encode(params, x), key, m)

    def elbo(params, x, key, num_samples=1, beta=None):
        num_samples = _check_int(num_samples, 1, "num_samples")
        b = model_beta if beta is None else float(beta)
        x = _rows(x)
        encoded = encode(params, x)
        log_px_z, log_pz, log_q = _log_weights(params, x, encoded, jax.random.fold_in(key, 0), num_samples)
        if analytic_kl:
            mu, log_s, _ = encoded
            kl = 0.5 * jnp.sum(mu**2 + jnp.exp(2 * log_s) - 1.0 - 2 * log_s, axis=-1)
            return jnp.mean(log_px_z, axis=1) - b * kl
        return jnp.mean(log_px_z + b * (log_pz - log_q), axis=1)

    def iwae(params, x, key, k):
        k = _check_int(k, 1, "k (IWAE samples)")
        x = _rows(x)
        chunk = max(1, min(k, max_rows // max(x.shape[0], 1)))
        chunks = -(-k // chunk)
        encoded = encode(params, x)  # once; the k draws reuse it

        def one(c):
            lpx, lpz, lq = _log_weights(params, x, encoded, jax.random.fold_in(key, c), chunk)
            index = c * chunk + jnp.arange(chunk)
            return jnp.where(index[None, :] < k, lpx + (lpz - lq), -jnp.inf)  # the last chunk may overhang k

        lw = jax.lax.map(one, jnp.arange(chunks)) if chunks > 1 else one(0)[None]
        lw = jnp.moveaxis(lw, 0, 1).reshape((x.shape[0], -1))
        return jax.nn.logsumexp(lw, axis=1) - jnp.log(jnp.asarray(k, lw.dtype))

    def log_prob(params, x, key):
        return iwae(params, x, key, eval_samples)

    def _prior_draw(params, key, n):
        if pseudo_inputs:
            mu, log_s = _vamp_components(params)
            kc, ke = jax.random.split(key)
            c = jax.random.randint(kc, (n,), 0, pseudo_inputs)
            return mu[c] + jnp.exp(log_s[c]) * jax.random.normal(ke, (n, latent_dim), mu.dtype)
        if prior is not None:
            return prior.sample(params["prior"], key, n)
        return jax.random.normal(key, (n, latent_dim), jax.tree_util.tree_leaves(params["decoder"])[0].dtype)

    def sample(params, key, n):
        kz, kx = jax.random.split(key)
        return likelihood.sample(decode(params, _prior_draw(params, kz, n)), kx)

    def sample_mean(params, key, n):
        return likelihood.mean(decode(params, _prior_draw(params, key, n)))

    def loss(params, batch, key):
        return -jnp.mean(elbo(params, batch, key))

    model_beta = beta
    return VAE(init, encode, sample_posterior, decode, log_weights, elbo, iwae, log_prob, sample, sample_mean, loss,
               dim, latent_dim, features, likelihood, beta, flow, eval_samples, prior, pseudo_inputs)


def iwae_loss(model: VAE, k: int) -> Callable[[PyTree, Array, Array], Array]:
    """``loss(params, batch, key) = -mean IWAE_k(batch)``: training on the importance-weighted bound.

    Burda et al. (2016): IWAE_k is a tighter bound than the ELBO, and training on
    it lets q(z | x) be broad where one Gaussian cannot match the posterior,
    where the ELBO instead makes the decoder ignore z (posterior collapse; on the
    2-D toys a wide MLP VAE trained on the ELBO collapses to one Gaussian).
    ``k = 1`` has the expectation of ``model.loss`` at beta = 1 (which may use
    the analytic KL). The gradient is the self-normalised importance-weighted
    average of the per-sample gradients.

    Raises:
      ValueError: ``k < 1``.
    """
    k = _check_int(k, 1, "k (IWAE training samples)")

    def loss(params, batch, key):
        return -jnp.mean(model.iwae(params, batch, key, k))

    return loss


def annealed_loss(model: VAE, k: int = 1) -> Callable[[PyTree, Array, Array, Array], Array]:
    r"""``loss(params, batch, key, weight)``: the negative IWAE_k bound with its prior term scaled by ``weight``.

    Each importance weight is log p(x | z) + w (log p(z) - log q(z | x)), with
    w = ``weight`` (times the model's beta for k = 1, the ELBO_beta). At weight 1
    it is `iwae_loss` (k > 1) or the Monte-Carlo ``model.loss`` (k = 1) on the same
    draws; from weight 0 upwards it is KL annealing (Bowman et al. 2016; Sønderby
    et al. 2016), the loss of `genlearn.train.annealed_trainer`: at w = 0 the
    posterior only has to reconstruct, so the encoder learns to use z before
    the prior term pulls the posteriors together. On ring8 at the CLI defaults
    (IWAE_16, VampPrior) training from w = 1 ends at a broad decoder on some
    seeds (2.76 nats from the truth), a warm-up does not (`genlearn.vae.run`).

    Raises:
      ValueError: ``k < 1``.
    """
    k = _check_int(k, 1, "k (importance samples)")
    scale = float(model.beta) if k == 1 else 1.0

    def loss(params, batch, key, weight):
        # fold_in(key, 0): the draws of `iwae` (its first chunk), so weight 1 is iwae_loss exactly
        lpx, lpz, lq = model.log_weights(params, batch, jax.random.fold_in(key, 0), k)
        lw = lpx + (weight * scale) * (lpz - lq)
        return -jnp.mean(jax.nn.logsumexp(lw, axis=1) - jnp.log(jnp.asarray(k, lw.dtype)))

    return loss


def bounds(model: VAE, params: PyTree, x: Array, key: Array, k: int = 1000, *,
           num_elbo_samples: int = 1) -> Bounds:
    """ELBO (beta = 1), IWAE_k and their difference, means over the rows of ``x`` in nats per example.

    The gap IWAE_k - ELBO >= 0 (in expectation) is the part of
    KL(q(z | x) || p(z | x)) that k importance samples recover: how much a
    better posterior (a flow, or per-example optimisation) could tighten the
    bound; it is large when q is a poor fit, e.g. a Gaussian posterior of a
    multimodal true posterior.
    """
    k = _check_int(k, 1, "k (IWAE samples)")
    ke, ki = jax.random.split(key)
    elbo = float(jnp.mean(jax.jit(model.elbo, static_argnums=3, static_argnames="beta")(
        params, x, ke, num_elbo_samples, beta=1.0)))
    iw = float(jnp.mean(jax.jit(model.iwae, static_argnums=3)(params, x, ki, k)))
    return Bounds(elbo, iw, iw - elbo, k)


def posterior_to_distrax(model: VAE, params: PyTree, x: Array):
    """q(z | x) for ONE example ``x`` (dim,) as a distrax distribution over R^D.

    Gaussian: ``distrax.MultivariateNormalDiag(mu, sigma)``; with a flow:
    ``distrax.Transformed`` of it by the flow (`genlearn.interop.to_distrax_bijector`
    with the context h(x)), so ``log_prob`` equals log q(z | x).
    """
    import distrax

    from genlearn.interop import to_distrax_bijector

    x = jnp.asarray(x)
    if x.shape != (model.dim,):
        raise ValueError(f"posterior_to_distrax takes one example of shape ({model.dim},), got {x.shape}")
    mu, log_s, h = model.encode(params, x[None])
    base = distrax.MultivariateNormalDiag(mu[0], jnp.exp(log_s[0]))
    if model.flow is None:
        return base
    context = h[0] if model.flow.context_dim else None
    return distrax.Transformed(base, to_distrax_bijector(model.flow, params["flow"], context))


def decoder_to_distrax(model: VAE, params: PyTree, z: Array):
    """p(x | z) as a distrax distribution with event shape ``(dim,)`` (batch shape ``z.shape[:-1]``)."""
    return model.likelihood.to_distrax(model.decode(params, jnp.asarray(z)))
