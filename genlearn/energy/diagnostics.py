r"""MCMC diagnostics over many chains: acceptance, divergences, ESS and R-hat.

ESS and R-hat are blackjax's (``blackjax.diagnostics.effective_sample_size``,
the Stan/Geyer estimator from within- and between-chain autocorrelations, and
``blackjax.diagnostics.potential_scale_reduction``, Gelman & Rubin 1992:
``R = sqrt(V_hat / W)``), applied per coordinate to samples laid out as
``(chains, draws, dim)`` — what `genlearn.energy.sample_chains` returns.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from blackjax import diagnostics as _bd

__all__ = ["effective_sample_size", "rhat", "acceptance_rate", "divergence_rate", "summarize"]


def _check_samples(samples, min_chains: int = 1) -> jnp.ndarray:
    s = jnp.asarray(samples)
    if s.ndim != 3:
        raise ValueError(f"samples must have shape (chains, draws, dim), got shape {tuple(s.shape)}")
    if s.shape[0] < min_chains:
        raise ValueError(f"need at least {min_chains} chains, got {s.shape[0]}")
    if s.shape[1] < 4:
        raise ValueError(f"need at least 4 draws per chain, got {s.shape[1]}")
    if not bool(jnp.all(jnp.isfinite(s))):
        raise ValueError("samples contain NaN or inf")
    return s


# jitted: blackjax's estimators run op by op otherwise (seconds for a few thousand draws)
_ess = jax.jit(lambda s: _bd.effective_sample_size(s, chain_axis=0, sample_axis=1))
_rhat = jax.jit(lambda s: _bd.potential_scale_reduction(s, chain_axis=0, sample_axis=1))


def effective_sample_size(samples) -> np.ndarray:
    """ESS per coordinate, ``(dim,)``, of ``samples`` ``(chains, draws, dim)``."""
    return np.asarray(_ess(_check_samples(samples)))


def rhat(samples) -> np.ndarray:
    """Potential scale reduction per coordinate, ``(dim,)``; needs >= 2 chains."""
    return np.asarray(_rhat(_check_samples(samples, min_chains=2)))


def acceptance_rate(info) -> float:
    """Mean acceptance probability over all chains and steps of a `SamplerInfo`."""
    return float(jnp.mean(jnp.asarray(info.acceptance_rate)))


def divergence_rate(info) -> float:
    """Fraction of transitions that diverged (non-finite proposal) in a `SamplerInfo`."""
    return float(jnp.mean(jnp.asarray(info.is_divergent).astype(jnp.float32)))


def summarize(samples, info: Any | None = None) -> dict:
    """A dict: ``ess`` and ``rhat`` (lists per coordinate; rhat only for >= 2
    chains), ``min_ess``, ``max_rhat``, and with ``info`` the acceptance and
    divergence rates."""
    s = _check_samples(samples)
    ess = effective_sample_size(s)
    out = {"ess": ess.tolist(), "min_ess": float(ess.min())}
    if s.shape[0] >= 2:
        r = rhat(s)
        out.update(rhat=r.tolist(), max_rhat=float(r.max()))
    if info is not None:
        out.update(acceptance_rate=acceptance_rate(info), divergence_rate=divergence_rate(info))
    return out
