"""MLflow tracking: one parent run per flow run, one nested child run per model variant.

Prefect may run tasks in worker threads, and MLflow's "active run" is thread-local, so every call
here addresses runs by id through an `MlflowClient` instead of relying on `mlflow.active_run()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.names import BASELINE
from shrinkflow.core.summary import SummaryRow
from shrinkflow.core.variants import Failure, Variant
from shrinkflow.tracking.store import (
    LEASE_FILE, client_for, lease_is_abandoned, release_lease, store_creation_lock, take_lease,
)
from shrinkflow.tracking.ui import (
    OUTCOME_TAG, in_training_view, mlflow_ui_url, run_page, runs_table_page, set_runs_view,
)

MLFLOW_PARENT_RUN_TAG = "mlflow.parentRunId"
# What the MLflow UI shows as a run's, an experiment's or a model version's description (markdown).
MLFLOW_NOTE_TAG = "mlflow.note.content"
# MLflow 3 opens an experiment in its GenAI view unless told it holds model training runs.
MLFLOW_EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_EXPERIMENT = "custom_model_development"
ABANDONED_TAG = "abandoned"
PREFECT_FLOW_RUN_TAG = "prefect.flow_run_id"  # on a parent run: the Prefect flow run it records (a sweep finds its pipeline run by it)
PREFECT_FLOW_RUN_PAGE_TAG = "prefect.flow_run_url"
# Metrics are logged to this many significant digits (whole numbers stay whole): the UI prints stored doubles as
# they are (0.9416666666666667). Selection and the gate compute with the unrounded values; only MLflow gets these.
LOGGED_DIGITS = 4


@dataclass(frozen=True)
class TrackingRef:
    """How to reach this flow run's MLflow parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_name: str = ""  # the parent run's name (its Prefect flow run's)

    def ui_links(self) -> str | None:
        """Markdown links to the parent run and to the experiment's runs in the MLflow UI, when tracking goes
        to a server (a SQLite file has no UI)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        run = mlflow_ui_url(self.tracking_uri, run_page(self.experiment_id, self.parent_run_id))
        runs = mlflow_ui_url(self.tracking_uri, runs_table_page(self.experiment_id))
        return f"[This run in MLflow]({run}) · [Every run of this model, side by side]({runs})"


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, creating it (with artifacts under `artifact_root`, if given) when new.

    The experiment is marked as one of model training runs (so the MLflow UI opens its runs table, not
    the GenAI view) and gets a description, also when an earlier version of shrinkflow created it.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_root.as_uri() if artifact_root is not None else None
        experiment_id = client.create_experiment(name, artifact_location=location)
        tags: dict[str, str] = {}
    else:
        experiment_id, tags = experiment.experiment_id, experiment.tags
    wanted = {
        MLFLOW_EXPERIMENT_KIND_TAG: MODEL_TRAINING_EXPERIMENT,
        MLFLOW_NOTE_TAG: (
            f"shrinkflow runs of {name}. Each pipeline run is a parent run named after its Prefect flow run, "
            "with the config as params and the shipped variant's headline metrics (`shipped_*`); each model "
            "variant (baseline, pruned, quantized, ...) is a child run whose params say how it was derived. "
            f"Shipped variants are versions of the registered model {name}; the alias `champion` marks the "
            "one in service."
        ),
    }
    for key, value in wanted.items():
        if key not in tags:
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def start_parent_run(
    tracking_uri: str,
    config: PipelineConfig,
    artifact_root: Path | None,
    runs_root: Path,
    run_name: str,
    prefect_flow_run_id: str | None,
    prefect_flow_run_page: str | None = None,
) -> TrackingRef:
    """Open the parent run, named `run_name` (the Prefect flow run's name): the config as params, the
    resolved YAML as an artifact, tags (the Prefect flow run, and its page in the Prefect UI when a lasting one
    shows it). This process holds the run's lease under `runs_root` until `finish_pipeline`; runs of this
    experiment whose lease nobody holds any more are closed first. Sets the experiment's saved runs view.
    """
    with store_creation_lock(tracking_uri):  # the client creates (and migrates) a new store as it starts
        client = client_for(tracking_uri)
        experiment_id = ensure_experiment(client, config.name, artifact_root)
    set_runs_view(client, experiment_id, config.select.quality)
    tags = {
        "shrinkflow.config_hash": config.config_hash(),
        MLFLOW_NOTE_TAG: f"Running: a shrinkflow pipeline run of {config.name}.",
    }
    if prefect_flow_run_id:
        tags[PREFECT_FLOW_RUN_TAG] = prefect_flow_run_id
    if prefect_flow_run_page:
        tags[PREFECT_FLOW_RUN_PAGE_TAG] = prefect_flow_run_page
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    take_lease(runs_root / run_id)
    close_abandoned_runs(client, experiment_id, runs_root, closed_by=run_id)
    params = [Param(key, str(value)) for key, value in flatten(config.model_dump(mode="json", exclude={"sweep"})).items()]
    client.log_batch(run_id, params=params)
    client.log_text(run_id, config.to_yaml(), "config.yaml")
    return TrackingRef(tracking_uri, experiment_id, run_id, run_name)


def record_variant(tracking: TrackingRef, variant: Variant, reused: bool) -> str:
    """The variant's child run, written in one go: its lineage as params (Variant.lineage: the same keys for every
    variant, so MLflow's compare view and parallel-coordinates plot line them up, then the settings of the step
    that made it), its test metrics and measured sparsity, what its stage trained (epochs_run, for the stages that
    train), its training history (step-indexed, for the baseline), its confusion matrix; then closed. It starts and
    ends when the stage that built the variant did, so its duration is the stage's.

    A variant an earlier run built (`reused`) is recorded all the same, tagged `cache_hit=true` with the
    Prefect flow run that built it, and timed by the recording (this run built nothing). Returns the child run's id.
    """
    client = client_for(tracking.tracking_uri)
    tags = {"variant": variant.name, "cache_hit": str(reused).lower()}
    if reused:
        tags |= {"reused_from_flow_run": variant.built_by, "reused_artifact": variant.model_path}
    # Reused, it was built by an earlier run: this run only records it (its runs sort by when this run had it).
    started, finished = (
        (seconds_to_ms(variant.started_at), seconds_to_ms(variant.finished_at)) if variant.finished_at and not reused
        else (None, None)
    )
    run_id = _child_run(tracking, variant.name, tags, start_time=started)
    when = finished or now_ms()
    values = {**variant.metrics, **variant.training, "sparsity": variant.sparsity}
    metrics = [Metric(name, logged(value), when, 0) for name, value in values.items()]
    metrics += [
        Metric(name, logged(value), when, step) for name, values in variant.history.items() for step, value in enumerate(values)
    ]
    lineage = {**flatten(variant.lineage()), "sparsity": f"{variant.sparsity:.4f}"}  # measured in the variant's own file
    params = [Param(key, f"{value:g}" if isinstance(value, float) else str(value)) for key, value in lineage.items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.log_artifact(run_id, variant.plot_png)
    client.set_terminated(run_id, end_time=finished)
    return run_id


def logged(value: float) -> float:
    """A metric as MLflow gets it: LOGGED_DIGITS significant digits, whole numbers kept whole (a size in bytes)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, max(0, LOGGED_DIGITS - 1 - math.floor(math.log10(abs(value)))))


def seconds_to_ms(seconds: float) -> int:
    return int(seconds * 1000)


def record_failure(tracking: TrackingRef, failure: Failure) -> str:
    """A FAILED child run for a variant that could not be built or evaluated, with the reason as `error`; a
    FINISHED one tagged `not_applicable` with the reason for a stage that does not apply."""
    reason = failure.reason[:5000]
    tag = {"not_applicable": reason} if failure.not_applicable else {"error": reason}
    run_id = _child_run(tracking, failure.name, {"variant": failure.name, **tag})
    outcome = RunStatus.FINISHED if failure.not_applicable else RunStatus.FAILED
    client_for(tracking.tracking_uri).set_terminated(run_id, status=RunStatus.to_string(outcome))
    return run_id


def _child_run(tracking: TrackingRef, name: str, tags: dict[str, str], start_time: int | None = None) -> str:
    run = client_for(tracking.tracking_uri).create_run(
        tracking.experiment_id, start_time=start_time, run_name=name,
        tags={MLFLOW_PARENT_RUN_TAG: tracking.parent_run_id, **tags},
    )
    return str(run.info.run_id)


def log_dataset(tracking: TrackingRef, dataset: DatasetRef, reused: bool) -> None:
    """The dataset's fingerprint, shape and class counts, on the parent run."""
    client = client_for(tracking.tracking_uri)
    run_id = tracking.parent_run_id
    client.log_batch(
        run_id,
        params=[
            Param("data.input_shape", str(list(dataset.input_shape))),
            Param("data.num_classes", str(dataset.num_classes)),
            Param("data.targets", ", ".join(dataset.target_names) or "-"),
            *(Param(f"data.{split}_size", str(size)) for split, size in dataset.split_sizes),
        ],
        tags=[RunTag("data.fingerprint", dataset.fingerprint), RunTag("data.cache_hit", str(reused).lower())],
    )
    client.log_dict(
        run_id,
        {
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "input_shape": list(dataset.input_shape),
            "class_counts": dict(dataset.class_counts),
            "split_sizes": dict(dataset.split_sizes),
            "preprocessing": dict(dataset.preprocessing),
        },
        "dataset.json",
    )


def finish_pipeline(tracking: TrackingRef, outcome: int, error: str | None = None) -> None:
    """Close the parent run and any child run still open with `outcome` (a RunStatus: FINISHED, FAILED, or
    KILLED when interrupted), with the `error` that ended it as a tag; let go of the run's lease."""
    client = client_for(tracking.tracking_uri)
    status = RunStatus.to_string(outcome)
    if error:
        client.set_tag(tracking.parent_run_id, "error", error[:5000])
    for child in _open_children(client, tracking.experiment_id, tracking.parent_run_id):
        client.set_terminated(child.info.run_id, status=status)
    client.set_terminated(tracking.parent_run_id, status=status)
    release_lease(tracking.parent_run_id)


def close_abandoned_runs(client: MlflowClient, experiment_id: str, runs_root: Path, closed_by: str) -> list[str]:
    """Mark KILLED the parent runs left RUNNING by a process that is gone, and their open children.

    A run killed outright (SIGKILL, a crash, a reboot) cannot close its own MLflow runs; without this they
    would show as running forever. A run counts as abandoned when its lease file under `runs_root` exists
    and nobody holds its lock. Runs of live processes (a concurrent run) and runs without a lease here
    (another workspace or machine) are left alone. Returns the ids of the parent runs it closed.
    """
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    closed = []
    for run in running:
        run_id = run.info.run_id
        if MLFLOW_PARENT_RUN_TAG in run.data.tags or not lease_is_abandoned(runs_root / run_id / LEASE_FILE):
            continue
        killed = RunStatus.to_string(RunStatus.KILLED)
        for child in _open_children(client, experiment_id, run_id):
            client.set_terminated(child.info.run_id, status=killed)
        client.set_tag(run_id, ABANDONED_TAG, f"its process was gone when run {closed_by} started")
        client.set_terminated(run_id, status=killed)
        (runs_root / run_id / LEASE_FILE).unlink(missing_ok=True)
        closed.append(run_id)
    return closed


def _open_children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )


def log_summary(tracking: TrackingRef, rows: Sequence[SummaryRow]) -> None:
    """The summary table, and the shipped variant's headline metrics and a description on the parent run; each
    variant's outcome (OUTCOME_TAG) and compression ratio on its child run, for the saved runs view.

    The `shipped_*` metrics put runs of one experiment side by side in the runs table: what each run
    shipped, how accurate and how much smaller than its baseline. The description links to the registered
    version, the shipped variant's child run and the Prefect flow run.
    """
    client = client_for(tracking.tracking_uri)
    run_id = tracking.parent_run_id
    client.log_text(run_id, json.dumps([row.display() for row in rows], indent=2), "summary.json")
    baseline = next((row for row in rows if row.variant == BASELINE and row.ok), None)
    shipped = next((row for row in rows if row.selected), None)
    metrics: dict[str, float | None] = {"variants_evaluated": float(sum(row.ok for row in rows))}
    if baseline is not None:
        metrics |= {
            f"baseline_{name}": getattr(baseline, name) for name in ("accuracy", "rmse", "r2", "gzip_size_bytes")
        }
    if shipped is not None:
        metrics |= {
            f"shipped_{name}": getattr(shipped, name)
            for name in (
                "accuracy", "rmse", "r2", "quality_ci_low", "quality_ci_high", "quality_delta", "quality_delta_ci_low",
                "quality_delta_ci_high", "val_quality_delta", "gzip_size_bytes", "compression_ratio", "param_bits_ratio",
                "size_bytes", "latency_ms",
            )
        }
    children = {
        child.data.tags.get("variant"): child.info.run_id
        for child in client.search_runs(
            [tracking.experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_TAG}` = '{run_id}'", max_results=10000
        )
    }
    now = now_ms()
    for row in rows:
        if (child_id := children.get(row.variant)) is not None:
            ratio = [] if row.compression_ratio is None else [Metric("compression_ratio", logged(row.compression_ratio), now, 0)]
            client.log_batch(child_id, metrics=ratio, tags=[RunTag(OUTCOME_TAG, row.outcome())])
    parent = client.get_run(run_id)
    links = run_links(
        tracking, client.get_experiment(tracking.experiment_id).name, shipped,
        children.get(shipped.variant) if shipped else None, parent.data.tags,
    )
    tags = {
        MLFLOW_NOTE_TAG: f"{links}\n\n{run_description(rows)}",
        "shipped_variant": shipped.variant if shipped else "none",
        OUTCOME_TAG: f"shipped: v{shipped.version} {shipped.variant}" if shipped else "nothing shipped",
    }
    client.log_batch(
        run_id,
        metrics=[Metric(k, logged(float(v)), now, 0) for k, v in metrics.items() if v is not None],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def run_links(
    tracking: TrackingRef, model_name: str, shipped: SummaryRow | None, shipped_run_id: str | None, tags: dict[str, str]
) -> str:
    """The parent run's links, one line of markdown the MLflow UI renders (its own pages by relative address): the
    registered version (the registered model is named like the experiment, after the config), the shipped variant's
    child run, every run side by side, and the Prefect flow run, by its page when a lasting Prefect UI shows it."""
    links = []
    if shipped is not None and shipped.version:
        links.append(f"[{model_name} version {shipped.version}](#/models/{quote(model_name)}/versions/{shipped.version})")
    if shipped is not None and shipped_run_id:
        links.append(f"shipped variant [{shipped.variant}](#/{in_training_view(run_page(tracking.experiment_id, shipped_run_id))})")
    links.append(f"[every variant side by side](#/{in_training_view(runs_table_page(tracking.experiment_id))})")
    flow_run_id = tags.get(PREFECT_FLOW_RUN_TAG)
    if flow_run_id:
        name = tracking.run_name or flow_run_id
        page = tags.get(PREFECT_FLOW_RUN_PAGE_TAG)
        links.append(
            f"Prefect flow run [{name}]({page})" if page
            else f"Prefect flow run {name} ({flow_run_id}), on a temporary Prefect server that stopped with the run"
        )
    return " · ".join(links)


def run_description(rows: Sequence[SummaryRow]) -> str:
    """The parent run's description: what shipped and why, in a sentence or two (markdown)."""
    measured = sum(row.ok for row in rows)
    failed = [row.variant for row in rows if not row.ok]
    failed_note = f" {len(failed)} failed: {', '.join(failed)}." if failed else ""
    shipped = next((row for row in rows if row.selected), None)
    if shipped is None:
        return (
            f"No variant passed the selection policy (config section `select`); nothing was registered or exported. "
            f"{measured} variants evaluated.{failed_note}"
        )
    champion = (
        "it is now the champion" if shipped.promoted
        else "the champion already was this very file" if shipped.promoted is None
        else "the champion alias stayed (see the version's `promotion_reason`)"
    )
    return (
        f"Shipped {shipped.variant} as version {shipped.version}; {champion}. "
        f"{describe_quality(shipped)}, "
        f"{shipped.gzip_size_bytes:,} bytes gzipped, {shipped.compression_ratio}x smaller than the baseline. "
        f"{measured} variants evaluated.{failed_note}"
    )


def describe_quality(row: SummaryRow) -> str:
    """The row's test quality with its 95 % interval, and its change against the baseline with the paired interval,
    in words."""
    delta = row.quality_delta or 0.0
    low, high = row.quality_delta_ci_low, row.quality_delta_ci_high
    if row.accuracy is not None:
        paired = "" if low is None or high is None else f", 95 % paired interval {low * 100:+.2f} to {high * 100:+.2f} pt"
        own = "" if row.quality_ci_low is None else f" (95 % interval {row.quality_ci_low:.4f} to {row.quality_ci_high:.4f})"
        return f"Test accuracy {row.accuracy:.4f}{own}, {delta * 100:+.2f} pt against the baseline{paired}"
    paired = "" if low is None or high is None else f", 95 % paired interval {low:+.4g} to {high:+.4g}"
    return f"Test RMSE {row.rmse:.4g}, R2 {row.r2:.4f} ({delta:+.4g} against the baseline{paired})"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 2}} -> {"train.epochs": 2}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_comparison(tracking: TrackingRef, paths: Sequence[Path], reasons: dict[str, str]) -> None:
    """The variant comparison's files and why each variant was or was not eligible, under comparison/ on the
    parent run."""
    client = client_for(tracking.tracking_uri)
    for path in paths:
        client.log_artifact(tracking.parent_run_id, str(path), "comparison")
    client.log_dict(tracking.parent_run_id, reasons, "comparison/selection.json")


def tag_parent(tracking: TrackingRef, tags: dict[str, str]) -> None:
    client_for(tracking.tracking_uri).log_batch(tracking.parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
