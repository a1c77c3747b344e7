"""The README's "Writing a new variant" snippets run as written and compute what they say."""

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.replay import Transition

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.slow


def section() -> str:
    text = README.read_text()
    return text[text.index("## Writing a new variant") : text.index("## Experiments")]


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", section(), re.S)


@functools.cache
def run_snippet(marker: str) -> dict:
    """The namespace after running the one snippet containing ``marker`` (once per session:
    each snippet trains, so the tests of a snippet share its run)."""
    (code,) = [s for s in snippets() if marker in s]
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def inline(prefix: str) -> str:
    """The section's one inline code span starting with ``prefix``."""
    (code,) = [c for c in re.findall(r"`([^`\n]+)`", section()) if c.startswith(prefix)]
    return code


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


def trained_params(result) -> dict:
    """Seed 0's online parameters after a run."""
    return jax.tree.map(lambda x: np.asarray(x[0]), result.state.agent.learner.params)["params"]


def finite_returns(result) -> bool:
    returns = np.asarray(result.summary["final_eval_return_per_seed"])
    return returns.shape == (2,) and np.isfinite(returns).all() and (returns > 0).all()


def test_snippets_are_short_and_tiny_runs():
    code = snippets()
    assert len(code) == 3
    assert all(len(c.strip().splitlines()) <= 25 for c in code)
    network, _, target = code
    assert definition_lines(network, "LayerNormMLP") <= 12
    assert definition_lines(target, "averaged_q_learning") <= 3
    for c in code:  # each run is tiny: the test runs all of them
        assert "num_seeds=2, total_steps=2_000" in c


def layer_norm_mlp_numpy(p: dict, obs: np.ndarray, hidden: int) -> np.ndarray:
    x = obs.reshape(obs.shape[0], -1).astype(np.float64)
    for i in range(hidden):
        x = x @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
        norm = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
        x = np.maximum(norm * p[f"LayerNorm_{i}"]["scale"] + p[f"LayerNorm_{i}"]["bias"], 0.0)
    return x @ p[f"Dense_{hidden}"]["kernel"] + p[f"Dense_{hidden}"]["bias"]


def test_network_snippet_is_a_layer_norm_mlp_and_trains():
    namespace = run_snippet("class LayerNormMLP")
    net = namespace["LayerNormMLP"](num_actions=3, hidden_sizes=(8, 5))
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(6, 2, 2)).astype(np.float32)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), obs)
    # random parameters, LayerNorm scales and biases too, so they count in the re-computation
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    want = layer_norm_mlp_numpy(jax.tree.map(np.float64, params)["params"], obs, hidden=2)
    np.testing.assert_allclose(jax.jit(net.apply)(params, obs), want, rtol=1e-4, atol=1e-4)

    result = namespace["result"]
    assert finite_returns(result)
    trained = trained_params(result)  # the run trained this network, LayerNorms included
    names = ["Dense_0", "LayerNorm_0", "Dense_1", "LayerNorm_1", "Dense_2"]
    assert sorted(trained) == sorted(names)
    assert trained["Dense_0"]["kernel"].shape == (4, 64)
    assert trained["LayerNorm_1"]["scale"].shape == (64,)
    assert trained["Dense_2"]["kernel"].shape == (64, 2)
    assert not np.allclose(trained["LayerNorm_0"]["scale"], 1.0)


def test_network_snippet_goes_to_the_gymnasium_driver():
    from dqn_jax.config import Config
    from dqn_jax.host_loop import make_host_agent

    net = run_snippet("class LayerNormMLP")["LayerNormMLP"](num_actions=2, hidden_sizes=(16,))
    config = Config(env="CartPole-v1", backend="gymnasium", hidden_sizes=(16,))
    host = make_host_agent(config, network=net)
    obs = jnp.zeros((config.num_envs, 4))
    state, actions = jax.eval_shape(host.init, jax.random.PRNGKey(0), obs)  # traced, not run
    # the flat parameters are this network's (the config's MLP (16,) has 4*16+16 + 16*2+2)
    assert state.learner.params.shape == (4 * 16 + 16 + 2 * 16 + 16 * 2 + 2,)
    assert actions.shape == (1 + config.vector_steps_per_iteration, config.num_envs)


def pinball_reference(online, target, obs, action, reward, discount, next_obs) -> np.ndarray:
    """QR-DQN's loss with kappa 0 in plain NumPy: ``theta`` = the online quantiles of the taken
    action, targets ``T_j = r + discount * target quantile j`` of the target net's greedy
    action (by mean), ``sum_i mean_j |tau_i - 1{u_ij < 0}| * |u_ij|``, ``u_ij = T_j -
    theta_i``."""
    out = []
    for b in range(len(obs)):
        theta = online[obs[b], action[b]]
        next_quantiles = target[next_obs[b]]
        best = np.argmax(next_quantiles.mean(axis=-1))
        targets = reward[b] + discount[b] * next_quantiles[best]
        n = theta.shape[0]
        taus = (np.arange(n) + 0.5) / n
        u = targets[None, :] - theta[:, None]
        out.append(np.sum(np.mean(np.abs(taus[:, None] - (u < 0)) * np.abs(u), axis=1)))
    return np.array(out)


def test_head_snippet_is_plain_quantile_regression_and_trains():
    namespace = run_snippet("quantile_head")
    head = namespace["head"]
    rng = np.random.default_rng(0)
    states, num_actions, n, batch = 12, 3, 32, 8
    online = rng.normal(size=(states, num_actions, n)).astype(np.float32)
    target = rng.normal(size=(states, num_actions, n)).astype(np.float32)
    obs = rng.integers(0, states, batch)
    next_obs = rng.integers(0, states, batch)
    action = rng.integers(0, num_actions, batch).astype(np.int32)
    reward = rng.normal(size=batch).astype(np.float32)
    discount = np.where(rng.random(batch) < 0.25, 0.0, 0.9).astype(np.float32)
    batch_ = Transition(obs, action, reward, discount, next_obs, np.zeros(batch, np.float32))

    def forward(params, observations, key=None):  # a fake network: a table of quantiles
        return params[observations]

    terms = jax.jit(head.loss, static_argnums=0)(
        forward, jnp.asarray(online), jnp.asarray(target), batch_, jax.random.PRNGKey(0)
    )
    want = pinball_reference(online, target, obs, action, reward, discount, next_obs)
    np.testing.assert_allclose(terms.loss, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.priority, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.q_sa, online[obs, action].mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.q_values(online), online.mean(-1), atol=1e-6)
    default_head = namespace["distributional"].quantile_head(n)  # kappa 1: quantile Huber
    huber = jax.jit(default_head.loss, static_argnums=0)(
        forward, jnp.asarray(online), jnp.asarray(target), batch_, jax.random.PRNGKey(0)
    )
    assert not np.allclose(huber.loss, want, rtol=1e-3)

    result = namespace["result"]
    assert finite_returns(result)
    trained = trained_params(result)
    assert trained["Dense_2"]["kernel"].shape == (64, 2 * 32)  # 32 quantiles per action


def test_target_snippet_matches_numpy_and_trains():
    namespace = run_snippet("def averaged_q_learning")
    rng = np.random.default_rng(1)
    q_online, q_target = rng.normal(size=(2, 16, 3)).astype(np.float32)
    reward = rng.normal(size=16).astype(np.float32)
    discount = np.where(rng.random(16) < 0.25, 0.0, 0.99).astype(np.float32)
    got = namespace["averaged_q_learning"](q_online, q_target, reward, discount)
    want = reward + discount * np.max((q_online + q_target) / 2, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(want, reward + discount * q_target.max(-1))  # not plain Q-learning
    assert finite_returns(namespace["result"])


def test_named_variant_line(monkeypatch):
    """The section's ``VARIANTS`` line, with the name in ``VariantName``, is a variant the
    config accepts (and without the name it is refused)."""
    from dqn_jax import config as config_module
    from dqn_jax import variants
    from dqn_jax.config import Config, ConfigError

    entry = inline('"avg_dqn": Variant(')
    name, record = entry.split(": ", 1)
    target_fn = run_snippet("def averaged_q_learning")["averaged_q_learning"]
    variant = eval(record, {"Variant": variants.Variant, "averaged_q_learning": target_fn})
    monkeypatch.setitem(variants.VARIANTS, eval(name), variant)
    assert variant.target_fn is target_fn and variant.uses_target_net
    with pytest.raises(ConfigError):
        Config(variant="avg_dqn")
    monkeypatch.setattr(config_module, "VARIANT_NAMES", (*config_module.VARIANT_NAMES, "avg_dqn"))
    config = Config(variant="avg_dqn")
    assert (config.loss, config.prioritized, config.n_step) == ("pseudo_huber", False, 1)
    assert variants.make_head(config).q_values is not None  # a scalar head of the target


def test_flags_line_builds_a_dueling_c51_with_n_step_returns():
    from dqn_jax.config import Config
    from dqn_jax.networks import make_network

    config = eval(inline("Config(variant="), {"Config": Config})
    assert (config.variant, config.n_step, config.dueling, config.noisy) == ("c51", 3, True, False)
    net = make_network(config, 2, (4,))
    obs = jnp.zeros((1, 4))
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), obs)
    assert {"value", "advantage"} <= set(params["params"])
    assert jax.eval_shape(net.apply, params, obs).shape == (1, 2, config.num_atoms)
    assert Config(variant="c51", noisy=True).noisy
