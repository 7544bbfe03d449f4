"""Samplers of diffusion models: pure ``init/step`` kernels driven by ``lax.scan``, and the probability-flow ODE.

Every kernel is built from an SDE, ``eps_fn(x, t) -> eps_hat`` (a batch at one
time, e.g. `genlearn.diffusion.model.eps_fn` with classifier-free guidance)
and a number of steps N on the grid t_min = t_0 < ... < t_N = 1
(`genlearn.diffusion.sde.time_grid`), and returns a :class:`DiffusionSampler`
``(init(key, n) -> state, step(key, state) -> (state, info))`` in the
blackjax style; :func:`run_sampler` scans it. With m_i, s_i the marginal
coefficients at t_i, a_i = m_i / m_{i-1}, b_i^2 = s_i^2 - a_i^2 s_{i-1}^2
(`genlearn.diffusion.sde.discretize`), x0_hat = (x - s_i eps_hat) / m_i and
score = -eps_hat / s_i, a step from t_i to t_{i-1} is

* :func:`ancestral` (DDPM, Ho et al. 2020, Algorithm 2, for any linear SDE):
  the Gaussian posterior q(x_{i-1} | x_i, x0_hat), mean
  (a_i s_{i-1}^2 / s_i^2) x_i + (m_{i-1} b_i^2 / s_i^2) x0_hat, variance
  b_i^2 s_{i-1}^2 / s_i^2 (``variance="posterior"``, beta-tilde) or b_i^2
  (``"beta"``, DDPM's sigma_t^2 = beta_t); for VP this is
  x_{i-1} = (x_i - beta_i / sqrt(1 - alpha_bar_i) eps_hat) / sqrt(1 - beta_i) + sigma_i z;
* :func:`ddim` (Song, Meng & Ermon 2021): x_{i-1} = m_{i-1} x0_hat +
  sqrt(s_{i-1}^2 - sigma^2) eps_hat + sigma z with sigma = eta times the
  posterior std: eta = 0 is deterministic, eta = 1 is :func:`ancestral`
  with the posterior variance;
* :func:`euler_maruyama` on the reverse SDE dx = [f(x, t) - g^2 score] dt + g dw
  (dt = t_{i-1} - t_i < 0);
* :func:`predictor_corrector` (Song et al. 2021, Algorithms 4-5): ``corrector_steps``
  Langevin steps x <- x + e score + sqrt(2 e) z at t_i with the
  signal-to-noise step size e = 2 alpha (snr ||z|| / ||score||)^2 (alpha = a_i^2,
  norms averaged over the batch), then one Euler-Maruyama predictor step.

``spacing`` picks the grid: evenly spaced in t (``"uniform"``) or Karras et al.'s
``"edm"`` spacing, dense at low noise. No noise is added on the last step.
``nfe`` (network evaluations) is N for the first three and N (1 + corrector_steps)
for predictor-corrector.
:func:`probability_flow_sample` integrates the probability-flow ODE
dx/dt = f(x, t) - g^2 score / 2 from t = 1 to t_min with diffrax, adaptive
(``rtol``, ``atol``) or with a fixed number of Heun steps.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.diffusion.model import Diffusion, eps_fn as _eps_fn
from genlearn.diffusion.sde import SDE, discretize, time_grid

__all__ = ["SamplerState", "SamplerInfo", "DiffusionSampler", "SAMPLERS", "ancestral", "ddim", "euler_maruyama",
           "predictor_corrector", "run_sampler", "probability_flow_sample", "sample", "steps_for_nfe"]

Array = jax.Array
SAMPLERS = ("ancestral", "ddim", "euler_maruyama", "predictor_corrector", "ode")


class SamplerState(NamedTuple):
    """The sampler's position ``x`` (n, d) at grid index ``i`` (time t_i; from N down to 0)."""

    x: Array
    i: Array


class SamplerInfo(NamedTuple):
    """Per-step record: the time reached and the denoised estimate x0_hat at the step's start."""

    t: Array
    x0_hat: Array


class DiffusionSampler(NamedTuple):
    """``init(key, n) -> SamplerState`` (x_N from the prior) and ``step(key, state) -> (state, info)``."""

    init: Callable[[Array, int], SamplerState]
    step: Callable[[Array, SamplerState], tuple[SamplerState, SamplerInfo]]
    num_steps: int
    nfe: int


def _check_steps(num_steps, what="num_steps") -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"{what} must be an integer >= 1 (at least one network evaluation), got {num_steps!r}")
    return int(num_steps)


def _tables(sde: SDE, num_steps: int, dtype, spacing: str = "uniform"):
    disc = discretize(sde, num_steps, spacing)
    return {k: jnp.asarray(getattr(disc, k), dtype) for k in ("t", "mean_coeff", "std", "a", "b")}


def _init(sde: SDE, dim: int, num_steps: int, dtype):
    def init(key, n):
        return SamplerState(sde.prior_sample(key, (int(n), dim), dtype), jnp.asarray(num_steps, jnp.int32))

    return init


def _posterior(tab, i):
    """Coefficients of q(x_{i-1} | x_i, x_0): mean c_x x_i + c_0 x_0, variance var."""
    m_prev, s_prev, s_i = tab["mean_coeff"][i - 1], tab["std"][i - 1], tab["std"][i]
    a, b = tab["a"][i], tab["b"][i]
    return a * s_prev**2 / s_i**2, m_prev * b**2 / s_i**2, b**2 * s_prev**2 / s_i**2


def _x0(tab, x, eps, i):
    """The denoised estimate x0 = (x - sigma_i eps) / m_i at grid point i."""
    return (x - tab["std"][i] * eps) / tab["mean_coeff"][i]


def ancestral(sde: SDE, eps_fn: Callable, dim: int, num_steps: int, *, variance: str = "posterior",
              spacing: str = "uniform", dtype=jnp.float32) -> DiffusionSampler:
    """Ancestral (DDPM) sampling on N steps (module docstring)."""
    num_steps = _check_steps(num_steps)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    tab = _tables(sde, num_steps, dtype, spacing)

    def step(key, state):
        x, i = state
        eps = eps_fn(x, tab["t"][i])
        x0 = _x0(tab, x, eps, i)
        c_x, c_0, var = _posterior(tab, i)
        var = var if variance == "posterior" else tab["b"][i] ** 2
        noise = jnp.where(i > 1, jnp.sqrt(var), 0.0) * jax.random.normal(key, x.shape, x.dtype)
        return SamplerState(c_x * x + c_0 * x0 + noise, i - 1), SamplerInfo(tab["t"][i - 1], x0)

    return DiffusionSampler(_init(sde, dim, num_steps, dtype), step, num_steps, num_steps)


def ddim(sde: SDE, eps_fn: Callable, dim: int, num_steps: int, *, eta: float = 0.0, spacing: str = "uniform",
         dtype=jnp.float32) -> DiffusionSampler:
    """DDIM with stochasticity ``eta`` >= 0 on N steps (module docstring)."""
    num_steps = _check_steps(num_steps)
    if not float(eta) >= 0.0:
        raise ValueError(f"ddim: eta must be >= 0, got {eta!r}")
    tab = _tables(sde, num_steps, dtype, spacing)

    def step(key, state):
        x, i = state
        eps = eps_fn(x, tab["t"][i])
        x0 = _x0(tab, x, eps, i)
        sigma = eta * jnp.sqrt(_posterior(tab, i)[2])
        s_prev = tab["std"][i - 1]
        direction = jnp.sqrt(jnp.maximum(s_prev**2 - sigma**2, 0.0)) * eps
        noise = jnp.where(i > 1, sigma, 0.0) * jax.random.normal(key, x.shape, x.dtype)
        return SamplerState(tab["mean_coeff"][i - 1] * x0 + direction + noise, i - 1), SamplerInfo(tab["t"][i - 1], x0)

    return DiffusionSampler(_init(sde, dim, num_steps, dtype), step, num_steps, num_steps)


def _em_step(sde, tab, eps_fn, key, x, i):
    t, t_prev = tab["t"][i], tab["t"][i - 1]
    eps = eps_fn(x, t)
    score = -eps / tab["std"][i]
    g = sde.diffusion(t)
    dt = t_prev - t
    mean = x + (sde.drift_coeff(t) * x - g**2 * score) * dt
    noise = jnp.where(i > 1, g * jnp.sqrt(-dt), 0.0) * jax.random.normal(key, x.shape, x.dtype)
    return mean + noise, _x0(tab, x, eps, i)


def euler_maruyama(sde: SDE, eps_fn: Callable, dim: int, num_steps: int, *, spacing: str = "uniform",
                   dtype=jnp.float32) -> DiffusionSampler:
    """Euler-Maruyama on the reverse-time SDE on N steps (module docstring)."""
    num_steps = _check_steps(num_steps)
    tab = _tables(sde, num_steps, dtype, spacing)

    def step(key, state):
        x, i = state
        x_new, x0 = _em_step(sde, tab, eps_fn, key, x, i)
        return SamplerState(x_new, i - 1), SamplerInfo(tab["t"][i - 1], x0)

    return DiffusionSampler(_init(sde, dim, num_steps, dtype), step, num_steps, num_steps)


def predictor_corrector(sde: SDE, eps_fn: Callable, dim: int, num_steps: int, *, snr: float = 0.16,
                        corrector_steps: int = 1, spacing: str = "uniform", dtype=jnp.float32) -> DiffusionSampler:
    """Langevin corrector + Euler-Maruyama predictor on N steps (module docstring)."""
    num_steps = _check_steps(num_steps)
    corrector_steps = int(corrector_steps)
    if corrector_steps < 0:
        raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}")
    if not float(snr) > 0:
        raise ValueError(f"snr must be > 0, got {snr!r}")
    tab = _tables(sde, num_steps, dtype, spacing)

    def step(key, state):
        x, i = state
        t = tab["t"][i]
        alpha = tab["a"][i] ** 2

        def correct(x, k):
            score = -eps_fn(x, t) / tab["std"][i]
            z = jax.random.normal(k, x.shape, x.dtype)
            # batch-mean norms, as Song et al.'s code: a per-example ratio explodes near a mode (score ~ 0)
            ratio = jnp.mean(jnp.linalg.norm(z, axis=-1)) / jnp.maximum(jnp.mean(jnp.linalg.norm(score, axis=-1)),
                                                                        1e-12)
            e = 2.0 * alpha * (snr * ratio) ** 2
            return x + e * score + jnp.sqrt(2.0 * e) * z, None

        k_pred, k_corr = jax.random.split(key)
        if corrector_steps:
            x, _ = jax.lax.scan(correct, x, jax.random.split(k_corr, corrector_steps))
        x_new, x0 = _em_step(sde, tab, eps_fn, k_pred, x, i)
        return SamplerState(x_new, i - 1), SamplerInfo(tab["t"][i - 1], x0)

    return DiffusionSampler(_init(sde, dim, num_steps, dtype), step, num_steps, num_steps * (1 + corrector_steps))


def run_sampler(sampler: DiffusionSampler, key: Array, n: int, *, return_trajectory: bool = False):
    """Runs a kernel from the prior to t_min in one ``lax.scan``: ``(n, d)`` samples.

    With ``return_trajectory``, also the states x_{t_N}, ..., x_{t_0}
    (``(N + 1, n, d)``, the prior draw first).
    """
    k_init, k_steps = jax.random.split(key)
    state = sampler.init(k_init, n)

    def body(state, k):
        new, info = sampler.step(k, state)
        return new, new.x if return_trajectory else None

    final, xs = jax.lax.scan(body, state, jax.random.split(k_steps, sampler.num_steps))
    if return_trajectory:
        return final.x, jnp.concatenate([state.x[None], xs])
    return final.x


def probability_flow_sample(sde: SDE, eps_fn: Callable, dim: int, key: Array, n: int, *, rtol: float = 1e-5,
                            atol: float = 1e-5, solver: str = "dopri5", nfe: int | None = None,
                            max_steps: int = 4096, return_trajectory: bool = False, num_saves: int = 11,
                            label: Array | None = None, spacing: str = "uniform", dtype=jnp.float32):
    """Samples by integrating the probability-flow ODE from x_1 ~ prior to t_min (diffrax).

    ``nfe`` None: adaptive steps (``solver``, ``rtol``, ``atol``); an integer:
    max(1, nfe // 2) Heun steps (2 evaluations each) between the times of
    `genlearn.diffusion.sde.time_grid` with ``spacing``. Returns ``(n, d)``
    samples, or with ``return_trajectory`` ``(samples, xs, stats)`` with the
    states at ``num_saves`` evenly spaced times from 1 to t_min and diffrax's
    stats (``num_steps``: accepted + rejected steps). ``label``: ``(n,)``
    class labels handed to ``eps_fn(x, t, label)`` per example (the ODE is
    solved one example at a time inside a vmap).
    """
    from genlearn.flows.cnf import solve_with_log_det

    if nfe is not None:
        nfe = _check_steps(nfe, "nfe")
    x1 = sde.prior_sample(key, (int(n), dim), dtype)

    def field(_, x, t, *c):  # one example (with its label as context)
        eps = eps_fn(x[None], t)[0] if not c else eps_fn(x[None], t, c[0].astype(jnp.int32))[0]
        return sde.drift_coeff(t) * x + 0.5 * sde.diffusion(t) ** 2 * eps / sde.std(t)

    context = None if label is None else jnp.broadcast_to(jnp.asarray(label, jnp.int32), (int(n),))[:, None]
    kwargs = dict(trace=None, context=context, solver="heun" if nfe is not None else solver, rtol=rtol, atol=atol,
                  max_steps=max_steps,
                  step_ts=None if nfe is None else time_grid(sde, max(1, nfe // 2), spacing)[::-1].copy())
    if kwargs["solver"] == "heun":
        import diffrax

        kwargs["solver"] = diffrax.Heun()
    if not return_trajectory:
        return solve_with_log_det(field, None, x1, 1.0, sde.t_min, **kwargs)[0]
    ts = jnp.linspace(1.0, sde.t_min, num_saves)
    x, _, xs, stats = solve_with_log_det(field, None, x1, 1.0, sde.t_min, save_ts=ts, **kwargs)
    return x, xs, stats


def steps_for_nfe(method: str, nfe: int, corrector_steps: int = 1) -> int:
    """The number of grid steps N of a sampler that spends ``nfe`` network evaluations (>= 1)."""
    nfe = _check_steps(nfe, "nfe")
    if method == "predictor_corrector":
        per = 1 + int(corrector_steps)
        if nfe < per:
            raise ValueError(f"predictor_corrector with {corrector_steps} corrector step(s) needs nfe >= {per}, "
                             f"got {nfe}")
        return nfe // per
    return nfe


def sample(model: Diffusion, params, key: Array, n: int, *, method: str = "ancestral", nfe: int = 500,
           label=None, guidance: float | None = None, return_trajectory: bool = False, **options):
    """``n`` samples of a diffusion model with one of :data:`SAMPLERS` spending about ``nfe`` evaluations.

    ``label`` (``(n,)`` ints or one int) and ``guidance`` (classifier-free
    scale w) as in `genlearn.diffusion.model.eps_fn`; ``options`` go to the
    sampler (``eta``, ``variance``, ``snr``, ``corrector_steps``, ``rtol``, ``atol``).
    For ``method="ode"``, ``nfe=None`` integrates adaptively.

    Raises:
      ValueError: nfe < 1, an unknown method, a guidance scale for an unconditional model.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}")
    if label is not None:
        label = jnp.broadcast_to(jnp.asarray(label, jnp.int32), (int(n),))
    fn = _eps_fn(model, params, label, guidance)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype if jax.tree_util.tree_leaves(params) else jnp.float32
    if method == "ode":
        return probability_flow_sample(model.sde, fn, model.dim, key, n, nfe=nfe, return_trajectory=return_trajectory,
                                       label=label, dtype=dtype, **options)
    num_steps = steps_for_nfe(method, nfe, options.get("corrector_steps", 1))
    factory = {"ancestral": ancestral, "ddim": ddim, "euler_maruyama": euler_maruyama,
               "predictor_corrector": predictor_corrector}[method]
    kernel = factory(model.sde, fn, model.dim, num_steps, dtype=dtype, **options)
    return run_sampler(kernel, key, n, return_trajectory=return_trajectory)
