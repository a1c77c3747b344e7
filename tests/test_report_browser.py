"""report.html in a real headless browser (Debian's chromium through its chromedriver): a tiny
real run's page loads without console errors, every plot draws its runs, the run checkboxes hide
them, and the numbers shown are summary.json's; the page of the same run in progress says so.
A made-up sweep with probe states draws its other plots.

Chromium is required in CI (``.ci/run`` installs it); elsewhere the test skips without it."""

import json
import os
import shutil
import time

import pytest
from helpers import QUIET, TWO_SEEDS
from report_helpers import make_run

from dqn_jax.config import Config
from dqn_jax.html_report import write_report
from dqn_jax.run import train

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
RUN_COLORS = {"seed 0": (0x1F, 0x77, 0xB4), "seed 1": (0xFF, 0x7F, 0x0E)}  # Category10
FIGURES = 5  # steps, return, evaluations, loss, Q
RUN_LINES = (0, 1, 3, 4)  # the plots with a line of each run's color

# Per plot (bokeh draws each on a canvas in a shadow root): its size, how many pixels are
# painted, how many distinct colors, and how many pixels are close to each of `targets`.
CANVAS_STATS = """
const targets = arguments[0];
function walk(root, out) {
  for (const el of root.querySelectorAll("*")) {
    if (el.tagName === "CANVAS") { out.push(el); }
    if (el.shadowRoot) { walk(el.shadowRoot, out); }
  }
  return out;
}
const plots = walk(document, []).filter(
  (c) => c.getRootNode().host && c.getRootNode().host.classList.contains("bk-Canvas")
    && c === c.parentNode.querySelector("canvas"));
return plots.map((c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const colors = new Set();
  const near = targets.map(() => 0);
  let painted = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) { continue; }
    painted += 1;
    colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    targets.forEach((t, k) => {
      if (Math.abs(d[i] - t[0]) + Math.abs(d[i + 1] - t[1]) + Math.abs(d[i + 2] - t[2]) < 40) {
        near[k] += 1;
      }
    });
  }
  return {width: c.width, height: c.height, painted: painted, colors: colors.size, near: near};
});
"""

CLICK_BUTTON = """
const label = arguments[0];
function walk(root) {
  for (const el of root.querySelectorAll("*")) {
    if (el.tagName === "BUTTON" && el.textContent.trim() === label) { return el; }
    if (el.shadowRoot) { const found = walk(el.shadowRoot); if (found) { return found; } }
  }
  return null;
}
const button = walk(document);
if (button) { button.click(); }
return button !== null;
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium (the flags keep it quiet and offline-friendly as root)."""
    missing = [
        name
        for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
        if path is None
    ]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        message = f"the browser test needs {', '.join(missing)}: apt-get install chromium " + (
            "chromium-driver"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(driver, path, figures: int) -> list[dict]:
    """Load ``path``; wait until ``figures`` plots have drawn; their canvas statistics."""
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(path.as_uri())
    targets = [list(c) for c in RUN_COLORS.values()]
    deadline = time.monotonic() + 30
    while True:
        plots = driver.execute_script(CANVAS_STATS, targets)
        drawn = [p for p in plots if p["colors"] > 20]
        if len(drawn) >= figures or time.monotonic() > deadline:
            return plots
        time.sleep(0.2)


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def table(driver) -> list[dict]:
    """The runs table's cells, by class, one dict per run."""
    rows = driver.find_elements("css selector", "tr.run")
    return [
        {
            "run": int(row.get_attribute("data-run")),
            "episodes": int(row.find_element("css selector", ".episodes").text),
            "last_mean": row.find_element("css selector", ".last-mean").text,
            "eval": row.find_element("css selector", ".eval").text,
        }
        for row in rows
    ]


def number(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


def test_the_report_of_a_run_in_progress_and_finished(browser, tmp_path):
    # TWO_SEEDS's compiled programs (the checkpoint tests') come from the session's cache
    config = Config(**{**TWO_SEEDS, "eval_every_chunks": 1})
    run_dir = tmp_path / "run"
    page = run_dir / "report.html"

    # Stopped after chunk 2 of 4: the page the run leaves says so, with the way to go on.
    train(config, run_dir, stop_after_chunks=2, **QUIET)
    assert not (run_dir / "summary.json").exists()
    open_page(browser, page, FIGURES)
    assert browser.find_element("id", "status").text == (
        "stopped after chunk 2 of 4 (stop_after_chunks), 1,000 of 2,000 env steps per seed; "
        f"resume with: dqn-jax train --resume {run_dir}"
    )
    assert browser.find_elements("id", "autoreload") == []

    # In progress: the same files as the run's page after chunk 2 while it still trains.
    (run_dir / "stopped.json").unlink()
    write_report(run_dir)
    plots = open_page(browser, page, FIGURES)
    assert console_errors(browser) == []
    status = browser.find_element("id", "status")
    assert status.text == "in progress: chunk 2 of 4 done, 1,000 of 2,000 env steps per seed"
    assert browser.find_elements("id", "autoreload")
    assert "latest greedy return" in browser.find_element("css selector", "table.runs").text
    assert len(plots) == FIGURES and all(p["colors"] > 20 for p in plots), plots
    rows = table(browser)
    assert [r["run"] for r in rows] == [0, 1]
    assert all(r["eval"].endswith("(1,000)") for r in rows), rows  # evaluated at chunks 1, 2
    assert browser.find_elements("xpath", "//h2[text()='Summary']") == []

    # Finished: resumed to the end.
    train(config, run_dir, resume=True, **QUIET)
    summary = json.loads((run_dir / "summary.json").read_text())
    plots = open_page(browser, page, FIGURES)
    assert console_errors(browser) == []
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert browser.find_element("id", "status").text.startswith("finished: 4,000 env steps")
    assert len(plots) == FIGURES, plots
    for p in plots:  # a canvas the size of a plot, with axes, text and lines on it
        assert p["width"] >= 300 and p["height"] >= 300 and p["colors"] > 20, p
    # both runs' lines are drawn in the episode, loss and Q plots (equal evaluations hide each
    # other's dots)
    lines = [plots[i] for i in RUN_LINES]
    assert all(n > 30 for p in lines for n in p["near"]), plots
    # the numbers shown are summary.json's
    rows = table(browser)
    assert [r["episodes"] for r in rows] == summary["episodes_per_seed"]
    for r, final, last in zip(
        rows,
        summary["final_eval_return_per_seed"],
        summary["last100_return_per_seed"],
        strict=True,
    ):
        assert number(r["eval"]) == pytest.approx(final, abs=0.006)
        assert number(r["last_mean"]) == pytest.approx(last, abs=0.006)
    assert browser.find_elements("xpath", "//h2[text()='Summary']")

    # Unticking every run ("none") takes their lines out of every plot.
    assert browser.execute_script(CLICK_BUTTON, "none")
    time.sleep(0.5)
    after = browser.execute_script(CANVAS_STATS, [list(c) for c in RUN_COLORS.values()])
    for b, a in zip(lines, [after[i] for i in RUN_LINES], strict=True):
        b, a = b["near"], a["near"]
        assert a[0] < b[0] / 3 and a[1] < b[1] / 3, (lines, after)
    assert console_errors(browser) == []


def test_a_sweep_with_probe_states_draws_every_plot(browser, tmp_path):
    make_run(tmp_path / "sweep", sweep=True)
    page = write_report(tmp_path / "sweep")
    # steps, return, evaluations, loss, Q, probe states, training curves, final returns
    plots = open_page(browser, page, 8)
    assert console_errors(browser) == []
    assert len(plots) == 8 and all(p["colors"] > 20 for p in plots), plots
    sweep = browser.find_element("css selector", "table.sweep").text
    assert "lr=0.001" in sweep and "lr=0.003" in sweep
