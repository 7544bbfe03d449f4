r"""Gaussian mixture models fitted by EM (jitted) or by gradient descent.

.. math::

    p(x) = \sum_{j=1}^k \pi_j\, \mathcal N(x; \mu_j, \Sigma_j), \qquad
    \log \mathcal N(x; \mu, \Sigma) = -\tfrac d2 \log 2\pi + \sum_i \log U_{ii}
        - \tfrac12 \lVert (x - \mu)^\top U \rVert^2,

with :math:`U` the upper-triangular Cholesky factor of the precision,
:math:`\Sigma^{-1} = U U^\top` (scikit-learn's ``precisions_cholesky_``); the
lecture's basis expansion with weights :math:`a_j = \pi_j` and Gaussian
kernels. Covariance types: ``full`` (one :math:`\Sigma_j` each), ``tied`` (one
shared :math:`\Sigma`), ``diag`` (:math:`\Sigma_j` diagonal), ``spherical``
(:math:`\Sigma_j = \sigma_j^2 I`).

**Params are unconstrained**, so EM's output feeds `genlearn.losses.nll` and
`genlearn.train.fit` unchanged (the lecture's strong form):

* ``"logits"`` ``(k,)``: :math:`\pi = \operatorname{softmax}(\text{logits})`;
* ``"means"`` ``(k, d)``;
* ``"prec_chol"``: full ``(k, d, d)`` / tied ``(d, d)``: strictly upper part
  is :math:`U`'s off-diagonal, diagonal is :math:`\log U_{ii}` (entries below
  the diagonal are ignored); diag ``(k, d)`` / spherical ``(k,)``:
  :math:`\log \sigma^{-1}`.

**EM** (Dempster, Laird & Rubin 1977), in log space: responsibilities
:math:`r_{ij} = \exp(\log\pi_j + \log\mathcal N_j(x_i) - \operatorname{LSE}_l(\cdot))`,
then :math:`N_j = \sum_i r_{ij} + 10\epsilon`, :math:`\mu_j = \sum_i r_{ij} x_i / N_j`,
:math:`\Sigma_j = \sum_i r_{ij}(x_i - \mu_j)(x_i - \mu_j)^\top / N_j + \lambda I`
(``reg_covar`` :math:`\lambda`; tied: the :math:`N_j`-weighted average of the
:math:`\Sigma_j`; diag: its diagonal; spherical: the mean of the diagonal),
:math:`\pi_j = N_j / \sum_l N_l`, exactly as scikit-learn's ``GaussianMixture``.
The loop is a ``lax.while_loop`` that stops when the mean log-likelihood
changes by less than ``tol`` or after ``max_iter`` iterations; ``n_init``
restarts (k-means++ seeding, Arthur & Vassilvitskii 2007, then hard
assignment to the nearest seed and one M-step) run vmapped over keys and the
one with the highest final mean log-likelihood is kept.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.classical._validation import (
    check_fit_data,
    check_int,
    check_key,
    check_num_samples,
    check_positive,
    check_query,
)

__all__ = ["GMM", "EMInfo", "gmm", "COVARIANCE_TYPES", "kmeans_plusplus"]

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")

Array = jax.Array
Params = dict
_LOG_2PI = math.log(2 * math.pi)


class EMInfo(NamedTuple):
    """Per-restart EM diagnostics, arrays of shape ``(n_init,)``.

    Attributes:
      lower_bound: final mean log-likelihood of the training data (nats),
        computed in the last E-step (as scikit-learn's ``lower_bound_``).
      n_iter: EM iterations run.
      converged: whether the change fell below ``tol``.
      best: index of the restart kept (scalar).
    """

    lower_bound: Array
    n_iter: Array
    converged: Array
    best: Array


class GMM(NamedTuple):
    r"""A Gaussian mixture as pure functions.

    Attributes:
      name: ``"gmm"``.
      fit: ``fit(key, data) -> params`` by EM with restarts.
      log_prob: ``log_prob(params, x) -> (m,)`` for x ``(m, d)``;
        differentiable in the unconstrained params.
      sample: ``sample(params, key, n) -> (n, d)``.
      init: ``init(key, data) -> params``: k-means++ seeding and one M-step,
        a starting point for gradient training.
      fit_with_info: ``fit_with_info(key, data) -> (params, EMInfo)``.
      responsibilities: ``(params, x) -> (m, k)`` posterior component probabilities.
      bic, aic: ``(params, data) -> scalar``:
        :math:`-2 n \bar\ell + p \log n` and :math:`-2 n \bar\ell + 2p`.
      num_parameters: ``num_parameters(d) -> int`` free parameters ``p``.
      to_moments: ``params -> {"weights", "means", "covariances"}`` in
        scikit-learn's shapes for the covariance type.
      from_moments: ``(weights, means, covariances) -> params``.
      num_components: ``k``.
      covariance: the covariance type.
    """

    name: str
    fit: Callable[[Array, Any], Params]
    log_prob: Callable[[Params, Array], Array]
    sample: Callable[[Params, Array, int], Array]
    init: Callable[[Array, Any], Params]
    fit_with_info: Callable[[Array, Any], tuple[Params, EMInfo]]
    responsibilities: Callable[[Params, Array], Array]
    bic: Callable[[Params, Any], Array]
    aic: Callable[[Params, Any], Array]
    num_parameters: Callable[[int], int]
    to_moments: Callable[[Params], dict]
    from_moments: Callable[[Array, Array, Array], Params]
    num_components: int
    covariance: str


# ---------------------------------------------------------------------------
# Parametrisation: raw (unconstrained) <-> U (precision Cholesky) <-> Sigma.
# ---------------------------------------------------------------------------


def _raw_to_u(cov_type: str, raw: Array) -> Array:
    if cov_type in ("full", "tied"):
        diag = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
        return jnp.triu(raw, 1) + diag[..., None] * jnp.eye(raw.shape[-1], dtype=raw.dtype)
    return jnp.exp(raw)


def _u_to_raw(cov_type: str, u: Array) -> Array:
    if cov_type in ("full", "tied"):
        log_diag = jnp.log(jnp.diagonal(u, axis1=-2, axis2=-1))
        return jnp.triu(u, 1) + log_diag[..., None] * jnp.eye(u.shape[-1], dtype=u.dtype)
    return jnp.log(u)


def _cov_to_u(cov_type: str, cov: Array) -> Array:
    """Precision Cholesky U (upper, Sigma^{-1} = U U^T); NaN where Sigma is not PD."""
    if cov_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(cov)
        eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
        return jnp.swapaxes(jax.scipy.linalg.solve_triangular(chol, eye, lower=True), -1, -2)
    return jnp.where(cov > 0, jax.lax.rsqrt(jnp.where(cov > 0, cov, 1.0)), jnp.nan)


def _u_to_cov(cov_type: str, u: Array) -> Array:
    if cov_type in ("full", "tied"):
        eye = jnp.broadcast_to(jnp.eye(u.shape[-1], dtype=u.dtype), u.shape)
        u_inv = jax.scipy.linalg.solve_triangular(u, eye, lower=False)
        return jnp.swapaxes(u_inv, -1, -2) @ u_inv  # Sigma = (U U^T)^{-1} = U^{-T} U^{-1}
    return 1.0 / jnp.square(u)


def _component_log_prob(cov_type: str, x: Array, means: Array, u: Array) -> Array:
    """``(n, k)``: log N(x_i; mu_j, Sigma_j) with Sigma_j^{-1} = U_j U_j^T."""
    n, d = x.shape
    k = means.shape[0]
    if cov_type == "full":
        if x.dtype == jnp.float64:  # one (n, d) x (d, k d) matmul
            y = (x @ jnp.transpose(u, (1, 0, 2)).reshape(d, k * d)).reshape(n, k, d)
            y = y - jnp.einsum("kd,kde->ke", means, u)[None]
        else:  # U has entries ~ reg_covar^{-1/2}: x U - mu U would cancel in float32
            y = jnp.einsum("nkd,kde->nke", x[:, None, :] - means[None], u)
        maha = jnp.sum(y * y, axis=2)
        log_det = jnp.sum(jnp.log(jnp.diagonal(u, axis1=1, axis2=2)), axis=1)
    elif cov_type == "tied":
        y = (x[:, None, :] - means[None]) @ u
        maha = jnp.sum(y * y, axis=2)
        log_det = jnp.sum(jnp.log(jnp.diagonal(u)))
    elif cov_type == "diag":
        prec = u * u
        maha = (
            jnp.sum(means * means * prec, axis=1)[None]
            - 2.0 * x @ (means * prec).T
            + (x * x) @ prec.T
        )
        log_det = jnp.sum(jnp.log(u), axis=1)
    else:  # spherical
        prec = u * u
        maha = (
            jnp.sum(means * means, axis=1)[None] * prec[None]
            - 2.0 * (x @ means.T) * prec[None]
            + jnp.sum(x * x, axis=1)[:, None] * prec[None]
        )
        log_det = d * jnp.log(u)
    return -0.5 * (d * _LOG_2PI + maha) + log_det


def _estep(cov_type, x, log_weights, means, u):
    weighted = _component_log_prob(cov_type, x, means, u) + log_weights[None]
    log_norm = jax.nn.logsumexp(weighted, axis=1)
    return jnp.mean(log_norm), weighted - log_norm[:, None]


def _mstep(cov_type, x, resp, reg):
    """scikit-learn's M-step; returns (log_weights, means, U)."""
    eps = 10 * jnp.finfo(x.dtype).eps
    nk = jnp.sum(resp, axis=0) + eps
    means = (resp.T @ x) / nk[:, None]
    d = x.shape[1]

    if cov_type in ("full", "tied"):
        if x.dtype == jnp.float64:  # E_r[x x^T] - mu mu^T as one matmul
            second = ((x[:, None, :] * resp[:, :, None]).reshape(x.shape[0], -1).T @ x)
            cov = second.reshape(-1, d, d) / nk[:, None, None] - means[:, :, None] * means[:, None, :]
        else:  # centred first, for float32
            def one(r, mu, n_j):
                diff = x - mu
                return (diff * r[:, None]).T @ diff / n_j

            cov = jax.vmap(one, in_axes=(1, 0, 0))(resp, means, nk)
        if cov_type == "tied":
            cov = jnp.tensordot(nk, cov, axes=1) / jnp.sum(nk)
        cov = cov + reg * jnp.eye(d, dtype=x.dtype)
    else:
        def one_diag(r, mu, n_j):
            diff = x - mu
            return r @ (diff * diff) / n_j

        cov = jax.vmap(one_diag, in_axes=(1, 0, 0))(resp, means, nk) + reg
        if cov_type == "spherical":
            cov = jnp.mean(cov, axis=1)
    log_weights = jnp.log(nk) - jnp.log(jnp.sum(nk))
    return log_weights, means, _cov_to_u(cov_type, cov)


def kmeans_plusplus(key: Array, x: Array, k: int) -> Array:
    r"""k-means++ seeding (Arthur & Vassilvitskii 2007): ``(k, d)`` centres.

    The first centre is uniform over the rows of ``x`` ``(n, d)``; each next
    one is drawn with probability :math:`\propto D(x)^2`, the squared distance
    to the nearest centre chosen so far. Jittable with ``k`` static.
    """
    n, d = x.shape
    key, k0 = jax.random.split(key)
    first = x[jax.random.randint(k0, (), 0, n)]
    centres = jnp.zeros((k, d), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, axis=1)

    def body(i, carry):
        centres, d2, key = carry
        key, sub = jax.random.split(key)
        total = jnp.sum(d2)
        logits = jnp.where(total > 0, jnp.log(jnp.where(d2 > 0, d2, 0.0)), 0.0)
        c = x[jax.random.categorical(sub, logits)]
        return centres.at[i].set(c), jnp.minimum(d2, jnp.sum((x - c) ** 2, axis=1)), key

    centres, _, _ = jax.lax.fori_loop(1, k, body, (centres, d2, key))
    return centres


def _init_one(cov_type, k, x, key, reg):
    centres = kmeans_plusplus(key, x, k)
    d2 = (
        jnp.sum(x * x, axis=1)[:, None]
        - 2.0 * x @ centres.T
        + jnp.sum(centres * centres, axis=1)[None]
    )
    resp = jax.nn.one_hot(jnp.argmin(d2, axis=1), k, dtype=x.dtype)
    return _mstep(cov_type, x, resp, reg)


def _em_one(cov_type, k, max_iter, x, key, tol, reg):
    log_w, means, u = _init_one(cov_type, k, x, key, reg)

    def cond(state):
        i, _, _, converged, _ = state
        return (i < max_iter) & ~converged

    def body(state):
        i, prev, _, _, (log_w, means, u) = state
        lb, log_resp = _estep(cov_type, x, log_w, means, u)
        new = _mstep(cov_type, x, jnp.exp(log_resp), reg)
        # NaN (a singular covariance) stops the loop too; fit reports it.
        converged = (jnp.abs(lb - prev) < tol) | ~jnp.isfinite(lb)
        return i + 1, lb, lb, converged, new

    neg_inf = jnp.asarray(-jnp.inf, x.dtype)
    state = (jnp.asarray(0), neg_inf, neg_inf, jnp.asarray(False), (log_w, means, u))
    n_iter, _, lb, converged, (log_w, means, u) = jax.lax.while_loop(cond, body, state)
    converged = converged & jnp.isfinite(lb)
    return (log_w, means, _u_to_raw(cov_type, u)), lb, n_iter, converged


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _em_restarts(cov_type, k, max_iter, x, keys, tol, reg):
    run = functools.partial(_em_one, cov_type, k, max_iter, x)
    (log_w, means, raw), lb, n_iter, converged = jax.vmap(run, in_axes=(0, None, None))(keys, tol, reg)
    finite = jnp.isfinite(lb)
    for leaf in (log_w, means, raw):
        finite &= jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
    best = jnp.argmax(jnp.where(finite, lb, -jnp.inf))
    params = {"logits": log_w[best], "means": means[best], "prec_chol": raw[best]}
    return params, EMInfo(lb, n_iter, converged, best), jnp.any(finite)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_jit(cov_type, k, x, key, reg):
    log_w, means, u = _init_one(cov_type, k, x, key, reg)
    return {"logits": log_w, "means": means, "prec_chol": _u_to_raw(cov_type, u)}


@functools.partial(jax.jit, static_argnums=(0,))
def _log_prob_jit(cov_type, params, x):
    u = _raw_to_u(cov_type, params["prec_chol"])
    log_w = jax.nn.log_softmax(params["logits"])
    return jax.nn.logsumexp(_component_log_prob(cov_type, x, params["means"], u) + log_w[None], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample_jit(cov_type, n, params, key):
    """``n`` draws: a component by its weight, then ``mu + U^{-T} eps``; one compiled program per
    ``(cov_type, n, shapes)`` rather than one per operation."""
    k_c, k_e = jax.random.split(key)
    means = params["means"]
    d = means.shape[1]
    comp = jax.random.categorical(k_c, params["logits"], shape=(n,))
    eps = jax.random.normal(k_e, (n, d), means.dtype)
    u = _raw_to_u(cov_type, params["prec_chol"])
    if cov_type in ("full", "tied"):
        eye = jnp.broadcast_to(jnp.eye(d, dtype=u.dtype), u.shape)
        u_inv = jax.scipy.linalg.solve_triangular(u, eye, lower=False)  # Sigma = U^-T U^-1
        # x = mu + U^{-T} eps has covariance U^{-T} U^{-1} = Sigma.
        if cov_type == "full":
            noise = jnp.einsum("ned,ne->nd", u_inv[comp], eps)
        else:
            noise = eps @ u_inv
    elif cov_type == "diag":
        noise = eps / u[comp]
    else:
        noise = eps / u[comp][:, None]
    return means[comp] + noise


def gmm(
    num_components: int,
    covariance: str = "full",
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    precision: str = "float64",
) -> GMM:
    r"""Gaussian mixture :math:`p(x) = \sum_j \pi_j \mathcal N(x; \mu_j, \Sigma_j)` fitted by EM.

    Args:
      num_components: k >= 1 (and <= n at fit time).
      covariance: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
      tol: stop when the mean training log-likelihood changes by less (> 0).
      max_iter: most EM iterations per restart (>= 1).
      reg_covar: :math:`\lambda \ge 0` added to the covariance diagonal.
      n_init: restarts (>= 1), vmapped; the best final likelihood is kept.
      precision: ``"float64"`` (default) runs EM in double precision under
        ``jax.enable_x64``, as scikit-learn does: with ``reg_covar = 1e-6`` a
        component with fewer than ``d + 1`` points has a covariance whose
        condition number (~1e7) is beyond float32's Cholesky. ``"default"``
        uses JAX's default float dtype. Params come back in the default dtype.

    Returns:
      A :class:`GMM`; ``fit`` returns unconstrained params (module docstring)
      that ``log_prob`` differentiates through.

    Raises:
      ValueError: ``k < 1`` or ``k > n``, unknown covariance type, bad
        ``tol``/``max_iter``/``reg_covar``/``n_init``, NaN/inf data, a query
        of the wrong dimension, or a singular covariance (e.g. rank-deficient
        data with ``reg_covar=0``).
    """
    k = check_int(num_components, "gmm: num_components (k)", 1)
    if covariance not in COVARIANCE_TYPES:
        raise ValueError(f"gmm: covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
    tol = check_positive(tol, "gmm: tol")
    max_iter = check_int(max_iter, "gmm: max_iter", 1)
    reg = check_positive(reg_covar, "gmm: reg_covar", allow_zero=True)
    n_init = check_int(n_init, "gmm: n_init", 1)
    if precision not in ("float64", "default"):
        raise ValueError(f"gmm: precision must be 'float64' or 'default', got {precision!r}")
    cov_type = covariance

    def _check_fit(data, where):
        x = check_fit_data(data, where)
        n, d = x.shape
        if k > n:
            raise ValueError(f"{where}: num_components k = {k} exceeds the number of samples n = {n}")
        if reg == 0.0:
            raw = np.asarray(data)
            eps = np.finfo(raw.dtype).eps if np.issubdtype(raw.dtype, np.floating) else np.finfo(np.float64).eps
            xn = raw.astype(np.float64)
            centred = xn - xn.mean(0)
            sv = np.linalg.svd(centred, compute_uv=False)
            # Rank at the input's precision: float32 data that are singular in
            # float32 are singular, whatever their float64 round-off says.
            rank = int(np.sum(sv > sv.max() * max(n, d) * eps)) if sv.size else 0
            if cov_type in ("full", "tied") and rank < d:
                raise ValueError(
                    f"{where}: the data are singular (rank {rank} < d = {d}) "
                    f"and covariance={cov_type!r} with reg_covar=0 needs a non-singular covariance; "
                    "set reg_covar > 0"
                )
            if np.any(np.ptp(xn, axis=0) == 0):
                raise ValueError(
                    f"{where}: some features are constant, so a covariance is singular with "
                    "reg_covar=0; set reg_covar > 0"
                )
        return x

    def _run(fn, data, where):
        """Runs ``fn(x)`` in the EM precision; returns its outputs as default-dtype arrays."""
        x = _check_fit(data, where)
        out_dtype = jnp.zeros(()).dtype
        if precision == "float64":
            with jax.enable_x64(True):
                out = fn(jnp.asarray(np.asarray(data, np.float64)))
                out = jax.tree_util.tree_map(np.asarray, out)
        else:
            out = jax.tree_util.tree_map(np.asarray, fn(x))

        def cast(a):
            return jnp.asarray(a, out_dtype) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a)

        return jax.tree_util.tree_map(cast, out)

    def fit_with_info(key, data):
        check_key(key, "gmm.fit")
        keys = jax.random.split(key, n_init)

        def run(x):
            return _em_restarts(
                cov_type, k, max_iter, x, keys, jnp.asarray(tol, x.dtype), jnp.asarray(reg, x.dtype)
            )

        params, info, ok = _run(run, data, "gmm.fit")
        if not bool(ok):
            raise ValueError(
                "gmm.fit: every restart produced a singular covariance (non-finite "
                f"parameters); increase reg_covar (now {reg}) or lower num_components"
            )
        return params, info

    def fit(key, data):
        return fit_with_info(key, data)[0]

    def init(key, data):
        check_key(key, "gmm.init")
        return _run(lambda x: _init_jit(cov_type, k, x, key, jnp.asarray(reg, x.dtype)), data, "gmm.init")

    def _dim(params):
        return params["means"].shape[1]

    def log_prob(params, x):
        x = check_query(x, _dim(params), "gmm.log_prob").astype(params["means"].dtype)
        return _log_prob_jit(cov_type, params, x)

    def responsibilities(params, x):
        x = check_query(x, _dim(params), "gmm.responsibilities").astype(params["means"].dtype)
        u = _raw_to_u(cov_type, params["prec_chol"])
        _, log_resp = _estep(cov_type, x, jax.nn.log_softmax(params["logits"]), params["means"], u)
        return jnp.exp(log_resp)

    def num_parameters(d):
        d = check_int(d, "gmm.num_parameters: d", 1)
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2, "spherical": k}
        return cov[cov_type] + k * d + k - 1

    def _criterion(params, data, penalty):
        x = check_query(data, _dim(params), "gmm.bic/aic")
        n = x.shape[0]
        return -2.0 * jnp.sum(log_prob(params, x)) + penalty(n) * num_parameters(_dim(params))

    def bic(params, data):
        return _criterion(params, data, lambda n: math.log(n))

    def aic(params, data):
        return _criterion(params, data, lambda n: 2.0)

    def to_moments(params):
        u = _raw_to_u(cov_type, params["prec_chol"])
        return {
            "weights": jax.nn.softmax(params["logits"]),
            "means": params["means"],
            "covariances": _u_to_cov(cov_type, u),
        }

    def from_moments(weights, means, covariances):
        means = jnp.asarray(means)
        d = means.shape[1]
        expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[cov_type]
        covariances = jnp.asarray(covariances, means.dtype)
        if means.shape != (k, d) or covariances.shape != expected or jnp.shape(weights) != (k,):
            raise ValueError(
                f"gmm.from_moments: expected weights ({k},), means ({k}, d), covariances {expected}; "
                f"got {jnp.shape(weights)}, {means.shape}, {covariances.shape}"
            )
        u = _cov_to_u(cov_type, covariances)
        if not bool(jnp.all(jnp.isfinite(u))):
            raise ValueError("gmm.from_moments: a covariance is not positive definite")
        return {
            "logits": jnp.log(jnp.asarray(weights, means.dtype)),
            "means": means,
            "prec_chol": _u_to_raw(cov_type, u),
        }

    def sample(params, key, n):
        n = check_num_samples(n, "gmm.sample")
        check_key(key, "gmm.sample")
        return _sample_jit(cov_type, n, params, key)

    return GMM(
        "gmm", fit, log_prob, sample, init, fit_with_info, responsibilities,
        bic, aic, num_parameters, to_moments, from_moments, k, cov_type,
    )
