"""Weak losses as differentiable training objectives for a generator (no adversary).

A weak metric compares ``P`` and ``P'`` only through test functions,
``L(P, P') = sup_{f in F} E_P f - E_P' f``. When ``F`` is the unit ball of a
kernel's RKHS the supremum has a closed form (MMD); for other classes it is
computed by a fixed procedure (moments, Sinkhorn, 1-D sorting), so the
generator can be trained by plain gradient descent on a minibatch estimate.
Training a generator on MMD is the GMMN / MMD-net (Li et al. 2015; Dziugaite
et al. 2015).

``mmd2``, ``energy_distance``, ``sinkhorn_divergence`` and ``sliced_wasserstein``
are the functions of :mod:`genlearn.distances` (the same ones
``genlearn.metrics`` evaluates in float64); this module adds
``moment_matching``: ``F`` = polynomials of degree ``<= k``,
``sum_{j<=k} ||E_P x^(j) - E_P' x^(j)||^2`` with ``x^(1) = x``,
``x^(2) = x x^T`` and elementwise powers ``x_i^j`` for ``j >= 3``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from genlearn.distances import (check_pair, check_sinkhorn, energy_distance, mmd2, sinkhorn_divergence,
                                sliced_wasserstein)

__all__ = [
    "WEAK_LOSSES",
    "moment_matching",
    "mmd2",
    "energy_distance",
    "sinkhorn_divergence",
    "sliced_wasserstein",
    "weak_loss",
    "generator_loss",
]

WEAK_LOSSES = ("moments", "mmd", "energy", "sinkhorn", "sliced")


def moment_matching(x: jax.Array, y: jax.Array, order: int = 2) -> jax.Array:
    """``sum_{j=1..order} ||m_j(x) - m_j(y)||^2`` (module docstring); ``order >= 1``."""
    check_pair(x, y)
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"moment order must be an integer >= 1, got {order!r}")
    total = jnp.sum((x.mean(0) - y.mean(0)) ** 2)
    if order >= 2:
        total += jnp.sum((x.T @ x / x.shape[0] - y.T @ y / y.shape[0]) ** 2)
    for j in range(3, order + 1):
        total += jnp.sum((jnp.mean(x**j, 0) - jnp.mean(y**j, 0)) ** 2)
    return total


# name: (loss(x, y, key, **options), default options). The defaults are the losses' training
# settings (biased MMD with h = 1, ott-jax's 1e-3 marginal tolerance, SW_p^p with 64 directions),
# which differ from the distances' evaluation defaults; GAN runs depend on them.
_LOSSES = {
    "moments": (lambda x, y, key, order: moment_matching(x, y, order), {"order": 2}),
    "mmd": (lambda x, y, key, kernel, bandwidths, unbiased: mmd2(x, y, bandwidths, unbiased, kernel=kernel),
            {"kernel": "gaussian", "bandwidths": 1.0, "unbiased": False}),
    "energy": (lambda x, y, key: energy_distance(x, y), {}),
    "sinkhorn": (lambda x, y, key, epsilon: sinkhorn_divergence(x, y, epsilon, tol=1e-3, max_iters=2000),
                 {"epsilon": 0.05}),
    "sliced": (lambda x, y, key, num_projections, p: sliced_wasserstein(x, y, key, num_projections, p) ** p,
               {"num_projections": 64, "p": 2.0}),
}


def weak_loss(name: str, **options: Any) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """A weak loss by name as ``loss(x, y, key) -> scalar``.

    Args:
      name: one of :data:`WEAK_LOSSES`.
      **options (defaults in brackets): ``moments``: ``order`` [2]; ``mmd``:
        ``kernel`` ["gaussian"], ``bandwidths`` [1.0; a number or a sequence,
        summed], ``unbiased`` [False]; ``sinkhorn``: ``epsilon`` [0.05] (solved
        to an L1 marginal error of 1e-3); ``sliced``: ``num_projections`` [64],
        ``p`` [2.0], and the loss is ``SW_p^p``.

    Raises:
      ValueError: unknown name or options, or invalid option values.
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown weak loss {name!r}; choose one of {WEAK_LOSSES}")
    fn, defaults = _LOSSES[name]
    bad = set(options) - set(defaults)
    if bad:
        raise ValueError(f"weak loss {name!r} takes options {sorted(defaults)}, got {sorted(bad)}")
    options = {**defaults, **options}
    # validate the options once, eagerly, on a tiny problem (Sinkhorn: without tracing the solver)
    if name == "sinkhorn":
        check_sinkhorn(options["epsilon"], 1e-3, 2000)
    else:
        jax.eval_shape(lambda: fn(jnp.zeros((2, 1)), jnp.ones((2, 1)), jax.random.PRNGKey(0), **options))

    def loss(x, y, key):
        return fn(x, y, key, **options)

    return loss


def generator_loss(gen, loss: Callable, num_samples: int | None = None) -> Callable:
    """``loss(params, batch, key) = L(G_theta # Q samples, batch)`` for ``genlearn.train.fit``.

    Draws ``num_samples`` (default: the batch size) generator samples per call
    with the key's first half and passes the second half to the weak loss.
    """
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 2):
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")

    def objective(params, batch, key):
        if batch.ndim != 2 or batch.shape[1] != gen.dim:
            raise ValueError(f"data dimension {batch.shape} does not match the generator's dim {gen.dim}")
        k_gen, k_loss = jax.random.split(key)
        fake = gen.sample(params, k_gen, num_samples or batch.shape[0])
        return loss(fake, batch, k_loss)

    return objective
