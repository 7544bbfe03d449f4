"""Mode collapse on mixtures with known centres (ring8, grid25).

The protocol of the mode-collapse literature (Metz et al. 2017, "Unrolled
GANs"; Srivastava et al. 2017, "VEEGAN"): each sample is assigned to its
nearest centre ``c_k``; it is *high quality* when ``||x - c_k|| <= t * std``
(``t = 3`` by default). Then

* ``high_quality_fraction = #HQ / n``,
* ``modes_covered = #{k : HQ count of mode k >= min_count}``,
* ``kl_to_uniform = KL(h || U_K) = sum_k h_k log(K h_k)`` for the histogram
  ``h`` of the high-quality samples over the ``K`` modes (0 for a perfectly
  balanced generator, ``log K`` when one mode gets everything).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.metrics._checks import as_int, as_positive, as_samples
from genlearn.metrics._pairwise import pad_rows, row_reduce, sq_dists, x64

__all__ = ["ModeCoverage", "mode_coverage"]


class ModeCoverage(NamedTuple):
    """Result of :func:`mode_coverage`.

    Attributes:
      modes_covered: number of modes with at least ``min_count`` HQ samples.
      high_quality_fraction: fraction of samples within ``t * std`` of their
        nearest centre.
      kl_to_uniform: ``KL(h || uniform)`` of the HQ-sample histogram, nats;
        ``inf`` when there is no high-quality sample at all.
      counts: ``(K,)`` int array, HQ samples per mode.
    """

    modes_covered: int
    high_quality_fraction: float
    kl_to_uniform: float
    counts: np.ndarray


@jax.jit
def _nearest(x, centers):
    def rows(blk):
        d2 = sq_dists(blk, centers)
        idx = jnp.argmin(d2, axis=1)
        return jnp.stack([idx.astype(x.dtype), jnp.min(d2, axis=1)], axis=1)

    out = row_reduce(rows, x, 1024)
    return out[:, 0].astype(jnp.int32), out[:, 1]


def mode_coverage(
    samples: Any,
    centers: Any,
    std: float,
    *,
    threshold: float = 3.0,
    min_count: int = 1,
) -> ModeCoverage:
    """Modes covered, high-quality fraction and mode-histogram KL (module docstring).

    Args:
      samples: ``(n, d)`` generated samples, ``n >= 1``.
      centers: ``(K, d)`` mixture centres (e.g. ``genlearn.data.ring8_centers()``).
      std: the mixture components' standard deviation, ``> 0``.
      threshold: ``t``: a sample is high quality within ``t * std`` of its centre.
      min_count: HQ samples a mode needs to count as covered (``>= 1``).

    Returns:
      :class:`ModeCoverage`.

    Raises:
      ValueError: bad arrays, mismatched d, non-positive std/threshold.
    """
    x = as_samples(samples, "samples", min_n=1)
    c = as_samples(centers, "centers", min_n=1)
    if x.shape[1] != c.shape[1]:
        raise ValueError(
            f"dimension mismatch: samples have shape {x.shape}, centers have shape {c.shape}"
        )
    std = as_positive(std, "std")
    threshold = as_positive(threshold, "threshold")
    min_count = as_int(min_count, "min_count")
    with x64():
        idx, d2 = _nearest(jnp.asarray(pad_rows(x)[0]), jnp.asarray(c))
        idx, d2 = np.asarray(idx)[: x.shape[0]], np.asarray(d2)[: x.shape[0]]
    hq = d2 <= (threshold * std) ** 2
    k = c.shape[0]
    counts = np.bincount(idx[hq], minlength=k)
    n_hq = int(counts.sum())
    if n_hq == 0:
        kl = float("inf")
    else:
        h = counts / n_hq
        nz = h > 0
        kl = float(np.sum(h[nz] * np.log(k * h[nz])))
    return ModeCoverage(int(np.sum(counts >= min_count)), n_hq / x.shape[0], max(kl, 0.0), counts)
