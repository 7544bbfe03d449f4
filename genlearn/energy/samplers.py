r"""MCMC samplers in the blackjax pattern: ``init(position) -> state``, ``step(key, state) -> (state, info)``.

Every factory takes a log-density ``log pi(x)`` of ONE position ``x`` of shape
``(dim,)`` (for an energy model: ``lambda x: -V(params, x)``; ``Z`` is never
needed) and returns a :class:`Sampler`. ``step`` is pure and jittable, so a
chain is a ``jax.lax.scan`` over steps and many chains are a ``jax.vmap``
(`sample_chains` does both).

* `mala` and `hmc` / `nuts` are blackjax's kernels (``blackjax.mala``,
  ``blackjax.hmc``, ``blackjax.nuts``) with validated arguments and a common
  :class:`SamplerInfo`;
* `independent_mh` is ``blackjax.irmh`` (independent Metropolis-Hastings):
  proposals ``y ~ q`` that ignore the current state, accepted with
  ``min(1, pi(y) q(x) / (pi(x) q(y)))``. With `kde_proposal` (a kernel density
  estimate on data plus a wide Gaussian) it jumps between separated modes,
  which local moves cannot do; alternate it with MALA steps;
* `langevin` is what blackjax lacks: the *unadjusted* Langevin algorithm with
  the knobs of short-run EBM training (Du & Mordatch 2019; Nijkamp et al.
  2019): gradient clipping and a noise scale,

  .. math::

      x' = x + \epsilon\, \mathrm{clip}(\nabla \log \pi(x)) + \sigma_n \sqrt{2 \epsilon}\, \xi,
      \qquad \xi \sim N(0, I),

  which is exact Langevin (targets ``pi`` as ``epsilon -> 0``) only for
  ``clip = None, noise_scale = 1``.

Divergences: a proposal with a non-finite position or log-density is never
accepted; the chain stays where it was and ``info.is_divergent`` is True
(MALA/HMC reject it through the Metropolis test, Langevin by an explicit
check), so a NaN never reaches a training step silently. MALA flags a
transition whose acceptance probability is exactly 0 (blackjax turns a NaN
log-ratio into -inf; an energy error beyond float range also gives 0); HMC
uses blackjax's energy-error threshold.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Sampler",
    "SamplerInfo",
    "LangevinState",
    "langevin",
    "mala",
    "hmc",
    "nuts",
    "independent_mh",
    "kde_proposal",
    "sample_chains",
]


class SamplerInfo(NamedTuple):
    """What one transition reports (for every sampler here).

    Attributes:
      acceptance_rate: Metropolis acceptance probability (1 for unadjusted
        Langevin, 0 for a divergent proposal).
      is_accepted: whether the proposal was accepted.
      is_divergent: the proposal had a non-finite position/log-density (or HMC's
        energy error exceeded its divergence threshold); the state was kept.
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array


class Sampler(NamedTuple):
    """``init(position) -> state``; ``step(key, state) -> (state, SamplerInfo)``; ``dim``.

    ``state.position`` is the current position of shape ``(dim,)``.
    """

    init: Callable[[jax.Array], Any]
    step: Callable[[jax.Array, Any], tuple[Any, SamplerInfo]]
    dim: int | None


class LangevinState(NamedTuple):
    """State of `langevin`: position, its log-density and gradient."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


def _positive(value, name: str, allow_inf: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from err
    if not (v > 0) or (math.isinf(v) and not allow_inf) or math.isnan(v):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_logdensity(logdensity_fn: Callable, dim: int | None) -> None:
    if not callable(logdensity_fn):
        raise ValueError(f"logdensity_fn must be callable, got {type(logdensity_fn).__name__}")
    if dim is None:
        return
    try:
        out = jax.eval_shape(logdensity_fn, jax.ShapeDtypeStruct((dim,), jnp.float32))
    except Exception as err:
        raise ValueError(
            f"logdensity_fn failed on one position of shape ({dim},): {err}"
        ) from err
    if getattr(out, "shape", None) != ():
        raise ValueError(
            "logdensity_fn (the negative energy) must return a scalar for one position "
            f"of shape ({dim},), got shape {getattr(out, 'shape', type(out).__name__)}"
        )


def _check_position(position, dim: int | None) -> jax.Array:
    position = jnp.asarray(position)
    if not jnp.issubdtype(position.dtype, jnp.floating):
        position = position.astype(jnp.float32)
    if position.ndim != 1 or (dim is not None and position.shape[0] != dim):
        want = f"({dim},)" if dim is not None else "(dim,)"
        raise ValueError(
            f"a chain's position must have shape {want}, got shape {tuple(position.shape)}; "
            "use sample_chains / jax.vmap for many chains"
        )
    return position


def _wrap_init(init_fn: Callable, logdensity_fn: Callable, dim: int | None):
    def init(position):
        position = _check_position(position, dim)
        _check_logdensity(logdensity_fn, position.shape[0])
        return init_fn(position)

    return init


# ---------------------------------------------------------------------------
# Unadjusted Langevin (what blackjax lacks).
# ---------------------------------------------------------------------------


def langevin(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    step_size: float,
    *,
    noise_scale: float = 1.0,
    grad_clip: float | None = None,
    dim: int | None = None,
) -> Sampler:
    r"""Unadjusted (short-run) Langevin dynamics (module docstring).

    Args:
      logdensity_fn: ``log pi(x)`` for one position ``(dim,)`` -> scalar.
      step_size: ``epsilon > 0``.
      noise_scale: ``sigma_n >= 0`` multiplying the exact noise ``sqrt(2 eps)``
        (EBM papers often use a smaller noise than the exact one).
      grad_clip: clip each gradient coordinate to ``[-c, c]`` (``c > 0``) or
        None.
      dim: expected position dimension (checked by ``init``) or None.

    Raises:
      ValueError: non-positive step size, negative noise scale, non-positive
        clip, a non-scalar log-density.
    """
    step_size = _positive(step_size, "step_size")
    noise_scale = float(noise_scale)
    if not (noise_scale >= 0) or math.isinf(noise_scale):
        raise ValueError(f"noise_scale must be >= 0 and finite, got {noise_scale}")
    if grad_clip is not None:
        grad_clip = _positive(grad_clip, "grad_clip")
    _check_logdensity(logdensity_fn, dim)
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def init_fn(position):
        logdensity, grad = value_and_grad(position)
        return LangevinState(position, logdensity, grad)

    def step(key, state):
        grad = state.logdensity_grad
        if grad_clip is not None:
            grad = jnp.clip(grad, -grad_clip, grad_clip)
        noise = jax.random.normal(key, state.position.shape, state.position.dtype)
        position = state.position + step_size * grad + noise_scale * math.sqrt(2.0 * step_size) * noise
        logdensity, new_grad = value_and_grad(position)
        ok = (
            jnp.all(jnp.isfinite(position))
            & jnp.isfinite(logdensity)
            & jnp.all(jnp.isfinite(new_grad))
        )
        new = LangevinState(position, logdensity, new_grad)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, state)
        one = jnp.ones((), state.position.dtype)
        info = SamplerInfo(jnp.where(ok, one, 0.0 * one), ok, ~ok)
        return state, info

    return Sampler(_wrap_init(init_fn, logdensity_fn, dim), step, dim)


# ---------------------------------------------------------------------------
# blackjax kernels with validated arguments and a common info record.
# ---------------------------------------------------------------------------


def mala(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    step_size: float,
    *,
    dim: int | None = None,
) -> Sampler:
    r"""Metropolis-adjusted Langevin: ``blackjax.mala(logdensity_fn, step_size)``.

    Proposal ``x' = x + eps grad log pi(x) + sqrt(2 eps) xi`` followed by a
    Metropolis-Hastings test, so ``pi`` is invariant for any ``eps > 0``.
    """
    step_size = _positive(step_size, "step_size")
    _check_logdensity(logdensity_fn, dim)
    alg = blackjax.mala(logdensity_fn, step_size)

    def step(key, state):
        new_state, info = alg.step(key, state)
        p = info.acceptance_rate
        # blackjax maps a NaN acceptance log-ratio to -inf, so a non-finite proposal shows as p == 0
        # (as does an energy error beyond float range, ~87 nats in float32: a diverging step either way)
        divergent = ~(p > 0)
        return new_state, SamplerInfo(jnp.where(divergent, 0.0, p), info.is_accepted, divergent)

    return Sampler(_wrap_init(alg.init, logdensity_fn, dim), step, dim)


def _inverse_mass(inverse_mass_matrix, dim: int | None):
    if inverse_mass_matrix is None:
        if dim is None:
            raise ValueError("hmc/nuts need dim (or an inverse_mass_matrix) to build the metric")
        return jnp.ones((dim,), jnp.float32)
    m = jnp.asarray(inverse_mass_matrix, jnp.float32)
    if m.ndim not in (1, 2) or (dim is not None and m.shape[0] != dim) or (m.ndim == 2 and m.shape[0] != m.shape[1]):
        raise ValueError(
            f"inverse_mass_matrix must have shape (dim,) or (dim, dim) with dim={dim}, got {m.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(m))) or (m.ndim == 1 and not bool(jnp.all(m > 0))):
        raise ValueError("inverse_mass_matrix must be finite and positive")
    return m


def _hamiltonian_args(logdensity_fn, step_size, inverse_mass_matrix, dim):
    """Validated ``(step_size, inverse mass matrix, dim)`` of HMC/NUTS."""
    step_size = _positive(step_size, "step_size")
    imm = _inverse_mass(inverse_mass_matrix, dim)
    dim = dim if dim is not None else imm.shape[0]
    _check_logdensity(logdensity_fn, dim)
    return step_size, imm, dim


def hmc(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    step_size: float,
    num_integration_steps: int,
    *,
    inverse_mass_matrix=None,
    dim: int | None = None,
    divergence_threshold: float = 1000.0,
) -> Sampler:
    """Hamiltonian Monte Carlo: ``blackjax.hmc`` (velocity Verlet, identity metric by default)."""
    num_integration_steps = _positive_int(num_integration_steps, "num_integration_steps")
    step_size, imm, dim = _hamiltonian_args(logdensity_fn, step_size, inverse_mass_matrix, dim)
    alg = blackjax.hmc(
        logdensity_fn, step_size, imm, num_integration_steps,
        divergence_threshold=divergence_threshold,
    )

    def step(key, state):
        new_state, info = alg.step(key, state)
        p = info.acceptance_rate
        divergent = info.is_divergent | ~jnp.isfinite(p)
        return new_state, SamplerInfo(jnp.where(jnp.isfinite(p), p, 0.0), info.is_accepted, divergent)

    return Sampler(_wrap_init(alg.init, logdensity_fn, dim), step, dim)


def nuts(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    step_size: float,
    *,
    inverse_mass_matrix=None,
    dim: int | None = None,
    max_num_doublings: int = 10,
) -> Sampler:
    """No-U-Turn sampler: ``blackjax.nuts`` (no tuning of the trajectory length needed)."""
    max_num_doublings = _positive_int(max_num_doublings, "max_num_doublings")
    step_size, imm, dim = _hamiltonian_args(logdensity_fn, step_size, inverse_mass_matrix, dim)
    alg = blackjax.nuts(logdensity_fn, step_size, imm, max_num_doublings=max_num_doublings)

    def step(key, state):
        new_state, info = alg.step(key, state)
        p = info.acceptance_rate
        ok = jnp.isfinite(p)
        return new_state, SamplerInfo(jnp.where(ok, p, 0.0), ok & ~info.is_divergent,
                                      info.is_divergent | ~ok)

    return Sampler(_wrap_init(alg.init, logdensity_fn, dim), step, dim)


def kde_proposal(centers, bandwidth: float, *, wide_weight: float = 0.1, wide_scale: float = 3.0):
    r"""A proposal for `independent_mh`: ``q = (1 - w) KDE + w N(mean, (s * std)^2 I)``.

    ``KDE = (1/M) sum_m N(c_m, h^2 I)`` on the rows of ``centers`` ``(M, dim)``;
    the wide Gaussian (weight ``w``, std ``s`` times the centres' largest
    coordinate std) keeps ``q > 0`` wherever the target may put mass.

    Returns:
      ``(sample, log_prob)``: ``sample(key) -> (dim,)``, ``log_prob(x) -> ()``.
    """
    c = jnp.asarray(centers)
    if c.ndim != 2 or c.shape[0] < 1:
        raise ValueError(f"centers must have shape (M, dim), got {tuple(c.shape)}")
    h = _positive(bandwidth, "bandwidth")
    wide_weight = float(wide_weight)
    if not 0.0 <= wide_weight <= 1.0:
        raise ValueError(f"wide_weight must be in [0, 1], got {wide_weight}")
    wide_scale = _positive(wide_scale, "wide_scale")
    m, d = c.shape
    mean = jnp.mean(c, 0)
    sd = wide_scale * jnp.maximum(jnp.max(jnp.std(c, 0)), h)
    log_w = jnp.log(jnp.array([1.0 - wide_weight, wide_weight]) + 1e-30)

    def sample(key):
        k1, k2, k3 = jax.random.split(key, 3)
        wide = jax.random.bernoulli(k1, wide_weight)
        centre = c[jax.random.randint(k2, (), 0, m)]
        z = jax.random.normal(k3, (d,), c.dtype)
        return jnp.where(wide, mean + sd * z, centre + h * z)

    def log_prob(x):
        norm = -0.5 * d * math.log(2 * math.pi)
        kde = jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - c) ** 2, 1) / h**2) - math.log(m) - d * math.log(h)
        wide = -0.5 * jnp.sum((x - mean) ** 2) / sd**2 - d * jnp.log(sd)
        return norm + jax.scipy.special.logsumexp(jnp.stack([kde, wide]) + log_w)

    return sample, log_prob


def independent_mh(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    proposal_sample: Callable[[jax.Array], jax.Array],
    proposal_log_prob: Callable[[jax.Array], jax.Array],
    *,
    dim: int | None = None,
) -> Sampler:
    """Independent Metropolis-Hastings, ``blackjax.irmh``, with a normalised or
    unnormalised proposal log-density ``log q(y)`` (constants cancel)."""
    if not callable(proposal_sample) or not callable(proposal_log_prob):
        raise ValueError("proposal_sample and proposal_log_prob must be callables")
    _check_logdensity(logdensity_fn, dim)
    alg = blackjax.irmh(
        logdensity_fn, proposal_sample,
        # blackjax evaluates this inside T(a, b) = -log pi(b) - f(b, a) and accepts with
        # T(new, old) - T(old, new); detailed balance for an independent q needs f(b, a) = log q(a).
        proposal_logdensity_fn=lambda new, prev: proposal_log_prob(prev.position),
    )

    def step(key, state):
        new_state, info = alg.step(key, state)
        p = info.acceptance_rate
        divergent = ~jnp.isfinite(p)
        return new_state, SamplerInfo(jnp.where(divergent, 0.0, p), info.is_accepted, divergent)

    return Sampler(_wrap_init(alg.init, logdensity_fn, dim), step, dim)


# ---------------------------------------------------------------------------
# Many chains.
# ---------------------------------------------------------------------------


def sample_chains(
    sampler: Sampler,
    key: jax.Array,
    initial_positions,
    num_steps: int,
    *,
    burn_in: int = 0,
    thin: int = 1,
    return_states: bool = False,
):
    """Runs ``C`` independent chains: ``lax.scan`` over steps, ``vmap`` over chains.

    Args:
      sampler: a :class:`Sampler`.
      key: PRNG key; chain ``c`` uses ``split(key, C)[c]``.
      initial_positions: ``(C, dim)`` starting points.
      num_steps: kept draws per chain (``>= 1``), after ``burn_in`` steps and
        taking every ``thin``-th step.
      burn_in: steps discarded first (``>= 0``).
      thin: keep one draw every ``thin`` steps (``>= 1``).
      return_states: also return the final states (to continue the chains).

    Returns:
      ``(samples, info)``: samples ``(C, num_steps, dim)``; info a
      :class:`SamplerInfo` of arrays ``(C, burn_in + num_steps * thin)``. With
      ``return_states``, ``(samples, info, final_states)``.

    Raises:
      ValueError: positions not ``(C, dim)`` or of the sampler's dimension,
        negative/zero step counts.
    """
    num_steps = _positive_int(num_steps, "num_steps")
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise ValueError(f"burn_in must be a non-negative integer, got {burn_in!r}")
    thin = _positive_int(thin, "thin")
    x0 = jnp.asarray(initial_positions)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.float32)
    if x0.ndim != 2 or x0.shape[0] < 1 or (sampler.dim is not None and x0.shape[1] != sampler.dim):
        want = f"(C, {sampler.dim})" if sampler.dim is not None else "(C, dim)"
        raise ValueError(
            f"initial_positions must have shape {want} (one row per chain), got shape {tuple(x0.shape)}"
        )
    if not bool(jnp.all(jnp.isfinite(x0))):
        raise ValueError("initial_positions contain NaN or inf")
    sampler.init(x0[0])  # shape/scalar checks once, outside the trace
    states, infos, samples = _run(sampler, key, x0, int(burn_in), num_steps, thin)
    if return_states:
        return samples, infos, states
    return samples, infos


def _run(sampler, key, x0, burn_in, num_steps, thin):
    return _compiled_runner(sampler, burn_in, num_steps, thin)(key, x0)


@functools.lru_cache(maxsize=64)
def _compiled_runner(sampler, burn_in, num_steps, thin):
    """One jitted program per (sampler, step counts): repeated calls do not recompile."""

    def one_chain(k, position):
        state = sampler.init(position)

        def body(state, k_t):
            state, info = sampler.step(k_t, state)
            return state, (info, state.position)

        keys = jax.random.split(k, burn_in + num_steps * thin)
        state, (info, positions) = jax.lax.scan(body, state, keys)
        kept = positions[burn_in:][thin - 1 :: thin]
        return state, info, kept

    @jax.jit
    def run(key, x0):
        return jax.vmap(one_chain)(jax.random.split(key, x0.shape[0]), x0)

    return run
