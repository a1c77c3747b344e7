import os

# Tests run on the CPU with deterministic single-host settings; keep XLA from grabbing a GPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
