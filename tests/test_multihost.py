"""Multi-process data parallelism: 2 processes on 127.0.0.1 (CPU, gloo) == 1 process.

The two processes are started with ``python -m genlearn.parallel.launch``; each
joins the run with `genlearn.parallel.initialize` (settings from the
``GENLEARN_*`` variables the launcher sets), feeds only its own half of each
global batch (`shard_batch` -> `jax.make_array_from_process_local_data`) and
trains a RealNVP flow with `data_parallel_step`; both also run
`fit(..., mesh=mesh)`. Process 0 saves the params (npz, no pickle), which must
equal a single-process run in this process to 1e-6.
"""

import os
import socket
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
from genlearn.parallel import config_from_env, initialize
from genlearn.parallel.launch import free_port, launch
from genlearn.train import fit, train_step

STEPS, BATCH = 5, 32

SCRIPT = textwrap.dedent(r'''
    import os, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import jax.numpy as jnp, numpy as np, optax
    from genlearn import parallel as gp
    from genlearn.flows import realnvp
    from genlearn.losses import nll
    from genlearn.train import fit

    config = gp.initialize(timeout=60)
    assert jax.process_count() == 2 and jax.process_index() == config.process_id
    assert jax.device_count() == 2 and jax.local_device_count() == 1
    STEPS, BATCH = int(sys.argv[2]), int(sys.argv[3])
    flow = realnvp(2, num_layers=2, hidden=(16,))
    params = flow.init(jax.random.key(0))  # the same in every process
    loss, opt = nll(flow), optax.adam(1e-2)
    x = np.asarray(jax.random.normal(jax.random.key(1), (256, 2))) * [1.0, 0.5] + 1.0
    x = x.astype(np.float32)
    mesh = gp.make_mesh()
    step = gp.data_parallel_step(loss, opt, mesh)
    p, s = gp.replicate((params, opt.init(params)), mesh)
    half, pid = BATCH // 2, config.process_id
    for i in range(STEPS):
        mine = x[BATCH * i + half * pid: BATCH * i + half * (pid + 1)]  # this process's rows
        batch = gp.shard_batch(mine, mesh)
        assert batch.shape == (BATCH, 2) and not batch.is_fully_addressable
        p, s, l = step(p, s, batch, None)
    r = fit(loss, params, x, optimizer=opt, steps=2 * STEPS, batch_size=BATCH,
            key=jax.random.key(2), eval_every=STEPS, progress=False, mesh=mesh)
    if pid == 0:
        leaves = {f"step_{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(p))}
        leaves.update({f"fit_{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(r.params))})
        leaves["fit_loss"] = r.history["train_loss"]
        np.savez(sys.argv[1], **leaves)
    os.write(1, f"process {pid} done\n".encode())  # one write: the two processes share stdout
''')


def single_process_reference():
    flow = realnvp(2, num_layers=2, hidden=(16,))
    params = flow.init(jax.random.key(0))
    loss, opt = nll(flow), optax.adam(1e-2)
    x = np.asarray(jax.random.normal(jax.random.key(1), (256, 2))) * [1.0, 0.5] + 1.0
    x = x.astype(np.float32)
    step = jax.jit(train_step(loss, opt))
    p, s = params, opt.init(params)
    for i in range(STEPS):
        p, s, _, _ = step(p, s, x[BATCH * i: BATCH * (i + 1)], None)
    r = fit(loss, params, x, optimizer=opt, steps=2 * STEPS, batch_size=BATCH,
            key=jax.random.key(2), eval_every=STEPS, progress=False)
    return params, p, r


def test_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    out = tmp_path / "params.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # one CPU device per process: no forced device count, but the suite's other XLA flags (tests/conftest.py)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "genlearn.parallel.launch", "--num-processes", "2",
         "--timeout", "240", "--", sys.executable, str(script), str(out), str(STEPS), str(BATCH)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert "process 0 done" in proc.stdout and "process 1 done" in proc.stdout
    elapsed = time.monotonic() - start
    print(f"2-process run: {elapsed:.1f} s")

    params, reference, ref_fit = single_process_reference()
    with np.load(out, allow_pickle=False) as saved:
        got_step = [saved[f"step_{i}"] for i in range(len(jax.tree.leaves(reference)))]
        got_fit = [saved[f"fit_{i}"] for i in range(len(jax.tree.leaves(reference)))]
        fit_loss = saved["fit_loss"]
    moved = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(params)))
    assert moved > 1e-3
    for want, got in zip(jax.tree.leaves(reference), got_step):
        np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=1e-6)
    for want, got in zip(jax.tree.leaves(ref_fit.params), got_fit):
        np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit_loss, ref_fit.history["train_loss"], rtol=0, atol=1e-6)


def closed_port():
    port = free_port()  # bound then released: nothing listens there
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_unreachable_coordinator_is_a_clear_error_not_a_hang():
    port = closed_port()
    code = (f"from genlearn.parallel import initialize\n"
            f"initialize('127.0.0.1:{port}', num_processes=2, process_id=1, timeout=2)\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1
    assert f"TimeoutError: coordinator 127.0.0.1:{port} unreachable: no connection within 2 s" \
        in proc.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2),
         r"process_id must be in \[0, 2\) for num_processes=2, got 2"),
        (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=-1),
         r"process_id must be in \[0, 2\)"),
        (dict(coordinator_address="127.0.0.1:1234", num_processes=0, process_id=0),
         r"num_processes must be >= 1, got 0"),
        (dict(coordinator_address="127.0.0.1", num_processes=2, process_id=0),
         r"coordinator address must be 'host:port', got '127.0.0.1'"),
        (dict(coordinator_address="127.0.0.1:99999", num_processes=2, process_id=0),
         r"coordinator port must be in 1..65535"),
        (dict(coordinator_address="127.0.0.1:1234", num_processes="two", process_id=0),
         r"num_processes must be an integer, got 'two'"),
    ],
)
def test_bad_distributed_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        initialize(**kwargs, timeout=1)


def test_settings_from_environment(monkeypatch):
    for name in ("GENLEARN_COORDINATOR", "GENLEARN_NUM_PROCESSES", "GENLEARN_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="coordinator address is not set: .*GENLEARN_COORDINATOR"):
        config_from_env()
    monkeypatch.setenv("GENLEARN_COORDINATOR", "10.0.0.1:5000")
    monkeypatch.setenv("GENLEARN_NUM_PROCESSES", "4")
    monkeypatch.setenv("GENLEARN_PROCESS_ID", "3")
    assert tuple(config_from_env()) == ("10.0.0.1:5000", 4, 3)
    monkeypatch.setenv("GENLEARN_PROCESS_ID", "4")
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 4\)"):
        config_from_env()
    # a single process starts nothing
    assert initialize("127.0.0.1:1", 1, 0).num_processes == 1
    assert jax.process_count() == 1


def test_launcher_propagates_a_failure_and_kills_the_rest():
    code = ("import os, sys, time\n"
            "assert os.environ['GENLEARN_NUM_PROCESSES'] == '2'\n"
            "assert os.environ['GENLEARN_COORDINATOR'].startswith('127.0.0.1:')\n"
            "sys.exit(3) if os.environ['GENLEARN_PROCESS_ID'] == '1' else time.sleep(60)\n")
    start = time.monotonic()
    assert launch([sys.executable, "-c", code], 2) == 3
    assert time.monotonic() - start < 30
    assert launch([sys.executable, "-c", "pass"], 2) == 0
    with pytest.raises(ValueError, match="no command"):
        launch([], 2)
    with pytest.raises(ValueError, match="num_processes must be an integer >= 1"):
        launch(["true"], 0)
