"""Log-likelihood reporting in nats and bits/dim for any model with a log_prob.

For a density ``p`` on data space the reported figures are

    nll_nats   = -(1/n) sum_i log p(x_i)
    bits/dim   = nll_nats / (d ln 2)           (``genlearn.data.nats_to_bits_per_dim``)

with the data module's bookkeeping (``genlearn/data/digits.py``):

* discrete data (digits in ``{0..16}``) is *uniformly dequantized*,
  ``y = x + u``, ``u ~ U[0,1)^d`` (``genlearn.data.uniform_dequantize``), and
  ``E_u[-log p(x + u)]`` upper-bounds the discrete ``-log P(x)``;
* a model trained in a transformed space ``z = T^{-1}(y)`` (rescaling,
  standardisation, RealNVP's logit) gives a data-space density by change of
  variables, ``log p_y(y) = log p_z(T^{-1}(y)) + log|det dT^{-1}/dy|``. Pass
  that fixed ``T`` as ``outer`` (a ``genlearn.core.Bijector`` from model space
  to data space, e.g. ``logit_box(64, upper=17.0)``) exactly as
  ``genlearn.core.transformed`` would append it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.data import nats_to_bits_per_dim, uniform_dequantize
from genlearn.metrics._checks import as_int, as_samples

__all__ = ["LikelihoodReport", "log_likelihood_report"]


class LikelihoodReport(NamedTuple):
    """Average negative log-likelihood of a data set.

    Attributes:
      nll_nats: ``-(1/n) sum log p(x_i)`` in nats per example.
      bits_per_dim: ``nll_nats / (d ln 2)``.
      nll_nats_stderr: standard error of ``nll_nats`` over examples (``inf``
        for a single example, where it is undefined).
      num_examples: ``n``.
      dim: ``d``.
      dequantized: whether uniform dequantization noise was added.
    """

    nll_nats: float
    bits_per_dim: float
    nll_nats_stderr: float
    num_examples: int
    dim: int
    dequantized: bool


def log_likelihood_report(
    log_prob: Callable[[jax.Array], jax.Array],
    x: Any,
    *,
    key: jax.Array | None = None,
    dequantize: bool = False,
    outer: Any = None,
    outer_params: Any = None,
    batch_size: int = 1024,
) -> LikelihoodReport:
    """NLL in nats and bits/dim of ``x`` under a model (module docstring).

    Args:
      log_prob: batched log-density ``(n, d) -> (n,)`` of the model in *its*
        space, e.g. ``functools.partial(flow.log_prob, params)``.
      x: ``(n, d)`` data in data space (raw integers for digits).
      key: PRNG key, required when ``dequantize``.
      dequantize: add ``U[0,1)`` noise first (discrete data).
      outer: optional fixed bijector ``T`` from model space to data space;
        its inverse and log-determinant are applied per example.
      outer_params: ``T``'s params (``outer.init(PRNGKey(0))`` when None).
      batch_size: examples per ``log_prob`` call.

    Returns:
      :class:`LikelihoodReport`.

    Raises:
      ValueError: bad data, missing key, or a log_prob that returns a wrong
        shape or non-finite values (reported, never averaged into NaN).
    """
    x = as_samples(x, "x", min_n=1)
    n, d = x.shape
    batch_size = as_int(batch_size, "batch_size")
    y = jnp.asarray(x, jnp.float32)
    if dequantize:
        if key is None:
            raise ValueError("log_likelihood_report: dequantize=True needs a PRNG key")
        y = uniform_dequantize(key, y)
    if outer is not None:
        if outer.dim != d:
            raise ValueError(f"outer bijector has dim {outer.dim}, data has dim {d}")
        o_params = outer.init(jax.random.PRNGKey(0)) if outer_params is None else outer_params
        inv = jax.jit(jax.vmap(outer.inverse_and_log_det, (None, 0)))
    lps = []
    for i in range(0, n, batch_size):
        yb = y[i:i + batch_size]
        if outer is not None:
            zb, ld = inv(o_params, yb)
            lp = jnp.asarray(log_prob(zb)) + ld
        else:
            lp = jnp.asarray(log_prob(yb))
        if lp.shape != (yb.shape[0],):
            raise ValueError(f"log_prob must return shape ({yb.shape[0]},), got {lp.shape}")
        lps.append(np.asarray(lp, dtype=np.float64))
    lp = np.concatenate(lps)
    bad = ~np.isfinite(lp)
    if bad.any():
        raise ValueError(
            f"log_prob returned {int(bad.sum())} non-finite values of {n} "
            f"(first at row {int(np.argmax(bad))}); data outside the model's support?"
        )
    nll = float(-lp.mean())
    stderr = float(lp.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    return LikelihoodReport(nll, float(nats_to_bits_per_dim(nll, d)), stderr, n, d, bool(dequantize))
