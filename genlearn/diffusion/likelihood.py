"""Likelihoods of diffusion models: exact through the probability-flow ODE, and the variational bound.

**Probability-flow ODE** (Song et al. 2021, Section 4.3). The ODE

    dx/dt = F(x, t) = f(t) x - g(t)^2 / 2 * score(x, t) = f(t) x + g(t)^2 eps_hat(x, t) / (2 s(t))

has the same marginals p_t as the forward SDE when the score is exact, and
for any score model it is a continuous normalizing flow from t_min to 1. By
the instantaneous change of variables, with z = x(1) and
l = int_{t_min}^1 tr(dF/dx) dt = log|det dz/dx|,

    log p(x) = log p_1(z) + l,

an exact log-density of the model's ODE (up to the solver tolerance) with
the trace exact (d Jacobian-vector products) or Hutchinson's estimate (one
vector-Jacobian product; unbiased for log p at fixed solver steps). The
augmented ODE (x, l) is solved by the same function as the CNF
(`genlearn.flows.cnf.solve_with_log_det`); nothing is copied.

**Variational bound** (the continuous-time ELBO of the model read as a deep
latent-variable model, Kingma et al. 2021, "Variational diffusion models";
Song, Durkan, Murray & Ermon 2021): with latents z_t = m x + s eps,

    -log p(x) <= E[-log p(x | z_{t_min})] + KL(q(z_1 | x) || p_1)
                 + 1/2 int_{t_min}^1 (g^2 / s^2) E || eps_hat(z_t, t) - eps ||^2 dt,

with the decoder p(x | z_{t_min}) = N(x; z / m, (s / m)^2 I) (its expected
negative log-likelihood is d/2 log(2 pi e s^2 / m^2) in closed form), the
prior KL in closed form, and the last integral (the likelihood-weighted DSM
loss, g^2 / s^2 = -d log SNR / dt) estimated by importance-sampled times. It
bounds the likelihood of the stochastic (ancestral) sampler's model, not of
the ODE; both are reported.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from genlearn.diffusion.losses import time_sampler
from genlearn.diffusion.model import Diffusion
from genlearn.diffusion.sde import SDE
from genlearn.flows.cnf import solve_with_log_det

__all__ = ["probability_flow", "log_prob", "variational_bound"]

Array = jax.Array


def probability_flow(sde: SDE, eps_apply: Callable, params, x: Array, *, label: Array | None = None,
                     trace: str = "exact", probes: Array | None = None, rtol: float = 1e-5, atol: float = 1e-5,
                     solver: str = "dopri5", max_steps: int = 4096) -> tuple[Array, Array]:
    """``(z, log|det dz/dx|)``: the probability-flow ODE from x at t_min to z at t = 1 (module docstring).

    Args:
      sde: the forward SDE.
      eps_apply: ``eps_apply(params, x, t, label) -> eps_hat`` on a batch
        (e.g. ``Diffusion.eps``), called here on one example at a time.
      params: the network's params (the ODE's ``args``: gradients flow to them).
      x: ``(n, d)`` data in the model's space.
      label: ``(n,)`` class labels of a conditional model, or None.
      trace: "exact" or "hutchinson" (needs ``probes`` of shape ``(n, d)``).
      rtol, atol, solver, max_steps: the adaptive diffrax solve.
    """
    def field(p, v, t, *c):
        lab = None if not c else c[0].astype(jnp.int32)
        eps = eps_apply(p, v[None], t, lab)[0]
        return sde.drift_coeff(t) * v + 0.5 * sde.diffusion(t) ** 2 * eps / sde.std(t)

    context = None if label is None else jnp.asarray(label, jnp.int32).reshape(-1, 1)
    return solve_with_log_det(field, params, x, sde.t_min, 1.0, trace=trace, probes=probes, context=context,
                              solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)


def log_prob(model: Diffusion, params, x: Array, *, label: Array | None = None, trace: str = "exact",
             key: Array | None = None, probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
             solver: str = "dopri5", max_steps: int = 4096) -> Array:
    """log p(x) ``(n,)`` of the model's probability-flow ODE (at t_min), in the model's space.

    ``trace="hutchinson"`` needs ``key`` (one Rademacher or Gaussian probe per
    example); ``trace="exact"`` takes none.
    """
    if trace == "exact":
        if key is not None:
            raise ValueError("log_prob(trace='exact') takes no key (the trace is exact)")
        probes = None
    elif trace == "hutchinson":
        if key is None:
            raise ValueError("log_prob(trace='hutchinson') needs a key for the probe vectors")
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        probes = (jax.random.rademacher(key, x.shape).astype(x.dtype) if probe == "rademacher"
                  else jax.random.normal(key, x.shape, x.dtype))
    else:
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    z, log_det = probability_flow(model.sde, model.eps, params, x, label=label, trace=trace, probes=probes,
                                  rtol=rtol, atol=atol, solver=solver, max_steps=max_steps)
    return model.sde.prior_log_prob(z) + log_det


def variational_bound(model: Diffusion, params, x: Array, key: Array, *, label: Array | None = None,
                      num_t: int = 32) -> Array:
    """An upper bound on -log p(x) ``(n,)`` in nats, in the model's space (module docstring).

    The diffusion term is a Monte Carlo estimate over ``num_t`` importance
    sampled times (and noises) per example: the bound holds in expectation.
    """
    if int(num_t) < 1:
        raise ValueError(f"num_t must be >= 1, got {num_t}")
    sde = model.sde
    n, d = x.shape
    t0 = sde.t_min
    m0, s0 = sde.mean_coeff(jnp.asarray(t0, x.dtype)), sde.std(jnp.asarray(t0, x.dtype))
    recon = 0.5 * d * (jnp.log(2 * math.pi * s0**2 / m0**2) + 1.0)
    m1, s1 = sde.mean_coeff(jnp.asarray(1.0, x.dtype)), sde.std(jnp.asarray(1.0, x.dtype))
    sp = sde.prior_std
    kl = jnp.sum(jnp.log(sp / s1) + (s1**2 + (m1 * x) ** 2) / (2 * sp**2) - 0.5, -1)
    sampler = time_sampler(sde, "importance", "likelihood")

    def one_time(k):
        k_t, k_eps = jax.random.split(k)
        t, w = sampler.sample(k_t, n)
        t = t.astype(x.dtype)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        xt = sde.mean_coeff(t)[:, None] * x + sde.std(t)[:, None] * eps
        err = jnp.sum((model.eps(params, xt, t, label) - eps) ** 2, -1)
        return 0.5 * w.astype(x.dtype) * err * (1.0 - t0)

    diffusion = jnp.mean(jax.lax.map(one_time, jax.random.split(key, int(num_t))), 0)
    return recon + kl + diffusion
