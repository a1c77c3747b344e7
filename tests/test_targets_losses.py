"""Targets and losses against values computed by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax import losses, targets

# Two transitions, three actions.
Q_ONLINE = jnp.array([[1.0, 3.0, 2.0], [0.5, -1.0, 4.0]])
Q_TARGET = jnp.array([[10.0, 20.0, 30.0], [-5.0, 7.0, 6.0]])
REWARD = jnp.array([1.0, -2.0])
DISCOUNT = jnp.array([0.9, 0.0])  # second transition is terminal


def test_q_learning_online_uses_max_of_online_net():
    # 1 + 0.9 * max(1, 3, 2) = 3.7 ; -2 + 0 * 4 = -2
    out = targets.q_learning_online(Q_ONLINE, Q_TARGET, REWARD, DISCOUNT)
    np.testing.assert_allclose(out, [3.7, -2.0], rtol=1e-6)


def test_q_learning_uses_max_of_target_net():
    # 1 + 0.9 * 30 = 28 ; terminal: -2
    out = targets.q_learning(Q_ONLINE, Q_TARGET, REWARD, DISCOUNT)
    np.testing.assert_allclose(out, [28.0, -2.0], rtol=1e-6)


def test_double_q_learning_evaluates_online_argmax_with_target_net():
    # online argmax = action 1 -> target 20: 1 + 0.9 * 20 = 19 ; terminal: -2
    out = targets.double_q_learning(Q_ONLINE, Q_TARGET, REWARD, DISCOUNT)
    np.testing.assert_allclose(out, [19.0, -2.0], rtol=1e-6)
    # Non-terminal second row: online argmax = action 2 -> target 6: -2 + 0.5 * 6 = 1
    out = targets.double_q_learning(Q_ONLINE, Q_TARGET, REWARD, jnp.array([0.9, 0.5]))
    np.testing.assert_allclose(out, [19.0, 1.0], rtol=1e-6)


def test_targets_reject_mismatched_shapes():
    with pytest.raises(AssertionError):
        targets.q_learning(Q_ONLINE, Q_TARGET[:1], REWARD, DISCOUNT)


TD = jnp.array([0.0, 0.5, -2.0, 3.0])


def test_squared():
    np.testing.assert_allclose(losses.squared(TD), [0.0, 0.25, 4.0, 9.0])


def test_pseudo_huber():
    # sqrt(1 + d^2) - 1: 0, sqrt(1.25) - 1, sqrt(5) - 1, sqrt(10) - 1
    expected = [0.0, 0.118033989, 1.236067977, 2.162277660]
    np.testing.assert_allclose(losses.pseudo_huber(TD), expected, rtol=1e-6)


def test_huber():
    # |d| <= 1: d^2 / 2 ; else |d| - 1/2
    np.testing.assert_allclose(losses.huber(TD), [0.0, 0.125, 1.5, 2.5], rtol=1e-6)
    # delta = 2: |d| <= 2 quadratic, 3 -> 2 * (3 - 1) = 4
    np.testing.assert_allclose(losses.huber(TD, delta=2.0), [0.0, 0.125, 2.0, 4.0], rtol=1e-6)
