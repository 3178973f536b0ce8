"""MLflow runs left RUNNING by a flow process that is gone are closed by the next run; live ones are not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from shrinkflow.processes import start_ticks
from shrinkflow.tracking import ABANDONED_TAG, MLFLOW_PARENT_RUN_TAG, OWNER_TAG, close_abandoned_runs


def owner(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid)}"


def test_runs_of_a_dead_process_are_killed_and_runs_of_live_ones_are_left_alone(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead_owner = owner(gone.pid)
    gone.kill()
    gone.wait()

    abandoned = client.create_run(experiment_id, tags={OWNER_TAG: dead_owner}).info.run_id
    abandoned_child = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_TAG: abandoned}).info.run_id
    finished_child = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_TAG: abandoned}).info.run_id
    client.set_terminated(finished_child)
    live = client.create_run(experiment_id, tags={OWNER_TAG: owner(os.getpid())}).info.run_id
    # This pid, but started at another time: the pid was reused, the run's process is gone.
    reused_pid = client.create_run(experiment_id, tags={OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}:1"}).info.run_id
    other_host = client.create_run(experiment_id, tags={OWNER_TAG: f"elsewhere.invalid:{gone.pid}:1"}).info.run_id

    assert sorted(close_abandoned_runs(client, experiment_id, closed_by="new-run")) == sorted([abandoned, reused_pid])

    runs = (abandoned, abandoned_child, finished_child, live, reused_pid, other_host)
    status = {run_id: client.get_run(run_id).info.status for run_id in runs}
    assert status == {
        abandoned: "KILLED", abandoned_child: "KILLED", finished_child: "FINISHED",
        live: "RUNNING", reused_pid: "KILLED", other_host: "RUNNING",  # another host's processes are not ours to judge
    }
    assert "new-run" in client.get_run(abandoned).data.tags[ABANDONED_TAG]
