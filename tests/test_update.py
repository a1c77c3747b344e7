"""The update itself, by hand: a linear Q-network and the identity optimizer, so the TD errors,
the gradient and the new parameters are a few lines of NumPy (float64).

Each check is a plain function (``check_*``) that the test calls and that
``tests/test_mutations.py`` calls again on deliberately broken code, to show it would fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqn_jax import heads, losses, per, sumtree, targets
from dqn_jax.agent import EnvSteps, first_update_index, make_agent, num_updates
from dqn_jax.config import Config
from dqn_jax.envs import EnvSpec
from dqn_jax.learner import Learner, annealed_lr, make_optimizer, make_update, update_target
from dqn_jax.replay import Replay, Transition

B, D, A = 6, 3, 4  # batch, observation size, actions
LR = 0.1


def linear(params, obs, key=None, **kwargs):
    """``Q(s) = s @ w + b``: ``obs f32[B, D]`` -> ``f32[B, A]``."""
    return obs @ params["w"] + params["b"]


def random_problem(seed: int):
    """Online and target parameters and a batch with one terminal transition."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(D, A)), "b": rng.normal(size=A)}
    target_params = {"w": rng.normal(size=(D, A)), "b": rng.normal(size=A)}
    discount = np.full(B, 0.9)
    discount[1] = 0.0
    batch = Transition(
        obs=rng.normal(size=(B, D)),
        action=rng.integers(0, A, size=B),
        reward=rng.normal(size=B),
        discount=discount,
        next_obs=rng.normal(size=(B, D)),
        last=np.float64(discount == 0),
    )
    return params, target_params, batch


def f32(tree):
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.int32 if x.dtype.kind == "i" else jnp.float32), tree
    )


def fixed_replay(batch: Transition, weights: np.ndarray) -> Replay:
    """A replay that always samples ``batch`` (slots ``0..B-1``) with ``weights``; its state is
    ``f32[B]``, the last priority written to each slot."""
    indices = jnp.arange(B)
    batch, weights = f32(batch), jnp.float32(weights)
    return Replay(
        init=lambda example: jnp.full(B, -1.0, jnp.float32),
        add=lambda state, transitions, abs_td=None: state,
        sample=lambda state, key, beta=None: (indices, batch, weights),
        update=lambda state, idx, abs_td: state.at[idx].set(abs_td),
    )


# ------------------------------------------------------------------ the NumPy reference

NUMPY_TARGETS = {
    "q_learning_online": lambda on, tg, r, d: r + d * on.max(1),
    "q_learning": lambda on, tg, r, d: r + d * tg.max(1),
    "double_q_learning": lambda on, tg, r, d: r + d * tg[np.arange(len(r)), on.argmax(1)],
}
NUMPY_LOSSES = {  # (loss, d loss / d td)
    "squared": (lambda td: td**2, lambda td: 2 * td),
    "pseudo_huber": (lambda td: np.sqrt(1 + td**2) - 1, lambda td: td / np.sqrt(1 + td**2)),
}


def numpy_step(params, target_params, batch, weights, target_name, loss_name, lr):
    """``(new params, td f32[B], weighted mean loss)`` of one SGD step on
    ``mean(weights * loss(td))`` with the target held fixed."""
    q = batch.obs @ params["w"] + params["b"]
    q_next = batch.next_obs @ params["w"] + params["b"]
    q_next_target = batch.next_obs @ target_params["w"] + target_params["b"]
    target = NUMPY_TARGETS[target_name](q_next, q_next_target, batch.reward, batch.discount)
    rows = np.arange(B)
    td = target - q[rows, batch.action]
    loss, dloss = NUMPY_LOSSES[loss_name]
    dq_sa = -weights * dloss(td) / B  # d mean-loss / d Q(s_i, a_i)
    onehot = np.eye(A)[batch.action] * dq_sa[:, None]  # [B, A]
    grad = {"w": batch.obs.T @ onehot, "b": onehot.sum(0)}
    new = {k: params[k] - lr * grad[k] for k in params}
    return new, td, np.mean(weights * loss(td))


def run_update(params, target_params, replay, replay_state, target_name, loss_name, beta=1.0):
    head = heads.scalar_head(getattr(targets, target_name), losses.LOSSES[loss_name])
    optimizer = optax.identity()
    update = jax.jit(make_update(linear, optimizer, replay, head))
    learner = Learner(f32(params), f32(target_params), optimizer.init(f32(params)))
    return update(learner, replay_state, jax.random.key(0), beta, LR)


# ------------------------------------------------------------------ the checks


def check_update_is_one_weighted_sgd_step(target_name: str, loss_name: str, seed: int = 0):
    """New params, loss and written priorities of one update equal the NumPy step's."""
    params, target_params, batch = random_problem(seed)
    weights = np.random.default_rng(seed + 1).uniform(0.1, 1.0, size=B)
    replay = fixed_replay(batch, weights)
    learner, written, metrics = run_update(
        params, target_params, replay, replay.init(None), target_name, loss_name
    )
    new, td, loss = numpy_step(params, target_params, batch, weights, target_name, loss_name, LR)
    for k in new:
        np.testing.assert_allclose(learner.params[k], new[k], rtol=1e-5, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(written, np.abs(td), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metrics.loss, loss, rtol=1e-5)
    for k in target_params:  # the update never moves the target parameters
        np.testing.assert_array_equal(learner.target_params[k], np.float32(target_params[k]))


def check_prioritized_update(seed: int = 0, alpha: float = 0.6, eps: float = 0.01, beta=0.7):
    """Through the real prioritized replay: the batch's IS weights scale the gradient as
    ``(N P(i))^-beta / max_batch``, and the sampled slots' priorities become
    ``(|td| + eps)^alpha``."""
    params, target_params, batch = random_problem(seed)
    capacity = B
    replay = per.prioritized_replay(capacity, B, alpha=alpha, eps=eps, priority_on_insert="td")
    stored_abs_td = np.random.default_rng(seed + 2).uniform(0.0, 5.0, size=capacity)
    example = jax.tree.map(lambda x: x[0], f32(batch))
    state = replay.add(replay.init(example), f32(batch), jnp.float32(stored_abs_td))
    key = jax.random.key(0)
    indices = np.asarray(replay.sample(state, key, beta)[0])  # the slots the update will use

    p = (stored_abs_td + eps) ** alpha
    w = (capacity * p / p.sum()) ** -beta
    weights = w[indices] / w[indices].max()
    sampled = jax.tree.map(lambda x: x[indices], batch)
    names = ("double_q_learning", "pseudo_huber")
    new, td, _ = numpy_step(params, target_params, sampled, weights, *names, LR)

    learner, state, _ = run_update(params, target_params, replay, state, *names, beta)
    for k in new:
        np.testing.assert_allclose(learner.params[k], new[k], rtol=1e-5, atol=1e-5, err_msg=k)
    want = p.copy()
    want[indices] = (np.abs(td) + eps) ** alpha  # a duplicate slot: the last write wins
    np.testing.assert_allclose(sumtree.priorities(state.tree)[:capacity], want, rtol=1e-5)


def check_target_update(tau: float):
    """``tau = 1`` copies the online parameters exactly; otherwise a ``tau`` blend."""
    params, target_params, _ = random_problem(3)
    learner = Learner(f32(params), f32(target_params), None)
    out = update_target(learner, tau)
    for k in params:
        want = tau * np.float32(params[k]) + (1 - tau) * np.float32(target_params[k])
        if tau == 1.0:
            np.testing.assert_array_equal(out.target_params[k], np.float32(params[k]))
        np.testing.assert_allclose(out.target_params[k], want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(out.params[k], learner.params[k])


def check_store(clip_rewards: bool):
    """What the agent stores for one vector step of four envs: terminated / truncated /
    running / terminated: discount ``gamma * (1 - terminated)``, ``last`` where the episode
    ended, the true next observation, rewards clipped to their sign only if asked."""
    sizes = dict(num_envs=4, train_every=1, total_steps=100, learning_starts=50, batch_size=4)
    config = Config(
        env="CartPole-v1",
        variant="dqn",
        **sizes,
        buffer_size=16,
        num_chunks=1,
        gamma=0.9,
        clip_rewards=clip_rewards,
    )
    agent = make_agent(config, EnvSpec("CartPole-v1", (4,), 2, 500))
    state = agent.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    obs, next_obs = np.float32(rng.normal(size=(2, 1, 4, 4)))
    reward = np.float32([[2.5, -0.3, 0.0, 7.0]])
    terminated, done = np.float32([[1, 0, 0, 1]]), np.float32([[1, 1, 0, 1]])
    steps = EnvSteps(obs, np.int32([[0, 1, 1, 0]]), reward, next_obs, terminated, done)
    data = jax.tree.map(lambda x: np.asarray(x[:4]), agent.store(state, steps, 0).replay.data)
    np.testing.assert_allclose(data.discount, np.float32([0.0, 0.9, 0.9, 0.0]))
    np.testing.assert_array_equal(data.last, [1, 1, 0, 1])
    np.testing.assert_array_equal(data.next_obs, next_obs[0])
    np.testing.assert_array_equal(data.reward, np.sign(reward[0]) if clip_rewards else reward[0])


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("loss_name", sorted(NUMPY_LOSSES))
@pytest.mark.parametrize("target_name", sorted(NUMPY_TARGETS))
def test_update_is_one_weighted_sgd_step_with_the_target_held_fixed(target_name, loss_name):
    check_update_is_one_weighted_sgd_step(target_name, loss_name)


def test_prioritized_update_weights_the_gradient_and_writes_back_td_priorities():
    check_prioritized_update()


@pytest.mark.parametrize("tau", [1.0, 0.25])
def test_target_update_copies_or_blends(tau):
    check_target_update(tau)


def test_annealed_lr_is_optax_linear_schedule_to_zero_at_the_end_of_the_run():
    num_updates = 8
    schedule = optax.linear_schedule(0.5, 0.0, num_updates)
    rates = [float(annealed_lr(0.5, i, num_updates, True)) for i in range(num_updates + 2)]
    np.testing.assert_allclose(rates, [schedule(i) for i in range(num_updates + 2)], rtol=1e-6)
    assert rates[num_updates] == rates[num_updates + 1] == 0.0  # never negative past the end
    assert annealed_lr(0.5, 7, num_updates, False) == 0.5


@pytest.mark.parametrize(
    "fields",
    [
        dict(total_steps=2_000, num_envs=2, train_every=2, learning_starts=200),
        dict(total_steps=3_000, num_envs=4, train_every=8, learning_starts=1_000),
        dict(
            total_steps=4_096,
            num_envs=8,
            train_every=256,
            variant="pqn",
            learning_starts=0,
            num_chunks=2,
        ),
    ],
)
def test_update_indices_cover_the_run_once_so_the_last_update_anneals_to_lr_over_n(fields):
    # Annealing is lr * (1 - k / N) at update k: the run's updates must be exactly k = 0..N-1
    # (the last one at lr / N, as in CleanRL and purejaxql), none skipped or repeated.
    config = Config(env="CartPole-v1", **{"variant": "ddqn", **fields})
    spi, upi = config.env_steps_per_iteration, config.updates_per_iteration
    learning = [i for i in range(config.num_iterations) if (i + 1) * spi >= config.learning_starts]
    indices = np.concatenate(
        [first_update_index(config, (i + 1) * spi) + np.arange(upi) for i in learning]
    )
    np.testing.assert_array_equal(indices, np.arange(num_updates(config)))


@pytest.mark.parametrize("clip_rewards", [False, True])
def test_store_keeps_truncations_bootstrapping_and_clips_rewards_only_if_asked(clip_rewards):
    check_store(clip_rewards)


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_tf1_rmsprop_direction_after_global_norm_clipping(max_grad_norm):
    # TF1's RMSProp: ms <- 0.9 ms + 0.1 g^2 from ms = 1, direction g / sqrt(ms + 1e-10); with
    # clipping, g is first scaled to global norm max_grad_norm.
    grads = {"a": np.float32([30.0, -40.0]), "b": np.float32([[0.0, 5.0]])}
    flat = np.concatenate([np.ravel(g) for g in grads.values()]).astype(np.float64)
    optimizer = make_optimizer("rmsprop", max_grad_norm)
    params = jax.tree.map(jnp.zeros_like, grads)
    state = optimizer.init(params)
    for _ in range(2):
        direction, state = optimizer.update(grads, state, params)
    g = flat * (min(1.0, max_grad_norm / np.linalg.norm(flat)) if max_grad_norm else 1.0)
    ms = 1.0
    for _ in range(2):
        ms = 0.9 * ms + 0.1 * g**2
    got = np.concatenate([np.ravel(direction[k]) for k in grads])
    np.testing.assert_allclose(got, g / np.sqrt(ms + 1e-10), rtol=1e-5)
