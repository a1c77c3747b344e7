"""Named variants: a small record of the swap-point choices that make each agent.

An experiment composes its own agent by passing its own pieces (``network``, ``head``,
``target_fn``, ``loss_fn``, ``replay``, ``returns``, ``epsilon``) to
:func:`dqn_jax.device_loop.make_train` or :func:`dqn_jax.host_loop.make_host_agent` (both
build :func:`dqn_jax.agent.make_agent`); the records here are only the names the CLI knows.
A record's ``n_step``, ``dueling``, ``noisy``, ``prioritized`` and ``double_q`` are the
defaults of the config fields of those names (the flags compose: ``--variant c51 --n-step 3
--dueling True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from dqn_jax import targets


class Variant(NamedTuple):
    """The choices that define an agent."""

    target_fn: Callable | None  # scalar heads: see dqn_jax.targets; None = no learning (random)
    loss: str  # default loss name (dqn_jax.losses); "" = the head's own (distributional)
    prioritized: bool
    uses_target_net: bool
    head: str = "scalar"  # scalar | munchausen | categorical | quantile | iqn
    n_step: int = 1
    dueling: bool = False
    noisy: bool = False
    loss_doc: str = ""  # the head's own loss, for messages
    on_policy: bool = False  # learns from each iteration's rollout, no replay (dqn_jax.pqn)
    double_q: bool = False  # the target's next action from the online network


_CE = "cross-entropy to the projected target distribution"
_QH = "quantile Huber, kappa 1"

VARIANTS: dict[str, Variant] = {
    "random": Variant(None, "squared", False, False),
    "dqn_simple": Variant(targets.q_learning_online, "squared", False, False),
    "dqn": Variant(targets.q_learning, "pseudo_huber", False, True),
    "ddqn": Variant(targets.double_q_learning, "pseudo_huber", False, True, double_q=True),
    "ddqn_per": Variant(targets.double_q_learning, "pseudo_huber", True, True, double_q=True),
    "c51": Variant(None, "", False, True, head="categorical", loss_doc=_CE, double_q=True),
    "qr_dqn": Variant(None, "", False, True, head="quantile", loss_doc=_QH),
    "iqn": Variant(None, "", False, True, head="iqn", loss_doc=_QH),
    "m_dqn": Variant(None, "huber", False, True, head="munchausen"),
    "rainbow": Variant(
        None,
        "",
        True,
        True,
        "categorical",
        n_step=3,
        dueling=True,
        noisy=True,
        loss_doc=_CE,
        double_q=True,
    ),
    "pqn": Variant(targets.q_learning_online, "half_squared", False, False, on_policy=True),
}


def learns(name: str) -> bool:
    """Whether variant ``name`` trains a network (all but the random agent)."""
    return name != "random"


def make_head(config):
    """The :class:`~dqn_jax.heads.Head` of ``config``'s variant with its hyperparameters."""
    from dqn_jax import heads, losses

    variant = VARIANTS[config.variant]
    if variant.head in ("categorical", "quantile", "iqn"):
        from dqn_jax import distributional
    if variant.head == "categorical":
        return distributional.categorical_head(
            config.num_atoms, config.v_min, config.v_max, double_q=config.double_q
        )
    if variant.head == "quantile":
        return distributional.quantile_head(config.num_quantiles, double_q=config.double_q)
    if variant.head == "iqn":
        return distributional.iqn_head(
            config.num_tau_samples,
            config.num_tau_prime_samples,
            config.num_quantile_samples,
            double_q=config.double_q,
        )
    loss_fn = losses.LOSSES[config.loss]
    if variant.head == "munchausen":
        return heads.munchausen_head(
            loss_fn, config.munchausen_tau, config.munchausen_alpha, config.munchausen_clip
        )
    # The random agent never trains; its head only reads Q-values.
    return heads.scalar_head(variant.target_fn or targets.q_learning, loss_fn)
