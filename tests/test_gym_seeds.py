"""Several seeds in one host-loop process (``--num-seeds S`` on the Gymnasium backend): one
vector env of ``S * num_envs`` environments and the learners vmapped in every program, each
seed exactly the run it would be alone."""

import jax
import numpy as np
import pytest
from helpers import QUIET

from dqn_jax import host_loop as gb
from dqn_jax.config import Config

BASE = dict(
    env="CartPole-v1",
    backend="gymnasium",
    total_steps=800,
    num_envs=2,
    train_every=2,
    learning_starts=200,
    batch_size=16,
    buffer_size=1_000,
    num_chunks=2,
    eval_episodes=3,
    hidden_sizes=(16,),
    target_period=100,
)


def assert_seed_is_its_own_run(multi, s: int, one, exact: bool) -> None:
    """Same episodes and evaluations; the same state bits (``exact``) or the same to float
    rounding (a vmapped update may round differently in the last bits)."""
    np.testing.assert_array_equal(multi.episodes[s], one.episodes[0])
    np.testing.assert_array_equal(multi.eval_returns[s], one.eval_returns[0])
    flat = jax.tree_util.tree_flatten_with_path(multi.state)[0]
    for (path, x), y in zip(flat, jax.tree.leaves(one.state), strict=True):
        x, y, name = np.asarray(x)[s], np.asarray(y)[0], jax.tree_util.keystr(path)
        if name == ".stats" or (not exact and np.issubdtype(x.dtype, np.floating)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("noisy", [False, True])  # noisy: acting keys per seed (rainbow's)
def test_each_of_two_seeds_in_one_process_is_the_single_seed_run(noisy, tmp_path):
    config = Config(**BASE, variant="ddqn", noisy=noisy)
    multi = gb.train(config.replace(num_seeds=2, seed=5), tmp_path / "multi", **QUIET)
    assert multi.summary["seeds"] == [5, 6]
    assert multi.summary["total_env_steps"] == 2 * config.total_steps
    assert multi.eval_returns.shape == (2, 3)
    single = gb.make_host_agent(config)  # the seed is host-only: one agent, compiled once
    for s in range(2):
        one = gb.train(config.replace(seed=5 + s), None, agent=single, **QUIET)
        assert_seed_is_its_own_run(multi, s, one, exact=not noisy)
    # independent seeds: different episodes
    assert not np.array_equal(multi.episodes[0][:20], multi.episodes[1][:20])
    rows = np.loadtxt(tmp_path / "multi" / "episodes.csv", delimiter=",", skiprows=1, ndmin=2)
    assert sorted(set(rows[:, 0].astype(int))) == [0, 1]  # the run column


@pytest.mark.slow
def test_several_seeds_resume_bit_identically(tmp_path):
    config = Config(**{**BASE, "num_chunks": 4}, num_seeds=2)
    full = gb.train(config, tmp_path / "full", checkpoint_every=0, **QUIET)
    gb.train(config, tmp_path / "cut", stop_after_chunks=2, **QUIET)
    resumed = gb.train(config, tmp_path / "cut", resume=True, **QUIET)
    for name in ("episodes.csv", "evals.csv"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes()
    for x, y in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # a training run
def test_eval_of_a_several_seed_checkpoint_evaluates_each_seed(tmp_path):
    from dqn_jax.host_loop import evaluate_checkpoint

    config = Config(**BASE, num_seeds=2, seed=3)
    run = gb.train(config, tmp_path, **QUIET)
    result = evaluate_checkpoint(tmp_path, echo=lambda s: None)
    assert result["seeds"] == [3, 4] and result["step"] == config.total_steps
    np.testing.assert_array_equal(result["returns"], run.eval_returns)


def test_a_shared_agent_evaluates_with_the_runs_own_episodes_and_epsilon():
    config = Config(**BASE)
    shared = gb.make_host_agent(config)  # built for eval_episodes=3, eval_epsilon=0
    run = gb.train(config.replace(eval_episodes=5, eval_epsilon=1.0), None, agent=shared, **QUIET)
    assert run.eval_returns.shape == (1, 5)
    greedy = gb.train(config.replace(eval_episodes=5), None, agent=shared, **QUIET)
    assert not np.array_equal(run.eval_returns, greedy.eval_returns)  # epsilon 1 acted randomly
