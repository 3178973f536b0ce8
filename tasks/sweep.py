"""A sweep's trial as a Prefect task (it runs on a Dask worker), and the sweep's MLflow tasks.

A trial runs the pipeline's real stages for its config through `tasks.build.build_variants`: the cached
stage tasks, called from inside the trial task, run inline in it as nested task runs, and their cache
policy applies, so a trial whose stages an earlier trial (or run) built reuses them, and the chosen trial's
`pipeline` run afterwards finds every stage cached. A trial hands back a TrialOutcome, never a model.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads, also on a Dask worker)
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.environment import check_prefect_api, check_workspace
from shrinkflow.core.selection import select_variant
from shrinkflow.core.sweep import TrialOutcome, shipped_outcome
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking import sweeps
from shrinkflow.tracking.runs import TrackingRef
from tasks.build import build_variants
from tasks.options import IO_TASK


@dataclass(frozen=True)
class TrialRequest:
    """What a worker needs to run one trial: its number, sampled values and resulting config, and how many
    threads TensorFlow may use on each host (its cores shared among the trials that run there at once)."""

    number: int
    params: dict[str, Any]
    config: PipelineConfig
    threads_by_host: dict[str, int]


def _trial_run_name() -> str:
    return f"trial-{runtime.task_run.parameters['request'].number}"


@task(name="sweep-trial", task_run_name=_trial_run_name, cache_policy=NO_CACHE)
def run_trial(request: TrialRequest, workspace: Workspace) -> TrialOutcome:
    """Build the trial config's variants with the pipeline's cached stages, select one as `pipeline` would,
    and return what ships. A failure (a stage, nothing selected) is an outcome, not an exception, so the
    sweep goes on."""
    started = time.perf_counter()
    worker = dask_worker_address()
    threads = request.threads_by_host.get(_host(worker), 1) if worker else 0
    if threads:
        limit_tensorflow_threads(threads)
    quality = request.config.select.quality
    common: dict[str, Any] = {"number": request.number, "params": request.params, "worker": worker, "metric": quality}
    try:
        built = build_variants(request.config, workspace)
        selection = select_variant({v.name: v.metrics for v in built.variants}, built.baseline.metrics, request.config.select)
        shipped = shipped_outcome(selection, built.variants, quality)
    except Exception as exc:
        get_run_logger().error("trial %d failed: %s: %s", request.number, type(exc).__name__, exc)
        return TrialOutcome(
            **common, status="failed", reason=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started
        )
    stage_seconds = time.perf_counter() - started
    baseline_quality = built.baseline.metrics[quality]
    if shipped is None:
        return TrialOutcome(
            **common, status="failed", reason="no variant passed the selection policy", baseline_quality=baseline_quality,
            seconds=stage_seconds, stage_seconds=stage_seconds,
        )
    variant, value, gzip_size = shipped
    get_run_logger().info(
        "trial %d on %s: ships %s, %s %.4f, %s bytes gzipped", request.number, worker or "the flow's process",
        variant, quality, value, f"{gzip_size:,}",
    )
    return TrialOutcome(
        **common, variant=variant, quality=value, gzip_size_bytes=gzip_size, baseline_quality=baseline_quality,
        seconds=time.perf_counter() - started, stage_seconds=stage_seconds,
    )


def dask_worker_address() -> str:
    """The address of the Dask worker running this code ("" outside a worker)."""
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return ""


def _host(address: str) -> str:
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
        slots[_host(address)] = slots.get(_host(address), 0) + int(info.get("nthreads", 1))
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
    return sweeps.record_trial(tracking_ref, outcome)


@task(name="recorded-trials", **IO_TASK)
def recorded_trials(tracking_ref: TrackingRef) -> set[int]:
    return sweeps.recorded_trials(tracking_ref)


@task(name="finish-sweep-tracking", **IO_TASK)
def finish_sweep_tracking(
    tracking_ref: TrackingRef, rows: Sequence[Mapping[str, Any]], table_markdown: str, plot_png: Path,
    best: TrialOutcome | None, best_config: PipelineConfig | None, floor: float | None, shipped: str,
) -> None:
    sweeps.finish_sweep(tracking_ref, rows, table_markdown, plot_png, best, best_config, floor, shipped)
