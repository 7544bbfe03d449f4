"""Tests for genlearn.parallel: data-parallel steps on 1 vs 4 simulated devices.

The 4-device runs happen in ONE subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (this process keeps its
single device); it prints a JSON record of maximum absolute differences that
the tests below check. The 1-device reference is the plain single-device code
(`genlearn.train.fit` without a mesh, `jax.jit` of the same step). The three
families are a RealNVP flow (NLL, through `fit` and the standalone steps),
`genlearn.gan.minmax(...).step` (critic and generator updates, two optimisers)
and `genlearn.energy.contrastive_divergence` (Langevin negatives).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn import parallel as gp
from genlearn.train import fit

TOL = 1e-6

SCRIPT = textwrap.dedent(r'''
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from genlearn import parallel as gp
    from genlearn.flows import realnvp
    from genlearn.losses import nll
    from genlearn.train import fit, train_step

    assert jax.device_count() == 4, jax.devices()
    K = 3  # steps compared
    out = {"devices": jax.device_count()}
    mesh = gp.make_mesh()
    tree_diff = lambda a, b: max(float(jnp.max(jnp.abs(x - y))) for x, y in
                                 zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    x = jax.random.normal(jax.random.key(1), (256, 2)) * jnp.array([1.0, 0.5]) + 1.0

    # --- a flow with its NLL, through fit and through the standalone steps ----
    flow = realnvp(2, num_layers=2, hidden=(16,))
    params = flow.init(jax.random.key(0))
    loss = nll(flow)
    opt = optax.adam(1e-2)
    kw = dict(optimizer=opt, steps=2 * K, batch_size=32, key=jax.random.key(2),
              eval_every=K, progress=False)  # two jitted chunks of K steps
    r1 = fit(loss, params, x, **kw)
    r4 = fit(loss, params, x, mesh=mesh, **kw)
    out["fit_flow"] = tree_diff(r1.params, r4.params)
    out["fit_flow_moved"] = tree_diff(r1.params, params)
    out["fit_flow_loss"] = float(np.max(np.abs(r1.history["train_loss"] - r4.history["train_loss"])))
    r4h = fit(loss, params, np.asarray(x), mesh=mesh, device_data_bytes=0, **kw)  # batches from the host
    out["fit_flow_host"] = tree_diff(r4.params, r4h.params)
    out["fit_sharding_replicated"] = all(
        leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
        for leaf in jax.tree.leaves(r4.params))

    ref_step = jax.jit(train_step(loss, opt))
    dp, pm = gp.data_parallel_step(loss, opt, mesh), gp.pmap_step(loss, opt, mesh)
    p1, s1 = params, opt.init(params)
    p2, s2 = gp.replicate((params, opt.init(params)), mesh)
    p3, s3 = p2, s2
    for i in range(K):
        b = x[32 * i: 32 * (i + 1)]
        p1, s1, l1, _ = ref_step(p1, s1, b, None)
        sb = gp.shard_batch(b, mesh)
        assert sb.sharding.spec == jax.sharding.PartitionSpec("data")
        assert sb.addressable_shards[0].data.shape == (8, 2)
        p2, s2, l2 = dp(p2, s2, sb, None)
        p3, s3, l3 = pm(p3, s3, sb, None)
    out["dp_step_flow"] = tree_diff(p1, p2)
    out["pmap_step_flow"] = tree_diff(p1, p3)
    out["pmap_opt_state"] = tree_diff(s1, s3)  # Adam's moments: the mean gradient, not D times it
    out["dp_opt_state"] = tree_diff(s1, s2)

    # --- a GAN: genlearn.gan's min-max step (critic and generator updates) ----
    from genlearn.gan import critic, generator, minmax, objective

    gan = minmax(generator(2, 2, (16,)), critic(2, (16,)), objective("ns"),
                 generator_optimizer=optax.adam(1e-2, b1=0.5),
                 critic_optimizer=optax.adam(1e-2, b1=0.5), critic_steps=2, batch_size=32)
    s0 = gan.init(jax.random.key(3))
    single = jax.jit(gan.step)
    multi = gp.parallelize(gan.step, mesh, batch_argnums=(1,))
    a, b = s0, gp.replicate(s0, mesh)
    for i in range(K):  # 2 critic steps of 32 rows each
        batch, key = x[64 * i: 64 * (i + 1)], jax.random.fold_in(jax.random.key(5), i)
        a, _ = single(a, batch, key)
        b, _ = multi(b, gp.shard_batch(batch, mesh), key)
    out["gan"] = tree_diff(a, b)
    out["gan_moved"] = min(tree_diff(a.generator, s0.generator), tree_diff(a.critic, s0.critic))

    # --- an EBM: genlearn.energy's contrastive divergence (Langevin negatives) --
    from genlearn.energy import contrastive_divergence, mlp_energy

    model = mlp_energy(2, (16,))
    cd = contrastive_divergence(model, k=3, step_size=0.05)
    e0, e_opt = model.init(jax.random.key(6)), optax.adam(1e-2)
    single = jax.jit(train_step(cd, e_opt))
    multi = gp.data_parallel_step(cd, e_opt, mesh)
    a, b = (e0, e_opt.init(e0)), gp.replicate((e0, e_opt.init(e0)), mesh)
    for i in range(K):
        batch, key = x[32 * i: 32 * (i + 1)], jax.random.fold_in(jax.random.key(7), i)
        *a, _, _ = single(*a, batch, key)
        *b, _ = multi(*b, gp.shard_batch(batch, mesh), key)
    out["ebm"] = tree_diff(a, b)
    out["ebm_moved"] = tree_diff(a[0], e0)

    # --- the pmap-style step on flows whose log-densities loop (a scanned pair of couplings, IAF's
    # d-pass inverse): their loop carries must be varying over the mesh axis like the data
    from genlearn.flows import iaf, maf
    for name, f in {"iaf": iaf(2, 4, (8,)), "maf_scanned": maf(2, 4, (8,))}.items():
        p0, f_opt = f.init(jax.random.key(8)), optax.adam(1e-2)
        one = jax.jit(train_step(nll(f), f_opt))(p0, f_opt.init(p0), x[:32], None)
        four = gp.pmap_step(nll(f), f_opt, mesh)(*gp.replicate((p0, f_opt.init(p0)), mesh),
                                                 gp.shard_batch(x[:32], mesh), None)
        out[name] = max(tree_diff(one[0], four[0]), abs(float(one[2]) - float(four[2])))
        out[name + "_moved"] = tree_diff(one[0], p0)

    # --- batch sizes that do not split over 4 devices ---------------------------
    errors = {}
    for name, call in {
        "shard_batch": lambda: gp.shard_batch(x[:30], mesh),
        "fit": lambda: fit(loss, params, x, optimizer=opt, steps=1, batch_size=30,
                           key=jax.random.key(0), progress=False, mesh=mesh),
    }.items():
        try:
            call()
            errors[name] = None
        except ValueError as err:
            errors[name] = str(err)
    out["errors"] = errors
    print("RESULT " + json.dumps(out))
''')


def _four_devices(tmp_path):
    """Runs SCRIPT in a subprocess with 4 host devices; its RESULT dict."""
    path = tmp_path / "four_devices.py"
    path.write_text(SCRIPT)
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_main_process_keeps_one_device():
    assert jax.device_count() == 1


def test_four_devices_match_one(tmp_path):
    """One subprocess (one test, so the two xdist workers do not both start it) checks every
    data-parallel path on 4 devices against 1."""
    r = _four_devices(tmp_path)
    # fit on a flow
    assert r["devices"] == 4
    assert r["fit_flow_moved"] > 1e-3  # training did something
    assert r["fit_flow"] < TOL, r
    assert r["fit_flow_loss"] < TOL, r
    assert r["fit_flow_host"] < TOL, r  # the host-data path, its batches sharded over the mesh
    assert r["fit_sharding_replicated"]
    # standalone steps: explicit per-shard means then pmean: a different summation order, and adam
    # divides by sqrt(v), so allow 1e-5 there
    assert r["dp_step_flow"] < TOL, r
    assert r["dp_opt_state"] < TOL, r
    assert r["pmap_step_flow"] < 1e-5, r
    assert r["pmap_opt_state"] < 1e-5, r  # Adam's update is scale-free, its moments are not
    # the GAN min-max step and the EBM's Langevin step
    assert r["gan_moved"] > 1e-3
    assert r["gan"] < TOL, r
    assert r["ebm_moved"] > 1e-3
    assert r["ebm"] < TOL, r
    assert r["iaf_moved"] > 1e-3 and r["maf_scanned_moved"] > 1e-3
    assert r["iaf"] < 1e-5 and r["maf_scanned"] < 1e-5, r  # loops under the mesh (IAF's d passes, a scan)
    # an indivisible batch is a clear error
    errors = r["errors"]
    assert errors["shard_batch"] is not None
    assert "batch of 30 rows does not split over the 4 devices" in errors["shard_batch"]
    assert errors["fit"] is not None
    assert "batch_size (30) must be a multiple of the number of mesh devices (4)" in errors["fit"]


# ---------------------------------------------------------------------------
# One device, in this process.
# ---------------------------------------------------------------------------


def quadratic_loss(params, batch, key):
    return jnp.mean((batch @ params["w"] + params["b"] - 1.0) ** 2)


def test_fit_with_one_device_mesh_is_bit_identical():
    data = jax.random.normal(jax.random.key(0), (64, 3))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    kw = dict(optimizer=optax.sgd(0.1), steps=12, batch_size=8, key=jax.random.key(1),
              eval_every=4, progress=False)
    plain = fit(quadratic_loss, params, data, **kw)
    meshed = fit(quadratic_loss, params, data, mesh=gp.make_mesh(), **kw)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(meshed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(plain.history["train_loss"], meshed.history["train_loss"])


def test_data_parallel_step_one_device_and_key():
    mesh = gp.make_mesh()

    def noisy(params, batch, key):
        return jnp.mean((batch + 0.1 * jax.random.normal(key, batch.shape)) @ params["w"]) ** 2

    opt = optax.sgd(0.05)
    params = {"w": jnp.ones(3)}
    step = gp.data_parallel_step(noisy, opt, mesh)
    batch = gp.shard_batch(np.ones((4, 3), np.float32), mesh)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'key'"):
        step(params, opt.init(params), batch)
    p, s, loss = step(*gp.replicate((params, opt.init(params)), mesh), batch, jax.random.key(0))
    expected = jax.value_and_grad(noisy)(params, jnp.ones((4, 3)), jax.random.key(0))
    np.testing.assert_allclose(float(loss), float(expected[0]), rtol=1e-6)
    np.testing.assert_allclose(p["w"], params["w"] - 0.05 * expected[1]["w"], rtol=1e-6)
    # a non-finite loss is rejected: params unchanged, loss reported as NaN
    bad = gp.shard_batch(np.full((4, 3), np.nan, np.float32), mesh)
    p2, _, loss2 = step(p, s, bad, jax.random.key(1))
    assert np.isnan(float(loss2))
    np.testing.assert_array_equal(p2["w"], p["w"])


def test_mesh_helpers_bad_input():
    with pytest.raises(ValueError, match="devices is empty"):
        gp.make_mesh([])
    with pytest.raises(ValueError, match="axis_name must be a non-empty string"):
        gp.make_mesh(axis_name="")
    mesh = gp.make_mesh()
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        gp.shard_batch(np.ones((4, 2)), mesh, axis_name="model")
    with pytest.raises(ValueError, match="different numbers of rows"):
        gp.shard_batch({"x": np.ones((4, 2)), "y": np.ones(3)}, mesh)
    with pytest.raises(ValueError, match="leading row axis"):
        gp.shard_batch(np.float32(1.0), mesh)
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
        gp.replicate({"w": np.ones(2)}, "cpu")
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
        fit(quadratic_loss, {"w": jnp.zeros(3), "b": jnp.zeros(())}, np.ones((8, 3)),
            optimizer=optax.sgd(0.1), steps=1, batch_size=4, key=jax.random.key(0),
            progress=False, mesh="cpu")
