"""Config validation: a bad value fails at once, naming the field, the value and the range.

Ranges are checked when a :class:`Config` is built; the environment id and what the backend
supports are checked by :func:`dqn_jax.envs.prepare` (which the CLI and both drivers call
before anything compiles)."""

import pytest

from dqn_jax.cli import parse_train_args
from dqn_jax.config import (
    MINATAR_IDS,
    PRESETS,
    VARIANT_TUNING,
    Config,
    ConfigError,
    from_preset,
    preset_for,
)
from dqn_jax.envs import prepare


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"lr": -1e-3}, r"lr=-0\.001 is invalid: must be a finite number > 0"),
        ({"batch_size": 512, "buffer_size": 256}, r"batch_size=512 .*<= buffer_size \(256\)"),
        ({"gamma": 1.5}, r"gamma=1\.5 is invalid: must be in \[0\.0, 1\.0\]"),
        ({"gamma": -0.1}, r"gamma=-0\.1"),
        (
            {"variant": "rainbow_v2"},
            r"variant='rainbow_v2' is invalid: must be one of random, dqn_simple",
        ),
        ({"num_envs": 4, "train_every": 3}, r"train_every=3 .*multiple or a divisor of num_envs"),
        ({"total_steps": 1001, "num_envs": 4, "train_every": 4}, r"total_steps=1001 .*e\.g\. 1000"),
        ({"tau": 0.0}, r"tau=0\.0 is invalid: must be in \(0, 1\]"),
        ({"eps_end": 0.5, "eps_start": 0.1}, r"eps_end=0\.5 .*<= eps_start"),
        ({"learning_starts": 10, "batch_size": 64}, r"learning_starts=10 .*>= batch_size \(64\)"),
        ({"hidden_sizes": (64, 0)}, r"hidden_sizes=\(64, 0\)"),
        ({"num_seeds": 0}, r"num_seeds=0 is invalid: must be >= 1"),
        ({"variant": "iqn", "layer_norm": True}, r"layer_norm=True .*iqn's network has no Layer"),
        (
            {"terminal_on_life_loss": True},
            r"terminal_on_life_loss=True .*only applies to Atari ids, not .CartPole-v1.",
        ),
        (
            {"atari_envs": "gymnasium"},
            r"atari_envs='gymnasium' .*only applies to Atari ids, not .CartPole-v1.",
        ),
        (
            {"env": "ALE/Pong-v5", "atari_envs": "envpool"},
            r"atari_envs='envpool' is invalid: must be one of ale, gymnasium",
        ),
        (
            {"optimizer": "sgd"},
            r"optimizer='sgd' is invalid: must be one of adam, rmsprop, rmsprop_c",
        ),
        ({"per_beta0": 2.0}, r"per_beta0=2\.0"),
        (
            {"loss": "l1"},
            r"loss='l1' is invalid: must be one of squared, half_squared, pseudo_huber, huber",
        ),
    ],
)
def test_bad_values_fail_with_a_clear_message(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config(**changes)


# Checked against the environment and the backend: by prepare, and so by the CLI.
ENV_CASES = [
    (
        {"env": "CartPol-v1"},
        r"env='CartPol-v1' is not a known environment.*Did you mean: CartPole-v1",
    ),
    ({"env": "Pendulum-v1"}, r"env='Pendulum-v1' has a Box action space; DQN needs a discrete"),
    # CartPole's [4] observations are too small for the Nature CNN, on either backend
    ({"network": "nature_cnn"}, r"network='nature_cnn' .*\[C, H, W\] .*gives \[4\]"),
    (
        {"network": "nature_cnn", "env": "CartPole-v1", "backend": "gymnasium"},
        r"network='nature_cnn' .*\[C, H, W\] .*gives \[4\]",
    ),
]


@pytest.mark.parametrize(("changes", "pattern"), ENV_CASES)
def test_bad_env_values_fail_before_compiling_with_a_clear_message(changes, pattern):
    config = Config(**changes)  # ranges only: the env is checked when a run is prepared
    with pytest.raises(ConfigError, match=pattern):
        prepare(config)
    argv = [arg for k, v in changes.items() for arg in (f"--{k.replace('_', '-')}", str(v))]
    with pytest.raises(SystemExit, match=f"error: {pattern}"):
        parse_train_args(argv)


def test_prepare_resolves_the_backend():
    assert Config().backend == "auto"
    config, spec = prepare(Config(env="CartPole-v1"))
    assert config.backend == "jax" and (spec.obs_shape, spec.num_actions) == ((4,), 2)
    assert prepare(Config(env="CartPole-v1", backend="gymnasium"))[0].backend == "gymnasium"


def test_loss_defaults_to_the_variants_and_configs_are_hashable():
    assert Config(variant="dqn_simple").loss == "squared"
    assert Config(variant="ddqn").loss == "pseudo_huber"
    assert Config(variant="ddqn", loss="huber").loss == "huber"
    assert hash(Config()) == hash(Config())
    assert Config(lr=1e-3) != Config(lr=2e-3)


def test_presets_are_valid_and_derived_counts():
    for name in PRESETS:
        from_preset(name)
    c = from_preset("purejaxrl-cartpole")
    assert (c.num_envs, c.env_steps_per_iteration, c.updates_per_iteration) == (10, 10, 1)
    assert c.num_iterations == 50_000
    c = Config(num_envs=1, train_every=10, total_steps=1000, learning_starts=100)
    assert (c.vector_steps_per_iteration, c.updates_per_iteration, c.num_iterations) == (10, 1, 100)
    c = Config(num_envs=8, train_every=2, total_steps=1600)
    assert (c.vector_steps_per_iteration, c.updates_per_iteration) == (1, 4)
    with pytest.raises(ConfigError, match="preset='nope'"):
        from_preset("nope")


def test_every_preset_builds_every_variant_it_tunes():
    for name, tuned in VARIANT_TUNING.items():
        for variant in tuned:
            assert from_preset(name, variant=variant).variant == variant


def test_env_picks_its_tuned_preset_unless_a_preset_is_given(capsys):
    config, options = parse_train_args(["--env", "Breakout-MinAtar", "--lr", "1e-3"])
    assert options.preset == "Breakout-MinAtar"
    assert (config.variant, config.network, config.layer_norm) == ("pqn", "minatar_cnn", True)
    assert (config.lr, config.num_envs, config.total_steps) == (1e-3, 125, 1_000_000)
    assert "defaults: preset 'Breakout-MinAtar'" in capsys.readouterr().out
    # A replay variant on the same env gets the env's values for it, not PQN's rollout.
    config, _ = parse_train_args(["--env", "Asterix-MinAtar", "--variant", "ddqn"])
    assert (config.variant, config.network, config.num_envs) == ("ddqn", "minatar_cnn", 4)
    assert (config.num_epochs, config.batch_size, config.loss) == (1, 32, "huber")
    capsys.readouterr()
    # --preset wins; an env without a tuned preset gets "default".
    config, options = parse_train_args(["--preset", "default", "--env", "Breakout-MinAtar"])
    assert (options.preset, config.network, config.variant) == ("default", "mlp", "ddqn")
    config, options = parse_train_args(["--env", "MountainCar-v0", "--num-seeds", "8"])
    assert (config.hidden_sizes, config.buffer_size, config.num_seeds) == ((256, 256), 10_000, 8)
    config, options = parse_train_args(["--env", "CartPole-v1"])  # tuned for ddqn at 50k
    assert (options.preset, config.total_steps, config.target_period) == (
        "CartPole-v1",
        50_000,
        100,
    )
    config, _ = parse_train_args(["--env", "CartPole-v1", "--variant", "c51"])
    assert config == prepare(from_preset("default", variant="c51"))[0]  # default's own
    capsys.readouterr()
    # The variant's own values over the preset are printed, less those set as flags.
    config, _ = parse_train_args(["--env", "CartPole-v1", "--variant", "m_dqn", "--lr", "1e-3"])
    note = capsys.readouterr().out.splitlines()[-1]
    assert note == (
        "defaults: m_dqn's own values over preset 'CartPole-v1': "
        "total_steps=100000, eps_duration=10000, target_period=500"
    )
    assert (config.total_steps, config.eps_duration, config.target_period) == (100_000, 10_000, 500)
    parse_train_args(["--env", "CartPole-v1", "--variant", "m_dqn", "--total-steps", "50000"])
    assert "total_steps" not in capsys.readouterr().out
    parse_train_args(["--env", "CartPole-v1", "--variant", "ddqn"])  # the preset's own variant
    assert "own values" not in capsys.readouterr().out
    config, options = parse_train_args(["--env", "CartPole-v0"])
    assert options.preset == "default" and config.env == "CartPole-v0"
    assert "defaults:" not in capsys.readouterr().out
    assert (preset_for(None, None), preset_for("notebook", "Breakout-MinAtar")) == (
        "default",
        "notebook",
    )


def test_minatar_presets_are_the_purejaxql_work_on_whole_rollouts():
    ref = from_preset("purejaxql-minatar")
    assert (ref.env_steps_per_iteration, ref.num_iterations) == (4096, 244)
    assert ref.updates_per_iteration == 2 * 32
    for env_id in MINATAR_IDS:
        c = from_preset(env_id)
        assert c.env == env_id and c.num_iterations == 250
        assert c.train_every // c.num_minibatches == 125  # minibatches of 125 (theirs: 128)


def test_rmsprop_centered_is_optax_centered_rmsprop():
    """Nature DQN's RMSProp: our direction times the rate equals optax.rmsprop(centered=True)."""
    import jax.numpy as jnp
    import numpy as np
    import optax

    from dqn_jax.learner import make_optimizer

    ours, ref = (
        make_optimizer("rmsprop_centered", 0.0),
        optax.rmsprop(2.5e-4, decay=0.95, eps=0.01, centered=True),
    )
    params = {"w": jnp.ones((3,)), "b": jnp.zeros((2,))}
    s_ours, s_ref = ours.init(params), ref.init(params)
    rng = np.random.default_rng(0)
    for _ in range(5):
        grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        d, s_ours = ours.update(grads, s_ours, params)
        u, s_ref = ref.update(grads, s_ref, params)
        for k in params:
            np.testing.assert_allclose(-2.5e-4 * d[k], u[k], rtol=1e-6, atol=1e-12)


# The DQN family's flags: composed, defaulting to the variant's own, refused where meaningless.
@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"variant": "m_dqn", "n_step": 3}, r"n_step=3 .*variant='m_dqn' needs n_step=1"),
        ({"variant": "c51", "loss": "huber"}, r"loss='huber' .*variant='c51' has its own loss"),
        ({"variant": "iqn", "loss": "squared"}, r"loss='squared' .*variant='iqn' has its own"),
        ({"variant": "random", "noisy": True}, r"noisy=True .*variant='random' has no network"),
        ({"variant": "random", "n_step": 2}, r"n_step=2 .*variant='random' stores nothing"),
        ({"exploration": "none"}, r"exploration='none' .*only with noisy=True"),
        ({"variant": "c51", "v_min": 5.0, "v_max": 1.0}, r"v_max=1\.0 .*> v_min \(5\.0\)"),
        ({"variant": "c51", "num_atoms": 1}, r"num_atoms=1 is invalid: must be >= 2"),
        ({"n_step": -1}, r"n_step=-1 is invalid: must be >= 1"),
        ({"munchausen_clip": 0.5}, r"munchausen_clip=0\.5 is invalid: must be < 0"),
        ({"noisy_sigma0": -0.1}, r"noisy_sigma0=-0\.1 is invalid"),
        ({"variant": "dqn", "double_q": True}, r"double_q=True .*variant='dqn' fixes.*ddqn"),
        ({"variant": "ddqn", "double_q": False}, r"double_q=False .*variant='ddqn' fixes"),
        ({"variant": "m_dqn", "double_q": True}, r"double_q=True .*variant='m_dqn' fixes"),
    ],
)
def test_family_flags_that_make_no_sense_are_refused_naming_both(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config(**changes)


def test_family_flags_default_to_the_variants_own_and_compose():
    rainbow = Config(variant="rainbow")
    assert (rainbow.n_step, rainbow.dueling, rainbow.noisy, rainbow.prioritized) == (3, 1, 1, 1)
    assert rainbow.exploration == "none" and rainbow.loss == ""  # noise explores; CE loss
    plain = Config(variant="ddqn")
    assert (plain.n_step, plain.dueling, plain.noisy, plain.prioritized) == (1, 0, 0, 0)
    assert plain.exploration == "linear"
    # An explicit False is kept (not mistaken for "unset"), and epsilon comes back without noise.
    ablated = Config(variant="rainbow", noisy=False, dueling=False, n_step=1)
    assert (ablated.noisy, ablated.dueling, ablated.n_step, ablated.prioritized) == (0, 0, 1, 1)
    assert ablated.exploration == "linear"
    # Noisy with epsilon, when asked for.
    assert Config(variant="rainbow", exploration="linear").exploration == "linear"
    # The next action of the target: online net for c51 and rainbow (Double-Q), target net for
    # qr_dqn and iqn (their papers'); either way when asked, and it follows a variant change.
    own = {v: Config(variant=v).double_q for v in ("c51", "rainbow", "qr_dqn", "iqn", "ddqn")}
    assert own == {"c51": True, "rainbow": True, "qr_dqn": False, "iqn": False, "ddqn": True}
    assert Config(variant="c51", double_q=False).double_q is False
    assert Config(variant="iqn", double_q=True).double_q is True
    assert Config(variant="c51").replace(variant="qr_dqn").double_q is False
    assert Config(variant="c51", double_q=False).replace(variant="iqn").double_q is False


def test_cli_bare_boolean_flags_and_variant_changes_recompute_what_follows():
    config, _ = parse_train_args(["--variant", "c51", "--n-step", "3", "--dueling"])
    assert (config.variant, config.n_step, config.dueling, config.noisy) == ("c51", 3, True, False)
    assert config.loss == ""  # the default preset's squared loss is the scalar variants'
    config, _ = parse_train_args(["--variant", "rainbow", "--noisy", "False"])
    assert (config.noisy, config.exploration, config.dueling) == (False, "linear", True)
    config, _ = parse_train_args(["--preset", "cleanrl-c51-cartpole", "--double-q"])
    assert config.double_q is True and PRESETS["cleanrl-c51-cartpole"]["double_q"] is False
    config, _ = parse_train_args(["--variant", "ddqn", "--prioritized", "--anneal-lr", "False"])
    assert config.prioritized and not config.anneal_lr
    with pytest.raises(SystemExit):
        parse_train_args(["--variant", "m_dqn", "--n-step", "3"])
