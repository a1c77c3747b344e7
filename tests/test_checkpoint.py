"""Checkpoints: exact resume, Ctrl-C, keeping the last few, eval of a saved run, logging."""

import json
import signal
import sys
import types

import jax
import numpy as np
import pytest
from helpers import CHECKPOINTED as QUIET
from helpers import SMALL, TWO_SEEDS, assert_same_files, assert_same_state

from dqn_jax import checkpoint as ckpt
from dqn_jax import html_report
from dqn_jax.cli import main
from dqn_jax.config import Config
from dqn_jax.run import TrainingInterrupted, evaluate_checkpoint, train

TINY = Config(**TWO_SEEDS)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return run_dir, train(TINY, run_dir, **QUIET)


@pytest.mark.slow
def test_stop_and_resume_is_bit_identical(uninterrupted, tmp_path):
    full_dir, full = uninterrupted
    first = train(TINY, tmp_path, stop_after_chunks=2, **QUIET)
    assert first.summary == {"stopped_after_chunk": 2, "env_step": 1_000}
    assert ckpt.saved_steps(tmp_path) == [500, 1_000]
    resumed = train(TINY, tmp_path, resume=True, **QUIET)
    # every leaf: params, target params, optimizer state, replay, env state, keys, counters
    assert_same_state(full.state, resumed.state)
    assert_same_files(full_dir, tmp_path)
    np.testing.assert_array_equal(full.eval_returns, resumed.eval_returns)
    # the last 3 checkpoints are kept, the final one included
    assert ckpt.saved_steps(tmp_path) == ckpt.saved_steps(full_dir) == [1_000, 1_500, 2_000]


# The family's agents with small heads: 200 iterations of 2 envs in 4 chunks, learning from
# env step 100 (end of chunk 1); the stop after chunk 2 falls inside learning.
FAMILY = dict(num_atoms=11, num_tau_samples=8, num_tau_prime_samples=8, num_quantile_samples=8)
TINY_FAMILY = {**SMALL, "num_chunks": 4, "total_steps": 400, "learning_starts": 100, **FAMILY}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["rainbow", "iqn"])
def test_stop_and_resume_is_bit_identical_for_the_family(variant, tmp_path):
    # rainbow: noisy dueling C51 with PER and the 3-step accumulator's pending window in the
    # state; iqn: sampled fractions. Keys, sum tree, window: all must resume exactly.
    config = Config(**{**TINY_FAMILY, "variant": variant}, num_seeds=2)
    full = train(config, tmp_path / "full", **QUIET)
    first = train(config, tmp_path / "cut", stop_after_chunks=2, **QUIET)
    assert first.summary == {"stopped_after_chunk": 2, "env_step": 200}
    resumed = train(config, tmp_path / "cut", resume=True, **QUIET)
    assert_same_state(full.state, resumed.state)
    assert_same_files(tmp_path / "full", tmp_path / "cut")
    np.testing.assert_array_equal(full.eval_returns, resumed.eval_returns)
    # The run itself (2 seeds on CartPole-v1): it learned, finitely, and moved its parameters.
    agent = full.state.agent
    stats = np.asarray(agent.stats)  # the last chunk's: loss sum, Q sum, iterations learned
    assert (stats[:, 2] == 50).all() and np.isfinite(stats[:, :2]).all()
    params = [np.asarray(x) for x in jax.tree.leaves(agent.learner.params)]
    halfway = [np.asarray(x) for x in jax.tree.leaves(first.state.agent.learner.params)]
    assert all(not np.array_equal(p, h) for p, h in zip(params, halfway, strict=True))
    assert all(not np.array_equal(p[0], p[1]) for p in params)  # the seeds differ
    # every env step stored, but the last n - 1 of each env still in the n-step window
    want = config.total_steps - (config.n_step - 1) * config.num_envs
    np.testing.assert_array_equal(agent.replay.size, [want, want])
    assert config.n_step == (3 if variant == "rainbow" else 1)


@pytest.mark.slow
def test_ctrl_c_saves_at_the_chunk_boundary_and_resume_finishes_the_run(uninterrupted, tmp_path):
    full_dir, full = uninterrupted

    def press_ctrl_c_after_chunk_3(line):
        if line.startswith("chunk   3/4"):
            signal.raise_signal(signal.SIGINT)

    options = {**QUIET, "echo": press_ctrl_c_after_chunk_3, "checkpoint_every": 0}
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run under nohup
    with pytest.raises(TrainingInterrupted, match=r"after chunk 3.*--resume"):
        train(TINY, tmp_path, **options)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    assert ckpt.saved_steps(tmp_path) == [1_500]
    # its report says it stopped (not "in progress") and how to go on
    stopped = (
        "stopped after chunk 3 of 4 (interrupted (Ctrl-C)), 1,500 of 2,000 env steps per seed; "
        f"resume with: dqn-jax train --resume {tmp_path}"
    )
    assert html_report.status(html_report.read_run(tmp_path)) == (False, stopped)
    assert stopped in (tmp_path / "report.html").read_text()
    resumed = train(TINY, tmp_path, resume=True, **QUIET)
    assert_same_state(full.state, resumed.state)
    assert_same_files(full_dir, tmp_path)
    assert not (tmp_path / "stopped.json").exists()
    assert html_report.status(html_report.read_run(tmp_path))[0]  # finished


@pytest.mark.slow
def test_eval_of_the_final_checkpoint_matches_the_run_and_writes_json(uninterrupted, capsys):
    run_dir, full = uninterrupted
    result = evaluate_checkpoint(run_dir, echo=lambda s: None)
    assert result["step"] == 2_000
    np.testing.assert_array_equal(np.asarray(result["returns"]), full.eval_returns)
    assert json.loads((run_dir / "eval_2000.json").read_text()) == result
    # the CLI, an older checkpoint, another episode count
    assert main(["eval", str(run_dir), "--checkpoint", "1500", "--episodes", "3"]) == 0
    saved = json.loads((run_dir / "eval_1500.json").read_text())
    assert saved["step"] == 1_500 and np.asarray(saved["returns"]).shape == (2, 3)
    assert "seed 1: mean" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no checkpoint 700 .*saved: 1000, 1500, 2000"):
        evaluate_checkpoint(run_dir, step=700, echo=lambda s: None)


@pytest.mark.slow
def test_console_and_jsonl_report_each_chunk(uninterrupted):
    run_dir, _ = uninterrupted
    lines = []
    train(TINY, progress=False, echo=lines.append)
    chunk_lines = [ln for ln in lines if ln.startswith("chunk")]
    assert len(chunk_lines) == 4
    assert all(" steps/s | ETA " in ln for ln in chunk_lines)
    assert chunk_lines[-1].endswith("ETA 0:00:00")
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_step"] for r in records] == [500, 1_000, 1_500, 2_000]
    for r in records:
        assert len(r["loss"]) == len(r["q_mean"]) == len(r["episodes"]) == 2
    assert np.isfinite(records[-1]["loss"]).all() and sum(records[-1]["episodes"]) > 0


@pytest.mark.slow
def test_tensorboard_logs_through_tensorboardx(monkeypatch, tmp_path):
    scalars = []

    class FakeWriter:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            scalars.append("closed")

    monkeypatch.setitem(
        sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    train(TINY, tmp_path, tensorboard=True, **QUIET)
    assert any(tag == "loss/seed_1" and step == 500 for tag, _, step in scalars[:-1])
    assert {s[0] for s in scalars[:-1]} >= {"loss/mean", "q_mean/mean", "return_mean/mean"}
    assert scalars[-1] == "closed"


def test_tensorboard_without_tensorboardx_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(SystemExit, match=r"pip install 'dqn-jax\[tensorboard\]'"):
        train(TINY, tmp_path, tensorboard=True, **QUIET)
