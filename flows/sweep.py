"""The sweep flow: Optuna asks for trials, Dask runs them (Prefect's Dask task runner), the best config ships.

Trials go out in batches of as many as the cluster has worker threads (ask a batch, submit, wait, tell), so
TPE with constant_liar spreads one batch over the space. Each trial is a task on a Dask worker; the study,
the MLflow runs and the final `pipeline` run of the chosen config stay in this flow's process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from prefect.settings import get_current_settings
from prefect_dask import DaskTaskRunner

from shrinkflow.core import sweep as sweeps
from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.environment import EnvironmentProblem, check_workspace
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.selection import Quality
from shrinkflow.core.sweep import TrialOutcome
from shrinkflow.core.workspace import Workspace
from shrinkflow.flows.pipeline import PROGRESS, pipeline
from shrinkflow.flows.trial import TrialRequest, run_trial
from shrinkflow.tasks.caching import keep_results_in
from shrinkflow.tasks.sweep import (
    check_worker, finish_sweep_tracking, record_trial, recorded_trials, start_sweep_tracking, worker_threads,
)

# The study remembers its MLflow sweep parent run, so a resumed sweep adds its trials to the same run.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
WORKERS_TIMEOUT = 60.0  # seconds an existing cluster may take to have a worker


@dataclass(frozen=True)
class SweepResult:
    """What the sweep found: every trial's outcome, the floor, the chosen trial and where it shipped."""

    outcomes: list[TrialOutcome]
    table: str
    floor: float | None
    best: TrialOutcome | None
    shipped: str
    parent_run_id: str
    study: str
    storage: str


def dask_task_runner(workers: int | None = None, address: str | None = None) -> DaskTaskRunner:
    """An existing cluster at `address`; else a LocalCluster of `workers` processes (default: one per core)
    with one thread each: one trial per process, TensorFlow given that process's share of the cores."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None, "silence_logs": logging.WARNING},
    )


def submit_trial(runner: DaskTaskRunner, request: TrialRequest, workspace: Workspace) -> PrefectFuture[TrialOutcome]:
    """Run one trial on the cluster (a task run of this flow run, on a Dask worker)."""
    future: PrefectFuture[TrialOutcome] = runner.submit(run_trial, parameters={"request": request, "workspace": workspace})
    return future


@flow(name="shrinkflow-sweep", log_prints=True)
def sweep(
    config: PipelineConfig, workspace: str | None = None, trials: int | None = None, workers: int | None = None,
    dask_address: str | None = None,
) -> SweepResult:
    """Search `config.sweep.parameters` for the smallest model that keeps the quality (select.quality), then ship it.

    Args:
        config: The base config and its `sweep` section (search space, sampler, objective, trials).
        workspace: Folder shared by every Dask worker: datasets, cached stages, the study, exports.
        trials: Trials to reach, counting those an interrupted sweep of the same study finished; empty: sweep.trials.
        workers: Worker processes of a local Dask cluster, one trial each; empty: one per core.
        dask_address: An existing Dask cluster's scheduler (tcp://HOST:PORT) to run the trials on instead.

    Returns:
        The trials' outcomes and table, the quality floor, the chosen trial and what its pipeline run shipped.
    """
    logger = get_run_logger()
    ws = Workspace.resolve(workspace)
    check_workspace(ws, workspace)
    keep_results_in(ws)
    raw = config.model_dump(mode="json")
    sweeps.check_sweep(raw, config, source=config.name)
    spec = config.sweep if trials is None else config.sweep.model_copy(update={"trials": trials})
    name = sweeps.study_name(config)
    storage = spec.storage or sweeps.default_storage(ws.root / "sweeps", name)
    (ws.root / "sweeps").mkdir(parents=True, exist_ok=True)  # also how a worker tells the workspace is shared
    quality = Quality(config.select.quality)

    with dask_task_runner(workers, dask_address) as runner:
        slots, threads_by_host = _check_workers(ws, runner)
        study = sweeps.open_study(spec, storage, name, quality)
        recovered = sweeps.recover_interrupted(study)
        if recovered:
            logger.warning("resuming: trials %s were cut off by an interrupted sweep; their parameters run again", recovered)
        run = start_sweep_tracking(config, ws, name, study.user_attrs.get(PARENT_RUN_ATTR))
        study.set_user_attr(PARENT_RUN_ATTR, run.parent_run_id)
        outcomes = sweeps.finished_outcomes(study)
        recorded = recorded_trials(run)
        for outcome in outcomes:  # told to Optuna by a sweep that was killed before it recorded them in MLflow
            if outcome.number not in recorded:
                record_trial(run, outcome)
        logger.info(
            "study %s in %s: %d of %d trials done; %d at a time", name, storage, sweeps.trials_done(study), spec.trials, slots
        )

        more = True  # until the sampler has nothing left to try (a grid's last point)
        while more and (remaining := spec.trials - sweeps.trials_done(study)) > 0:
            batch: list[tuple[Any, dict[str, Any], PrefectFuture[TrialOutcome] | None, str]] = []  # trial, values, future or why none
            for trial in [study.ask() for _ in range(min(slots, remaining))]:
                values = sweeps.sample(trial, spec)
                try:
                    request = TrialRequest(trial.number, values, sweeps.trial_config(raw, values), threads_by_host)
                except ConfigError as exc:  # this combination of values is invalid: a failed trial, the sweep goes on
                    batch.append((trial, values, None, str(exc)))
                    continue
                batch.append((trial, values, submit_trial(runner, request, ws), ""))
            for trial, values, future, reason in batch:
                if future is not None:
                    state = future.wait() or future.state
                    reason = state.message or "the trial task crashed"
                outcome = future.result() if future is not None and future.state.is_completed() else TrialOutcome(
                    trial.number, values, status="failed", reason=reason
                )
                outcomes.append(outcome)
                more = sweeps.tell(study, trial, outcome, spec, sweeps.quality_floor_for(outcomes, config), quality) and more
                record_trial(run, outcome)
                PROGRESS.info(trial_line(outcome))  # once the trial is told to Optuna and recorded in MLflow

    floor = sweeps.quality_floor_for(outcomes, config)
    best = sweeps.best_trial(outcomes, floor, quality)
    rows = sweeps.table_rows(outcomes, floor, best, quality)
    table = sweeps.format_trials(rows)
    logger.info(
        "trials of %s (%s floor %s):\n%s", config.name, quality.metric, "none" if floor is None else f"{floor:.4f}", table
    )
    create_markdown_artifact(sweeps.format_trials(rows, markdown=True), key="sweep-trials", description=f"Trials of {config.name}")
    plot = sweeps.pareto_plot(outcomes, floor, best, ws.runs / run.parent_run_id / "pareto.png", quality)

    shipped = f"nothing shipped: no trial kept the {quality.metric} floor"
    best_config = None
    if best is not None:
        best_config = sweeps.trial_config(raw, best.params)
        logger.info("chosen: trial %d (%s); running the pipeline on its config", best.number, best.params or "the base config")
        rows_shipped = pipeline(best_config, workspace=str(ws.root))
        selected = next((row for row in rows_shipped if row.selected), None)
        shipped = (
            f"The pipeline on the chosen config shipped {selected.variant} as version {selected.version} of "
            f"{config.name} ({'champion' if selected.promoted else 'the champion alias stayed'}); export: "
            f"{ws.exports / config.name / selected.version}"
            if selected is not None else "The pipeline on the chosen config shipped nothing (see its run)."
        )
    finish_sweep_tracking(run, rows, sweeps.format_trials(rows, markdown=True), plot, best, best_config, floor, shipped)
    return SweepResult(outcomes, table, floor, best, shipped, run.parent_run_id, name, storage)


def trial_line(outcome: TrialOutcome) -> str:
    """One line of the sweep's progress per finished trial."""
    if not outcome.ok:
        return f"  trial {outcome.number:<4} FAILED: {outcome.reason[:100]}"
    return (
        f"  trial {outcome.number:<4} ships {outcome.variant:<36} validation {outcome.metric} {outcome.quality:.4f} "
        f"{outcome.gzip_size_bytes or 0:>10,} bytes gzipped"
    )


def _check_workers(ws: Workspace, runner: DaskTaskRunner) -> tuple[int, dict[str, int]]:
    """The cluster's trial slots (worker threads) and TensorFlow threads per trial on each host, once every
    worker has shown it can run a trial: the workspace shared, the Prefect API reachable.

    Raises:
        EnvironmentProblem: no worker joined within WORKERS_TIMEOUT, or a worker cannot run trials.
    """
    client = runner.client
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
    except TimeoutError:
        raise EnvironmentProblem(
            f"the Dask scheduler at {runner.address or 'the local cluster'} has no worker after {WORKERS_TIMEOUT:.0f} s; start "
            "workers with `dask worker tcp://HOST:PORT --nthreads 1`"
        ) from None
    problems = {
        address: problem
        for address, problem in client.run(check_worker, str(ws.root), get_current_settings().api.url).items()
        if problem
    }
    if problems:
        raise EnvironmentProblem(
            "Dask workers that cannot run trials: " + "; ".join(f"{address}: {problem}" for address, problem in problems.items())
            + ". Every worker needs the same workspace (shared storage) and PREFECT_API_URL of a server it can reach"
        )
    workers: dict[str, Any] = client.scheduler_info(n_workers=-1)["workers"]
    return sum(int(info["nthreads"]) for info in workers.values()), worker_threads(workers)
