"""Epsilon schedules (hand values) and epsilon-greedy frequencies."""

import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax import exploration


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


def test_epsilon_greedy_extremes_and_frequency():
    q = jnp.tile(jnp.array([[0.0, 5.0, 1.0, 2.0]]), (20_000, 1))
    key = jax.random.PRNGKey(0)
    greedy = exploration.epsilon_greedy(key, q, 0.0)
    assert np.all(np.asarray(greedy) == 1)
    uniform = np.asarray(exploration.epsilon_greedy(key, q, 1.0))
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / len(uniform), 0.25, atol=0.02)
    # eps = 0.2: greedy action with prob 0.8 + 0.2/4 = 0.85, each other 0.05
    mixed = np.asarray(exploration.epsilon_greedy(key, q, 0.2))
    freq = np.bincount(mixed, minlength=4) / len(mixed)
    np.testing.assert_allclose(freq, [0.05, 0.85, 0.05, 0.05], atol=0.015)
