"""Nature DQN network, Atari preprocessing, and a real Pong round trip through frame replay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import QUIET, assert_same_files, assert_same_state

from dqn_jax import frame_replay as fr
from dqn_jax import sumtree
from dqn_jax.envs import atari, gym_envs
from dqn_jax.envs.ale_vector import reset_padded
from dqn_jax.envs.vector_env import SameStepVectorEnv
from dqn_jax.networks import ConvQNetwork
from dqn_jax.replay import Transition, example_transition


def test_nature_network_shape_dtype_and_parameter_count():
    net = ConvQNetwork(num_actions=6)
    obs = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), np.uint8))
    # Shapes without running the (slow to compile) random initializers.
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), obs)
    conv = (8 * 8 * 4 + 1) * 32 + (4 * 4 * 32 + 1) * 64 + (3 * 3 * 64 + 1) * 64
    dense = (7 * 7 * 64 + 1) * 512 + (512 + 1) * 6
    assert sum(x.size for x in jax.tree.leaves(shapes)) == conv + dense == 1_687_206
    assert {(8, 8, 4, 32), (7 * 7 * 64, 512), (512, 6)} <= {
        x.shape for x in jax.tree.leaves(shapes)
    }
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.05, x.shape), x.dtype), shapes)
    apply = jax.jit(lambda p, o: net.apply(p, o, capture_intermediates=True))
    q, inter = apply(params, obs)
    assert q.shape == (3, 6) and q.dtype == jnp.float32
    # The first conv sees the pixels scaled to [0, 1], frames as NHWC channels.
    first = inter["intermediates"]["Conv_0"]["__call__"][0]
    kernel, bias = params["params"]["Conv_0"]["kernel"], params["params"]["Conv_0"]["bias"]
    x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
    want = jax.lax.conv_general_dilated(
        x, kernel, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert first.shape == (3, 20, 20, 32)
    np.testing.assert_allclose(first, want + bias, rtol=1e-5, atol=1e-5)


def test_clip_reward_and_nature_constants():
    r = jnp.array([-7.0, -0.5, 0.0, 0.2, 1.0, 30.0])
    np.testing.assert_array_equal(atari.clip_reward(r), [-1, -1, 0, 1, 1, 1])
    assert atari.NATURE_DQN["replay_size"] == 1_000_000 and atari.NATURE_DQN["lr"] == 2.5e-4


def test_non_atari_id_is_rejected():
    pytest.importorskip("ale_py")
    with pytest.raises(ValueError, match="not an Atari"):
        atari.make_atari_env("CartPole-v1")


@pytest.mark.parametrize("env_id", ["ALE/Breakout-v5", "BreakoutNoFrameskip-v4"])
def test_atari_only_fields_follow_the_env_layers_atari_ids(env_id):
    """The config accepts the Atari-only fields for every id the env layer builds as Atari
    (ale-py's ``NoFrameskip-v4`` ids too, not only ``ALE/...``) and hands them on to it."""
    pytest.importorskip("ale_py")
    from dqn_jax.config import Config, ConfigError

    config = Config(env=env_id, terminal_on_life_loss=True, atari_envs="gymnasium")
    assert gym_envs.is_atari(env_id)
    assert gym_envs.env_kwargs(config) == {"terminal_on_life_loss": True, "atari_envs": "gymnasium"}
    for not_atari in ("CartPole-v1", "Breakout-MinAtar"):
        with pytest.raises(ConfigError, match=f"only applies to Atari ids, not '{not_atari}'"):
            Config(env=not_atari, terminal_on_life_loss=True)


def test_missing_ale_py_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` raise
    with pytest.raises(ImportError, match=r"pip install -e '\.\[atari\]'"):
        atari.make_atari_env("ALE/Pong-v5")


@pytest.fixture(scope="module")
def pong():
    pytest.importorskip("ale_py")
    env = atari.make_atari_env("ALE/Pong-v5")
    yield env
    env.close()


def test_pong_observations_and_wrappers(pong):
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    assert pong.observation_space.shape == (4, 84, 84)
    assert pong.observation_space.dtype == np.uint8
    chain, env = [], pong
    while hasattr(env, "env"):
        chain.append(type(env).__name__)
        env = env.env
    # Nothing between the game and the agent touches rewards: returns are raw game scores.
    assert "ClipReward" not in chain and "TransformReward" not in chain
    assert isinstance(pong, FrameStackObservation) and isinstance(pong.env, AtariPreprocessing)
    assert pong.unwrapped._frameskip == 1
    assert pong.spec.kwargs["repeat_action_probability"] == 0.25  # the v5 default kept


def test_reset_pads_with_the_reset_frame(pong):
    obs, _ = pong.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert obs[-1].any()  # a real frame, not zero padding
    for j in range(3):
        np.testing.assert_array_equal(obs[j], obs[-1])
    nxt, reward, *_ = pong.step(0)
    np.testing.assert_array_equal(nxt[:3], obs[1:])
    assert isinstance(reward, float)


@pytest.mark.slow
def test_pong_round_trip_through_frame_replay():
    pytest.importorskip("ale_py")
    import gymnasium as gym
    from gymnasium.wrappers import TimeLimit

    num_envs, steps, limit = 2, 200, 37  # truncations every 37 steps exercise final frames
    envs = gym.vector.SyncVectorEnv(
        [lambda: TimeLimit(atari.make_atari_env("ALE/Pong-v5"), limit) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    replay = fr.frame_replay(2 * 300, 16, num_envs)
    obs, _ = envs.reset(seed=1)
    state = replay.init(example_transition(obs[0]))
    add = jax.jit(replay.add)
    rng = np.random.default_rng(0)
    stored = {}  # slot id -> the real transition
    slot = np.zeros(num_envs, np.int64)
    for _ in range(steps):
        actions = rng.integers(0, envs.single_action_space.n, num_envs)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        real_next = next_obs.copy()
        for i in np.flatnonzero(done):
            real_next[i] = info["final_obs"][i]
        step = Transition(
            obs, actions.astype(np.int32), reward.astype(np.float32),
            (0.99 * (1.0 - terminated)).astype(np.float32), real_next, done.astype(np.float32),
        )  # fmt: skip
        state = add(state, step)
        for i in range(num_envs):
            discount = step.discount[i]
            stored[int(slot[i]) * num_envs + i] = (
                obs[i],
                actions[i],
                reward[i],
                real_next[i],
                discount,
            )
        slot += 1 + done
        obs = next_obs
    envs.close()
    assert np.all(slot > steps) and np.all(slot < 300)  # episodes ended, no wrap
    ids = np.flatnonzero(np.asarray(sumtree.priorities(state.tree)) > 0)
    assert len(ids) == num_envs * (steps - 1)  # all but each column's newest step
    got = jax.device_get(fr.gather(state, jnp.asarray(ids, jnp.int32), 4))
    for j, i in enumerate(ids):
        o, a, r, n, d = stored[int(i)]
        np.testing.assert_array_equal(got.obs[j], o)
        np.testing.assert_array_equal(got.next_obs[j], n)
        assert got.action[j] == a and got.reward[j] == r
        assert got.discount[j] == d and got.last[j] == 0


def test_reset_padding_repeats_each_young_episodes_first_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(1, 256, (5, 4, 3, 3), np.uint8)
    age = np.array([0, 1, 2, 3, 7])
    obs = frames.copy()
    for i, a in enumerate(age):  # ALE's padding: zero frames before the episode's first
        obs[i, : max(3 - a, 0)] = 0
    got = reset_padded(obs, age)
    for i, a in enumerate(age):
        pad = max(3 - a, 0)
        for k in range(4):  # FrameStackObservation's: copies of the first frame
            np.testing.assert_array_equal(got[i, k], obs[i, pad] if k < pad else obs[i, k])
    grown = obs[3:]
    assert reset_padded(grown, age[3:]) is grown  # no young episode: nothing copied


def test_ale_vector_env_steps_as_the_gymnasium_path_where_both_are_deterministic():
    """ale-py's C++ vector env and the Gymnasium wrappers give the same observations (reset
    padding included), rewards, ends and final observations, bit for bit, where neither draws
    randomness: no sticky actions (a ``NoFrameskip-v4`` id) and no no-op starts. Where they
    cannot agree: sticky actions and no-op counts come from different generators, so from the
    first step of a ``-v5`` id or with no-op starts the two play different episodes."""
    pytest.importorskip("ale_py")
    from dqn_jax.envs.ale_vector import AleVectorEnv

    env_id, n = "BreakoutNoFrameskip-v4", 2
    ale = AleVectorEnv(env_id, n, noop_max=0, terminal_on_life_loss=True)
    gym = SameStepVectorEnv(
        [lambda: atari.make_atari_env(env_id, noop_max=0, terminal_on_life_loss=True)] * n
    )
    obs_a, _ = ale.reset(seed=[11, 12])
    obs_g, _ = gym.reset(seed=[11, 12])
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(150):
        np.testing.assert_array_equal(obs_a, obs_g)
        actions = rng.integers(0, ale.single_action_space.n, n)
        obs_a, r_a, term_a, trunc_a, info_a = ale.step(actions)
        obs_g, r_g, term_g, trunc_g, info_g = gym.step(actions)
        np.testing.assert_array_equal(r_a, r_g)
        np.testing.assert_array_equal(term_a, term_g)
        np.testing.assert_array_equal(trunc_a, trunc_g)
        done = term_a | trunc_a
        if done.any():
            ends += 1
            np.testing.assert_array_equal(info_a["final_obs"][done], info_g["final_obs"][done])
    assert ends >= 3  # reset padding and final frames were crossed
    ale.close()
    gym.close()


def test_ale_vector_env_follows_the_id_and_cannot_save_its_state():
    pytest.importorskip("ale_py")
    from dqn_jax.envs.ale_vector import ale_settings

    assert ale_settings("ALE/Pong-v5")["repeat_action_probability"] == 0.25
    assert ale_settings("PongNoFrameskip-v4")["repeat_action_probability"] == 0.0
    envs = gym_envs.make_vector_env("ALE/Pong-v5", 2)
    try:
        assert envs.single_action_space.n == 6  # the id's minimal action set
        obs, _ = envs.reset(seed=[3, 4_000_000_000])  # the host's 32-bit seeds
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        with pytest.raises(TypeError, match="cannot save"):
            gym_envs.save_env_state(envs)
    finally:
        envs.close()


@pytest.mark.slow
def test_nature_dqn_on_pong_learns_stores_one_frame_and_resumes_bit_identically(tmp_path):
    """The nature-dqn preset, shrunk to 240 agent steps on 2 envs, through the Gymnasium
    backend: it learns (finite loss), stores one frame per transition, writes the run files,
    and a run stopped after chunk 2 of 4 resumes bit-identical to the uninterrupted one (the
    emulators' whole state, RNG included, in the checkpoint); on ale-py's vector env, which
    cannot be checkpointed, a resume warns and goes on."""
    pytest.importorskip("ale_py")
    from dqn_jax import host_loop
    from dqn_jax.config import from_preset

    config = from_preset(
        "nature-dqn",
        total_steps=240,
        num_envs=2,
        train_every=8,
        learning_starts=120,
        batch_size=4,
        buffer_size=300,
        target_period=40,
        eps_duration=120,
        num_chunks=4,
        eval_episodes=0,  # a whole game of Pong per evaluation: the CartPole tests cover it
        atari_envs="gymnasium",  # whose environments' state the checkpoint holds
    )
    assert (config.network, config.optimizer, config.loss) == (
        "nature_cnn",
        "rmsprop_centered",
        "huber",
    )
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    result = host_loop.train(config, full_dir, checkpoint_every=0, **QUIET)
    s = result.summary
    for name in ("config.json", "episodes.csv", "metrics.jsonl", "summary.json"):
        assert (full_dir / name).exists()
    # One 84x84 frame is 7,056 bytes; four would be 28,224 (plus obs and next_obs: 56,448).
    assert 7_056 <= s["replay_bytes_per_transition"] < 7_056 * 1.1
    replay = result.state.replay
    assert replay.frames.shape[-2:] == (84, 84) and replay.frames.dtype == np.uint8
    assert int(replay.count.sum()) >= 240  # every agent step stored (plus final frames)
    # stats since the last chunk started: loss sum, Q sum, iterations learned, non-finite count
    loss_sum, _, learned, non_finite = np.asarray(result.state.stats[0])
    assert np.isfinite(loss_sum) and learned > 0 and non_finite == 0
    host_loop.train(config, cut_dir, stop_after_chunks=2, **QUIET)
    resumed = host_loop.train(config, cut_dir, resume=True, **QUIET)
    assert_same_files(full_dir, cut_dir)
    assert_same_state(result.state, resumed.state)
    # ale-py's vector env (the default): the same programs learn from it; its emulators cannot
    # be checkpointed, so the resume says so and continues on new episodes to the end.
    ale, ale_dir, lines = config.replace(atari_envs="ale"), tmp_path / "ale", []
    host_loop.train(ale, ale_dir, stop_after_chunks=2, **{**QUIET, "echo": lines.append})
    assert any("cannot save" in line and "new episodes" in line for line in lines)
    resumed = host_loop.train(ale, ale_dir, resume=True, **QUIET)
    assert resumed.summary["total_env_steps"] == 240
    assert int(resumed.state.replay.count.sum()) >= 240
    assert np.asarray(resumed.state.stats[0])[2] > 0  # it learned after the resume
