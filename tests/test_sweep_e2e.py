"""`shrinkflow sweep` on a real Dask cluster: a `dask scheduler` and `dask worker` processes on loopback, the
CLI as a subprocess (its temporary Prefect server, MLflow in SQLite), killed after its first trial and resumed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from shrinkflow.deployments.processes import free_port
from shrinkflow.core.sweep import INTERRUPTED_ATTR, OUTCOME_ATTR, TrialOutcome
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking.runs import MLFLOW_NOTE_TAG
from shrinkflow.tracking.sweeps import PIPELINE_RUN_TAG, STUDY_TAG, SWEEP_RUN_TAG, TRIAL_TAG
from tests.conftest import REPO, descendants, pids_alive, subprocess_env, tiny_digits_config

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TIMEOUT = 300  # a deadline for a step, not a timing assertion
TRIALS = 3


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A scheduler and two single-threaded workers, each a process of its own; yields (address, worker addresses)."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**subprocess_env(), "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "dask.log"
    with open(logs, "w") as log:
        scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True,
        )
        workers = subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "2", "--no-dashboard", "--host", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True,
        )
    started = [scheduler.pid, workers.pid]
    try:
        with Client(address, timeout=TIMEOUT) as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
            started += descendants(workers.pid)
            yield address, sorted(client.scheduler_info(n_workers=-1)["workers"])
    finally:
        # The workers' processes have nothing to save: killed at once (a graceful close waits on TensorFlow).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(workers.pid, signal.SIGKILL)
        scheduler.terminate()
        for process in (workers, scheduler):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        for pid in pids_alive(started):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pids_alive(started) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pids_alive(started) == [], f"orphans left; see {logs}"


def sweep_config(tmp_path: Path) -> Path:
    raw = tiny_digits_config(**{"quantize.modes": "[int8]", "prune.epochs": "1"}).model_dump(mode="json")
    raw["name"] = "digits_sweep_e2e"
    raw["sweep"] = {
        "sampler": "random", "trials": TRIALS, "seed": 7,
        "parameters": {"model.hidden_units": {"choice": [[8], [16]]}, "prune.target_sparsity": {"float": [0.5, 0.8]}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_sweep(config: Path, workspace: Path, address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shrinkflow.cli.main", "sweep", str(config), "--workspace", str(workspace), "--dask-address", address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=subprocess_env(),
        start_new_session=True,
    )


def test_a_sweep_runs_on_the_dask_workers_and_resumes_after_a_kill(
    tmp_path: Path, dask_cluster: tuple[str, list[str]]
) -> None:
    address, workers = dask_cluster
    config, workspace = sweep_config(tmp_path), tmp_path / "ws"

    # First run: killed outright once its first trial is recorded.
    first = start_sweep(config, workspace, address)
    lines: list[str] = []
    children: list[int] = []
    try:
        assert first.stdout is not None
        for line in first.stdout:
            lines.append(line)
            children = descendants(first.pid) or children
            if line.startswith("  trial "):  # the progress line of a trial told to Optuna and recorded in MLflow
                break
        else:
            raise AssertionError("the sweep ended before a trial was recorded:\n" + "".join(lines[-40:]))
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while pids_alive(children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pids_alive(children) == []

    [storage] = [f"sqlite:///{path}" for path in (workspace / "sweeps").glob("*.db")]
    [summary] = optuna.get_all_study_summaries(storage)
    before = {t.number: t for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials if t.state.is_finished()}
    assert before, "no trial finished before the kill"

    # Second run: resumes, and completes.
    second = subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", "sweep", str(config), "--workspace", str(workspace), "--dask-address", address],
        capture_output=True, text=True, cwd=REPO, env=subprocess_env(), timeout=TIMEOUT,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "chosen: trial" in second.stdout

    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get(INTERRUPTED_ATTR)]
    assert len(finished) == TRIALS
    assert all(t.state != TrialState.RUNNING for t in study.trials)
    for number, trial in before.items():  # finished trials were not run again
        assert study.trials[number].values == trial.values and study.trials[number].user_attrs == trial.user_attrs
    outcomes = [TrialOutcome.from_json(t.user_attrs[OUTCOME_ATTR]) for t in finished]
    assert {o.worker for o in outcomes} <= set(workers) and all(o.worker for o in outcomes)
    assert sum(o.ok for o in outcomes) >= 2

    ws = Workspace(workspace)
    client = MlflowClient(tracking_uri=ws.tracking_uri(), registry_uri=ws.tracking_uri())
    experiment = client.get_experiment_by_name("digits_sweep_e2e")
    [parent] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{summary.study_name}'")
    assert parent.info.status == "FINISHED"
    children_runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trial_numbers = sorted(int(run.data.tags[TRIAL_TAG]) for run in children_runs)
    assert trial_numbers == sorted(t.number for t in finished)  # one child per trial, none twice
    sampled = [run for run in children_runs if run.data.tags[TRIAL_TAG] != "0"]
    assert all({"model.hidden_units", "prune.target_sparsity"} <= set(run.data.params) for run in sampled)
    assert "chosen_trial" in parent.data.tags and parent.data.tags["chosen_trial"] != "none"
    champion = client.get_model_version_by_alias("digits_sweep_e2e", "champion")
    assert str(champion.version) == "1"


def test_a_trial_that_cannot_run_is_failed_in_optuna_and_mlflow_and_the_sweep_goes_on(prefect_harness, tmp_path: Path) -> None:
    """A grid whose points fail two ways: a combination the config rejects (sparsity-preserving clustering of
    pruned models with 2 clusters), and data that cannot be split (12 samples of 10 classes). The Dask worker
    runs in this process, so the trials cost only the base config's stages."""
    from prefect_dask import DaskTaskRunner

    from shrinkflow.flows.sweep import sweep as sweep_flow
    from shrinkflow.core.config import validate_config

    raw = tiny_digits_config(**{"prune.enabled": "false", "quantize.modes": "[]", "cluster.apply_to": "[unpruned]"}).model_dump(mode="json")
    raw["name"] = "digits_sweep_failures"
    raw["sweep"] = {"sampler": "grid", "trials": 5, "parameters": {
        "cluster.apply_to": {"choice": [["unpruned"], ["pruned"]]}, "cluster.clusters": {"choice": [2]},
        "data.max_samples": {"choice": [None, 12]},
    }}
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False, "threads_per_worker": 1, "dashboard_address": None})
    result = sweep_flow.with_options(task_runner=runner)(validate_config(raw), workspace=str(tmp_path / "ws"))

    by_number = {outcome.number: outcome for outcome in result.outcomes}
    assert len(by_number) == 5
    rejected = [o for o in by_number.values() if o.params.get("cluster.apply_to") == ["pruned"]]
    unsplittable = [o for o in by_number.values() if o.params.get("data.max_samples") == 12 and o not in rejected]
    assert len(rejected) == 2 and all(o.status == "failed" and "needs at least 3 clusters" in o.reason for o in rejected)
    assert len(unsplittable) == 1 and "max_samples=12" in unsplittable[0].reason
    assert result.best is not None  # the sweep went on and chose among the trials that ran

    [storage] = [f"sqlite:///{path}" for path in (tmp_path / "ws" / "sweeps").glob("*.db")]
    states = {t.number: t.state for t in optuna.load_study(study_name=result.study, storage=storage).trials}
    assert {number for number, state in states.items() if state == TrialState.FAIL} == {o.number for o in rejected + unsplittable}
    ws = Workspace(tmp_path / "ws")
    client = MlflowClient(tracking_uri=ws.tracking_uri())
    experiment = client.get_experiment_by_name("digits_sweep_failures")
    trial_runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    failed_runs = {int(run.data.tags[TRIAL_TAG]) for run in trial_runs if run.info.status == "FAILED"}
    assert failed_runs == {o.number for o in rejected + unsplittable}


def test_the_time_budget_ends_the_search_and_the_best_trial_so_far_ships_linked_both_ways(prefect_harness, tmp_path: Path) -> None:
    """A budget spent by the first batch (one trial slot: the base config): no trial is asked for after it, the
    base trial ships through a pipeline run, and the sweep's and the pipeline's MLflow parent runs name each other."""
    from distributed import LocalCluster
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from shrinkflow.core.config import validate_config
    from shrinkflow.flows.sweep import sweep as sweep_flow

    raw = tiny_digits_config(**{"prune.enabled": "false", "quantize.modes": "[]", "cluster.apply_to": "[unpruned]"}).model_dump(mode="json")
    raw["name"] = "digits_sweep_budget"
    raw["sweep"] = {"sampler": "random", "trials": 4, "timeout_minutes": 0.001, "parameters": {"model.hidden_units": {"choice": [[8], [16]]}}}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        state = sweep_flow(validate_config(raw), workspace=str(tmp_path / "ws"), dask_address=cluster.scheduler_address, return_state=True)
    result = state.result()

    assert [outcome.number for outcome in result.outcomes] == [0]  # fewer than the 4 asked for
    assert result.note.startswith("the time budget of 0.001 min ended the search after 1 trial in this sweep (1 of the 4 asked for)")
    assert result.best is not None and result.best.number == 0 and "shipped" in result.shipped

    client = MlflowClient(tracking_uri=Workspace(tmp_path / "ws").tracking_uri())
    sweep_run = client.get_run(result.parent_run_id)
    pipeline_run = client.get_run(sweep_run.data.tags[PIPELINE_RUN_TAG])
    assert pipeline_run.data.tags[SWEEP_RUN_TAG] == result.parent_run_id
    assert "The sweep ended early: the time budget" in sweep_run.data.tags[MLFLOW_NOTE_TAG]
    assert f"The pipeline run that shipped the chosen trial: {pipeline_run.info.run_name}" in sweep_run.data.tags[MLFLOW_NOTE_TAG]
    assert pipeline_run.data.tags[MLFLOW_NOTE_TAG].endswith(f"Started by the sweep {sweep_run.info.run_name} (run {result.parent_run_id}) to ship its chosen trial 0.")

    with get_client(sync_client=True) as prefect:
        [artifact] = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["sweep-trials"]), flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
        ))
    assert result.note in artifact.data
    assert "| trial | status | variant | val accuracy | test accuracy | gzip bytes |" in artifact.data
    assert f"- trial 0 ({result.outcomes[0].seconds:.1f} s): base config\n" in artifact.data
