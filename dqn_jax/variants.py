"""Named variants: a small record of the swap-point choices that make each agent.

An experiment composes its own agent by passing its own pieces (``network``, ``head``,
``target_fn``, ``loss_fn``, ``replay``, ``returns``, ``epsilon``) to
:func:`dqn_jax.device_loop.make_train` or :func:`dqn_jax.host_loop.make_host_agent` (both
build :func:`dqn_jax.agent.make_agent`); the records here are only the names the CLI knows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from dqn_jax import targets


class Variant(NamedTuple):
    """The choices that define an agent."""

    target_fn: Callable | None  # see dqn_jax.targets; None = no learning (random agent)
    loss: str  # default loss name (dqn_jax.losses)
    replay: str  # "uniform" | "prioritized"
    uses_target_net: bool


VARIANTS: dict[str, Variant] = {
    "random": Variant(None, "squared", "uniform", False),
    "dqn_simple": Variant(targets.q_learning_online, "squared", "uniform", False),
    "dqn": Variant(targets.q_learning, "pseudo_huber", "uniform", True),
    "ddqn": Variant(targets.double_q_learning, "pseudo_huber", "uniform", True),
    "ddqn_per": Variant(targets.double_q_learning, "pseudo_huber", "prioritized", True),
}
