"""Shared test utilities."""

import jax
import jax.numpy as jnp


def perturb(params, key, scale=0.05):
    """Random params away from the identity initialisation: every leaf + scale * N(0, 1)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(
        treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    )
