"""One model protocol for every family: flows, classical estimators, energy models, generators.

A :class:`Model` is a NamedTuple of pure functions over a params pytree, with
explicit capability fields instead of signature sniffing:

* ``init(key, data=None) -> params``: ``data`` is an ``(n, dim)`` batch for
  data-dependent initialisation (Glow's ActNorm) or for a closed-form / EM fit
  (the classical estimators, whose "initialisation" is their fit);
* ``log_prob(params, x[, key]) -> (n,)`` batched, or None without a density;
  ``log_prob_needs_key`` says whether a key is the third argument and
  ``log_prob_is_exact`` whether the value is exact or an estimate (an EBM's
  ``log Z`` by AIS, a Hutchinson-trace CNF); ``log_prob_is_discrete`` that it
  depends on ``x`` only through ``floor(x)`` (a discrete model P(x) read as a
  density on dequantised pixels, e.g. a VAE's discretised-logistic decoder),
  so one dequantisation draw evaluates it exactly;
* ``sample(params, key, n) -> (n, dim)``.

The adapters below fill it from each family's own NamedTuple, so
`genlearn.runs`, the CLI and `genlearn compare` treat every family alike.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Model", "from_flow", "from_estimator", "from_energy", "from_generator"]


class Model(NamedTuple):
    """A density and/or sampler as pure functions (module docstring)."""

    dim: int
    init: Callable[..., Any]
    log_prob: Callable[..., jax.Array] | None
    sample: Callable[[Any, jax.Array, int], jax.Array]
    log_prob_is_exact: bool = True
    log_prob_needs_key: bool = False
    log_prob_is_discrete: bool = False


def from_flow(flow, outer=None, *, data_init: bool = False, log_prob_needs_key: bool = False) -> Model:
    """A :class:`~genlearn.core.Flow` as a Model, optionally followed by a FIXED bijector ``outer``.

    Args:
      flow: the trainable flow.
      outer: an unconditional bijector appended after the flow
        (`genlearn.core.transformed`): the Model is then the data-space density
        of a flow trained in a preprocessed space (standardised toys, logit of
        dequantised pixels).
      data_init: the flow's bijector takes ``init(key, x_batch)`` (Glow's
        ActNorm): ``init(key, data)`` maps ``data`` through ``outer``'s inverse
        and runs it; ``init(key)`` starts the layers at the identity.
        Whatever ``data_init``, a base with a ``fit`` (`genlearn.core.gaussian_mixture`) starts, in
        ``init(key, data)``, at its fit to ``data`` mapped through the initialised bijector's inverse.
      log_prob_needs_key: a stochastic log-density (``cnf(trace="hutchinson")``):
        ``log_prob(params, x, key)``, flagged as an estimate.
    """
    from genlearn.core.flow import transformed

    model = flow if outer is None else transformed(flow, outer)
    outer_params = None if outer is None else outer.init(jax.random.PRNGKey(0))

    def init(key, data=None):
        fit_base = model.base.fit is not None
        if data is None or not (data_init or fit_base):
            return model.init(key)
        x = jnp.asarray(data)
        kb, kg = jax.random.split(key)  # as the flow's own init(key)
        if data_init:
            y = x if outer is None else jax.vmap(outer.inverse, (None, 0))(outer_params, x)
            bijector = model.bijector.init(kg, y)
        else:
            bijector = model.bijector.init(kg)
        if not fit_base:
            return {"base": model.base.init(kb), "bijector": bijector}
        # the base starts at a fit to the data mapped back through the freshly initialised bijector
        z = model.inverse({"base": None, "bijector": bijector}, x)
        return {"base": model.base.fit(kb, z), "bijector": bijector}

    if log_prob_needs_key:
        def log_prob(params, x, key):
            return model.log_prob(params, x, key=key)
    else:
        log_prob = model.log_prob
    return Model(model.dim, init, log_prob, model.sample, not log_prob_needs_key, log_prob_needs_key)


def from_estimator(estimator, dim: int) -> Model:
    """A classical estimator (histogram, KDE, GMM): ``init(key, data)`` is its ``fit``."""

    def init(key, data=None):
        if data is None:
            raise ValueError(f"{estimator.name}: init(key, data) fits the estimator and needs the data")
        return estimator.fit(key, data)

    return Model(int(dim), init, estimator.log_prob, estimator.sample)


def from_generator(gen, *, shift: float = 0.0, scale: float = 1.0) -> Model:
    """A generator ``G # Q`` (GANs, weak-loss generators): samples only, ``x = G(z) * scale + shift``."""

    def sample(params, key, n):
        return gen.sample(params, key, n) * scale + shift

    return Model(gen.dim, lambda key, data=None: gen.init(key), None, sample)


def from_energy(model, sample: Callable, *, log_z: Callable[[Any], jax.Array] | None = None,
                **ais_options) -> Model:
    """An :class:`~genlearn.energy.EnergyModel` ``exp(-V) / Z`` as a Model.

    Args:
      model: the energy model (its params are the Model's params).
      sample: ``sample(params, key, n) -> (n, dim)``, an MCMC sampler of
        ``exp(-V)`` (e.g. MALA + independent-MH jumps, `genlearn.energy.run`).
      log_z: ``log_z(params) -> scalar``, an estimate of ``log Z`` kept with the
        params (``log_prob(params, x)``). None: every call estimates ``log Z``
        by annealed importance sampling (`genlearn.energy.ais_log_z`, base a
        Gaussian fitted to ``x``, ``ais_options`` passed on) and
        ``log_prob(params, x, key)`` needs a key. Either way the log-density
        is flagged as an estimate.
    """
    if log_z is not None:
        def log_prob(params, x):
            return model.unnormalized_log_prob(params, x) - log_z(params)
    else:
        from genlearn.energy.ais import ais_log_z, gaussian_base

        def log_prob(params, x, key):
            res = ais_log_z(lambda y: model.unnormalized_log_prob(params, y), key, *gaussian_base(x, inflate=1.5),
                            **ais_options)
            return model.unnormalized_log_prob(params, x) - res.log_z

    return Model(model.dim, lambda key, data=None: model.init(key), log_prob, sample, False, log_z is None)
