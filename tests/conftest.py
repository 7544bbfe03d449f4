import contextlib
import os

import pytest

# Keep the suite within CI's budget on 2 cores. Most test time is XLA compilation of small
# programs; the backend's optimisation passes cost ~20 % of it and buy nothing at test sizes, and
# XLA:CPU's MLIR fusion emitters compile ~40 % slower than its older LLVM IR emitters (tests/
# test_flows_autoregressive.py alone: 32 s -> 20 s; six flow test files on -n 2: 212 s -> 117 s).
# Benchmarks and users keep XLA's defaults. Subprocesses and notebook kernels inherit this.
# The optimisation level is jax's `jax_disable_most_optimizations` (XLA backend level 0) rather than an
# XLA flag, so that a test that runs more than it compiles can switch it back on: mark it
# `@pytest.mark.optimized` (see _xla_optimisation below).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

# No persistent compilation cache. A session-wide cache shared by both xdist workers and their
# subprocesses cut ~20 % of the suite's time, but workers died with it: a SIGSEGV in jax's
# compilation_cache.get_executable_and_time -> deserialize_executable (tests/test_train.py, orbax's
# async checkpoint threads alive), and CI's run of 5cc78f7 lost a worker in tests/test_stability.py.
# A lost worker fails the suite. The settings above more than make up the time.
# Measured again with jax 0.10.2 (tests/test_stability.py, test_registry_training.py, test_train.py, test_cli.py
# and test_bijectors.py on -n 2; 393 s without a cache): one shared cache with a size limit (jax then locks
# each read and write, which would make sharing safe) and every compilation cached ran past 900 s, since jax
# scans the directory for eviction at each write; a private cache per worker without a limit took 406 s. At
# optimisation level 0 a compilation is too cheap for the cache to pay. A user's own
# JAX_COMPILATION_CACHE_DIR is switched off here too, so that every run of the suite is the one CI runs.
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import hypothesis

hypothesis.settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The suite runs on 2 xdist workers (`--dist load`), which hand out tests in collection order.
# Longest-first ordering keeps the two workers evenly busy to the end instead of leaving one
# idle while the other runs a notebook: these are the tests that take 10-50 s each on 2 cores
# (`python -m pytest -q -n 2 --durations=40` lists them).
_LONG_FIRST = (
    "tests/test_notebooks.py::test_notebook_executes",
    "tests/test_compare.py::test_compare_writes",
    "tests/test_cli.py::test_fit_and_sample_every_flows_ii_model",
    "tests/test_data_files.py::test_levels_drop_nonfinite_eval_files_and_compare",
    "tests/test_diffusion_run.py::test_diffusion_learns_a_toy_and_writes_its_run",
    "tests/test_registry_training.py::test_every_family_trains_through_the_driver_and_resumes_bit_identically[cnf]",
    "tests/test_vae.py::test_iwae_with_one_sample_is_the_elbo_jit_and_distrax",
    "tests/test_x64_walk.py::test_x64[",
    "tests/test_diffusion.py::test_samplers_agree_in_distribution",
    "tests/test_vae_run.py::test_fit_vae_on_digits",
    "tests/test_registry_training.py::",
    "tests/test_train_host_data.py::",
    "tests/test_diffusion.py::",
    "tests/test_vae.py::",
    "tests/test_registry_training.py::test_a_new_family_survives_sigkill",
    "tests/test_parallel.py::test_four_devices_match_one",
    "tests/test_multihost.py::test_two_processes_equal_one_process",
    "tests/test_cli.py::test_eval_samples_reference_and_modes",
    "tests/test_gan_training.py::test_fused_step_equals",
    "tests/test_cli.py::test_fit_ebm",
    "tests/test_gan_training.py::test_mmd_generator_learns",
    "tests/test_flows_spline.py::test_spline_learns_two_moons",
    "tests/test_cli.py::test_fit_classical",
    "tests/test_flows_spline.py::test_matches_distrax",
    "tests/test_learning.py::",
    "tests/test_registry.py::test_a_new_family_goes_through",
    "tests/test_data_files.py::test_fit_gmm_on_a_csv",
    "tests/test_metrics_distances.py::DistancesJitTest",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        for i, prefix in enumerate(_LONG_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(_LONG_FIRST)

    items.sort(key=rank)  # stable: the rest keeps its order


@contextlib.contextmanager
def optimised_compilation():
    """XLA's default optimisation inside the block, for this process and the subprocesses it starts."""
    import jax

    before, env = jax.config.read("jax_disable_most_optimizations"), os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS")
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "false"
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        if env is None:
            os.environ.pop("JAX_DISABLE_MOST_OPTIMIZATIONS")
        else:
            os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = env


@pytest.fixture(autouse=True)
def _xla_optimisation(request):
    """XLA's default optimisation for tests marked `optimized`: those that execute long training or sampling
    loops, where optimised code pays for its longer compile (measured per test: `--junitxml` of the slowest
    tests with and without it)."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    with optimised_compilation():
        yield
