"""Environments of both backends, and the one place a config meets them.

- :mod:`dqn_jax.envs.jax_envs`: gymnax environments, stepped on the device (JAX backend).
- :mod:`dqn_jax.envs.gym_envs`: Gymnasium environments, stepped on the host (gymnasium
  backend), in the same-step vector env of :mod:`dqn_jax.envs.vector_env`, with the Atari
  preprocessing of :mod:`dqn_jax.envs.atari`.

:func:`prepare` resolves ``backend="auto"``, refuses the fields the chosen backend cannot
honour and checks the environment id, once, before anything compiles; a :class:`Config`
itself only checks ranges.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
import types
from functools import cache
from pathlib import Path
from typing import NamedTuple

# Ids we add on top of gymnax's registry: id -> (gymnax id, max_steps_in_episode override).
ALIASES = {"CartPole-v0": ("CartPole-v1", 200)}


class EnvSpec(NamedTuple):
    """What the agent needs to know about an environment (host-side, static)."""

    env_id: str
    obs_shape: tuple[int, ...]
    num_actions: int
    max_episode_steps: int  # 0 = no time limit


# Imported by gymnax's modules for its renderers only, and slow to import (seaborn pulls in
# pandas and scipy.stats).
PLOTTING_MODULES = ("seaborn", "matplotlib.pyplot")


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first attribute read imports
    the real module (which then replaces it there) and reads from it."""

    def __getattr__(self, attr: str):
        real = sys.modules.get(self.__name__)
        if real is self or real is None:
            del sys.modules[self.__name__]
            try:
                real = importlib.import_module(self.__name__)
            except BaseException:
                sys.modules[self.__name__] = self
                raise
        return getattr(real, attr)


def defer_plotting_imports() -> None:
    """Put a :class:`DeferredModule` in ``sys.modules`` for each of :data:`PLOTTING_MODULES`
    not imported yet, so importing gymnax does not load them; whoever uses one (gymnax's
    renderers, :mod:`dqn_jax.plots`) gets the real module at its first attribute. (The standard
    library's ``LazyLoader`` does not survive a second ``import`` statement on Python 3.11.)"""
    for name in PLOTTING_MODULES:
        if name not in sys.modules and importlib.util.find_spec(name.partition(".")[0]):
            sys.modules[name] = DeferredModule(name)


@cache
def jax_env_ids() -> tuple[str, ...]:
    """Every environment id the JAX backend accepts (gymnax's registry; no env is built)."""
    defer_plotting_imports()
    import gymnax

    return tuple(sorted(set(gymnax.registered_envs) | set(ALIASES)))


def gymnax_builtin_ids() -> tuple[str, ...] | None:
    """gymnax's built-in environment ids read from its source (``_BUILTIN_ENV_IDS`` in
    ``gymnax/registration.py``) without importing it: importing gymnax runs a jit, which starts
    JAX's backends, and the CLI must set its XLA flags before that. None when gymnax is missing
    or its source has no such list (another gymnax version)."""
    spec = importlib.util.find_spec("gymnax")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "registration.py"
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "_BUILTIN_ENV_IDS":
            try:
                ids = ast.literal_eval(node.value)
            except ValueError:
                return None
            return tuple(ids) if all(isinstance(i, str) for i in ids) else None
    return None


def resolve_backend_before_jax(env_id: str, backend: str = "auto") -> str:
    """:func:`resolve_backend` without starting JAX where gymnax is not imported yet (its
    built-in ids from :func:`gymnax_builtin_ids`; ids registered at run time need gymnax
    imported, and are then seen)."""
    builtin = None if "gymnax" in sys.modules else gymnax_builtin_ids()
    ids = None if builtin is None else set(builtin) | set(ALIASES)
    return resolve_backend(env_id, backend, ids)


def unknown_env_message(env_id: str) -> str:
    """A message naming ``env_id`` and the closest known ids (JAX and Gymnasium)."""
    import gymnasium as gym

    known = sorted(set(jax_env_ids()) | set(gym.registry))
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"env={env_id!r} is not a known environment.{hint} JAX environments: "
        f"{', '.join(jax_env_ids())}; or any discrete-action Gymnasium id."
    )


def resolve_backend(env_id: str, backend: str = "auto", jax_ids=None) -> str:
    """``"jax"`` or ``"gymnasium"``: ``backend`` itself unless it is ``"auto"``, which means
    jax for a JAX environment id (one of ``jax_ids``, default :func:`jax_env_ids`) and
    gymnasium for any other."""
    if backend != "auto":
        return backend
    return "jax" if env_id in (jax_env_ids() if jax_ids is None else jax_ids) else "gymnasium"


def _refuse(field: str, value, why: str):
    from dqn_jax.config import ConfigError

    raise ConfigError(f"{field}={value!r} is invalid: {why}")


def _check_fields(config) -> None:
    """Refuse what ``config.backend`` cannot honour."""
    if config.backend == "gymnasium":
        host = "with backend='gymnasium'"
        if config.prefill_episodes:
            _refuse("prefill_episodes", config.prefill_episodes, f"must be 0 {host}")
        if config.probe_states:
            _refuse(
                "probe_states",
                config.probe_states,
                f"must be 0 {host} (Q-value traces of fixed states are recorded inside the "
                "compiled loop of the JAX backend only)",
            )
        if config.env_steps_per_iteration > config.buffer_size:
            _refuse(
                "train_every",
                config.train_every,
                f"must be <= buffer_size ({config.buffer_size}) {host} (an iteration is stored "
                "at once)",
            )
    elif config.terminal_on_life_loss:
        _refuse("terminal_on_life_loss", True, "needs backend='gymnasium' (Atari)")


def env_spec(config) -> EnvSpec:
    """The :class:`EnvSpec` of ``config.env`` on ``config.backend`` (resolved); ``ValueError``
    for an unknown id, a non-discrete action space or an environment that cannot be built."""
    if config.backend == "jax":
        if config.env not in jax_env_ids():
            raise ValueError(unknown_env_message(config.env))
        from dqn_jax.envs.jax_envs import env_spec as jax_spec

        return jax_spec(config.env)
    from dqn_jax.envs.gym_envs import gymnasium_env_spec

    return gymnasium_env_spec(config.env)


def prepare(config):
    """``(config, spec)``: ``config`` with its backend resolved, checked against that backend
    (fields it cannot honour, the env id, the network's input shape), and the env's spec.
    Raises :class:`~dqn_jax.config.ConfigError` naming the field."""
    from dqn_jax.config import ConfigError
    from dqn_jax.networks import make_network

    config = config.replace(backend=resolve_backend(config.env, config.backend))
    _check_fields(config)
    try:
        spec = env_spec(config)
        make_network(config, spec.num_actions, spec.obs_shape)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return config, spec
