"""n-step returns against a plain NumPy reference computed from the episodes themselves: the
write-side accumulator, what the uniform, prioritized and frame replays store and sample, rlax,
and what real short runs of both drivers store."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dqn_jax import frame_replay as fr
from dqn_jax import sumtree
from dqn_jax.agent import EnvSteps, make_agent
from dqn_jax.config import Config
from dqn_jax.envs import prepare
from dqn_jax.per import prioritized_replay
from dqn_jax.replay import Transition, example_transition, uniform_replay
from dqn_jax.returns import n_step

L, E = 12, 3  # vector steps and envs of the random streams
CONTINUE, TERMINATE, TRUNCATE, RESET = 0, 1, 2, 3  # what happens to an env at a step

pytestmark = pytest.mark.slow  # property tests over many examples: the full run


# ----------------------------------------------------------------------------- the reference


def span(done: np.ndarray, s: int, n: int) -> int | None:
    """Steps ``k`` of the n-step transition that starts at step ``s`` of one env's ``done``
    flags (``bool[T]``): up to and including the step that ended the episode, at most ``n``;
    None while the stream has not yet shown all of them."""
    for k in range(1, n + 1):
        if s + k - 1 >= len(done):
            return None
        if done[s + k - 1]:
            return k
    return n


def discounted(rewards, terminated_at_end: bool, gamma: float) -> tuple[float, float]:
    """``(sum_i gamma**i r_i, gamma**k or 0)`` of the ``k = len(rewards)`` steps taken: no
    bootstrap after a termination, ``gamma**k`` after anything else (truncation included)."""
    reward = sum(gamma**i * float(r) for i, r in enumerate(rewards))
    return reward, 0.0 if terminated_at_end else gamma ** len(rewards)


def reference(stream: dict, n: int, gamma: float) -> dict:
    """The n-step transitions of every start ``s <= T - n`` of a stream of one-step steps
    (``stream`` fields ``[T, N, ...]``: obs, action, reward, terminated, done, next_obs),
    computed per env from its episodes: ``{field: [T - n + 1, N, ...]}`` plus ``k``."""
    steps, envs = stream["reward"].shape
    rows = []
    for s in range(steps - n + 1):
        row = []
        for c in range(envs):
            k = span(stream["done"][:, c], s, n)
            last = s + k - 1
            rewards = stream["reward"][s : last + 1, c]
            reward, discount = discounted(rewards, bool(stream["terminated"][last, c]), gamma)
            row.append(
                dict(
                    obs=stream["obs"][s, c],
                    action=stream["action"][s, c],
                    reward=reward,
                    discount=discount,
                    next_obs=stream["next_obs"][last, c],
                    k=k,
                )
            )
        rows.append(row)
    return {f: np.array([[t[f] for t in row] for row in rows]) for f in rows[0][0]}


def make_stream(ends: np.ndarray, rewards: np.ndarray, actions: np.ndarray) -> dict:
    """One-step steps ``[T, N]`` of envs whose episodes end where ``ends`` says (TERMINATE or
    TRUNCATE). ``obs = (env, episode, t, 0)``; ``next_obs`` continues as the next step's obs
    within an episode and is the true final ``(env, episode, t, 1)`` where it ended (same-step
    autoreset: the next step's obs is the new episode's)."""
    steps, envs = ends.shape
    episode = np.zeros(envs, int)
    obs, next_obs = np.zeros((steps, envs, 4), np.float32), np.zeros((steps, envs, 4), np.float32)
    for t in range(steps):
        for c in range(envs):
            done = ends[t, c] in (TERMINATE, TRUNCATE)
            obs[t, c] = (c, episode[c], t, 0)
            next_obs[t, c] = (c, episode[c], t, 1) if done else (c, episode[c], t + 1, 0)
            episode[c] += done
    return dict(
        obs=obs,
        action=actions.astype(np.int32),
        reward=rewards.astype(np.float32),
        terminated=ends == TERMINATE,
        done=np.isin(ends, (TERMINATE, TRUNCATE)),
        next_obs=next_obs,
    )


def one_step(stream: dict, gamma) -> Transition:
    """The agent's one-step transitions of ``stream`` (``discount = gamma (1 - terminated)``)."""
    discount = np.float32(gamma) * (1 - stream["terminated"].astype(np.float32))
    return Transition(
        stream["obs"],
        stream["action"],
        stream["reward"],
        discount.astype(np.float32),
        stream["next_obs"],
        stream["done"].astype(np.float32),
    )


def assert_matches(got, want: dict) -> None:
    """``got`` (Transition-like, fields ``[...]``) equals the reference fields ``want``."""
    np.testing.assert_array_equal(got.obs, want["obs"], err_msg="obs")
    np.testing.assert_array_equal(got.action, want["action"], err_msg="action")
    np.testing.assert_allclose(got.reward, want["reward"], rtol=1e-5, atol=1e-5, err_msg="reward")
    np.testing.assert_allclose(got.discount, want["discount"], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got.next_obs, want["next_obs"], err_msg="next_obs")


streams = st.fixed_dictionaries(
    dict(
        n=st.integers(1, 5),
        gamma=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
        ends=hnp.arrays(
            np.int8, (L, E), elements=st.sampled_from([CONTINUE] * 4 + [TERMINATE, TRUNCATE])
        ),
        rewards=hnp.arrays(np.float32, (L, E), elements=st.floats(-2, 2, width=32)),
        actions=hnp.arrays(np.int32, (L, E), elements=st.integers(0, 1)),
    )
)


# ----------------------------------------------------------------------------- accumulator


@cache
def pushed(n: int):
    """``(stream Transition [T, N]) -> outputs [T, N]``: ``n_step(n)`` scanned over the stream
    as :meth:`dqn_jax.agent.Agent.store` does."""
    returns = n_step(n)

    def run(steps: Transition) -> Transition:
        acc = returns.init(jax.tree.map(lambda x: x[0], steps))
        return jax.lax.scan(returns.push, acc, steps)[1]

    return returns, jax.jit(run)


@settings(max_examples=30, deadline=None)
@given(case=streams)
def test_accumulator_matches_the_episodes(case):
    n, gamma = case["n"], case["gamma"]
    stream = make_stream(case["ends"], case["rewards"], case["actions"])
    returns, run = pushed(n)
    assert returns.delay == n - 1
    out = jax.device_get(run(one_step(stream, gamma)))
    emitted = jax.tree.map(lambda x: x[n - 1 :], out)  # outputs from `delay` on: starts 0..
    want = reference(stream, n, gamma)
    assert_matches(emitted, want)
    # No output mixes two episodes (same env and episode id at both ends) or spans more
    # than n steps; an end inside the window is the window's end.
    np.testing.assert_array_equal(emitted.obs[..., :2], emitted.next_obs[..., :2])
    steps_taken = emitted.next_obs[..., 2] + emitted.next_obs[..., 3] - emitted.obs[..., 2]
    np.testing.assert_array_equal(steps_taken, want["k"])
    np.testing.assert_array_equal(emitted.last, emitted.next_obs[..., 3])  # ended: the final obs


def bootstrapped(n: int, stream: dict, gamma: float, values: np.ndarray) -> np.ndarray:
    """``reward + discount * v(next_obs)`` ``[T - n + 1, N]`` of the accumulator's outputs
    (starts ``0 .. T - n``), ``values [T, N]`` the value of the state after each step."""
    out = jax.device_get(pushed(n)[1](one_step(stream, gamma)))
    out = jax.tree.map(lambda x: x[n - 1 :], out)
    after = (out.next_obs[..., 2] - 1 + out.next_obs[..., 3]).astype(int)  # the step it follows
    return out.reward + out.discount * np.take_along_axis(values, after, axis=0)


def rlax_returns(stream: dict, gamma: float, values: np.ndarray, n: int) -> np.ndarray:
    """``rlax.n_step_bootstrapped_returns`` per env (``[T, N]``): ``G_t = r_t + d_t (r_t+1 +
    ... + d_t+n-1 v_t+n-1)``, ``v_t`` the value of the state after step ``t``; near the
    sequence's end fewer steps, bootstrapping from the last value."""
    discount = np.where(stream["terminated"], 0.0, gamma).astype(np.float32)
    per_env = jax.vmap(
        lambda r, d, v: rlax.n_step_bootstrapped_returns(r, d, v, n), in_axes=1, out_axes=1
    )
    return np.asarray(per_env(stream["reward"], discount, values))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_accumulator_agrees_with_rlax(n):
    rng = np.random.default_rng(n)
    gamma, values = 0.9, rng.normal(size=(L, E)).astype(np.float32)
    # No episode end: every full window agrees. Terminations only: rlax's zero discount cuts
    # the sum where the episode's end does (and what follows it is multiplied by 0).
    ends = np.zeros((L, E), np.int8), np.zeros((L, E), np.int8)
    ends[1][[3, 4, 8], [0, 1, 2]] = TERMINATE
    for e in ends:
        stream = make_stream(e, rng.normal(size=(L, E)), np.zeros((L, E)))
        theirs = rlax_returns(stream, gamma, values, n)[: L - n + 1]
        np.testing.assert_allclose(bootstrapped(n, stream, gamma, values), theirs, rtol=1e-5)
    # An episode truncated at step L - n, then n - 1 steps of the next that flush the windows:
    # every start agrees with rlax over that episode alone, whose end bootstraps as a
    # truncation does.
    truncated = np.zeros((L, E), np.int8)
    truncated[L - n] = TRUNCATE
    stream = make_stream(truncated, rng.normal(size=(L, E)), np.zeros((L, E)))
    episode = {f: x[: L - n + 1] for f, x in stream.items()}
    theirs = rlax_returns(episode, gamma, values[: L - n + 1], n)
    np.testing.assert_allclose(bootstrapped(n, stream, gamma, values), theirs, rtol=1e-5)


# ----------------------------------------------------------------------------- uniform and PER


REPLAYS = uniform_replay(L * E, 64), prioritized_replay(L * E, 64)
SAMPLERS = [jax.jit(r.sample) for r in REPLAYS]


@cache
def agents(n: int) -> list:
    """Agents of ``n``-step returns over each of :data:`REPLAYS` (CartPole, ``N = E``)."""
    config = Config(
        env="CartPole-v1",
        backend="jax",
        variant="ddqn",
        n_step=n,
        num_envs=E,
        train_every=E,
        total_steps=30 * E,
        buffer_size=L * E,
        batch_size=16,
        learning_starts=16,
        hidden_sizes=(8,),
    )
    config, spec = prepare(config)
    return [make_agent(config, spec, replay=replay) for replay in REPLAYS]


@cache
def fresh_states():
    """``gamma -> [AgentState]`` of :func:`agents` (1), gamma a swept (traced) value."""
    key, base = jax.random.PRNGKey(0), agents(1)  # built outside the trace
    return jax.jit(lambda gamma: [a.init(key, {"gamma": gamma}) for a in base])


@cache
def storing(n: int):
    """``(steps EnvSteps [T, N], gamma) -> [replay state]``: what
    :meth:`dqn_jax.agent.Agent.store` of the ``n``-step :func:`agents` writes into each replay,
    one vector step per call as the drivers' one-step iterations do."""
    pool = agents(n)  # built outside the trace
    store = jax.jit(
        lambda states, steps, v: [a.store(s, steps, v) for a, s in zip(pool, states, strict=True)]
    )

    def run(steps: EnvSteps, gamma: float):
        # The states of agents differing only in n differ only in the accumulator's.
        states = fresh_states()(jnp.float32(gamma))
        states = [a.restart_returns(s) for a, s in zip(pool, states, strict=True)]
        for v in range(L):
            states = store(states, jax.tree.map(lambda x, v=v: x[v : v + 1], steps), v)
        return [s.replay for s in states]

    return run


@settings(max_examples=15, deadline=None)
@given(case=streams, seed=st.integers(0, 2**16))
def test_uniform_and_prioritized_replays_store_and_sample_the_reference(case, seed):
    n, gamma = case["n"], case["gamma"]
    stream = make_stream(case["ends"], case["rewards"], case["actions"])
    steps = EnvSteps(
        *(stream[f] for f in ("obs", "action", "reward", "next_obs")),
        stream["terminated"].astype(np.float32),
        stream["done"].astype(np.float32),
    )
    run = storing(n)
    want = reference(stream, n, gamma)
    flat = {f: x.reshape(-1, *x.shape[2:]) for f, x in want.items()}  # slot s * N + c
    count = (L - n + 1) * E  # the first n - 1 vector steps only filled the window
    for state, sample in zip(run(steps, gamma), SAMPLERS, strict=True):
        state = jax.device_get(state)
        assert int(state.size) == count
        assert_matches(jax.tree.map(lambda x: x[:count], state.data), flat)
        ids, batch, _ = jax.device_get(sample(state, jax.random.PRNGKey(seed), 0.5))
        assert ids.max() < count
        assert_matches(batch, {f: x[ids] for f, x in flat.items()})


# ----------------------------------------------------------------------------- frame replay

H = W = 4


def frame(c: int, f: int) -> np.ndarray:
    """Frame ``f`` of env ``c``: the pixels spell both, so a stack says where it came from."""
    pixels = np.full((H, W), (37 * f + c) % 256, np.uint8)
    pixels.flat[:3] = c, f // 256, f % 256
    return pixels


class FrameEnvs:
    """``N`` envs with ``FrameStackObservation`` semantics (reset padding, true final stack),
    stepped by a table of events (CONTINUE, TERMINATE, TRUNCATE, or RESET: the env is reset
    before the step without its episode ending, behind the buffer's back). Keeps every step
    with its slot in its env's column, to compute what the buffer must hold."""

    def __init__(self, num_envs: int, stack: int, gamma: float):
        self.n, self.s, self.gamma = num_envs, stack, gamma
        self.frames = [0] * num_envs  # frames drawn so far per env
        self.slots = [0] * num_envs  # slots written so far per column
        self.episode = [0] * num_envs
        self.steps = [[] for _ in range(num_envs)]  # per env: dicts, in order
        self.stacks = [self._reset(c) for c in range(num_envs)]

    def _frame(self, c):
        self.frames[c] += 1
        return frame(c, self.frames[c])

    def _reset(self, c):
        return [self._frame(c)] * self.s

    def vector_step(self, events, rewards, actions, abs_td) -> tuple[Transition, np.ndarray]:
        """One vector step; the one-step Transition ``[N]`` and ``abs_td f32[N]`` to add."""
        out = []
        for c in range(self.n):
            if events[c] == RESET:
                self.episode[c] += 1
                self.stacks[c] = self._reset(c)
            obs = np.stack(self.stacks[c])
            self.stacks[c] = self.stacks[c][1:] + [self._frame(c)]
            next_obs = np.stack(self.stacks[c])
            done = events[c] in (TERMINATE, TRUNCATE)
            terminated = events[c] == TERMINATE
            step = dict(
                obs=obs,
                action=int(actions[c]),
                reward=float(rewards[c]),
                next_obs=next_obs,
                done=done,
                terminated=terminated,
                episode=self.episode[c],
                slot=self.slots[c],
                abs_td=float(abs_td[c]),
            )
            self.steps[c].append(step)
            self.slots[c] += 1 + done  # an ended episode's final frame takes a slot too
            discount = self.gamma * (1.0 - terminated)
            out.append(Transition(obs, step["action"], step["reward"], discount, next_obs, done))
            if done:
                self.episode[c] += 1
                self.stacks[c] = self._reset(c)
        cols = list(zip(*out, strict=True))
        dtypes = (np.uint8, np.int32, np.float32, np.float32, np.uint8, np.float32)
        steps = Transition(*(np.asarray(x, d) for x, d in zip(cols, dtypes, strict=True)))
        return steps, np.asarray(abs_td, np.float32)

    def expected(self, n: int, slots_per_column: int) -> dict[int, tuple[tuple, dict]]:
        """``{slot id t * N + c: ((c, slot), transition)}`` of every valid start: its n-step
        transition complete (n successors, or its episode's end, stored) and every frame it
        reads still in the column's last T slots."""
        out = {}
        for c, steps in enumerate(self.steps):
            oldest = max(0, self.slots[c] - slots_per_column)
            episodes: dict[int, list] = {}
            for step in steps:
                episodes.setdefault(step["episode"], []).append(step)
            for episode in episodes.values():
                done = np.array([s["done"] for s in episode])
                for j, step in enumerate(episode):
                    k = span(done, j, n)
                    if k is None or (k == n and not done[j + k - 1] and j + n >= len(episode)):
                        continue  # waits for its successors (or they were cut off)
                    if step["slot"] - min(j, self.s - 1) < oldest:
                        continue  # its history was overwritten
                    window = episode[j : j + k]
                    reward, discount = discounted(
                        [s["reward"] for s in window], window[-1]["terminated"], self.gamma
                    )
                    transition = dict(
                        obs=step["obs"],
                        action=step["action"],
                        reward=reward,
                        discount=discount,
                        next_obs=window[-1]["next_obs"],
                        abs_td=step["abs_td"],
                    )
                    slot_id = (step["slot"] % slots_per_column) * self.n + c
                    out[slot_id] = ((c, step["slot"]), transition)
        return out


@cache
def frame_programs(num_envs, stack, slots, n, mode):
    """A frame replay of ``slots`` per column (``mode``: uniform, max or td priorities) and its
    jitted ``init``, ``add``, gather of every slot, ``sample`` and ``update``."""
    prioritized = mode != "uniform"
    replay = fr.frame_replay(
        slots * num_envs,
        32,
        num_envs,
        stack=stack,
        prioritized=prioritized,
        priority_on_insert="td" if mode == "td" else "max",
        n_step=n,
    )
    assert replay.n_step == n
    example = example_transition(jnp.zeros((stack, H, W), jnp.uint8))
    every = jnp.arange(slots * num_envs, dtype=jnp.int32)
    return (
        replay,
        jax.jit(lambda: replay.init(example)),
        jax.jit(replay.add),
        jax.jit(lambda state: fr.gather(state, every, stack, n)),
        jax.jit(replay.sample),
        jax.jit(replay.update),
    )


def priority(abs_td) -> np.ndarray:
    """``(|td| + eps) ** alpha`` with the frame replay's default ``eps`` and ``alpha``."""
    return np.float32((np.abs(np.float32(abs_td)) + np.float32(0.01)) ** np.float32(0.6))


# (num_envs, stack, slots per column, vector steps per add, n, priorities)
FRAME_CONFIGS = [
    (2, 2, 8, 1, 3, "uniform"),
    (3, 2, 5, 1, 2, "td"),  # T = stack + n + 1, the fewest slots allowed
    (1, 3, 9, 2, 4, "max"),
    (2, 4, 11, 3, 5, "td"),
]


@settings(max_examples=20, deadline=None)
@given(
    config=st.sampled_from(FRAME_CONFIGS),
    gamma=st.sampled_from([0.5, 0.9, 1.0]),
    data=st.data(),
)
def test_frame_replay_stores_and_samples_the_reference(config, gamma, data):
    num_envs, stack, slots, k, n, mode = config
    replay, init, add, gather_all, sample, update = frame_programs(*config[:3], n, mode)
    num_adds = data.draw(st.integers(1, 24 // k), label="adds")
    shape = (num_adds * k, num_envs)
    kinds = st.sampled_from([CONTINUE] * 5 + [TERMINATE, TRUNCATE, RESET])
    events = data.draw(hnp.arrays(np.int8, shape, elements=kinds))
    rewards = data.draw(hnp.arrays(np.int8, shape, elements=st.integers(-3, 3)))
    envs = FrameEnvs(num_envs, stack, gamma)
    state, known, max_priority = init(), {}, 1.0  # known: slot id -> (step, leaf priority)
    rng = np.random.default_rng(int(events.sum()))
    for a in range(num_adds):
        rows = range(a * k, (a + 1) * k)
        pairs = [
            envs.vector_step(
                events[t], rewards[t], rng.integers(0, 4, num_envs), rng.uniform(0, 5, num_envs)
            )
            for t in rows
        ]
        steps = Transition(*(np.concatenate(x) for x in zip(*(p[0] for p in pairs), strict=True)))
        abs_td = np.concatenate([p[1] for p in pairs])
        state = add(state, steps, abs_td if mode == "td" else None)
        expected = envs.expected(n, slots)
        leaves = np.asarray(sumtree.priorities(state.tree))
        assert set(np.flatnonzero(leaves > 0)) == set(expected), "valid starts differ"
        if not expected:
            continue
        ids = np.array(sorted(expected))
        every = jax.device_get(gather_all(state))
        want = {f: np.array([expected[i][1][f] for i in ids]) for f in expected[ids[0]][1]}
        assert_matches(jax.tree.map(lambda x, ids=ids: x[ids], every), want)
        # Each start's priority is set once, when it becomes valid (its own step's |td|, or
        # the max priority of that moment), and is never overwritten by later adds.
        for i in ids:
            step, transition = expected[i]
            if i not in known or known[i][0] != step:
                fresh = {"uniform": 1.0, "max": max_priority}.get(mode)
                known[i] = (step, priority(transition["abs_td"]) if fresh is None else fresh)
            np.testing.assert_allclose(leaves[i], known[i][1], rtol=1e-6, err_msg=f"slot {i}")
        if mode != "uniform" and a % 2:
            chosen = ids[: 1 + len(ids) // 2]
            new_td = rng.uniform(0, 20, len(chosen)).astype(np.float32)
            state = update(state, jnp.asarray(chosen, jnp.int32), jnp.asarray(new_td))
            for i, td in zip(chosen, new_td, strict=True):
                known[i] = (known[i][0], priority(td))
                max_priority = max(max_priority, float(priority(td)))
        drawn, batch, _ = jax.device_get(sample(state, jax.random.PRNGKey(a), 0.5))
        assert set(drawn.tolist()) <= set(expected)
        by_id = {f: np.array([expected[int(i)][1][f] for i in drawn]) for f in want}
        assert_matches(batch, by_id)


def test_frame_replay_builds_n_step_on_read_and_the_agent_stores_one_step():
    from dqn_jax.host_loop import frame_replay_for

    atari = Config(env="ALE/Pong-v5", n_step=3, num_envs=2, buffer_size=64, batch_size=8)
    assert frame_replay_for(atari).n_step == 3
    config, spec = prepare(Config(env="CartPole-v1", backend="jax", n_step=3, num_envs=2))
    agent = make_agent(config, spec, replay=uniform_replay(64, 8)._replace(n_step=3))
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
    assert state.returns is None  # one-step: the replay builds the n-step transitions
    with pytest.raises(ValueError, match="stack \\+ n_step \\+ 1"):
        fr.frame_replay(12, 4, 2, stack=2, n_step=4)
    with pytest.raises(ValueError, match="n_step"):
        fr.frame_replay(64, 4, 2, n_step=0)


# ----------------------------------------------------------------------------- real runs


DRIVER = dict(
    env="CartPole-v1",
    variant="ddqn",
    n_step=3,
    num_envs=2,
    train_every=2,
    total_steps=600,
    buffer_size=600,
    learning_starts=100,
    batch_size=16,
    hidden_sizes=(16,),
    target_period=100,
    num_chunks=1,
    eval_episodes=0,
)
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360  # CartPole terminates beyond these


def check_cartpole_3_step(data: Transition, num_envs: int, gamma: float) -> None:
    """``data``: the stored transitions of a short CartPole run with ``n_step=3``, time-major
    and env-minor, nothing overwritten. CartPole's reward is 1 per step, so a reward says how
    many steps ``k`` its transition took; no episode of such a run reaches the time limit."""
    steps = len(data.reward) // num_envs
    assert len(data.reward) == steps * num_envs == DRIVER["total_steps"] - 2 * num_envs
    obs, next_obs = (np.asarray(x).reshape(steps, num_envs, 4) for x in (data.obs, data.next_obs))
    reward, discount = (np.asarray(x).reshape(steps, num_envs) for x in data[2:4])
    g = np.float64(np.float32(gamma))
    k = 1 + np.argmin(np.abs(reward[..., None] - (1 - g ** np.arange(1, 4)) / (1 - g)), axis=-1)
    np.testing.assert_allclose(reward, (1 - g**k) / (1 - g), rtol=1e-6)
    terminal = discount == 0
    np.testing.assert_allclose(discount[~terminal], g ** k[~terminal], rtol=1e-6)
    assert (k[~terminal] == 3).all()  # a window ends early only where its episode terminated
    assert terminal.any() and (k == 3).mean() > 0.5
    out_of_bounds = (np.abs(next_obs[..., 0]) > X_LIMIT) | (np.abs(next_obs[..., 2]) > THETA_LIMIT)
    np.testing.assert_array_equal(out_of_bounds, terminal)  # the true final obs where it ended
    for s, c in np.ndindex(steps, num_envs):
        after = s + k[s, c]  # the next step's start, if stored
        if not terminal[s, c]:
            if after < steps:  # three steps of one episode
                np.testing.assert_array_equal(next_obs[s, c], obs[after, c])
            continue
        # The starts up to the termination end there too; the next one is a reset obs.
        for j in range(1, min(k[s, c], steps - s)):
            assert terminal[s + j, c] and k[s + j, c] == k[s, c] - j
            np.testing.assert_array_equal(next_obs[s + j, c], next_obs[s, c])
        if after < steps:
            assert np.abs(obs[after, c]).max() <= 0.05


def test_the_jax_driver_stores_n_step_transitions():
    from dqn_jax.device_loop import make_train
    from dqn_jax.run import seed_keys

    config = Config(**DRIVER, backend="jax")
    trainer = make_train(config)
    state = jax.jit(trainer.init)(seed_keys(config)[0])
    run_chunk = jax.jit(trainer.run_chunk, static_argnums=2)
    state, _ = run_chunk(state, jnp.int32(0), config.num_iterations)
    assert float(state.agent.stats[2]) > 0  # it learned
    size = int(state.agent.replay.size)
    data = jax.tree.map(lambda x: np.asarray(x[:size]), state.agent.replay.data)
    check_cartpole_3_step(data, config.num_envs, config.gamma)


def test_the_gymnasium_driver_stores_n_step_transitions():
    from dqn_jax import host_loop

    config = Config(**DRIVER, backend="gymnasium")
    result = host_loop.train(config, None, progress=False, echo=lambda _: None)
    replay = jax.tree.map(lambda x: np.asarray(x[0]), result.state.replay)
    assert float(result.state.stats[0, 2]) > 0  # it learned
    data = jax.tree.map(lambda x: x[: int(replay.size)], replay.data)
    check_cartpole_3_step(data, config.num_envs, config.gamma)
