"""Trains genlearn's digits feature network and writes its weights (msgpack).

    python scripts/train_feature_net.py [--out genlearn/metrics/digits_classifier.msgpack]

Data: the training split of ``genlearn.data.load_digits_split(0)`` (1400
images), inputs ``pixels / 16``. Model: ``genlearn.metrics.features.DigitsClassifier``.
Adam, cross-entropy plus a small L2 penalty, mini-batches of 128, a fixed
number of epochs (deterministic given the seed). Prints the test accuracy on
the 397 held-out images; the weights are written with
``flax.serialization.to_bytes`` (no pickle).
"""

from __future__ import annotations

import argparse
import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn.data import load_digits_split
from genlearn.metrics.features import DIGITS_WEIGHTS_PATH, DigitsClassifier, digits_classifier_init


def _labels(seed: int = 0, n_train: int = 1400):
    from sklearn.datasets import load_digits

    from genlearn.data import digits_split_indices

    target = load_digits().target
    tr, te = digits_split_indices(seed, n_train)
    return target[tr], target[te]


def train(seed: int = 0, epochs: int = 150, batch_size: int = 128, lr: float = 1e-3, l2: float = 1e-4):
    train_x, test_x = load_digits_split(0)
    train_y, test_y = _labels(0)
    xtr = jnp.asarray(train_x / 16.0)
    ytr = jnp.asarray(train_y)
    module = DigitsClassifier()
    params = digits_classifier_init(jax.random.PRNGKey(seed))
    opt = optax.adam(lr)
    state = opt.init(params)

    def loss_fn(p, xb, yb):
        logits = module.apply(p, xb)[1]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        reg = sum(jnp.sum(w**2) for w in jax.tree_util.tree_leaves(p))
        return ce + l2 * reg

    @jax.jit
    def epoch(carry, key):
        p, s = carry
        n = xtr.shape[0]
        perm = jax.random.permutation(key, n)
        nb = n // batch_size

        def step(c, i):
            p, s = c
            idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
            g = jax.grad(loss_fn)(p, xtr[idx], ytr[idx])
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, s), jnp.arange(nb))[0], None

    (params, state), _ = jax.lax.scan(epoch, (params, state), jax.random.split(jax.random.PRNGKey(seed + 1), epochs))

    def acc(x, y):
        return float(np.mean(np.asarray(jnp.argmax(module.apply(params, jnp.asarray(x / 16.0))[1], -1)) == y))

    return params, acc(train_x, train_y), acc(test_x, test_y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DIGITS_WEIGHTS_PATH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args(argv)
    params, train_acc, test_acc = train(args.seed, args.epochs)
    data = flax.serialization.to_bytes(params)
    with open(args.out, "wb") as fh:
        fh.write(data)
    print(json.dumps({"out": args.out, "bytes": len(data), "train_accuracy": train_acc,
                      "test_accuracy": test_acc}))


if __name__ == "__main__":
    main()
