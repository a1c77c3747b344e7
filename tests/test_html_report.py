"""report.html without a browser: what the page holds against the run directory's files
(NumPy and dqn_jax.stats as oracles), the page's text, atomic writes, the rewrite budget and the
``dqn-jax report`` command. The browser test is tests/test_report_browser.py."""

import json
import re

import numpy as np
import pytest
from report_helpers import EPISODES, EVAL_STEPS, make_run

from dqn_jax import html_report, stats
from dqn_jax.cli import main
from dqn_jax.config import RunDirError
from dqn_jax.plots import rolling


def numpy_rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """The oracle: a plain loop of NumPy means over the trailing window."""
    return np.array([x[max(0, i - window + 1) : i + 1].mean() for i in range(len(x))])


def test_episode_series_are_the_csv_rows_and_their_100_episode_means(tmp_path):
    runs, _ = make_run(tmp_path / "run")
    data = html_report.plot_data(html_report.read_run(tmp_path / "run"))
    for run, eps in enumerate(runs):
        series = data[f"episodes-{run}"]
        np.testing.assert_array_equal(series["episode"], np.arange(1, len(eps) + 1))
        np.testing.assert_array_equal(series["env_step"], eps[:, 0])
        np.testing.assert_array_equal(series["length"], eps[:, 1])
        np.testing.assert_allclose(series["return"], eps[:, 2], rtol=1e-5)
        for name, column in (("length", 1), ("return", 2)):
            expected = numpy_rolling_mean(eps[:, column], 100)
            np.testing.assert_allclose(series[f"{name}_mean"], expected, rtol=1e-5)
    # the first 100 episodes' means are over fewer episodes; past that, a sliding window
    x = runs[0][:, 1]
    assert data["episodes-0"]["length_mean"][149] == pytest.approx(x[50:150].mean())
    # the same as the matplotlib figures' rolling mean
    np.testing.assert_allclose(html_report.trailing_mean(x), rolling(x, 100, np.mean))


def test_long_series_are_thinned_evenly_keeping_the_ends():
    index = html_report.thin(10_001, 4000)
    assert len(index) <= 4000 and index[0] == 0 and index[-1] == 10_000
    assert (np.diff(index) > 0).all() and np.diff(index).max() <= 3
    np.testing.assert_array_equal(html_report.thin(50, 4000), np.arange(50))


def test_evaluations_and_their_iqm_and_ci_over_seeds_match_stats_aggregate(tmp_path):
    _, evals = make_run(tmp_path / "run")
    files = html_report.read_run(tmp_path / "run")
    np.testing.assert_array_equal(files.eval_steps, EVAL_STEPS)
    np.testing.assert_allclose(files.eval_returns, evals)
    data = html_report.plot_data(files)
    band = data["iqm-0"]
    assert band["env_step"] == list(EVAL_STEPS)
    for k in range(2):
        agg = stats.aggregate(evals[:, k], n_resamples=1000)
        assert band["iqm"][k] == pytest.approx(agg["iqm"])
        assert (band["low"][k], band["high"][k]) == pytest.approx(agg["iqm_ci"])
    assert data["evals-1"] == {"env_step": list(EVAL_STEPS), "value": evals[1].tolist()}


def test_loss_q_and_probe_series(tmp_path):
    make_run(tmp_path / "run")
    files = html_report.read_run(tmp_path / "run")
    data = html_report.plot_data(files)
    # chunk 1 did not learn: its null loss and Q are left out, not drawn as 0
    loss = data["learning-1"]
    assert loss["env_step"] == [1000, 1500, 2000]
    assert loss["loss"] == [r["loss"][1] for r in files.metrics[1:]]
    assert loss["q_mean"] == [r["q_mean"][1] for r in files.metrics[1:]]
    # max over the actions of each probe state (made-up q = step/1000 + probe + action)
    probe = data["probe-1-1"]
    assert probe["env_step"] == [500, 1000, 1500, 2000]
    np.testing.assert_allclose(probe["q"], [s / 1000 + 1 + 1 for s in probe["env_step"]])


def test_runs_table_of_a_finished_run(tmp_path):
    runs, evals = make_run(tmp_path / "run")
    files = html_report.read_run(tmp_path / "run")
    rows = html_report.run_rows(files)
    assert [r["episodes"] for r in rows] == list(EPISODES)
    for row, eps in zip(rows, runs, strict=True):
        assert row["last_mean"] == pytest.approx(eps[-100:, 2].mean(), rel=1e-6)
    assert [r["eval"] for r in rows] == pytest.approx(evals[:, 1])
    ((group, final, last),) = html_report.group_aggregates(files, rows)
    assert group.runs == [0, 1]
    assert final["iqm_ci"] == pytest.approx(stats.aggregate(evals[:, 1])["iqm_ci"])
    assert last["iqm"] == pytest.approx(np.mean([r["last_mean"] for r in rows]))
    table = html_report.table_html(files)
    cells = re.findall(r'<td class="eval">([^<]*)</td>', table)
    assert cells == [f"{x:,.2f}" for x in evals[:, 1]]
    assert "final greedy return" in table
    finished, line = html_report.status(files)
    assert finished and line.startswith("finished: 4,000 env steps")


def test_a_run_in_progress_shows_its_latest_evaluation_and_says_how_far_it_got(tmp_path):
    _, evals = make_run(tmp_path / "run", finished=False)
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"chunk": 5, "env_st')  # being written by the training process
    files = html_report.read_run(tmp_path / "run")
    assert len(files.metrics) == 4 and not files.finished
    np.testing.assert_array_equal(files.eval_steps, [1000])  # the periodic one, from metrics
    rows = html_report.run_rows(files)
    assert [r["eval"] for r in rows] == pytest.approx(evals[:, 0])
    assert [r["eval_step"] for r in rows] == [1000, 1000]
    finished, line = html_report.status(files)
    assert not finished
    assert line == "in progress: chunk 4 of 4 done, 2,000 of 2,000 env steps per seed"
    assert "latest greedy return" in html_report.table_html(files)


def test_a_run_that_stopped_says_so_and_its_page_does_not_reload(tmp_path):
    make_run(tmp_path / "run", finished=False)
    (tmp_path / "run" / "stopped.json").write_text(
        json.dumps({"reason": "non-finite values", "chunk": 4, "resumable": False})
    )
    files = html_report.read_run(tmp_path / "run")
    assert html_report.status(files) == (
        False,
        "stopped after chunk 4 of 4 (non-finite values), 2,000 of 2,000 env steps per seed",
    )
    head = html_report.head_html(files)
    assert 'class="status stopped"' in head and "autoreload" not in head
    (tmp_path / "run" / "stopped.json").unlink()  # running again: in progress, reloadable
    head = html_report.head_html(html_report.read_run(tmp_path / "run"))
    assert 'class="status progress"' in head and "autoreload" in head


def test_damaged_files_are_named(tmp_path):
    make_run(tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text('{"env_step": 500}\nnot json\n{"env_step": 1000}\n')
    with pytest.raises(RunDirError, match=r"metrics.jsonl is damaged: line 2"):
        html_report.read_run(tmp_path / "run")
    metrics.write_text("")
    (tmp_path / "run" / "evals.csv").write_text("run,env_step\n0,x\n")
    with pytest.raises(RunDirError, match=r"evals.csv is damaged"):
        html_report.read_run(tmp_path / "run")


def test_the_page_is_self_contained_filled_and_written_atomically(tmp_path):
    runs, _ = make_run(tmp_path / "run")
    path = html_report.write_report(tmp_path / "run")
    assert path == tmp_path / "run" / "report.html"
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    page = path.read_text()
    assert not re.search(r'@@DQNJAX_|\["@@[a-z0-9-]+:', page)  # every slot filled
    assert not re.search(r"<script[^>]+src=", page)  # no CDN: bokeh's JavaScript is inline
    assert "Bokeh" in page and len(page) > 500_000
    # the numbers travel in bokeh's document: run 0's lengths are there as a JSON list
    assert json.dumps([int(x) for x in runs[0][:, 1]], separators=(",", ":")) in page
    assert "Q-values of the probe states" in page and "<h2>Summary</h2>" in page
    assert "CartPole-v1 - ddqn: dqn-jax run report" in page
    # a rewrite of the same shape reuses the cached layout
    before = html_report.skeleton.cache_info().hits
    html_report.write_report(tmp_path / "run")
    assert html_report.skeleton.cache_info().hits == before + 1


def test_a_sweep_report_compares_its_grid_points(tmp_path):
    _, evals = make_run(tmp_path / "sweep", sweep=True)
    files = html_report.read_run(tmp_path / "sweep")
    assert html_report.run_labels(files.seeds, files.sweep) == [
        "lr=0.001 | seed 0",
        "lr=0.001 | seed 1",
        "lr=0.003 | seed 0",
        "lr=0.003 | seed 1",
    ]
    data = html_report.plot_data(files)
    assert data["final-iqm"]["point"] == ["lr=0.001", "lr=0.003"]
    for p in range(2):
        agg = stats.aggregate(evals[2 * p : 2 * p + 2, 1])
        assert data["final-iqm"]["iqm"][p] == pytest.approx(agg["iqm"])
        assert "curve-1" in data and len(data["curve-1"]["env_step"]) > 0
        # the sweep table's cells are those of sweep_table.txt
        cells = stats.table_cells(stats.aggregate(evals[2 * p : 2 * p + 2, 1], threshold=475.0))
        assert "".join(f"<td>{c}</td>" for c in cells) in html_report.sweep_table_html(files)
    page = html_report.render(files)
    assert "Sweep: grid points compared" in page and "@@DQNJAX" not in page


def test_rewrites_stay_within_the_budget_and_a_failure_never_stops_training(tmp_path):
    assert html_report.due(cost_s=0.5, since_s=10.0)  # 5% of 10 s
    assert not html_report.due(cost_s=0.6, since_s=10.0)
    make_run(tmp_path / "run", finished=False)
    always = html_report.LiveReport(tmp_path / "run", [0, 1], budget=1e9)
    for _ in range(3):
        always.chunk()
    assert always.writes == 3 and (tmp_path / "run" / "report.html").exists()
    (tmp_path / "run" / "report.html").unlink()
    never = html_report.LiveReport(tmp_path / "run", [0, 1], budget=0.0)
    never.chunk()
    assert never.writes == 0 and not (tmp_path / "run" / "report.html").exists()
    never.flush()  # the run stopped early: the page is brought up to date
    assert never.writes == 1 and (tmp_path / "run" / "report.html").exists()
    # given the config, a thread builds the layout while the loop runs; rewrites reuse it
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    misses = html_report.skeleton.cache_info().misses
    live = html_report.LiveReport(tmp_path / "run", [5, 6], budget=1e9, config=config)
    assert live.ready.wait(timeout=60)
    assert html_report.skeleton.cache_info().misses == misses + 1
    live.chunk()
    assert live.writes == 1 and html_report.skeleton.cache_info().misses == misses + 1
    assert "seed 6" in (tmp_path / "run" / "report.html").read_text()
    lines = []
    broken = html_report.LiveReport(tmp_path / "missing", [0], echo=lines.append, budget=1e9)
    broken.chunk()
    broken.chunk()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "does not exist" in lines[0]


def test_report_command(tmp_path, capsys):
    make_run(tmp_path / "run", finished=False)
    assert main(["report", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'run' / 'report.html'}"
    assert "in progress: chunk 4 of 4" in (tmp_path / "run" / "report.html").read_text()
    for argv, pattern in (
        (["report", str(tmp_path / "nope")], r"nope does not exist: expected a run directory"),
        (["report"], r"dqn-jax report: the following arguments are required: run_dir"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(pattern, err[0]), err
    (tmp_path / "run" / "episodes.csv").unlink()
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "episodes.csv not found" in capsys.readouterr().err
