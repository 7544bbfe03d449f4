import os

# Keep the suite within CI's budget on 2 cores. Most test time is XLA compilation of small
# programs; the backend's optimisation passes cost ~20 % of it and buy nothing at test sizes
# (benchmarks and users keep the default level). Subprocesses and notebook kernels inherit this.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_backend_optimization_level=0")

import hypothesis

hypothesis.settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
