"""Autoregressive flows: MAF (Papamakarios et al. 2017) and IAF (Kingma et al. 2016).

Both apply an elementwise :class:`~genlearn.flows.Transformer` tau whose
parameters for coordinate i come from a MADE of the *preceding* coordinates
(in a chosen order); the Jacobian is triangular, so log|det| is the sum of
tau's log-derivatives.

- MAF conditions on the data side:  x_i = tau(z_i; h_i(x_{<i})).
  Density (x -> z) is ONE MADE pass: h = MADE(x), z = tau^{-1}(x; h).
  Sampling (z -> x) needs d passes: x is refined d times in a
  ``lax.fori_loop``; after pass k the first k coordinates (in order) are exact.
- IAF conditions on the noise side:  x_i = tau(z_i; h_i(z_{<i})).
  Sampling is one pass; density needs d passes.

In genlearn's convention a bijector maps base z to data x, so for MAF
``inverse_and_log_det`` is the fast direction and for IAF ``apply_and_log_det``.
With the default affine transformer z_i = x_i s_i + t_i (a softplus scale, flowjax's and
nflows' form; ``affine("exp")`` is the paper's x_i = z_i exp(alpha_i) + mu_i);
:func:`genlearn.flows.rational_quadratic` gives autoregressive neural splines.
The MADE output layer is zero-initialised, so every layer starts at the identity.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import Bijector, _check_dim, chain, make_bijector
from genlearn.core.distributions import Distribution, make_base
from genlearn.core.flow import Flow, make_flow
from genlearn.flows._common import check_hidden, check_layers, default_order, stacked_layers
from genlearn.flows.coupling import Transformer, affine
from genlearn.flows.made import autoregressive_order, made

__all__ = ["masked_autoregressive", "inverse_autoregressive", "maf", "iaf", "layer_orders"]


def _autoregressive(name, dim, transformer, hidden, order, seed, context_dim, activation, fast_apply,
                    hidden_init="uniform", direct=False):
    if not isinstance(transformer, Transformer):
        raise TypeError(f"{name}: transformer must be a genlearn.flows.Transformer, got {type(transformer).__name__}")
    dim = _check_dim(dim, 2, f"{name}: dim")
    context_dim = _check_dim(context_dim, 0, f"{name}: context_dim")
    hidden = check_hidden(hidden)
    net = made(dim, hidden, transformer.params_per_dim, order=order, seed=seed, context_dim=context_dim,
               activation=activation, hidden_init=hidden_init, direct=direct)

    def _h(params, v, context):
        args = (v,) if context is None else (v, context.astype(v.dtype))
        return net.apply(params, *args).astype(v.dtype)

    def init(key):
        args = (jnp.zeros((dim,)),) + ((jnp.zeros((context_dim,)),) if context_dim else ())
        return net.init(key, *args)

    def one_pass(step):
        # step: transformer.forward or .inverse, conditioned on the INPUT side.
        def f(params, v, context=None):
            return step(_h(params, v, context), v)

        return f

    def d_passes(step):
        # Conditioned on the OUTPUT side: fixed-point refinement, exact after d passes.
        def f(params, y, context=None):
            def body(_, carry):
                out, _ = carry
                return step(_h(params, out, context), y)

            init_carry = (jnp.zeros_like(y), jnp.zeros_like(y, shape=()))  # varying as y under shard_map
            return jax.lax.fori_loop(0, dim, body, init_carry)

        return f

    if fast_apply:  # IAF
        fwd, inv = one_pass(transformer.forward), d_passes(transformer.inverse)
    else:  # MAF
        fwd, inv = d_passes(transformer.forward), one_pass(transformer.inverse)
    if context_dim == 0:
        fwd0, inv0 = fwd, inv
        fwd, inv = (lambda p, z: fwd0(p, z)), (lambda p, x: inv0(p, x))
    return make_bijector(init, fwd, inv, dim, context_dim=context_dim)


def _layer(name: str, fast_apply: bool, doc: str) -> Callable[..., Bijector]:
    """masked_autoregressive and inverse_autoregressive differ only in the fast direction."""

    def layer(
        dim: int,
        transformer: Transformer | None = None,
        *,
        hidden: tuple[int, ...] = (128, 128),
        order="natural",
        seed: int = 0,
        context_dim: int = 0,
        activation: str | Callable = "relu",
        hidden_init: str = "uniform",
        direct: bool = False,
    ) -> Bijector:
        return _autoregressive(name, dim, affine() if transformer is None else transformer, hidden, order, seed,
                               context_dim, activation, fast_apply=fast_apply, hidden_init=hidden_init,
                               direct=direct)

    layer.__name__ = layer.__qualname__ = name
    layer.__doc__ = doc
    return layer


masked_autoregressive = _layer("masked_autoregressive", False, """One MAF layer x_i = tau(z_i; MADE(x)_i).

    Density (``inverse``) is one MADE pass; sampling (``apply``) runs d MADE
    passes in a ``lax.fori_loop``.

    Args:
      dim: dimension, >= 2.
      transformer: elementwise transformer; default ``affine()`` (z = x s + t with a
        softplus scale; ``affine("exp")`` is the paper's x = z exp(alpha) + mu).
      hidden: MADE hidden widths, each >= dim.
      order: "natural", "reversed", "random" (from ``seed``) or a permutation of range(dim).
      context_dim: > 0 for a conditional layer; the context enters every MADE hidden layer.
      activation: MADE activation.
      hidden_init: "uniform" (default: U(+-1/sqrt(fan_in)) kernels and biases) or "lecun"
        (flax's default, zero biases) for the MADE's hidden layers.
      direct: masked linear input-to-output connections in the MADE, zero at init (see
        :func:`genlearn.flows.maf`).

    Params are the MADE's flax params.
    """)

inverse_autoregressive = _layer("inverse_autoregressive", True, """One IAF layer x_i = tau(z_i; MADE(z)_i).

    Sampling (``apply``) is one MADE pass; density (``inverse``) d passes.
    Same arguments as :func:`masked_autoregressive`.
    """)


def layer_orders(dim: int, num_layers: int, order: str | None = None, seed: int = 0) -> list[tuple[int, ...]]:
    """Per-layer generation orders: "alternate" (natural, reversed, natural, ...)
    or "random" (an independent permutation per layer, drawn from ``seed``).

    ``None`` (the default) is "random" above two dimensions and "alternate" at two
    (:func:`genlearn.flows._common.default_order`).
    """
    order = default_order(dim, order)
    if order == "alternate":
        return [autoregressive_order(dim, "reversed" if i % 2 else "natural") for i in range(num_layers)]
    if order == "random":
        rng = np.random.default_rng(seed)
        return [tuple(int(j) for j in rng.permutation(dim)) for _ in range(num_layers)]
    raise ValueError(f"unknown layer order {order!r}; choose 'alternate' or 'random'")


def _flow(name, layer, dim, num_layers, hidden, transformer, order, seed, base, activation, context_dim, scan,
          direct=False):
    dim = _check_dim(dim, 2, f"{name}: dim")
    num_layers = check_layers(num_layers)
    hidden = check_hidden(hidden)
    order = default_order(dim, order)

    def make(o):
        return layer(dim, transformer, hidden=hidden, order=o, context_dim=context_dim, activation=activation,
                     direct=direct)

    layers = stacked_layers(make, layer_orders(dim, num_layers, order, seed), periodic=order == "alternate", scan=scan)
    return make_flow(make_base(base, dim), chain(*layers))


def _family(name: str, layer: Callable, doc: str, bound: float) -> Callable[..., Flow]:
    """maf and iaf: the same stack of layers, only the layer's fast direction and the default scale bound differ."""

    def factory(
        dim: int,
        num_layers: int = 5,
        hidden: tuple[int, ...] = (128, 128),
        *,
        transformer: Transformer | None = None,
        scale: str = "softplus",
        min_scale: float = 1e-2,
        max_log_scale: float = bound,
        order: str | None = None,
        seed: int = 0,
        base: str | Distribution = "student_t",
        activation: str | Callable = "relu",
        context_dim: int = 0,
        scan: bool = True,
        direct: bool = False,
    ) -> Flow:
        t = affine(scale, min_scale=min_scale, max_log_scale=max_log_scale) if transformer is None else transformer
        return _flow(name, layer, dim, num_layers, hidden, t, order, seed, base, activation, context_dim, scan,
                     direct)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


maf = _family("maf", masked_autoregressive, """Masked autoregressive flow (Papamakarios et al. 2017).

    ``num_layers`` MAF layers with the order re-drawn from ``seed`` (``order="random"``,
    the default above two dimensions, as flowjax permutes) or reversed
    (``order="alternate"``, the default at two) between layers; see :func:`layer_orders`.
    log p(x) costs one MADE pass per layer; sampling d passes per layer (a ``lax.fori_loop``).

    Args:
      dim: data dimension, >= 2.
      num_layers: number of layers, >= 1.
      hidden: MADE hidden widths, each >= dim.
      transformer: elementwise transformer; default
        ``affine(scale, min_scale=..., max_log_scale=...)``: z = x s + t with a softplus
        scale min_scale <= s < e^max_log_scale (the default), or with ``scale="exp"`` the paper's
        x = z exp(alpha) + mu with a soft-clamped log-scale (see
        :func:`genlearn.flows.affine`); ``rational_quadratic()`` gives an
        autoregressive neural spline flow.
      max_log_scale: the affine scale's bound B; 4 for MAF (with 5, the bound of the other affine
        flows, one of benchmarks/stability.py's nine MAF runs, grid25 seed 2 with plain Adam 1e-3,
        spiked to 2.70x its initial loss, 1.71x at 4; at 3 `genlearn fit maf` loses up to 0.26 nats
        on ring8 and grid25, at 4 0.005 and 0.05 on average over three seeds), 5 for IAF.
      base: "student_t" (the default: a multivariate t with df = 5 d, see
        :func:`genlearn.core.student_t`; it keeps training free of loss spikes), "normal",
        "diag_gaussian", "logistic", or a Distribution.
      order: None (the default: "random" above two dimensions, "alternate" at two),
        "alternate" or "random".
      seed: the seed of ``order="random"``.
      activation: MADE activation.
      context_dim: > 0 for a conditional flow p(x | c).
      scan: with ``order="alternate"`` (the default at two dimensions) the natural/reversed
        pair of layers is one block repeated ``num_layers // 2`` times under ``lax.scan``
        (:func:`genlearn.core.repeat`; params stacked along a leading axis), so a deep flow
        compiles as fast as a shallow one (on ring8, 16 MAF layers: 16 s of compiling its
        training chunk unrolled). ``False`` unrolls them (one params entry per layer; runs
        saved before the scan rebuild so). Random orders are always unrolled.
      direct: add masked linear input-to-output connections to every MADE (zero at init), so
        each conditional's linear part needs no hidden unit (Germain et al. 2015). Off by
        default for now (benchmarks/results/flow_ablation.md, stop 39: the loop of
        benchmarks/learning_curves.py, 3 seeds, final held-out KL without -> with): better on a
        64-d mixture 2.67 -> 2.56, a 16-d warped Gaussian 0.83 -> 0.77, an 8-d funnel
        0.056 -> 0.052, level on two moons (0.039 -> 0.040) and an 8-d mixture (0.308 -> 0.300),
        worse where the flow overfits: a 64-d warped Gaussian 10.85 -> 11.09 and dequantised
        digits 3.18 -> 3.33 bits/dim.
    """, bound=4.0)

iaf = _family("iaf", inverse_autoregressive, """Inverse autoregressive flow (Kingma et al. 2016).

    Sampling costs one MADE pass per layer, log p(x) d passes. Same arguments as :func:`maf`
    (``max_log_scale`` defaults to 5).
    """, bound=5.0)
