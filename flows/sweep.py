"""The sweep flow: Optuna asks for trials, Dask runs them (Prefect's Dask task runner), the best config ships.

Trials go out in batches of as many as the cluster has worker threads (ask a batch, submit, wait, tell), so
TPE with constant_liar spreads one batch over the space. Each trial is a task on a Dask worker; the study,
the MLflow runs and the final `pipeline` run of the chosen config stay in this flow's process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from mlflow.entities import RunStatus
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture
from prefect.settings import get_current_settings
from prefect_dask import DaskTaskRunner

from shrinkflow.core import sweep as sweeps
from shrinkflow.core.config import PipelineConfig, SweepConfig
from shrinkflow.core.environment import (
    EnvironmentLost, EnvironmentProblem, check_worker_count, check_workspace, local_worker_limit,
)
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.selection import Quality
from shrinkflow.core.sweep import TrialOutcome
from shrinkflow.core.workspace import Workspace
from shrinkflow.flows.pipeline import PROGRESS, pipeline
from shrinkflow.flows.trial import TrialRequest, run_trial
from shrinkflow.tasks.caching import keep_results_in
from shrinkflow.tasks.sweep import (
    WORKER_WAIT, check_worker, finish_sweep_tracking, record_trial, recorded_trials, start_sweep_tracking,
    wait_for_a_worker, worker_threads,
)
from shrinkflow.tracking import runs
from shrinkflow.tracking.runs import TrackingRef

# The study remembers its MLflow sweep parent run, so a resumed sweep adds its trials to the same run.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
WAIT_STEP = 2.0  # seconds between two looks at the cluster while a trial runs (a cheap call to the scheduler)


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
    note: str = ""  # why the sweep ended short of its trials (a grid with no point left), if it did


def dask_task_runner(workers: int | None = None, address: str | None = None) -> DaskTaskRunner:
    """An existing cluster at `address`; else a LocalCluster of `workers` processes (default: one per core)
    with one thread each: one trial per process, TensorFlow given that process's share of the cores."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers or local_worker_limit(), "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None,
                        # Trials report their failures as outcomes, a dead worker as KilledWorker; what the
                        # cluster's own processes log (a heartbeat missed while it closes) is noise.
                        "silence_logs": logging.CRITICAL},
    )


def submit_trial(runner: DaskTaskRunner, request: TrialRequest, workspace: Workspace) -> PrefectFuture[TrialOutcome]:
    """Run one trial on the cluster (a task run of this flow run, on a Dask worker)."""
    future: PrefectFuture[TrialOutcome] = runner.submit(run_trial, parameters={"request": request, "workspace": workspace})
    return future


@flow(name="shrinkflow-sweep", log_prints=True)
def sweep(
    config: PipelineConfig, workspace: str | None = None, workers: int | None = None, dask_address: str | None = None,
    worker_wait: float = WORKER_WAIT,
) -> SweepResult:
    """Search `config.sweep.parameters` for the smallest model that keeps the quality (select.quality), then ship it.

    Args:
        config: The base config and its `sweep` section (search space, sampler, objective, trials, time budget).
        workspace: Folder shared by every Dask worker: datasets, cached stages, the study, exports.
        workers: Worker processes of a local Dask cluster, one trial each; empty: one per core.
        dask_address: An existing Dask cluster's scheduler (tcp://HOST:PORT) to run the trials on instead.
        worker_wait: Seconds to wait for a Dask worker, at the start and whenever the cluster has none left;
            then the sweep stops (run it again to resume).

    Returns:
        The trials' outcomes and table, the quality floor, the chosen trial and what its pipeline run shipped.
    """
    ws = Workspace.resolve(workspace)
    check_workspace(ws, workspace)
    keep_results_in(ws)
    sweeps.check_sweep(config.model_dump(mode="json"), config, source=config.name)
    if not dask_address:
        check_worker_count(workers or local_worker_limit(), "workers")
    spec = config.sweep
    name = sweeps.study_name(config)
    storage = spec.storage or sweeps.default_storage(ws.root / "sweeps", name)
    (ws.root / "sweeps").mkdir(parents=True, exist_ok=True)  # also how a worker tells the workspace is shared
    sweeps.check_storage(spec, storage)

    study_lock = sweeps.lock_study(spec, storage, name)  # held until the sweep ends, however it ends
    progress = _Progress()
    with _stop_signals_noted() as signals:
        try:
            return _search_and_ship(config, spec, ws, name, storage, workers, dask_address, worker_wait, progress)
        except BaseException as exc:
            stop = isinstance(exc, (KeyboardInterrupt, TerminationSignal))
            _stopped(progress, exc, stopped=stop or bool(signals))
            if signals and not stop:  # a stop signal's exception, caught and wrapped on its way out: a stop still
                raise (KeyboardInterrupt() if signals[0] == signal.SIGINT else TerminationSignal(signals[0])) from exc
            raise
        finally:
            study_lock.release()


@dataclass
class _Progress:
    """How far a sweep got: what a stop must close (the study's cut-off trials, the MLflow parent run)."""

    study: Any = None
    run: TrackingRef | None = None


def _search_and_ship(
    config: PipelineConfig, spec: SweepConfig, ws: Workspace, name: str, storage: str, workers: int | None,
    dask_address: str | None, worker_wait: float, progress: _Progress,
) -> SweepResult:
    """The sweep proper, on a locked study: run the trials on the cluster, then ship the best trial's config."""
    logger = get_run_logger()
    raw = config.model_dump(mode="json")
    quality = Quality(config.select.quality)
    with dask_task_runner(workers, dask_address) as runner:
        slots, threads_by_host = _check_workers(ws, runner, worker_wait)
        study = progress.study = sweeps.open_study(spec, storage, name, quality)
        recovered = sweeps.recover_interrupted(study)
        if recovered:
            logger.warning("resuming: trials %s were cut off by an interrupted sweep; their parameters run again", recovered)
        run = progress.run = start_sweep_tracking(config, ws, name, study.user_attrs.get(PARENT_RUN_ATTR))
        study.set_user_attr(PARENT_RUN_ATTR, run.parent_run_id)
        outcomes = sweeps.finished_outcomes(study)
        recorded = recorded_trials(run)
        for outcome in outcomes:  # told to Optuna by a sweep that was killed before it recorded them in MLflow
            if outcome.number not in recorded:
                record_trial(run, outcome)
        logger.info(
            "study %s in %s: %d of %d trials done; %d at a time", name, storage, sweeps.trials_done(study), spec.trials, slots
        )
        earlier = len(outcomes)
        ended_by = _run_trials(study, spec, config, raw, outcomes, run, runner, ws, slots, threads_by_host, worker_wait)
    note = _ended_early(ended_by, spec, sweeps.trials_done(study), len(outcomes) - earlier)
    if note:
        logger.warning(note)
    return _finish(config, raw, ws, run, outcomes, quality, name, storage, note)


def _ended_early(ended_by: str, spec: SweepConfig, done: int, ran: int) -> str:
    """Why the sweep ended short of its trials, in a line ("" if it reached them)."""
    if ended_by == "grid" and done < spec.trials:
        return (
            f"the grid has no point left to try: the sweep stopped after {done} of the {spec.trials} trials asked for "
            "(every combination of the grid's values has run, plus the base config)"
        )
    if ended_by == "time" and done < spec.trials:
        return (
            f"the time budget of {spec.timeout_minutes:g} min ended the search after {ran} trial{'s' * (ran != 1)} in this sweep "
            f"({done} of the {spec.trials} asked for); the best trial so far ships, and a sweep of the same study goes on "
            "from there"
        )
    return ""


@contextlib.contextmanager
def _stop_signals_noted() -> Iterator[list[int]]:
    """Note each SIGTERM or SIGINT that reaches the sweep, then let the handler in place (Prefect's, the
    command's) deal with it as before. The exception that handler raises may be caught and wrapped by a library
    on its way out (pydantic, serializing a trial's context as it is submitted, turns it into an error of its
    own): the note keeps a stop a stop."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield noted
        return
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def note(signum: int, frame: Any) -> None:
        noted.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise TerminationSignal(signum)

    for signum in previous:
        signal.signal(signum, note)
    try:
        yield noted
    finally:
        for signum, handler in previous.items():
            if signal.getsignal(signum) is note:
                signal.signal(signum, handler)


def _run_trials(
    study: Any, spec: SweepConfig, config: PipelineConfig, raw: dict[str, Any], outcomes: list[TrialOutcome],
    run: TrackingRef, runner: DaskTaskRunner, ws: Workspace, slots: int, threads_by_host: dict[str, int], worker_wait: float,
) -> str:
    """Ask, run and tell trials in batches until `spec.trials` are done ("trials"), the sampler runs out first ("grid":
    a grid whose every point has been tried) or the time budget is spent ("time"). As Optuna's `timeout`: no new
    trial is asked for once the budget is spent, and the trials already running finish and count."""
    quality = Quality(config.select.quality)
    deadline = None if spec.timeout_minutes is None else time.monotonic() + spec.timeout_minutes * 60
    more = True  # until the sampler has nothing left to try (a grid's last point)
    while more and (remaining := spec.trials - sweeps.trials_done(study)) > 0:
        if deadline is not None and time.monotonic() >= deadline:
            return "time"
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
            outcome = TrialOutcome(trial.number, values, status="failed", reason=reason)
            if future is not None:
                outcome = wait_for_trial(future, runner, worker_wait) or replace(outcome, reason=_why_crashed(future))
            outcomes.append(outcome)
            more = sweeps.tell(study, trial, outcome, spec, sweeps.quality_floor_for(outcomes, config), quality) and more
            record_trial(run, outcome)
            PROGRESS.info(trial_line(outcome))  # once the trial is told to Optuna and recorded in MLflow
    return "trials" if more else "grid"


def _finish(
    config: PipelineConfig, raw: dict[str, Any], ws: Workspace, run: TrackingRef | None, outcomes: list[TrialOutcome],
    quality: Quality, name: str, storage: str, note: str,
) -> SweepResult:
    """The trials' table and plot, the chosen config's pipeline run, and the sweep parent run closed."""
    assert run is not None
    logger = get_run_logger()
    floor = sweeps.quality_floor_for(outcomes, config)
    best = sweeps.best_trial(outcomes, floor, quality)
    rows = sweeps.table_rows(outcomes, floor, best, quality)
    table = sweeps.format_trials(rows)
    logger.info(
        "trials of %s (%s floor %s):\n%s", config.name, quality.metric, "none" if floor is None else f"{floor:.4f}", table
    )
    create_markdown_artifact(
        sweeps.trials_markdown(rows, quality, [run.ui_links() or "", note]), key="sweep-trials",
        description=f"Trials of the sweep of {config.name}",
    )
    plot = sweeps.pareto_plot(outcomes, floor, best, ws.runs / run.parent_run_id / "pareto.png", quality)

    shipped = f"nothing shipped: no trial kept the {quality.metric} floor"
    best_config, pipeline_run = None, None
    if best is not None:
        best_config = sweeps.trial_config(raw, best.params)
        logger.info("chosen: trial %d (%s); running the pipeline on its config", best.number, best.params or "the base config")
        state = pipeline(best_config, workspace=str(ws.root), return_state=True)
        rows_shipped, pipeline_run = state.result(), state.state_details.flow_run_id
        selected = next((row for row in rows_shipped if row.selected), None)
        shipped = (
            f"The pipeline on the chosen config shipped {selected.variant} as version {selected.version} of "
            f"{config.name} ({_champion_note(selected.promoted)}); export: {ws.exports / config.name / selected.version}"
            if selected is not None else "The pipeline on the chosen config shipped nothing (see its run)."
        )
    finish_sweep_tracking(
        run, rows, sweeps.format_trials(rows, markdown=True), plot, best, best_config, floor, shipped, note,
        None if pipeline_run is None else str(pipeline_run),
    )
    return SweepResult(outcomes, table, floor, best, shipped, run.parent_run_id, name, storage, note)


def trial_line(outcome: TrialOutcome) -> str:
    """One line of the sweep's progress per finished trial."""
    if not outcome.ok:
        return f"  trial {outcome.number:<4} FAILED: {outcome.reason[:100]}"
    return (
        f"  trial {outcome.number:<4} ships {outcome.variant:<36} validation {outcome.metric} {outcome.quality:.4f} "
        f"{outcome.gzip_size_bytes or 0:>10,} bytes gzipped"
    )


def _champion_note(promoted: bool | None) -> str:
    if promoted is None:
        return "the champion already was this very file"
    return "champion" if promoted else "the champion alias stayed"


def _stopped(progress: _Progress, exc: BaseException, stopped: bool) -> None:
    """A sweep that stops before its end (Ctrl-C, SIGTERM, its workers or a server lost, an error): the trials it
    had out are marked interrupted in the study (a resumed sweep runs their values again), and its MLflow parent
    run is closed KILLED (stopped on purpose) or FAILED, never left RUNNING. A plain call, not a task: it must
    work when Prefect's API is what failed; the stop's own cause is the error to report."""
    logger = get_run_logger()
    study, run = progress.study, progress.run
    if study is not None:
        try:
            cut_off = sweeps.recover_interrupted(study)  # the study is locked: every RUNNING trial is this sweep's
            if cut_off:
                logger.warning("trials %s were cut off; a resumed sweep runs their values again", cut_off)
        except Exception as marking:
            logger.warning("could not mark the cut-off trials in the study: %s", marking)
    if run is not None:
        try:
            runs.finish_pipeline(run, RunStatus.KILLED if stopped else RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        except Exception as closing:
            logger.warning("could not close the sweep's MLflow run: %s", closing)


def wait_for_trial(future: PrefectFuture[TrialOutcome], runner: DaskTaskRunner, worker_wait: float) -> TrialOutcome | None:
    """The trial's outcome once its task ends (None if it crashed rather than returned), waiting in bounded steps.

    Raises:
        EnvironmentLost: the cluster has had no worker (or the scheduler has been unreachable) for `worker_wait`
            seconds: a trial left waiting for a worker would wait for ever.
    """
    wrapped = future.wrapped_future  # type: ignore[attr-defined]  # a PrefectDaskFuture
    client = runner.client
    without_workers_since: float | None = None
    while not wrapped.done():
        future.wait(timeout=WAIT_STEP)  # returns after WAIT_STEP at most, whatever happened
        if wrapped.done():
            break
        if _worker_count(client):
            without_workers_since = None
            continue
        without_workers_since = without_workers_since or time.monotonic()
        if time.monotonic() - without_workers_since >= worker_wait:
            raise EnvironmentLost(
                f"the Dask cluster at {runner.address or 'the local cluster'} has had no worker for {worker_wait:.0f} s "
                "(they were stopped or died), so the sweep stopped; its finished trials are kept: start workers "
                "(`dask worker tcp://HOST:PORT --nthreads 1`) and run the same command again to resume"
            )
    if wrapped.status == "cancelled" and client.status != "running":
        raise EnvironmentLost(
            f"the Dask scheduler at {runner.address or 'the local cluster'} went away, so the sweep stopped; its "
            "finished trials are kept: start the scheduler and workers again and run the same command to resume"
        )
    state = future.state
    return future.result() if wrapped.status == "finished" and state.is_completed() else None


def _worker_count(client: Any) -> int:
    """Workers the scheduler knows now (0 while it cannot be reached)."""
    if client.status != "running":
        return 0
    try:
        return int(client.scheduler_info(n_workers=0)["n_workers"])
    except (OSError, TimeoutError):
        return 0


def _why_crashed(future: PrefectFuture[TrialOutcome]) -> str:
    """Why a trial task ended without an outcome: the worker that ran it died (KilledWorker), was cancelled, ..."""
    wrapped = future.wrapped_future  # type: ignore[attr-defined]
    if wrapped.status == "error":
        error = wrapped.exception()
        return f"the trial task crashed: {type(error).__name__}: {error}"
    return future.state.message or f"the trial task crashed ({wrapped.status})"


def _check_workers(ws: Workspace, runner: DaskTaskRunner, worker_wait: float) -> tuple[int, dict[str, int]]:
    """The cluster's trial slots (worker threads) and TensorFlow threads per trial on each host, once every
    worker has shown it can run a trial: the workspace shared, the Prefect API reachable.

    Raises:
        EnvironmentProblem: no worker joined within `worker_wait` seconds, or a worker cannot run trials.
    """
    client = runner.client
    wait_for_a_worker(client, runner.address or "the local cluster", worker_wait)
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
