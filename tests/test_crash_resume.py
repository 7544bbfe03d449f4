"""Crash-safe training: SIGKILL at a random step, resume, and checkpoint errors.

A subprocess trains a small RealNVP flow with `fit(..., checkpoint_dir=...)`;
this process kills it with SIGKILL once a randomly chosen checkpoint step has
been written (plus a random delay, so the kill may land inside the next save),
resumes with ``resume=True`` and requires the final params, optimiser state and
history to equal an uninterrupted run bit for bit (CPU). The seed of the random
choice is printed on failure (set ``GENLEARN_CRASH_SEED`` to replay it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn.flows import realnvp
from genlearn.losses import nll
from genlearn.train import CheckpointError, CheckpointMismatchError, fit
from tests.test_train import tree_equal

STEPS, EVERY, KEEP = 32, 4, 2

WORKER = textwrap.dedent(r'''
    import sys
    import jax, numpy as np, optax
    from genlearn.flows import realnvp
    from genlearn.losses import nll
    from genlearn.train import fit

    directory, steps, every, keep = sys.argv[1], *map(int, sys.argv[2:5])
    flow = realnvp(2, num_layers=2, hidden=(8,))
    data = np.asarray(jax.random.normal(jax.random.key(1), (160, 2))) * [1.0, 0.3]
    print("started", flush=True)
    fit(nll(flow), flow.init(jax.random.key(0)), data.astype(np.float32),
        optimizer=optax.adam(1e-2), steps=steps, batch_size=16, key=jax.random.key(2),
        val_fraction=0.1, eval_every=every, checkpoint_dir=directory,
        checkpoint_every=every, keep_checkpoints=keep, progress=False)
    print("finished", flush=True)
''')


def flow_problem():
    flow = realnvp(2, num_layers=2, hidden=(8,))
    data = np.asarray(jax.random.normal(jax.random.key(1), (160, 2))) * [1.0, 0.3]
    return nll(flow), flow.init(jax.random.key(0)), data.astype(np.float32)


FIT_KWARGS = dict(optimizer=optax.adam(1e-2), batch_size=16, key=jax.random.key(2),
                  val_fraction=0.1, eval_every=EVERY, progress=False)


def step_dirs(directory):
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def kill_at_random_step(directory, seed, max_delay=0.3):
    """Start the worker and SIGKILL it after a random checkpoint; return that step."""
    rng = random.Random(seed)
    target = rng.randrange(EVERY, STEPS - 2 * EVERY, EVERY)
    delay = rng.uniform(0.0, max_delay)
    script = os.path.join(os.path.dirname(directory), "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    proc = subprocess.Popen(
        [sys.executable, script, directory, str(STEPS), str(EVERY), str(KEEP)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    deadline = time.monotonic() + 240
    try:
        while not any(s >= target for s in step_dirs(directory)):
            assert proc.poll() is None, (
                f"worker exited before step {target} (seed {seed}): {proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, f"no checkpoint {target} in time (seed {seed})"
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return target, proc.returncode, out


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    seed = int(os.environ.get("GENLEARN_CRASH_SEED", random.SystemRandom().randrange(2**31)))
    # the worker's last steps and saves can take less than the random delay (a clean-clone run, seed 1680387774:
    # it printed "finished" before the kill); then the draw is repeated with another seed and a shorter delay
    for attempt in range(3):
        seed += attempt > 0
        directory = str(tmp_path / f"ck{attempt}")
        target, code, out = kill_at_random_step(directory, seed, max_delay=0.3 / 4**attempt)
        if "finished" not in out:
            break
    assert "finished" not in out and code == -signal.SIGKILL, (seed, code, out)
    survivors = step_dirs(directory)
    assert survivors and max(survivors) >= target and len(survivors) <= KEEP + 1, (seed, survivors)

    loss, params, data = flow_problem()
    resumed = fit(loss, params, data, steps=STEPS, checkpoint_dir=directory,
                  checkpoint_every=EVERY, keep_checkpoints=KEEP, resume=True, **FIT_KWARGS)
    straight = fit(loss, params, data, steps=STEPS, **FIT_KWARGS)
    msg = f"seed {seed}: killed after step {target}, checkpoints left {survivors}"
    assert resumed.step == straight.step == STEPS, msg
    tree_equal(resumed.params, straight.params)
    tree_equal(resumed.opt_state, straight.opt_state)
    for name in straight.history:
        np.testing.assert_array_equal(resumed.history[name], straight.history[name], err_msg=msg)
    assert step_dirs(directory) == list(range(STEPS - (KEEP - 1) * EVERY, STEPS + 1, EVERY))


# ---------------------------------------------------------------------------
# Clear errors.
# ---------------------------------------------------------------------------


def linear_loss(params, batch, key):
    return jnp.mean((batch @ params["w"] + params["b"]) ** 2)


def linear_run(tmp_path, dim=3, optimizer=None, **kwargs):
    data = np.random.default_rng(0).normal(size=(32, dim)).astype(np.float32)
    return fit(linear_loss, {"w": jnp.zeros(dim), "b": jnp.zeros(())}, data,
               optimizer=optimizer or optax.adam(0.1), steps=8, batch_size=8,
               key=jax.random.key(0), eval_every=4, progress=False,
               checkpoint_dir=tmp_path / "ck", **kwargs)


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    linear_run(tmp_path)
    before = step_dirs(tmp_path / "ck")
    with pytest.raises(CheckpointMismatchError,
                       match=r"written for a different model architecture: w: shape \(3,\) "
                             r"float32 in the checkpoint, \(4,\) float32 in the model"):
        linear_run(tmp_path, dim=4, resume=True)
    with pytest.raises(CheckpointMismatchError, match="different optimiser architecture: "
                                                      "0/count: missing from the model"):
        linear_run(tmp_path, optimizer=optax.sgd(0.1, momentum=0.9), resume=True)
    assert issubclass(CheckpointMismatchError, CheckpointError)
    # no fallback: the readable checkpoints are left as they were
    assert step_dirs(tmp_path / "ck") == before == [4, 8]


def test_unwritable_checkpoint_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"checkpoint_dir .*a_file/ck is not writable: "
                                              r"NotADirectoryError"):
        fit(linear_loss, {"w": jnp.zeros(3), "b": jnp.zeros(())}, np.ones((8, 3), np.float32),
            optimizer=optax.sgd(0.1), steps=4, batch_size=4, key=jax.random.key(0),
            progress=False, checkpoint_dir=blocker / "ck")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_checkpoint_dir_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="is not writable: PermissionError"):
            linear_run(locked)
    finally:
        locked.chmod(0o700)


def test_no_pickle_anywhere_in_genlearn():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders = []
    for folder, _, files in os.walk(os.path.join(root, "genlearn")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for needle in ("import pickle", "from pickle", "cloudpickle", "import dill",
                               "allow_pickle=True", "jnp.load("):
                    if needle in text:
                        offenders.append(f"{os.path.relpath(path, root)}: {needle}")
    assert not offenders, offenders
