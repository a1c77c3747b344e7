"""Replay for stacked-frame observations that stores one frame per transition.

A stacked observation ``uint8[S, H, W]`` (``S`` frames, oldest first, as
``gymnasium.wrappers.FrameStackObservation`` gives) shares ``S - 1`` frames with the next one, so
storing whole stacks (twice: ``obs`` and ``next_obs``) costs ``2 S`` times the memory. Here each
env step stores only its newest frame; stacks are rebuilt when sampling. At 84x84 a transition
costs about 7 KB (``bytes_per_transition``), so 1,000,000 transitions take about 7 GB.

Layout: ``N = num_envs`` columns, each a circular stream of ``T = capacity // N`` slots with its
own write pointer. Per slot: the frame, ``action``, ``reward``, ``discount``, ``is_step`` (a
step's observation, not an episode's final frame), ``first`` (the episode's first slot) and
``pos = min(slots since the episode's first slot, S - 1)``. Each vector step writes, per env,
the newest frame of ``obs``; where the episode ended (``done``) it also writes the newest frame
of ``next_obs`` (the true final observation) into the next slot, as a non-step. A column reads
``o_s, o_s+1, ..., o_e, final_e, o_s', ...``.

The transition at step slot ``t``: ``obs`` = frames ``t-S+1 .. t`` and ``next_obs`` = frames
``t-S+2 .. t+1``, where a frame before the episode's first slot is that first frame (the reset
observation): the ``padding_type="reset"`` of ``FrameStackObservation``. It is a *valid start*
when its successor ``t+1`` has been written and belongs to the same episode, and none of the
frames it reads has been overwritten by the circular wrap.

With ``n_step = n > 1`` the buffer still stores one-step data and builds ``n``-step
transitions when sampling: the transition at ``t`` spans ``m = min(n, steps to the episode's
end inclusive)`` steps, with ``reward = r_t + d_t r_t+1 + d_t d_t+1 r_t+2 + ...`` (each step's
own discount), ``discount = d_t ... d_t+m-1`` and ``next_obs`` the stack ending at slot
``t+m`` (the next step's frame, or the episode's final frame where it ended). It is a valid
start once slots ``t+1 .. t+m`` are written and of its episode: a step waits for its
``n - 1`` successors or its episode's end.

Episode boundaries come from the steps themselves: a step starts a new episode (its slot is
``first``, its stacks reset-padded) when its column is empty, the column's previous step was
``done``, or its ``obs`` differs from the previous step's ``next_obs`` (with same-step autoreset
they are equal within an episode). The last catches environments reset behind the buffer's
back, e.g. rebuilt after a restart: the interrupted episode's last step is never sampled. Such
a new episode's ``obs`` must be a fresh reset observation (reset-padded), as
``FrameStackObservation`` gives.

Sampling uses a :mod:`dqn_jax.sumtree` over the ``T * N`` slots (slot id ``t * N + c``): invalid
slots have priority 0, valid ones 1 (uniform) or their PER priority, so both modes share the
code and an invalid slot is never drawn. Uniform sampling draws the rank of a valid slot with an
integer ``randint`` (exactly uniform, i.i.d., while fewer than ``2**24`` slots are valid);
prioritized sampling is stratified, as :mod:`dqn_jax.per`.

Compared with the full-stack buffers, a column's history must stay in the buffer, so up to
``S - 1`` stored frames per column near the oldest end and one frame per ended episode (its
final frame) are not transition starts: a full buffer holds slightly fewer than ``capacity``
sampleable transitions; with ``n_step = n`` the newest ``n - 1`` steps of a running episode
are not starts yet, and an episode cut without ``done`` (reset behind the buffer's back) loses
its last ``n`` steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dqn_jax import rng, sumtree
from dqn_jax.per import INSERT_RULES, importance_weights, priority
from dqn_jax.replay import Replay, Transition

_MAX_EXACT = 2**24  # float32 counts integers exactly up to here


class FrameReplayState(NamedTuple):
    """Buffer state; per-slot leaves are ``[T, N, ...]`` (``T`` slots per column, ``N`` envs)."""

    frames: jax.Array  # uint8[T, N, H, W]
    action: jax.Array  # i32[T, N]
    reward: jax.Array  # f32[T, N]
    discount: jax.Array  # f32[T, N]
    is_step: jax.Array  # bool[T, N], a step's observation (else a final frame or empty)
    first: jax.Array  # bool[T, N], the first slot of an episode
    pos: jax.Array  # uint8[T, N], min(slots since the episode's first slot, S - 1)
    ptr: jax.Array  # i32[N], next slot to write, per column
    count: jax.Array  # i32[N], written slots per column (<= T)
    pending: jax.Array  # f32[N] (n_step 1) or f32[N, n]: priorities of the column's last n
    # steps (newest last), for when they become valid starts
    last_obs: jax.Array  # uint8[N, S, H, W], the column's last next_obs (zeros before any)
    last_done: jax.Array  # bool[N], whether the column's last step ended its episode
    last_pos: jax.Array  # i32[N], `pos` of the column's newest step
    tree: sumtree.SumTree  # T * N leaves, slot id t * N + c; 0 = not a valid start
    max_priority: jax.Array  # f32[], largest priority so far (1.0 before any)


def slots_per_column(capacity: int, num_envs: int) -> int:
    """``T = capacity // num_envs``."""
    return capacity // num_envs


def stack_indices(t: jax.Array, pos: jax.Array, stack: int, num_slots: int) -> jax.Array:
    """Slots ``i32[..., stack]`` (oldest first) of the stacked observation whose newest frame is
    at slot ``t`` (``i32[...]``), ``pos`` (``i32[...]``) slots after its episode's first slot:
    frames before that first slot repeat it (reset padding). Wraps modulo ``num_slots``."""
    back = jnp.arange(stack - 1, -1, -1, dtype=jnp.int32)  # S-1, ..., 0
    return (t[..., None] - jnp.minimum(back, pos[..., None])) % num_slots


def span(state: FrameReplayState, t: jax.Array, c: jax.Array, n_step: int = 1) -> jax.Array:
    """``i32[...]``: env steps ``m`` the ``n_step``-step transition at slot ``t`` of column
    ``c`` (``i32[...]`` each) spans: ``n_step``, or fewer where a final frame (the episode's
    end) comes first at slot ``t + m``. Meaningful for valid starts only."""
    if n_step == 1:
        return jnp.ones(jnp.shape(t), jnp.int32)
    k = jnp.arange(1, n_step + 1, dtype=jnp.int32)
    ahead = (t[..., None] + k) % state.frames.shape[0]
    final = ~state.is_step[ahead, c[..., None]]
    return jnp.min(jnp.where(final, k, n_step), axis=-1)


def valid_starts(state: FrameReplayState, t: jax.Array, c: jax.Array, n_step: int = 1) -> jax.Array:
    """``bool[...]``: whether slot ``t`` of column ``c`` (``i32[...]`` each) is a valid start
    of an ``n_step``-step transition: a step whose stack history is still in the buffer and
    whose slots ``t+1 .. t+m`` (:func:`span`) are written and of its episode."""
    num_slots = state.frames.shape[0]
    oldest = (state.ptr[c] - state.count[c]) % num_slots
    age = (t - oldest) % num_slots  # 0 = the column's oldest slot
    if n_step == 1:
        succ = (t + 1) % num_slots
        complete = (age < state.count[c] - 1) & ~state.first[succ, c]
    else:
        k = jnp.arange(1, n_step + 1, dtype=jnp.int32)
        ahead = (t[..., None] + k) % num_slots
        written = age[..., None] + k < state.count[c][..., None]
        final = (~state.is_step[ahead, c[..., None]]).astype(jnp.int32)
        read = jnp.cumsum(final, axis=-1) - final == 0  # no final frame before slot t+k
        complete = jnp.all(~read | (written & ~state.first[ahead, c[..., None]]), axis=-1)
    return state.is_step[t, c] & complete & (age >= state.pos[t, c].astype(jnp.int32))


def gather(state: FrameReplayState, indices: jax.Array, stack: int, n_step: int = 1) -> Transition:
    """The ``n_step``-step transitions at slot ids ``indices`` (``i32[B]``, ``t * N + c``) of a
    buffer of ``stack``-frame observations: ``obs`` and ``next_obs`` ``uint8[B, stack, H, W]``,
    ``action i32[B]``, ``reward f32[B]`` (discounted sum over the :func:`span`), ``discount
    f32[B]`` (product over it), ``last f32[B]`` (always 0). Meaningful for valid starts only
    (:func:`valid_starts`)."""
    num_slots, num_envs = state.frames.shape[:2]
    t, c = indices // num_envs, indices % num_envs
    pos = state.pos[t, c].astype(jnp.int32)
    m = span(state, t, c, n_step)
    reward, discount = state.reward[t, c], state.discount[t, c]
    if n_step > 1:
        reward, discount = discounted_sum(state, t, c, m, n_step)
    obs_t = stack_indices(t, pos, stack, num_slots)
    next_t = stack_indices((t + m) % num_slots, pos + m, stack, num_slots)
    return Transition(
        obs=state.frames[obs_t, c[:, None]],
        action=state.action[t, c],
        reward=reward,
        discount=discount,
        next_obs=state.frames[next_t, c[:, None]],
        last=jnp.zeros_like(reward),
    )


def discounted_sum(
    state: FrameReplayState, t: jax.Array, c: jax.Array, m: jax.Array, n_step: int
) -> tuple[jax.Array, jax.Array]:
    """``(reward, discount)`` ``f32[B]`` of the ``m``-step (``i32[B]``, ``<= n_step``)
    transitions starting at slots ``t`` of columns ``c``: ``r_t + d_t r_t+1 + ...`` and
    ``d_t ... d_t+m-1``, folded newest first as :func:`dqn_jax.returns.n_step` does."""
    k = jnp.arange(n_step, dtype=jnp.int32)
    slots = (t[:, None] + k) % state.frames.shape[0]
    taken = k < m[:, None]
    rewards = jnp.where(taken, state.reward[slots, c[:, None]], 0.0)
    discounts = jnp.where(taken, state.discount[slots, c[:, None]], 1.0)
    reward, discount = rewards[:, -1], discounts[:, -1]
    for j in range(n_step - 2, -1, -1):
        reward = rewards[:, j] + discounts[:, j] * reward
        discount = discounts[:, j] * discount
    return reward, discount


def bytes_per_transition(state_or_shapes: Any) -> float:
    """Replay memory per slot in bytes: every array of the state (frames, per-slot fields, sum
    tree, per-column state) divided by the ``T * N`` slots. Accepts a state or its
    ``jax.eval_shape`` (leaves need ``.shape`` and ``.dtype`` only). About ``H * W + 20``."""
    leaves = jax.tree.leaves(state_or_shapes)
    total = sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize for x in leaves)
    num_slots = int(np.prod(state_or_shapes.frames.shape[:2]))
    return total / num_slots


def _write_step(
    state: FrameReplayState, step: Transition, new_priority: jax.Array, stack: int, n_step: int
) -> tuple[FrameReplayState, tuple[jax.Array, jax.Array]]:
    """Store one vector step (``step`` leaves ``[N, ...]``): the new state (its ``tree`` not
    yet updated) and the priority changes ``(slot ids i32[M], priorities f32[M])`` it makes (ids
    out of range where nothing changes), for :func:`dqn_jax.sumtree.update`.

    ``new_priority f32[N]``: each env's step gets it once it becomes a valid start (its
    ``n_step``-th successor or its episode's final frame is written: this step if ``done``,
    else a later one; ``pending`` keeps it until then).

    Nothing here reads the big per-slot arrays before writing them (the column's previous step
    is summarized in ``last_*``): a read before a write in one program makes XLA copy the whole
    buffer to keep the old values alive.
    """
    num_slots, num_envs = state.frames.shape[:2]
    c = jnp.arange(num_envs, dtype=jnp.int32)
    w = state.ptr
    # Same-step autoreset: a step continues its env's episode iff its obs is the previous
    # step's next_obs and that step did not end the episode. This also catches a reset the
    # buffer was not told about (e.g. environments rebuilt after a restart).
    same = jnp.all(step.obs == state.last_obs.astype(step.obs.dtype), axis=(1, 2, 3))
    continues = (state.count > 0) & ~state.last_done & same
    pos = jnp.where(continues, jnp.minimum(state.last_pos + 1, stack - 1), 0)
    done = step.last > 0
    # The final frame goes to the next slot where `done`, and nowhere (dropped) elsewhere.
    w_final = jnp.where(done, (w + 1) % num_slots, num_slots)
    final_pos = jnp.minimum(pos + 1, stack - 1)

    def put(buf, step_value, final_value):
        buf = buf.at[w, c].set(step_value.astype(buf.dtype))
        return buf.at[w_final, c].set(jnp.asarray(final_value, buf.dtype), mode="drop")

    n_written = 1 + done.astype(jnp.int32)
    false = jnp.zeros((num_envs,), bool)
    state = state._replace(
        frames=put(state.frames, step.obs[:, -1], step.next_obs[:, -1]),
        action=put(state.action, step.action, 0),
        reward=put(state.reward, step.reward, 0.0),
        discount=put(state.discount, step.discount, 0.0),
        is_step=put(state.is_step, ~false, False),
        first=put(state.first, ~continues, False),
        pos=put(state.pos, pos, final_pos),
        ptr=(w + n_written) % num_slots,
        count=jnp.minimum(state.count + n_written, num_slots),
        last_obs=step.next_obs.astype(state.last_obs.dtype),
        last_done=done,
        last_pos=pos,
    )
    # Validity changes only near the writes: the n newest slots before the step and the step
    # slot (their windows may now be complete), and the slots whose history reached the
    # overwritten ones (at most S - 1 past the last write). Priorities are written only where
    # they change: a start whose window ends at this write gets its pending priority; any
    # other start only ever loses validity (a valid one with an earlier end already has its
    # priority, perhaps updated since).
    offsets = jnp.arange(-n_step, stack + 1, dtype=jnp.int32)
    window = (w[:, None] + offsets) % num_slots  # [N, n + S + 1], distinct as T >= n + S + 1
    valid = valid_starts(state, window, c[:, None], n_step)
    ends_now = offsets + span(state, window, c[:, None], n_step) >= 0
    newly = valid & (offsets <= 0) & ends_now
    pending = state.pending.reshape(num_envs, n_step)  # [:, j]: the step n - j steps back
    later = jnp.zeros((num_envs, stack), jnp.float32)
    fresh = jnp.concatenate([pending, new_priority[:, None], later], axis=1)
    changes = newly | ~valid
    ids = jnp.where(changes, window * num_envs + c[:, None], num_slots * num_envs)
    values = jnp.where(newly, fresh, 0.0)
    pending = jnp.concatenate([pending[:, 1:], new_priority[:, None]], axis=1)
    state = state._replace(pending=pending.reshape(state.pending.shape).astype(jnp.float32))
    return state, (ids.reshape(-1), values.reshape(-1))


def frame_replay(
    capacity: int,
    batch_size: int,
    num_envs: int,
    *,
    stack: int = 4,
    prioritized: bool = False,
    alpha: float = 0.6,
    eps: float = 0.01,
    priority_on_insert: str = "max",
    n_step: int = 1,
) -> Replay:
    """Stacked-frame replay of ``capacity`` slots over ``num_envs`` columns (see module doc).

    Args:
      capacity: total slots (``T = capacity // num_envs`` per column,
        ``T >= stack + n_step + 1``).
      batch_size: transitions per sample.
      num_envs: environments of the vector env; each writes its own column.
      stack: frames per observation ``S``.
      prioritized: PER sampling (stratified, IS weights) instead of uniform.
      alpha, eps, priority_on_insert: as :func:`dqn_jax.per.prioritized_replay` (prioritized
        only); ``"td"`` needs ``abs_td`` in ``add`` (with ``n_step > 1``, the start step's
        one-step ``|td|``: the only one the agent has when storing).
      n_step: env steps a sampled transition spans at most (module doc), built when sampling
        from the stored one-step steps; the returned ``Replay.n_step`` says so to the agent.

    Functions (``B = batch_size``, ``n = k * num_envs``):

    - ``init(example)``: ``example`` is one unbatched :class:`~dqn_jax.replay.Transition` with
      ``obs [S, H, W]`` (its dtype, usually uint8, is the frame dtype).
    - ``add(state, steps, abs_td=None)``: ``steps`` one-step
      :class:`~dqn_jax.replay.Transition` of ``k`` vector steps, time-major (``last`` marks
      episode ends); ``abs_td f32[n]`` for ``priority_on_insert="td"``, else ignored.
      Steps of each env in order, with nothing skipped; episode starts are detected (module
      doc). A step's priority is set once its transition is complete (``n_step`` successors,
      or the episode's final frame, are stored): until then it cannot be sampled.
    - ``sample(state, key, beta) -> (ids i32[B], Transition[B], weights f32[B])``: slot ids
      ``t * N + c`` of valid starts only (an empty buffer gives slot 0, weight 1). Uniform:
      i.i.d. uniform over valid starts, weights 1. Prioritized: as :mod:`dqn_jax.per`.
    - ``update(state, ids, abs_td f32[B])``: new priorities for sampled ids (duplicates: the
      last wins); ids that are not valid starts are ignored; a no-op for uniform replay.
    """
    num_slots = slots_per_column(capacity, num_envs)
    if num_envs < 1 or batch_size < 1 or stack < 1 or n_step < 1:
        got = f"{num_envs}, {batch_size}, {stack}, {n_step}"
        raise ValueError(f"num_envs, batch_size, stack and n_step must be >= 1, got {got}")
    if num_slots < stack + n_step + 1:
        raise ValueError(
            f"capacity={capacity} gives {num_slots} slots per env column for num_envs={num_envs};"
            f" need at least stack + n_step + 1 = {stack + n_step + 1}"
        )
    if num_slots * num_envs >= _MAX_EXACT:
        raise ValueError(f"capacity must be < {_MAX_EXACT} (float32 sum tree), got {capacity}")
    if prioritized:
        if not alpha >= 0 or not eps > 0:
            raise ValueError(f"need alpha >= 0 and eps > 0, got {alpha}, {eps}")
        if priority_on_insert not in INSERT_RULES:
            raise ValueError(f"priority_on_insert must be one of {INSERT_RULES}")

    def init(example: Transition) -> FrameReplayState:
        obs = jnp.asarray(example.obs)
        if obs.ndim != 3 or obs.shape[0] != stack:
            raise ValueError(f"example.obs must be [stack={stack}, H, W], got {obs.shape}")
        per_slot = (num_slots, num_envs)
        return FrameReplayState(
            frames=jnp.zeros((*per_slot, *obs.shape[1:]), obs.dtype),
            action=jnp.zeros(per_slot, jnp.asarray(example.action).dtype),
            reward=jnp.zeros(per_slot, jnp.float32),
            discount=jnp.zeros(per_slot, jnp.float32),
            is_step=jnp.zeros(per_slot, bool),
            first=jnp.zeros(per_slot, bool),
            pos=jnp.zeros(per_slot, jnp.uint8),
            ptr=jnp.zeros((num_envs,), jnp.int32),
            count=jnp.zeros((num_envs,), jnp.int32),
            pending=jnp.zeros((num_envs,) if n_step == 1 else (num_envs, n_step), jnp.float32),
            last_obs=jnp.zeros((num_envs, *obs.shape), obs.dtype),
            last_done=jnp.zeros((num_envs,), bool),
            last_pos=jnp.zeros((num_envs,), jnp.int32),
            tree=sumtree.init(num_slots * num_envs),
            max_priority=jnp.float32(1.0),
        )

    def add(state: FrameReplayState, steps: Transition, abs_td=None) -> FrameReplayState:
        n = steps.action.shape[0]
        chex.assert_tree_shape_prefix(steps, (n,))
        chex.assert_shape(steps.obs, (n, stack, *state.frames.shape[2:]))
        chex.assert_equal_shape([steps.obs, steps.next_obs])
        if n % num_envs:
            raise ValueError(f"add takes whole vector steps: n={n} is not a multiple of {num_envs}")
        k = n // num_envs
        if prioritized and priority_on_insert == "td":
            if abs_td is None:
                raise ValueError('priority_on_insert="td" needs abs_td (f32[n]), got None')
            chex.assert_shape(abs_td, (n,))
            new = priority(abs_td, alpha, eps)
        elif prioritized:
            new = jnp.full((n,), state.max_priority, jnp.float32)
        else:
            new = jnp.ones((n,), jnp.float32)
        if prioritized and priority_on_insert == "max":
            # Each column's newest steps wait for their successors; each then gets the max
            # priority of that moment, the first at which it can be sampled.
            state = state._replace(pending=jnp.full_like(state.pending, state.max_priority))
        by_step = jax.tree.map(lambda x: x.reshape(k, num_envs, *x.shape[1:]), (steps, new))

        state, (ids, values) = jax.lax.scan(
            lambda s, xs: _write_step(s, *xs, stack, n_step), state, by_step
        )
        # One tree update for all steps, in step order: where a later step changes a slot
        # again, its value is the last occurrence and wins.
        return state._replace(
            tree=sumtree.update(state.tree, ids.reshape(-1), values.reshape(-1)),
            max_priority=jnp.maximum(state.max_priority, jnp.max(new)),
        )

    def sample(state: FrameReplayState, key: jax.Array, beta=1.0):
        total = sumtree.total(state.tree)
        if prioritized:
            values = sumtree.stratified_values(key, batch_size, total)
        else:
            valid = jnp.round(total).astype(jnp.int32)
            rank = rng.randint(key, batch_size, jnp.maximum(valid, 1))
            values = rank.astype(jnp.float32) + 0.5
        indices = sumtree.sample(state.tree, values)
        if prioritized:
            sampled = sumtree.priorities(state.tree)[indices]
            # As in dqn_jax.per: orders this read before `update` overwrites the leaves.
            indices = jnp.where(sampled >= 0, indices, 0)
            weights = importance_weights(sampled, beta)
        else:
            weights = jnp.ones((batch_size,), jnp.float32)
        return indices, gather(state, indices, stack, n_step), weights

    def update(state: FrameReplayState, indices: jax.Array, abs_td: jax.Array):
        if not prioritized:
            return state
        chex.assert_rank([indices, abs_td], 1)
        chex.assert_equal_shape([indices, abs_td])
        new = priority(abs_td, alpha, eps)
        # Invalid slots (an empty buffer's slot 0, or ids not from the latest sample) must stay
        # at priority 0. The write's indices depend on this read, so XLA orders the read first
        # and updates the tree in place.
        live = sumtree.priorities(state.tree)[indices] > 0
        out_of_range = num_slots * num_envs
        return state._replace(
            tree=sumtree.update(state.tree, jnp.where(live, indices, out_of_range), new),
            max_priority=jnp.maximum(state.max_priority, jnp.max(jnp.where(live, new, 0.0))),
        )

    needs_priority = prioritized and priority_on_insert == "td"
    return Replay(init, add, sample, update, needs_priority=needs_priority, n_step=n_step)
