"""Argument checks shared by the flow factories."""

from __future__ import annotations

import numpy as np

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


def alternating_masks(dim: int, num_layers: int, mask: str, seed: int = 0) -> list[np.ndarray]:
    """Masks whose transformed/conditioning roles alternate from layer to layer.

    ``mask="random"`` draws a fresh random half of the coordinates for each layer from
    ``seed`` (a random permutation between layers, as flowjax and nflows do) instead.
    """
    if mask == "random":
        rng = np.random.default_rng(seed)
        return [half_mask(dim)[rng.permutation(dim)] for _ in range(num_layers)]
    if mask not in _MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose one of {sorted(_MASKS) + ['random']}")
    return [_MASKS[mask](dim, swap=bool(i % 2)) for i in range(num_layers)]
