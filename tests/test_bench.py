"""The benchmark harness (bench/): its smoke mode end to end, and the arithmetic its reports rest on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.common import ChildRun, spread
from shrinkflow.core.tables import markdown_table
from bench.overhead import flow_phases
from bench.scaling import linear_fit
from bench.sweep import Timeline, per_trial, sweep_timeline
from shrinkflow.core.sweep import TrialOutcome
from tests.conftest import REPO, subprocess_env


@pytest.mark.e2e
def test_smoke_mode_runs_every_quick_benchmark_and_writes_results_and_report(tmp_path: Path) -> None:
    """`python -m bench --smoke`: tiny data, one repetition, everything written to --out, nothing to bench/results."""
    results = REPO / "bench" / "results"
    before = {path: path.stat().st_mtime for path in results.glob("*.json")}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)], cwd=REPO, env=subprocess_env(),
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for name in ("overhead", "caching", "memory", "input_pipeline"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["smoke"] is True and result["goals"], name
        assert result["machine"]["cores"] and result["versions"]["tensorflow"] != "absent"
    overhead = json.loads((tmp_path / "overhead.json").read_text())
    assert overhead["plain_s"]["median"] > 0 and overhead["flow_s"]["median"] > 0
    assert set(overhead["flow_phases_s"]) >= {"startup", "flow", "teardown"}
    assert json.loads((tmp_path / "caching.json").read_text())["cached_tasks_per_rerun"][0] >= 3
    assert not (tmp_path / "scaling.json").exists()  # too slow for the smoke mode
    report = (tmp_path / "benchmarks.md").read_text()
    assert "## Headline" in report and "## 1. Orchestration overhead" in report
    assert not (tmp_path / ".work").exists()
    assert {path: path.stat().st_mtime for path in results.glob("*.json")} == before


def test_flow_phases_come_from_the_log_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "10:00:02.000 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8000\n"
        "10:00:06.500 | INFO    | Flow run 'x' - Beginning flow run 'x' for flow 'shrinkflow'\n"
        "10:00:30.000 | INFO    | Task run 'train-baseline-1' - Finished in state Completed()\n"
        "10:00:46.500 | INFO    | Flow run 'x' - Finished in state Completed()\n"
    )
    started = time.mktime((2026, 1, 1, 10, 0, 0, 0, 0, -1))
    run = ChildRun("flow", [], wall_s=48.0, peak_rss_mib=1, tree_peak_rss_mib=1, returncode=0, log=str(log),
                   started_at=started)
    assert flow_phases(run) == pytest.approx({"startup": 6.5, "server_start": 4.5, "flow": 40.0, "teardown": 1.5})


def test_a_sweeps_trial_phase_and_each_trial_come_from_its_log(tmp_path: Path) -> None:
    """bench.sweep times the trial phase and each trial by the sweep flow's and the trial tasks' log lines."""
    log = tmp_path / "sweep.log"
    log.write_text(
        "10:00:05.000 | INFO    | Flow run 'x' - Beginning flow run 'x' for flow 'shrinkflow-sweep'\n"
        "10:00:08.000 | INFO    | Flow run 'x' - study d-1 in sqlite:////w/sweeps/d-1.db: 0 of 2 trials done; 1 at a time\n"
        "10:00:18.000 | INFO    | Task run 'trial-0' - trial 0 on tcp://127.0.0.1:1: ships baseline-int8, ...\n"
        "10:00:18.250 | INFO    | Task run 'record-trial-0' - recorded trial 0 as MLflow run abc\n"
        "10:00:25.500 | INFO    | Task run 'trial-1' - trial 1 failed: ValueError: x\n"
        "10:00:25.750 | INFO    | Task run 'record-trial-1' - recorded trial 1 as MLflow run def\n"
        "10:00:26.000 | INFO    | Flow run 'x' - trials of digits (accuracy floor 0.9000):\n"
        "10:00:40.000 | INFO    | Flow run 'x' - Finished in state Completed()\n"
    )
    started = time.mktime((2026, 1, 1, 10, 0, 0, 0, 0, -1))
    run = ChildRun("sweep", [], wall_s=41.0, peak_rss_mib=1, tree_peak_rss_mib=1, returncode=0, log=str(log), started_at=started)
    timeline = sweep_timeline(run)
    assert timeline == Timeline(8.0, 26.0, {0: 18.0, 1: 25.5}, {0: 18.25, 1: 25.75})
    second = TrialOutcome(1, {"model.hidden_units": [16]}, seconds=7.0, stage_seconds=6.75)
    assert per_trial(second, timeline, previous=18.25) == pytest.approx({
        "trial": 1, "flow_s": 7.5, "stage_s": 6.75, "overhead_s": 0.75, "to_body_s": 0.25, "body_outside_stages_s": 0.25,
        "after_body_s": 0.25,
    })


def test_linear_fit_tells_a_line_from_a_curve() -> None:
    line = linear_fit([1000, 4000, 8000], [30.0, 60.0, 100.0])
    assert line["linear"] and line["slope"] == pytest.approx(0.01, abs=1e-4) and line["intercept"] == 20.0
    assert not linear_fit([1000, 4000, 8000], [10.0, 100.0, 105.0])["linear"]


def test_spread_and_table() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "values": [3.0, 1.0, 2.0]}
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"
