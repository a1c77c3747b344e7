"""Checkpoint and resume on the Gymnasium backend: the device state, the host loop's values
and the environments' whole state (classic control: physics and RNG; ALE: the emulator with
its RNG), so a resumed run is bit-identical to an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import QUIET, assert_same_files

from dqn_jax import checkpoint as ckpt
from dqn_jax import host_loop as gb
from dqn_jax.config import Config
from dqn_jax.envs import gym_envs
from dqn_jax.run import TrainingInterrupted

CARTPOLE = Config(
    env="CartPole-v0",
    backend="gymnasium",
    total_steps=2_000,
    num_envs=2,
    train_every=2,
    learning_starts=400,
    batch_size=16,
    buffer_size=1_000,
    num_chunks=4,
    eval_episodes=3,
    eval_every_chunks=2,
    hidden_sizes=(16,),
    target_period=100,
)


def assert_same_run(dir_a, dir_b, a, b):
    assert_same_files(dir_a, dir_b)
    np.testing.assert_array_equal(a.eval_returns, b.eval_returns)
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gym-uninterrupted")
    return run_dir, gb.train(CARTPOLE, run_dir, checkpoint_every=0, **QUIET)


def steps_identically_after_restore(env_id, n, num_actions, warm_up, steps, **kwargs) -> int:
    """Step ``n`` envs ``warm_up`` random steps, restore their state into fresh envs reset on
    other seeds (only the restored state may matter), then step both alike ``steps`` times
    asserting identical outputs; returns how many episodes ended."""
    rng = np.random.default_rng(0)
    a = gym_envs.make_vector_env(env_id, n, **kwargs)
    a.reset(seed=list(range(1, n + 1)))
    for _ in range(warm_up):
        a.step(rng.integers(num_actions, size=n))
    b = gym_envs.make_vector_env(env_id, n, **kwargs)
    b.reset(seed=list(range(100, 100 + n)))
    gym_envs.restore_env_state(b, gym_envs.save_env_state(a))
    ends = 0
    for _ in range(steps):
        actions = rng.integers(num_actions, size=n)
        out_a, out_b = a.step(actions), b.step(actions)
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        ends += int(out_a[2].sum() + out_a[3].sum())
    return ends


def test_env_state_round_trip_steps_identically_across_episode_ends():
    ends = steps_identically_after_restore("CartPole-v1", 3, 2, warm_up=40, steps=400)
    assert ends > 10  # autoresets (which draw from the restored RNG) were crossed
    two, three = (gym_envs.make_vector_env("CartPole-v1", n) for n in (2, 3))
    with pytest.raises(ValueError, match="2 environments, not 3"):
        gym_envs.restore_env_state(three, gym_envs.save_env_state(two))


def test_atari_env_state_round_trip_steps_identically_across_episode_ends():
    # Breakout with a life loss as the episode end: many resets (no-op starts from the
    # restored np_random, sticky actions from the restored emulator RNG) in 300 steps.
    pytest.importorskip("ale_py")
    config = Config(
        env="ALE/Breakout-v5",
        backend="gymnasium",
        network="nature_cnn",
        terminal_on_life_loss=True,
        atari_envs="gymnasium",
    )
    kwargs = gym_envs.env_kwargs(config)
    ends = steps_identically_after_restore(config.env, 2, 4, warm_up=20, steps=300, **kwargs)
    assert ends >= 4


@pytest.mark.slow
def test_ctrl_c_and_resume_is_bit_identical_to_an_uninterrupted_run(uninterrupted, tmp_path):
    full_dir, full = uninterrupted

    def press_ctrl_c_after_chunk_2(line):
        if line.startswith("chunk   2/4"):
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match=r"after chunk 2.*--resume"):
        gb.train(CARTPOLE, tmp_path, **{**QUIET, "echo": press_ctrl_c_after_chunk_2})
    assert ckpt.saved_steps(tmp_path) == [1_000]
    resumed = gb.train(CARTPOLE, tmp_path, resume=True, **QUIET)
    assert_same_run(full_dir, tmp_path, full, resumed)
    assert ckpt.saved_steps(tmp_path)[-1] == 2_000


@pytest.mark.slow
def test_resume_of_a_finished_run_refuses_a_changed_config(uninterrupted, tmp_path):
    from dqn_jax.run import ConfigMismatchError

    gb.train(CARTPOLE, tmp_path, stop_after_chunks=1, **QUIET)
    with pytest.raises(ConfigMismatchError, match="lr: 0.001 -> 0.002"):
        gb.train(CARTPOLE.replace(lr=0.002), tmp_path, resume=True, **QUIET)
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        gb.train(CARTPOLE, tmp_path, **QUIET)


CLI = [sys.executable, "-m", "dqn_jax.cli", "train", "--no-progress"]


@pytest.mark.slow
def test_cli_ctrl_c_then_kill_9_then_resume_ends_as_an_uninterrupted_run(uninterrupted, tmp_path):
    # The CLI trains CARTPOLE itself (--preset-file): it must end as the uninterrupted run.
    full_dir, _ = uninterrupted
    preset = tmp_path / "cartpole.json"
    preset.write_text(json.dumps(CARTPOLE.to_dict()))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    cut = tmp_path / "cut"

    def run_until(line_start: str, sig: int, *extra) -> int:
        proc = subprocess.Popen(
            [*CLI, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            if line.startswith(line_start):
                proc.send_signal(sig)
                break
        proc.communicate()
        return proc.returncode

    # Ctrl-C after chunk 1 (it lands in chunk 1 or 2): a checkpoint at that chunk's end and
    # exit code 130.
    argv = ["--preset-file", str(preset), "--out", str(cut)]
    assert run_until("chunk   1/4", signal.SIGINT, *argv) == 130
    saved = ckpt.saved_steps(cut)
    assert len(saved) == 1 and saved[0] in (500, 1_000), saved
    # Resumed, saving every chunk, then killed -9 while chunk 3 saves or chunk 4 runs.
    argv = ["--resume", str(cut), "--checkpoint-every", "1"]
    assert run_until("chunk   3/4", signal.SIGKILL, *argv) == -signal.SIGKILL
    assert ckpt.saved_steps(cut)[-1] >= 1_000
    done = subprocess.run([*CLI, "--resume", str(cut)], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("episodes.csv", "evals.csv"):
        assert (full_dir / name).read_bytes() == (cut / name).read_bytes(), name
    summary = [json.loads((d / "summary.json").read_text()) for d in (full_dir, cut)]
    assert summary[0]["final_eval_return_per_seed"] == summary[1]["final_eval_return_per_seed"]


@pytest.mark.slow
def test_an_unsaveable_env_resumes_with_new_episodes_and_everything_else_kept(
    uninterrupted, tmp_path, monkeypatch
):
    # LunarLander's Box2D world cannot be pickled; stand in for it on CartPole.
    full_dir, _ = uninterrupted

    def unpicklable(envs):
        raise TypeError("cannot pickle 'SwigPyObject' object")

    monkeypatch.setattr(gym_envs, "save_env_state", unpicklable)
    lines = []
    gb.train(CARTPOLE, tmp_path, stop_after_chunks=2, **{**QUIET, "echo": lines.append})
    assert any("state cannot be saved (TypeError" in ln for ln in lines), lines
    resumed = gb.train(CARTPOLE, tmp_path, resume=True, **QUIET)
    assert resumed.summary["total_env_steps"] == CARTPOLE.total_steps

    def rows(d):
        return np.loadtxt(d / "episodes.csv", delimiter=",", skiprows=1, ndmin=2)

    full, cut = rows(full_dir), rows(tmp_path)
    np.testing.assert_array_equal(cut[cut[:, 2] <= 1_000], full[full[:, 2] <= 1_000])
    after = cut[cut[:, 2] > 1_000]
    # Only episodes started after the resume: their lengths fit in the steps since then.
    assert len(after) > 5 and after[:, 3].sum() <= CARTPOLE.total_steps - 1_000
    assert not np.array_equal(after, full[full[:, 2] > 1_000])


@pytest.mark.slow  # a training run
def test_eval_of_a_gymnasium_checkpoint_matches_the_runs_final_evaluation(uninterrupted, capsys):
    from dqn_jax.cli import main

    full_dir, full = uninterrupted
    assert main(["eval", str(full_dir)]) == 0
    result = json.loads((full_dir / "eval_2000.json").read_text())
    np.testing.assert_array_equal(result["returns"], full.eval_returns)
    assert result["seeds"] == [0] and "seed 0: mean" in capsys.readouterr().out
