"""Argument checks shared by the flow factories."""

from __future__ import annotations

import numpy as np

from genlearn.core.bijectors import chain, repeat
from genlearn.flows.coupling import half_mask, parity_mask

_MASKS = {"half": half_mask, "parity": parity_mask}


def check_layers(num_layers) -> int:
    if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    return int(num_layers)


def check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, (int, np.integer)):
        hidden = (int(hidden),)
    hidden = tuple(hidden)
    if not hidden or any(not isinstance(w, (int, np.integer)) or w < 1 for w in hidden):
        raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden!r}")
    return tuple(int(w) for w in hidden)


def default_mask(dim: int, mask: str | None) -> str:
    """``mask=None``, the coupling flows' default: "random" halves above two dimensions
    (flowjax's and nflows' random permutations between layers), "half" at two, where a
    random half would often repeat the previous layer's.

    At d = 64 random halves learn far more per step than two fixed ones (whose
    coordinates never condition on each other directly): final held-out KL on
    ``benchmarks/_targets.py``'s mixture64 (``benchmarks/results/learning_curves.md``,
    3 seeds) RealNVP 4.82 -> 3.70 nats, NICE 3.95 -> 3.55, spline 10.85 -> 10.48. At
    d = 8 and 16 the effect is mixed (RealNVP gains, NICE and the spline lose a little).

    Like flowjax's and nflows' random permutations, the halves are drawn independently, except
    that the last layer's is redrawn when needed so that every coordinate is transformed by some
    layer (independent halves miss a coordinate in every layer with probability 2^-L: at d = 8
    with 4 layers and seed 0, coordinate 5). Complementary pairs (a random half, then its
    complement) would guarantee that every two layers but learned less: seed 0 of
    ``benchmarks/learning_curves.py``, final held-out KL, independent vs pairs, RealNVP
    mixture64 3.59 vs 4.25, NICE 3.46 vs 3.75 (at d = 8 and 16 pairs were 0.13 better to 0.03 worse).
    """
    return mask if mask is not None else ("random" if dim > 2 else "half")


def default_order(dim: int, order: str | None) -> str:
    """``order=None``, the autoregressive flows' default: "random" (an independent
    permutation per layer, flowjax's random permutations between layers) above two
    dimensions, "alternate" at two, where natural and reversed are the only orders.
    At d = 64 (mixture64, 3 seeds) MAF's final held-out KL goes 3.57 -> 2.66 nats
    (flowjax 2.90); at d = 8 and 16 it loses 0.01-0.06.
    """
    return order if order is not None else ("random" if dim > 2 else "alternate")


def alternating_masks(dim: int, num_layers: int, mask: str | None, seed: int = 0) -> list[np.ndarray]:
    """Masks whose transformed/conditioning roles alternate from layer to layer.

    ``mask="random"`` draws a fresh random half of the coordinates for each layer from
    ``seed`` (a random permutation between layers, as flowjax and nflows do) instead;
    ``None`` is :func:`default_mask`.
    """
    mask = default_mask(dim, mask)
    if mask == "random":
        rng = np.random.default_rng(seed)
        masks = [half_mask(dim)[rng.permutation(dim)] for _ in range(num_layers)]
        left = ~np.any(masks[:-1], axis=0) if num_layers > 1 else np.zeros(dim, bool)
        if (left & ~masks[-1]).any():  # redraw the last half: every coordinate no earlier layer
            # transformed (at most floor(d/2) after the first layer; a half holds ceil(d/2)), the rest at random
            last = left.copy()
            others = rng.permutation(np.flatnonzero(~left))
            last[others[: int(half_mask(dim).sum()) - int(left.sum())]] = True
            masks[-1] = last
        return masks
    if mask not in _MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose one of {sorted(_MASKS) + ['random']}")
    return [_MASKS[mask](dim, swap=bool(i % 2)) for i in range(num_layers)]


def stacked_layers(make, specs: list, periodic: bool, scan: bool = True) -> list:
    """The layers ``make(spec)`` for each of ``specs`` (masks or orders), as a list for ``chain``.

    When the specs alternate with period 2 (``periodic``: alternating halves, parities or
    orders) and ``scan``, the first pair is one block repeated ``len(specs) // 2`` times under
    ``lax.scan`` (:func:`genlearn.core.repeat`: params stacked along a leading axis, traced and
    compiled once at any depth), followed by one more ``make(specs[0])`` for an odd count.
    Otherwise (random masks or orders differ from layer to layer) one layer per spec, unrolled.
    """
    if not (scan and periodic) or len(specs) == 1:
        return [make(s) for s in specs]
    layers = [repeat(chain(make(specs[0]), make(specs[1])), len(specs) // 2)]
    return layers + ([make(specs[0])] if len(specs) % 2 else [])
