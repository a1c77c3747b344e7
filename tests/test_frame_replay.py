"""Frame replay against a plain NumPy reference of stacked observations."""

from __future__ import annotations

from collections import deque
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dqn_jax import frame_replay as fr
from dqn_jax import sumtree
from dqn_jax.replay import Transition, example_transition

H = W = 6
GAMMA = 0.99


class Reference:
    """``N`` envs with FrameStackObservation semantics (reset padding, true final obs), and the
    stream of slots each env's column should hold."""

    def __init__(self, num_envs: int, stack: int, slots: int, episode_lengths, seed: int):
        self.n, self.s, self.t = num_envs, stack, slots
        self.rng = np.random.default_rng(seed)
        self.lengths = [deque(lengths) for lengths in episode_lengths]
        # records: (kind, the Transition a sample of that slot gives, pos)
        self.streams = [[] for _ in range(num_envs)]
        self.left = [0] * num_envs  # steps left in each env's episode
        self.episode_pos = [0] * num_envs
        self.stacks = [self._reset(c) for c in range(num_envs)]

    def _frame(self):
        return self.rng.integers(0, 256, (H, W), dtype=np.uint8)

    def _reset(self, c):
        self.left[c] = self.lengths[c].popleft() if self.lengths[c] else 10**9
        self.episode_pos[c] = 0
        return deque([self._frame()] * self.s, maxlen=self.s)

    def vector_step(self):
        """One vector step: a one-step Transition with leading dim N (NumPy), ``last`` = the
        episode ended, ``discount`` = ``GAMMA * (1 - terminated)``."""
        fields = []
        for c in range(self.n):
            obs = np.stack(self.stacks[c])
            self.stacks[c].append(self._frame())
            next_obs = np.stack(self.stacks[c])
            self.left[c] -= 1
            done = self.left[c] == 0
            terminated = bool(done and self.rng.random() < 0.5)
            action, reward = int(self.rng.integers(0, 6)), float(self.rng.integers(-3, 4))
            discount = GAMMA * (1.0 - terminated)
            tr = Transition(obs, action, reward, discount, next_obs, float(done))
            # A sample carries the stored discount and last = 0 (it continues to next_obs).
            self.streams[c].append(("step", tr._replace(last=0.0), self.episode_pos[c]))
            self.episode_pos[c] += 1
            if done:
                self.streams[c].append(("final", None, None))
                self.stacks[c] = self._reset(c)
            fields.append(tr)
        cols = list(zip(*fields, strict=True))
        dtypes = (np.uint8, np.int32, np.float32, np.float32, np.uint8, np.float32)
        return Transition(*(np.asarray(x, d) for x, d in zip(cols, dtypes, strict=True)))

    def expected(self) -> dict[int, tuple]:
        """``{slot id: transition}`` of every valid start: a step whose successor is stored and
        whose frames (obs and next_obs stacks) are all still in the column's last T slots."""
        out = {}
        for c, stream in enumerate(self.streams):
            oldest = max(0, len(stream) - self.t)
            for q, (kind, tr, pos) in enumerate(stream):
                if kind != "step" or q + 1 >= len(stream):
                    continue
                if q - min(pos, self.s - 1) >= oldest:
                    out[(q % self.t) * self.n + c] = tr
        return out


@cache
def programs(num_envs, stack, slots, k, prioritized=False, batch_size=64):
    replay = fr.frame_replay(
        slots * num_envs, batch_size, num_envs, stack=stack, prioritized=prioritized
    )
    example = example_transition(jnp.zeros((stack, H, W), jnp.uint8))
    return (
        replay,
        jax.jit(lambda: replay.init(example)),
        jax.jit(replay.add),
        jax.jit(lambda s, i: fr.gather(s, i, stack)),
        jax.jit(replay.sample),
    )


def concat(steps):
    return Transition(*(np.concatenate(x) for x in zip(*steps, strict=True)))


def check_against(ref: Reference, state, gather_fn):
    expected = ref.expected()
    prio = np.asarray(sumtree.priorities(state.tree))
    assert set(np.flatnonzero(prio > 0)) == set(expected), "valid slots differ"
    if not expected:
        return
    ids = np.array(sorted(expected), np.int32)
    # Gather every slot (one compiled shape), keep the valid ones.
    every = jax.device_get(gather_fn(state, jnp.arange(prio.size, dtype=jnp.int32)))
    got = [x[ids] for x in every]
    want = [np.stack(x) for x in zip(*(expected[i] for i in ids), strict=True)]
    for name, g, e in zip(Transition._fields, got, want, strict=True):
        np.testing.assert_array_equal(g, e.astype(g.dtype), err_msg=name)


def run(num_envs, stack, slots, k, lengths, seed, num_adds, check_every=True):
    replay, init, add, gather_fn, _ = programs(num_envs, stack, slots, k)
    ref = Reference(num_envs, stack, slots, lengths, seed)
    state = init()
    for _ in range(num_adds):
        state = add(state, concat([ref.vector_step() for _ in range(k)]))
        if check_every:
            check_against(ref, state, gather_fn)
    check_against(ref, state, gather_fn)
    return ref, state


# (num_envs, stack, slots per column, vector steps per add)
CONFIGS = [(2, 4, 7, 1), (3, 4, 6, 2), (1, 2, 5, 3), (2, 1, 4, 2)]


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(
    config=st.sampled_from(CONFIGS),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_matches_numpy_reference(config, data, seed):
    num_envs, stack, slots, k = config
    lengths = [
        data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=8), label=f"episodes {c}")
        for c in range(num_envs)
    ]
    num_adds = data.draw(st.integers(1, 30 // k), label="adds")
    run(num_envs, stack, slots, k, lengths, seed, num_adds)


def test_wraparound_and_episodes_shorter_than_the_stack():
    # 1- and 2-step episodes (shorter than the 4-frame stack) and many wraps of 7-slot columns.
    lengths = [[1, 2, 1, 3, 1, 1, 5, 2, 1, 7, 1], [2, 1, 1, 6, 1, 2, 2, 1, 9]]
    ref, state = run(2, 4, 7, 1, lengths, seed=3, num_adds=40)
    assert all(len(s) > 3 * 7 for s in ref.streams)  # wrapped at least 3 times
    assert np.all(np.asarray(state.count) == 7)


def test_reset_without_done_starts_a_new_episode():
    # Env 0 is reset without the buffer being told (e.g. envs rebuilt after a restart): its
    # dangling step is never sampled and its new episode's stacks are reset-padded.
    replay, init, add, gather_fn, _ = programs(2, 4, 7, 1)
    ref = Reference(2, 4, 7, [[100], [2, 100]], seed=0)
    state = init()
    for _ in range(3):
        state = add(state, concat([ref.vector_step()]))
    ref.stacks[0] = ref._reset(0)
    ref.streams[0][-1] = ("dangling step", None, None)
    for _ in range(5):
        state = add(state, concat([ref.vector_step()]))
        check_against(ref, state, gather_fn)


def test_samples_only_valid_starts_uniformly():
    lengths = [[2, 5, 1, 8], [1, 1, 3, 9], [6, 2, 2, 7]]
    ref, state = run(3, 4, 6, 2, lengths, seed=7, num_adds=12, check_every=False)
    valid = sorted(ref.expected())
    assert len(valid) >= 5
    draws = 60_000
    ids, batch, weights = jax.jit(fr.frame_replay(18, draws, 3).sample)(
        state, jax.random.PRNGKey(0), 1.0
    )
    ids = np.asarray(ids)
    assert set(np.unique(ids)) <= set(valid)
    counts = np.bincount(ids, minlength=18)[valid]
    p = 1 / len(valid)
    # Every valid slot within 5 binomial standard deviations of its expected count (fixed seed).
    tolerance = 5 * np.sqrt((1 - p) / (draws * p))
    assert np.max(np.abs(counts / (draws * p) - 1)) < tolerance, counts
    np.testing.assert_array_equal(weights, 1.0)
    # The sampled transitions are the reference ones.
    exp = ref.expected()
    for j in range(0, draws, 997):
        np.testing.assert_array_equal(batch.obs[j], exp[int(ids[j])].obs)
        np.testing.assert_array_equal(batch.next_obs[j], exp[int(ids[j])].next_obs)


def test_empty_buffer_samples_slot_zero():
    _, init, _, _, sample = programs(2, 4, 7, 1)
    ids, _, weights = sample(init(), jax.random.PRNGKey(1), 1.0)
    np.testing.assert_array_equal(ids, 0)
    np.testing.assert_array_equal(weights, 1.0)


def test_prioritized_priorities_sampling_and_update():
    replay, init, add, gather_fn, sample = programs(2, 4, 9, 1, prioritized=True)
    ref = Reference(2, 4, 9, [[3, 4, 2], [5, 5]], seed=11)
    state = init()
    for _ in range(6):
        state = add(state, concat([ref.vector_step()]))
    check_against(ref, state, gather_fn)
    valid = np.array(sorted(ref.expected()))
    np.testing.assert_array_equal(np.asarray(sumtree.priorities(state.tree))[valid], 1.0)
    # Give one valid slot a priority 20x the others': it gets ~20/(20 + V - 1) of the draws.
    target = int(valid[0])
    state = jax.jit(replay.update)(state, jnp.array([target], jnp.int32), jnp.array([100.0]))
    prio = float((100.0 + 0.01) ** 0.6)
    assert float(state.max_priority) == pytest.approx(prio)
    big = jax.jit(fr.frame_replay(18, 40_000, 2, stack=4, prioritized=True).sample)
    ids, _, weights = big(state, jax.random.PRNGKey(2), 1.0)
    ids, weights = np.asarray(ids), np.asarray(weights)
    assert set(np.unique(ids)) <= set(valid.tolist())
    share = np.mean(ids == target)
    assert share == pytest.approx(prio / (prio + len(valid) - 1), rel=0.03)
    np.testing.assert_allclose(weights[ids == target], 1.0 / prio, rtol=1e-6)
    np.testing.assert_allclose(weights[ids != target], 1.0)
    # New transitions get the max priority; updating an invalid slot is ignored.
    state = add(state, concat([ref.vector_step()]))
    check_against(ref, state, gather_fn)
    new = set(ref.expected()) - set(valid.tolist())
    leaves = np.asarray(sumtree.priorities(state.tree))
    for slot in new:
        assert leaves[slot] == pytest.approx(prio)
    invalid = int(np.flatnonzero(leaves == 0)[0])
    after = jax.jit(replay.update)(state, jnp.array([invalid], jnp.int32), jnp.array([5.0]))
    np.testing.assert_array_equal(sumtree.priorities(after.tree), leaves)


def test_bytes_per_transition_is_about_one_frame():
    replay = fr.frame_replay(1_000_000, 32, 8)
    example = example_transition(jnp.zeros((4, 84, 84), jnp.uint8))
    shapes = jax.eval_shape(replay.init, example)
    per = fr.bytes_per_transition(shapes)
    assert 84 * 84 <= per < 84 * 84 + 24, per
    assert per * 1_000_000 < 7.1e9
    _, init, _, _, _ = programs(2, 4, 7, 1)
    # Tiny buffers pay for the per-column state (each column's last stacked obs) too.
    assert 36 + 12 < fr.bytes_per_transition(init()) < 36 + 60


def test_rejects_bad_input():
    replay, init, add, _, _ = programs(2, 4, 7, 1)
    state = init()
    step = Reference(2, 4, 7, [[3], [3]], seed=0).vector_step()
    # Steps must be whole stacked observations [n, stack, H, W], obs and next_obs alike (a
    # Transition of single frames cannot be split into the stored newest frames).
    with pytest.raises(AssertionError, match="shape"):
        replay.add(state, step._replace(obs=step.obs[:, -1], next_obs=step.next_obs[:, -1]))
    with pytest.raises(AssertionError):
        replay.add(state, step._replace(next_obs=step.next_obs[:, 1:]))
    with pytest.raises(ValueError, match="multiple"):
        replay.add(state, jax.tree.map(lambda x: x[:1], step))
    with pytest.raises(ValueError, match="stack \\+ n_step \\+ 1"):
        fr.frame_replay(10, 4, 2, stack=4)
