"""Run configuration: one frozen, hashable dataclass, validated when built, plus named presets.

Every count of steps is in **env steps** (transitions, summed over the ``num_envs`` parallel
environments, per seed), whatever ``num_envs`` is: ``total_steps``, ``learning_starts``,
``train_every``, ``target_period``, the epsilon schedules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

VariantName = Literal[
    "random",
    "dqn_simple",
    "dqn",
    "ddqn",
    "ddqn_per",
    "c51",
    "qr_dqn",
    "iqn",
    "m_dqn",
    "rainbow",
    "pqn",
]
LossName = Literal["", "squared", "half_squared", "pseudo_huber", "huber"]
Optimizer = Literal["adam", "rmsprop", "rmsprop_centered", "radam"]
Exploration = Literal["", "linear", "exponential", "none"]
InitScheme = Literal["lecun", "notebook"]
PriorityRule = Literal["max", "td"]
Backend = Literal["auto", "jax", "gymnasium"]
Network = Literal["mlp", "nature_cnn", "minatar_cnn"]
AtariEnvs = Literal["ale", "gymnasium"]
VARIANT_NAMES = get_args(VariantName)
LOSS_NAMES = get_args(LossName)[1:]
OPTIMIZERS = get_args(Optimizer)
EXPLORATIONS = get_args(Exploration)[1:]
INIT_SCHEMES = get_args(InitScheme)
PRIORITY_RULES = get_args(PriorityRule)
NETWORKS = get_args(Network)
BACKENDS = get_args(Backend)
ATARI_ENVS = get_args(AtariEnvs)


class ConfigError(ValueError):
    """A config field holds a value outside its allowed range."""


class RunDirError(ConfigError):
    """A path given as a run directory is missing, not a directory, or damaged."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a run. Counts of steps are env steps per seed."""

    env: str = "CartPole-v1"
    """Environment id: a gymnax id (plus CartPole-v0 = CartPole with a 200-step limit) for the
    JAX backend, a Gymnasium id for the gymnasium backend."""
    backend: Backend = "auto"
    """jax | gymnasium | auto (jax when ``env`` is a JAX environment id, else gymnasium;
    resolved by :func:`dqn_jax.envs.prepare` when a run starts)."""
    variant: VariantName = "ddqn"
    """random | dqn_simple | dqn | ddqn | ddqn_per | c51 | qr_dqn | iqn | m_dqn | rainbow | pqn:
    the head (scalar, categorical, quantile), its target, the replay and the target net
    (:mod:`dqn_jax.variants`); pqn learns from each iteration's rollout (no replay, no target
    net: :mod:`dqn_jax.pqn`)."""
    seed: int = 0
    """Seed of the first run; run i of ``num_seeds`` uses seed ``seed + i``."""
    num_seeds: int = 1
    """Independent runs vmapped in one compiled program."""
    total_steps: int = 100_000
    """Env steps per seed (must be a multiple of the env steps of one loop iteration)."""
    num_envs: int = 1
    """Parallel environments per seed; each loop iteration steps all of them."""
    num_chunks: int = 20
    """The run is split in this many compiled chunks; the host reports between them."""

    buffer_size: int = 50_000
    """Replay capacity in transitions."""
    batch_size: int = 64
    """Transitions per gradient update."""
    learning_starts: int = 1_000
    """No gradient update before this many env steps (after any prefill)."""
    train_every: int = 1
    """Env steps per gradient update (a multiple or a divisor of ``num_envs``); pqn: env steps
    per rollout (``num_envs`` x the rollout's vector steps)."""
    prefill_episodes: int = 0
    """Episodes of a random agent stored in the replay before training (notebook: 10,000)."""

    gamma: float = 0.99
    """Discount in [0, 1]."""
    loss: LossName = ""
    """squared | half_squared | pseudo_huber | huber; empty = the variant's own."""
    optimizer: Optimizer = "adam"
    """adam | rmsprop (TF1 RMSProp as in the notebook: decay 0.9, eps 1e-10, mean square
    accumulator starting at 1) | rmsprop_centered (Nature DQN's: gradient and squared-gradient
    averages with decay 0.95, step ``g / sqrt(E[g^2] - E[g]^2 + 0.01)``) | radam (Rectified
    Adam, Liu et al. 2020: PQN's)."""
    lr: float = 1e-3
    """Learning rate (> 0)."""
    adam_eps: float = 1e-8
    """Adam's epsilon (added to the root of the second moment; CleanRL's C51: 0.01 / batch)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over the run's updates."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    target_period: int = 500
    """Env steps between target-network updates."""
    tau: float = 1.0
    """Target update ``target <- tau * online + (1 - tau) * target``; 1 = hard copy."""

    exploration: Exploration = ""
    """linear | exponential (the notebook's) | none (greedy acting: noisy nets explore by their
    noise); empty = none with ``noisy``, else linear."""
    eps_start: float = 1.0
    """Epsilon at step 0 (eps_max in the notebook)."""
    eps_end: float = 0.05
    """Final (linear) or asymptotic (exponential) epsilon (eps_min in the notebook)."""
    eps_duration: int = 20_000
    """Linear schedule: env steps from eps_start to eps_end."""
    eps_decay: float = 0.001
    """Exponential schedule: decay rate per env step (notebook: 0.001)."""
    eps_after_learning_starts: bool = False
    """Hold epsilon at ``eps_start`` until ``learning_starts`` env steps and run the schedule
    from there (DeepMind's Nature DQN: annealing starts after the replay start size)."""

    network: Network = "mlp"
    """mlp (``hidden_sizes``) | nature_cnn (Mnih et al. 2015, for stacked image frames
    ``[C, H, W]`` with H, W >= 36, e.g. Atari's ``[4, 84, 84]``) | minatar_cnn (Young & Tian
    2019: conv 16 3x3, dense 128, for MinAtar's ``[10, 10, C]`` grids)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the Q-network MLP."""
    init_scheme: InitScheme = "lecun"
    """lecun (flax default) | notebook (weights uniform in [-1, 1])."""
    layer_norm: bool = False
    """LayerNorm before each hidden ReLU: after each dense of the MLP (PQN's network), after
    each conv (over channels) and the dense of a CNN (PQN's MinAtar network). Not for iqn."""

    n_step: int = 0
    """Transitions span up to this many steps (reward sum ``sum_k gamma**k r_k``, bootstrap
    ``gamma**k``, cut at episode ends); 0 = the variant's own (3 for rainbow, else 1)."""
    dueling: bool | None = None
    """Dueling head ``Q = V + A - mean_a A`` (Wang et al. 2016); None = the variant's own
    (rainbow: on)."""
    noisy: bool | None = None
    """Factorised Gaussian noisy dense layers (Fortunato et al. 2018), noise drawn per forward
    pass; evaluation uses the mean weights. None = the variant's own (rainbow: on)."""
    noisy_sigma0: float = 0.5
    """Noisy layers: initial noise scale ``sigma0 / sqrt(fan_in)``."""
    prioritized: bool | None = None
    """Prioritized replay (Schaul et al. 2016); None = the variant's own (ddqn_per, rainbow)."""
    double_q: bool | None = None
    """c51, qr_dqn, iqn, rainbow: the target's next action from the online network (Double DQN,
    Rainbow's choice) rather than the target network (the C51, QR-DQN and IQN papers'). None =
    the variant's own (c51 and rainbow: on). Other variants name it: dqn vs ddqn."""
    num_atoms: int = 51
    """c51, rainbow: atoms of the categorical return distribution."""
    v_min: float = -10.0
    """c51, rainbow: smallest atom (return units)."""
    v_max: float = 10.0
    """c51, rainbow: largest atom (return units)."""
    num_quantiles: int = 200
    """qr_dqn: quantiles of the return distribution (at fractions ``(2i + 1) / 2N``)."""
    num_tau_samples: int = 64
    """iqn: sampled fractions for the online distribution in the loss (the paper's N)."""
    num_tau_prime_samples: int = 64
    """iqn: sampled fractions for the target distribution (the paper's N')."""
    num_quantile_samples: int = 32
    """iqn: sampled fractions for acting and the target's greedy action (the paper's K);
    evaluation uses as many evenly spaced fractions ``(i + 0.5) / K``."""
    munchausen_tau: float = 0.03
    """m_dqn: entropy temperature of the softmax policy (Vieillard et al. 2020)."""
    munchausen_alpha: float = 0.9
    """m_dqn: scale of the log-policy bonus."""
    munchausen_clip: float = -1.0
    """m_dqn: lower clip l0 (< 0) of the scaled log-policy bonus."""
    q_lambda: float = 0.65
    """pqn: lambda in [0, 1] of the Q(lambda) returns (0 = one-step targets)."""
    num_epochs: int = 1
    """pqn: passes over each rollout."""
    num_minibatches: int = 1
    """pqn: minibatches per pass (each ``train_every / num_minibatches`` transitions)."""
    lambda_recompute: bool = False
    """pqn: recompute the Q(lambda) targets with the current parameters before each pass
    (default: once per rollout, from the parameters that acted, as the paper does)."""

    per_alpha: float = 0.6
    """Prioritized replay: priority exponent (notebook 0.6)."""
    per_eps: float = 0.01
    """Prioritized replay: added to |td| before the exponent (notebook 0.01)."""
    per_beta0: float = 0.4
    """Prioritized replay: IS exponent at the start (PER paper 0.4)."""
    per_beta_final: float = 1.0
    """Prioritized replay: IS exponent at the end; beta is linear in env steps in between."""
    per_priority_on_insert: PriorityRule = "max"
    """Prioritized replay: max (PER paper: max priority so far) | td (notebook: own |td|)."""

    clip_rewards: bool = False
    """Store ``sign(reward)`` in the replay (Nature DQN); episode returns stay raw scores."""
    reward_scale: float = 1.0
    """Rewards are learned from multiplied by this (> 0; after ``clip_rewards``); episode
    returns stay raw (PQN's CartPole: 0.1)."""
    terminal_on_life_loss: bool = False
    """Atari (``ALE/...`` ids and ale-py's others, e.g. ``BreakoutNoFrameskip-v4``): a lost life
    ends the episode (Gymnasium's AtariPreprocessing option: the next episode starts from a full
    reset)."""
    atari_envs: AtariEnvs = "ale"
    """Atari ids (as above): ale (ale-py's C++ ``AtariVectorEnv``, threaded; a resume starts
    new episodes) | gymnasium (Gymnasium's ``AtariPreprocessing`` wrappers stepped in turn;
    their state is checkpointed, so a resume is bit-identical). See dqn_jax/envs/ale_vector.py."""

    probe_states: int = 0
    """Q-value traces (the notebook's "Q values sampling"): this many fixed states, taken along
    a random-policy trajectory at the start, whose Q-values are recorded every iteration."""
    eval_episodes: int = 10
    """Greedy episodes per seed at the end (and every ``eval_every_chunks``); 0 = none."""
    eval_every_chunks: int = 0
    """Also evaluate every this many chunks; 0 = only at the end."""
    eval_epsilon: float = 0.0
    """Evaluation acts epsilon-greedily with this epsilon in [0, 1]; 0 = fully greedy
    (Nature DQN evaluates at 0.05)."""

    def __post_init__(self) -> None:
        from dqn_jax.variants import VARIANTS

        variant = VARIANTS.get(self.variant)
        if variant is not None:  # "" / 0 / None fields take the variant's own value
            for name, empty in _UNSET.items():
                value = getattr(self, name)
                if value is None or (value == empty and not isinstance(value, bool)):
                    object.__setattr__(self, name, getattr(variant, name))
        if self.exploration == "":
            object.__setattr__(self, "exploration", "none" if self.noisy else "linear")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        validate(self)

    # Derived, static quantities of the loop structure.
    @property
    def updates_per_iteration(self) -> int:
        """Gradient updates per loop iteration (pqn: ``num_epochs * num_minibatches``)."""
        if _on_policy(self.variant):
            return self.num_epochs * self.num_minibatches
        return max(1, self.num_envs // self.train_every)

    @property
    def vector_steps_per_iteration(self) -> int:
        """Steps of the vectorized environment per loop iteration."""
        return max(1, self.train_every // self.num_envs)

    @property
    def env_steps_per_iteration(self) -> int:
        """Env steps (transitions per seed) per loop iteration."""
        return self.vector_steps_per_iteration * self.num_envs

    @property
    def num_iterations(self) -> int:
        """Loop iterations in the whole run."""
        return self.total_steps // self.env_steps_per_iteration

    def replace(self, **changes) -> Config:
        """A validated copy with ``changes`` applied. Where ``changes`` sets ``variant`` or
        ``noisy``, a field left at what the old variant implied (its loss, n_step, dueling,
        noisy, prioritized, double_q; the exploration that followed from noisy) follows the new
        one."""
        if {"variant", "noisy"} & changes.keys():
            from dqn_jax.variants import VARIANTS

            own = VARIANTS[self.variant]
            for name, empty in _UNSET.items():
                if name not in changes and getattr(self, name) == getattr(own, name):
                    changes[name] = empty
            implied = "none" if self.noisy else "linear"
            if "exploration" not in changes and self.exploration == implied:
                changes["exploration"] = ""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


_UNSET = dict(loss="", n_step=0, dueling=None, noisy=None, prioritized=None, double_q=None)
"""Fields whose empty value means "the variant's own" (resolved when a Config is built)."""


def config_diff(old: Config, new: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """One ``field: old -> new`` line per field that differs, except those in ``ignore``."""
    a, b = old.to_dict(), new.to_dict()
    keys = [k for k in {**a, **b} if a.get(k) != b.get(k) and k not in ignore]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _fail(name: str, value, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


def _one_of(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, value, f"must be one of {', '.join(allowed)}")


def _at_least(name: str, value, low) -> None:
    if not value >= low:
        _fail(name, value, f"must be >= {low}")


def _in_range(name: str, value, low, high) -> None:
    if not (low <= value <= high) or math.isnan(value):
        _fail(name, value, f"must be in [{low}, {high}]")


def _is_atari(env_id: str) -> bool:
    # The env layer's own rule (``ALE/...`` and every other id ale-py registers, such as
    # ``BreakoutNoFrameskip-v4``), imported only where an Atari-only field is set.
    from dqn_jax.envs.gym_envs import is_atari

    return is_atari(env_id)


def validate(c: Config) -> None:
    """Raise :class:`ConfigError` naming the first bad field, its value and what is allowed.

    Ranges only: whether ``env`` exists on the backend, and what that backend supports, is
    checked by :func:`dqn_jax.envs.prepare`, once, before compiling."""
    if not isinstance(c.env, str) or not c.env:
        _fail("env", c.env, "must be an environment id")
    _one_of("backend", c.backend, BACKENDS)
    _one_of("variant", c.variant, VARIANT_NAMES)
    if c.loss or not _has_own_loss(c.variant):
        _one_of("loss", c.loss, LOSS_NAMES)
    _one_of("optimizer", c.optimizer, OPTIMIZERS)
    _one_of("exploration", c.exploration, EXPLORATIONS)
    _one_of("init_scheme", c.init_scheme, INIT_SCHEMES)
    _one_of("network", c.network, NETWORKS)
    if c.terminal_on_life_loss and not _is_atari(c.env):
        _fail("terminal_on_life_loss", True, f"only applies to Atari ids, not {c.env!r}")
    _one_of("atari_envs", c.atari_envs, ATARI_ENVS)
    if c.atari_envs != "ale" and not _is_atari(c.env):
        _fail("atari_envs", c.atari_envs, f"only applies to Atari ids, not {c.env!r}")
    _one_of("per_priority_on_insert", c.per_priority_on_insert, PRIORITY_RULES)
    for name in ("num_seeds", "total_steps", "num_envs", "num_chunks", "buffer_size"):
        _at_least(name, getattr(c, name), 1)
    for name in ("batch_size", "train_every", "target_period", "eps_duration"):
        _at_least(name, getattr(c, name), 1)
    for name in ("seed", "learning_starts", "prefill_episodes", "eval_episodes", "probe_states"):
        _at_least(name, getattr(c, name), 0)
    _at_least("eval_every_chunks", c.eval_every_chunks, 0)
    if c.batch_size > c.buffer_size:
        _fail("batch_size", c.batch_size, f"must be <= buffer_size ({c.buffer_size})")
    if c.num_envs > c.buffer_size:
        _fail("num_envs", c.num_envs, f"must be <= buffer_size ({c.buffer_size})")
    if c.train_every % c.num_envs and c.num_envs % c.train_every:
        _fail(
            "train_every",
            c.train_every,
            f"must be a multiple or a divisor of num_envs ({c.num_envs})",
        )
    per_iter = c.env_steps_per_iteration
    if c.total_steps % per_iter:
        lower = max(per_iter, c.total_steps // per_iter * per_iter)
        _fail(
            "total_steps",
            c.total_steps,
            f"must be a multiple of {per_iter} env steps per iteration "
            f"(num_envs={c.num_envs}, train_every={c.train_every}); e.g. {lower}",
        )
    if c.num_chunks > c.num_iterations:
        _fail("num_chunks", c.num_chunks, f"must be <= the {c.num_iterations} loop iterations")
    replay_free = c.variant == "random" or _on_policy(c.variant)
    if c.learning_starts < c.batch_size and c.prefill_episodes == 0 and not replay_free:
        _fail(
            "learning_starts",
            c.learning_starts,
            f"must be >= batch_size ({c.batch_size}) unless the replay is prefilled",
        )
    _in_range("gamma", c.gamma, 0.0, 1.0)
    if not c.lr > 0 or math.isinf(c.lr):
        _fail("lr", c.lr, "must be a finite number > 0")
    _at_least("max_grad_norm", c.max_grad_norm, 0.0)
    if not c.adam_eps > 0:
        _fail("adam_eps", c.adam_eps, "must be > 0")
    if not 0.0 < c.tau <= 1.0:
        _fail("tau", c.tau, "must be in (0, 1]")
    _in_range("eps_start", c.eps_start, 0.0, 1.0)
    _in_range("eps_end", c.eps_end, 0.0, 1.0)
    _in_range("eval_epsilon", c.eval_epsilon, 0.0, 1.0)
    if c.eps_end > c.eps_start:
        _fail("eps_end", c.eps_end, f"must be <= eps_start ({c.eps_start})")
    if not c.eps_decay > 0:
        _fail("eps_decay", c.eps_decay, "must be > 0")
    if not c.hidden_sizes or min(c.hidden_sizes) < 1:
        _fail("hidden_sizes", c.hidden_sizes, "must be one or more positive widths")
    _check_variant_flags(c)
    _at_least("per_alpha", c.per_alpha, 0.0)
    if not c.per_eps > 0:
        _fail("per_eps", c.per_eps, "must be > 0")
    _in_range("per_beta0", c.per_beta0, 0.0, 1.0)
    _in_range("per_beta_final", c.per_beta_final, 0.0, 1.0)


def _on_policy(variant: str) -> bool:
    """Whether ``variant`` learns from each rollout without a replay (pqn)."""
    from dqn_jax.variants import VARIANTS

    return VARIANTS[variant].on_policy


def _has_own_loss(variant: str) -> bool:
    from dqn_jax.variants import VARIANTS

    return VARIANTS[variant].head in ("categorical", "quantile", "iqn")


def _check_variant_flags(c: Config) -> None:
    """Flags that only some variants read, and combinations that mean nothing."""
    from dqn_jax.variants import VARIANTS

    variant = VARIANTS[c.variant]
    _at_least("n_step", c.n_step, 1)
    if c.variant == "random":
        for name in ("dueling", "noisy", "prioritized"):
            if getattr(c, name):
                _fail(name, True, "variant='random' has no network to train (it acts uniformly)")
        if c.n_step != 1:
            _fail("n_step", c.n_step, "variant='random' stores nothing to learn from")
    if _has_own_loss(c.variant) and c.loss:
        _fail(
            "loss",
            c.loss,
            f"variant={c.variant!r} has its own loss ({variant.loss_doc}); leave loss empty",
        )
    if c.double_q != variant.double_q and not _has_own_loss(c.variant):
        _fail(
            "double_q",
            c.double_q,
            f"variant={c.variant!r} fixes its target's next action "
            "(choose it by variant: dqn takes it from the target net, ddqn from the online net)",
        )
    if variant.head == "munchausen" and c.n_step != 1:
        _fail(
            "n_step",
            c.n_step,
            "variant='m_dqn' needs n_step=1 (its log-policy bonus is defined for one step)",
        )
    if c.exploration == "none" and not c.noisy and c.variant != "random":
        _fail("exploration", "none", "only with noisy=True (noise is then the exploration)")
    if not c.noisy_sigma0 >= 0:
        _fail("noisy_sigma0", c.noisy_sigma0, "must be >= 0")
    _at_least("num_atoms", c.num_atoms, 2)
    if not c.v_min < c.v_max or math.isinf(c.v_max - c.v_min):
        _fail("v_max", c.v_max, f"must be finite and > v_min ({c.v_min})")
    for name in (
        "num_quantiles",
        "num_tau_samples",
        "num_tau_prime_samples",
        "num_quantile_samples",
    ):
        _at_least(name, getattr(c, name), 1)
    if not c.munchausen_tau > 0:
        _fail("munchausen_tau", c.munchausen_tau, "must be > 0")
    _in_range("munchausen_alpha", c.munchausen_alpha, 0.0, 1.0)
    if not c.munchausen_clip < 0:
        _fail("munchausen_clip", c.munchausen_clip, "must be < 0")
    _check_pqn_flags(c)


def _check_pqn_flags(c: Config) -> None:
    """PQN's fields, and what PQN cannot combine with."""
    _in_range("q_lambda", c.q_lambda, 0.0, 1.0)
    _at_least("num_epochs", c.num_epochs, 1)
    _at_least("num_minibatches", c.num_minibatches, 1)
    if not c.reward_scale > 0 or math.isinf(c.reward_scale):
        _fail("reward_scale", c.reward_scale, "must be a finite number > 0")
    if c.layer_norm and c.variant == "iqn":
        _fail("layer_norm", True, "iqn's network has no LayerNorm option")
    if not _on_policy(c.variant):
        for name in ("num_epochs", "num_minibatches"):
            if getattr(c, name) != 1:
                _fail(name, getattr(c, name), "only variant='pqn' reads it (leave it at 1)")
        if c.lambda_recompute:
            _fail("lambda_recompute", True, "only variant='pqn' reads it")
        return
    if c.train_every % c.num_envs:
        _fail(
            "train_every",
            c.train_every,
            f"variant='pqn': env steps per rollout, a multiple of num_envs ({c.num_envs})",
        )
    if c.train_every % c.num_minibatches:
        _fail(
            "num_minibatches",
            c.num_minibatches,
            f"must divide the rollout's train_every={c.train_every} transitions",
        )
    refused = dict(
        prioritized="it has no replay to prioritize",
        noisy="noisy layers are not supported with pqn yet",
        prefill_episodes="it has no replay to prefill",
    )
    for name, why in refused.items():
        if getattr(c, name):
            _fail(name, getattr(c, name), f"variant='pqn' does not take it: {why}")
    if c.n_step != 1:
        _fail("n_step", c.n_step, "variant='pqn' uses Q(lambda) returns (set q_lambda instead)")


# Named presets: overrides of the defaults above.
PRESETS: dict[str, dict] = {
    # Tuned here for CartPole-v1 + ddqn: >= 7 of 8 seeds evaluate >= 475 within 100k steps.
    "default": dict(
        env="CartPole-v1",
        variant="ddqn",
        total_steps=100_000,
        num_envs=4,
        train_every=2,
        buffer_size=100_000,
        batch_size=64,
        learning_starts=1_000,
        loss="squared",
        lr=3e-3,
        anneal_lr=True,
        target_period=300,
        eps_duration=10_000,
        eps_end=0.01,
        hidden_sizes=(64, 64),
    ),
    # PureJaxRL dqn.py's default config, for a like-for-like speed comparison.
    "purejaxrl-cartpole": dict(
        env="CartPole-v1",
        variant="dqn",
        loss="squared",
        total_steps=500_000,
        num_envs=10,
        train_every=10,
        buffer_size=10_000,
        batch_size=128,
        learning_starts=10_000,
        target_period=500,
        tau=1.0,
        optimizer="adam",
        lr=2.5e-4,
        exploration="linear",
        eps_start=1.0,
        eps_end=0.05,
        eps_duration=250_000,
        hidden_sizes=(120, 84),
        gamma=0.99,
        num_chunks=10,
    ),
    # The notebook's agent on CartPole-v0 dynamics (1 env, update every step, RMSProp 2.5e-4).
    "notebook": dict(
        env="CartPole-v0",
        variant="ddqn",
        total_steps=200_000,
        num_envs=1,
        train_every=1,
        buffer_size=100_000,
        batch_size=64,
        learning_starts=64,
        target_period=1_000,
        optimizer="rmsprop",
        lr=2.5e-4,
        exploration="exponential",
        eps_start=1.0,
        eps_end=0.01,
        eps_decay=0.001,
        hidden_sizes=(64,),
        init_scheme="notebook",
        gamma=0.99,
    ),
}


# CleanRL dqn_jax.py's default work: the same as PureJaxRL's but one environment, on the host.
PRESETS["cleanrl-cartpole"] = {
    **PRESETS["purejaxrl-cartpole"],
    "num_envs": 1,
    "backend": "gymnasium",
}

# CleanRL c51_jax.py's default work: CartPole-v1 on Gymnasium, 1 env, 101 atoms in [-100, 100],
# the next action from the target network (its target, the C51 paper's; not Double-Q).
PRESETS["cleanrl-c51-cartpole"] = dict(
    env="CartPole-v1",
    backend="gymnasium",
    variant="c51",
    double_q=False,
    num_atoms=101,
    v_min=-100.0,
    v_max=100.0,
    total_steps=500_000,
    num_envs=1,
    train_every=10,
    buffer_size=10_000,
    batch_size=128,
    learning_starts=10_000,
    target_period=500,
    optimizer="adam",
    lr=2.5e-4,
    adam_eps=0.01 / 128,
    exploration="linear",
    eps_start=1.0,
    eps_end=0.05,
    eps_duration=250_000,
    hidden_sizes=(120, 84),
    gamma=0.99,
    num_chunks=10,
)

# purejaxql's pqn_cartpole.yaml (PQN, Gallici et al. 2024): 32 envs x 64 steps per rollout, 244
# rollouts (its 5e5 // 2048), 4 epochs x 16 minibatches of 128, MLP 2 x 256 with LayerNorm, RAdam
# 1e-4 decayed linearly over the 15,616 updates, global-norm clip 10, lambda 0.95, rewards x 0.1,
# epsilon 1 -> 0.2 over 20% of the rollouts. Not purejaxql's: episode ends follow the project's
# contract (a truncation bootstraps), and epsilon moves every vector step, not once per rollout.
PRESETS["purejaxql-cartpole"] = dict(
    env="CartPole-v1",
    backend="jax",
    variant="pqn",
    total_steps=244 * 2048,
    num_envs=32,
    train_every=2048,
    num_epochs=4,
    num_minibatches=16,
    learning_starts=0,
    hidden_sizes=(256, 256),
    layer_norm=True,
    optimizer="radam",
    lr=1e-4,
    anneal_lr=True,
    max_grad_norm=10.0,
    gamma=0.99,
    q_lambda=0.95,
    reward_scale=0.1,
    loss="half_squared",
    exploration="linear",
    eps_start=1.0,
    eps_end=0.2,
    eps_duration=int(0.2 * 244 * 2048),
    num_chunks=4,
)

# Nature DQN (Mnih et al., 2015) on Atari, from dqn_jax.envs.atari.NATURE_DQN: steps are agent steps
# (4 emulator frames each). The paper's target update every 10,000 gradient updates is 40,000
# agent steps here. Not the paper's: sticky actions (the v5 ids' 0.25), and a life loss does
# not end the episode (Gymnasium's option would reset the whole game); both keep scores
# comparable with current Atari results. Needs the `atari` extra.
PRESETS["nature-dqn"] = dict(
    env="ALE/Pong-v5",
    backend="gymnasium",
    variant="dqn",
    network="nature_cnn",
    loss="huber",
    optimizer="rmsprop_centered",
    lr=2.5e-4,
    gamma=0.99,
    total_steps=50_000_000,
    num_envs=1,
    train_every=4,
    buffer_size=1_000_000,
    batch_size=32,
    learning_starts=50_000,
    target_period=40_000,
    exploration="linear",
    eps_start=1.0,
    eps_end=0.1,
    eps_duration=1_000_000,
    eps_after_learning_starts=True,
    clip_rewards=True,
    num_chunks=500,
    eval_episodes=10,
    eval_epsilon=0.05,
)


# purejaxql's pqn_minatar.yaml at the 1M-step budget of its row in the PQN issue: 128 envs x 32
# steps per rollout, 244 rollouts, 2 epochs x 32 minibatches of 128, the MinAtar CNN with
# LayerNorm, RAdam 5e-4 decayed linearly over the run, global-norm clip 10, lambda 0.65,
# epsilon 1 -> 0.05 over 10% of the run (its EPS_DECAY, with its decay horizon set to the run).
# Not purejaxql's: He-normal weights there, LeCun-normal here; episode ends follow the
# project's contract; epsilon moves every vector step, not once per rollout.
PRESETS["purejaxql-minatar"] = dict(
    env="Breakout-MinAtar",
    backend="jax",
    variant="pqn",
    total_steps=244 * 4096,
    num_envs=128,
    train_every=4096,
    num_epochs=2,
    num_minibatches=32,
    learning_starts=0,
    network="minatar_cnn",
    layer_norm=True,
    optimizer="radam",
    lr=5e-4,
    anneal_lr=True,
    max_grad_norm=10.0,
    gamma=0.99,
    q_lambda=0.65,
    loss="half_squared",
    exploration="linear",
    eps_start=1.0,
    eps_end=0.05,
    eps_duration=int(0.1 * 244 * 4096),
    num_chunks=4,
)

# Tuned defaults per task: ``dqn-jax train --env ID`` without ``--preset`` starts from the
# preset named ``ID`` where there is one (as rl-zoo ships a hyperparameter file per task), else
# from "default" (tuned on CartPole-v1). Chosen by ``experiments/tune.py`` on seeds that no
# reported result uses; the searches and their scores are in ``results/tuning/``.
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "SpaceInvaders")
# Picked by `experiments/tune.py CartPole-v1` (results/tuning/CartPole-v1*.md, the last round
# on 16 seeds): the default agent with a shorter epsilon schedule and a faster target, to solve
# within 50k steps. What `dqn-jax train --env CartPole-v1` starts from; a bare `dqn-jax train`
# keeps "default".
PRESETS["CartPole-v1"] = {
    **PRESETS["default"],
    "total_steps": 50_000,
    "lr": 3e-3,
    "eps_duration": 5_000,
    "target_period": 100,
}

# Picked by `experiments/tune.py Acrobot-v1`: rl-zoo's widths, batch and replay size
# (results/tuning/Acrobot-v1-round1.md), the lr of the second round on 8 seeds
# (-round2.md, where 3-step returns did not help), then rl-zoo's update per env step of the
# third (-round3.md, where QR-DQN did not help), kept by the fourth (-round4.md: the Huber
# loss with clipping, or a target every 500 steps, scored lower); the fifth, on fresh tuning
# seeds (results/tuning/Acrobot-v1.md: the dueling head, lr 5e-3), chose a target every 125.
PRESETS["Acrobot-v1"] = {
    **PRESETS["default"],
    "env": "Acrobot-v1",
    "total_steps": 100_000,
    "train_every": 1,
    "hidden_sizes": (256, 256),
    "batch_size": 128,
    "buffer_size": 50_000,
    "lr": 3e-3,
    "target_period": 125,
    "eps_end": 0.1,
    "eps_duration": 12_000,
}

# Picked by `experiments/tune.py MountainCar-v0` (results/tuning/MountainCar-v0.md): rl-zoo's
# tuned SB3 DQN settings (2 x 256, batch 128, replay 10k, an update per 2 env steps, target
# every 600 steps, epsilon to 0.07 over 24k) with the lr and gamma the search chose.
PRESETS["MountainCar-v0"] = {
    **PRESETS["default"],
    "env": "MountainCar-v0",
    "total_steps": 120_000,
    "hidden_sizes": (256, 256),
    "batch_size": 128,
    "buffer_size": 10_000,
    "train_every": 2,
    "lr": 1e-3,
    "gamma": 0.99,
    "target_period": 600,
    "eps_end": 0.07,
    "eps_duration": 24_000,
}

# LunarLander-v3: rl-baselines3-zoo's tuned DQN for LunarLander (MLP 256-256, Adam 6.3e-4, batch
# 128, buffer 50,000, target every 250 steps, epsilon to 0.1 over 12% of its 200k-step budget),
# with the Huber loss and global-norm clipping at 10 (SB3's DQN defaults), an update every 2 env
# steps of 4 envs, and the default's lr decayed to 0 (rl-zoo keeps it constant). Candidates run
# by hand on seeds 1000-1003, not a search: results/tuning/LunarLander-v3.md.
PRESETS["LunarLander-v3"] = {
    **PRESETS["default"],
    "env": "LunarLander-v3",
    "total_steps": 200_000,
    "hidden_sizes": (256, 256),
    "batch_size": 128,
    "buffer_size": 50_000,
    "lr": 6.3e-4,
    "loss": "huber",
    "max_grad_norm": 10.0,
    "target_period": 250,
    "eps_end": 0.1,
    "eps_duration": 24_000,
}

# The MinAtar ids: gymnax's (``Breakout-MinAtar``: no sticky actions, 1,000-step cap, the JAX
# backend) and the minatar package's (``MinAtar/Breakout-v1``: sticky actions 0.1, no cap, the
# Gymnasium backend), the same agent on both.
MINATAR_IDS = tuple(
    env_id for game in MINATAR_GAMES for env_id in (f"{game}-MinAtar", f"MinAtar/{game}-v1")
)
for _env_id in MINATAR_IDS:
    # purejaxql-minatar's agent on rollouts of 125 envs x 32 steps, so that a budget in
    # millions of steps is a whole number of rollouts.
    PRESETS[_env_id] = {
        **{k: v for k, v in PRESETS["purejaxql-minatar"].items() if k != "backend"},
        "env": _env_id,
        "total_steps": 1_000_000,
        "num_envs": 125,
        "train_every": 4000,
        "eps_duration": 100_000,
        "num_chunks": 10,
    }
# Four passes over each rollout, the targets recomputed before each, lr 7e-4: the best point of
# the searches on tuning seeds, and above purejaxql's values on the reported seeds too, at more
# time per run (figures: results/tuning/Breakout-MinAtar.md). Tuned on gymnax's protocol only.
PRESETS["Breakout-MinAtar"] |= dict(num_epochs=4, lambda_recompute=True, lr=7e-4)


def preset_for(preset: str | None, env: str | None) -> str:
    """The preset a run starts from: ``preset`` when one is given, else the tuned preset named
    after ``env`` if there is one, else ``"default"``."""
    if preset is not None:
        return preset
    return env if env in PRESETS and env is not None else "default"


# Per-variant values for a preset's task, applied over the preset when a run picks that variant
# (``from_preset(name, variant=V)``, ``dqn-jax train --preset name --variant V``); the flags
# still override them. Tuned here on CartPole-v1 (see the README's results).
VARIANT_TUNING: dict[str, dict[str, dict]] = {
    "default": {
        # Atoms spanning CartPole's and Acrobot's discounted returns (|G| <= 1 / (1 - gamma)).
        "c51": dict(v_min=-100.0, v_max=100.0, lr=1.5e-3, target_period=500),
        # Half the paper's sigma0: on CartPole the paper's 0.5 leaves some seeds' greedy
        # policies unsettled at 100k steps.
        "rainbow": dict(v_min=-100.0, v_max=100.0, noisy_sigma0=0.25, target_period=500),
        # Fewer quantiles and fractions than the papers' 200 and 64/64/32: CartPole needs no
        # more, and the quantile loss's cost grows with their product.
        "qr_dqn": dict(num_quantiles=32, lr=1.5e-3, target_period=500),
        "iqn": dict(
            num_tau_samples=16,
            num_tau_prime_samples=16,
            num_quantile_samples=8,
            lr=1.5e-3,
            target_period=500,
        ),
        "m_dqn": dict(target_period=500),
        # Picked from a small search on seeds 0-7 (README, "PQN"): rollouts of 8 envs x 25
        # steps, 4 epochs x 4 minibatches of 50, the paper's LayerNorm, RAdam, clip and
        # reward scale.
        "pqn": dict(
            num_envs=8,
            train_every=200,
            num_epochs=4,
            num_minibatches=4,
            learning_starts=0,
            layer_norm=True,
            optimizer="radam",
            lr=1e-3,
            max_grad_norm=10.0,
            q_lambda=0.9,
            reward_scale=0.1,
            loss="half_squared",
            eps_end=0.05,
            eps_duration=20_000,
        ),
    },
}


# The replay variants on MinAtar: the MinAtar paper's DQN (replay 100k, batch 32, Huber, epsilon
# 1 -> 0.1 over 100k steps, replay start 5k, gamma 0.99) with Adam instead of RMSProp, 4 envs
# and an update every 4 env steps (the paper's every step would be 4x the updates).
MINATAR_REPLAY = dict(
    num_envs=4,
    train_every=4,
    num_epochs=1,
    num_minibatches=1,
    lambda_recompute=False,
    layer_norm=False,
    buffer_size=100_000,
    batch_size=32,
    learning_starts=5_000,
    target_period=4_000,
    optimizer="adam",
    lr=2.5e-4,
    max_grad_norm=0.0,
    loss="huber",
    eps_end=0.1,
    eps_duration=100_000,
)
for _task in ("Acrobot-v1", "MountainCar-v0", "LunarLander-v3"):
    VARIANT_TUNING[_task] = VARIANT_TUNING["default"]
# The Acrobot-v1 preset's second round tuned ddqn's lr only: every other variant keeps the
# first round's lr under its own tuning (and the third round's update per env step).
VARIANT_TUNING["Acrobot-v1"] = {
    v: {"lr": 1.5e-3, **VARIANT_TUNING["default"].get(v, {})} for v in VARIANT_NAMES if v != "ddqn"
}
# The CartPole-v1 preset was tuned for ddqn only: every other variant keeps the default
# preset's budget, schedule and its own tuning.
_DEFAULT_SCHEDULE = {
    k: PRESETS["default"][k] for k in ("total_steps", "eps_duration", "target_period")
}
VARIANT_TUNING["CartPole-v1"] = {
    v: {**_DEFAULT_SCHEDULE, **VARIANT_TUNING["default"].get(v, {})}
    for v in VARIANT_NAMES
    if v != "ddqn"
}
for _env_id in MINATAR_IDS:
    VARIANT_TUNING[_env_id] = {v: MINATAR_REPLAY for v in VARIANT_NAMES if v != "pqn"}


def variant_tuning(preset: str, variant: str) -> dict:
    """The values :data:`VARIANT_TUNING` puts over ``preset`` for ``variant`` (may be empty)."""
    return VARIANT_TUNING.get(preset, {}).get(variant, {})


def preset_values(name: str = "default", **overrides) -> dict:
    """The field values of preset ``name`` with ``overrides`` applied, not yet validated; where
    ``overrides`` picks a variant that :data:`VARIANT_TUNING` tunes for this preset, its values
    come in between."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown: must be one of {', '.join(PRESETS)}")
    variant = overrides.get("variant", PRESETS[name].get("variant", "ddqn"))
    values = {**PRESETS[name], **variant_tuning(name, variant), **overrides}
    if variant in VARIANT_NAMES and _has_own_loss(variant) and "loss" not in overrides:
        values["loss"] = ""  # the preset's loss is its scalar variant's; this head has its own
    return values


def from_preset(name: str = "default", **overrides) -> Config:
    """The validated config of :func:`preset_values`."""
    return Config(**preset_values(name, **overrides))


def unresolved(values: dict) -> Config:
    """A :class:`Config` holding ``values`` (defaults elsewhere) as given: neither validated nor
    resolved ("" / 0 / None still mean the variant's own). Only as a parser's defaults, which
    builds the real config from it (so a flag that changes the variant or ``noisy`` still
    changes what follows from it)."""
    config = object.__new__(Config)
    for f in fields(Config):
        object.__setattr__(config, f.name, values.get(f.name, f.default))
    return config


CONFIG_FIELDS = tuple(f.name for f in fields(Config))


def read_run_config(run_dir) -> dict:
    """The raw fields of ``RUN_DIR/config.json`` (no JAX, no validation); :class:`RunDirError`
    naming the path if ``run_dir`` is missing, not a directory, or its config is unreadable."""
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"{run_dir} does not exist: expected a run directory")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory: expected a run directory")
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunDirError(f"{path} not found: {run_dir} is not a run directory")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunDirError(f"{path} is damaged: {err}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} is damaged: expected a JSON object of config fields")
    return data


def load_run_config(run_dir) -> Config:
    """The validated :class:`Config` saved in ``RUN_DIR/config.json`` (:class:`RunDirError`
    if it is missing, damaged or holds unknown fields or invalid values)."""
    data = read_run_config(run_dir)
    path = f"{run_dir}/config.json"
    unknown = sorted(set(data) - set(CONFIG_FIELDS))
    if unknown:
        raise RunDirError(f"{path} is damaged: unknown fields {', '.join(unknown)}")
    try:
        return Config(**data)
    except ConfigError as err:
        raise RunDirError(f"{path} holds an invalid config: {err}") from None
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{path} is damaged: {err}") from None
