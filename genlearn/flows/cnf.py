"""Continuous normalizing flows (FFJORD, Grathwohl et al. 2019).

A CNF block moves a point along an ODE dx/dt = f_theta(x, t[, c]) from t = 0
(the latent z) to t = t1 (the data x). The instantaneous change of variables
gives the log-determinant as a time integral of the trace of the Jacobian:

    d/dt log|det dx(t)/dx(0)| = tr(df/dx(x(t), t)),
    log p(x) = log q(z) - int_0^t1 tr(df/dx(x(t), t)) dt,

computed by solving the augmented ODE (x, l) from x at t1 back to 0. The
trace is exact (``trace="exact"``: the Jacobian by ``jax.jacfwd``, d forward
passes, fine for small d) or Hutchinson's unbiased estimate
``eps^T (df/dx) eps`` with one Rademacher or Gaussian probe per example and per
solve (``trace="hutchinson"``: one vector-Jacobian product, for large d; the
probes come from an explicit key).

ODEs are solved by diffrax (``solver``, ``rtol``, ``atol``, ``max_steps``);
gradients go through ``adjoint``: "recursive" (diffrax's
RecursiveCheckpointAdjoint, reverse mode through the solver with checkpointing:
exact gradients of the discretised solve), "backsolve" (BacksolveAdjoint, the
continuous adjoint of Chen et al. 2018: O(1) memory) or "forward" (ForwardMode,
needed for ``jax.jacfwd`` through the solve). The vector field is a flax MLP
on ``concat(x, t[, c])`` with a smooth activation; its last layer is
zero-initialised so every block starts as the identity.

Flow-level functions solve the whole batch as one ODE (one adaptive step size
for the batch, as in FFJORD); the :class:`Bijector` (``flow.bijector``) acts on
one example with the exact trace, like every other bijector.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import _check_dim, make_bijector
from genlearn.core.distributions import Distribution, make_base
from genlearn.core.flow import Flow, _check_n, batch_context, check_batch
from genlearn.flows._common import check_hidden, check_layers
from genlearn.nn import MLP

__all__ = ["cnf", "cnf_nll", "cnf_flow_matching", "cnf_field", "solve_with_log_det", "SOLVERS", "ADJOINTS"]

Array = jax.Array

SOLVERS = {"dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5, "bosh3": diffrax.Bosh3, "dopri8": diffrax.Dopri8}
ADJOINTS = {
    "recursive": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
    "forward": diffrax.ForwardMode,
}
_ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "silu": jax.nn.silu, "elu": jax.nn.elu}


def _check_positive(value, what: str) -> float:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"cnf: {what} must be a finite number > 0, got {value!r}")
    return float(value)


def solve_with_log_det(field: Callable, params, x: Array, t0, t1, *, trace: str | None = "exact",
                       probes: Array | None = None, context: Array | None = None,
                       solver: str | diffrax.AbstractSolver = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                       adjoint: str | diffrax.AbstractAdjoint = "recursive", max_steps: int = 4096,
                       num_steps: int | None = None, save_ts: Array | None = None, step_ts=None):
    """Solves dx/dt = field(params, x, t[, c]) for a batch from t0 to t1, with the log-determinant.

    The instantaneous change of variables (Chen et al. 2018): along the flow,
    d/dt log|det dx(t)/dx(t0)| = tr(d field / dx), so the augmented state
    (x, l) with dl/dt = tr(d field/dx (x(t), t)) gives at t1

        x(t1)  and  l(t1) = log|det dx(t1)/dx(t0)|.

    This is the one solver of the CNF blocks (:func:`cnf`) and of the
    probability-flow ODE of diffusion models (`genlearn.diffusion.likelihood`).

    Args:
      field: ``field(params, x, t) -> dx/dt`` for ONE example ``x`` of shape
        ``(d,)`` and a scalar time (``field(params, x, t, c)`` when ``context``
        is given); vmapped over the batch here.
      params: passed to ``field`` (differentiated through by ``adjoint``).
      x: ``(n, d)`` states at ``t0``.
      t0, t1: start and end times (t1 < t0 integrates backwards).
      trace: None (no log-det: l = 0), "exact" (the Jacobian by ``jax.jacfwd``,
        d forward-mode passes) or "hutchinson" (``probes^T J probes``, one
        vector-Jacobian product; an unbiased estimate for fixed probes).
      probes: ``(n, d)`` Hutchinson probes (one per example, fixed along the solve).
      context: ``(n, c)`` per-example conditioning handed to ``field``, or None.
      solver: a name of :data:`SOLVERS` or a diffrax solver.
      rtol, atol: the adaptive controller's tolerances (``num_steps`` None).
      adjoint: a name of :data:`ADJOINTS` or a diffrax adjoint.
      max_steps: the solver's step limit.
      num_steps: fixed steps of size (t1 - t0) / num_steps instead of the
        adaptive controller (the NFE is then fixed: stages x num_steps).
      save_ts: times at which to also return the states (a trajectory).
      step_ts: the times ``t0, ..., t1`` to step between (fixed steps of any
        sizes; overrides ``num_steps`` and the adaptive controller).

    Returns:
      ``(x_t1, log_det)`` of shapes ``(n, d)`` and ``(n,)``; with ``save_ts``
      also ``xs`` of shape ``(len(save_ts), n, d)`` and diffrax's ``stats``.
    """
    if trace not in (None, "exact", "hutchinson"):
        raise ValueError(f"trace must be None, 'exact' or 'hutchinson', got {trace!r}")
    if trace == "hutchinson" and probes is None:
        raise ValueError("trace='hutchinson' needs probes (one (d,) probe vector per example)")
    solver_obj = SOLVERS[solver]() if isinstance(solver, str) else solver
    adjoint_obj = ADJOINTS[adjoint]() if isinstance(adjoint, str) else adjoint
    c_axis = None if context is None else 0
    extra = () if context is None else (context,)

    def one(p, v, t, *c):
        return field(p, v, t, *c)

    def exact_div(p, v, t, *c):
        jac, f = jax.jacfwd(lambda u: (one(p, u, t, *c),) * 2, has_aux=True)(v)
        return f, jnp.trace(jac)

    def hutch_div(p, v, t, eps, *c):
        f, vjp = jax.vjp(lambda u: one(p, u, t, *c), v)
        return f, jnp.sum(vjp(eps)[0] * eps)

    if trace is None:

        def vf(t, y, args):
            return jax.vmap(one, (None, 0, None) + (c_axis,) * len(extra))(args, y, t, *extra)

        y0 = x
    elif trace == "exact":

        def vf(t, y, args):
            return jax.vmap(exact_div, (None, 0, None) + (c_axis,) * len(extra))(args, y[0], t, *extra)

        y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
    else:

        def vf(t, y, args):
            return jax.vmap(hutch_div, (None, 0, None, 0) + (c_axis,) * len(extra))(args, y[0], t, probes, *extra)

        y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
    if step_ts is not None:  # steps between given times (t0, ..., t1)
        controller, dt0 = diffrax.StepTo(ts=jnp.asarray(step_ts, x.dtype)), None
    elif num_steps is None:
        controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
    else:
        controller, dt0 = diffrax.ConstantStepSize(), (t1 - t0) / int(num_steps)
    saveat = diffrax.SaveAt(t1=True) if save_ts is None else diffrax.SaveAt(ts=save_ts)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), solver_obj, t0=t0, t1=t1, dt0=dt0, y0=y0, args=params,
        stepsize_controller=controller, adjoint=adjoint_obj, max_steps=int(max_steps), saveat=saveat,
    )
    xs, ls = (sol.ys, None) if trace is None else sol.ys
    x_end = xs[-1]
    l_end = jnp.zeros(x.shape[:1], x.dtype) if ls is None else ls[-1]
    if save_ts is None:
        return x_end, l_end
    return x_end, l_end, xs, sol.stats


def cnf_field(dim: int, hidden: tuple[int, ...] = (64, 64), activation: str | Callable = "tanh"):
    """The vector field of one CNF block: ``(net, field)``, ``field(p, x, t, c=None) -> dx/dt`` for ONE example.

    A flax MLP on ``concat(x, t[, c])`` with a smooth ``activation`` and a
    zero-initialised last layer (the block starts as the identity);
    ``net.init(key, zeros(dim + 1 + context_dim))`` makes its params. :func:`cnf`
    and :func:`cnf_flow_matching` build their fields here, so the two agree on
    the params of a block.
    """
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"cnf: activation must be smooth, one of {sorted(_ACTIVATIONS)}; got {activation!r}")
        activation = _ACTIVATIONS[activation]
    net = MLP(hidden=tuple(hidden), out=dim, activation=activation, zero_init_last=True)

    def field(p, x, t, c=None):
        inp = [x, jnp.reshape(t, (1,)).astype(x.dtype)]
        if c is not None:
            inp.append(c.astype(x.dtype))
        return net.apply(p, jnp.concatenate(inp))

    return net, field


def cnf(
    dim: int,
    num_layers: int = 1,
    hidden: tuple[int, ...] = (64, 64),
    *,
    trace: str = "exact",
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t1: float = 1.0,
    solver: str = "dopri5",
    adjoint: str = "recursive",
    max_steps: int = 4096,
    activation: str | Callable = "tanh",
    base: str | Distribution = "normal",
    context_dim: int = 0,
) -> Flow:
    """A continuous normalizing flow: ``num_layers`` stacked ODE blocks.

    Args:
      dim: data dimension, >= 1.
      num_layers: number of stacked CNF blocks (each with its own vector field).
      hidden: hidden widths of each vector-field MLP.
      trace: "exact" (``log_prob(params, x, context=None)``) or "hutchinson"
        (``log_prob(params, x, context=None, key=key)``: the key draws the probes;
        the estimate of log p(x) is unbiased for the discretised integral).
      probe: Hutchinson probe distribution, "rademacher" or "gaussian".
      rtol, atol: tolerances of the adaptive step-size controller.
      t1: integration time, > 0.
      solver: "dopri5", "tsit5", "bosh3", "dopri8" (diffrax explicit RK solvers).
      adjoint: "recursive", "backsolve" or "forward" (see module docstring).
      max_steps: the solver's step limit (exceeding it raises an error).
      activation: smooth activation: "tanh", "softplus", "silu", "elu" or a callable.
      base: base distribution name or Distribution.
      context_dim: > 0 for a conditional CNF p(x | c): the vector field reads c.

    Returns a :class:`Flow` (same fields as every flow). Its ``bijector`` is
    the exact-trace single-example bijector (used for sampling with log-dets).
    """
    dim = _check_dim(dim, 1, "cnf: dim")
    num_layers = check_layers(num_layers)
    hidden = check_hidden(hidden)
    context_dim = _check_dim(context_dim, 0, "cnf: context_dim")
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"cnf: trace must be 'exact' or 'hutchinson', got {trace!r}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"cnf: probe must be 'rademacher' or 'gaussian', got {probe!r}")
    rtol, atol, t1 = _check_positive(rtol, "rtol"), _check_positive(atol, "atol"), _check_positive(t1, "t1")
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"cnf: unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
        solver_obj = SOLVERS[solver]()
    elif isinstance(solver, diffrax.AbstractSolver):
        solver_obj = solver
    else:
        raise ValueError(f"cnf: solver must be a name or a diffrax solver, got {solver!r}")
    if adjoint not in ADJOINTS:
        raise ValueError(f"cnf: unknown adjoint {adjoint!r}; choose one of {sorted(ADJOINTS)}")
    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"cnf: max_steps must be an int >= 1, got {max_steps!r}")
    base_dist = make_base(base, dim)
    net, _field = cnf_field(dim, hidden, activation)
    adjoint_obj = ADJOINTS[adjoint]()

    def _solve(p, x, c, t_start, t_end, mode, eps=None):
        """The (augmented) ODE of one block for a batch x (n, d): :func:`solve_with_log_det`."""
        return solve_with_log_det(_field, p, x, t_start, t_end, trace=mode, probes=eps, context=c,
                                  solver=solver_obj, rtol=rtol, atol=atol, adjoint=adjoint_obj,
                                  max_steps=int(max_steps))

    def _forward(bparams, z, c, mode, eps_list=None):
        """z -> x through the blocks in flow order; returns (x, log|det dx/dz|)."""
        total = jnp.zeros(z.shape[:1], z.dtype)
        for i, p in enumerate(bparams):
            z, ld = _solve(p, z, c, 0.0, t1, mode, None if eps_list is None else eps_list[i])
            total = total + ld
        return z, total

    def _backward(bparams, x, c, mode, eps_list=None):
        """x -> z through the blocks in reverse; returns (z, log|det dz/dx|)."""
        total = jnp.zeros(x.shape[:1], x.dtype)
        for i in reversed(range(len(bparams))):
            x, ld = _solve(bparams[i], x, c, t1, 0.0, mode, None if eps_list is None else eps_list[i])
            total = total + ld
        return x, total

    # -- the single-example bijector (exact trace) --------------------------
    def b_init(key):
        keys = jax.random.split(key, num_layers)
        inp = jnp.zeros((dim + 1 + context_dim,))
        return tuple(net.init(k, inp) for k in keys)

    def _one(c):
        return None if c is None else c[None]

    def fwd(params, z, context=None):
        x, ld = _forward(params, z[None], _one(context), "exact")
        return x[0], ld[0]

    def inv(params, x, context=None):
        z, ld = _backward(params, x[None], _one(context), "exact")
        return z[0], ld[0]

    if context_dim:
        bijector = make_bijector(b_init, fwd, inv, dim, context_dim=context_dim)
    else:
        bijector = make_bijector(b_init, lambda p, z: fwd(p, z), lambda p, x: inv(p, x), dim)

    # -- batch (flow-level) functions: one joint ODE solve per block ---------
    def _batch_ctx(context, n, what):
        c, axis = batch_context(context, n, context_dim, what)
        if c is None:
            return None
        return jnp.broadcast_to(c, (n, context_dim)) if axis is None else c

    def _probes(key, n, dtype):
        keys = jax.random.split(key, num_layers)
        if probe == "rademacher":
            return [jax.random.rademacher(k, (n, dim)).astype(dtype) for k in keys]
        return [jax.random.normal(k, (n, dim), dtype) for k in keys]

    def init(key):
        kb, kg = jax.random.split(key)
        return {"base": base_dist.init(kb), "bijector": b_init(kg)}

    def apply(params, z, context=None):
        check_batch(z, dim, "apply")
        return _forward(params["bijector"], z, _batch_ctx(context, z.shape[0], "apply"), None)[0]

    def inverse(params, x, context=None):
        check_batch(x, dim, "inverse")
        return _backward(params["bijector"], x, _batch_ctx(context, x.shape[0], "inverse"), None)[0]

    def log_det(params, z, context=None):
        check_batch(z, dim, "log_det")
        return _forward(params["bijector"], z, _batch_ctx(context, z.shape[0], "log_det"), "exact")[1]

    def log_prob(params, x, context=None, key=None):
        check_batch(x, dim, "log_prob")
        c = _batch_ctx(context, x.shape[0], "log_prob")
        if trace == "exact":
            if key is not None:
                raise ValueError("cnf(trace='exact'): log_prob takes no key (the trace is exact)")
            z, ld = _backward(params["bijector"], x, c, "exact")
        else:
            if key is None:
                raise ValueError(
                    "cnf(trace='hutchinson'): log_prob needs a key for the probe noise: "
                    "log_prob(params, x, context, key=key)"
                )
            z, ld = _backward(params["bijector"], x, c, "hutchinson", _probes(key, x.shape[0], x.dtype))
        return jax.vmap(base_dist.log_prob, (None, 0))(params["base"], z) + ld

    def sample(params, key, n, context=None):
        z = base_dist.sample(params["base"], key, _check_n(n))
        return _forward(params["bijector"], z, _batch_ctx(context, n, "sample"), None)[0]

    def sample_and_log_prob(params, key, n, context=None):
        z = base_dist.sample(params["base"], key, _check_n(n))
        log_q = jax.vmap(base_dist.log_prob, (None, 0))(params["base"], z)
        x, ld = _forward(params["bijector"], z, _batch_ctx(context, n, "sample_and_log_prob"), "exact")
        return x, log_q - ld

    return Flow(init, apply, inverse, log_det, log_prob, sample, sample_and_log_prob, base_dist, bijector,
                dim, context_dim)


def cnf_nll(flow: Flow, *, weight_decay: float = 0.0) -> Callable:
    """NLL loss ``loss(params, batch, key)`` for a Hutchinson CNF (fresh probes each step).

    For ``trace="exact"`` use :func:`genlearn.losses.nll`.
    """
    from genlearn.losses import l2_penalty

    if not weight_decay >= 0:
        raise ValueError(f"cnf_nll: weight_decay must be >= 0, got {weight_decay}")

    def loss(params, batch, key):
        lp = flow.log_prob(params, batch, key=key)
        reg = weight_decay * l2_penalty(params) if weight_decay > 0 else 0.0
        return -jnp.mean(lp) + reg

    return loss


def cnf_flow_matching(dim: int, hidden: tuple[int, ...] = (64, 64), *, activation: str | Callable = "tanh",
                      t1: float = 1.0, sigma_min: float = 1e-4, context_dim: int = 0,
                      base: str | Distribution = "normal", coupling: str = "independent",
                      ot_epsilon: float = 0.01) -> Callable:
    r"""Conditional flow matching loss ``loss(params, batch, key)`` for a one-block :func:`cnf`.

    Trains the CNF without solving an ODE (Lipman et al. 2023, "Flow Matching
    for Generative Modeling", the optimal-transport path of section 4.1): with
    :math:`x_1` a data row, :math:`x_0` a draw from the CNF's base (N(0, I) by
    default), :math:`t \sim U(0, 1)` and the straight path

    .. math:: x_t = (1 - (1 - \sigma_{min}) t) x_0 + t x_1, \qquad
              u_t = x_1 - (1 - \sigma_{min}) x_0,

    the loss is :math:`E \| t_1 f_\theta(x_t, t\,t_1) - u_t \|^2` (the block's
    ODE runs over :math:`[0, t_1]`). Its minimiser's flow carries the base to
    the data distribution (smoothed by :math:`\sigma_{min}`), so after training
    the CNF's exact ``log_prob`` (an ODE solve) and ``sample`` are those of the
    learned flow. Each step costs one field evaluation per row instead of an
    adaptive solve and its backward pass.

    Any base that can be sampled serves as the source (Tong et al. 2024,
    "Improving and generalizing flow-based generative models with minibatch
    optimal transport", the conditional flow matching of section 3): :math:`x_0`
    is drawn from the CNF's base at its current params (no gradient flows into
    the base; a base fitted to the data, `genlearn.core.gaussian_mixture`'s
    ``fit``, leaves the field only the residual transport). With
    ``coupling="ot"`` the batch's :math:`x_0` and :math:`x_1` are paired by
    minibatch optimal transport (their OT-CFM): an entropic plan between the two
    point clouds, squared Euclidean cost, by ott-jax's Sinkhorn, and each data
    row takes a source row drawn from its column of the plan. Paths then cross
    less, the field is straighter and the ODE cheaper to solve; the minimiser
    still carries the base to the data as the batch grows. A Sinkhorn solve per
    step is costly on CPU (~30 ms at batch 256 on 2 cores). With a
    `genlearn.core.gaussian_mixture` base, ``coupling="component"`` pairs each
    data row with a draw from one component, chosen with the row's posterior
    responsibility under the mixture: any coupling whose marginals are the base
    and the data gives a valid objective (Pooladian et al. 2023, "Multisample
    flow matching"), and this one has the base as its source marginal where the
    mixture's weights are the data's mean responsibilities, as at an EM fit
    (``gaussian_mixture.fit``). Each component's field then carries only its own
    Gaussian onto its share of the data, a short, nearly straight path.

    Args:
      dim, hidden, activation: those of the ``cnf(dim, 1, hidden, activation=...)`` whose
        params are trained (same values, so the params match).
      t1: the CNF's integration time.
      sigma_min: the width of the path's end point around each data row, > 0 and < 1.
      context_dim: > 0 for a conditional CNF: each batch row is ``[x, c]`` with the
        context in its last ``context_dim`` columns (as in `genlearn.losses.nll`).
      base: the CNF's base (the same as the ``cnf``'s): a name of
        `genlearn.core.make_base` or a Distribution; its params are
        ``params["base"]``. ``"normal"`` (the default) draws :math:`x_0` as before.
      coupling: ``"independent"`` (the default), ``"ot"`` (minibatch optimal
        transport) or ``"component"`` (by the mixture base's responsibilities);
        the last two for unconditional CNFs only.
      ot_epsilon: the Sinkhorn regularisation relative to the batch's mean cost, > 0
        (smaller: closer to the exact assignment, more iterations).

    Returns:
      ``loss(params, batch, key) -> scalar`` on the CNF's params
      ``{"base", "bijector": (block,)}`` (a one-block CNF).
    """
    dim = _check_dim(dim, 1, "cnf_flow_matching: dim")
    context_dim = _check_dim(context_dim, 0, "cnf_flow_matching: context_dim")
    t1 = _check_positive(t1, "t1")
    if not (isinstance(sigma_min, (int, float, np.floating)) and 0 < sigma_min < 1):
        raise ValueError(f"cnf_flow_matching: sigma_min must be in (0, 1), got {sigma_min!r}")
    if coupling not in ("independent", "ot", "component"):
        raise ValueError(f"cnf_flow_matching: coupling must be 'independent', 'ot' or 'component', got {coupling!r}")
    if coupling != "independent" and context_dim:
        raise ValueError(f"cnf_flow_matching: coupling={coupling!r} pairs unconditional batches; got context_dim "
                         f"{context_dim} (the pairing would mix contexts)")
    ot_epsilon = _check_positive(ot_epsilon, "ot_epsilon")
    base_dist = None if isinstance(base, str) and base == "normal" else make_base(base, dim)
    if coupling == "component" and (base_dist is None or not _is_mixture(base_dist)):
        raise ValueError("cnf_flow_matching: coupling='component' needs a gaussian_mixture base "
                         f"(genlearn.core.gaussian_mixture), got base={base!r}")
    _, field = cnf_field(dim, check_hidden(hidden), activation)

    def loss(params, batch, key):
        blocks = params["bijector"]
        if len(blocks) != 1:
            raise ValueError(f"cnf_flow_matching trains a one-block cnf (num_layers=1), got {len(blocks)} blocks")
        if batch.ndim != 2 or batch.shape[1] != dim + context_dim:
            raise ValueError(f"cnf_flow_matching: batch must be (n, {dim + context_dim}), got {batch.shape}")
        x1, c = batch[:, :dim], (batch[:, dim:] if context_dim else None)
        k0, kt = jax.random.split(key)
        if base_dist is None:  # N(0, I), drawn as it always was
            x0 = jax.random.normal(k0, x1.shape, x1.dtype)
        elif coupling == "component":
            x0 = jax.lax.stop_gradient(_component_draw(params["base"], x1, k0))
        else:
            k0, kp = jax.random.split(k0)
            x0 = jax.lax.stop_gradient(base_dist.sample(params["base"], k0, x1.shape[0]).astype(x1.dtype))
        if coupling == "ot":
            x0 = x0[_ot_pairing(jax.lax.stop_gradient(x0), x1, kp if base_dist is not None
                                else jax.random.fold_in(k0, 1), ot_epsilon)]
        t = jax.random.uniform(kt, x1.shape[:1] + (1,), x1.dtype)
        xt = (1 - (1 - sigma_min) * t) * x0 + t * x1
        target = x1 - (1 - sigma_min) * x0
        args = (blocks[0], xt, t[:, 0] * t1) + (() if c is None else (c,))
        v = jax.vmap(field, (None, 0, 0) + (0,) * (c is not None))(*args)
        return jnp.mean(jnp.sum((t1 * v - target) ** 2, axis=-1))

    return loss


def _ot_pairing(x0: Array, x1: Array, key: Array, epsilon: float) -> Array:
    """For each row of ``x1``, the index of a row of ``x0`` drawn from its column of the entropic OT plan.

    The plan (uniform weights, squared Euclidean cost, regularisation ``epsilon``
    times the mean cost) is ott-jax's Sinkhorn solution; the draw per column keeps
    every data row once and, in expectation, every source row once.
    """
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    geom = pointcloud.PointCloud(x0, jax.lax.stop_gradient(x1), epsilon=epsilon, relative_epsilon="mean")
    out = sinkhorn.Sinkhorn(implicit_diff=None)(linear_problem.LinearProblem(geom))
    plan = jax.lax.stop_gradient(out.matrix)  # (n0, n1), columns summing to 1/n1
    return jax.random.categorical(key, jnp.log(jnp.maximum(plan.T, 1e-30)), axis=-1)


def _is_mixture(base: Distribution) -> bool:
    """Whether ``base`` has `genlearn.core.gaussian_mixture`'s params (checked on its ``init``)."""
    shapes = jax.eval_shape(base.init, jax.random.PRNGKey(0))
    return isinstance(shapes, dict) and set(shapes) == {"logits", "means", "log_std"}


def _component_draw(mixture: dict, x1: Array, key: Array) -> Array:
    """One draw per row of ``x1`` from the mixture component chosen by the row's responsibility."""
    k_c, k_e = jax.random.split(key)
    means, log_std = mixture["means"].astype(x1.dtype), mixture["log_std"].astype(x1.dtype)
    z = (x1[:, None, :] - means[None]) * jnp.exp(-log_std)[None]  # (n, K, d)
    log_resp = (jax.nn.log_softmax(mixture["logits"].astype(x1.dtype))[None]
                - 0.5 * jnp.sum(z**2, -1) - jnp.sum(log_std, -1)[None])  # up to a constant per row
    c = jax.random.categorical(k_c, log_resp, axis=-1)
    return means[c] + jnp.exp(log_std[c]) * jax.random.normal(k_e, x1.shape, x1.dtype)
