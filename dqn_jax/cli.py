"""Command line: ``dqn-jax train ...`` (the default command), ``dqn-jax eval RUN_DIR``,
``dqn-jax presets``.

Every :class:`~dqn_jax.config.Config` field is a flag of ``train`` (``--lr 3e-4``,
``--hidden-sizes 128 128``); ``--preset NAME`` picks the defaults the flags override.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

from dqn_jax.config import (
    PRESETS,
    VARIANT_NAMES,
    Config,
    ConfigError,
    preset_for,
    preset_values,
    unresolved,
    variant_tuning,
)

COMMANDS = ("train", "sweep", "tune", "eval", "plot", "report", "presets")


def fail(message: str):
    """Refuse the command: ``error: message`` on one line, exit code 2 (via :func:`main`)."""
    raise SystemExit("error: " + " ".join(str(message).split()))


def close_matches(word: str, choices) -> str:
    """`` (did you mean --a, --b?)`` for ``word`` among ``choices``, or ``""``."""
    import difflib

    near = difflib.get_close_matches(word.split("=", 1)[0], list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(near)}?)" if near else ""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line naming the command (and, for an unknown
    flag, its close matches) instead of the usage block."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            flags = [o for a in self._actions for o in a.option_strings]
            unknown = message.split(": ", 1)[1].split()
            message += "".join(close_matches(u, flags) for u in unknown if u.startswith("--"))
        fail(f"{self.prog}: {message} (see {self.prog} --help)")


def config_flags() -> list[str]:
    """Every config field's flag (``--hidden-sizes``)."""
    return ["--" + f.name.replace("_", "-") for f in fields(Config)]


def tyro_config(default: Config, args: list[str]) -> Config:
    """:class:`Config` from ``args`` over ``default`` with tyro; a parse or validation error
    becomes one line (tyro's boxed message, condensed; unknown flags with close matches)."""
    import contextlib
    import io
    import warnings

    import tyro

    if "-h" in args or "--help" in args:
        return _tyro(tyro, default, args)
    captured = io.StringIO()
    try:
        with (
            contextlib.redirect_stderr(captured),
            contextlib.redirect_stdout(captured),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            return _tyro(tyro, default, args)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
    fail(_condense_tyro(captured.getvalue(), args))


def _tyro(tyro, default: Config, args: list[str]) -> Config:
    return tyro.cli(
        Config,
        default=default,
        args=args,
        prog="dqn-jax train",
        config=(tyro.conf.FlagConversionOff,),
    )


def _condense_tyro(text: str, args: list[str]) -> str:
    """The first message of tyro's error box (its lines up to the first rule), on one line."""
    lines = []
    for raw in text.splitlines()[1:]:  # below the box's title line
        line = raw.strip().strip("│|").strip()
        if not line.strip("─-+╰╯"):  # a rule or the bottom border
            if lines:
                break
            continue
        lines.append(line)
    message = " ".join(lines) or "could not parse the flags " + " ".join(args)
    message = message.replace("Error parsing Config: ", "")
    if "Unrecognized options:" in message:
        known = config_flags() + [o for a in _train_parser()._actions for o in a.option_strings]
        unknown = [u.strip() for u in message.split("Unrecognized options:", 1)[1].split(",")]
        unknown = [u or "''" for u in unknown]  # an empty argument
        message = (
            "unrecognized arguments: "
            + ", ".join(
                u + (close_matches(u, known) if u.startswith("--") else "") for u in unknown
            )
            + " (see dqn-jax train --help)"
        )
    return message


def _add_cluster_flags(p: argparse.ArgumentParser) -> None:
    """The multi-host flags of ``train`` and ``sweep`` (README "Multi-host")."""
    group = p.add_argument_group("multi-host (jax.distributed; the same command on every host)")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join the run's other processes, with the cluster's settings read from the "
        "environment (SLURM, Open MPI, ...)",
    )
    group.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's host and a free port, the same for every process",
    )
    group.add_argument("--num-processes", type=int, default=None, metavar="N")
    group.add_argument(
        "--process-id", type=int, default=None, metavar="I", help="this process, 0 .. N-1"
    )


def cluster_requested(options: argparse.Namespace) -> bool:
    """Whether the parsed flags ask for a multi-process run."""
    explicit = (options.coordinator, options.num_processes, options.process_id)
    return options.distributed or any(v is not None for v in explicit)


def _train_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="dqn-jax train",
        add_help=False,
        description="Train a DQN-family agent on a JAX environment, all seeds in one program.",
    )
    p.add_argument(
        "--preset",
        default=None,
        help=f"one of: {', '.join(PRESETS)} (default: the one named after --env if there is "
        "one, else default)",
    )
    p.add_argument(
        "--preset-file",
        type=Path,
        default=None,
        metavar="JSON",
        help="start from the config fields in this file (dqn-jax tune's best_preset.json)",
    )
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar; plain lines")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its latest checkpoint (config flags default to its config)",
    )
    p.add_argument("--force", action="store_true", help="resume even if the config changed")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="K",
        help="save a checkpoint every K chunks (0 = only at the end; default 5)",
    )
    p.add_argument(
        "--tensorboard", action="store_true", help="also log to RUN_DIR/tensorboard (tensorboardX)"
    )
    _add_cluster_flags(p)
    return p


def parse_train_args(
    argv: list[str], base: Config | None = None
) -> tuple[Config, argparse.Namespace]:
    """``(config, host_options)`` from ``dqn-jax train`` arguments. The flags override ``base``
    (a resumed run's config) unless ``--preset`` is given, else the preset."""
    host = _train_parser()
    options, rest = host.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        host.print_help()
        print("\nConfig flags (override the preset):")
    from_file = None if options.preset_file is None else _preset_file(options.preset_file)
    if from_file is not None and (options.preset is not None or base is not None):
        fail("--preset-file takes the place of --preset and of a resumed run's config")
    preset_given = options.preset is not None or from_file is not None
    env = _flag_value(rest, "--env")
    options.preset = preset_for(options.preset, env)
    if not preset_given and options.preset != "default" and base is None:
        print(f"defaults: preset {options.preset!r}, tuned for --env {env} (dqn-jax presets)")
    try:
        variant = _flag_value(rest, "--variant")
        if variant is not None and variant not in VARIANT_NAMES:
            fail(f"--variant {variant!r} is unknown: must be one of {', '.join(VARIANT_NAMES)}")
        picked = {} if variant is None else {"variant": variant}
        if from_file is not None:
            default = unresolved({**from_file, **picked})
        elif base is not None and not preset_given:
            default = base
        else:
            default = unresolved(preset_values(options.preset, **picked))
            note = variant and variant_tuning_note(options.preset, variant, rest)
            if note:
                print(note)
    except ConfigError as err:
        fail(err)
    # A resolved default backend ("jax" for CartPole) must not stick to another --env: unless
    # the flags, the preset or a resumed run fix one, the new env picks it ("auto").
    backend_given = any(a == "--backend" or a.startswith("--backend=") for a in rest)
    fixed = "backend" in (from_file or PRESETS.get(options.preset, {})) or (
        base is not None and not preset_given
    )
    if not backend_given and not fixed:
        rest = [*rest, "--backend", "auto"]
    config = tyro_config(default, bare_flags_true(rest))
    try:
        from dqn_jax.envs import prepare

        config, _ = prepare(config)
    except ConfigError as err:
        fail(err)
    return config, options


BOOL_FLAGS = tuple(
    "--" + f.name.replace("_", "-") for f in fields(Config) if str(f.type).startswith("bool")
)


def bare_flags_true(args: list[str]) -> list[str]:
    """``args`` with a value ``True`` after each boolean config flag given bare
    (``--dueling --n-step 3`` -> ``--dueling True --n-step 3``)."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in BOOL_FLAGS and (i + 1 == len(args) or args[i + 1].startswith("--")):
            out.append("True")
    return out


def _preset_file(path: Path) -> dict:
    """The fields of a ``--preset-file`` (as in a run's config.json), checked to make a valid
    config."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        fail(f"--preset-file {path}: not a readable JSON file ({err})")
    unknown = (
        sorted(set(values) - {f.name for f in fields(Config)}) if isinstance(values, dict) else []
    )
    if not isinstance(values, dict) or unknown:
        fail(f"--preset-file {path}: expected an object of config fields; unknown: {unknown}")
    try:
        Config(**values)
    except ConfigError as err:
        fail(f"--preset-file {path}: {err}")
    return values


def variant_tuning_note(preset: str, variant: str, args: list[str]) -> str | None:
    """The line telling a user which values ``variant``'s own tuning puts over ``preset``
    (:func:`~dqn_jax.config.variant_tuning`), leaving out the fields ``args`` sets as flags and
    those equal to the preset's; None when nothing is left. A task's preset tuned for one
    variant may give another variant a different budget or schedule: this says so."""
    own = unresolved(PRESETS[preset])  # the preset's values, the defaults elsewhere
    changed = {
        k: v
        for k, v in variant_tuning(preset, variant).items()
        if getattr(own, k) != v
        and all(_flag_value(args, flag) is None for flag in ("--" + k.replace("_", "-"), "--" + k))
    }
    if not changed:
        return None
    values = ", ".join(f"{k}={v}" for k, v in changed.items())
    return f"defaults: {variant}'s own values over preset {preset!r}: {values}"


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in ``args``, else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def default_run_dir(config: Config) -> Path:
    """``runs/<env>-<variant>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env}-{config.variant}-{stamp}"


def _resume_dir(argv: list[str]) -> Path | None:
    known, _ = _train_parser().parse_known_args(argv)
    return known.resume


def cmd_train(argv: list[str]) -> int:
    """``dqn-jax train [--resume RUN_DIR [--force]] [flags]``."""
    from dqn_jax.run import ConfigMismatchError, NonFiniteError, TrainingInterrupted, load_config

    resume = _resume_dir(argv)
    config, options = parse_train_args(argv, load_config(resume) if resume else None)
    if resume and options.out and options.out.resolve() != resume.resolve():
        raise SystemExit(f"error: --out {options.out} differs from --resume {resume}")
    host_options = dict(
        progress=not options.no_progress,
        resume=resume is not None,
        force=options.force,
        tensorboard=options.tensorboard,
    )
    if options.checkpoint_every is not None:
        if options.checkpoint_every < 0:
            fail("--checkpoint-every must be >= 0")
        host_options["checkpoint_every"] = options.checkpoint_every
    if config.backend == "gymnasium" and cluster_requested(options):
        fail(
            "the gymnasium backend runs in one process: --distributed, --coordinator, "
            "--num-processes and --process-id are for the JAX backend"
        )
    if config.backend == "gymnasium":  # main() tuned JAX for it (tune_for_host_loop)
        from dqn_jax.host_loop import train
    else:
        from dqn_jax.run import train

        host_options["program_cache"] = program_cache_dir()
    run_dir = resume or options.out or default_run_dir(config)
    print(f"run directory: {run_dir}")
    try:
        train(config, run_dir, **host_options)
    except ConfigMismatchError as err:  # refused before any compute
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            "aborted (second Ctrl-C): the last saved checkpoint, if any, is kept", file=sys.stderr
        )
        return 130
    return 0


def cmd_sweep(argv: list[str]) -> int:
    """``dqn-jax sweep --sweep NAME=V1,V2,... [--sweep ...] [train flags]``."""
    p = Parser(prog="dqn-jax sweep", add_help=False)
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...")
    known, rest = p.parse_known_args(argv)
    if not known.sweep and not ({"-h", "--help"} & set(rest)):
        raise SystemExit("error: dqn-jax sweep needs at least one --sweep NAME=V1,V2,...")
    from dqn_jax.agent import SWEEPABLE
    from dqn_jax.sweep import parse_sweep, run_sweep

    if {"-h", "--help"} & set(rest):
        print("usage: dqn-jax sweep --sweep NAME=V1,V2,... [--sweep ...] [train flags]")
        print(f"sweepable: {', '.join(SWEEPABLE)}; every grid point runs --num-seeds seeds\n")
    config, options = parse_train_args(rest)
    try:
        grid = parse_sweep(known.sweep)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    if config.backend != "jax":
        raise SystemExit("error: sweeps run on the JAX backend only")
    run_dir = options.out or default_run_dir(config).with_name(
        default_run_dir(config).name + "-sweep"
    )
    print(f"run directory: {run_dir}")
    try:
        run_sweep(config, grid, run_dir, progress=not options.no_progress)
    except ConfigError as err:  # a grid value or flag the sweep refuses, before compiling
        raise SystemExit(f"error: {err}") from None
    from dqn_jax.distributed import is_main
    from dqn_jax.plots import replot

    if is_main():
        replot(run_dir)
    return 0


def cmd_tune(argv: list[str]) -> int:
    """``dqn-jax tune --param NAME=[log:]LOW:HIGH [...] --trials N --population P [flags]``."""
    p = Parser(prog="dqn-jax tune", add_help=False)
    p.add_argument("--param", action="append", default=[], metavar="NAME=[log:]LOW:HIGH")
    p.add_argument("--trials", type=int, default=32, help="complete trials to reach (default 32)")
    p.add_argument("--population", type=int, default=16, help="trials per compiled program")
    p.add_argument("--sampler", default="tpe", help="tpe | random | qmc (Optuna's)")
    known, rest = p.parse_known_args(argv)
    from dqn_jax.agent import SWEEPABLE
    from dqn_jax.search import SAMPLERS, parse_param, run_search

    if {"-h", "--help"} & set(rest):
        print("usage: dqn-jax tune --param NAME=[log:]LOW:HIGH [--param ...] [--trials N]")
        print("       [--population P] [--sampler tpe|random|qmc] [train flags]")
        print(f"traced (searchable): {', '.join(SWEEPABLE)}; each trial runs --num-seeds seeds;")
        print("--out holds the study (study.db, resumable) and best_preset.json\n")
    if not known.param and not ({"-h", "--help"} & set(rest)):
        raise SystemExit("error: dqn-jax tune needs at least one --param NAME=[log:]LOW:HIGH")
    config, options = parse_train_args(rest)
    try:
        specs = [parse_param(item) for item in known.param]
        if known.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler {known.sampler!r}: must be one of {', '.join(SAMPLERS)}")
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    if config.backend != "jax":
        raise SystemExit("error: dqn-jax tune runs on the JAX backend only")
    out = options.out or default_run_dir(config).with_name(
        default_run_dir(config).name.rsplit("-", 2)[0] + "-tune"
    )
    print(f"study directory: {out}")
    try:
        run_search(
            config,
            specs,
            out,
            trials=known.trials,
            population=known.population,
            sampler=known.sampler,
        )
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    return 0


def cmd_plot(argv: list[str]) -> int:
    """``dqn-jax plot RUN_DIR``: redraw a run's figures from its saved CSV files."""
    p = Parser(prog="dqn-jax plot", description=cmd_plot.__doc__)
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    from dqn_jax.plots import replot

    for path in replot(args.run_dir):
        print(f"wrote {path}")
    return 0


def cmd_report(argv: list[str]) -> int:
    """``dqn-jax report RUN_DIR``: rewrite the run's report.html (one self-contained,
    interactive page) from its saved files; works on a run in progress too."""
    p = Parser(prog="dqn-jax report", description=cmd_report.__doc__)
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    from dqn_jax.html_report import write_report

    try:
        path = write_report(args.run_dir)
    except OSError as err:
        fail(f"cannot write {args.run_dir / 'report.html'}: {err}")
    print(f"wrote {path}")
    return 0


def cmd_eval(argv: list[str]) -> int:
    """``dqn-jax eval RUN_DIR [--episodes N] [--checkpoint STEP]``."""
    p = Parser(
        prog="dqn-jax eval",
        description="Greedy evaluation of a run's saved parameters, per seed; writes "
        "RUN_DIR/eval_<step>.json.",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=None, help="per seed (default: the run's)")
    p.add_argument(
        "--checkpoint", type=int, default=None, metavar="STEP", help="env step (default: latest)"
    )
    args = p.parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        raise SystemExit("error: --episodes must be >= 1")
    from dqn_jax.config import load_run_config

    if load_run_config(args.run_dir).backend == "gymnasium":
        from dqn_jax.host_loop import evaluate_checkpoint
    else:
        from dqn_jax.run import evaluate_checkpoint
    evaluate_checkpoint(args.run_dir, args.episodes, args.checkpoint)
    return 0


def cmd_presets(argv: list[str]) -> int:
    """``dqn-jax presets``: what each preset sets, and the per-variant values it adds."""
    from dqn_jax.config import VARIANT_TUNING

    Parser(prog="dqn-jax presets", description=cmd_presets.__doc__).parse_args(argv)
    print(
        "A preset named after an env id holds that env's tuned defaults: dqn-jax train --env ID "
        "starts from it unless --preset is given (any other env: default).\n"
    )
    for name, overrides in PRESETS.items():
        print(
            f"{name}:" + ("  (used for --env " + name + ")" if name == overrides.get("env") else "")
        )
        for key, value in overrides.items():
            print(f"    {key} = {value!r}")
        groups: dict[str, list[str]] = {}  # variants tuned alike print as one line
        for variant, tuned in VARIANT_TUNING.get(name, {}).items():
            groups.setdefault(", ".join(f"{k} = {v!r}" for k, v in tuned.items()), []).append(
                variant
            )
        for values, variants in groups.items():
            print(f"    with --variant {' | '.join(variants)}: {values}")
    return 0


def cpu_devices_for(num_seeds: int, cores: int | None = None) -> int:
    """How many host (CPU) devices to split ``num_seeds`` over: the largest divisor of
    ``num_seeds`` that is at most the number of cores."""
    cores = cores or os.cpu_count() or 1
    return max(d for d in range(1, min(cores, num_seeds) + 1) if num_seeds % d == 0)


def use_cpu_cores(argv: list[str]) -> None:
    """Give XLA's CPU backend one device per core when several seeds can share them.

    Must run before JAX starts its backends. XLA runs one seed's small matrix products on one
    core at a time; splitting the seeds over per-core devices ran 8 seeds of the
    purejaxrl-cartpole preset 1.9x faster on 2 cores. A single seed keeps one device (it then
    keeps XLA's intra-op threads). Does nothing if the user set the device count or a
    backend is already running; GPUs are unaffected (the flag only concerns the host).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
        return
    pre = Parser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--env", default=None)
    pre.add_argument("--num-seeds", type=int, default=None)
    pre.add_argument("--resume", type=Path, default=None)
    pre.add_argument("--sweep", action="append", default=[])
    pre.add_argument("--population", type=int, default=16)
    try:
        known, rest = pre.parse_known_args(argv)
    except SystemExit:  # a malformed flag: the command's own parser reports it
        return
    saved = known.resume or (Path(rest[1]) if rest[:1] == ["eval"] and len(rest) > 1 else None)
    preset = PRESETS.get(preset_for(known.preset, known.env), {})
    num_seeds = known.num_seeds or preset.get("num_seeds", 1)
    if saved is not None and known.num_seeds is None:
        num_seeds = _saved_num_seeds(saved) or num_seeds
    for item in known.sweep:  # a sweep runs every grid point x num_seeds
        num_seeds *= max(len(item.partition("=")[2].split(",")), 1)
    if rest[:1] == ["tune"]:  # a search runs its population x num_seeds
        num_seeds *= max(known.population, 1)
    n = cpu_devices_for(max(num_seeds, 1))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


HOST_LOOP_XLA_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def runs_host_loop(argv: list[str]) -> bool:
    """Whether ``dqn-jax train argv`` runs the gymnasium backend (from ``--backend``, ``--env``,
    ``--preset``, ``--preset-file`` or a resumed run's saved config), decided without starting
    JAX."""
    pre = Parser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--preset-file", default=None)
    pre.add_argument("--backend", default=None)
    pre.add_argument("--env", default=None)
    pre.add_argument("--resume", default=None)
    try:
        known, _ = pre.parse_known_args(argv)
    except SystemExit:  # a malformed flag: the command's own parser reports it
        return False
    if known.backend is None and known.env is None and known.resume is not None:
        from dqn_jax.config import read_run_config

        try:
            return read_run_config(known.resume).get("backend") == "gymnasium"
        except ConfigError:
            return False
    preset = PRESETS.get(preset_for(known.preset, known.env), {})
    if known.preset_file is not None:  # unreadable: the command's own parser reports it
        with contextlib.suppress(OSError, ValueError):
            preset = json.loads(Path(known.preset_file).read_text())
        preset = preset if isinstance(preset, dict) else {}
    from dqn_jax.envs import resolve_backend_before_jax

    env = known.env or preset.get("env", "CartPole-v1")
    backend = known.backend or preset.get("backend", "auto")
    try:
        return resolve_backend_before_jax(env, backend) == "gymnasium"
    except (ConfigError, ValueError):
        return False


def tune_for_host_loop() -> None:
    """Settings for the gymnasium backend's host loop, which runs one small program per env
    step or iteration. Must run before JAX starts its backends (importing gymnax starts
    them), so only when JAX is not yet imported (never inside a process that already runs it,
    such as a test calling :func:`main`):

    - XLA:CPU programs scheduled for sequential execution: XLA's default CPU scheduler orders
      them for parallel execution, and the hand-offs between its threads cost more than the
      work (the cleanrl-cartpole preset's iteration-end program measured 305 against 400 us
      per call). Not when the user set the flag.
    - JAX's CPU async dispatch off: a small program then runs on the calling thread.
    """
    if "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {HOST_LOOP_XLA_FLAG}".strip()
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)


COMPILE_CACHE_ENV = "DQN_JAX_COMPILE_CACHE"
"""A directory for JAX's persistent compilation cache, or ``off``."""


def compile_cache(argv: list[str], environ=os.environ) -> tuple[list[str], Path | None]:
    """``argv`` without ``--compile-cache DIR`` / ``--no-compile-cache``, and the directory of
    JAX's persistent compilation cache for this command (None: off).

    In order: ``--no-compile-cache`` (off); ``--compile-cache DIR``; the environment variable
    ``DQN_JAX_COMPILE_CACHE`` (a directory, or ``off``/``0``/``none``); a
    ``JAX_COMPILATION_CACHE_DIR`` the user set (kept); else ``$XDG_CACHE_HOME/dqn-jax/jax`` (by
    default ``~/.cache/dqn-jax/jax``). An identical second run then loads its programs from
    the cache instead of compiling them.
    """
    rest, flag, off = [], None, False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--no-compile-cache":
            off = True
        elif arg == "--compile-cache":
            if i + 1 >= len(argv):
                fail("--compile-cache needs a directory")
            flag, i = argv[i + 1], i + 1
        elif arg.startswith("--compile-cache="):
            flag = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    if off:
        return rest, None
    if flag is not None:
        return rest, Path(flag).expanduser()
    value = environ.get(COMPILE_CACHE_ENV)
    if value is not None:
        off_words = ("", "0", "off", "none", "false", "no")
        return rest, None if value.strip().lower() in off_words else Path(value).expanduser()
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return rest, Path(environ["JAX_COMPILATION_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return rest, Path(base) / "dqn-jax" / "jax"


PROGRAM_CACHE_SUBDIR = "dqn-jax-programs"


def program_cache_dir() -> Path | None:
    """Where ``dqn-jax train`` keeps lowered programs (:mod:`dqn_jax.program_cache`): a folder
    of the persistent compilation cache, none when that cache is off."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / PROGRAM_CACHE_SUBDIR if cache else None


def use_compile_cache(path: Path | None) -> None:
    """Point JAX's persistent compilation cache at ``path`` (every program, however quick to
    compile), through the environment variables JAX reads when it starts; nothing if ``path``
    is None or JAX already runs."""
    if path is None or "jax" in sys.modules:
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def start_distributed(command: str, argv: list[str]) -> bool:
    """Join a multi-process run if ``argv`` asks for one (:func:`cluster_requested`): calls
    ``jax.distributed.initialize``, so it must run before JAX starts. In the processes other
    than process 0 standard output then goes nowhere (process 0 prints; errors still show).
    Returns whether it started one."""
    known, _ = _train_parser().parse_known_args(argv)
    if not cluster_requested(known):
        return False
    if command not in ("train", "sweep"):
        fail(
            f"dqn-jax {command} runs in one process: --distributed, --coordinator, "
            "--num-processes and --process-id are for train and sweep"
        )
    if known.out is None and known.resume is None:
        fail("a multi-process run needs --out DIR (or --resume DIR): a directory every host sees")
    from dqn_jax.distributed import initialize

    try:
        initialize(known.coordinator, known.num_processes, known.process_id)
    except (ValueError, RuntimeError) as err:
        fail(f"jax.distributed.initialize failed: {err}")
    import jax

    if jax.process_index() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
    return True


def _saved_num_seeds(run_dir: Path) -> int | None:
    """``num_seeds`` of the run in ``run_dir`` (read without starting JAX), if readable."""
    try:
        return int(json.loads((run_dir / "config.json").read_text())["num_seeds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dqn-jax`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, cache = compile_cache(argv)
    except SystemExit as exit_:
        print(exit_.code, file=sys.stderr)
        return 2
    use_compile_cache(cache)
    train = not argv or argv[0] not in ("sweep", "tune", "eval", "plot", "report", "presets")
    try:
        multi_process = start_distributed("train" if train else argv[0], argv)
    except SystemExit as exit_:
        print(exit_.code, file=sys.stderr)
        return 2
    if train and not multi_process and runs_host_loop(argv):
        tune_for_host_loop()
    elif not multi_process:  # the host loop runs on one device
        use_cpu_cores(argv)  # (a multi-process run: one per process unless XLA_FLAGS says)
    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: dqn-jax [train|sweep|tune|eval|plot|report|presets] [flags]   "
            "(no command = train)\n"
        )
        print("  train    train an agent (dqn-jax train --help for every flag)")
        print("           --resume RUN_DIR continues a run from its latest checkpoint")
        print("  sweep    dqn-jax sweep --sweep lr=1e-4,1e-3 [--sweep ...] [train flags]")
        print("  tune     dqn-jax tune --param lr=log:1e-4:1e-2 [...] --trials N --population P")
        print("  eval     dqn-jax eval RUN_DIR [--episodes N] [--checkpoint STEP]")
        print("  plot     dqn-jax plot RUN_DIR: redraw the figures from the saved CSV files")
        print("  report   dqn-jax report RUN_DIR: rewrite RUN_DIR/report.html (interactive page)")
        print("  presets  list the named presets")
        print("\n  --compile-cache DIR / --no-compile-cache (any command): JAX's persistent")
        print(f"  compilation cache (default $XDG_CACHE_HOME/dqn-jax/jax; or {COMPILE_CACHE_ENV})")
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    handlers = {
        "train": cmd_train,
        "sweep": cmd_sweep,
        "tune": cmd_tune,
        "eval": cmd_eval,
        "plot": cmd_plot,
        "report": cmd_report,
    }
    try:
        return {**handlers, "presets": cmd_presets}[command](argv)
    except ConfigError as err:  # includes RunDirError: a missing or damaged run directory
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
    except SystemExit as exit_:
        if not (isinstance(exit_.code, str) and exit_.code.startswith("error: ")):
            raise
        print(" ".join(exit_.code.split()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
