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
