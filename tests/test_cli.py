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
    capsys.readouterr()
    assert main(["eval", "--run", moons_run]) == 0
    printed = capsys.readouterr().out
    assert "test_nll" in printed
    metrics = json.load(open(os.path.join(moons_run, "metrics.json")))
    evaluated = json.load(open(os.path.join(moons_run, "eval.json")))
    np.testing.assert_allclose(evaluated["test_nll"], metrics["test_nll"], rtol=1e-5)


def test_digits_reports_bits_per_dim(tmp_path):
    out = str(tmp_path / "digits")
    assert main(["fit", "nice", "--data", "digits", "--out", out, *SMALL]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert 0 < metrics["test_bits_per_dim"] < 8
    np.testing.assert_allclose(metrics["test_bits_per_dim"], metrics["test_nll"] / (64 * np.log(2)), rtol=1e-6)
    assert os.path.exists(os.path.join(out, "samples.png"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "glowworm", "--data", "moons"], "unknown model 'glowworm'"),
        (["fit", "realnvp", "--data", "mnist"], "unknown dataset 'mnist'"),
        (["fit", "realnvp", "--steps", "-3"], "--steps: must be >= 0"),
        (["fit", "realnvp", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["fit", "realnvp", "--batch-size", "100000", "--steps", "1"], "exceeds the 18000 training rows"),
        (["fit", "realnvp", "--hidden", "a,b"], "comma-separated widths"),
        (["fit", "realnvp", "--lr", "-1"], "--lr: must be a finite number > 0"),
        (["sample", "-n", "3", "--out", "x.npy"], "--run"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


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
