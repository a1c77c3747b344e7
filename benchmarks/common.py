"""Shared helpers for the benchmark scripts: the machine line and a plain-text table."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable


def machine() -> str:
    """CPU model, core count, JAX version and backend."""
    import jax

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (load average {load}) | jax {jax.__version__} on "
        f"{jax.default_backend()} ({devices}) | python {platform.python_version()}"
    )


def command() -> str:
    """The command line that ran this script."""
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv])


def table(rows: list[dict], columns: list[str]) -> str:
    """Fixed-width text table of ``rows`` (dicts) over ``columns``."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, rule, *body])


def child_rows(script: str, argsets: list[list[str]]):
    """Run ``script`` once per argument list, each in a fresh process (so each can pick its own
    XLA device count), and yield the JSON object each prints on its last line."""
    for extra in argsets:
        out = subprocess.run([sys.executable, script, *extra], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{script} {' '.join(extra)} failed:\n{out.stderr}")
        yield json.loads(out.stdout.strip().splitlines()[-1])


def header(title: str) -> str:
    """Title, exact command and machine, one per line."""
    return f"{title}\ncommand: {command()}\nmachine: {machine()}\n"


def alternate_us(timers: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median over ``repeats`` per timer (each call of a timer runs one repeat and returns
    seconds per step), in microseconds; the timers take turns each round, so a change in the
    machine's load hits both sides of a comparison alike."""
    times = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer())
    return {name: 1e6 * statistics.median(t) for name, t in times.items()}
