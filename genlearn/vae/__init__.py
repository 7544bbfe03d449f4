"""Variational autoencoders (``gl.vae``): the ELBO, beta-VAE, IWAE and flow posteriors.

* `genlearn.vae.likelihoods`: decoder likelihoods p(x | z) -- Gaussian (fixed or
  learned variance), Bernoulli, (mixture of) discretised logistic for pixels.
* `genlearn.vae.networks`: flax.linen encoders/decoders (MLP; convolutional for 8x8 digits).
* `genlearn.vae.vae`: the :func:`vae` factory (a :class:`VAE` NamedTuple of pure
  functions), :func:`iaf_posterior`, :func:`bounds` (ELBO, IWAE_k, their gap),
  :func:`iwae_loss` (training on IWAE_k), :func:`annealed_loss` (its prior term on a
  warm-up schedule, for `genlearn.train.annealed_trainer`) and
  the distrax views of posterior and decoder.
* `genlearn.vae.run`: the ``vae`` family of the run registry (``genlearn fit vae``).
"""

from genlearn.vae.likelihoods import Likelihood, bernoulli, discretized_logistic, gaussian, log_sub_sigmoid
from genlearn.vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, check_image_shape
from genlearn.vae.vae import (VAE, Bounds, annealed_loss, bounds, decoder_to_distrax, features_dim, iaf_posterior,
                              iwae_loss, posterior_to_distrax, vae)

__all__ = ["Likelihood", "gaussian", "bernoulli", "discretized_logistic", "log_sub_sigmoid",
           "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "check_image_shape",
           "VAE", "Bounds", "vae", "iaf_posterior", "features_dim", "bounds", "iwae_loss", "annealed_loss",
           "posterior_to_distrax", "decoder_to_distrax"]
