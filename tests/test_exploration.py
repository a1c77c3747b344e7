"""Epsilon schedules (hand values) and epsilon-greedy frequencies (also of the exploration
plan both drivers act from)."""

import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax import exploration
from dqn_jax.agent import act_from_plan, exploration_plan


def test_exponential_matches_notebook_formula():
    # eps_min + (eps_max - eps_min) * exp(-decay * t) with the notebook's 0.01, 1.0, 0.001
    steps = np.array([0, 1000, 5000])
    expected = 0.01 + 0.99 * np.exp(-0.001 * steps)  # 1.0, 0.37420, 0.01667
    out = exploration.exponential_epsilon(steps, 0.01, 1.0, 0.001)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.374201, rtol=1e-5)


def test_linear_schedule_endpoints_and_midpoint():
    out = exploration.linear_epsilon(np.array([0, 125, 250, 1000]), 1.0, 0.05, 250)
    np.testing.assert_allclose(out, [1.0, 0.525, 0.05, 0.05], rtol=1e-6)


def test_exploration_plan_acts_epsilon_greedy_with_the_same_frequencies():
    # What both drivers act with: a plan drawn ahead (random action or -1 = greedy), then
    # act_from_plan: greedy at 0, uniform at 1, and at 0.2 the greedy action with probability
    # 0.8 + 0.2 / 4 = 0.85, each other 0.05.
    q = jnp.tile(jnp.array([[0.0, 5.0, 1.0, 2.0]]), (20_000, 1))
    uniforms = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 20_000))

    def actions(epsilon):
        plan = exploration_plan(uniforms, jnp.full((1,), epsilon, jnp.float32), 4)
        assert plan.shape == (1, 20_000) and plan.dtype == jnp.int32
        return np.asarray(act_from_plan(q, plan[0]))

    assert np.all(actions(0.0) == 1)
    uniform = actions(1.0)
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / len(uniform), 0.25, atol=0.02)
    mixed = actions(0.2)
    freq = np.bincount(mixed, minlength=4) / len(mixed)
    np.testing.assert_allclose(freq, [0.05, 0.85, 0.05, 0.05], atol=0.015)


def test_schedule_after_learning_starts_holds_eps_start_then_anneals_from_there():
    from dqn_jax.agent import epsilon_at
    from dqn_jax.config import Config

    steps = np.array([0, 500, 999, 1000, 1500, 2000, 9000])
    base = dict(learning_starts=1000, eps_start=1.0, eps_end=0.1, eps_duration=1000)
    shifted = Config(**base, eps_after_learning_starts=True)
    plain = Config(**base)
    expected = 1.0 - 0.9 * np.clip((steps - 1000) / 1000, 0.0, 1.0)  # DeepMind's schedule
    np.testing.assert_allclose(epsilon_at(shifted, steps), expected, rtol=1e-6)
    np.testing.assert_allclose(
        epsilon_at(plain, steps), 1.0 - 0.9 * np.clip(steps / 1000, 0, 1), rtol=1e-6
    )
    exp = Config(**base, exploration="exponential", eps_decay=0.01, eps_after_learning_starts=True)
    np.testing.assert_allclose(
        epsilon_at(exp, steps), 0.1 + 0.9 * np.exp(-0.01 * np.maximum(steps - 1000, 0)), rtol=1e-5
    )


def test_nature_dqn_preset_evaluates_at_0_05_and_anneals_after_the_replay_start():
    from dqn_jax.config import from_preset

    config = from_preset("nature-dqn")
    assert config.eval_epsilon == 0.05 and config.eps_after_learning_starts
    assert config.learning_starts == 50_000
