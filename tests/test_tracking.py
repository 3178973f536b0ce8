"""The parent run's bookkeeping: runs left RUNNING by a process that is gone are closed by the next run
(live ones are not), and a new SQLite store starts as a copy of an empty one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from shrinkflow.core.config import PipelineConfig
from shrinkflow.tracking.runs import ABANDONED_TAG, MLFLOW_PARENT_RUN_TAG, finish_pipeline, start_parent_run

START_AND_HANG = """
import sys, time
from pathlib import Path

import pytest
from shrinkflow.core.config import PipelineConfig
from shrinkflow.tracking.runs import start_parent_run
ref = start_parent_run(sys.argv[1], PipelineConfig(name="x"), Path(sys.argv[3]), Path(sys.argv[2]), "killed", None)
print(ref.parent_run_id, flush=True)
time.sleep(60)
"""


def test_runs_of_a_dead_process_are_killed_and_runs_of_live_ones_are_left_alone(tmp_path: Path) -> None:
    uri, runs_root, config = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "runs", PipelineConfig(name="x")
    artifacts = tmp_path / "artifacts"
    client = MlflowClient(tracking_uri=uri)
    live = start_parent_run(uri, config, artifacts, runs_root, "live", None)

    gone = subprocess.Popen(
        [sys.executable, "-c", START_AND_HANG, uri, str(runs_root), str(artifacts)], stdout=subprocess.PIPE, text=True
    )
    assert gone.stdout is not None
    abandoned = gone.stdout.readline().strip()
    gone.kill()
    gone.wait()
    experiment_id = live.experiment_id
    abandoned_child = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_TAG: abandoned}).info.run_id
    finished_child = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_TAG: abandoned}).info.run_id
    client.set_terminated(finished_child)
    # No lease in this workspace: a run of another workspace or machine, not ours to judge.
    elsewhere = client.create_run(experiment_id).info.run_id

    newest = start_parent_run(uri, config, artifacts, runs_root, "newest", None)

    runs = (abandoned, abandoned_child, finished_child, live.parent_run_id, elsewhere, newest.parent_run_id)
    status = {run_id: client.get_run(run_id).info.status for run_id in runs}
    assert status == {
        abandoned: "KILLED", abandoned_child: "KILLED", finished_child: "FINISHED",
        live.parent_run_id: "RUNNING", elsewhere: "RUNNING", newest.parent_run_id: "RUNNING",
    }
    assert newest.parent_run_id in client.get_run(abandoned).data.tags[ABANDONED_TAG]
    # The bookkeeping stays out of the MLflow UI: no tag of the live run names a process.
    assert not any("pid" in key or "owner" in key for key in client.get_run(live.parent_run_id).data.tags)

    for ref in (live, newest):
        finish_pipeline(ref, RunStatus.FINISHED)
    # A run that finished normally is never taken for abandoned.
    start_parent_run(uri, config, artifacts, runs_root, "later", None)
    assert client.get_run(live.parent_run_id).info.status == "FINISHED"


def test_a_new_store_is_a_copy_of_an_empty_one_that_works_like_a_migrated_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's migrations take over a second and a half; a copy of an empty store they made, milliseconds."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    refs = []
    for name in ("first", "second"):
        root = tmp_path / name
        uri = f"sqlite:///{root / 'mlflow.db'}"
        refs.append(start_parent_run(uri, PipelineConfig(name="x"), root / "mlartifacts", root / "runs", name, None))
    [template] = (tmp_path / "cache" / "shrinkflow").glob("mlflow-*-empty.db")
    for ref, name in zip(refs, ("first", "second")):
        client = MlflowClient(tracking_uri=ref.tracking_uri)
        client.log_metric(ref.parent_run_id, "m", 1.0)
        finish_pipeline(ref, RunStatus.FINISHED)
        assert client.get_run(ref.parent_run_id).data.metrics == {"m": 1.0}
        default = client.get_experiment("0")
        assert default.artifact_location == (tmp_path / name / "mlartifacts" / "0").as_uri()
    assert template.stat().st_size > 0
