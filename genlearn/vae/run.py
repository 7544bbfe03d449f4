"""The VAE family of the run registry: ``genlearn fit vae --data moons|ring8|grid25|digits``.

Training maximises the ELBO (beta-VAE with ``--beta``; the IWAE bound with
``--train-k`` k > 1, `genlearn.vae.iwae_loss`) with
`genlearn.train.gradient_trainer` run by the one driver; the validation loss
is the negative ELBO. The Model's ``log_prob(params, x, key)`` is the IWAE
bound with k = ``eval_samples`` (1000 by default), flagged
``log_prob_is_exact=False`` and ``log_prob_needs_key=True``; it is a lower
bound on log p(x), so the reported NLL is an upper bound on the model's.

* Toys: the VAE models standardised data with a Gaussian decoder (learned
  variance) and, by default, the VampPrior (``--prior vamp``; pseudo-inputs
  started at k-means++ seeds among the training rows); log-densities are
  moved to data units with the standardisation's log-det.
* Pixels (``discrete_levels`` L): the decoder is a (mixture of) discretised
  logistic P(x | z) over the L levels, so the VAE is a discrete model P(x);
  ``p(y) = P(floor(y))`` is a density on the dequantised data [0, L)^d with
  the same NLL, so ``log_prob(params, y, key) = IWAE_k of log P(floor(y))``
  and the runs layer's ``test_bits_per_dim`` is the IWAE-k bits/dim.
  ``sample`` draws x ~ P and returns the dequantised y = x + u.

metrics.json adds (``report``) the test-set bounds in nats per example:
``test_elbo``, ``test_iwae`` (k = ``eval_samples``), ``test_bound_gap`` =
IWAE - ELBO, for pixels also in bits/dim, and for the digits ``fid_features``
(the digits classifier's FID of 2000 samples x ~ P); on mixtures with known
modes (ring8, grid25) ``modes_covered`` and ``high_quality_fraction`` of 2000
samples (`genlearn.runs.sample_metrics`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn import registry
from genlearn.classical.gmm import kmeans_plusplus
from genlearn.core.model import Model
from genlearn.data import Dataset
from genlearn.data.scaling import standardize_stats
from genlearn.vae.likelihoods import discretized_logistic, gaussian
from genlearn.vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genlearn.vae.vae import VAE, bounds, iaf_posterior, vae

__all__ = ["default_options", "preprocess", "build_vae", "build", "trainer", "FAMILY"]


KL_WARMUP = 0.2  # the toys' warm-up of the prior term: its weight rises 0 -> 1 over this fraction of the steps
PRIOR_COMPONENTS = 32  # --prior mixture's components / vamp's pseudo-inputs, unless --prior-components says


def default_options(dataset: Dataset) -> dict:
    """Per-data defaults (benchmarks/vae_numbers.py): an MLP VAE; on pixels with early stopping on a split.

    Continuous data train on the IWAE bound with k = 16 (`genlearn.vae.iwae_loss`): trained on the ELBO,
    the 2-D toys' VAE lets the decoder ignore z (posterior collapse) and lands 3.2 nats above ring8's true
    density (1.1 on moons); IWAE_16 training gives 0.33 (0.025 on moons) at the same network and steps
    (benchmarks/results/defaults_table.md). Wider nets collapse even so.

    Their prior is the VampPrior (``prior="vamp"``, Tomczak & Welling 2018) on 32 pseudo-inputs started at
    k-means++ rows of the data (about 7 % more CPU per step). With N(0, I) the decoder has to cut one connected
    Gaussian into the modes and decodes the mass between them to points between the modes (grid25: gap 2.749
    to the true density, 13 % of the samples within 3 std of a centre; an IAF posterior 2.714; a learnable
    32-component mixture prior, random means, 2.677); the VampPrior puts the prior's mass on the posteriors of
    data-like points: grid25 0.080 / 0.078 at 25/25 and 98 % (seeds 0 / 1), moons 0.007 (N(0, I) 0.025),
    circles 0.025 (0.070), pinwheel NLL 1.558 (1.573). ring8 depends on the seed with either prior (a
    broad-decoder optimum): seeds 0 / 1 / 2 give 0.034 / 2.756 / 2.789 (98 / 24 / 24 %) with the VampPrior,
    0.327 / 1.393 / 2.993 (72 / 45 / 19 %) with N(0, I). Runs saved without a ``prior`` had N(0, I).

    Since stop 37 the toys' VAE has 4 latent dimensions and warms its prior term up over the first 20 % of the
    steps (``kl_warmup``, `genlearn.train.annealed_trainer` on `genlearn.vae.annealed_loss`): ring8 seeds 0 / 1 / 2
    -> 0.105 / 0.035 / 0.046 (98.9 / 99.0 / 99.0 % high quality). Each alone fixed one bad seed only (warm-up,
    2 latents: seed 1 0.035, seed 2 1.89; 4 latents, no warm-up: seed 1 2.81, seed 2 0.045). grid25 0.076, moons
    0.015 (0.007 before), unseen circles 0.061 (0.025): the smooth toys lose a little. Runs saved without
    ``kl_warmup`` trained without one.
    """
    if dataset.discrete_levels is not None:  # the MLP beats the conv net on the digits at a tenth of the cost
        return {"steps": 3000, "batch_size": 128, "learning_rate": 1e-3, "weight_decay": 0.0, "latent_dim": 16,
                "hidden": [256, 256], "network": "mlp", "channels": [32, 64],
                "likelihood": "logistic", "mixtures": 1, "posterior": "gaussian", "flow_layers": 2, "beta": 1.0,
                "train_k": 1, "eval_samples": 1000, "val_fraction": 0.15, "eval_every": 200, "patience": 10,
                "prior": "normal", "prior_components": PRIOR_COMPONENTS, "kl_warmup": 0.0}
    return {"steps": 10_000, "batch_size": 256, "learning_rate": 1e-3, "weight_decay": 0.0, "latent_dim": 4,
            "hidden": [128, 128], "network": "mlp", "channels": [32, 64], "likelihood": "gaussian", "mixtures": 1,
            "posterior": "gaussian", "flow_layers": 2, "beta": 1.0, "train_k": 16, "eval_samples": 1000,
            "val_fraction": 0.0, "eval_every": 500, "patience": None, "prior": "vamp",
            "prior_components": PRIOR_COMPONENTS, "kl_warmup": KL_WARMUP}


def preprocess(dataset: Dataset) -> dict:
    """Pixels: the number of levels; continuous data: standardisation statistics."""
    if dataset.discrete_levels is not None:
        return {"kind": "pixels", "levels": int(dataset.discrete_levels)}
    mean, std = standardize_stats(dataset.train)
    return {"kind": "standardize", "mean": np.asarray(mean, float).tolist(), "std": np.asarray(std, float).tolist()}


def build_vae(options: dict, dim: int, pre: dict) -> VAE:
    """The :class:`~genlearn.vae.VAE` of a run (in the model's space: standardised toys, raw pixel levels)."""
    o = options
    pixels = pre["kind"] == "pixels"
    if pixels:
        levels = int(pre["levels"])
        likelihood = discretized_logistic(levels, int(o["mixtures"]))
        half = (levels - 1) / 2.0
        prep = lambda x: x / half - 1.0  # noqa: E731  levels to [-1, 1] for the encoder
    else:
        likelihood, prep = gaussian(), None
    if o["network"] == "conv":
        side = math.isqrt(dim)
        encoder = ConvEncoder((side, side, 1), tuple(o["channels"]), int(o["hidden"][-1]))
        decoder = ConvDecoder((side, side, 1), tuple(o["channels"]))
    else:
        encoder, decoder = MLPEncoder(tuple(o["hidden"])), MLPDecoder(tuple(o["hidden"]))
    flow = None
    if o["posterior"] == "iaf":
        from genlearn.vae.vae import features_dim

        flow = iaf_posterior(int(o["latent_dim"]), features_dim(encoder, dim), int(o["flow_layers"]))
    prior, pseudo = None, 0  # runs saved before the prior was an option had N(0, I)
    if o.get("prior", "normal") == "mixture":
        from genlearn.core import gaussian_mixture

        prior = gaussian_mixture(int(o["latent_dim"]), int(o["prior_components"]))
    elif o.get("prior", "normal") == "vamp":
        pseudo = int(o["prior_components"])
    return vae(dim, int(o["latent_dim"]), encoder=encoder, decoder=decoder, likelihood=likelihood, flow=flow,
               beta=float(o["beta"]), eval_samples=int(o["eval_samples"]), preprocess=prep, prior=prior,
               pseudo_inputs=pseudo)


def build(options: dict, dim: int, pre: dict) -> Model:
    """The data-space Model: IWAE_k log-density (needs a key, an estimate) and samples in data units."""
    model = build_vae(options, dim, pre)
    if pre["kind"] == "pixels":
        levels = int(pre["levels"])

        def log_prob(params, y, key):
            return model.log_prob(params, jnp.clip(jnp.floor(y), 0, levels - 1), key)

        def sample(params, key, n):
            kx, ku = jax.random.split(key)
            x = model.sample(params, kx, n)
            return x + jax.random.uniform(ku, x.shape, x.dtype)

    else:
        mean, std = jnp.asarray(pre["mean"], jnp.float32), jnp.asarray(pre["std"], jnp.float32)
        log_det = jnp.sum(jnp.log(std))

        def log_prob(params, x, key):
            return model.log_prob(params, (x - mean) / std, key) - log_det

        def sample(params, key, n):
            return model.sample(params, key, n) * std + mean

    # runs draws its figures' samples outside jit: compile the sampler once instead of dispatching op by op
    return Model(dim, lambda key, data=None: model.init(key), log_prob, jax.jit(sample, static_argnums=2),
                 log_prob_is_exact=False, log_prob_needs_key=True, log_prob_is_discrete=pre["kind"] == "pixels")


def _model_data(dataset: Dataset, pre: dict) -> np.ndarray:
    if pre["kind"] == "pixels":
        return np.asarray(dataset.train, np.float32)
    return ((np.asarray(dataset.train, np.float64) - np.asarray(pre["mean"])) / np.asarray(pre["std"])).astype(
        np.float32)


def trainer(model: Model, dataset: Dataset, options: dict, key, ctx: registry.Context) -> registry.Training:
    """Adam(W) with cosine decay and global-norm clipping on the negative ELBO (`gradient_trainer`)."""
    from genlearn.train import annealed_trainer, gradient_trainer
    from genlearn.vae.vae import annealed_loss, iwae_loss

    o = options
    pre = preprocess(dataset)
    net = build_vae(o, model.dim, pre)
    k_init, k_fit = jax.random.split(key)
    schedule = optax.cosine_decay_schedule(o["learning_rate"], max(o["steps"], 1))
    opt = optax.adamw(schedule, weight_decay=o["weight_decay"]) if o["weight_decay"] > 0 else optax.adam(schedule)
    opt = optax.chain(optax.clip_by_global_norm(10.0), opt)
    loss = net.loss if int(o.get("train_k", 1)) == 1 else iwae_loss(net, int(o["train_k"]))
    params, data = jax.jit(model.init)(k_init), _model_data(dataset, pre)
    if net.pseudo_inputs:  # the VampPrior's pseudo-inputs start at spread-out training rows
        # k-means++ seeding (`genlearn.classical.kmeans_plusplus`): 32 rows drawn uniformly miss some of grid25's 25
        if data.shape[0] < net.pseudo_inputs:
            raise ValueError(f"vae: --prior vamp needs at least --prior-components {net.pseudo_inputs} training "
                             f"rows, got {data.shape[0]}")
        rows = kmeans_plusplus(jax.random.fold_in(k_init, 1), jnp.asarray(data, params["pseudo_inputs"].dtype),
                               net.pseudo_inputs)
        params = {**params, "pseudo_inputs": rows}
    warmup = int(round(float(o.get("kl_warmup", 0.0)) * o["steps"]))  # runs saved before the option: none
    tr = annealed_trainer(annealed_loss(net, int(o.get("train_k", 1))), opt, optax.linear_schedule(0.0, 1.0, warmup)) \
        if warmup > 0 else gradient_trainer(loss, opt)
    return registry.Training(tr, params, data, k_fit,
                             o["steps"], o["batch_size"], val_fraction=o["val_fraction"], eval_every=o["eval_every"],
                             patience=o["patience"])


def _report(model: Model, params, dataset: Dataset, options: dict, history, key) -> dict:
    """Test-set ELBO, IWAE_k and their gap (nats per example of the data as given; bits/dim for pixels)."""
    pre = preprocess(dataset)
    net = build_vae(options, model.dim, pre)
    k_bounds, k_sample = jax.random.split(jax.random.fold_in(key, 15))
    test = np.asarray(dataset.test, np.float64)
    if pre["kind"] == "pixels":
        x, shift = test, 0.0
    else:
        x = (test - np.asarray(pre["mean"])) / np.asarray(pre["std"])
        shift = float(np.sum(np.log(np.asarray(pre["std"], np.float64))))
    b = bounds(net, params, jnp.asarray(x, jnp.float32), k_bounds, int(options["eval_samples"]))
    out: dict[str, Any] = {"test_elbo": b.elbo - shift, "test_iwae": b.iwae - shift, "test_bound_gap": b.gap,
                           "iwae_k": b.k}
    if pre["kind"] == "pixels":
        from genlearn.data import nats_to_bits_per_dim
        from genlearn.runs import sample_metrics

        out["test_elbo_bits_per_dim"] = float(nats_to_bits_per_dim(-b.elbo, model.dim))
        out["test_iwae_bits_per_dim"] = float(nats_to_bits_per_dim(-b.iwae, model.dim))
        out.update(sample_metrics(np.asarray(jax.jit(net.sample, static_argnums=2)(params, k_sample, 2000)), dataset))
    elif dataset.centers is not None:  # ring8, grid25: modes covered and high-quality fraction of 2000 samples
        from genlearn.runs import sample_metrics

        out.update(sample_metrics(np.asarray(model.sample(params, k_sample, 2000)), dataset))
    return out


def _check(options: dict, dataset: Dataset) -> str | None:
    pixels = dataset.discrete_levels is not None
    if options["likelihood"] == "logistic" and not pixels:
        return "vae: the discretised logistic likelihood needs pixel data (discrete levels); use --likelihood gaussian"
    if options["likelihood"] == "gaussian" and pixels:
        return "vae: pixel data takes the discretised logistic likelihood (--likelihood logistic)"
    if options["network"] == "conv":
        d = dataset.train.shape[1]
        if not pixels or math.isqrt(d) ** 2 != d or math.isqrt(d) % 2:
            return (f"vae: --network conv needs square images of even side (got {d} values per row"
                    f"{'' if pixels else ', continuous data'}); use --network mlp")
    if options["posterior"] == "iaf" and options["latent_dim"] < 2:
        return f"vae: an IAF posterior needs --latent-dim >= 2, got {options['latent_dim']}"
    if options.get("train_k", 1) > 1 and options["beta"] != 1.0:
        return (f"vae: --train-k {options['train_k']} trains on the IWAE bound, which has no KL weight; "
                f"--beta {options['beta']} needs --train-k 1")
    if options["latent_dim"] < 1:
        return f"vae: latent_dim must be >= 1, got {options['latent_dim']}"
    n_train = dataset.train.shape[0]
    n_fit = n_train - max(1, round(options["val_fraction"] * n_train)) if options["val_fraction"] > 0 else n_train
    if options["batch_size"] > n_fit:
        return f"--batch-size {options['batch_size']} exceeds the {n_fit} training rows of {dataset.name}"
    return None


FAMILY = registry.register(registry.Family(
    name="vae",
    defaults=lambda dataset, chosen: default_options(dataset),
    build=build, trainer=trainer, check=_check, preprocess=preprocess, report=_report,
    loss_label=lambda o: ("negative ELBO" if int(o.get("train_k", 1)) == 1 else f"negative IWAE-{int(o['train_k'])} bound")
    + " (nats per example)" + (f"\n(prior term warmed up over the first {float(o['kl_warmup']):.0%} of the steps)"
                               if float(o.get("kl_warmup", 0.0)) > 0 else ""),
    options=(
        registry.STEPS, registry.BATCH_SIZE, registry.LEARNING_RATE, registry.HIDDEN,
        registry.Option("--weight-decay", "weight_decay", registry.nonneg_float, "vae: AdamW weight decay"),
        registry.Option("--latent-dim", "latent_dim", registry.positive_int, "vae: latent dimension D"),
        registry.Option("--network", "network", str, "vae: encoder/decoder, mlp or conv (square images)",
                        ("mlp", "conv")),
        registry.Option("--channels", "channels", registry.widths, "vae: conv channels, e.g. 32,64"),
        registry.Option("--likelihood", "likelihood", str,
                        "vae: decoder p(x|z), gaussian (continuous) or logistic (pixels)", ("gaussian", "logistic")),
        registry.Option("--mixtures", "mixtures", registry.positive_int,
                        "vae: discretised-logistic mixture components per pixel"),
        registry.Option("--posterior", "posterior", str, "vae: q(z|x), gaussian or iaf (Gaussian + IAF flow)",
                        ("gaussian", "iaf")),
        registry.Option("--flow-layers", "flow_layers", registry.positive_int, "vae: IAF layers of the posterior"),
        registry.Option("--beta", "beta", registry.nonneg_float, "vae: KL weight (beta-VAE; 1 = the ELBO)"),
        registry.Option("--prior", "prior", str, "vae: p(z), normal (N(0, I)), mixture (a learnable mixture of "
                        "diagonal Gaussians, genlearn.core.gaussian_mixture) or vamp (the VampPrior, Tomczak & "
                        "Welling 2018: the posteriors' mixture at learnable pseudo-inputs)",
                        ("normal", "mixture", "vamp")),
        registry.Option("--prior-components", "prior_components", registry.positive_int,
                        "vae: components of --prior mixture / pseudo-inputs of --prior vamp"),
        registry.Option("--kl-warmup", "kl_warmup", registry.fraction,
                        "vae: the prior term's weight rises from 0 to 1 over this fraction of the steps (KL annealing; "
                        "0 = none)"),
        registry.Option("--train-k", "train_k", registry.positive_int,
                        "vae: train on the IWAE bound with k samples (1 = the ELBO; Burda et al. 2016)"),
        registry.Option("--eval-samples", "eval_samples", registry.positive_int,
                        "vae: k of the IWAE bound reported as the log-likelihood (default 1000)"),
        registry.Option("--val-fraction", "val_fraction", registry.fraction, "validation split for early stopping"),
        registry.Option("--patience", "patience", registry.positive_int,
                        "evaluations without improvement before stopping"),
        registry.Option("--eval-every", "eval_every", registry.positive_int, "steps between validation evaluations"),
        registry.RESUME,
    ),
))
