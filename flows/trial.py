"""A sweep's trial as a Prefect task, run on a Dask worker: the pipeline's stages for the trial's config (the same
DAG as the `pipeline` flow, shrinkflow.flows.variants) and the selection a run would make.

The cached stage tasks, called from inside the trial task, run inline in it as nested task runs, and their cache
policy applies: a trial whose stages an earlier trial (or run) built reuses them, and the chosen trial's `pipeline`
run afterwards finds every stage cached. A trial hands back a TrialOutcome, never a model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.runtime import configure_libraries
from shrinkflow.core.selection import select_variant
from shrinkflow.core.steps import Steps
from shrinkflow.core.sweep import TrialOutcome, shipped_outcome
from shrinkflow.core.workspace import Workspace
from shrinkflow.flows.variants import build_variants
from shrinkflow.tasks.caching import keep_results_in
from shrinkflow.tasks.sweep import dask_worker_address, host_of, limit_tensorflow_threads


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
    configure_libraries()  # a worker process of its own, started by `dask worker` rather than a shrinkflow command
    keep_results_in(workspace)  # the stages' results with their checksums, as the sweep's own flow keeps them
    started = time.perf_counter()
    worker = dask_worker_address()
    threads = request.threads_by_host.get(host_of(worker), 1) if worker else 0
    if threads:
        limit_tensorflow_threads(threads)
    quality = request.config.select.quality
    common: dict[str, Any] = {"number": request.number, "params": request.params, "worker": worker, "metric": quality}
    try:
        built = build_variants(Steps.from_config(request.config), request.config.model, workspace)
        selection = select_variant(
            {v.name: v.metrics for v in built.variants}, built.baseline.metrics, request.config.select,
            built.dataset.split_size("validation"),
        )
        shipped = shipped_outcome(selection, built.variants, quality)
    except Exception as exc:
        get_run_logger().error("trial %d failed: %s: %s", request.number, type(exc).__name__, exc)
        return TrialOutcome(
            **common, status="failed", reason=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started
        )
    stage_seconds = time.perf_counter() - started
    baseline_quality = built.baseline.metrics[f"val_{quality}"]
    if shipped is None:
        get_run_logger().info("trial %d on %s: no variant passed the selection policy", request.number, worker or "the flow's process")
        return TrialOutcome(
            **common, status="failed", reason="no variant passed the selection policy", baseline_quality=baseline_quality,
            seconds=stage_seconds, stage_seconds=stage_seconds,
        )
    get_run_logger().info(
        "trial %d on %s: ships %s, validation %s %.4f (test %.4f), %s bytes gzipped", request.number,
        worker or "the flow's process", shipped["variant"], quality, shipped["quality"], shipped["test_quality"],
        f"{shipped['gzip_size_bytes']:,}",
    )
    return TrialOutcome(
        **common, **shipped, baseline_quality=baseline_quality, seconds=time.perf_counter() - started,
        stage_seconds=stage_seconds,
    )
