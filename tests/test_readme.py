"""The README's "Writing a new variant" snippets run as written and compute what they say."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.replay import Transition

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.slow


def snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Writing a new variant") : text.index("## Experiments")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_snippet(marker: str) -> dict:
    (code,) = [s for s in snippets() if marker in s]
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def definition_lines(code: str, name: str) -> int:
    """Non-blank lines of the top-level definition ``name`` in ``code``."""
    lines = code.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"(class|def) {name}\b", ln))
    body = [lines[start]]
    for ln in lines[start + 1 :]:
        if ln and not ln.startswith((" ", "#")):
            break
        body.append(ln)
    return sum(1 for ln in body if ln.strip())


def n_step_reference(steps: list[dict], n: int) -> list[dict]:
    """Plain NumPy: for each start s, rewards summed with the product of the discounts taken
    so far, stopping after the step that ended the episode (at most n steps)."""
    out = []
    for s in range(len(steps) - n + 1):
        reward, discount = np.zeros_like(steps[s]["reward"]), np.ones_like(steps[s]["reward"])
        next_obs = np.array(steps[s]["next_obs"])
        alive = np.ones_like(steps[s]["reward"], bool)
        for k in range(n):
            t = steps[s + k]
            reward = np.where(alive, reward + discount * t["reward"], reward)
            next_obs = np.where(alive[:, None], t["next_obs"], next_obs)
            discount = np.where(alive, discount * t["discount"], discount)
            alive &= t["last"] == 0
        out.append({"reward": reward, "discount": discount, "next_obs": next_obs})
    return out


def test_snippets_are_short():
    dueling, nstep = snippets()[:2]
    assert definition_lines(dueling, "DuelingMLP") <= 15
    assert definition_lines(nstep, "n_step") <= 15


def test_n_step_snippet_matches_numpy_and_trains():
    namespace = run_snippet("def n_step")
    assert np.isfinite(namespace["result"].summary["final_eval_return_per_seed"]).all()
    rng = np.random.default_rng(0)
    gamma, n, envs, steps = 0.9, 3, 4, 40
    raw = []
    for _ in range(steps):
        terminated = rng.random(envs) < 0.15
        last = terminated | (rng.random(envs) < 0.15)  # some truncations: last, discount gamma
        raw.append(
            {
                "obs": rng.normal(size=(envs, 2)).astype(np.float32),
                "action": rng.integers(0, 3, envs).astype(np.int32),
                "reward": rng.normal(size=envs).astype(np.float32),
                "discount": np.where(terminated, 0.0, gamma).astype(np.float32),
                "next_obs": rng.normal(size=(envs, 2)).astype(np.float32),
                "last": last.astype(np.float32),
            }
        )
    returns = namespace["n_step"](n)
    acc = returns.init(Transition(**jax.tree.map(jnp.asarray, raw[0])))
    push = jax.jit(returns.push)
    emitted = []
    for t in raw:
        acc, out = push(acc, Transition(**t))
        emitted.append(out)
    assert returns.delay == n - 1
    expected = n_step_reference(raw, n)
    assert any((e["discount"] == 0).any() for e in expected)  # terminations inside windows
    for got, want, start in zip(emitted[n - 1 :], expected, raw[: len(expected)], strict=True):
        np.testing.assert_allclose(got.reward, want["reward"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.discount, want["discount"], rtol=1e-6)
        np.testing.assert_array_equal(got.next_obs, want["next_obs"])
        np.testing.assert_array_equal(got.obs, start["obs"])
        np.testing.assert_array_equal(got.action, start["action"])


def test_n_step_snippet_runs_on_the_gymnasium_driver():
    from dqn_jax.config import Config
    from dqn_jax.host_loop import make_host_agent, train

    namespace = run_snippet("def n_step")
    config = Config(
        env="CartPole-v1",
        backend="gymnasium",
        total_steps=600,
        learning_starts=100,
        batch_size=16,
        buffer_size=600,
        hidden_sizes=(16,),
        num_chunks=2,
        eval_episodes=1,
    )
    agent = make_host_agent(config, returns=namespace["n_step"](3))
    result = train(config, None, agent=agent, progress=False, echo=lambda s: None)
    replay = jax.tree.map(lambda x: np.asarray(x[0]), result.state.replay)
    stored = replay.size
    assert stored == 600 - 2  # the first n - 1 = 2 steps were only windows
    # CartPole's rewards are 1: a stored reward sum is 1, 1 + g or 1 + g + g^2, with the
    # matching discount g^k (0 where the episode terminated inside the window)
    g = config.gamma
    reward = replay.data.reward[:stored].astype(np.float64)
    discount = replay.data.discount[:stored].astype(np.float64)
    k = np.argmin(np.abs(reward[:, None] - np.array([1.0, 1 + g, 1 + g + g * g])), axis=1) + 1
    np.testing.assert_allclose(reward, (1 - g**k) / (1 - g), rtol=1e-5)
    assert (k == 3).mean() > 0.8
    # a sum over k steps bootstraps with g^k unless the episode terminated inside the window
    np.testing.assert_allclose(discount[discount > 0], g ** k[discount > 0], rtol=1e-5)
    assert ((discount == 0) == (replay.data.discount[:stored] == 0)).all() and (discount == 0).any()


def test_dueling_snippet_is_value_plus_centred_advantage_and_trains():
    namespace = run_snippet("class DuelingMLP")
    result = namespace["result"]
    assert np.isfinite(result.summary["final_eval_return_per_seed"]).all()
    net = namespace["DuelingMLP"](num_actions=3)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    params = net.init(jax.random.PRNGKey(0), obs)
    q = net.apply(params, obs)
    p = params["params"]
    hidden = jax.nn.relu(obs @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    value = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    advantage = hidden @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(q.mean(axis=-1), value[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q - value, advantage - advantage.mean(-1, keepdims=True), atol=1e-5)
    trained = jax.tree.map(lambda x: x[0], result.state.agent.learner.params)["params"]
    assert trained["Dense_1"]["kernel"].shape == (64, 1)  # the training run used the two streams
