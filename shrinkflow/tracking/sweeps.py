"""MLflow tracking of a sweep: one sweep parent run, one nested child run per trial.

The sweep parent is a parent run like a pipeline run's (same experiment, lease and config params), tagged
with its Optuna study; a resumed sweep reopens the same parent run, so its trials stay side by side. A trial
run carries the trial's sampled values as params and its outcome as metrics. The variants a trial builds get
no run of their own: the trial's outcome is what the sweep compares; the chosen config then goes through
the `pipeline` flow, whose run records every variant as usual.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.sweep import TrialOutcome
from shrinkflow.tracking import runs
from shrinkflow.tracking.runs import (
    MLFLOW_NOTE_TAG, MLFLOW_PARENT_RUN_TAG, PREFECT_FLOW_RUN_TAG, TrackingRef, mlflow_ui_url, now_ms,
)
from shrinkflow.tracking.store import client_for, take_lease

STUDY_TAG = "shrinkflow.sweep_study"
# The sweep's parent run and the parent run of the pipeline run it started to ship its chosen trial, each naming the other.
SWEEP_RUN_TAG = "shrinkflow.sweep_run_id"
PIPELINE_RUN_TAG = "shrinkflow.pipeline_run_id"
TRIAL_TAG = "sweep.trial"


def start_sweep_run(
    tracking_uri: str, config: PipelineConfig, artifact_root: Path | None, runs_root: Path, run_name: str,
    prefect_flow_run_id: str | None, study: str, resume_run_id: str | None,
) -> TrackingRef:
    """Open the sweep's parent run, or reopen `resume_run_id` (the run of an interrupted sweep of the study)."""
    client = client_for(tracking_uri)
    if resume_run_id:
        try:
            previous = client.get_run(resume_run_id)
        except Exception:  # deleted, or another store: start a new parent run
            previous = None
        if previous is not None and previous.info.lifecycle_stage == "active":
            take_lease(runs_root / resume_run_id)
            client.update_run(resume_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            client.set_tag(resume_run_id, "resumed_by_flow_run", prefect_flow_run_id or "")
            return TrackingRef(tracking_uri, previous.info.experiment_id, resume_run_id)
    tracking = runs.start_parent_run(tracking_uri, config, artifact_root, runs_root, run_name, prefect_flow_run_id)
    client.log_batch(tracking.parent_run_id, tags=[
        RunTag(STUDY_TAG, study),
        RunTag(MLFLOW_NOTE_TAG, f"Running: a shrinkflow sweep of {config.name} (Optuna study {study})."),
    ])
    return tracking


def recorded_trials(tracking: TrackingRef) -> set[int]:
    """The trial numbers that already have a child run under the sweep parent."""
    found = client_for(tracking.tracking_uri).search_runs(
        [tracking.experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_TAG}` = '{tracking.parent_run_id}'",
        max_results=50000,
    )
    return {int(run.data.tags[TRIAL_TAG]) for run in found if TRIAL_TAG in run.data.tags}


def record_trial(tracking: TrackingRef, outcome: TrialOutcome) -> str:
    """The trial's child run, written and closed in one go: FINISHED with its outcome, or FAILED with why."""
    client = client_for(tracking.tracking_uri)
    tags = {
        MLFLOW_PARENT_RUN_TAG: tracking.parent_run_id, TRIAL_TAG: str(outcome.number), "sweep.status": outcome.status,
        "sweep.worker": outcome.worker or "local", "shipped_variant": outcome.variant or "none",
    }
    if outcome.reason:
        tags["error" if not outcome.ok else "note"] = outcome.reason[:5000]
    run = client.create_run(tracking.experiment_id, run_name=f"trial-{outcome.number}", tags=tags)
    run_id = str(run.info.run_id)
    params = {key: _param(value) for key, value in outcome.params.items()} or {"base_config": "true"}
    measured: dict[str, float | int | None] = {
        f"val_{outcome.metric}": outcome.quality, outcome.metric: outcome.test_quality,
        "gzip_size_bytes": outcome.gzip_size_bytes, f"baseline_val_{outcome.metric}": outcome.baseline_quality, "seconds": outcome.seconds, "stage_seconds": outcome.stage_seconds,
    }
    now = now_ms()
    client.log_batch(
        run_id, params=[Param(key, value) for key, value in params.items()],
        metrics=[Metric(name, float(value), now, 0) for name, value in measured.items() if value is not None],
    )
    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED if outcome.ok else RunStatus.FAILED))
    return run_id


def finish_sweep(
    tracking: TrackingRef, rows: Sequence[Mapping[str, Any]], table_markdown: str, plot_png: Path,
    best: TrialOutcome | None, best_config: PipelineConfig | None, floor: float | None, shipped: str, ended_early: str,
    pipeline_flow_run: str | None,
) -> None:
    """The trials table (an MLflow table and markdown), the Pareto plot and the chosen trial on the sweep
    parent, linked both ways with the parent run of `pipeline_flow_run` (the Prefect flow run of the pipeline that
    shipped the chosen trial, if one ran); then close it as FINISHED. `ended_early` says why the sweep stopped short
    of its trials, if it did."""
    client = client_for(tracking.tracking_uri)
    run_id = tracking.parent_run_id
    client.log_table(run_id, data={column: [row[column] for row in rows] for column in (rows[0] if rows else {})}, artifact_file="trials.json")
    client.log_text(run_id, table_markdown, "trials.md")
    client.log_artifact(run_id, str(plot_png))
    metrics: dict[str, float] = {"trials": float(len(rows))}
    if floor is not None:
        metrics["quality_floor"] = floor
    tags = {"chosen_trial": "none", "shipped": shipped}
    if best is not None and best_config is not None:
        metrics |= {
            f"best_val_{best.metric}": float(best.quality or 0.0), f"best_{best.metric}": float(best.test_quality or 0.0),
            "best_gzip_size_bytes": float(best.gzip_size_bytes or 0),
        }
        tags |= {"chosen_trial": str(best.number), "chosen_variant": best.variant}
        tags |= {f"chosen.{key}": _param(value) for key, value in best.params.items()}
        client.log_text(run_id, best_config.to_yaml(), "chosen_config.yaml")
        note = (
            f"Sweep of {len(rows)} trials. Chosen: trial {best.number} "
            f"({', '.join(f'{k}={_param(v)}' for k, v in best.params.items()) or 'the base config'}), shipping "
            f"{best.variant} at validation {best.metric} {best.quality:.4f} (test {best.test_quality or 0:.4f}), "
            f"{best.gzip_size_bytes:,} bytes gzipped. {shipped}"
        )
    else:
        note = f"Sweep of {len(rows)} trials: no trial kept the quality floor; nothing shipped."
    if ended_early:
        note += f"\n\nThe sweep ended early: {ended_early}."
    pipeline_run = _pipeline_run(client, tracking, pipeline_flow_run) if pipeline_flow_run else None
    if pipeline_run is not None and best is not None:
        tags[PIPELINE_RUN_TAG] = pipeline_run.info.run_id
        note += f"\n\nThe pipeline run that shipped the chosen trial: {_run_link(tracking, pipeline_run.info)}."
        sweep_run = client.get_run(run_id).info
        client.log_batch(pipeline_run.info.run_id, tags=[
            RunTag(SWEEP_RUN_TAG, run_id),
            RunTag(MLFLOW_NOTE_TAG, f"{pipeline_run.data.tags.get(MLFLOW_NOTE_TAG, '')}\n\nStarted by the sweep "
                                    f"{_run_link(tracking, sweep_run)} to ship its chosen trial {best.number}.".lstrip()),
        ])
    tags[MLFLOW_NOTE_TAG] = note
    client.log_batch(
        run_id, metrics=[Metric(k, v, now_ms(), 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    runs.finish_pipeline(tracking, RunStatus.FINISHED)


def _param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def _pipeline_run(client: Any, tracking: TrackingRef, flow_run_id: str) -> Any:
    """The parent run of the pipeline's Prefect flow run `flow_run_id` in the sweep's experiment (None if none)."""
    found = client.search_runs(
        [tracking.experiment_id], filter_string=f"tags.`{PREFECT_FLOW_RUN_TAG}` = '{flow_run_id}'", max_results=10,
    )
    return next((run for run in found if MLFLOW_PARENT_RUN_TAG not in run.data.tags), None)


def _run_link(tracking: TrackingRef, run: Any) -> str:
    """A run by name, as a link to its page in the MLflow UI where tracking goes to a server (else with its id)."""
    if not tracking.tracking_uri.startswith(("http://", "https://")):
        return f"{run.run_name} (run {run.run_id})"
    return f"[{run.run_name}]({mlflow_ui_url(tracking.tracking_uri, f'experiments/{run.experiment_id}/runs/{run.run_id}')})"
