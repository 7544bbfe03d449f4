import os

# Keep the suite within CI's budget on 2 cores. Most test time is XLA compilation of small
# programs; the backend's optimisation passes cost ~20 % of it and buy nothing at test sizes
# (benchmarks and users keep the default level). Subprocesses and notebook kernels inherit this.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_backend_optimization_level=0")

# Many tests compile the same programs: the CLI, notebook and multi-process tests in fresh
# subprocesses, and the two xdist workers each on their own. One persistent compilation cache
# per test session (a fresh temporary folder: nothing is carried between sessions) lets every
# process after the first load an executable instead of compiling it again. The controller sets
# it before it starts the workers, which inherit it, as do the subprocesses.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="genlearn-tests-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

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
