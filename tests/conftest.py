import os

# Keep the suite within CI's budget on 2 cores: XLA's CPU autotuning is not needed.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import hypothesis

hypothesis.settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
