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
