"""``dqn-jax tune``: search ranges, the Optuna study trained a population at a time, resuming
it, and the best trial's preset file."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from dqn_jax import stats
from dqn_jax.cli import main, parse_train_args
from dqn_jax.config import ConfigError
from dqn_jax.search import ParamSpec, parse_param


def test_parse_param_ranges_and_refusals():
    assert parse_param("lr=log:1e-5:1e-2") == ParamSpec("lr", 1e-5, 1e-2, True, False)
    assert parse_param("gamma=0.95:0.999") == ParamSpec("gamma", 0.95, 0.999, False, False)
    assert parse_param("target-period=100:1000").integer  # an int field, suggested as one
    for item, message in [
        ("batch_size=32:64", r"batch_size: not a traced .* traced: lr, gamma"),
        ("lr=1e-3", r"expected NAME=LOW:HIGH"),
        ("lr=log:0:1e-2", r"log range needs LOW > 0"),
        ("gamma=0.99:0.9", r"needs LOW < HIGH"),
        ("gamma=a:b", r"must be numbers"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_param(item)


FLAGS = ["--num-seeds", "2", "--total-steps", "1000", "--num-chunks", "1", "--eval-episodes", "2"]
FLAGS += ["--learning-starts", "200", "--buffer-size", "1000", "--hidden-sizes", "16"]
PARAMS = ["--param", "lr=log:1e-4:1e-2", "--param", "target_period=50:400"]


def complete(study) -> list:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


@pytest.mark.slow
def test_study_trains_populations_resumes_and_writes_the_best_preset(tmp_path, capsys):
    out = tmp_path / "study"
    tune = ["tune", *PARAMS, "--population", "2", "--out", str(out), *FLAGS]
    assert main([*tune, "--trials", "3"]) == 0  # a population of 2, then one of 1
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="dqn-jax", storage=storage)
    assert len(complete(study)) == 3
    for trial in complete(study):  # each told the IQM of its own seeds' final returns
        returns = trial.user_attrs["final_eval_returns"]
        assert len(returns) == 2 and trial.value == pytest.approx(stats.iqm(returns))
        assert 1e-4 <= trial.params["lr"] <= 1e-2 and isinstance(trial.params["target_period"], int)
    study.ask()  # a population interrupted before it was told: failed on resume, then re-asked
    assert main([*tune, "--trials", "4"]) == 0
    study = optuna.load_study(study_name="dqn-jax", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    points = [tuple(t.params.values()) for t in complete(study)]
    assert len(set(points)) == 4  # the continued study did not replay its first proposals
    best = json.loads((out / "best_preset.json").read_text())
    assert (best["lr"], best["target_period"]) == (
        study.best_params["lr"],
        study.best_params["target_period"],
    )
    config, _ = parse_train_args(["--preset-file", str(out / "best_preset.json"), "--seed", "7"])
    assert (config.lr, config.target_period, config.seed) == (best["lr"], best["target_period"], 7)
    assert np.isclose(study.best_value, max(t.value for t in complete(study)))
    capsys.readouterr()


def test_preset_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lr": 1e-3, "not_a_field": 1}))
    assert main(["train", "--preset-file", str(bad)]) == 2
    assert "unknown: ['not_a_field']" in capsys.readouterr().err
    bad.write_text(json.dumps({"gamma": 1.5}))
    assert main(["train", "--preset-file", str(bad)]) == 2
    assert "gamma=1.5 is invalid" in capsys.readouterr().err
    bad.write_text(json.dumps({"gamma": 0.9}))
    assert main(["train", "--preset-file", str(bad), "--preset", "default"]) == 2
    assert "takes the place of --preset" in capsys.readouterr().err
