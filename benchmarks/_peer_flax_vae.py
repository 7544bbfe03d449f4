"""The peer of benchmarks/vae_numbers.py: the VAE of the official flax example (``google/flax``, examples/vae).

Re-implemented here from the example's specification (the example is a script,
not an installable package): encoder Dense(500) -> ReLU -> two Dense(latents)
heads for the mean and the log-VARIANCE; decoder Dense(500) -> ReLU ->
Dense(dim) Bernoulli logits; z = mean + exp(logvar / 2) * eps; the loss is the
mean over the batch of the binary cross-entropy summed over pixels plus the
closed-form KL; Adam(1e-3), batch 128, 20 latents, one ``jax.jit``-ed update
called from a Python loop with a fresh key per step. Only the data differ:
the 64-pixel digits binarised at 8 instead of 784-pixel binarised MNIST.

The IWAE bound is not part of the example; :func:`iwae` computes it for these
params with the same formula genlearn uses, so both models are scored alike.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

__all__ = ["PeerVAE", "make_train_step", "init", "elbo", "iwae"]


class _Encoder(nn.Module):
    latents: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(500, name="fc1")(x))
        return nn.Dense(self.latents, name="fc2_mean")(h), nn.Dense(self.latents, name="fc2_logvar")(h)


class _Decoder(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.dim, name="fc2")(nn.relu(nn.Dense(500, name="fc1")(z)))


class PeerVAE(nn.Module):
    """Encoder, reparameterised draw, decoder logits: ``(logits, mean, logvar)``."""

    dim: int
    latents: int = 20

    def setup(self):
        self.encoder = _Encoder(self.latents)
        self.decoder = _Decoder(self.dim)

    def __call__(self, x, key):
        mean, logvar = self.encoder(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, logvar.shape)
        return self.decoder(z), mean, logvar

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)


def _bce(logits, x):
    log_p = nn.log_sigmoid(logits)
    return -jnp.sum(x * log_p + (1.0 - x) * jnp.log(-jnp.expm1(log_p)), axis=-1)


def _kl(mean, logvar):
    return -0.5 * jnp.sum(1.0 + logvar - mean**2 - jnp.exp(logvar), axis=-1)


def init(model: PeerVAE, key):
    """The example's ``(params, optax state)``: init on a batch of ones, Adam(1e-3)."""
    params = model.init(key, jnp.ones((128, model.dim)), key)["params"]
    return params, optax.adam(1e-3).init(params)


def make_train_step(model: PeerVAE):
    """The example's jitted update: mean BCE + mean KL, one Adam step."""
    opt = optax.adam(1e-3)

    @jax.jit
    def train_step(params, opt_state, batch, key):
        def loss_fn(p):
            logits, mean, logvar = model.apply({"params": p}, batch, key)
            return jnp.mean(_bce(logits, batch)) + jnp.mean(_kl(mean, logvar))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def elbo(model: PeerVAE, params, x, key):
    """The example's evaluation ELBO per row: -(BCE + KL) with one draw."""
    logits, mean, logvar = model.apply({"params": params}, x, key)
    return -(_bce(logits, x) + _kl(mean, logvar))


def iwae(model: PeerVAE, params, x, key, k: int, chunk: int = 100):
    """IWAE_k per row, the k draws in chunks (``lax.map``) as in genlearn.vae."""
    mean, logvar = model.apply({"params": params}, x, method=PeerVAE.encode)
    std = jnp.exp(0.5 * logvar)
    log_2pi = jnp.log(2 * jnp.pi)

    def one(c):
        eps = jax.random.normal(jax.random.fold_in(key, c), (x.shape[0], chunk, mean.shape[1]))
        z = mean[:, None] + std[:, None] * eps
        logits = model.apply({"params": params}, z, method=PeerVAE.decode)
        log_px = -_bce(logits, x[:, None])
        log_pz = jnp.sum(-0.5 * z**2 - 0.5 * log_2pi, -1)
        log_q = jnp.sum(-0.5 * eps**2 - jnp.log(std)[:, None] - 0.5 * log_2pi, -1)
        return log_px + log_pz - log_q

    lw = jax.lax.map(one, jnp.arange(-(-k // chunk)))
    lw = jnp.moveaxis(lw, 0, 1).reshape((x.shape[0], -1))[:, :k]
    return jax.nn.logsumexp(lw, axis=1) - jnp.log(k)
