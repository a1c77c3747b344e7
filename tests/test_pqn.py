"""PQN: Q(lambda) returns against a plain NumPy reference and rlax, episode ends in the rollout's
targets, one update computed by hand, both drivers' learner steps bit-identical, its config
checks, and short runs on both backends."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import rlax
from helpers import assert_same_files, assert_same_state
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from dqn_jax import agent as core
from dqn_jax import losses, pqn
from dqn_jax.config import Config, ConfigError
from dqn_jax.learner import Learner
from dqn_jax.replay import Transition

GAMMA = 0.9


def reference_returns(reward, discount, q_next, last, lam):
    """Q(lambda) returns of a ``[V, N]`` rollout, env by env, step by step, from the episodes:
    an episode's step mixes in the next step's return only while the episode goes on and the
    rollout has a next step."""
    v, n = reward.shape
    out = np.zeros((v, n))
    for e in range(n):
        for t in reversed(range(v)):
            bootstrap = q_next[t, e]
            if t + 1 < v and not last[t, e]:
                bootstrap = (1 - lam) * q_next[t, e] + lam * out[t + 1, e]
            out[t, e] = reward[t, e] + discount[t, e] * bootstrap
    return out


def episode_stream(seed: int, v: int, n: int):
    """Random rewards and values, and ends: terminated (discount 0) or truncated (discount
    gamma) episodes, each ``last``."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=(v, n), p=[0.7, 0.15, 0.15])  # continue, terminate, truncate
    reward = rng.normal(size=(v, n)).astype(np.float32)
    q_next = rng.normal(size=(v, n)).astype(np.float32)
    discount = np.where(kind == 1, 0.0, GAMMA).astype(np.float32)
    last = (kind > 0).astype(np.float32)
    return reward, discount, q_next, last


# Jitted, with rollout lengths from a small set: one compile per shape, lambda traced.
q_lambda_returns = jax.jit(pqn.q_lambda_returns)
rlax_lambda_returns = jax.jit(rlax.lambda_returns)
LENGTHS = st.sampled_from([1, 2, 5, 12])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    v=LENGTHS,
    n=st.sampled_from([1, 4]),
    lam=st.floats(0.0, 1.0),
)
def test_q_lambda_returns_match_the_episode_by_episode_reference(seed, v, n, lam):
    reward, discount, q_next, last = episode_stream(seed, v, n)
    got = q_lambda_returns(*map(jnp.asarray, (reward, discount, q_next, last)), lam)
    want = reference_returns(reward, discount, q_next, last, lam)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), v=LENGTHS, lam=st.floats(0.0, 1.0))
def test_q_lambda_returns_match_rlax_with_lambda_cut_at_episode_ends(seed, v, lam):
    # rlax's lambda_returns with a per-step lambda of lam * (1 - last) is the same recursion.
    reward, discount, q_next, last = episode_stream(seed, v, 3)
    got = np.asarray(q_lambda_returns(reward, discount, q_next, last, lam))
    for e in range(3):
        want = rlax_lambda_returns(
            reward[:, e], discount[:, e], q_next[:, e], lam * (1 - last[:, e])
        )
        np.testing.assert_allclose(got[:, e], np.asarray(want), rtol=1e-5, atol=1e-5)


def linear_q(params, obs):
    """A linear Q-network ``obs f32[B, D] @ W f32[D, A]``: gradients by hand."""
    return obs @ params


def rollout_with_ends():
    """One env, 4 steps: step 1 truncated (bootstraps from its final observation, which is not
    step 2's reset observation), step 2 terminated, step 3 goes on past the rollout."""
    obs = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [1.0, 1.0]], np.float32)
    final_1 = np.array([2.0, 0.0], np.float32)  # the truncated episode's true last observation
    next_obs = np.stack([obs[1], final_1, np.array([9.0, 9.0], np.float32), obs[0]])
    return Transition(
        obs=obs[:, None],
        action=np.array([[0], [1], [0], [1]], np.int32),
        reward=np.array([[1.0], [2.0], [3.0], [4.0]], np.float32),
        discount=np.array([[GAMMA], [GAMMA], [0.0], [GAMMA]], np.float32),
        next_obs=next_obs[:, None],
        last=np.array([[0.0], [1.0], [1.0], [0.0]], np.float32),
    )


def test_rollout_targets_bootstrap_from_the_true_final_observation_and_stop_at_ends():
    w = np.array([[1.0, 0.5], [0.0, 2.0]], np.float32)
    roll, lam = rollout_with_ends(), 0.5
    got = np.asarray(pqn.rollout_targets(linear_q, w, roll, lam))[:, 0]
    q_max = lambda o: float(np.max(o @ w))  # noqa: E731
    g3 = 4.0 + GAMMA * q_max(roll.next_obs[3, 0])  # the rollout's last step: full bootstrap
    g2 = 3.0  # terminated: no bootstrap, nothing from step 3 (a new episode)
    g1 = 2.0 + GAMMA * q_max(np.array([2.0, 0.0]))  # truncated: the final obs, not step 2's
    g0 = 1.0 + GAMMA * ((1 - lam) * q_max(roll.next_obs[0, 0]) + lam * g1)
    np.testing.assert_allclose(got, [g0, g1, g2, g3], rtol=1e-6)


def sgd_update(num_epochs: int, recompute: bool):
    """A rollout update of :func:`linear_q` by plain SGD (the identity direction), one
    minibatch per epoch, the half squared loss, no annealing."""
    return pqn.make_rollout_update(
        linear_q,
        losses.half_squared,
        optax.identity(),
        num_epochs=num_epochs,
        num_minibatches=1,
        recompute=recompute,
        total_updates=num_epochs,
        anneal=False,
    )


def test_one_rollout_update_is_the_hand_computed_gradient_step():
    # One epoch, one minibatch, SGD (the identity direction): W <- W - lr * dL/dW with
    # L = mean_b (G_b - Q(s_b, a_b))^2 / 2 and the targets G held constant (their gradient
    # through q_next stopped).
    w = np.array([[1.0, 0.5], [0.0, 2.0]], np.float32)
    roll, lam, lr = rollout_with_ends(), 0.5, 0.1
    update = sgd_update(num_epochs=1, recompute=False)
    learner = Learner(jnp.asarray(w), jnp.asarray(w), optax.identity().init(w))
    new, metrics = update(learner, roll, jax.random.PRNGKey(0), lam, lr, 0)
    g = np.asarray(pqn.rollout_targets(linear_q, w, roll, lam))[:, 0]
    x, a = roll.obs[:, 0], roll.action[:, 0]
    td = g - (x @ w)[np.arange(4), a]
    grad = np.zeros_like(w)
    for b in range(4):
        grad[:, a[b]] -= td[b] * x[b] / 4
    np.testing.assert_allclose(np.asarray(new.params), w - lr * grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(new.target_params), w)  # no target net
    np.testing.assert_allclose(float(metrics.loss[0]), np.mean(td**2) / 2, rtol=1e-5)


def test_recomputed_targets_follow_the_parameters_of_each_epoch():
    w = np.array([[1.0, 0.5], [0.0, 2.0]], np.float32)
    roll = rollout_with_ends()

    def two_epochs(recompute):
        update = sgd_update(num_epochs=2, recompute=recompute)
        learner = Learner(jnp.asarray(w), jnp.asarray(w), ())
        return update(learner, roll, jax.random.PRNGKey(0), 0.5, 0.1, 0)

    (fixed, m_fixed), (fresh, m_fresh) = two_epochs(False), two_epochs(True)
    # The first epoch is the same; the second differs only through its targets.
    np.testing.assert_allclose(float(m_fixed.loss[0]), float(m_fresh.loss[0]), rtol=1e-6)
    assert not np.allclose(np.asarray(fixed.params), np.asarray(fresh.params))


PQN = dict(
    env="CartPole-v1",
    variant="pqn",
    num_envs=2,
    train_every=8,  # 4 vector steps per rollout
    num_epochs=2,
    num_minibatches=2,
    total_steps=400,
    learning_starts=0,
    hidden_sizes=(16,),
    layer_norm=True,
    optimizer="radam",
    anneal_lr=True,
    max_grad_norm=10.0,
    reward_scale=0.1,
    q_lambda=0.8,
    num_chunks=2,
    eval_episodes=0,
    eps_duration=200,
)


@pytest.mark.slow
def test_pqn_learner_step_is_bit_identical_whichever_driver_calls_it():
    from dqn_jax.device_loop import make_train
    from dqn_jax.host_loop import make_host_agent

    device = make_train(Config(**PQN, backend="jax")).agent
    host = make_host_agent(Config(**PQN, backend="gymnasium")).agent
    key = core.split_run_key(jax.random.PRNGKey(3))[0]
    s_dev, s_host = jax.jit(device.init)(key), jax.jit(host.init)(key)
    assert s_dev.replay is None and s_dev.returns is None  # no replay is allocated
    initial = np.asarray(s_host.learner.params)
    end = lambda agent: jax.jit(lambda s, x, d: agent.end_iteration(s, x, d, True, False))  # noqa: E731
    end_dev, end_host = end(device), end(host)
    rng = np.random.default_rng(0)
    for i in range(5):
        steps = core.EnvSteps(
            rng.normal(size=(4, 2, 4)).astype(np.float32),
            rng.integers(0, 2, (4, 2)).astype(np.int32),
            rng.normal(size=(4, 2)).astype(np.float32),
            rng.normal(size=(4, 2, 4)).astype(np.float32),
            (rng.random((4, 2)) < 0.2).astype(np.float32),
            (rng.random((4, 2)) < 0.3).astype(np.float32),
        )
        s_dev, s_host = end_dev(s_dev, steps, 8 * (i + 1)), end_host(s_host, steps, 8 * (i + 1))
    np.testing.assert_array_equal(ravel_pytree(s_dev.learner.params)[0], s_host.learner.params)
    np.testing.assert_array_equal(np.asarray(s_dev.stats), np.asarray(s_host.stats))
    assert float(s_dev.stats[2]) == 5.0 and not np.array_equal(initial, s_host.learner.params)
    # No target network: its parameters never move.
    np.testing.assert_array_equal(s_host.learner.target_params, initial)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prioritized": True}, r"prioritized=True .*pqn.* no replay"),
        ({"n_step": 3}, r"n_step=3 .*Q\(lambda\)"),
        ({"noisy": True}, r"noisy=True .*not supported with pqn"),
        ({"prefill_episodes": 5}, r"prefill_episodes=5 .*no replay"),
        ({"train_every": 1}, r"train_every=1 .*pqn.*multiple of num_envs \(2\)"),
        ({"num_minibatches": 3}, r"num_minibatches=3 .*must divide .*train_every=8"),
        ({"q_lambda": 1.5}, r"q_lambda=1.5"),
        ({"reward_scale": 0.0}, r"reward_scale=0.0 .*> 0"),
        ({"variant": "ddqn", "num_epochs": 2, "learning_starts": 100}, r"num_epochs=2 .*only"),
    ],
)
def test_pqn_config_refuses_what_it_cannot_do(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config(**{**PQN, **changes})


def test_pqn_counts_its_updates_for_the_learning_rate_schedule():
    config = Config(**PQN)
    assert config.updates_per_iteration == 4  # 2 epochs x 2 minibatches
    assert core.num_updates(config) == 50 * 4  # 50 rollouts, all learning


@pytest.mark.slow
def test_pqn_stop_and_resume_is_bit_identical(tmp_path):
    # No replay in the state: parameters, RAdam's moments, keys, env states and counters resume
    # exactly.
    from dqn_jax.run import train

    quiet = dict(progress=False, echo=lambda s: None, checkpoint_every=1)
    config = Config(**{**PQN, "num_chunks": 5, "eval_episodes": 2}, num_seeds=2)
    full = train(config, tmp_path / "full", **quiet)
    first = train(config, tmp_path / "cut", stop_after_chunks=2, **quiet)
    assert first.summary == {"stopped_after_chunk": 2, "env_step": 160}
    resumed = train(config, tmp_path / "cut", resume=True, **quiet)
    assert_same_state(full.state, resumed.state)
    assert_same_files(tmp_path / "full", tmp_path / "cut")
    np.testing.assert_array_equal(full.eval_returns, resumed.eval_returns)
    halfway = ravel_pytree(first.state.agent.learner.params)[0]
    assert not np.array_equal(ravel_pytree(full.state.agent.learner.params)[0], halfway)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "gymnasium"])
def test_pqn_learns_cartpole_on_both_backends(backend, tmp_path):
    from dqn_jax.cli import main

    # A few thousand updates: the greedy policy must beat a uniform policy's ~22 steps by far.
    flags = [
        "--env", "CartPole-v1", "--variant", "pqn", "--backend", backend,
        "--num-envs", "8", "--train-every", "128", "--num-epochs", "2",
        "--num-minibatches", "2", "--total-steps", "30720", "--learning-starts", "0",
        "--layer-norm", "True", "--optimizer", "radam", "--lr", "2e-3", "--anneal-lr", "True",
        "--reward-scale", "0.1", "--q-lambda", "0.9", "--eps-duration", "10000",
        "--num-chunks", "2", "--eval-episodes", "5", "--no-progress", "--out", str(tmp_path / "r"),
    ]  # fmt: skip
    main(["train", *flags])
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_eval_return_mean"] > 100, summary["final_eval_return_mean"]
