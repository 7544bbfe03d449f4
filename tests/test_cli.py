"""The command line: outputs of fit/sample/eval, and clean failures on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from genlearn.cli import main

SMALL = ["--steps", "200", "--layers", "2", "--hidden", "16,16", "--eval-every", "100", "--no-progress"]


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "moons")
    assert main(["fit", "realnvp", "--data", "moons", "--out", out, *SMALL]) == 0
    return out


def test_fit_writes_the_run(moons_run):
    for name in ("config.json", "metrics.json", "samples.png", "density.png", "loss.png", "model"):
        assert os.path.exists(os.path.join(moons_run, name)), name
    metrics = json.load(open(os.path.join(moons_run, "metrics.json")))
    for key in ("train_nll", "test_nll", "test_nll_standardized"):
        assert np.isfinite(metrics[key])
    # data-space NLL = standardised NLL + sum(log std)
    std = json.load(open(os.path.join(moons_run, "config.json")))["preprocess"]["std"]
    np.testing.assert_allclose(metrics["test_nll"] - metrics["test_nll_standardized"], np.log(std).sum(), rtol=1e-6)


def test_sample_and_eval(moons_run, tmp_path, capsys):
    out = str(tmp_path / "s.npy")
    assert main(["sample", "--run", moons_run, "-n", "37", "--out", out]) == 0
    x = np.load(out)
    assert x.shape == (37, 2) and np.all(np.isfinite(x))
    fitted = json.load(open(os.path.join(moons_run, "metrics.json")))
    capsys.readouterr()
    assert main(["eval", "--run", moons_run, "--num-samples", "300"]) == 0
    printed = capsys.readouterr().out
    for key in ("test_nll", "w2_exact", "frechet_distance", "mmd2_unbiased", "precision", "coverage"):
        assert key in printed, key
    merged = json.load(open(os.path.join(moons_run, "metrics.json")))
    np.testing.assert_allclose(merged["test_nll"], fitted["test_nll"], rtol=1e-5)
    assert merged["train_nll"] == fitted["train_nll"]  # eval adds to the fit's metrics
    assert merged["num_samples"] == 300 and merged["num_reference"] == 5000
    assert "modes_covered" not in merged  # moons has no known modes


def test_digits_reports_bits_per_dim(tmp_path):
    out = str(tmp_path / "digits")
    assert main(["fit", "nice", "--data", "digits", "--out", out, *SMALL]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert 0 < metrics["test_bits_per_dim"] < 8
    np.testing.assert_allclose(metrics["test_bits_per_dim"], metrics["test_nll"] / (64 * np.log(2)), rtol=1e-6)
    assert os.path.exists(os.path.join(out, "samples.png"))


def assert_sample_and_eval_reload(out, tmp_path, capsys, metrics, n, num_samples):
    """`genlearn sample` reloads a run's params; `genlearn eval` recomputes the same test NLL from them."""
    assert main(["sample", "--run", out, "-n", str(n), "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (n, 2)
    capsys.readouterr()
    assert main(["eval", "--run", out, "--num-samples", str(num_samples)]) == 0
    merged = json.load(open(os.path.join(out, "metrics.json")))
    np.testing.assert_allclose(merged["test_nll"], metrics["test_nll"], rtol=1e-5)
    assert "w2_exact" in merged


# one run path (genlearn.runs.fit) for all three; histogram and kde are slow-marked
@pytest.mark.parametrize("model", [pytest.param("histogram", marks=pytest.mark.slow),
                                   pytest.param("kde", marks=pytest.mark.slow),
                                   pytest.param("gmm", marks=pytest.mark.optimized)])  # 29.3 -> 20.1 s optimised
def test_fit_classical_writes_the_same_outputs(model, tmp_path, capsys):
    out = str(tmp_path / model)
    extra = {"histogram": ["--bins", "30"], "kde": ["--bandwidth", "silverman"], "gmm": ["--components", "4"]}
    assert main(["fit", model, "--data", "moons", "--out", out, *extra[model]]) == 0
    for name in ("config.json", "metrics.json", "samples.png", "density.png", "model"):
        assert os.path.exists(os.path.join(out, name)), name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["family"] == model
    # better than the best Gaussian (standardised moons: 2.84 nats), worse than impossible
    assert 0.5 < metrics["test_nll_standardized"] < 2.6, metrics
    # sample reloads the saved params; eval recomputes the same test NLL from them
    assert_sample_and_eval_reload(out, tmp_path, capsys, metrics, n=50, num_samples=300)


def test_fit_ebm_writes_samples_density_and_ais_nll(tmp_path, capsys):
    out = str(tmp_path / "ebm")
    tiny = ["--steps", "20", "--hidden", "16,16", "--batch-size", "64", "--mcmc-steps", "2", "--ais-chains", "64",
            "--ais-temperatures", "20", "--sample-steps", "5", "--no-progress"]
    assert main(["fit", "ebm", "--data", "ring8", "--out", out, *tiny]) == 0
    for name in ("config.json", "metrics.json", "samples.png", "density.png", "model"):
        assert os.path.exists(os.path.join(out, name)), name
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["family"] == "ebm" and cfg["data"] == "ring8" and cfg["dim"] == 2
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert np.isfinite(metrics["test_nll"]) and metrics["test_nll_stderr"] > 0
    assert main(["sample", "--run", out, "-n", "30", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (30, 2) and np.all(np.isfinite(x))
    capsys.readouterr()
    assert main(["fit", "ebm", "--data", "ring8", "--layers", "3", "--out", out]) == 2
    assert "ebm does not take --layers" in capsys.readouterr().err
    assert main(["fit", "ebm", "--data", "digits", "--out", str(tmp_path / "d"), *tiny]) == 1
    assert "continuous data only" in capsys.readouterr().err


def test_classical_histogram_on_digits_fails_clearly(tmp_path, capsys):
    assert main(["fit", "histogram", "--data", "digits", "--out", str(tmp_path / "h")]) == 1
    assert "curse of dimensionality" in capsys.readouterr().err


def test_eval_samples_reference_and_modes(tmp_path, capsys):
    from genlearn.data import load_dataset
    from genlearn.metrics import evaluate

    import jax

    ring = load_dataset("ring8")
    fake, real = ring.test[:200], ring.test[200:400]
    np.save(tmp_path / "fake.npy", fake)
    np.save(tmp_path / "real.npy", real)
    out = str(tmp_path / "m.json")
    assert main(["eval", "--samples", str(tmp_path / "fake.npy"), "--reference", str(tmp_path / "real.npy"),
                 "--out", out, "--seed", "3"]) == 0
    written = json.load(open(out))
    direct = evaluate(fake, real, key=jax.random.PRNGKey(3))
    assert written.keys() == direct.keys()
    np.testing.assert_allclose([written[k] for k in direct], [direct[k] for k in direct], rtol=1e-6)
    # a run on data with known modes gets the mode-collapse metrics
    run = str(tmp_path / "gmm-ring")
    assert main(["fit", "gmm", "--data", "ring8", "--out", run, "--components", "8"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", run, "--num-samples", "200"]) == 0
    merged = json.load(open(os.path.join(run, "metrics.json")))
    assert merged["num_modes"] == 8 and 0 <= merged["modes_covered"] <= 8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "glowworm", "--data", "moons"], "unknown model 'glowworm'"),
        (["fit", "realnvp", "--data", "mnist"], "unknown dataset 'mnist'"),
        (["fit", "realnvp", "--steps", "-3"], "--steps: must be >= 0"),
        (["fit", "realnvp", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["fit", "realnvp", "--hidden", "a,b"], "comma-separated widths"),
        (["fit", "realnvp", "--lr", "-1"], "--lr: must be a finite number > 0"),
        (["sample", "-n", "3", "--out", "x.npy"], "--run"),
        (["fit", "kde", "--bandwidth", "-1"], "--bandwidth: must be a finite number > 0"),
        (["fit", "gmm", "--components", "0"], "--components: must be >= 1"),
        (["eval", "--samples", "a.npy"], "--samples needs --reference"),
        (["eval"], "one of the arguments --run --samples is required"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_classical_option_mismatch_and_bad_sample_files(tmp_path, capsys):
    assert main(["fit", "kde", "--data", "moons", "--bins", "3", "--out", str(tmp_path / "k")]) == 2
    assert "kde does not take --bins" in capsys.readouterr().err
    assert main(["fit", "kde", "--data", "moons", "--covariance", "tied", "--out", str(tmp_path / "k")]) == 2
    assert "kde: --covariance must be isotropic or full, got tied" in capsys.readouterr().err
    assert main(["fit", "realnvp", "--batch-size", "100000", "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    assert "exceeds the 18000 training rows" in capsys.readouterr().err
    assert main(["fit", "spline", "--num-bins", "1", "--steps", "1", "--out", str(tmp_path / "s")]) == 2
    assert "spline: --num-bins must be >= 2, got 1" in capsys.readouterr().err
    assert main(["fit", "realnvp", "--num-bins", "4", "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    assert "realnvp does not take --num-bins" in capsys.readouterr().err
    np.save(tmp_path / "flat.npy", np.zeros(5))
    np.save(tmp_path / "ok.npy", np.zeros((5, 2)))
    assert main(["eval", "--samples", str(tmp_path / "flat.npy"), "--reference", str(tmp_path / "ok.npy")]) == 2
    assert "expected an (n, d) array" in capsys.readouterr().err
    assert main(["eval", "--samples", str(tmp_path / "missing.npy"), "--reference", str(tmp_path / "ok.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    np.save(tmp_path / "three.npy", np.zeros((5, 3)))
    assert main(["eval", "--samples", str(tmp_path / "three.npy"), "--reference", str(tmp_path / "ok.npy")]) == 2
    assert "dim" in capsys.readouterr().err


def test_missing_and_corrupt_runs(tmp_path, moons_run, capsys):
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--run", str(tmp_path / "empty")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "config.json").write_text("{")
    assert main(["sample", "--run", str(bad), "--out", str(tmp_path / "a.npy")]) == 2
    assert "corrupt" in capsys.readouterr().err
    # a run whose saved model files were damaged
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(moons_run, broken)
    for root, _, files in os.walk(broken / "model" / "tree"):
        for f in files:
            open(os.path.join(root, f), "wb").close()
    assert main(["eval", "--run", str(broken)]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genlearn.cli", "fit", "realnvp", "--data", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown dataset" in proc.stderr and "Traceback" not in proc.stderr


def test_fit_gan_writes_the_run_and_rejects_bad_options(tmp_path, capsys):
    out = str(tmp_path / "mmd-ring8")
    assert main(["fit", "gan", "--loss", "mmd", "--data", "ring8", "--steps", "200", "--hidden", "16,16",
                 "--base", "normal", "--latent-dim", "3", "--out", out, "--no-progress"]) == 0
    for name in ("config.json", "metrics.json", "samples.png", "loss.png", "model"):
        assert os.path.exists(os.path.join(out, name)), name
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["family"] == "gan" and cfg["options"]["loss"] == "mmd" and cfg["options"]["hidden"] == [16, 16]
    assert cfg["options"]["base"] == "normal" and cfg["options"]["latent_dim"] == 3
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["num_modes"] == 8 and {"modes_covered", "high_quality_fraction", "mode_kl"} <= metrics.keys()
    assert main(["sample", "--run", out, "-n", "20", "--out", str(tmp_path / "g.npy")]) == 0
    assert np.load(tmp_path / "g.npy").shape == (20, 2)
    capsys.readouterr()
    assert main(["fit", "gan", "--loss", "vae", "--out", str(tmp_path / "v")]) == 2
    assert "unknown GAN loss 'vae'" in capsys.readouterr().err
    assert main(["fit", "gan", "--layers", "3", "--out", str(tmp_path / "v")]) == 2
    assert "gan does not take --layers" in capsys.readouterr().err
    assert main(["fit", "realnvp", "--loss", "ns"]) == 2
    assert "realnvp does not take --loss (--loss: only for 'fit gan')" in capsys.readouterr().err
    assert main(["fit", "realnvp", "--base", "uniform"]) == 2  # flows take --base, with their own choices
    assert ("realnvp: --base must be normal, student_t, logistic, diag_gaussian or mixture, got uniform"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["fit", "gan", "--base", "cauchy"])
    assert "invalid choice: 'cauchy'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "gan", "--critic-steps", "0"])
    assert "--critic-steps: must be >= 1" in capsys.readouterr().err


# every flow goes through one run path (genlearn.runs.fit + the flows' trainer): iaf and spline share it with
# maf (MADE) and glow (couplings), and the CNF's trainer is run and resumed in tests/test_registry_training.py
@pytest.mark.parametrize("model", ["maf", pytest.param("iaf", marks=pytest.mark.slow),
                                   pytest.param("spline", marks=pytest.mark.slow), "glow",
                                   pytest.param("cnf", marks=pytest.mark.slow)])
def test_fit_and_sample_every_flows_ii_model(model, tmp_path):
    """Flows II (#3): each family trains from the CLI, saves, and reloads from config.json alone
    (glow through its data-dependent ActNorm initialisation, cnf through diffrax)."""
    out = str(tmp_path / model)
    tiny = ["--steps", "4", "--layers", "1", "--hidden", "8,8", "--eval-every", "2", "--no-progress"]
    assert main(["fit", model, "--data", "moons", "--out", out, *tiny]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["family"] == model and cfg["options"]["hidden"] == [8, 8]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert np.isfinite(metrics["test_nll"]) and metrics["steps"] == 4
    assert main(["sample", "--run", out, "-n", "16", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (16, 2)


def test_fit_help_renders_and_names_what_each_gan_loss_needs():
    # argparse %-formats every help string: a bare "%" in an option's help breaks `genlearn fit --help`
    from genlearn.cli import build_parser

    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    text = " ".join(fit.format_help().split())
    assert "90 % high-quality" in text
    assert "ns and js need --r1-weight 0.1 --ema-decay 0.999" in text and "--steps 60000" in text
    assert "hinge and sn with those flags and --critic-steps 1 --lr-critic 1e-3" in text and "collapse" in text


def test_cnf_trains_by_flow_matching_by_default_and_by_maximum_likelihood_on_request(tmp_path, capsys):
    """`genlearn fit cnf` trains by flow matching (no ODE solve per step) unless --objective mle; the run
    records the objective, its loss.png says which loss, and the flow-matching CNF's exact likelihood learns
    moons: 1500 steps of a 2x64 field reach 1.17 standardised nats here, as 6000 do (the best Gaussian: 2.84)."""
    from genlearn import registry
    from genlearn.data import load_dataset
    from genlearn.runs import fit

    # the learning check through the run layer without figures (the CLI draws densities by ODE solves)
    _, cfg, metrics = fit("cnf", load_dataset("moons", n_test=1000), {"hidden": [64, 64], "learning_rate": 3e-3},
                          steps=1500, progress=False)
    assert cfg["options"]["objective"] == "flow-matching" and cfg["options"]["activation"] == "silu"
    # on 2-D data from a mixture base fitted to the data, each row paired with a draw from its component
    assert cfg["options"]["base"] == "mixture" and cfg["options"]["coupling"] == "component"
    assert metrics["test_nll_standardized"] < 1.8, metrics["test_nll_standardized"]
    label = registry.get("cnf").loss_label
    assert label(cfg["options"]) == "flow-matching loss (flow space)"
    # --objective mle: the options `genlearn fit` resolves before it trains, then a 3-step maximum-likelihood
    # run through the run layer on a small split (the CLI's figures of an ODE-solved density cost ~10 s more)
    from genlearn.runs import resolve_options

    small = load_dataset("moons", n_train=512, n_test=64)
    opts = resolve_options(registry.get("cnf"), small, {"objective": "mle", "hidden": [8]})
    assert opts["objective"] == "mle" and opts["activation"] == "tanh" and label(opts) == "NLL (nats per example)"
    _, cfg, metrics = fit("cnf", small, {"objective": "mle", "hidden": [8]}, steps=3, progress=False)
    assert cfg["options"]["objective"] == "mle" and cfg["options"]["activation"] == "tanh"
    assert np.isfinite(metrics["test_nll_standardized"])
    for bad, message in ((["--layers", "2"], "trains one ODE block"),
                         (["--base", "normal", "--coupling", "component"], "needs --base mixture"),
                         (["--objective", "mle", "--coupling", "ot"], "needs --objective flow-matching")):
        assert main(["fit", "cnf", "--data", "moons", "--steps", "3", *bad, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
