"""Uniform replay: circular writes, wrap-around, sampling only filled slots."""

import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax.replay import Transition, uniform_replay


def batch(start, n):
    ids = jnp.arange(start, start + n, dtype=jnp.float32)
    return Transition(
        ids[:, None] * jnp.ones((1, 2)),
        ids.astype(jnp.int32),
        ids,
        jnp.full(n, 0.99),
        ids[:, None] * jnp.ones((1, 2)),
        jnp.zeros(n),
    )


def test_wraparound_overwrites_oldest():
    replay = uniform_replay(capacity=5, batch_size=4)
    state = replay.init(jax.tree.map(lambda x: x[0], batch(0, 1)))
    add = jax.jit(replay.add)
    state = add(state, batch(0, 3), None)  # slots 0,1,2 <- 0,1,2
    assert int(state.size) == 3 and int(state.ptr) == 3
    state = add(state, batch(3, 3), None)  # slots 3,4,0 <- 3,4,5
    assert int(state.size) == 5 and int(state.ptr) == 1
    np.testing.assert_array_equal(state.data.action, [5, 1, 2, 3, 4])
    state = add(state, batch(6, 3), None)  # slots 1,2,3 <- 6,7,8
    np.testing.assert_array_equal(state.data.action, [5, 6, 7, 8, 4])
    np.testing.assert_array_equal(state.data.obs[:, 0], [5, 6, 7, 8, 4])
    assert int(state.ptr) == 4


def test_sample_only_filled_slots_and_uniform():
    replay = uniform_replay(capacity=100, batch_size=4000)
    state = replay.init(jax.tree.map(lambda x: x[0], batch(0, 1)))
    state = replay.add(state, batch(10, 7), None)
    idx, sample, w = replay.sample(state, jax.random.PRNGKey(3), None)
    idx = np.asarray(idx)
    assert idx.min() >= 0 and idx.max() <= 6
    np.testing.assert_array_equal(np.asarray(sample.action), idx + 10)
    np.testing.assert_array_equal(np.asarray(w), 1.0)
    np.testing.assert_allclose(np.bincount(idx, minlength=7) / len(idx), 1 / 7, atol=0.03)
