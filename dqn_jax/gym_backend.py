"""Gymnasium backend: the environment steps on the host, acting/storing/learning are jitted.

(Placeholder until the gymnasium backend lands: only the environment lookup exists.)
"""

from __future__ import annotations


def gymnasium_env_spec(env_id: str):
    """Static facts of a Gymnasium id; ``ValueError`` for unknown ids or non-discrete actions."""
    import gymnasium as gym

    from dqn_jax.envs import unknown_env_message

    if env_id not in gym.registry:
        raise ValueError(unknown_env_message(env_id))
    raise ValueError(f"env={env_id!r}: the gymnasium backend is not available yet")
