"""Every registered family trains through the one driver, and resumes from its checkpoints bit for bit.

Parametrized over the registry: each family's ``trainer`` (MLE for the flows,
PCD for the EBM, the min-max update or weak-loss generator for the GAN, ...)
runs a few steps of `genlearn.train.run_trainer` uninterrupted, and again
stopped half way and resumed from its orbax checkpoint; both must agree to the
bit. A family registered by a test (tests/test_registry.py's diagonal
Gaussian) survives a SIGKILL of `genlearn.runs.fit` the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import registry, runs
from genlearn.data import load_dataset
from genlearn.train import run_trainer
from tests.test_registry import DIAG_GAUSSIAN, SMALL
from tests.test_train import tree_equal

CLOSED_FORM = {"histogram", "kde", "gmm"}  # fitted by Model.init (EM / closed form): no trainer
STEPS, EVERY = 6, 2


def _tiny_training(name):
    family = registry.get(name)
    ds = load_dataset("ring8", n_train=400, n_test=100)
    defaults = family.defaults(ds, {})
    small = {**SMALL, "steps": STEPS, "batch_size": 32, "buffer_size": 64, "k": 2, "rtol": 0.1, "atol": 0.1}
    options = runs.resolve_options(family, ds, {k: v for k, v in small.items() if k in defaults})
    pre = family.preprocess(ds) if family.preprocess else {"kind": "none"}
    model = family.build(options, 2, pre)
    return family.trainer(model, ds, options, jax.random.PRNGKey(0), registry.Context(progress=False))


def test_only_closed_form_estimators_have_no_trainer():
    assert {n for n in registry.names() if registry.get(n).trainer is None} == CLOSED_FORM


# nice, maf and iaf train through the same flows trainer as realnvp, spline and glow: `pytest -m slow`
_SAME_TRAINER = {"nice", "maf", "iaf"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SAME_TRAINER else n
                                  for n in registry.names() if n not in CLOSED_FORM])
def test_every_family_trains_through_the_driver_and_resumes_bit_identically(name, tmp_path):
    t = _tiny_training(name)

    def drive(steps, directory, resume=False, params=t.params):
        return run_trainer(t.trainer, params, t.data, steps=steps, batch_size=t.batch_size, key=t.key,
                           val_fraction=t.val_fraction, eval_every=EVERY, checkpoint_dir=str(directory),
                           checkpoint_every=EVERY, resume=resume, max_nonfinite=t.max_nonfinite, progress=False)

    full = drive(STEPS, tmp_path / "full")
    assert full.step == STEPS and full.stop_reason == "steps"
    assert np.all(np.isfinite(full.history["train_loss"]))
    # the run as if killed after step STEPS - EVERY: its checkpoints without the last one
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / str(STEPS))
    assert sorted(int(p) for p in os.listdir(tmp_path / "cut") if p.isdigit())[-1] == STEPS - EVERY
    # other initial params: a run that restarted instead of resuming could not match
    other = jax.tree_util.tree_map(lambda p: p + 0.5 if jnp.issubdtype(p.dtype, jnp.floating) else p, t.params)
    resumed = drive(STEPS, tmp_path / "cut", resume=True, params=other)
    tree_equal(resumed.state, full.state)
    tree_equal(resumed.params, full.params)
    np.testing.assert_array_equal(resumed.history["train_loss"], full.history["train_loss"])
    if t.finish is None and t.params is not None:  # the saved model is the driver's params
        assert jax.tree_util.tree_structure(full.params) == jax.tree_util.tree_structure(t.params)


WORKER = textwrap.dedent(r'''
    import sys
    sys.path.insert(0, sys.argv[2])
    from genlearn import registry, runs
    from genlearn.data import load_dataset
    from tests.test_registry import DIAG_GAUSSIAN

    registry.register(DIAG_GAUSSIAN)
    print("started", flush=True)
    runs.fit("diaggauss", load_dataset("moons", n_train=2000, n_test=200), {"steps": int(sys.argv[3])},
             out=sys.argv[1], progress=False)
    print("finished", flush=True)
''')


@pytest.fixture
def diaggauss():
    registry.register(DIAG_GAUSSIAN)
    yield
    registry.unregister("diaggauss")


def test_a_new_family_survives_sigkill_and_resumes_bit_identically(diaggauss, tmp_path):
    steps, root = 600, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ds = load_dataset("moons", n_train=2000, n_test=200)
    whole, _, whole_metrics = runs.fit("diaggauss", ds, {"steps": steps}, out=str(tmp_path / "whole"),
                                       progress=False)

    out = str(tmp_path / "killed")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen([sys.executable, str(script), out, root, str(steps)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    ckpt = os.path.join(out, "checkpoints")
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            saved = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
            if saved and max(saved) >= 60:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the worker ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())
    assert saved and max(saved) < steps, saved  # killed mid-run, with checkpoints on disk
    assert not os.path.exists(os.path.join(out, "metrics.json"))

    resumed, _, metrics = runs.fit("diaggauss", ds, {"steps": steps}, out=out, progress=False, resume=True)
    tree_equal(resumed, whole)
    assert metrics["test_nll"] == whole_metrics["test_nll"] and metrics["steps"] == steps
    assert json.load(open(os.path.join(out, "config.json")))["family"] == "diaggauss"
