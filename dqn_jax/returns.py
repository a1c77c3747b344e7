"""Write-side returns: how one-step transitions become the transitions the replay stores.

A :class:`Returns` turns each vector step's one-step :class:`~dqn_jax.replay.Transition`
(``discount = gamma * (1 - terminated)``, ``last`` where the episode ended) into the
transition to store, with its own reward sum and discount, so targets never need to know how
many steps a transition spans. One-step returns store the step as it is; an n-step
accumulator keeps the last ``n`` steps per environment in its state and emits, ``n - 1``
steps later, the transition that started then with ``sum_k gamma**k r_k`` and
``gamma**n`` (fewer terms, and the discount of the steps actually taken, where the episode
ended inside the window: a termination then stops the bootstrap, a truncation does not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dqn_jax.replay import Transition


class Returns(NamedTuple):
    """``init(example) -> acc`` with ``example`` a ``Transition[N]`` of one vector step;
    ``push(acc, steps) -> (acc, out)`` with ``steps`` and ``out`` ``Transition[N]``: the step
    just taken in, the transition to store out. ``out`` is stored only from vector step
    ``delay`` on (counted from the start of storing): an accumulator fills its window first.
    """

    init: Callable[[Transition], Any]
    push: Callable[[Any, Transition], tuple[Any, Transition]]
    delay: int


def one_step() -> Returns:
    """Store every step as it is (no state)."""
    return Returns(init=lambda example: None, push=lambda acc, steps: (acc, steps), delay=0)


def n_step(n: int) -> Returns:
    """``n``-step returns (``n >= 1``): each step is stored ``n - 1`` steps late as the
    transition with the discounted sum of up to ``n`` rewards (``r_0 + d_0 r_1 + d_0 d_1 r_2 +
    ...`` with each step's own ``discount`` ``d``), the product of the discounts, and the
    ``next_obs`` of its last step; the window is cut after a step that ended its episode
    (``last``), so two episodes never mix, a termination stops the bootstrap (discount 0) and a
    truncation bootstraps from the true final observation with ``gamma**k``. State: the last
    ``n`` one-step transitions per environment, ``[n, N, ...]``."""
    if n == 1:
        return one_step()

    def fold(later: Transition, t: Transition):  # newest to oldest
        ahead = t._replace(
            reward=t.reward + t.discount * later.reward,
            discount=t.discount * later.discount,
            next_obs=later.next_obs,
            last=later.last,
        )
        ended = t.last > 0  # t ended its episode: the window stops at t
        pick = lambda a, b: jnp.where(ended.reshape(-1, *[1] * (a.ndim - 1)), b, a)  # noqa: E731
        return jax.tree.map(pick, ahead, t), None

    def push(window: Transition, step: Transition):
        window = jax.tree.map(lambda w, x: jnp.concatenate([w[1:], x[None]]), window, step)
        older = jax.tree.map(lambda w: w[:-1], window)
        newest = jax.tree.map(lambda w: w[-1], window)
        return window, jax.lax.scan(fold, newest, older, reverse=True)[0]

    def init(example: Transition) -> Transition:
        return jax.tree.map(lambda x: jnp.zeros((n, *x.shape), x.dtype), example)

    return Returns(init=init, push=push, delay=n - 1)
