import contextlib
import os

import pytest

# Tests run on the CPU with deterministic single-host settings; keep XLA from grabbing a GPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

CACHE_ENV = "DQN_JAX_COMPILE_CACHE"  # the CLI's compile-cache directory (dqn_jax.cli)


def shared_cache_dir(tmp_path_factory):
    """One directory per test session, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jit-cache"


@contextlib.contextmanager
def persistent_cache(directory):
    """JAX's persistent compilation cache in ``directory`` for every program (no size or
    compile-time threshold); the settings as they were afterwards."""
    import jax
    from jax._src import compilation_cache as cc

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {n: getattr(jax.config, n) for n in names}
    for name, value in zip(names, (str(directory), 0.0, 0), strict=True):
        jax.config.update(name, value)
    cc.reset_cache()
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        cc.reset_cache()


@pytest.fixture(scope="session", autouse=True)
def session_compilation_cache(tmp_path_factory):
    """The session's compiled programs go to one persistent cache, shared by its workers and
    the CLI processes tests start (never the user's own cache): the many runs that build the
    same program again (a stop and a resume, the same small config in several modules) load it
    instead of compiling it again."""
    directory = shared_cache_dir(tmp_path_factory)
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(directory)
    try:
        with persistent_cache(directory):
            yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


GLOBAL_SETTINGS = (
    "jax_enable_x64",
    "jax_cpu_enable_async_dispatch",
    "jax_default_matmul_precision",
)


@pytest.fixture(autouse=True)
def no_leaked_global_settings():
    """No test leaves JAX's global settings or ``XLA_FLAGS`` changed for the tests after it."""
    import jax

    def snapshot():
        settings = {name: jax.config.values.get(name) for name in GLOBAL_SETTINGS}
        return settings, os.environ.get("XLA_FLAGS"), os.environ.get(CACHE_ENV)

    before = snapshot()
    yield
    assert snapshot() == before, "this test changed a global JAX setting or XLA_FLAGS"
