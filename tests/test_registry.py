"""The run registry: a new family is one module + one register() call, and every family fills the Model protocol."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn import registry, runs
from genlearn.cli import main
from genlearn.core import Model
from genlearn.data import load_dataset
from tests.test_cli import assert_sample_and_eval_reload


# -- a new family, written the way docs/ARCHITECTURE.md describes: no edit of cli.py, compare.py or runs.py --
def _diag_gaussian(options, dim, preprocess):
    def init(key, data=None):
        return {"mean": jnp.zeros(dim), "log_std": jnp.zeros(dim)}

    def log_prob(params, x):
        z = (x - params["mean"]) * jnp.exp(-params["log_std"])
        return -0.5 * jnp.sum(z**2, 1) - jnp.sum(params["log_std"]) - 0.5 * dim * jnp.log(2 * jnp.pi)

    def sample(params, key, n):
        return params["mean"] + jnp.exp(params["log_std"]) * jax.random.normal(key, (n, dim))

    return Model(dim, init, log_prob, sample)


def _mle_trainer(model, dataset, options, key, ctx):
    from genlearn.losses import nll
    from genlearn.train import gradient_trainer

    k_init, k_fit = jax.random.split(key)
    return registry.Training(gradient_trainer(nll(model), optax.adam(options["learning_rate"])),
                             model.init(k_init), dataset.train, k_fit, options["steps"], 256, eval_every=20)


DIAG_GAUSSIAN = registry.Family(
    name="diaggauss",
    defaults=lambda dataset, chosen: {"steps": 400, "learning_rate": 0.05},
    build=_diag_gaussian,
    trainer=_mle_trainer,
    options=(registry.Option("--steps", "steps", registry.nonneg_int, "training steps"),
             registry.Option("--lr", "learning_rate", registry.positive_float, "Adam learning rate")),
    # a family's own PNG beside the common ones
    figures=lambda out, model, params, dataset, options, key: open(os.path.join(out, "extra.png"), "wb").close(),
)


@pytest.fixture
def diaggauss():
    registry.register(DIAG_GAUSSIAN)
    yield DIAG_GAUSSIAN
    registry.unregister("diaggauss")


@pytest.mark.optimized  # measured (tests/conftest.py): 34.6 -> 15.1 s at XLA's default optimisation
def test_a_new_family_goes_through_fit_sample_eval_and_compare(diaggauss, tmp_path, capsys):
    out = str(tmp_path / "dg")
    assert main(["fit", "diaggauss", "--data", "moons", "--out", out, "--no-progress"]) == 0
    for name in ("config.json", "metrics.json", "samples.png", "density.png", "loss.png", "model", "extra.png"):
        assert os.path.exists(os.path.join(out, name)), name
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["family"] == "diaggauss" and cfg["options"] == {"steps": 400, "learning_rate": 0.05}
    # it learns: the held-out NLL of the best diagonal Gaussian (the training data's moments)
    ds = load_dataset("moons")
    mean, std = ds.train.mean(0), ds.train.std(0)
    best = float(np.mean(0.5 * np.sum(((ds.test - mean) / std) ** 2, 1) + np.sum(np.log(std)) + np.log(2 * np.pi)))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert abs(metrics["test_nll"] - best) < 0.02, (metrics["test_nll"], best)
    assert metrics["steps"] == 400 and np.isfinite(metrics["test_nll_standardized"])

    assert_sample_and_eval_reload(out, tmp_path, capsys, metrics, n=40, num_samples=200)

    cmp_out = str(tmp_path / "cmp")
    assert main(["compare", "--data", "moons", "--models", "diaggauss", "--budget", "300", "--out", cmp_out,
                 "--num-samples", "200", "--no-progress"]) == 0
    board = json.load(open(os.path.join(cmp_out, "leaderboard.json")))
    (row,) = board["rows"]
    assert row["model"] == "diaggauss" and row["status"] == "ok"
    assert json.load(open(os.path.join(cmp_out, "runs", "diaggauss", "metrics.json")))["steps"] == 300
    assert abs(row["test_nll"] - best) < 0.05
    # bad flags name the problem
    assert main(["fit", "diaggauss", "--layers", "2", "--out", str(tmp_path / "x")]) == 2
    assert "diaggauss does not take --layers" in capsys.readouterr().err


def test_register_validates_and_unknown_names_are_clear():
    with pytest.raises(TypeError):
        registry.register({"name": "x"})
    with pytest.raises(ValueError, match="option flag"):
        registry.register(DIAG_GAUSSIAN._replace(name="bad", options=(registry.Option("steps", "steps", int, ""),)))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="realnvp does not take the option"):
        runs.fit("realnvp", load_dataset("moons", n_train=300, n_test=100), {"bins": 3})


def test_old_and_foreign_run_directories_are_rejected(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"model": "realnvp", "dim": 2, "train": {}, "preprocess": {}}))
    with pytest.raises(runs.RunError, match="older genlearn"):
        runs.load(str(old))


BUILTINS = ["realnvp", "nice", "maf", "iaf", "spline", "glow", "cnf", "histogram", "kde", "gmm", "ebm", "gan",
            "vae", "diffusion"]
ESTIMATED = {"ebm", "vae"}  # log_prob an estimate: AIS log Z; the IWAE-k bound
NEEDS_KEY = {"vae"}  # log_prob(params, x, key)
SMALL = {"num_layers": 1, "hidden": [8, 8], "sample_steps": 2, "sample_nfe": 4, "latent_dim": 2, "num_components": 2,
         "n_init": 1, "bins": 5, "bandwidth": "scott", "critic_hidden": [8, 8]}


def test_every_cli_model_is_registered():
    assert set(BUILTINS) <= set(registry.names())


@pytest.mark.parametrize("name", BUILTINS)
def test_every_family_fills_the_model_protocol(name, tmp_path):
    from genlearn.train import load_pytree, save_pytree

    family = registry.get(name)
    ds = load_dataset("ring8", n_train=400, n_test=100)
    defaults = family.defaults(ds, {})
    options = runs.resolve_options(family, ds, {k: v for k, v in SMALL.items() if k in defaults})
    pre = family.preprocess(ds) if family.preprocess else {"kind": "none"}
    json.dumps({"options": options, "preprocess": pre})  # config.json material
    model = family.build(options, 2, pre)
    assert isinstance(model, Model) and model.dim == 2
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(ds.train))
    x = model.sample(params, jax.random.PRNGKey(1), 7)
    assert x.shape == (7, 2) and bool(jnp.all(jnp.isfinite(x)))
    if model.log_prob is None:
        assert name == "gan"
    else:
        args = (jax.random.PRNGKey(2),) if model.log_prob_needs_key else ()
        lp = model.log_prob(params, jnp.asarray(ds.test[:5]), *args)
        assert lp.shape == (5,)
        assert model.log_prob_is_exact == (name not in ESTIMATED)
        assert model.log_prob_needs_key == (name in NEEDS_KEY)  # the built-in runs keep log Z with an EBM's params
    # the params survive the run directory's save/load (runs.load restores tuples)
    save_pytree(str(tmp_path / "m"), params, metadata={})
    back = runs._tuples(load_pytree(str(tmp_path / "m"))[0])
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)


def test_from_energy_without_log_z_estimates_it_by_ais():
    from genlearn.core import from_energy
    from genlearn.energy import from_function

    energy = from_function(lambda p, x: 0.5 * jnp.sum(x**2), 2)  # a standard normal, Z = 2 pi
    model = from_energy(energy, lambda p, key, n: jax.random.normal(key, (n, 2)), num_chains=200,
                        num_temperatures=50)
    assert model.log_prob_needs_key and not model.log_prob_is_exact
    x = jax.random.normal(jax.random.PRNGKey(1), (500, 2))  # the AIS base is a Gaussian fitted to x
    lp = model.log_prob({}, x, jax.random.PRNGKey(0))
    np.testing.assert_allclose(lp, -0.5 * jnp.sum(x**2, 1) - jnp.log(2 * jnp.pi), atol=0.05)


def test_cli_and_compare_do_not_import_each_other():
    # one fresh interpreter (jax imported once); genlearn's modules are dropped from sys.modules before each check
    code = "\n".join(["import importlib, sys", "import jax, flax, optax"] + [
        f"[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('genlearn')]\n"
        f"importlib.import_module({first!r}); assert {other!r} not in sys.modules, ({first!r}, sorted(sys.modules))"
        for first, other in (("genlearn.compare", "genlearn.cli"), ("genlearn.cli", "genlearn.compare"),
                             ("genlearn.runs", "genlearn.cli"), ("genlearn.registry", "genlearn.compare"))])
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_evaluate_nll_is_the_mean_log_density_in_one_program_for_every_set_size(caplog):
    """`runs.evaluate_nll` (fit's and eval's held-out NLL, the density grid, a loaded run's log_prob) cuts rows
    into padded chunks of one size: its mean equals the model's own log-density's at every set size, sets
    over 512 rows share one compiled program, and a NaN among the rows is still refused."""
    import logging

    from genlearn.core import from_flow
    from genlearn.runs import evaluate_nll

    from genlearn import flows

    model = from_flow(flows.realnvp(2, num_layers=2, hidden=(8,)))
    params = model.init(jax.random.PRNGKey(0))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2600, 2)), np.float32)
    want = -np.asarray(model.log_prob(params, jnp.asarray(x)), np.float64)
    compiled = []
    for n in (1, 63, 700, 1024, 1500, 2600):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
            got = evaluate_nll(model, params, x[:n], levels=None, key=jax.random.PRNGKey(2))
        compiled.append(sum(r.getMessage().startswith("Compiling jit(log_prob)") for r in caplog.records))
        np.testing.assert_allclose(got["nll"], want[:n].mean(), rtol=1e-6)
        assert got["zero_density"] == 0
    # 1 and 63 rows: one program of 64 rows; 700 to 2600 rows: one of 1024
    assert compiled == [1, 0, 1, 0, 0, 0], compiled
    bad = x[:1500].copy()
    bad[1200, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_nll(model, params, bad, levels=None, key=jax.random.PRNGKey(2))
