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
sampleable transitions.
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
    pending: jax.Array  # f32[N], priority for the column's newest step once it has a successor
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


def valid_starts(state: FrameReplayState, t: jax.Array, c: jax.Array) -> jax.Array:
    """``bool[...]``: whether slot ``t`` of column ``c`` (``i32[...]`` each) is a valid
    transition start: a step whose successor is written and in the same episode, and whose
    stack history is still in the buffer."""
    num_slots = state.frames.shape[0]
    oldest = (state.ptr[c] - state.count[c]) % num_slots
    age = (t - oldest) % num_slots  # 0 = the column's oldest slot
    succ = (t + 1) % num_slots
    return (
        state.is_step[t, c]
        & (age < state.count[c] - 1)
        & ~state.first[succ, c]
        & (age >= state.pos[t, c].astype(jnp.int32))
    )


def gather(state: FrameReplayState, indices: jax.Array, stack: int) -> Transition:
    """The transitions at slot ids ``indices`` (``i32[B]``, ``t * N + c``) of a buffer of
    ``stack``-frame observations: ``obs`` and ``next_obs`` ``uint8[B, stack, H, W]``,
    ``action i32[B]``, ``reward f32[B]``, ``discount f32[B]``, ``last f32[B]`` (0: the
    next slot continues the episode). Meaningful for valid starts only (:func:`valid_starts`)."""
    num_slots, num_envs = state.frames.shape[:2]
    t, c = indices // num_envs, indices % num_envs
    pos = state.pos[t, c].astype(jnp.int32)
    obs_t = stack_indices(t, pos, stack, num_slots)
    next_t = stack_indices((t + 1) % num_slots, pos + 1, stack, num_slots)
    return Transition(
        obs=state.frames[obs_t, c[:, None]],
        action=state.action[t, c],
        reward=state.reward[t, c],
        discount=state.discount[t, c],
        next_obs=state.frames[next_t, c[:, None]],
        last=jnp.zeros_like(state.reward[t, c]),
    )


def bytes_per_transition(state_or_shapes: Any) -> float:
    """Replay memory per slot in bytes: every array of the state (frames, per-slot fields, sum
    tree, per-column state) divided by the ``T * N`` slots. Accepts a state or its
    ``jax.eval_shape`` (leaves need ``.shape`` and ``.dtype`` only). About ``H * W + 20``."""
    leaves = jax.tree.leaves(state_or_shapes)
    total = sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize for x in leaves)
    num_slots = int(np.prod(state_or_shapes.frames.shape[:2]))
    return total / num_slots


def _write_step(
    state: FrameReplayState, step: Transition, new_priority: jax.Array, stack: int
) -> tuple[FrameReplayState, tuple[jax.Array, jax.Array]]:
    """Store one vector step (``step`` leaves ``[N, ...]``): the new state (its ``tree`` not
    yet updated) and the priority changes ``(slot ids i32[M], priorities f32[M])`` it makes (ids
    out of range where nothing changes), for :func:`dqn_jax.sumtree.update`.

    ``new_priority f32[N]``: each env's step gets it once its successor is written (this step if
    ``done``, else a later one: ``pending`` keeps it until then).

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
    # Validity changes only near the writes: the previous newest slot (now has a successor),
    # the step slot (has one iff `done`), and the slots whose history reached the overwritten
    # ones (at most S - 1 past the last write). Priorities are written only where they change:
    # the two newest step slots get theirs (or 0), older ones only ever lose validity.
    offsets = jnp.arange(-1, stack + 1, dtype=jnp.int32)
    window = (w[:, None] + offsets) % num_slots  # [N, S + 2], distinct as T >= S + 2
    valid = valid_starts(state, window, c[:, None])
    newest = offsets <= 0
    fresh = jnp.where(offsets == -1, state.pending[:, None], new_priority[:, None])
    changes = newest | ~valid
    ids = jnp.where(changes, window * num_envs + c[:, None], num_slots * num_envs)
    values = jnp.where(valid, fresh, 0.0)
    state = state._replace(pending=new_priority.astype(jnp.float32))
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
) -> Replay:
    """Stacked-frame replay of ``capacity`` slots over ``num_envs`` columns (see module doc).

    Args:
      capacity: total slots (``T = capacity // num_envs`` per column, ``T >= stack + 2``).
      batch_size: transitions per sample.
      num_envs: environments of the vector env; each writes its own column.
      stack: frames per observation ``S``.
      prioritized: PER sampling (stratified, IS weights) instead of uniform.
      alpha, eps, priority_on_insert: as :func:`dqn_jax.per.prioritized_replay` (prioritized
        only); ``"td"`` needs ``abs_td`` in ``add``.

    Functions (``B = batch_size``, ``n = k * num_envs``):

    - ``init(example)``: ``example`` is one unbatched :class:`~dqn_jax.replay.Transition` with
      ``obs [S, H, W]`` (its dtype, usually uint8, is the frame dtype).
    - ``add(state, steps, abs_td=None)``: ``steps`` one-step
      :class:`~dqn_jax.replay.Transition` of ``k`` vector steps, time-major (``last`` marks
      episode ends); ``abs_td f32[n]`` for ``priority_on_insert="td"``, else ignored.
      Steps of each env in order, with nothing skipped; episode starts are detected (module
      doc). A step's priority is set once its successor is stored (the next step, or the
      final frame if ``done``): until then it cannot be sampled.
    - ``sample(state, key, beta) -> (ids i32[B], Transition[B], weights f32[B])``: slot ids
      ``t * N + c`` of valid starts only (an empty buffer gives slot 0, weight 1). Uniform:
      i.i.d. uniform over valid starts, weights 1. Prioritized: as :mod:`dqn_jax.per`.
    - ``update(state, ids, abs_td f32[B])``: new priorities for sampled ids (duplicates: the
      last wins); ids that are not valid starts are ignored; a no-op for uniform replay.
    """
    num_slots = slots_per_column(capacity, num_envs)
    if num_envs < 1 or batch_size < 1 or stack < 1:
        got = f"{num_envs}, {batch_size}, {stack}"
        raise ValueError(f"num_envs, batch_size and stack must be >= 1, got {got}")
    if num_slots < stack + 2:
        raise ValueError(
            f"capacity={capacity} gives {num_slots} slots per env column for num_envs={num_envs};"
            f" need at least stack + 2 = {stack + 2}"
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
            pending=jnp.zeros((num_envs,), jnp.float32),
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
            # Each column's newest step waits for its successor; it then gets the max priority
            # of that moment, the first at which it can be sampled.
            state = state._replace(pending=jnp.full((num_envs,), state.max_priority))
        by_step = jax.tree.map(lambda x: x.reshape(k, num_envs, *x.shape[1:]), (steps, new))

        state, (ids, values) = jax.lax.scan(
            lambda s, xs: _write_step(s, *xs, stack), state, by_step
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
        return indices, gather(state, indices, stack), weights

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
    return Replay(init, add, sample, update, needs_priority=needs_priority)
