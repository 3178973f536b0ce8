"""MLflow tracking: one parent run per flow run, one nested child run per model variant.

Prefect may run tasks in worker threads, and MLflow's "active run" is thread-local, so every call
here addresses runs by id through an `MlflowClient` instead of relying on `mlflow.active_run()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.entities.model_registry import ModelVersion

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.files import atomic_path
from shrinkflow.core.variants import BASELINE, Failure, SummaryRow, Variant

MLFLOW_PARENT_RUN_TAG = "mlflow.parentRunId"
# What the MLflow UI shows as a run's, an experiment's or a model version's description (markdown).
MLFLOW_NOTE_TAG = "mlflow.note.content"
# MLflow 3 opens an experiment in its GenAI view unless told it holds model training runs.
MLFLOW_EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_EXPERIMENT = "custom_model_development"
MLFLOW_UI_WORKFLOW = "workflowType=machine_learning"
ABANDONED_TAG = "abandoned"
# <workspace>/runs/<parent run id>/lease is locked (flock) by the process running that pipeline run: the
# kernel drops the lock when the process dies, however it dies, so a later run can tell the run was abandoned.
LEASE_FILE = "lease"
# The runs this process holds a lease on: parent run id -> open file descriptor of the locked lease.
_HELD_LEASES: dict[str, int] = {}


@dataclass(frozen=True)
class TrackingRef:
    """How to reach this flow run's MLflow parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def client(self) -> MlflowClient:
        return client_for(self.tracking_uri)

    def ui_links(self) -> str | None:
        """Markdown links to the parent run and to the experiment's runs in the MLflow UI, when tracking goes
        to a server (a SQLite file has no UI)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        run = mlflow_ui_url(self.tracking_uri, f"experiments/{self.experiment_id}/runs/{self.parent_run_id}")
        runs = mlflow_ui_url(self.tracking_uri, f"experiments/{self.experiment_id}/runs")
        return f"[This run in MLflow]({run}) · [Every run of this model, side by side]({runs})"


def mlflow_ui_url(server: str, page: str = "experiments") -> str:
    """A page of the MLflow UI in its model-training view. MLflow 3.17's UI opens in its GenAI view unless the
    address says otherwise (a browser remembers the choice only once the user has switched it by hand)."""
    return f"{server.rstrip('/')}/#/{page}?{MLFLOW_UI_WORKFLOW}"


def client_for(tracking_uri: str) -> MlflowClient:
    """A client of the tracking store at `tracking_uri`, which is also the model registry."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def prepare_tracking_store(tracking_uri: str) -> None:
    """Import what MLflow needs for a database store (SQLAlchemy's models: over a second) ahead of time, so
    a caller can do it while it waits anyway. MLflow imports it on first use otherwise."""
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


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
) -> TrackingRef:
    """Open the parent run, named `run_name` (the Prefect flow run's name): the config as params, the
    resolved YAML as an artifact, tags. This process holds the run's lease under `runs_root` until
    `finish_pipeline`; runs of this experiment whose lease nobody holds any more are closed first.
    """
    with _store_creation_lock(tracking_uri):  # the client creates (and migrates) a new store as it starts
        client = client_for(tracking_uri)
        experiment_id = ensure_experiment(client, config.name, artifact_root)
    tags = {
        "shrinkflow.config_hash": config.config_hash(),
        MLFLOW_NOTE_TAG: f"Running: a shrinkflow pipeline run of {config.name}.",
    }
    if prefect_flow_run_id:
        tags["prefect.flow_run_id"] = prefect_flow_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    _take_lease(runs_root / run_id)
    close_abandoned_runs(client, experiment_id, runs_root, closed_by=run_id)
    params = [Param(key, str(value)) for key, value in flatten(config.model_dump(mode="json", exclude={"sweep"})).items()]
    client.log_batch(run_id, params=params)
    client.log_text(run_id, config.to_yaml(), "config.yaml")
    return TrackingRef(tracking_uri, experiment_id, run_id)


@contextmanager
def fluent_mlflow(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (log_model, register_model, "models:/" URIs) at `tracking_uri` for
    the block only. `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which would otherwise
    redirect every later run in this process (Workspace.tracking_uri reads it)."""
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None resets it (MLflow's hint says str)
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store across processes (two runs starting at once on a new workspace
    would otherwise both create MLflow's tables, and one would fail), and create a new store as a copy of an
    empty one: MLflow's migrations take over a second and a half, copying the result a few milliseconds."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    with _file_lock(database.with_name(database.name + ".lock")):
        if not database.exists():
            _copy_empty_store(database)
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _copy_empty_store(database: Path) -> None:
    """A new SQLite store: a copy of an empty store this version of MLflow made (and keeps in the user's cache)."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shrinkflow"
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    with _file_lock(template.with_name(template.name + ".lock")):
        if not template.exists():
            with atomic_path(template) as partial:
                client_for(f"sqlite:///{partial}").search_experiments()  # creating the client migrates the store
    with atomic_path(database) as partial:
        shutil.copyfile(template, partial)
        # The Default experiment, which MLflow creates with the store, keeps its artifacts beside the store.
        with contextlib.closing(sqlite3.connect(partial)) as connection, connection:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                ((database.parent / "mlartifacts" / "0").as_uri(),),
            )


def variant_params(variant: Variant) -> dict[str, str]:
    """How a variant was made, as MLflow params: the same keys for every variant, so MLflow's compare
    view and parallel-coordinates plot line variants up, plus the settings of the step that made it."""
    return {
        "parent_variant": variant.parent or "none",
        "quantization": variant.quantization,
        "runtime": variant.runtime,
        "target_sparsity": f"{variant.target_sparsity:g}",
        "clusters": str(variant.clusters),
        "sparsity": f"{variant.sparsity:.4f}",  # measured in the variant's own file
        **{f"step.{key}": str(value) for key, value in variant.settings},
    }


def record_variant(tracking: TrackingRef, variant: Variant, reused: bool) -> str:
    """The variant's child run, written in one go: its lineage as params, its test metrics and measured
    sparsity, its training history (step-indexed, for the baseline), its confusion matrix; then closed.

    A variant an earlier run built (`reused`) is recorded all the same, tagged `cache_hit=true` with the
    Prefect flow run that built it. Returns the child run's id.
    """
    client = tracking.client()
    tags = {"variant": variant.name, "cache_hit": str(reused).lower()}
    if reused:
        tags |= {"reused_from_flow_run": variant.built_by, "reused_artifact": variant.model_path}
    run_id = _child_run(tracking, variant.name, tags)
    now = _now_ms()
    metrics = [Metric(name, value, now, 0) for name, value in {**variant.metrics, **variant.training}.items()]
    metrics.append(Metric("sparsity", variant.sparsity, now, 0))
    metrics += [Metric(name, value, now, step) for name, values in variant.history.items() for step, value in enumerate(values)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in variant_params(variant).items()])
    client.log_artifact(run_id, variant.plot_png)
    client.set_terminated(run_id)
    return run_id


def record_failure(tracking: TrackingRef, failure: Failure) -> str:
    """A FAILED child run for a variant that could not be built or evaluated, with the reason as `error`; a
    FINISHED one tagged `not_applicable` with the reason for a stage that does not apply."""
    reason = failure.reason[:5000]
    tag = {"not_applicable": reason} if failure.not_applicable else {"error": reason}
    run_id = _child_run(tracking, failure.name, {"variant": failure.name, **tag})
    outcome = RunStatus.FINISHED if failure.not_applicable else RunStatus.FAILED
    tracking.client().set_terminated(run_id, status=RunStatus.to_string(outcome))
    return run_id


def _child_run(tracking: TrackingRef, name: str, tags: dict[str, str]) -> str:
    run = tracking.client().create_run(
        tracking.experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_TAG: tracking.parent_run_id, **tags}
    )
    return str(run.info.run_id)


def log_dataset(tracking: TrackingRef, dataset: DatasetRef, reused: bool) -> None:
    """The dataset's fingerprint, shape and class counts, on the parent run."""
    client = tracking.client()
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


def log_and_register_keras_model(
    tracking: TrackingRef, run_id: str, keras_path: str, registered_name: str, tags: dict[str, str]
) -> ModelVersion:
    """Log the Keras model with the `mlflow.tensorflow` flavor and register it as a new version."""
    import mlflow
    import mlflow.tensorflow
    import numpy as np
    import tensorflow as tf
    import tf_keras
    from mlflow.models import infer_signature

    from shrinkflow.core.training import load_keras_model

    model = load_keras_model(keras_path)
    example = np.zeros((1, *model.input_shape[1:]), dtype=np.float32)
    signature = infer_signature(example, model(example, training=False).numpy())
    with fluent_mlflow(tracking.tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.tensorflow.log_model(
            model,
            name="model",
            signature=signature,
            # Listing requirements skips MLflow's slow inference of them in a subprocess.
            pip_requirements=[f"tensorflow=={tf.__version__}", f"tf-keras=={tf_keras.__version__}"],
        )
    with fluent_mlflow(tracking.tracking_uri):
        version = mlflow.register_model(info.model_uri, registered_name, tags=tags)
    return tracking.client().get_model_version(registered_name, version.version)


def finish_pipeline(tracking: TrackingRef, outcome: int, error: str | None = None) -> None:
    """Close the parent run and any child run still open with `outcome` (a RunStatus: FINISHED, FAILED, or
    KILLED when interrupted), with the `error` that ended it as a tag; let go of the run's lease."""
    client = tracking.client()
    status = RunStatus.to_string(outcome)
    if error:
        client.set_tag(tracking.parent_run_id, "error", error[:5000])
    for child in _open_children(client, tracking.experiment_id, tracking.parent_run_id):
        client.set_terminated(child.info.run_id, status=status)
    client.set_terminated(tracking.parent_run_id, status=status)
    _release_lease(tracking.parent_run_id)


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
        if MLFLOW_PARENT_RUN_TAG in run.data.tags or not _lease_is_abandoned(runs_root / run_id / LEASE_FILE):
            continue
        killed = RunStatus.to_string(RunStatus.KILLED)
        for child in _open_children(client, experiment_id, run_id):
            client.set_terminated(child.info.run_id, status=killed)
        client.set_tag(run_id, ABANDONED_TAG, f"its process was gone when run {closed_by} started")
        client.set_terminated(run_id, status=killed)
        (runs_root / run_id / LEASE_FILE).unlink(missing_ok=True)
        closed.append(run_id)
    return closed


def _take_lease(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    _HELD_LEASES[run_dir.name] = descriptor


def _release_lease(run_id: str) -> None:
    descriptor = _HELD_LEASES.pop(run_id, None)
    if descriptor is not None:
        os.close(descriptor)  # closing drops the lock


def _lease_is_abandoned(lease: Path) -> bool:
    """Whether `lease` exists and no process holds its lock (flock locks belong to an open file, so this
    tells even a run of this very process apart)."""
    try:
        descriptor = os.open(lease, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True


def _open_children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )


def log_summary(tracking: TrackingRef, rows: Sequence[SummaryRow]) -> None:
    """The summary table, and the shipped variant's headline metrics and a description on the parent run.

    The `shipped_*` metrics put runs of one experiment side by side in the runs table: what each run
    shipped, how accurate and how much smaller than its baseline.
    """
    client = tracking.client()
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
                "accuracy", "rmse", "r2", "quality_delta", "gzip_size_bytes", "compression_ratio", "param_bits_ratio",
                "size_bytes", "latency_ms",
            )
        }
    tags = {MLFLOW_NOTE_TAG: run_description(rows), "shipped_variant": shipped.variant if shipped else "none"}
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items() if v is not None],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


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
    champion = "it is now the champion" if shipped.promoted else "the champion alias stayed (see the version's `promotion_reason`)"
    return (
        f"Shipped {shipped.variant} as version {shipped.version}; {champion}. "
        f"{describe_quality(shipped)}, "
        f"{shipped.gzip_size_bytes:,} bytes gzipped, {shipped.compression_ratio}x smaller than the baseline. "
        f"{measured} variants evaluated.{failed_note}"
    )


def describe_quality(row: SummaryRow) -> str:
    """The row's quality and its change against the baseline, in words."""
    if row.accuracy is not None:
        return f"Accuracy {row.accuracy:.4f} ({(row.quality_delta or 0) * 100:+.2f} pt against the baseline)"
    return f"RMSE {row.rmse:.4g}, R2 {row.r2:.4f} ({row.quality_delta or 0:+.4g} against the baseline)"


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


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
