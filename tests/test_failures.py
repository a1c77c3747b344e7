"""Injected failures: each gives a clear message and loses nothing already saved.

NaN parameters, an unwritable run directory, a full disk, kill -9 during checkpoint writes, a
changed config on resume, damaged checkpoint files.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CHECKPOINTED as QUIET
from helpers import TWO_SEEDS, arrays

from dqn_jax import checkpoint as ckpt
from dqn_jax import run
from dqn_jax.cli import main
from dqn_jax.config import Config
from dqn_jax.device_loop import make_train
from dqn_jax.run import ConfigMismatchError, NonFiniteError, train

TINY = Config(**TWO_SEEDS)


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if training gets as far as compiling."""

    def refuse(*args, **kwargs):
        raise AssertionError("compiled before the failure was detected")

    monkeypatch.setattr(run, "compile_all", refuse)


@pytest.mark.slow
def test_nan_names_chunk_steps_seeds_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TINY.replace(seed=5)
    trainer = make_train(config)

    def poisoned_iteration(state, it):
        state, out = trainer.iteration(state, it)
        poison = it >= 500  # chunk 3 of 4 (250 iterations each)
        learner = state.agent.learner
        params = jax.tree.map(lambda p: jnp.where(poison, jnp.nan, p), learner.params)
        agent = state.agent._replace(learner=learner._replace(params=params))
        return state._replace(agent=agent), out

    poisoned = trainer._replace(iteration=poisoned_iteration)
    with pytest.raises(NonFiniteError) as err:
        train(config, tmp_path, trainer=poisoned, **QUIET)
    message = str(err.value)
    assert "chunk 3 (env steps 1,000-1,500)" in message
    assert "seed(s) 5, 6" in message
    assert f"last good checkpoint: {tmp_path / 'checkpoints' / '1000'}" in message
    # the NaN state was not saved; the last good one restores, finite
    assert ckpt.saved_steps(tmp_path) == [500, 1_000]
    target = ckpt.abstract_state(run.state_shapes(trainer), run.seed_sharding(2))
    restored = ckpt.restore(tmp_path, target, echo=lambda s: None)
    assert restored.step == 1_000 and all(np.isfinite(x).all() for x in arrays(restored.state))


def test_unwritable_run_dir_fails_before_compiling(tmp_path, no_compile):
    # Tests run as root, so permissions do not stop writes: a path below a file does.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit, match="run directory .*a-file/run is not writable"):
        train(TINY, blocker / "run", **QUIET)


def test_full_disk_fails_before_compiling(tmp_path, monkeypatch, no_compile):
    monkeypatch.setattr(ckpt, "free_bytes", lambda path: 10 * 2**20)
    with pytest.raises(SystemExit, match=r"not enough free disk space .* 10 MiB free"):
        train(TINY, tmp_path, **QUIET)
    assert not (tmp_path / "checkpoints").exists()


def test_checkpoint_size_estimate_counts_every_array():
    shapes = run.state_shapes(make_train(TINY))
    # per seed and slot: obs, next_obs, action, reward, discount, last
    replay_bytes = 2 * 1_000 * (4 + 4 + 1 + 1 + 1 + 1) * 4
    assert replay_bytes < ckpt.estimate_bytes(shapes) < replay_bytes + 20_000


@pytest.fixture(scope="module")
def uninterrupted():
    return train(TINY, **{**QUIET, "checkpoint_every": 0})


@pytest.mark.slow
def test_changed_config_on_resume_is_refused_with_a_diff_unless_forced(
    tmp_path, uninterrupted, capsys
):
    train(TINY, tmp_path, stop_after_chunks=2, **QUIET)
    saved_config = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ConfigMismatchError, match=r"lr: 0\.001 -> 0\.002; .*--force"):
        train(TINY.replace(lr=0.002), tmp_path, resume=True, **QUIET)
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.002", "--no-progress"]) == 2
    assert "lr: 0.001 -> 0.002" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_bytes() == saved_config
    assert ckpt.saved_steps(tmp_path) == [500, 1_000]
    # forced (a change that leaves the compiled programs alone), through the CLI
    argv = ["train", "--resume", str(tmp_path), "--eval-every-chunks", "2", "--force"]
    assert main([*argv, "--no-progress", "--checkpoint-every", "1"]) == 0
    assert run.load_config(tmp_path).eval_every_chunks == 2
    assert ckpt.saved_steps(tmp_path) == [1_000, 1_500, 2_000]
    # training itself is unchanged by that field
    resumed = ckpt.restore(
        tmp_path, ckpt.abstract_state(uninterrupted.state, run.seed_sharding(2)), echo=print
    )
    for x, y in zip(arrays(uninterrupted.state), arrays(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)


def damage(step_dir):
    """Truncate every file of a checkpoint's train state to half its size."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted):
    train(TINY, tmp_path, stop_after_chunks=3, **QUIET)
    damage(tmp_path / "checkpoints" / "1500")
    lines = []
    resumed = train(TINY, tmp_path, resume=True, **{**QUIET, "echo": lines.append})
    text = "\n".join(lines)
    assert "warning: checkpoint 1500 is damaged" in text
    assert "falling back to checkpoint 1000" in text
    assert "resumed from" in text and "(chunk 2)" in text
    # nothing deleted: the damaged checkpoint is set aside, and the run ends as if never broken
    assert (tmp_path / "checkpoints_set_aside" / "1500" / "state").is_dir()
    for x, y in zip(arrays(uninterrupted.state), arrays(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    train(TINY, tmp_path, stop_after_chunks=1, **QUIET)
    damage(tmp_path / "checkpoints" / "500")
    with pytest.raises(SystemExit, match="no restorable checkpoint in .*checkpoint 500 is damaged"):
        train(TINY, tmp_path, resume=True, **QUIET)
    assert ckpt.saved_steps(tmp_path) == [500]
    with pytest.raises(SystemExit, match="already holds checkpoints .* --resume"):
        train(TINY, tmp_path, **QUIET)


SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from dqn_jax import checkpoint as ckpt

    run_dir = sys.argv[1]
    manager = ckpt.open_manager(run_dir, keep=2)
    step = max(ckpt.saved_steps(run_dir), default=0)
    while True:
        step += 1
        state = {"replay": np.full((4_000_000,), step, np.float32), "key": np.uint32([0, step])}
        print("begin", step, flush=True)
        ckpt.save(manager, step, state, {"step": step})
        print("end", step, flush=True)
    """
)


def check_latest_restores(run_dir, at_least):
    steps = ckpt.saved_steps(run_dir)
    assert steps and steps[-1] >= at_least, (steps, at_least)
    target = {
        "replay": jax.ShapeDtypeStruct((4_000_000,), np.float32),
        "key": jax.ShapeDtypeStruct((2,), np.uint32),
    }
    target = ckpt.abstract_state(target, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    restored = ckpt.restore(run_dir, target, echo=print)  # falls back, so check it did not
    assert restored.step == steps[-1] and restored.host == {"step": steps[-1]}
    assert (np.asarray(restored.state["replay"]) == steps[-1]).all()
    return steps[-1]


def partial_saves(run_dir) -> list:
    ckpts = run_dir / "checkpoints"
    return (
        [p for p in ckpts.iterdir() if ".orbax-checkpoint-tmp" in p.name] if ckpts.exists() else []
    )


def wait_for_partial_save(run_dir, timeout: float) -> None:
    """Poll until a save in progress has created its temporary directory (a kill timed from the
    'begin' line alone could land before the save starts writing on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not partial_saves(run_dir) and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.slow
def test_kill_9_during_saves_never_loses_the_previous_checkpoint(tmp_path):
    rng = random.Random(6)
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    run_dir = tmp_path / "run"
    latest, mid_save_kills = 0, 0
    for kill in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True
        )
        # let at least one save complete, then kill at a random moment of a later one (the
        # last run kills right after a save ends, i.e. between writes)
        target = ("end", 2) if kill == 3 else ("begin", 2)
        for line in proc.stdout:
            what, step = line.split()
            if what == target[0] and int(step) - latest >= target[1]:
                break
        if kill < 3:  # once the save's temporary directory exists, at a random moment
            wait_for_partial_save(run_dir, timeout=30.0)
            time.sleep(rng.uniform(0.0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        mid_save_kills += bool(partial_saves(run_dir))
        latest = check_latest_restores(run_dir, at_least=latest + 1)
    assert mid_save_kills >= 2, "the kills did not land during saves"
