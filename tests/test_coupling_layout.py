"""Coupling layers place each coordinate where its mask says, whatever the mask.

The coupling reads and writes coordinates with slices, strided slices,
concatenation or interleaving when the mask allows (cheaper than gathers), and
falls back to a gather otherwise. A wrong placement would still be a bijection
with a correct log-det, so the round-trip tests cannot see it: here the
conditioning coordinates must come out unchanged, and the transformed ones must
equal the transformer applied to the conditioner's output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn.flows import affine, coupling, half_mask, parity_mask
from genlearn.nn import MLP
from tests.helpers import perturb

MASKS = {
    "half": lambda d: half_mask(d),
    "half_swapped": lambda d: half_mask(d, swap=True),
    "parity": lambda d: parity_mask(d),
    "parity_swapped": lambda d: parity_mask(d, swap=True),
    "irregular": lambda d: np.isin(np.arange(d), [0, 2, 3, d - 1]),
}


@pytest.mark.parametrize("name, dim", [("half", 6), ("half_swapped", 5), ("parity", 6),
                                       ("parity_swapped", 6), ("parity", 5), ("irregular", 6)])
def test_coordinates_land_where_the_mask_says(name, dim):
    mask = MASKS[name](dim)
    layer = coupling(dim, affine("exp"), mask=mask, hidden=(8,))
    params = perturb(layer.init(jax.random.key(0)), jax.random.key(1))
    z = jax.random.normal(jax.random.key(2), (dim,))
    x, log_det = layer.apply_and_log_det(params, z)

    cond, trans = np.flatnonzero(~mask), np.flatnonzero(mask)
    net = MLP(hidden=(8,), out=2 * trans.size, zero_init_last=True)
    h = net.apply(params, z[cond]).reshape(trans.size, 2)
    u = 5.0 * jnp.tanh(h[:, 0] / 5.0)
    np.testing.assert_array_equal(x[cond], z[cond])
    np.testing.assert_allclose(x[trans], z[trans] * jnp.exp(u) + h[:, 1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det, jnp.sum(u), rtol=1e-6)
    z_back, _ = layer.inverse_and_log_det(params, x)
    np.testing.assert_allclose(z_back, z, atol=1e-5)
