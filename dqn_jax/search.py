"""Hyperparameter search: an Optuna study whose trials train a population at a time, all in
one compiled program.

``dqn-jax tune --param lr=log:1e-5:1e-2 --param gamma=0.95:0.999 --trials 32 --population 16
--num-seeds 8``: the study (TPE by default) is asked for 16 trials, the 16 trials x 8 seeds train
as one program (the sweeps' traced hyperparameters, :func:`dqn_jax.sweep.train_points`), and
each trial is told the IQM over its seeds of the final greedy return; twice. The study lives in
``OUT/study.db`` (SQLite, Optuna's storage), so running the same command again continues it.
The best trial's config is written to ``OUT/best_preset.json``, which ``dqn-jax train
--preset-file`` takes. Only traced hyperparameters (:data:`dqn_jax.agent.SWEEPABLE`) can vary
within one program; any other is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dqn_jax.config import Config, ConfigError

SAMPLERS = ("tpe", "random", "qmc")


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter: ``low <= value <= high``, log-uniform if ``log``, a whole
    number if the config field is an int."""

    name: str
    low: float
    high: float
    log: bool
    integer: bool


def parse_param(item: str) -> ParamSpec:
    """``"lr=log:1e-5:1e-2"`` (log-uniform), ``"gamma=0.95:0.999"`` (uniform) -> a
    :class:`ParamSpec`; :class:`ConfigError` naming the problem for anything else."""
    from dqn_jax.agent import SWEEPABLE

    name, sep, spec = item.partition("=")
    name = name.strip().replace("-", "_")
    match = re.fullmatch(r"(log:)?([^:]+):([^:]+)", spec.strip())
    if not sep or match is None:
        raise ConfigError(f"--param {item!r}: expected NAME=LOW:HIGH or NAME=log:LOW:HIGH")
    if name not in SWEEPABLE:
        raise ConfigError(
            f"--param {name}: not a traced hyperparameter, so one compiled population cannot "
            f"vary it (it changes the program); traced: {', '.join(SWEEPABLE)}"
        )
    try:
        low, high = float(match.group(2)), float(match.group(3))
    except ValueError:
        raise ConfigError(f"--param {item!r}: LOW and HIGH must be numbers") from None
    log = match.group(1) is not None
    if not low < high:
        raise ConfigError(f"--param {item!r}: needs LOW < HIGH")
    if log and low <= 0:
        raise ConfigError(f"--param {item!r}: a log range needs LOW > 0")
    integer = isinstance(getattr(Config(), name), int)
    return ParamSpec(name, low, high, log, integer)


def make_sampler(name: str, seed: int):
    """The Optuna sampler ``name`` (one of :data:`SAMPLERS`), seeded."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise ConfigError(f"--sampler {name!r}: must be one of {', '.join(SAMPLERS)}")


def suggest(trial, spec: ParamSpec) -> float:
    """The trial's value for ``spec`` (Optuna records it in the study)."""
    if spec.integer:
        return float(trial.suggest_int(spec.name, int(spec.low), int(spec.high), log=spec.log))
    return trial.suggest_float(spec.name, spec.low, spec.high, log=spec.log)


def best_preset(config: Config, params: dict) -> dict:
    """The config fields of the best trial: ``config`` with ``params`` set, as JSON values."""
    values = config.to_dict()
    for name, value in params.items():
        values[name] = int(value) if isinstance(getattr(config, name), int) else float(value)
    Config(**values)  # a valid config, or the usual message
    return values


def run_search(
    config: Config,
    specs: Sequence[ParamSpec],
    out: Path,
    *,
    trials: int,
    population: int,
    sampler: str = "tpe",
    echo: Callable[[str], None] = print,
):
    """Run (or continue) the study in ``out`` until it has ``trials`` complete trials, asking
    ``population`` at a time and training each population as one program of ``population x
    config.num_seeds`` runs; returns the ``optuna.Study``. Trials asked but never told (a
    population that was interrupted) are marked failed and asked again."""
    import optuna

    from dqn_jax import stats
    from dqn_jax.sweep import train_points

    if trials < 1 or population < 1:
        raise ConfigError(f"--trials and --population must be >= 1 (got {trials}, {population})")
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(
        study_name="dqn-jax", storage=storage, load_if_exists=True, direction="maximize"
    )
    # Seeded afresh by how far the study got, so a continued study does not replay the
    # sampler's first proposals (its random start-up trials).
    study.sampler = make_sampler(sampler, config.seed + len(study.trials))
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    complete = (optuna.trial.TrialState.COMPLETE,)
    while (done := len(study.get_trials(deepcopy=False, states=complete))) < trials:
        batch = [study.ask() for _ in range(min(population, trials - done))]
        points = [{s.name: suggest(t, s) for s in specs} for t in batch]
        _, finals = train_points(config, points, None, progress=False, echo=lambda _: None)
        for trial, point, scores in zip(batch, points, finals, strict=True):
            trial.set_user_attr("final_eval_returns", [float(x) for x in scores])
            score = stats.iqm(scores)
            study.tell(trial, score)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in point.items())
            echo(f"trial {trial.number}: {shown} -> IQM {score:.2f}")
    best = study.best_trial
    (out / "best_preset.json").write_text(
        json.dumps(best_preset(config, best.params), indent=2) + "\n"
    )
    echo(f"best: trial {best.number}, IQM {best.value:.2f}, {best.params}")
    echo(f"wrote {out / 'best_preset.json'} (dqn-jax train --preset-file)")
    return study
