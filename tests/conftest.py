import os

import pytest

# Tests run on the CPU with deterministic single-host settings; keep XLA from grabbing a GPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent compile cache for one test module whose runs compile the same programs."""
    import jax
    from jax._src import compilation_cache as cc

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {n: getattr(jax.config, n) for n in names}
    values = (str(tmp_path_factory.getbasetemp() / "jit-cache"), 0.0, 0)
    for name, value in zip(names, values, strict=True):
        jax.config.update(name, value)
    cc.reset_cache()
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    cc.reset_cache()


# CLI processes the tests start write no persistent compilation cache into the user's home
# (the cache's own test turns it on in a temporary directory).
os.environ.setdefault("DQN_JAX_COMPILE_CACHE", "off")
