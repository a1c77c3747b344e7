"""Shared helpers for the benchmark scripts: the machine line and a plain-text table."""

from __future__ import annotations

import os
import platform
import shlex
import sys


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
    return (
        f"{cpu}, {os.cpu_count()} cores | jax {jax.__version__} on {jax.default_backend()} "
        f"({devices}) | python {platform.python_version()}"
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


def header(title: str) -> str:
    """Title, exact command and machine, one per line."""
    return f"{title}\ncommand: {command()}\nmachine: {machine()}\n"
