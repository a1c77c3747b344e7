"""Distributional heads (C51, QR-DQN, IQN): hand-computed values, rlax as an oracle, properties.

rlax conventions (0.1.9), all unbatched, matched here through ``jax.vmap``:

- ``categorical_l2_project(z_p, probs, z_q)``: the source atoms come first and the fixed support
  last; the same numbers as :func:`categorical_projection` on an evenly spaced support.
- ``categorical_double_q_learning(atoms_tm1, logits_tm1 [A, M], a, r, d, atoms_t, logits_t,
  q_t_selector [A])`` returns the cross-entropy of the projected target: the selector is the
  online net's Q-values at ``s'`` and ``logits_t`` the target net's, as in our head.
- ``quantile_regression_loss(dist_src, tau_src, dist_target, huber_param)``: sum over the
  source quantiles of the mean over the targets, with the plain Huber (no ``1 / kappa``): ours
  times ``kappa`` equals it; ``huber_param = 0`` and our ``kappa = 0`` are both ``|u|``.
- ``quantile_q_learning(dist_q_tm1 [N, A], tau [N], a, r, d, dist_q_t_selector [K, A],
  dist_q_t [N', A], huber_param)``: the quantile axis first (ours is ``[B, A, N]``), ``a*`` the
  argmax of the selector's mean; QR-DQN passes the target net as both selector and target.
"""

import functools
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dqn_jax import distributional as dist
from dqn_jax.replay import Transition

with warnings.catch_warnings():  # rlax's distrax and TFP warn about deprecations on import
    warnings.simplefilter("ignore", DeprecationWarning)
    import rlax

SETTINGS = settings(max_examples=25, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)
KEY = jax.random.key(0)
# rlax's cross-entropy goes through distrax, which warns that it will be deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def table_forward(params, obs, key=None, **kwargs):
    """A fake network: ``obs`` are row indices into the output table ``params``."""
    return params[obs]


def iqn_forward(params, obs, key=None, num_taus=8):
    """A fake IQN: quantiles ``loc + scale * tau`` per state row and action, at fractions drawn
    from ``key`` (midpoints for ``None``), ``(f32[B, T, A], f32[B, T])``."""
    if key is None:
        taus = jnp.broadcast_to(dist.quantile_midpoints(num_taus), (obs.shape[0], num_taus))
    else:
        taus = jax.random.uniform(key, (obs.shape[0], num_taus))
    loc, scale = params["loc"][obs], params["scale"][obs]
    return loc[:, None, :] + scale[:, None, :] * taus[:, :, None], taus


def midpoint_iqn_forward(params, obs, key=None, num_taus=8):
    return iqn_forward(params, obs, None, num_taus)


def batch_of(action, reward, discount, obs=None, next_obs=None):
    """A :class:`Transition` of ``B`` transitions from state rows ``obs`` to ``next_obs``
    (default: ``0..B-1`` to ``B..2B-1``)."""
    b = len(action)
    obs = jnp.arange(b) if obs is None else jnp.asarray(obs)
    next_obs = jnp.arange(b, 2 * b) if next_obs is None else jnp.asarray(next_obs)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return Transition(
        obs,
        jnp.asarray(action, jnp.int32),
        f32(reward),
        f32(discount),
        next_obs,
        f32(np.asarray(discount) == 0),
    )


def random_batch(rng, b, num_actions, terminal_prob=0.3):
    reward = rng.normal(size=b) * 3.0
    discount = np.where(rng.random(b) < terminal_prob, 0.0, rng.uniform(0.5, 1.0, size=b))
    return batch_of(rng.integers(0, num_actions, size=b), reward, discount)


def support_and_samples(seed, num_atoms, k, b=6):
    """A random evenly spaced support and ``b`` random distributions on atoms reaching past it."""
    rng = np.random.default_rng(seed)
    v_min = -rng.uniform(0.1, 20.0)
    v_max = v_min + rng.uniform(0.1, 40.0)
    support = jnp.linspace(v_min, v_max, num_atoms, dtype=jnp.float32)
    spread = 0.75 * (v_max - v_min)
    target_support = rng.uniform(v_min - spread, v_max + spread, size=(b, k))
    probs = rng.dirichlet(np.ones(k), size=b)
    return support, jnp.float32(target_support), jnp.float32(probs)


# --- categorical projection ----------------------------------------------------------------

project = jax.jit(dist.categorical_projection)
rlax_project = jax.jit(jax.vmap(rlax.categorical_l2_project, in_axes=(0, 0, None)))


def test_projection_by_hand():
    # Support 0, 1, 2. Atom 0.5 splits its 0.2 evenly between 0 and 1, atom 1.0 puts its 0.3 on
    # 1, atom 3.0 is clipped to 2 and puts its 0.5 there.
    out = project(
        jnp.array([0.0, 1.0, 2.0]), jnp.array([[0.5, 1.0, 3.0]]), jnp.array([[0.2, 0.3, 0.5]])
    )
    np.testing.assert_allclose(out, [[0.1, 0.4, 0.5]], atol=1e-7)


@SETTINGS
@given(SEEDS, st.sampled_from([(2, 3), (11, 11)]))
def test_projection_matches_rlax_and_conserves_mass(seed, sizes):
    num_atoms, k = sizes  # support atoms, source atoms
    support, target_support, probs = support_and_samples(seed, num_atoms, k)
    out = project(support, target_support, probs)
    # Both float32 formulas place an atom to about eps32 * |v| / spacing atom units, which on a
    # narrow support far from 0 moves mass by more than 1e-5 (measured: 1.6e-5 for rlax at
    # seed 601, where ours is within 6e-8 of the float64 reference).
    v = np.abs(np.asarray(support)).max()
    atol = 1e-5 + 4 * np.finfo(np.float32).eps * v / float(support[1] - support[0])
    np.testing.assert_allclose(out, numpy_project(support, target_support, probs), atol=atol)
    np.testing.assert_allclose(out, rlax_project(target_support, probs, support), atol=atol)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert (out >= 0).all()


def numpy_project(support, target_support, probs):
    """The categorical projection in float64: each atom, clipped to the support, splits its
    mass between its two neighbours in proportion to closeness."""
    z, x, p = (np.float64(np.asarray(a)) for a in (support, target_support, probs))
    pos = (np.clip(x, z[0], z[-1]) - z[0]) / (z[1] - z[0])  # [B, K] in atom units
    weight = np.clip(1 - np.abs(pos[:, :, None] - np.arange(len(z))), 0, 1)  # [B, K, N]
    return np.einsum("bk,bkn->bn", p, weight)


def test_projection_clips_to_the_support():
    support = jnp.linspace(-10.0, 10.0, 51)
    probs = jnp.full((2, 51), 1.0 / 51)
    target_support = jnp.stack([1e6 + support, -1e6 + support])  # a huge reward, either sign
    out = project(support, target_support, probs)
    np.testing.assert_allclose(out[0], jax.nn.one_hot(50, 51), atol=1e-6)
    np.testing.assert_allclose(out[1], jax.nn.one_hot(0, 51), atol=1e-6)


def test_projection_keeps_the_mass_on_a_float32_support():
    # A narrow support far from 0: float32 rounding makes its spacings unequal, yet an atom
    # clipped to v_max puts all its mass there and none on the atom before.
    support = jnp.linspace(-11.1314125, -9.681446, 11, dtype=jnp.float32)
    out = project(support, jnp.array([[100.0, -9.7]]), jnp.array([[0.5, 0.5]]))
    assert out[0, -1] > 0.5 and out[0, -2] < 0.5
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-6)
    out = project(support, jnp.array([[100.0]]), jnp.array([[1.0]]))
    np.testing.assert_array_equal(out[0, :-1], 0.0)
    np.testing.assert_allclose(out[0, -1], 1.0, atol=1e-6)


def test_terminal_transition_puts_all_mass_at_the_reward():
    support = jnp.linspace(-2.0, 2.0, 5)  # dz = 1
    probs = jax.nn.softmax(jnp.arange(5.0))
    discount = 0.0
    # The reward 1.0 is the atom 3: all mass there. The reward -0.25 lies between atoms 1 (-1)
    # and 2 (0), at 3/4 of the way: 1/4 of the mass to atom 1 and 3/4 to atom 2.
    reward = jnp.array([[1.0], [-0.25]])
    out = project(support, reward + discount * support, jnp.stack([probs, probs]))
    np.testing.assert_array_equal(out[0], jax.nn.one_hot(3, 5))
    np.testing.assert_allclose(out[1], [0.0, 0.25, 0.75, 0.0, 0.0], atol=1e-6)


# --- categorical double Q-learning ---------------------------------------------------------

rlax_categorical = jax.jit(
    jax.vmap(rlax.categorical_double_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0, 0))
)


@SETTINGS
@given(SEEDS, st.sampled_from([2, 11]))
def test_categorical_double_q_learning_matches_rlax(seed, num_atoms):
    support, _, _ = support_and_samples(seed, num_atoms, 1)
    rng = np.random.default_rng(seed)
    b, a = 7, 3
    logits, logits_next = jnp.float32(rng.normal(size=(2, b, a, num_atoms)) * 2.0)
    q_next_selector = jnp.float32(rng.normal(size=(b, a)))
    batch = random_batch(rng, b, a)
    batch = batch._replace(reward=batch.reward * (support[-1] - support[0]))
    args = (support, logits, batch.action, batch.reward, batch.discount)
    ours = jax.jit(dist.categorical_double_q_learning)(*args, logits_next, q_next_selector)
    theirs = rlax_categorical(*args, support, logits_next, q_next_selector)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


# Two states at s, two at s' (rows 2, 3); two actions; support -1, 0, 1.
_NEG = -1e9  # a logit with probability exactly 0
CAT_ONLINE = jnp.log(
    jnp.array(
        [
            [[1.0, 1.0, 1.0], [1.0, 1.0, 2.0]],  # s of transition 0: action 1 is [.25, .25, .5]
            [[1.0, 1.0, 2.0], [1.0, 1.0, 1.0]],  # s of transition 1: action 0 is [.25, .25, .5]
            [[2.0, 1.0, 1.0], [1.0, 1.0, 2.0]],  # s' of 0: action 1 has the larger mean
            [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],  # s' of 1 (terminal)
        ]
    )
)
CAT_TARGET = jnp.array(
    [
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[_NEG, _NEG, 0.0], [0.0, _NEG, 0.0]],  # s': action 0 all on +1, action 1 half -1/+1
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ]
)
CAT_BATCH = batch_of(action=[1, 0], reward=[0.5, -0.5], discount=[0.5, 0.0])


def test_categorical_head_by_hand():
    head = dist.categorical_head(3, -1.0, 1.0)
    terms = jax.jit(head.loss, static_argnums=0)(
        table_forward, CAT_ONLINE, CAT_TARGET, CAT_BATCH, KEY
    )
    # Transition 0: the online net picks action 1 at s' (mean 0.25 > -0.25); the target net's
    # distribution there is half on -1 and half on +1. Tz = 0.5 + 0.5 * (-1, +1) = (0, 1): the
    # target is [0, .5, .5] and the prediction [.25, .25, .5]:
    # -(.5 log .25 + .5 log .5) = 1.5 log 2. (The target net's own argmax, action 0, would give
    # [0, 0, 1] and log 2.)
    # Transition 1 is terminal with reward -0.5: target [.5, .5, 0], prediction
    # [.25, .25, .5]: -(.5 log .25 + .5 log .25) = 2 log 2.
    expected = np.log(2.0) * np.array([1.5, 2.0])
    np.testing.assert_allclose(terms.loss, expected, rtol=1e-6)
    np.testing.assert_allclose(terms.priority, expected, rtol=1e-6)
    np.testing.assert_allclose(terms.q_sa, [0.25, 0.25], atol=1e-6)  # .5 * 1 - .25 * 1
    q = head.q_values(CAT_ONLINE[2:3])
    np.testing.assert_allclose(q, [[-0.25, 0.25]], atol=1e-6)
    assert head.act_kwargs == {}


def test_categorical_head_without_double_q_takes_the_target_nets_action():
    head = dist.categorical_head(3, -1.0, 1.0, double_q=False)
    terms = jax.jit(head.loss, static_argnums=0)(
        table_forward, CAT_ONLINE, CAT_TARGET, CAT_BATCH, KEY
    )
    # Transition 0: the target net's own argmax at s' is action 0 (mean 1 > 0), all on +1:
    # Tz = 0.5 + 0.5 = 1, target [0, 0, 1], prediction [.25, .25, .5]: -log .5 = log 2.
    # Transition 1 is terminal, as in test_categorical_head_by_hand: 2 log 2.
    np.testing.assert_allclose(terms.loss, np.log(2.0) * np.array([1.0, 2.0]), rtol=1e-6)


rlax_categorical_q = jax.jit(
    jax.vmap(rlax.categorical_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0))
)


@pytest.mark.parametrize("double_q", [True, False])
def test_categorical_head_matches_rlax(double_q):
    """Double-Q against ``categorical_double_q_learning`` (the online net's Q-values at s' as
    the selector); the target net's own action against ``categorical_q_learning``."""
    head = dist.categorical_head(11, -5.0, 5.0, double_q=double_q)
    atoms = jnp.linspace(-5.0, 5.0, 11)
    loss = jax.jit(functools.partial(head.loss, table_forward))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        online, target = jnp.float32(rng.normal(size=(2, 10, 4, 11)) * 2.0)
        batch = random_batch(rng, 5, 4)
        terms = loss(online, target, batch, KEY)
        args = (atoms, online[batch.obs], batch.action, batch.reward, batch.discount)
        args += (atoms, target[batch.next_obs])
        if double_q:
            theirs = rlax_categorical(*args, head.q_values(online[batch.next_obs]))
        else:
            theirs = rlax_categorical_q(*args)
        np.testing.assert_allclose(terms.loss, theirs, rtol=1e-5, atol=1e-6)


def test_categorical_head_rejects_a_degenerate_support():
    with pytest.raises(ValueError):
        dist.categorical_head(1, -1.0, 1.0)
    with pytest.raises(ValueError):
        dist.categorical_head(51, 1.0, 1.0)


# --- quantile Huber loss -------------------------------------------------------------------

huber_loss = jax.jit(dist.quantile_huber_loss, static_argnames="kappa")


@pytest.mark.parametrize(("kappa", "expected"), [(0.0, 1.25), (1.0, 0.75), (2.0, 0.4375)])
def test_quantile_huber_loss_by_hand(kappa, expected):
    # theta = (1, 2) at tau = (.25, .75), targets (0, 3): u = (-1, 2) for theta_0, (-2, 1) for
    # theta_1; the weights are 1 - tau for u < 0 and tau otherwise.
    # kappa 0 (|u|): (.75 * 1 + .25 * 2) / 2 + (.25 * 2 + .75 * 1) / 2 = 1.25.
    # kappa 1 (huber 0.5, 1.5): (.75 * .5 + .25 * 1.5) / 2 * 2 = 0.75.
    # kappa 2 (u^2 / 2 / 2: 0.25, 1): (.75 * .25 + .25 * 1) / 2 * 2 = 0.4375.
    out = huber_loss(
        jnp.array([[1.0, 2.0]]), jnp.array([0.25, 0.75]), jnp.array([[0.0, 3.0]]), kappa=kappa
    )
    np.testing.assert_allclose(out, [expected], rtol=1e-6)


rlax_qr_loss = jax.jit(
    jax.vmap(rlax.quantile_regression_loss, in_axes=(0, 0, 0, None)), static_argnums=3
)


@SETTINGS
@given(SEEDS, st.sampled_from([0.0, 1.0, 3.0]), st.sampled_from([(1, 2), (5, 3)]))
def test_quantile_huber_loss_matches_rlax(seed, kappa, sizes):
    n, n_prime = sizes
    rng = np.random.default_rng(seed)
    theta = jnp.float32(rng.normal(size=(6, n)) * 2.0)
    taus = jnp.float32(rng.random((6, n)))
    targets = jnp.float32(rng.normal(size=(6, n_prime)) * 2.0)
    ours = huber_loss(theta, taus, targets, kappa=kappa)
    theirs = rlax_qr_loss(theta, taus, targets, kappa)
    np.testing.assert_allclose(ours * (kappa or 1.0), theirs, rtol=1e-5, atol=1e-6)


def test_quantile_huber_loss_weights_by_tau():
    taus = jnp.array([0.1, 0.5, 0.9])
    theta = jnp.array([[0.0, 0.0, 0.0]])
    grad = jax.jit(jax.grad(lambda th, t: dist.quantile_huber_loss(th, taus, t).sum()))
    # Targets beyond kappa = 1 on either side: the Huber slope is 1, so each theta_i gets the
    # weight -tau_i (all targets above: push it up) or 1 - tau_i (all below: push it down).
    np.testing.assert_allclose(grad(theta, jnp.array([[2.0, 5.0]])), -taus[None], rtol=1e-6)
    np.testing.assert_allclose(grad(theta, jnp.array([[-2.0, -5.0]])), 1 - taus[None], rtol=1e-6)
    # Inside kappa the slope is u: targets 0.5 above give -tau_i * 0.5.
    np.testing.assert_allclose(grad(theta, jnp.array([[0.5]])), -0.5 * taus[None], rtol=1e-6)


def test_quantile_huber_loss_shape_checks():
    with pytest.raises(AssertionError):
        dist.quantile_huber_loss(jnp.zeros((2, 3)), jnp.zeros(4), jnp.zeros((2, 5)))
    with pytest.raises(AssertionError):
        dist.quantile_huber_loss(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros((3, 5)))


# --- quantile Q-learning (QR-DQN, IQN) -----------------------------------------------------

rlax_quantile = jax.jit(
    jax.vmap(
        lambda *args: rlax.quantile_q_learning(*args, huber_param=1.0),
        in_axes=(0, None, 0, 0, 0, 0, 0),
    )
)


def test_quantile_head_by_hand():
    head = dist.quantile_head(2)  # tau_hat = (.25, .75)
    online = jnp.array(
        [
            [[0.0, 0.0], [0.0, 2.0]],  # s: action 1 has quantiles (0, 2)
            [[9.0, 9.0], [0.0, 0.0]],  # s' (online): would pick action 0
        ]
    )
    target = jnp.array(
        [
            [[0.0, 0.0], [0.0, 0.0]],
            [[1.0, 3.0], [2.0, 2.5]],  # s' (target): means 2 and 2.25, so a* = 1
        ]
    )
    batch = batch_of(action=[1], reward=[0.5], discount=[0.5])
    terms = jax.jit(head.loss, static_argnums=0)(table_forward, online, target, batch, KEY)
    # T = 0.5 + 0.5 * (2, 2.5) = (1.5, 1.75).
    # theta_0 = 0, tau .25: u = (1.5, 1.75), huber (1, 1.25), mean 1.125, times .25 = 0.28125.
    # theta_1 = 2, tau .75: u = (-.5, -.25), huber (.125, .03125), mean .078125, times .25
    # (1 - tau) = 0.01953125.
    np.testing.assert_allclose(terms.loss, [0.30078125], rtol=1e-6)
    np.testing.assert_allclose(terms.priority, terms.loss)
    np.testing.assert_allclose(terms.q_sa, [1.0])
    np.testing.assert_allclose(head.q_values(target[1:]), [[2.0, 2.25]])
    # With double_q the online net picks a* = 0 at s' (mean 9): T = 0.5 + 0.5 * (1, 3) = (1, 2).
    # theta_0 = 0, tau .25: u = (1, 2), huber (.5, 1.5), mean 1, times .25 = .25.
    # theta_1 = 2, tau .75: u = (-1, 0), huber (.5, 0), mean .25, times .25 = .0625.
    double = dist.quantile_head(2, double_q=True)
    terms = jax.jit(double.loss, static_argnums=0)(table_forward, online, target, batch, KEY)
    np.testing.assert_allclose(terms.loss, [0.3125], rtol=1e-6)


@SETTINGS
@given(SEEDS, st.sampled_from([1, 5]))
def test_quantile_q_learning_matches_rlax(seed, n):
    rng = np.random.default_rng(seed)
    b, a, k, n_prime = 6, 3, 4, 2
    quantiles = jnp.float32(rng.normal(size=(b, a, n)) * 2.0)
    selector = jnp.float32(rng.normal(size=(b, a, k)))
    quantiles_next = jnp.float32(rng.normal(size=(b, a, n_prime)) * 2.0)
    taus = dist.quantile_midpoints(n)
    batch = random_batch(rng, b, a)
    args = (batch.action, batch.reward, batch.discount)
    ours = jax.jit(dist.quantile_q_learning)(quantiles, taus, *args, selector, quantiles_next)
    t = functools.partial(jnp.swapaxes, axis1=1, axis2=2)  # rlax: [N, A] per transition
    theirs = rlax_quantile(t(quantiles), taus, *args, t(selector), t(quantiles_next))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_quantile_head_matches_rlax():
    head = dist.quantile_head(8)
    loss = jax.jit(functools.partial(head.loss, table_forward))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        online, target = jnp.float32(rng.normal(size=(2, 10, 4, 8)) * 2.0)
        batch = random_batch(rng, 5, 4)
        terms = loss(online, target, batch, KEY)
        t_next = jnp.swapaxes(target[batch.next_obs], 1, 2)
        theirs = rlax_quantile(
            jnp.swapaxes(online[batch.obs], 1, 2),
            dist.quantile_midpoints(8),
            batch.action,
            batch.reward,
            batch.discount,
            t_next,
            t_next,
        )
        np.testing.assert_allclose(terms.loss, theirs, rtol=1e-5, atol=1e-6)


IQN_ONLINE = {
    "loc": jnp.array([[0.0, 1.0], [0.0, 10.0]]),  # s; s' (would pick action 1)
    "scale": jnp.array([[1.0, 1.0], [0.0, 0.0]]),
}
IQN_TARGET = {
    "loc": jnp.array([[0.0, 0.0], [2.0, 0.0]]),  # s' (target): means 3 and 0, so a* = 0
    "scale": jnp.array([[0.0, 0.0], [2.0, 0.0]]),
}


def test_iqn_head_by_hand():
    head = dist.iqn_head(2, 2, 3)
    batch = batch_of(action=[0], reward=[0.0], discount=[0.5])
    terms = jax.jit(head.loss, static_argnums=0)(
        midpoint_iqn_forward, IQN_ONLINE, IQN_TARGET, batch, KEY
    )
    # Midpoint taus (.25, .75): theta = (.25, .75); target quantiles at a* = 0: 2 + 2 * tau =
    # (2.5, 3.5), T = 0.5 * that = (1.25, 1.75); all u > 0, so the weights are tau.
    # theta_0: u = (1, 1.5), huber (.5, 1), mean .75, times .25 = .1875.
    # theta_1: u = (.5, 1), huber (.125, .5), mean .3125, times .75 = .234375.
    np.testing.assert_allclose(terms.loss, [0.421875], rtol=1e-6)
    np.testing.assert_allclose(terms.priority, terms.loss)
    np.testing.assert_allclose(terms.q_sa, [0.5])
    assert head.act_kwargs == {"num_taus": 3}
    out = iqn_forward(IQN_TARGET, jnp.array([1]), None, **head.act_kwargs)
    np.testing.assert_allclose(head.q_values(out), [[3.0, 0.0]])


def test_iqn_head_draws_n_k_and_n_prime_fractions():
    calls = []

    def recording_forward(params, obs, key=None, num_taus=8):
        calls.append(
            ("online" if params is IQN_ONLINE else "target", int(np.asarray(obs)[0]), num_taus)
        )
        return iqn_forward(params, obs, key, num_taus)

    batch = batch_of(action=[0], reward=[0.0], discount=[0.5])
    head = dist.iqn_head(5, 7, 3)
    # Tracing runs the Python calls once, with the parameters and batch as constants.
    jax.make_jaxpr(lambda key: head.loss(recording_forward, IQN_ONLINE, IQN_TARGET, batch, key))(
        KEY
    )
    assert calls == [("online", 0, 5), ("target", 1, 3), ("target", 1, 7)]
    calls.clear()
    double = dist.iqn_head(5, 7, 3, double_q=True)  # a* from the online net's K fractions
    jax.make_jaxpr(lambda key: double.loss(recording_forward, IQN_ONLINE, IQN_TARGET, batch, key))(
        KEY
    )
    assert calls == [("online", 0, 5), ("online", 1, 3), ("target", 1, 7)]


def test_iqn_head_matches_rlax():
    n, n_prime, k = 6, 5, 4
    head = dist.iqn_head(n, n_prime, k)
    loss = jax.jit(functools.partial(head.loss, iqn_forward))

    @jax.jit
    def rlax_iqn(online, target, batch, key):
        # The head's three draws: the online pass, the K selector fractions, the N' targets.
        k_obs, k_select, k_target = jax.random.split(key, 3)
        quantiles, taus = iqn_forward(online, batch.obs, k_obs, n)
        selector, _ = iqn_forward(target, batch.next_obs, k_select, k)
        quantiles_next, _ = iqn_forward(target, batch.next_obs, k_target, n_prime)
        args = (quantiles, taus, batch.action, batch.reward, batch.discount)
        return jax.vmap(functools.partial(rlax.quantile_q_learning, huber_param=1.0))(
            *args, selector, quantiles_next
        )

    for seed in range(3):
        rng = np.random.default_rng(seed)
        online, target = (
            {
                "loc": jnp.float32(rng.normal(size=(10, 3))),
                "scale": jnp.float32(rng.normal(size=(10, 3))),
            }
            for _ in range(2)
        )
        batch = random_batch(rng, 5, 3)
        key = jax.random.key(seed)
        theirs = rlax_iqn(online, target, batch, key)
        np.testing.assert_allclose(
            loss(online, target, batch, key).loss, theirs, rtol=1e-5, atol=1e-6
        )


# --- every head: gradients, jit, vmap ------------------------------------------------------


def _head_cases():
    """``(name, head, forward, online, target, batch)`` with random parameters."""
    rng = np.random.default_rng(7)
    batch = random_batch(rng, 4, 3)

    def table(m):
        return jnp.float32(rng.normal(size=(8, 3, m)))

    def params():
        return {
            "loc": jnp.float32(rng.normal(size=(8, 3))),
            "scale": jnp.float32(rng.random((8, 3))),
        }

    return [
        (
            "categorical",
            dist.categorical_head(5, -2.0, 2.0),
            table_forward,
            table(5),
            table(5),
            batch,
        ),
        ("quantile", dist.quantile_head(4), table_forward, table(4), table(4), batch),
        ("iqn", dist.iqn_head(4, 3, 2), iqn_forward, params(), params(), batch),
        (
            "categorical-target-selects",
            dist.categorical_head(5, -2.0, 2.0, double_q=False),
            table_forward,
            table(5),
            table(5),
            batch,
        ),
        (
            "quantile-double",
            dist.quantile_head(4, double_q=True),
            table_forward,
            table(4),
            table(4),
            batch,
        ),
        (
            "iqn-double",
            dist.iqn_head(4, 3, 2, double_q=True),
            iqn_forward,
            params(),
            params(),
            batch,
        ),
    ]


HEAD_CASES = _head_cases()
HEAD_IDS = [case[0] for case in HEAD_CASES]


@pytest.mark.parametrize("case", HEAD_CASES, ids=HEAD_IDS)
def test_gradients_flow_only_through_the_online_outputs(case):
    _, head, forward, online, target, batch = case

    def mean_loss(params, target_params):
        return head.loss(forward, params, target_params, batch, KEY).loss.mean()

    grad_online, grad_target = jax.jit(jax.grad(mean_loss, argnums=(0, 1)))(online, target)
    for leaf in jax.tree.leaves(grad_target):
        np.testing.assert_array_equal(leaf, 0.0)
    assert any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(grad_online))


@pytest.mark.parametrize("case", HEAD_CASES, ids=HEAD_IDS)
def test_heads_run_under_jit_and_vmap(case):
    _, head, forward, online, target, batch = case
    seeds = 3

    def stack(tree):
        return jax.tree.map(lambda x: jnp.stack([x] * seeds), tree)

    # Each seed gets its own parameters (scaled) and key.
    scales = jnp.arange(1.0, seeds + 1.0)
    online_s = jax.tree.map(
        lambda x: x * scales.reshape((-1,) + (1,) * (x.ndim - 1)), stack(online)
    )
    keys = jax.random.split(KEY, seeds)
    loss = jax.jit(jax.vmap(functools.partial(head.loss, forward)))
    single = jax.jit(head.loss, static_argnums=0)
    terms = loss(online_s, stack(target), stack(batch), keys)
    chex.assert_shape(terms, (seeds, 4))
    for i in range(seeds):
        online_i = jax.tree.map(lambda x, i=i: x[i], online_s)
        one = single(forward, online_i, target, batch, keys[i])
        for got, want in zip(terms, one, strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    assert (terms.priority >= 0).all()
    np.testing.assert_array_equal(terms.priority, terms.loss)
    out = forward(online, batch.obs, None, **head.act_kwargs)
    chex.assert_shape(jax.jit(head.q_values)(out), (4, 3))
