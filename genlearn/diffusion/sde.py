"""Forward SDEs of score-based diffusion models (Song et al. 2021, "Score-based generative modeling
through stochastic differential equations").

Every SDE here is linear, dx = f(t) x dt + g(t) dw on t in [0, 1], so its
marginal given the data is Gaussian,

    x_t | x_0 ~ N(m(t) x_0, s(t)^2 I),   d log m / dt = f(t),   d s^2 / dt = 2 f(t) s^2 + g(t)^2,

and the signal-to-noise ratio SNR(t) = m^2 / s^2 falls with t:
``-d log SNR / dt = g^2 / s^2`` (the likelihood weight of the DSM loss, and
the integrand of the continuous-time ELBO). An :class:`SDE` is a NamedTuple of
pure functions of ``t`` (scalars or arrays, broadcast elementwise):

* :func:`vp` — variance preserving, the continuous limit of DDPM:
  f = -beta(t)/2, g^2 = beta(t), m = exp(-B(t)/2), s^2 = 1 - exp(-B(t)),
  B(t) = int_0^t beta. ``schedule="linear"``: beta(t) = beta_min + t
  (beta_max - beta_min) (Ho et al. 2020 with N beta_i = beta(t_i));
  ``schedule="cosine"``: Nichol & Dhariwal's cosine schedule written as a
  truncated log-SNR, log SNR(t) = -2 log tan(a t + b), between ``logsnr_max``
  at t = 0 and ``logsnr_min`` at t = 1 (m^2 = sigmoid(log SNR)).
* :func:`subvp` — sub-VP: same drift and mean as VP (linear beta),
  s^2 = (1 - exp(-B))^2, g^2 = beta (1 - exp(-2B)).
* :func:`ve` — variance exploding (SMLD): f = 0, m = 1,
  s(t) = sigma_min (sigma_max / sigma_min)^t, g^2 = d s^2 / dt.

Discretisation (:func:`discretize`): on N steps t_i (:func:`time_grid`: evenly
spaced, t_i = t_min + i (1 - t_min) / N, or Karras et al.'s "edm" spacing) the
forward chain x_i = a_i x_{i-1} + b_i z has a_i = m(t_i)/m(t_{i-1}),
b_i^2 = s_i^2 - a_i^2 s_{i-1}^2 (exact for a linear SDE), and for the VP
family the DDPM betas are beta_i = 1 - a_i^2, alpha_bar_i = m(t_i)^2.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SDE", "Discretization", "vp", "subvp", "ve", "vp_from_ddpm", "make_sde", "SDES", "check_time",
           "perturb", "time_grid", "SPACINGS", "discretize", "ddpm_betas"]

Array = jax.Array


class SDE(NamedTuple):
    """A linear forward SDE dx = f(t) x dt + g(t) dw on [0, 1] (module docstring).

    Attributes:
      name: "vp", "vp-cosine", "subvp" or "ve".
      mean_coeff: ``m(t)``, the marginal mean coefficient: E[x_t | x_0] = m(t) x_0.
      std: ``s(t)``, the marginal standard deviation of x_t given x_0.
      drift_coeff: ``f(t)``, the drift is f(x, t) = f(t) x (so div f = d f(t)).
      diffusion: ``g(t)``.
      prior_std: the std of the Gaussian prior p_1 = N(0, prior_std^2 I)
        (1 for VP / sub-VP, sigma_max for VE).
      t_min: the smallest time used in training, sampling and likelihoods
        (the SDE is truncated at t_min > 0 where g^2 / s^2 would diverge).
      params: the schedule's numbers (JSON), for records.
    """

    name: str
    mean_coeff: Callable[[Array], Array]
    std: Callable[[Array], Array]
    drift_coeff: Callable[[Array], Array]
    diffusion: Callable[[Array], Array]
    prior_std: float
    t_min: float
    params: dict

    def drift(self, x: Array, t) -> Array:
        """f(x, t) = f(t) x; ``t`` a scalar or one value per row of ``x``."""
        return _rows(self.drift_coeff(jnp.asarray(t, x.dtype)), x) * x

    def log_snr(self, t) -> Array:
        """log SNR(t) = 2 log m(t) - 2 log s(t)."""
        return 2.0 * (jnp.log(self.mean_coeff(t)) - jnp.log(self.std(t)))

    def prior_sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Draws from the prior N(0, prior_std^2 I)."""
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_log_prob(self, z: Array) -> Array:
        """log N(z; 0, prior_std^2 I), summed over the last axis."""
        d = z.shape[-1]
        return (-0.5 * jnp.sum(z**2, -1) / self.prior_std**2 - d * math.log(self.prior_std)
                - 0.5 * d * math.log(2 * math.pi))


def _rows(coef: Array, x: Array) -> Array:
    """A scalar, or one coefficient per row of x reshaped to broadcast against x."""
    coef = jnp.asarray(coef)
    return coef if coef.ndim == 0 else coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))


def check_time(t, what: str = "t") -> None:
    """ValueError if a concrete ``t`` lies outside [0, 1]; traced values (under jit) are not checked."""
    try:
        arr = np.asarray(t, dtype=np.float64)
    except Exception:  # a tracer: the check happens where the value is concrete (the public entry points)
        return
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
        bad = arr[~(np.isfinite(arr) & (arr >= 0) & (arr <= 1))].ravel()[0]
        raise ValueError(f"{what} must lie in [0, 1] (the SDE's time interval), got {float(bad)!r}")


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def _t_min(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value < 1.0:
        raise ValueError(f"t_min must lie in [0, 1) (t outside [0, 1] is not a time of the SDE), got {value!r}")
    return float(value)


def vp(beta_min: float = 0.1, beta_max: float = 20.0, *, schedule: str = "linear", logsnr_min: float = -10.0,
       logsnr_max: float = 13.8, t_min: float = 1e-5) -> SDE:
    """The variance-preserving SDE (module docstring).

    Args:
      beta_min, beta_max: the linear schedule's rates beta(0), beta(1), with
        0 < beta_min < beta_max (DDPM's beta_1 = 1e-4, beta_T = 0.02 at
        T = 1000 are beta_min = 0.1, beta_max = 20; see :func:`vp_from_ddpm`).
      schedule: "linear" or "cosine".
      logsnr_min, logsnr_max: the cosine schedule's log SNR at t = 1 and t = 0
        (logsnr_min < logsnr_max); s(0) = sigmoid(-logsnr_max)^(1/2) ~ 1e-3 by default.
      t_min: truncation time in [0, 1).
    """
    t_min = _t_min(t_min)
    if schedule == "linear":
        b0, b1 = _positive(beta_min, "vp: beta_min"), _positive(beta_max, "vp: beta_max")
        if b1 <= b0:
            raise ValueError(f"vp: beta_max must exceed beta_min, got beta_min={b0}, beta_max={b1}")

        def beta(t):
            return b0 + t * (b1 - b0)

        def big_b(t):  # B(t) = int_0^t beta
            return b0 * t + 0.5 * t**2 * (b1 - b0)

        def mean_coeff(t):
            return jnp.exp(-0.5 * big_b(jnp.asarray(t)))

        def std(t):
            return jnp.sqrt(-jnp.expm1(-big_b(jnp.asarray(t))))

        def drift_coeff(t):
            return -0.5 * beta(jnp.asarray(t))

        def diffusion(t):
            return jnp.sqrt(beta(jnp.asarray(t)))

        return SDE("vp", mean_coeff, std, drift_coeff, diffusion, 1.0, t_min,
                   {"beta_min": b0, "beta_max": b1, "schedule": "linear", "t_min": t_min})
    if schedule != "cosine":
        raise ValueError(f"vp: schedule must be 'linear' or 'cosine', got {schedule!r}")
    lo, hi = float(logsnr_min), float(logsnr_max)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"vp(schedule='cosine'): need finite logsnr_min < logsnr_max, got {lo}, {hi}")
    # log SNR(t) = -2 log tan(a t + b): b = atan(exp(-hi / 2)), a = atan(exp(-lo / 2)) - b
    b = math.atan(math.exp(-hi / 2))
    a = math.atan(math.exp(-lo / 2)) - b

    def log_snr(t):
        return -2.0 * jnp.log(jnp.tan(a * jnp.asarray(t) + b))

    def mean_coeff(t):
        return jnp.sqrt(jax.nn.sigmoid(log_snr(t)))

    def std(t):
        return jnp.sqrt(jax.nn.sigmoid(-log_snr(t)))

    def beta(t):  # -d log m^2 / dt = -(1 - m^2) dlogSNR/dt, dlogSNR/dt = -4a / sin(2(a t + b))
        t = jnp.asarray(t)
        return jax.nn.sigmoid(-log_snr(t)) * 4.0 * a / jnp.sin(2.0 * (a * t + b))

    return SDE("vp-cosine", mean_coeff, std, lambda t: -0.5 * beta(t), lambda t: jnp.sqrt(beta(t)), 1.0, t_min,
               {"schedule": "cosine", "logsnr_min": lo, "logsnr_max": hi, "t_min": t_min})


def vp_from_ddpm(beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000, **kwargs) -> SDE:
    """The linear VP SDE whose N-step discretisation has DDPM's betas beta_1 .. beta_N (Ho et al. 2020).

    DDPM's betas are probabilities of a Markov chain and must lie in (0, 1)
    (ValueError otherwise, naming the value); beta(t) = N beta at the ends.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"vp_from_ddpm: num_steps must be an integer >= 1, got {num_steps!r}")
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 < value < 1.0:
            raise ValueError(f"vp_from_ddpm: {name} must lie in (0, 1) (a DDPM beta is a noise variance "
                             f"per step), got {value!r}")
    return vp(beta_start * num_steps, beta_end * num_steps, **kwargs)


def subvp(beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-5) -> SDE:
    """The sub-VP SDE (Song et al. 2021, eq. 29): VP's drift with g^2 = beta (1 - exp(-2B)), s = 1 - exp(-B)."""
    base = vp(beta_min, beta_max, t_min=t_min)
    b0, b1 = base.params["beta_min"], base.params["beta_max"]

    def big_b(t):
        return b0 * t + 0.5 * t**2 * (b1 - b0)

    def std(t):
        return -jnp.expm1(-big_b(jnp.asarray(t)))

    def diffusion(t):
        t = jnp.asarray(t)
        return jnp.sqrt((b0 + t * (b1 - b0)) * -jnp.expm1(-2.0 * big_b(t)))

    return base._replace(name="subvp", std=std, diffusion=diffusion,
                         params={"beta_min": b0, "beta_max": b1, "t_min": base.t_min})


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0, *, t_min: float = 1e-5) -> SDE:
    """The variance-exploding SDE: s(t) = sigma_min (sigma_max / sigma_min)^t, g = s sqrt(2 log(sigma_max/sigma_min)).

    ``sigma_max`` should be about the largest distance between training points
    (Song & Ermon 2020's rule), so that the prior N(0, sigma_max^2 I) covers the data.
    """
    s0, s1 = _positive(sigma_min, "ve: sigma_min"), _positive(sigma_max, "ve: sigma_max")
    if s0 >= s1:
        raise ValueError(f"ve: sigma_min must be smaller than sigma_max, got sigma_min={s0}, sigma_max={s1}")
    log_ratio = math.log(s1 / s0)

    def std(t):
        return s0 * jnp.exp(jnp.asarray(t) * log_ratio)

    return SDE("ve", lambda t: jnp.ones_like(jnp.asarray(t, jnp.result_type(float))), std,
               lambda t: jnp.zeros_like(jnp.asarray(t, jnp.result_type(float))),
               lambda t: std(t) * math.sqrt(2.0 * log_ratio), s1, _t_min(t_min),
               {"sigma_min": s0, "sigma_max": s1, "t_min": float(t_min)})


SDES = ("vp", "vp-cosine", "subvp", "ve")


def make_sde(name: str, **kwargs) -> SDE:
    """An SDE by name (``SDES``), with its factory's keyword arguments (None values dropped)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name == "vp":
        return vp(**kwargs)
    if name == "vp-cosine":
        return vp(schedule="cosine", **kwargs)
    if name == "subvp":
        return subvp(**kwargs)
    if name == "ve":
        return ve(**kwargs)
    raise ValueError(f"unknown SDE {name!r}; choose one of {SDES}")


def perturb(sde: SDE, x0: Array, t: Array, eps: Array) -> Array:
    """x_t = m(t) x_0 + s(t) eps, a draw of the marginal (``t`` scalar or one per row)."""
    return _rows(sde.mean_coeff(t), x0) * x0 + _rows(sde.std(t), x0) * eps


SPACINGS = ("uniform", "edm")


def time_grid(sde: SDE, num_steps: int, spacing: str = "uniform", rho: float = 7.0) -> np.ndarray:
    """The N + 1 times t_min = t_0 < ... < t_N = 1 of an N-step sampler (numpy float64).

    ``spacing="uniform"``: evenly spaced in t. ``"edm"``: Karras et al. (2022,
    eq. 5) in the noise-to-signal ratio r(t) = s(t) / m(t): r_i^(1/rho) evenly
    spaced between r(t_min) and r(1), mapped back to t by inverting r on a
    fine grid. Few steps then go where little happens (high noise) and many
    where the data's fine structure appears (low noise), which is what makes
    10-50 step samplers work (Karras et al.: rho = 7).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"the number of steps (NFE) must be an integer >= 1, got {num_steps!r}")
    if spacing == "uniform":
        return np.linspace(sde.t_min, 1.0, int(num_steps) + 1)
    if spacing != "edm":
        raise ValueError(f"unknown time spacing {spacing!r}; choose one of {SPACINGS}")
    if not (isinstance(rho, (int, float, np.floating)) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    fine = np.unique(np.concatenate([np.geomspace(max(sde.t_min, 1e-12), 1.0, 4097),
                                     np.linspace(sde.t_min, 1.0, 4097)]))
    with jax.ensure_compile_time_eval():
        tf = jnp.asarray(fine, jnp.float32)
        ratio = np.asarray(sde.std(tf), np.float64) / np.asarray(sde.mean_coeff(tf), np.float64)
    ratio = np.maximum.accumulate(ratio)  # r rises with t; guard float32 ties
    u = np.linspace(0.0, 1.0, int(num_steps) + 1)
    lo, hi = ratio[0] ** (1.0 / rho), ratio[-1] ** (1.0 / rho)
    t = np.interp((lo + u * (hi - lo)) ** rho, ratio, fine)
    t[0], t[-1] = sde.t_min, 1.0
    return np.maximum.accumulate(t)


class Discretization(NamedTuple):
    """The N-step Markov chain x_i = a_i x_{i-1} + b_i z of a linear SDE (arrays of length N + 1, index 0 unused).

    Attributes:
      t: times t_0 .. t_N.
      mean_coeff, std: m(t_i), s(t_i).
      a, b: one-step mean coefficient and noise std (a_0 = 1, b_0 = 0).
      betas: DDPM's beta_i = 1 - a_i^2 (VP family; in (0, 1)).
    """

    t: np.ndarray
    mean_coeff: np.ndarray
    std: np.ndarray
    a: np.ndarray
    b: np.ndarray
    betas: np.ndarray


def discretize(sde: SDE, num_steps: int, spacing: str = "uniform") -> Discretization:
    """The exact one-step transitions between the times of :func:`time_grid` (module docstring)."""
    t = time_grid(sde, num_steps, spacing)
    with jax.ensure_compile_time_eval():  # constants, also when a sampler is built inside a jitted function
        m = np.asarray(sde.mean_coeff(jnp.asarray(t, jnp.float32)), np.float64)
        s = np.asarray(sde.std(jnp.asarray(t, jnp.float32)), np.float64)
    a = np.ones_like(t)
    a[1:] = m[1:] / m[:-1]
    b2 = np.zeros_like(t)
    b2[1:] = np.maximum(s[1:] ** 2 - a[1:] ** 2 * s[:-1] ** 2, 0.0)
    betas = 1.0 - a**2
    return Discretization(t, m, s, a, np.sqrt(b2), betas)


def ddpm_betas(sde: SDE, num_steps: int) -> np.ndarray:
    """DDPM's beta_1 .. beta_N of a VP-family SDE on N steps; ValueError if one leaves (0, 1).

    beta_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}) with alpha_bar = m^2: a
    too coarse grid on a steep schedule (the cosine schedule near t = 1) drives
    beta_i to 1, where the chain forgets x in one step and DDPM's ancestral
    update divides by sqrt(1 - beta_i) ~ 0.
    """
    if sde.name not in ("vp", "vp-cosine", "subvp"):
        raise ValueError(f"DDPM betas need a VP-family SDE (vp, vp-cosine, subvp), got {sde.name!r}")
    betas = discretize(sde, num_steps).betas[1:]
    bad = betas[~((betas > 0) & (betas < 1))]
    if bad.size:
        raise ValueError(f"schedule gives beta = {bad[0]:.6g} outside (0, 1) on {num_steps} steps; "
                         "use more steps or a gentler schedule")
    return betas
