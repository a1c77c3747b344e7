"""Deliberate breakages of the update, applied with monkeypatch: each must make a direct check
of ``tests/test_update.py`` fail, or those checks could not catch it on main."""

import optax
import pytest
import test_update as checks

from dqn_jax import agent, per, targets

pytestmark = [pytest.mark.mutation, pytest.mark.slow]


def drop_stop_gradient(monkeypatch):
    import jax

    monkeypatch.setattr(jax.lax, "stop_gradient", lambda x: x)


def ignore_is_weights(monkeypatch):
    import jax.numpy as jnp

    monkeypatch.setattr(per, "importance_weights", lambda p, beta: jnp.ones_like(p))


def skip_priority_write_back(monkeypatch):
    make = per.prioritized_replay
    monkeypatch.setattr(
        per,
        "prioritized_replay",
        lambda *a, **k: make(*a, **k)._replace(update=lambda state, indices, abs_td: state),
    )


def swap_online_and_target_in_double_q(monkeypatch):
    double = targets.double_q_learning
    monkeypatch.setattr(targets, "double_q_learning", lambda on, tg, r, d: double(tg, on, r, d))


def bootstrap_through_termination(monkeypatch):
    import jax.numpy as jnp

    monkeypatch.setattr(agent, "bootstrap_discount", lambda gamma, t: gamma * jnp.ones_like(t))


def blend_the_wrong_way(monkeypatch):
    blend = optax.incremental_update
    monkeypatch.setattr(optax, "incremental_update", lambda new, old, tau: blend(old, new, tau))


MUTATIONS = {
    "drop_stop_gradient": (
        drop_stop_gradient,
        lambda: checks.check_update_is_one_weighted_sgd_step("q_learning_online", "squared"),
    ),
    "ignore_is_weights": (ignore_is_weights, checks.check_prioritized_update),
    "skip_priority_write_back": (skip_priority_write_back, checks.check_prioritized_update),
    "swap_online_and_target_in_double_q": (
        swap_online_and_target_in_double_q,
        lambda: checks.check_update_is_one_weighted_sgd_step("double_q_learning", "squared"),
    ),
    "bootstrap_through_termination": (
        bootstrap_through_termination,
        lambda: checks.check_store(clip_rewards=False),
    ),
    "blend_the_wrong_way": (blend_the_wrong_way, lambda: checks.check_target_update(0.25)),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_direct_checks_catch_the_mutation(name, monkeypatch):
    mutate, check = MUTATIONS[name]
    check()  # passes on main...
    mutate(monkeypatch)
    with pytest.raises(AssertionError):
        check()  # ...and fails once broken
