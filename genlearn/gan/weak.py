"""Weak losses as differentiable training objectives for a generator (no adversary).

A weak metric compares ``P`` and ``P'`` only through test functions,
``L(P, P') = sup_{f in F} E_P f - E_P' f``. When ``F`` is the unit ball of a
kernel's RKHS the supremum has a closed form (MMD); for other classes it is
computed by a fixed procedure (moments, Sinkhorn, 1-D sorting), so the
generator can be trained by plain gradient descent on a minibatch estimate:

* ``moments``: ``F`` = polynomials of degree ``<= k``:
  ``sum_{j<=k} ||E_P x^(j) - E_P' x^(j)||^2`` with ``x^(1) = x``, ``x^(2) = x x^T``,
  and elementwise powers ``x_i^j`` for ``j >= 3``.
* ``mmd``: ``MMD^2`` (Gretton et al. 2012) with kernels ``gaussian``
  ``sum_h exp(-||x-y||^2 / (2 h^2))`` (one bandwidth or several: the
  multi-bandwidth kernel of GMMN, Li et al. 2015) and ``imq``
  ``sum_c c / (c + ||x-y||^2)`` (inverse multiquadric, Tolstikhin et al. 2018);
  biased (V) or unbiased (U) estimator. Training a generator on it is the
  GMMN / MMD-net (Li et al. 2015; Dziugaite et al. 2015).
* ``energy``: energy distance ``2 E||x-y|| - E||x-x'|| - E||y-y'||`` (MMD with
  the distance kernel), with a square root whose gradient is 0 at 0.
* ``sinkhorn``: the debiased Sinkhorn divergence (Feydy et al. 2019), by
  ``ott-jax`` (implicit differentiation).
* ``sliced``: sliced Wasserstein ``SW_p^p`` (random directions, exact 1-D OT
  by sorting); it reuses ``genlearn.metrics``' kernel.

The host-side metrics in ``genlearn.metrics`` are float64 evaluation tools;
the functions here are their jittable float32 counterparts (same pairwise and
sliced kernels, tested to agree with them).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from genlearn.metrics._pairwise import sq_dists
from genlearn.metrics.wasserstein import _sliced

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
KERNELS = ("gaussian", "imq")


def _check_pair(x, y):
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"weak loss: expected arrays of shape (n, d) and (m, d) with the same dimension d, "
                         f"got shapes {x.shape} and {y.shape}")


def _positive_tuple(values, name) -> tuple[float, ...]:
    vals = (values,) if isinstance(values, (int, float)) else tuple(values)
    if not vals or any(not float(v) > 0 for v in vals):
        raise ValueError(f"{name} must be positive (a number or a non-empty sequence), got {values!r}")
    return tuple(float(v) for v in vals)


def moment_matching(x: jax.Array, y: jax.Array, order: int = 2) -> jax.Array:
    """``sum_{j=1..order} ||m_j(x) - m_j(y)||^2`` (module docstring); ``order >= 1``."""
    _check_pair(x, y)
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"moment order must be an integer >= 1, got {order!r}")
    total = jnp.sum((x.mean(0) - y.mean(0)) ** 2)
    if order >= 2:
        total += jnp.sum((x.T @ x / x.shape[0] - y.T @ y / y.shape[0]) ** 2)
    for j in range(3, order + 1):
        total += jnp.sum((jnp.mean(x**j, 0) - jnp.mean(y**j, 0)) ** 2)
    return total


def _gram(kind: str, a, b, scales):
    d2 = sq_dists(a, b)
    if kind == "gaussian":
        return sum(jnp.exp(-d2 / (2.0 * h * h)) for h in scales)
    return sum(c / (c + d2) for c in scales)


def mmd2(
    x: jax.Array,
    y: jax.Array,
    *,
    kernel: str = "gaussian",
    bandwidths: float | Sequence[float] = 1.0,
    unbiased: bool = False,
) -> jax.Array:
    """Differentiable ``MMD^2`` between sample sets ``x (n, d)`` and ``y (m, d)``.

    Args:
      kernel: ``"gaussian"`` (``bandwidths`` are ``h``) or ``"imq"``
        (``bandwidths`` are the scales ``c``); several values sum the kernels.
      unbiased: U-statistic (drops the ``i = j`` terms) or V-statistic.
    """
    _check_pair(x, y)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    scales = _positive_tuple(bandwidths, "bandwidths")
    n, m = x.shape[0], y.shape[0]
    kxx = _gram(kernel, x, x, scales)
    kyy = _gram(kernel, y, y, scales)
    kxy = _gram(kernel, x, y, scales)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError(f"unbiased MMD needs >= 2 samples per set, got {n} and {m}")
        sxx = (kxx.sum() - jnp.trace(kxx)) / (n * (n - 1))
        syy = (kyy.sum() - jnp.trace(kyy)) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return sxx + syy - 2.0 * kxy.mean()


def _safe_dist(a, b):
    diff = a[:, None, :] - b[None, :, :]
    d2 = jnp.sum(diff * diff, axis=-1)
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)


def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Squared energy distance ``2 E||x-y|| - E||x-x'|| - E||y-y'||`` (V-statistic).

    Equals ``genlearn.metrics.energy_distance``; pairwise differences are taken
    directly so the gradient at coinciding points is exactly 0, not NaN.
    """
    _check_pair(x, y)
    return 2.0 * _safe_dist(x, y).mean() - _safe_dist(x, x).mean() - _safe_dist(y, y).mean()


def sinkhorn_divergence(x: jax.Array, y: jax.Array, epsilon: float = 0.05) -> jax.Array:
    """Debiased Sinkhorn divergence ``OT_eps(x,y) - OT_eps(x,x)/2 - OT_eps(y,y)/2`` (ott-jax).

    Cost ``||x - y||^2`` (squared-distance units, like ``genlearn.metrics.sinkhorn_divergence``).
    """
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence as sd

    _check_pair(x, y)
    eps = _positive_tuple(epsilon, "epsilon")[0]
    value, _ = sd.sinkhorn_divergence(pointcloud.PointCloud, x, y, epsilon=eps)
    return value


def sliced_wasserstein(x: jax.Array, y: jax.Array, key: jax.Array, num_projections: int = 64,
                       p: float = 2.0) -> jax.Array:
    """``SW_p^p`` over ``num_projections`` random directions (exact 1-D OT by sorting).

    The same kernel as ``genlearn.metrics.sliced_wasserstein`` (which returns ``SW_p``).
    """
    _check_pair(x, y)
    if not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections must be an integer >= 1, got {num_projections!r}")
    if not float(p) >= 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    return _sliced(key, x, x.shape[0], y, y.shape[0], jnp.asarray(p, x.dtype), num_projections) ** p


def weak_loss(name: str, **options: Any) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """A weak loss by name as ``loss(x, y, key) -> scalar``.

    Args:
      name: one of :data:`WEAK_LOSSES`.
      **options: keyword arguments of the matching function (``order`` for
        moments; ``kernel``, ``bandwidths``, ``unbiased`` for mmd; ``epsilon``
        for sinkhorn; ``num_projections``, ``p`` for sliced).

    Raises:
      ValueError: unknown name or options.
    """
    fns = {
        "moments": lambda x, y, key, **o: moment_matching(x, y, **o),
        "mmd": lambda x, y, key, **o: mmd2(x, y, **o),
        "energy": lambda x, y, key, **o: energy_distance(x, y, **o),
        "sinkhorn": lambda x, y, key, **o: sinkhorn_divergence(x, y, **o),
        "sliced": lambda x, y, key, **o: sliced_wasserstein(x, y, key, **o),
    }
    allowed = {
        "moments": {"order"},
        "mmd": {"kernel", "bandwidths", "unbiased"},
        "energy": set(),
        "sinkhorn": {"epsilon"},
        "sliced": {"num_projections", "p"},
    }
    if name not in fns:
        raise ValueError(f"unknown weak loss {name!r}; choose one of {WEAK_LOSSES}")
    bad = set(options) - allowed[name]
    if bad:
        raise ValueError(f"weak loss {name!r} takes options {sorted(allowed[name])}, got {sorted(bad)}")
    fn = fns[name]
    # validate the options once, eagerly (Sinkhorn: without running the solver)
    if name == "sinkhorn":
        _positive_tuple(options.get("epsilon", 1.0), "epsilon")
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
