"""The suite's per-test XLA optimisation switch (tests/conftest.py): unmarked tests compile with most of XLA's
optimisations off, tests marked ``optimized`` with XLA's defaults, and their subprocesses inherit the setting."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest


def _child_setting():
    code = "import jax; print(jax.config.read('jax_disable_most_optimizations'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu")).stdout.strip()


def test_unmarked_tests_run_at_the_suites_setting():
    suite = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true")
    assert jax.config.read("jax_disable_most_optimizations") is suite


@pytest.mark.optimized
def test_marked_tests_compile_with_xlas_defaults_and_so_do_their_subprocesses():
    assert jax.config.read("jax_disable_most_optimizations") is False
    assert float(jax.jit(lambda x: jnp.sum(x * 2.0))(jnp.arange(3.0))) == 6.0
    assert _child_setting() == "False"


def test_the_switch_is_restored_after_a_marked_test():
    from tests.conftest import optimised_compilation

    setting, env = jax.config.read("jax_disable_most_optimizations"), os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"]
    with optimised_compilation():
        assert jax.config.read("jax_disable_most_optimizations") is False
        assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "false"
    assert jax.config.read("jax_disable_most_optimizations") is setting
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == env
