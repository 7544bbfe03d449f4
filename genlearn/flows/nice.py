"""NICE: additive coupling layers plus a diagonal scaling (Dinh, Krueger & Bengio 2014)."""

from __future__ import annotations

from typing import Callable

from genlearn.core.bijectors import _check_dim, chain, scale
from genlearn.core.distributions import Distribution, make_base
from genlearn.core.flow import Flow, make_flow
from genlearn.flows._common import alternating_masks, check_hidden, check_layers, default_mask, stacked_layers
from genlearn.flows.coupling import coupling, shift

__all__ = ["nice"]


def nice(
    dim: int,
    num_layers: int = 4,
    hidden: tuple[int, ...] = (128, 128),
    *,
    base: str | Distribution = "diag_gaussian",
    mask: str | None = None,
    seed: int = 0,
    activation: str | Callable = "relu",
    context_dim: int = 0,
    init_scale: float = 1e-2,
    scale_at: str = "base",
) -> Flow:
    """NICE flow: a diagonal scaling z * exp(s), then ``num_layers`` additive couplings x_t = z_t + v(z_c).

    The roles of the two coordinate subsets alternate between layers. Each
    coupling is volume preserving (log-det 0); the diagonal scaling
    (NICE section 3.3) contributes log-det sum(s), so the model is not stuck
    at unit volume. It sits where the paper puts it, the top layer of the
    encoder x -> z, i.e. next to the base distribution (``scale_at="base"``):
    held-out KL at equal steps (benchmarks/results/flow_ablation.md, 8
    couplings of 2x128, 3 seeds), base side vs data side: 8-D mixture 0.393 vs
    0.471, 8-D funnel 3.07 vs 3.24, 64-D mixture 3.25 vs 3.55 nats. The paper's prior is the logistic distribution
    (``base="logistic"``); a Gaussian learns far more per step (held-out KL 0.09 vs 0.40 nats on a 2-D
    mixture and 0.33 vs 0.90 on two moons after 1000 steps, benchmarks/results/learning_curves.md). The
    default is a Gaussian with a learned mean and diagonal scale (``"diag_gaussian"``; flowjax's ``Normal``
    base is trainable too): the one diagonal scale learns the contraction a mixture needs slowly (Adam moves
    a log-scale ~1e-3 per step), so over N(0, I) NICE sat at held-out KL 9.07 nats on a 64-D mixture after
    1000 steps (seed 0; flowjax 5.92), over the learned base 4.49; 8-D mixture, seeds 0/1/2, final KL
    0.377/0.391/0.411 -> 0.384/0.386/0.425 (flowjax 0.435/0.438/0.502), moons (seed 0) 0.088 -> 0.083. It
    overfits sooner where everything overfits: on dequantised digits (1400 images, 4000 steps) final
    4.805 -> 5.662 bits/dim (flowjax 5.089); `genlearn fit nice --data digits` (early-stopped) 2.372 -> 2.366.

    With ``mask="half"`` or ``"parity"`` the alternating pair of couplings is one
    block repeated ``num_layers // 2`` times under ``lax.scan``
    (:func:`genlearn.core.repeat`; its params are stacked along a leading axis),
    so a deep NICE compiles as fast as a shallow one: on ring8, 24 layers took
    ~100 s of fixed cost unrolled and 9 s scanned.

    Args:
      dim: data dimension, >= 2.
      num_layers: number of coupling layers, >= 1.
      hidden: hidden widths of each coupling's MLP conditioner.
      base: "diag_gaussian" (the default, see above), "normal", "logistic", "student_t", or a Distribution.
      mask: None (the default: "random" above two dimensions, "half" at two; see
        :func:`genlearn.flows._common.default_mask`), "half" (contiguous halves),
        "parity" (even/odd coordinates) or "random" (a random half per layer drawn
        from ``seed``: random permutations, as flowjax permutes between layers).
      seed: the seed of ``mask="random"``.
      activation: conditioner activation.
      context_dim: > 0 for a conditional flow p(x | c): every conditioner also reads c.
      init_scale: the couplings' last conditioner layer starts from N(0, init_scale^2)
        kernels, near the identity rather than at it (0 starts exactly at it). On data
        symmetric under x_t -> -x_t (ring8, grid25) the exact identity is a saddle: the
        expected gradient of every shift vanishes and NICE sat at N(0, I) for 600 (ring8)
        and over 2000 (grid25) steps; with 1e-2 it leaves at once (issue 17, grid25 held-out
        2.846 -> 1.43/1.61 after 2000 steps).
      scale_at: "base" (the default and the paper's: x = couplings(z * exp(s))) or "data"
        (x = couplings(z) * exp(s), genlearn's NICE before stop 32; runs saved then rebuild with it).
    """
    dim = _check_dim(dim, 2, "nice: dim")
    num_layers = check_layers(num_layers)
    hidden = check_hidden(hidden)
    mask = default_mask(dim, mask)
    masks = alternating_masks(dim, num_layers, mask, seed)

    def additive(m):
        return coupling(dim, shift(), mask=m, hidden=hidden, activation=activation, context_dim=context_dim,
                        last_init_scale=init_scale)

    if scale_at not in ("base", "data"):
        raise ValueError(f"nice: scale_at must be 'base' or 'data', got {scale_at!r}")
    layers = stacked_layers(additive, masks, periodic=mask != "random")
    order = [scale(dim), *layers] if scale_at == "base" else [*layers, scale(dim)]
    return make_flow(make_base(base, dim), chain(*order))
