"""Bad input at every entry point: one line ``error: ...`` naming the field or path, exit code
2, no traceback, and no run directory left behind by a refused command."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqn_jax.cli import config_flags, main, parse_train_args
from dqn_jax.config import Config


def refused(argv: list[str], capsys) -> str:
    """Run the CLI; assert it refused with one error line; return that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) >= 1 and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err), err
    assert all(line.startswith("warning: ") for line in err[:-1]), err
    return err[-1]


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text("{bad json")
    invalid = tmp_path / "invalid"
    invalid.mkdir()
    (invalid / "config.json").write_text(json.dumps({"env": "CartPole-v1", "lr": -3}))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"learning_rate": 3}))
    no_episodes = tmp_path / "no-episodes"
    no_episodes.mkdir()
    (no_episodes / "config.json").write_text(json.dumps(Config(backend="jax").to_dict()))
    bad_csv = tmp_path / "bad-csv"
    bad_csv.mkdir()
    (bad_csv / "config.json").write_text(json.dumps(Config(backend="jax").to_dict()))
    (bad_csv / "episodes.csv").write_text("run,seed,env_step,length,return\n0,0,1,x\n")
    return tmp_path


PATH_CASES = [
    (["plot", "{d}/missing"], r"missing does not exist: expected a run directory"),
    (["plot", "{d}/a-file"], r"a-file is not a directory"),
    (["plot", "{d}/damaged"], r"damaged/config.json is damaged"),
    (["plot", "{d}/unknown"], r"unknown/config.json is damaged: unknown fields learning_rate"),
    (["plot", "{d}/no-episodes"], r"no-episodes/episodes.csv not found"),
    (["plot", "{d}/bad-csv"], r"bad-csv/episodes.csv is damaged"),
    (["eval", "{d}/missing"], r"missing does not exist"),
    (["eval", "{d}/damaged"], r"damaged/config.json is damaged"),
    (["eval", "{d}/invalid"], r"invalid/config.json holds an invalid config: lr=-3"),
    (["eval", "{d}/no-episodes"], r"no checkpoint in .*no-episodes/checkpoints"),
    (["train", "--resume", "{d}/missing"], r"missing does not exist"),
    (["train", "--resume", "{d}/a-file"], r"a-file is not a directory"),
    (["train", "--resume", "{d}/damaged"], r"damaged/config.json is damaged"),
    (["train", "--resume", "{d}/no-episodes", "--no-progress"], r"cannot resume: no checkpoint"),
]


@pytest.mark.parametrize("argv, pattern", PATH_CASES)
def test_missing_and_damaged_run_directories_are_one_line_errors(argv, pattern, dirs, capsys):
    line = refused([a.format(d=dirs) for a in argv], capsys)
    assert re.search(pattern, line), line


FLAG_CASES = [
    (["train", "--lr", "-1"], r"lr=-1.0 is invalid: must be a finite number > 0"),
    (["train", "--lr", "abc"], r"--lr: could not convert string to float: 'abc'"),
    (["train", "--lr"], r"Missing value for argument '--lr'"),
    (
        ["train", "--learnig-rate", "3"],
        r"unrecognized arguments: --learnig-rate \(did you mean --learning-starts.*\), 3",
    ),
    (["train", "--gama", "0.9"], r"--gama \(did you mean --gamma"),
    (["train", "--variant", "nope"], r"--variant 'nope' is unknown: must be one of random, "),
    (["train", "--preset", "nope"], r"preset='nope' is unknown: must be one of default"),
    (
        ["train", "--preset", "nope", "--variant", "c51"],
        r"preset='nope' is unknown: must be one of default",
    ),
    (["train", "--env", "CartPol-v1"], r"env='CartPol-v1' is not a known environment"),
    (["train", "--env"], r"Missing value for argument '--env'"),
    (["train", "--num-seeds", "abc"], r"--num-seeds: invalid literal for int"),
    (["train", "--gamma", "2"], r"gamma=2.0 is invalid: must be in \[0.0, 1.0\]"),
    (["train", "--eval-epsilon", "1.5"], r"eval_epsilon=1.5 is invalid"),
    (["train", "--dueling", "maybe"], r"invalid choice 'maybe' for argument '--dueling'"),
    (["train", "--checkpoint-every", "-1"], r"--checkpoint-every must be >= 0"),
    (["sweep"], r"needs at least one --sweep NAME=V1,V2"),
    (["sweep", "--sweep", "lr"], r"--sweep 'lr': expected NAME=V1,V2"),
    (["sweep", "--sweep", "lr=a,b"], r"values must be numbers"),
    (["sweep", "--sweep", "hidden_sizes=1,2"], r"hidden_sizes: not sweepable; sweepable: lr"),
    (["eval"], r"dqn-jax eval: the following arguments are required: run_dir"),
    (["eval", "x", "--episods", "3"], r"--episods .*did you mean --episodes"),
    (["plot"], r"dqn-jax plot: the following arguments are required: run_dir"),
    (["presets", "extra"], r"dqn-jax presets: unrecognized arguments: extra"),
]


@pytest.mark.parametrize("argv, pattern", FLAG_CASES)
def test_bad_flags_are_one_line_errors_naming_the_flag(
    argv, pattern, tmp_path, capsys, monkeypatch
):

    monkeypatch.chdir(tmp_path)
    line = refused(argv, capsys)
    assert re.search(pattern, line), line
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_a_refused_run_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    # Fails in the preflight, after the directory was made: tensorboardX is not installed, or
    # (with it) the run directory already holds another run's checkpoints.
    import importlib.util

    out = tmp_path / "new-run"
    if importlib.util.find_spec("tensorboardX") is None:
        argv = ["train", "--tensorboard", "--out", str(out), "--total-steps", "1000"]
        line = refused([*argv, "--no-progress"], capsys)
        assert "tensorboardX" in line
    else:  # pragma: no cover - the test extra has no tensorboardX
        pytest.skip("tensorboardX installed")
    assert not out.exists()


FLAGS = config_flags() + ["--preset", "--out", "--resume", "--checkpoint-every", "--bogus"]
VALUES = st.one_of(
    st.integers(-3, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["True", "False", "None", "", "-", "--", "1e400", "0x10", "cartpole", "3,4"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), st.lists(VALUES, max_size=2)), max_size=3))
def test_random_flags_give_a_config_or_a_one_line_error_never_an_exception(pairs):
    argv = [part for flag, values in pairs for part in (flag, *values)]
    argv = [a for a in argv if a not in ("-h", "--help")]
    try:
        config, _ = parse_train_args(argv)
    except SystemExit as exit_:
        assert isinstance(exit_.code, str) and exit_.code.startswith("error: "), (argv, exit_)
        assert "\n" not in exit_.code, exit_.code
        message = exit_.code
    else:
        assert isinstance(config, Config)
        return
    if "unrecognized arguments" in message:
        named = message.split("unrecognized arguments: ", 1)[1]
        assert named.split(" (see")[0].strip(" ,"), message  # names what it did not recognize


def test_compile_cache_flags_and_environment_pick_the_directory(tmp_path):
    from dqn_jax.cli import compile_cache

    home = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache(["train", "--lr", "1"], home) == (
        ["train", "--lr", "1"],
        tmp_path / "dqn-jax" / "jax",
    )
    assert compile_cache(["--no-compile-cache", "train"], home) == (["train"], None)
    assert compile_cache(["train", "--compile-cache", "/x/y"], home)[1] == Path("/x/y")
    assert compile_cache(["train", "--compile-cache=/z"], home)[1] == Path("/z")
    assert compile_cache(["train"], {**home, "DQN_JAX_COMPILE_CACHE": "off"})[1] is None
    assert compile_cache(["train"], {**home, "DQN_JAX_COMPILE_CACHE": "/c"})[1] == Path("/c")
    assert compile_cache(["train"], {"JAX_COMPILATION_CACHE_DIR": "/j"})[1] == Path("/j")
    with pytest.raises(SystemExit, match="--compile-cache needs a directory"):
        compile_cache(["train", "--compile-cache"], home)


@pytest.mark.slow
def test_a_second_identical_cli_run_loads_its_programs_from_the_cache(tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "dqn_jax.cli", "train", "--total-steps", "1000"]
    argv += ["--learning-starts", "200", "--num-chunks", "2", "--hidden-sizes", "16"]
    argv += ["--eval-episodes", "2", "--no-progress"]
    env = {**__import__("os").environ, "DQN_JAX_COMPILE_CACHE": str(cache)}
    subprocess.run([*argv, "--out", str(tmp_path / "a")], env=env, check=True, capture_output=True)

    def entries():  # compiled programs, and the lowered ones (dqn_jax.program_cache), unchanged
        return sorted((str(p.relative_to(cache)), p.stat().st_mtime_ns) for p in cache.rglob("*"))

    first = entries()
    programs = [name for name, _ in first if name.endswith(".program")]
    names = {name.split("/")[-1].split("-")[0] for name in programs}
    assert names == {"init", "chunk125", "evaluate"}  # 250 iterations of 4 envs, in 2 chunks
    env_off = {**env, "DQN_JAX_COMPILE_CACHE": "off"}
    subprocess.run([*argv, "--out", str(tmp_path / "b")], env=env_off, check=True)
    assert entries() == first  # off: nothing written
    subprocess.run([*argv, "--out", str(tmp_path / "c")], env=env, check=True, capture_output=True)
    assert entries() == first  # all hits: nothing new, nothing traced and saved again
    episodes = [(tmp_path / d / "episodes.csv").read_bytes() for d in "abc"]
    # a: traced, saved, compiled; b: no caches; c: loaded lowered programs and compiled ones
    assert episodes[0] == episodes[1] == episodes[2]


def test_the_host_loop_is_recognised_before_jax_starts(tmp_path):
    from dqn_jax.cli import runs_host_loop

    assert runs_host_loop(["--preset", "cleanrl-cartpole"])
    assert runs_host_loop(["--env", "CartPole-v1", "--backend", "gymnasium"])
    assert runs_host_loop(["--env", "ALE/Pong-v5"])
    assert not runs_host_loop(["--env", "CartPole-v1"])  # gymnax has it: the JAX backend
    assert not runs_host_loop(["--env"])  # malformed: the parser reports it later
    saved = tmp_path / "run"
    saved.mkdir()
    (saved / "config.json").write_text(json.dumps(Config(backend="gymnasium").to_dict()))
    assert runs_host_loop(["--resume", str(saved)])  # from the saved config
    assert not runs_host_loop(["--resume", str(tmp_path / "missing")])


# In a fresh interpreter: deciding the backend must not import JAX (gymnax's import runs a jit,
# which starts the backends), or the device split below would come too late to apply.
FRESH_PROCESS = """
import os, sys
os.environ.pop("XLA_FLAGS", None)
from dqn_jax import cli
from dqn_jax.envs import gymnax_builtin_ids
argv = ["train", "--env", "CartPole-v1", "--num-seeds", "8"]
assert not cli.runs_host_loop(argv[1:]) and cli.runs_host_loop(["--env", "LunarLander-v3"])
assert "jax" not in sys.modules and "gymnax" not in sys.modules
cli.use_cpu_cores(argv)
import gymnax, jax
assert set(gymnax_builtin_ids()) == set(gymnax.registered_envs), gymnax_builtin_ids()
print(jax.device_count(), cli.cpu_devices_for(8))
"""


def printed_by_fresh_python(code: str) -> list[str]:
    """The words ``code`` prints, run by a new interpreter (nothing imported yet)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()


def test_a_jax_backend_run_splits_its_seeds_over_the_cores_in_a_fresh_process():
    out = printed_by_fresh_python(FRESH_PROCESS)
    assert int(out[0]) == int(out[1])  # JAX's CPU devices: cpu_devices_for(8)


DEFERRED_PLOTTING = """
import sys
import dqn_jax.run
assert "pandas" not in sys.modules and "scipy.stats" not in sys.modules, "seaborn was imported"
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn
assert len(seaborn.color_palette()) > 0 and plt.get_backend().lower() == "agg"
print(type(sys.modules["seaborn"]).__name__, type(sys.modules["matplotlib.pyplot"]).__name__)
"""


def test_importing_the_jax_backend_defers_gymnax_s_plotting_modules_until_used():
    out = printed_by_fresh_python(DEFERRED_PLOTTING)
    assert out == ["module", "module"]  # the real modules once used
