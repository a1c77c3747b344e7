"""Scalar and Munchausen heads against plain NumPy references.

rlax 0.1.9 has no ``munchausen_q_learning``, so the Munchausen target is checked against a
NumPy transcription of Vieillard et al. 2020, eq. 2 only.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dqn_jax import heads, losses, targets
from dqn_jax.replay import Transition

SETTINGS = settings(max_examples=40, deadline=None)
KEY = jax.random.key(0)


def table_forward(params, obs, key=None, **kwargs):
    """A fake network: ``obs`` are row indices into the Q-value table ``params [S, A]``."""
    return params[obs]


def random_batch(rng, b, num_actions):
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    discount = np.where(rng.random(b) < 0.3, 0.0, rng.uniform(0.5, 1.0, size=b))
    return Transition(
        jnp.arange(b),
        jnp.asarray(rng.integers(0, num_actions, size=b), jnp.int32),
        f32(rng.normal(size=b)),
        f32(discount),
        jnp.arange(b, 2 * b),
        f32(discount == 0),
    )


def numpy_munchausen_target(q, q_next, action, reward, discount, tau, alpha, l0):
    """Vieillard et al. 2020, eq. 2, in float64: ``r + alpha * [tau ln pi(a|s)]_{l0}^0 +
    gamma * sum_a' pi(a'|s') (q(s', a') - tau ln pi(a'|s'))`` with ``pi = softmax(q / tau)``."""

    def log_softmax(x):
        z = x / tau
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    q, q_next = np.float64(q), np.float64(q_next)
    log_pi = log_softmax(q)[np.arange(len(action)), action]
    log_pi_next = log_softmax(q_next)
    soft_value = (np.exp(log_pi_next) * (q_next - tau * log_pi_next)).sum(-1)
    return reward + alpha * np.clip(tau * log_pi, l0, 0.0) + discount * soft_value


munchausen_target = jax.jit(heads.munchausen_target)


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([(1, 2), (6, 4)]),
    st.floats(0.01, 1.0),
    st.floats(0.0, 1.0),
    st.floats(-2.0, -0.01),
)
def test_munchausen_target_matches_numpy(seed, sizes, temperature, alpha, clip_min):
    b, a = sizes
    rng = np.random.default_rng(seed)
    q, q_next = rng.normal(size=(2, b, a)) * rng.uniform(0.1, 10.0)
    batch = random_batch(rng, b, a)
    args = (batch.action, batch.reward, batch.discount)
    ours = munchausen_target(
        jnp.float32(q), jnp.float32(q_next), *args, temperature, alpha, clip_min
    )
    want = numpy_munchausen_target(q, q_next, *map(np.asarray, args), temperature, alpha, clip_min)
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))


def test_munchausen_clip_is_active_and_inactive():
    # tau ln pi(a|s) for q = (0, 10) at tau 0.5: action 0 gets 0.5 * (-20 - ln(1 + e^-20)) ~ -10,
    # clipped to l0 = -1; action 1 gets ~ -1e-9, not clipped. The next state is terminal.
    q = jnp.array([[0.0, 10.0], [0.0, 10.0]])
    action = jnp.array([0, 1])
    reward = jnp.array([1.0, 1.0])
    out = munchausen_target(q, q, action, reward, jnp.zeros(2), 0.5, 0.9, -1.0)
    np.testing.assert_allclose(out, [1.0 - 0.9, 1.0], atol=1e-6)
    want = numpy_munchausen_target(q, q, np.asarray(action), 1.0, 0.0, 0.5, 0.9, -1.0)
    np.testing.assert_allclose(out, want, atol=1e-6)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from(["squared", "pseudo_huber", "huber"]))
def test_scalar_head_loss_is_loss_fn_of_the_td_error(seed, loss_name):
    rng = np.random.default_rng(seed)
    online, target = jnp.float32(rng.normal(size=(2, 10, 3)))
    batch = random_batch(rng, 5, 3)
    loss_fn = losses.LOSSES[loss_name]
    head = heads.scalar_head(targets.double_q_learning, loss_fn)
    terms = _scalar_loss[loss_name](online, target, batch, KEY)
    q_sa = online[batch.obs, batch.action]
    best = online[batch.next_obs].argmax(-1)
    bootstrap = target[batch.next_obs, best]
    td = batch.reward + batch.discount * bootstrap - q_sa
    np.testing.assert_allclose(terms.loss, loss_fn(td), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.priority, np.abs(td), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.q_sa, q_sa)
    np.testing.assert_array_equal(head.q_values(online), online)


_scalar_loss = {
    name: jax.jit(
        functools.partial(heads.scalar_head(targets.double_q_learning, fn).loss, table_forward)
    )
    for name, fn in losses.LOSSES.items()
}


def test_munchausen_head_reads_the_target_net_at_s_and_s_prime():
    rng = np.random.default_rng(3)
    online, target = jnp.float32(rng.normal(size=(2, 10, 3)))
    batch = random_batch(rng, 5, 3)
    head = heads.munchausen_head(losses.huber, 0.03, 0.9, -1.0)
    terms = jax.jit(head.loss, static_argnums=0)(table_forward, online, target, batch, KEY)
    want = numpy_munchausen_target(
        target[batch.obs],
        target[batch.next_obs],
        np.asarray(batch.action),
        np.asarray(batch.reward),
        np.asarray(batch.discount),
        0.03,
        0.9,
        -1.0,
    )
    td = want - online[batch.obs, batch.action]
    np.testing.assert_allclose(terms.priority, np.abs(td), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms.loss, losses.huber(jnp.float32(td)), rtol=1e-4, atol=1e-4)

    def mean_loss(params, target_params):
        return head.loss(table_forward, params, target_params, batch, KEY).loss.mean()

    grad = jax.jit(jax.grad(mean_loss, argnums=1))(online, target)
    np.testing.assert_array_equal(grad, 0.0)
