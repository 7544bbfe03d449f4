"""Rational-quadratic neural splines (Durkan, Bekasov, Murray & Papamakarios 2019).

On [-B, B] the transformer is a monotone rational-quadratic spline with K bins:
knots (x_k, y_k), k = 0..K, with x_0 = y_0 = -B, x_K = y_K = B, and positive
derivatives d_k at the knots. In bin k, with w = x_{k+1} - x_k,
h = y_{k+1} - y_k, s = h / w and xi = (x - x_k) / w in [0, 1] (paper, eq. 4):

    g(x)  = y_k + h [s xi^2 + d_k xi (1 - xi)] / [s + (d_{k+1} + d_k - 2 s) xi (1 - xi)]
    g'(x) = s^2 [d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2] / [s + (d_{k+1} + d_k - 2 s) xi (1 - xi)]^2

and the inverse solves a quadratic for xi (paper, eqs. 6-8, with the
numerically stable root 2c / (-b - sqrt(b^2 - 4ac))).

Tails: outside [-B, B] the map is linear with slope equal to the boundary
derivative. As in the paper the boundary derivatives are fixed to d_0 = d_K = 1,
so the linear tails are the identity and the map is C^1 on the whole line.

Parametrisation of the 3K - 1 unconstrained numbers per coordinate (as nflows):
widths  = 2B (min_w + (1 - K min_w) softmax(raw_w)), heights likewise with min_h,
interior derivatives = min_d + softplus(raw_d + c) with softplus(c) = 1 - min_d,
so all-zero raw parameters give uniform bins and unit derivatives: the identity.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import _check_dim, chain
from genlearn.core.distributions import Distribution, make_base
from genlearn.core.flow import Flow, make_flow
from genlearn.flows._common import (alternating_masks, check_hidden, check_layers, default_mask, default_order,
                                    stacked_layers)
from genlearn.flows.autoregressive import layer_orders, masked_autoregressive
from genlearn.flows.coupling import Transformer, coupling

__all__ = ["rational_quadratic", "spline"]


def _positive(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"rational_quadratic: {name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"rational_quadratic: {name} must be finite and > 0, got {value!r}")
    return value


def rational_quadratic(
    num_bins: int = 8,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    tails: str = "identity",
) -> Transformer:
    """The rational-quadratic spline as a :class:`~genlearn.flows.Transformer`.

    Args:
      num_bins: K >= 2 bins on [-bound, bound].
      bound: B > 0; identity (slope-1 linear) tails outside [-B, B].
      min_bin_width, min_bin_height: minimal bin sizes as fractions of 2B,
        each in (0, 1/K).
      min_derivative: minimal knot derivative, in (0, 1).
      tails: "identity" (the paper's: slope-1 tails, boundary derivatives fixed at 1)
        or "linear" (the two boundary derivatives are learned too and the tails
        continue the spline linearly with those slopes, so the map stays C^1 and can
        also scale points outside [-B, B]: heavy-tailed data no longer has to be
        explained by the base alone).

    ``params_per_dim`` is 3K - 1 (K widths, K heights, K - 1 interior
    derivatives), or 3K + 1 with ``tails="linear"`` (K + 1 derivatives). Use it
    in ``coupling(dim, rational_quadratic(), ...)`` or
    ``masked_autoregressive(dim, rational_quadratic(), ...)``.
    """
    if not isinstance(num_bins, (int, np.integer)) or isinstance(num_bins, bool) or num_bins < 2:
        raise ValueError(f"rational_quadratic: num_bins must be an integer >= 2, got {num_bins!r}")
    K = int(num_bins)
    B = _positive(bound, "bound")
    min_w = _positive(min_bin_width, "min_bin_width")
    min_h = _positive(min_bin_height, "min_bin_height")
    min_d = _positive(min_derivative, "min_derivative")
    for name, v in (("min_bin_width", min_w), ("min_bin_height", min_h)):
        if v * K >= 1.0:
            raise ValueError(f"rational_quadratic: {name} * num_bins must be < 1, got {v} * {K}")
    if min_d >= 1.0:
        raise ValueError(f"rational_quadratic: min_derivative must be < 1 (identity needs slope 1), got {min_d}")
    if tails not in ("identity", "linear"):
        raise ValueError(f"rational_quadratic: tails must be 'identity' or 'linear', got {tails!r}")
    learned_ends = tails == "linear"
    P = 3 * K + 1 if learned_ends else 3 * K - 1
    d_offset = float(np.log(np.expm1(1.0 - min_d)))  # softplus(d_offset) + min_d = 1

    def _knots(h):
        # h: (k, 3K - 1) -> knot positions (k, K+1) on both axes, derivatives (k, K+1).
        dtype = h.dtype
        w = min_w + (1.0 - K * min_w) * jax.nn.softmax(h[:, :K], axis=-1)
        ht = min_h + (1.0 - K * min_h) * jax.nn.softmax(h[:, K : 2 * K], axis=-1)
        zero = jnp.zeros(h.shape[:1] + (1,), dtype)
        xk = jnp.concatenate([zero, jnp.cumsum(w, axis=-1)], axis=-1)
        yk = jnp.concatenate([zero, jnp.cumsum(ht, axis=-1)], axis=-1)
        # exact end knots: cumsum round-off must not move the boundary
        xk = (2 * B * xk - B).at[:, -1].set(B)
        yk = (2 * B * yk - B).at[:, -1].set(B)
        one = jnp.ones_like(zero)
        d = min_d + jax.nn.softplus(h[:, 2 * K :] + d_offset)
        if not learned_ends:
            d = jnp.concatenate([one, d, one], axis=-1)
        return xk, yk, d

    def _bin(knots, v):
        idx = jnp.sum(v[:, None] >= knots[:, 1:K], axis=-1)  # 0..K-1
        take = lambda a, i: jnp.take_along_axis(a, i[:, None], axis=-1)[:, 0]  # noqa: E731
        return idx, take

    def _check(h, v):
        if h.ndim != 2 or h.shape != (v.shape[0], P):
            raise ValueError(f"rational_quadratic: params must have shape ({v.shape[0]}, {P}), got {tuple(h.shape)}")

    def _locate(h, v, on_y):
        """The bin of each v (searched on the x or y knots) and its knot values."""
        _check(h, v)
        xk, yk, d = _knots(h)
        vc = jnp.clip(v, -B, B)
        idx, take = _bin(yk if on_y else xk, vc)
        x0, y0 = take(xk, idx), take(yk, idx)
        w, ht = take(xk, idx + 1) - x0, take(yk, idx + 1) - y0
        # the tail slope on v's side: the boundary derivative (1 for identity tails)
        tail = jnp.where(v > 0, d[:, K], d[:, 0])
        return jnp.abs(v) < B, vc, x0, y0, w, ht, take(d, idx), take(d, idx + 1), tail

    def _log_slope(s, d0, d1, xi):  # log g'(x) in the bin (paper, eq. 5)
        t = xi * (1 - xi)
        den = s + (d1 + d0 - 2 * s) * t
        return 2 * jnp.log(s) + jnp.log(d1 * xi**2 + 2 * s * t + d0 * (1 - xi) ** 2) - 2 * jnp.log(den)

    def forward(h, z):
        inside, zc, x0, y0, w, ht, d0, d1, slope = _locate(h, z, on_y=False)
        s = ht / w
        xi = jnp.clip((zc - x0) / w, 0.0, 1.0)
        t = xi * (1 - xi)
        x = y0 + ht * (s * xi**2 + d0 * t) / (s + (d1 + d0 - 2 * s) * t)
        x_tail = zc + slope * (z - zc) if learned_ends else z  # zc = +-B outside
        return jnp.where(inside, x, x_tail), jnp.sum(jnp.where(inside, _log_slope(s, d0, d1, xi), jnp.log(slope)))

    def inverse(h, x):
        inside, xc, x0, y0, w, ht, d0, d1, slope = _locate(h, x, on_y=True)
        s = ht / w
        dy = xc - y0
        c2 = d1 + d0 - 2 * s
        a = ht * (s - d0) + dy * c2
        b = ht * d0 - dy * c2
        c = -s * dy
        disc = jnp.maximum(b * b - 4 * a * c, 0.0)
        xi = jnp.clip(2 * c / (-b - jnp.sqrt(disc)), 0.0, 1.0)
        z = x0 + xi * w
        z_tail = xc + (x - xc) / slope if learned_ends else x
        return jnp.where(inside, z, z_tail), -jnp.sum(jnp.where(inside, _log_slope(s, d0, d1, xi), jnp.log(slope)))

    return Transformer(P, forward, inverse)


def spline(
    dim: int,
    num_layers: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    *,
    kind: str = "coupling",
    num_bins: int = 8,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    tails: str = "identity",
    mask: str | None = None,
    order: str | None = None,
    seed: int = 0,
    base: str | Distribution = "diag_gaussian",
    activation: str | Callable = "relu",
    context_dim: int = 0,
    scan: bool = True,
    residual: bool = False,
) -> Flow:
    """Neural spline flow: ``num_layers`` rational-quadratic spline layers.

    Args:
      dim: data dimension, >= 2.
      num_layers, hidden: layers and conditioner widths (MADE widths must be >= dim
        for ``kind="autoregressive"``).
      kind: "coupling" (RQ-NSF (C): coupling layers with alternating ``mask``)
        or "autoregressive" (RQ-NSF (AR): MAF layers with alternating/random ``order``).
      num_bins, bound, min_bin_width, min_bin_height, min_derivative: see
        :func:`rational_quadratic`.
      tails: "identity" (the default: the paper's slope-1 tails) or "linear" (learned
        boundary slopes continued linearly outside [-bound, bound]); see
        :func:`rational_quadratic`. Over a fixed N(0, I) base linear tails helped on an
        8-d funnel (benchmarks/learning_curves.py, held-out KL 1.19 -> 0.77 nats), because
        only the tails could scale the points outside the box; over the default learned base
        the base does that, and linear tails then overfit the funnel's outliers: seed 0, held-out
        KL after 1000 steps 0.39, after 2000 over 76 000 (a few test points mapped far out by
        slopes compounding over layers), identity tails 0.55 and 0.58.
      mask, seed: the couplings' masks (default None: "random" drawn from ``seed``
        above two dimensions, "half" at two; or "half", "parity", "random"), as for
        :func:`genlearn.flows.realnvp`; ``order`` and ``seed`` give the autoregressive
        layers' orders (default None: random above two dimensions, alternating at two),
        as for :func:`genlearn.flows.maf`.
      base: "diag_gaussian" (the default: N(mu, diag(sigma^2)) with learned mu and sigma, which
        flowjax's trainable ``Normal`` base also is), "normal", "student_t", "logistic", or a
        Distribution. The learned base closed the spline's gap to flowjax on the 8-d funnel
        (benchmarks/results/learning_curves.md, 3 seeds, final held-out KL 0.839 -> 0.657 nats,
        flowjax 0.656; mixture8 0.293 -> 0.283, flowjax 0.284): a fixed N(0, I) left only the
        layers' slope-1 tails or learned tail slopes to set the scale of the points outside the box.
      activation, context_dim, scan: as for :func:`genlearn.flows.realnvp` (alternating
        masks or orders: one scanned pair of layers; random ones are unrolled).
      residual: skip connections in the couplings' conditioners (:func:`genlearn.flows.coupling`;
        ``kind="coupling"`` only, a MADE has none). Off by default. In
        benchmarks/results/flow_ablation.md (stop 41, 8 couplings of 2x128, 4000 steps) they lowered
        the final held-out KL on the 8-D mixture (0.283 -> 0.239), the 16-D warped Gaussian
        (3.12 -> 2.28, where both overfit), the 8-D funnel (0.657 -> 0.508) and digits (3.42 -> 3.34
        bits/dim), but learned more slowly early on, no better on two moons (0.010 -> 0.011) and
        worse on a 64-D mixture (10.16 -> 11.32).
    """
    dim = _check_dim(dim, 2, "spline: dim")
    num_layers = check_layers(num_layers)
    hidden = check_hidden(hidden)
    t = rational_quadratic(num_bins, bound, min_bin_width, min_bin_height, min_derivative, tails)
    if kind == "coupling":
        mask = default_mask(dim, mask)
        layers = stacked_layers(
            lambda m: coupling(dim, t, mask=m, hidden=hidden, activation=activation, context_dim=context_dim,
                               residual=residual),
            alternating_masks(dim, num_layers, mask, seed), periodic=mask != "random", scan=scan)
    elif kind == "autoregressive":
        if residual:
            raise ValueError("spline: residual=True needs kind='coupling' (a MADE conditioner has no skip connections)")
        order = default_order(dim, order)
        layers = stacked_layers(
            lambda o: masked_autoregressive(dim, t, hidden=hidden, order=o, activation=activation,
                                            context_dim=context_dim),
            layer_orders(dim, num_layers, order, seed), periodic=order == "alternate", scan=scan)
    else:
        raise ValueError(f"spline: unknown kind {kind!r}; choose 'coupling' or 'autoregressive'")
    return make_flow(make_base(base, dim), chain(*layers))
