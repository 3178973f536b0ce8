"""What a sweep's trials need on their Dask workers (their address, TensorFlow's share of the cores, a check that
a worker can run trials), and the sweep's MLflow tasks. The trial itself is shrinkflow.flows.trial."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import get_run_logger, runtime, task

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.environment import EnvironmentProblem, check_prefect_api, check_workspace
from shrinkflow.core.sweep import TrialOutcome
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking import sweeps
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tasks.options import IO_TASK


# Seconds a sweep waits for a Dask worker: for the first to join, and whenever the cluster has none left.
WORKER_WAIT = 60.0


def wait_for_a_worker(client: Any, where: str, wait: float) -> None:
    """Block until the Dask cluster of `client` has a worker, for `wait` seconds at most.

    Raises:
        EnvironmentProblem: still no worker after `wait` seconds.
    """
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:  # distributed's WorkerStartTimeoutError is one
        raise EnvironmentProblem(
            f"the Dask scheduler at {where} has no worker after {wait:.0f} s; start workers with "
            "`dask worker tcp://HOST:PORT --nthreads 1`"
        ) from None


def check_dask_workers(address: str, wait: float) -> None:
    """The scheduler at `address` has a worker (within `wait` seconds): checked before anything starts."""
    from distributed import Client

    try:
        client = Client(address, timeout=wait, set_as_default=False)
    except OSError as exc:  # it listens, but does not answer as a Dask scheduler does
        raise EnvironmentProblem(f"--dask-address {address}: no Dask scheduler answers there ({exc})") from None
    with client:
        wait_for_a_worker(client, address, wait)


def dask_worker_address() -> str:
    """The address of the Dask worker running this code ("" outside a worker)."""
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return ""


def host_of(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


def limit_tensorflow_threads(threads: int) -> None:
    """TensorFlow's thread pools to this trial's share of the cores, so trials side by side on one machine do
    not fight over them. Set before TensorFlow creates its runtime (the first trial in a worker process); the
    pools then stay for the process's later trials, which get the same share."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime exists already: this worker set the pools for its first trial
        pass


def check_worker(workspace: str, api_url: str | None) -> str | None:
    """Run on every Dask worker before the trials: why this worker could not run one, or None.

    The workspace must be the same folder (shared storage) and the Prefect API reachable from the worker.
    """
    problems = []
    try:
        check_workspace(Workspace(Path(workspace)), workspace)
        if not Path(workspace, "sweeps").is_dir():
            problems.append(f"{workspace} is not the sweep's workspace here (no sweeps/ folder: not shared storage?)")
    except Exception as exc:
        problems.append(str(exc))
    try:
        check_prefect_api(api_url or os.environ.get("PREFECT_API_URL"))
    except Exception as exc:
        problems.append(str(exc))
    return "; ".join(problems) or None


def worker_threads(workers: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """TensorFlow threads per trial on each host: the host's cores over the Dask threads (trial slots) there.

    `workers` is the scheduler's view (address -> info with nthreads); cores are counted on each host by
    the trial itself where unknown here, so this gives slots per host and a core count of this machine.
    """
    slots: dict[str, int] = {}
    for address, info in workers.items():
        slots[host_of(address)] = slots.get(host_of(address), 0) + int(info.get("nthreads", 1))
    cores = os.cpu_count() or 1
    here = {"127.0.0.1", "localhost", socket.gethostname(), _local_ip()}
    return {host: max(1, cores // count) if host in here else 1 for host, count in slots.items()}


def _local_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@task(name="start-sweep-tracking", **IO_TASK)
def start_sweep_tracking(config: PipelineConfig, workspace: Workspace, study: str, resume_run_id: str | None) -> TrackingRef:
    uri = workspace.tracking_uri()
    artifact_root = workspace.mlartifacts if uri.startswith("sqlite:") else None
    return sweeps.start_sweep_run(
        uri, config, artifact_root, workspace.runs, runtime.flow_run.name, runtime.flow_run.id, study, resume_run_id
    )


@task(name="record-trial", task_run_name="record-trial-{outcome.number}", **IO_TASK)
def record_trial(tracking_ref: TrackingRef, outcome: TrialOutcome) -> str:
    run_id = sweeps.record_trial(tracking_ref, outcome)
    get_run_logger().info("recorded trial %d as MLflow run %s", outcome.number, run_id)
    return run_id


@task(name="recorded-trials", **IO_TASK)
def recorded_trials(tracking_ref: TrackingRef) -> set[int]:
    return sweeps.recorded_trials(tracking_ref)


@task(name="finish-sweep-tracking", **IO_TASK)
def finish_sweep_tracking(
    tracking_ref: TrackingRef, rows: Sequence[Mapping[str, Any]], table_markdown: str, plot_png: Path,
    best: TrialOutcome | None, best_config: PipelineConfig | None, floor: float | None, shipped: str, ended_early: str,
    pipeline_flow_run: str | None,
) -> None:
    sweeps.finish_sweep(tracking_ref, rows, table_markdown, plot_png, best, best_config, floor, shipped, ended_early, pipeline_flow_run)
