import contextlib
import os

import pytest
from helpers import session_dir

# Tests run on the CPU with deterministic single-host settings; keep XLA from grabbing a GPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Most of the suite's time is XLA compiling its many small programs. LLVM's optimization level 1
# instead of XLA's default 2 compiles them faster and runs them about as fast; the suite passes
# at both levels (the README gives both times). Set before JAX starts; the subprocesses the
# tests start inherit it. An XLA_FLAGS that already names a level keeps its own.
SUITE_XLA_FLAG = "--xla_backend_optimization_level=1"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SUITE_XLA_FLAG}".strip()

CACHE_ENV = "DQN_JAX_COMPILE_CACHE"  # the CLI's compile-cache directory (dqn_jax.cli)


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
    directory = session_dir(tmp_path_factory) / "jit-cache"
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
