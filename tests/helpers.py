"""Small configs and helpers shared by the tests (a few seconds per run on a 2-core CPU)."""

SMALL = dict(
    env="CartPole-v1",
    variant="ddqn",
    total_steps=2_000,
    num_envs=2,
    train_every=2,
    learning_starts=200,
    batch_size=32,
    buffer_size=1_000,
    num_chunks=2,
    eval_episodes=2,
    hidden_sizes=(16,),
    target_period=100,
)
TWO_SEEDS = {**SMALL, "num_chunks": 4, "num_seeds": 2}
"""Two seeds of SMALL in four chunks: the checkpoint tests' run."""

QUIET = dict(progress=False, echo=lambda s: None)
"""``train(...)`` keywords: no progress bar, no console lines."""
CHECKPOINTED = dict(QUIET, checkpoint_every=1)
"""... and a checkpoint at every chunk's end."""


def arrays(tree) -> list:
    """The leaves of a pytree as NumPy arrays."""
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def flat_runs(params):
    """``f[R, P]``: each run's parameters (leaves ``[R, ...]``) as one flat row."""
    import numpy as np

    rows = [x.reshape(x.shape[0], -1) for x in arrays(params)]
    return np.concatenate(rows, axis=1)


def assert_same_files(dir_a, dir_b):
    """Two run directories hold the same episodes.csv, evals.csv and metrics.jsonl records
    (wall times aside)."""
    import json

    for name in ("episodes.csv", "evals.csv"):
        assert (dir_a / name).read_bytes() == (dir_b / name).read_bytes(), name

    def records(d):  # wall times differ, nothing else may
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in lines]

    assert records(dir_a) == records(dir_b)


def assert_same_state(a, b):
    """Two pytrees (train states) hold the same leaves, bit for bit."""
    import jax
    import numpy as np

    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def environ_with_devices(count: int) -> dict:
    """This process's environment for a subprocess that sees ``count`` CPU devices (keeping the
    suite's other XLA flags)."""
    import os

    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
    return dict(os.environ, XLA_FLAGS=flags.strip())


def evaluate_initial(config, change=None):
    """Greedy (``config.eval_epsilon``-greedy) returns ``f32[eval_episodes]`` of seed 0's
    initial parameters on ``config``'s backend, after ``change(params, num_actions)`` if given
    (the network's parameter pytree in, one of the same structure out)."""
    import jax
    import numpy as np

    if config.backend == "jax":
        from dqn_jax.device_loop import make_train
        from dqn_jax.run import seed_keys

        trainer = make_train(config)
        params = jax.jit(trainer.init)(seed_keys(config)[0]).agent.learner.params
        if change is not None:
            params = change(params, trainer.agent.spec.num_actions)
        return np.asarray(jax.jit(trainer.evaluate)(params, jax.random.PRNGKey(3)))
    from jax.flatten_util import ravel_pytree

    from dqn_jax import host_loop as gb

    host = gb.make_host_agent(config)
    obs = np.zeros((config.num_envs, *host.spec.obs_shape), np.float32)
    flat = jax.jit(host.init)(jax.random.PRNGKey(0), obs)[0].learner.params
    if change is not None:
        flat = ravel_pytree(change(host.agent.unravel(flat), host.spec.num_actions))[0]
    return gb.evaluate(host, flat, config.eval_episodes, 3, config.eval_epsilon)


def constant_policy_params(params, num_actions: int, action: int):
    """Parameters whose greedy action is ``action`` in every state: every weight 0, the output
    layer's bias one-hot at ``action``."""
    import jax
    import jax.numpy as jnp

    layers = jax.tree.map(jnp.zeros_like, params)["params"]
    last = max(layers, key=lambda name: int(name.split("_")[-1]))
    bias = jnp.zeros(num_actions).at[action].set(1.0)
    return {"params": {**layers, last: {**layers[last], "bias": bias}}}


def evaluate_constant_policy(config, action: int):
    """Greedy returns of the policy that always plays ``action``, on ``config``'s backend."""
    import functools

    return evaluate_initial(config, functools.partial(constant_policy_params, action=action))


def session_dir(tmp_path_factory):
    """A directory of this test session that all its xdist workers share."""
    import os

    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_session(tmp_path_factory, name: str, compute):
    """``compute()`` (a JSON value) computed by one xdist worker of the session and read by the
    others, which wait for it on a file lock in :func:`session_dir`. The tests that share it
    carry one ``xdist_group`` too, but pytest 9.2 stopped xdist from honouring that mark
    (pytest-xdist issue 1386: the tests are spread as if unmarked), and two workers then each
    paid for the computation."""
    import fcntl
    import json

    base = session_dir(tmp_path_factory)
    path = base / f"{name}.json"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            path.write_text(json.dumps(compute()))
        return json.loads(path.read_text())
