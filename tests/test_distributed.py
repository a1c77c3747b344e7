"""Multi-host runs (jax.distributed) on this machine: 2 processes with CPU devices (gloo)."""

import json
import socket
import subprocess
import sys

import jax
import pytest
from helpers import QUIET, SMALL, assert_same_files, assert_same_state, environ_with_devices

from dqn_jax import checkpoint as ckpt
from dqn_jax.cli import main, parse_train_args
from dqn_jax.device_loop import make_train
from dqn_jax.run import load_config, state_shapes, train

# Each process of the 2-process run: the CLI's flags join the run (start_distributed), the
# library's train stops after chunk 1 (a checkpoint), the CLI resumes it to the end.
STOP_THEN_RESUME = """
import json, sys
from dqn_jax.cli import compile_cache, main, parse_train_args, start_distributed, use_compile_cache
argv = json.loads(sys.argv[1])
use_compile_cache(compile_cache([])[1])  # the session's cache (DQN_JAX_COMPILE_CACHE), as main's
start_distributed("train", argv)  # before anything starts JAX (importing dqn_jax.run does)
from dqn_jax.run import train
config, options = parse_train_args(argv)
train(config, options.out, progress=False, stop_after_chunks=1)
sys.exit(main(["train", *argv, "--resume", str(options.out)]))
"""


# SMALL with 4 seeds and the squared loss, whose runs are bit-identical whichever number of
# devices shares the seeds while each holds several (tests/test_sweep.py); the pseudo-Huber
# loss rounds differently with the per-device batch.
RUN = {**SMALL, "num_seeds": 4, "loss": "squared"}


def cli_flags(out) -> list[str]:
    """``dqn-jax train`` flags of :data:`RUN`, writing ``out``."""
    flags = []
    for name, value in RUN.items():
        values = value if isinstance(value, tuple) else (value,)
        flags += ["--" + name.replace("_", "-"), *map(str, values)]
    return [*flags, "--no-progress", "--out", str(out)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(args: list[str], devices: int) -> subprocess.Popen:
    """``python ARGS`` with ``devices`` CPU devices, its output captured."""
    env = environ_with_devices(devices)
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, *args], env=env, text=True, stdout=pipe, stderr=pipe)


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """The processes' standard outputs once all have exited 0 (killed on a timeout)."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"{p.args}\n{out}\n{err}"
    return [out for out, _ in outputs]


def final_state(run_dir):
    """The train state of ``run_dir``'s last checkpoint, restored on one device."""
    shapes = state_shapes(make_train(load_config(run_dir)))
    target = ckpt.abstract_state(shapes, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    return ckpt.restore(run_dir, target, echo=lambda s: None).state


@pytest.mark.slow
def test_two_processes_run_and_resume_like_one(tmp_path):
    # 4 seeds: 2 processes x 1 CPU device (2 seeds each) against this process (1 device, all
    # 4), the runs must agree bit for bit.
    one, two = tmp_path / "one", tmp_path / "two"
    cluster = [*cli_flags(two), "--coordinator", f"localhost:{free_port()}", "--num-processes", "2"]
    argv = [json.dumps([*cluster, "--process-id", str(i)]) for i in range(2)]
    procs = [start(["-c", STOP_THEN_RESUME, a], devices=1) for a in argv]
    config, _ = parse_train_args(cli_flags(one))  # the config the CLI builds from these flags
    train(config, one, **QUIET)
    first, second = finish(procs)
    assert "resumed from" in first and "done:" in first
    assert "done:" not in second  # process 0 alone prints (and writes the run directory)
    assert_same_files(one, two)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (one, two)]
    for key in ("seeds", "episodes_per_seed", "final_eval_return_per_seed"):
        assert summaries[0][key] == summaries[1][key], key
    assert [len(s["devices"]) for s in summaries] == [1, 2]
    # every process wrote its shards: the whole state, bit for bit
    assert ckpt.saved_steps(two) == [1_000, 2_000]
    assert_same_state(final_state(one), final_state(two))


def test_distributed_flags_are_refused_where_they_cannot_apply(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--distributed"]) == 2
    assert "dqn-jax eval runs in one process" in capsys.readouterr().err
    assert main(["train", "--num-processes", "2", "--process-id", "0"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
