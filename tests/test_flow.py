"""The whole pipeline as a real Prefect flow, tracked in a real MLflow SQLite store."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from prefect.client.schemas.filters import LogFilter

from shrinkflow.core.evaluation import METRIC_NAMES
from shrinkflow.core.export import MANIFEST_NAME, sha256_file
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking.runs import logged
from tests.conftest import REPO, subprocess_env, tiny_digits_config


@pytest.fixture(scope="module")
def finished_run(prefect_harness, tmp_path_factory):
    """One tiny digits run, shared by the read-back tests below."""
    from shrinkflow.flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("flow") / "workspace"
    config = tiny_digits_config(**{"prune.epochs": 2, "quantize.qat_epochs": 1})
    rows = pipeline(config, workspace=str(root))
    workspace = Workspace(root)
    client = MlflowClient(tracking_uri=workspace.tracking_uri(), registry_uri=workspace.tracking_uri())
    return config, rows, workspace, client


def parent_and_children(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


@contextlib.contextmanager
def prefect_client():
    """A client of the session's Prefect test server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


# MLflow gets metrics to 4 significant digits (shrinkflow.tracking.runs.logged): an accuracy is within this of its value.
LOGGED_ROUNDING = 5e-5

VARIANTS = {
    "baseline", "pruned", "baseline-dynamic", "baseline-float16", "baseline-int8", "baseline-qat",
    "pruned-dynamic", "pruned-float16", "pruned-int8", "pruned-qat",
}


def selected_row(rows):
    [row] = [row for row in rows if row.selected]
    return row


def test_flow_returns_a_summary_row_per_variant(finished_run) -> None:
    _, rows, _, _ = finished_run
    assert {row.variant for row in rows} == VARIANTS
    assert {row.status for row in rows} == {"ok"}
    baseline = next(row for row in rows if row.variant == "baseline")
    assert 0.5 < baseline.accuracy <= 1.0 and baseline.compression_ratio == 1.0
    chosen = selected_row(rows)
    assert (chosen.version, chosen.promoted) == ("1", True)
    assert chosen.accuracy >= baseline.accuracy - 0.01
    assert chosen.compression_ratio > 1.0
    # The tables show the test interval and the paired difference's interval; the baseline's difference is 0.
    cells = chosen.display()
    assert cells["ci"].count("..") == 1 and cells["delta_ci"].count("..") == 1
    assert (baseline.quality_delta, baseline.quality_delta_ci_low, baseline.quality_delta_ci_high) == (0.0, 0.0, 0.0)


def test_mlflow_parent_and_child_runs(finished_run) -> None:
    config, _, _, client = finished_run
    parent, children = parent_and_children(client, config.name)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.epochs"] == "2"
    assert parent.data.params["model.family"] == "cnn"
    assert parent.data.tags["prefect.flow_run_id"]
    assert len(parent.data.tags["data.fingerprint"]) == 64
    assert parent.data.params["data.num_classes"] == "10"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "dataset.json", "summary.json", "comparison"} <= artifacts
    comparison = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert comparison == {f"comparison/{n}" for n in ("comparison.csv", "comparison.md", "pareto.png", "selection.json")}

    by_variant = {child.data.tags["variant"]: child for child in children}
    assert set(by_variant) == VARIANTS
    honest = {
        "val_accuracy", "accuracy_ci_low", "accuracy_ci_high", "quality_delta", "quality_delta_ci_low",
        "quality_delta_ci_high", "val_quality_delta", "val_quality_delta_ci_low", "val_quality_delta_ci_high",
    }
    for name, child in by_variant.items():
        assert child.info.status == "FINISHED"
        assert set(METRIC_NAMES) | honest <= set(child.data.metrics), name
        metrics = child.data.metrics
        assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"], name
        assert metrics["quality_delta_ci_low"] <= metrics["quality_delta"] <= metrics["quality_delta_ci_high"], name
        # How each variant was made is in params, the same keys for all, so MLflow's compare view lines them up.
        assert {"sparsity", "target_sparsity", "quantization", "parent_variant"} <= set(child.data.params), name
    params = {name: child.data.params for name, child in by_variant.items()}
    assert (params["pruned-int8"]["parent_variant"], params["pruned-int8"]["quantization"]) == ("pruned", "int8")
    assert (params["baseline"]["parent_variant"], params["baseline"]["quantization"]) == ("none", "none")
    assert params["pruned-int8"]["target_sparsity"] == params["pruned"]["target_sparsity"] == "0.8"
    assert params["baseline-int8"]["target_sparsity"] == "0"
    assert params["pruned"]["step.epochs"] == "2" and params["pruned-qat"]["step.preserve_sparsity"] == "True"
    assert float(params["pruned"]["sparsity"]) == pytest.approx(0.8, abs=0.02)
    assert float(params["pruned-qat"]["sparsity"]) > 0.7  # pruning-preserving QAT
    assert float(params["baseline"]["sparsity"]) < 0.05
    epoch_history = client.get_metric_history(by_variant["baseline"].info.run_id, "epoch/val_loss")
    assert [m.step for m in epoch_history] == [0, 1]
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(by_variant["baseline"].info.run_id)}


def test_the_mlflow_runs_say_what_shipped(finished_run) -> None:
    config, rows, _, client = finished_run
    parent, _ = parent_and_children(client, config.name)
    chosen = selected_row(rows)
    # Named after its Prefect flow run: distinct, readable, and the same name in both UIs.
    with prefect_client() as prefect:
        flow_run = prefect.read_flow_run(parent.data.tags["prefect.flow_run_id"])
    assert parent.info.run_name == flow_run.name
    # The shipped variant's headline metrics sit on the parent, so runs of one experiment compare at a glance.
    metrics = parent.data.metrics
    assert metrics["shipped_accuracy"] == pytest.approx(chosen.accuracy)
    assert metrics["shipped_quality_ci_low"] <= chosen.accuracy <= metrics["shipped_quality_ci_high"]
    assert metrics["shipped_quality_delta_ci_low"] <= metrics["shipped_quality_delta"] <= metrics["shipped_quality_delta_ci_high"]
    assert metrics["shipped_compression_ratio"] == pytest.approx(chosen.compression_ratio) and chosen.compression_ratio > 1
    assert metrics["shipped_gzip_size_bytes"] == chosen.gzip_size_bytes
    assert metrics["baseline_accuracy"] == pytest.approx(next(r.accuracy for r in rows if r.variant == "baseline"))
    assert metrics["variants_evaluated"] == len(VARIANTS)
    assert parent.data.tags["shipped_variant"] == chosen.variant
    description = parent.data.tags["mlflow.note.content"]
    assert f"Shipped {chosen.variant} as version 1; it is now the champion" in description
    assert f"{chosen.compression_ratio}x smaller" in description
    # The experiment opens in MLflow's model-training view and says what its runs are.
    experiment = client.get_experiment_by_name(config.name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "child run" in experiment.tags["mlflow.note.content"]
    # The registry describes the model and the version.
    assert "champion" in client.get_registered_model(config.name).description
    version_description = client.get_model_version(config.name, "1").description
    assert chosen.variant in version_description and parent.info.run_id in version_description


def test_mlflow_reads_at_a_glance(finished_run) -> None:
    """The runs table's saved view has what it shows on every child run; the metrics are rounded; epochs_run is
    where a stage trained; a child run lasts as long as its stage; the parent links to the version, the shipped
    run and the Prefect flow run (here a temporary server, which has no UI)."""
    config, rows, _, client = finished_run
    parent, children = parent_and_children(client, config.name)
    chosen = selected_row(rows)
    by_variant = {child.data.tags["variant"]: child for child in children}
    experiment = client.get_experiment(parent.info.experiment_id)
    view = json.loads(json.loads(experiment.tags["mlflow.sharedViewState.shrinkflow-decisive"])["state"])
    for name, child in by_variant.items():
        shown = {column for column in view["selectedColumns"] if column.startswith("metrics.")}
        assert {f"metrics.`{metric}`" for metric in child.data.metrics} >= shown, name
        assert child.data.tags["outcome"] == ("shipped: v1" if name == chosen.variant else "eligible" if next(
            row.eligible for row in rows if row.variant == name) else "not eligible")
        assert all(value == logged(value) for value in child.data.metrics.values()), name
    assert parent.data.tags["outcome"] == f"shipped: v1 {chosen.variant}"
    epochs = {name: child.data.metrics.get("epochs_run") for name, child in by_variant.items()}
    assert epochs == {
        "baseline": 2, "pruned": 2, "baseline-qat": 1, "pruned-qat": 1,  # train.epochs, prune.epochs, quantize.qat_epochs
        **{f"{source}-{mode}": None for source in ("baseline", "pruned") for mode in ("dynamic", "float16", "int8")},
    }
    baseline = by_variant["baseline"]
    assert (baseline.info.end_time - baseline.info.start_time) / 1000 >= baseline.data.metrics["train_seconds"]
    # The parent lists the registered version: the shipped model is one of its inputs.
    version = client.get_model_version(config.name, "1")
    [model_input] = client.get_run(parent.info.run_id).inputs.model_inputs
    assert client.get_logged_model(model_input.model_id).source_run_id == version.run_id == by_variant[chosen.variant].info.run_id
    note = parent.data.tags["mlflow.note.content"]
    assert f"[{config.name} version 1](#/models/{config.name}/versions/1)" in note
    assert f"[{chosen.variant}](#/experiments/{experiment.experiment_id}/runs/{version.run_id}?workflowType=machine_learning)" in note
    assert f"#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=shrinkflow-decisive" in note
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    assert f"Prefect flow run {parent.info.run_name} ({flow_run_id}), on a temporary Prefect server" in note
    assert f"Selected by pipeline run [{parent.info.run_name}](#/experiments/" in version.description


def test_the_prefect_flow_run_logs_tell_the_story(finished_run) -> None:
    config, rows, _, client = finished_run
    parent, _ = parent_and_children(client, config.name)
    wanted = {
        "an epoch's metrics": lambda m: m.startswith("epoch 2/2: loss ") and "val_accuracy" in m,
        "each variant's result": lambda m: all(any(x.startswith(f"{v}: accuracy ") for x in messages) for v in VARIANTS),
        "why each variant was or was not eligible": lambda m: m.startswith("selection: baseline: "),
        "the selection": lambda m: m.startswith(f"selection: {selected_row(rows).variant}: selected: lowest gzip_size_bytes"),
        "the registration": lambda m: m.startswith(f"registered {selected_row(rows).variant} as version 1"),
        "the export path": lambda m: m.startswith("exported version 1") and str(Path("exports") / config.name / "1") in m,
        "the gate decision": lambda m: m.startswith("champion gate: version 1 is now the champion"),
        "the headline and the compact table": lambda m: m.startswith(f"{config.name}: shipped ") and "compression_ratio" in m,
    }
    deadline = time.monotonic() + 60  # logs reach the server in batches
    while True:
        with prefect_client() as prefect:
            logs = prefect.read_logs(LogFilter(flow_run_id={"any_": [parent.data.tags["prefect.flow_run_id"]]}))
        messages = [log.message for log in logs]
        missing = [what for what, found in wanted.items() if not any(found(m) for m in messages)]
        # The flow's own completion line comes last, maybe in a later batch.
        if not any(log.message.startswith("Finished in state Completed(") for log in logs if not log.task_run_id):
            missing.append("the flow's own completion line")
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert missing == [], "\n".join(messages)
    # Without the per-task "Finished in state Completed()" lines (shrinkflow.core.runtime's filter); the flow's own stays.
    assert not [log for log in logs if log.task_run_id and log.message.startswith("Finished in state Completed(")]


def test_registered_version_is_the_selected_variant_and_predicts(finished_run) -> None:
    import mlflow.pyfunc

    config, rows, workspace, client = finished_run
    _, children = parent_and_children(client, config.name)
    chosen = selected_row(rows)
    [chosen_run] = [c for c in children if c.data.tags["variant"] == chosen.variant]
    version = client.get_model_version(config.name, "1")
    assert version.run_id == chosen_run.info.run_id
    assert version.tags["variant"] == chosen.variant
    assert version.tags["config_hash"] == config.config_hash()
    assert {"sparsity", "quantization", "accuracy", "size_bytes", "gzip_size_bytes"} <= set(version.tags)
    assert version.tags["promoted"] == "true"
    assert str(client.get_model_version_by_alias(config.name, "champion").version) == "1"
    from shrinkflow.tracking.store import fluent_mlflow

    with fluent_mlflow(workspace.tracking_uri()):
        model = mlflow.pyfunc.load_model(f"models:/{config.name}/1")
    answers = model.predict(np.zeros((3, 8, 8)))  # raw pixels, as the digits hold them (tests/test_serving.py serves them)
    assert list(answers.columns) == ["label", *map(str, range(10))]
    np.testing.assert_allclose(answers[list(map(str, range(10)))].sum(axis=1), 1.0, atol=0.02)


def test_export_layout_and_manifest(finished_run) -> None:
    config, rows, workspace, client = finished_run
    parent, children = parent_and_children(client, config.name)
    version_dir = workspace.exports / config.name / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "model.keras").is_file()
    assert (version_dir / "variants" / "pruned" / "saved_model.pb").is_file()
    manifest = json.loads((version_dir / MANIFEST_NAME).read_text())
    assert manifest["mlflow_run_id"] == parent.info.run_id
    assert manifest["config_hash"] == config.config_hash()
    assert manifest["selected_variant"] == selected_row(rows).variant
    assert set(manifest["variants"]) == VARIANTS
    lineage = manifest["variants"]["pruned-qat"]
    assert lineage["parent_variant"] == "pruned" and lineage["settings"]["preserve_sparsity"] is True
    assert manifest["variants"]["pruned"]["settings"]["target_sparsity"] == 0.8
    run_accuracy = {c.data.tags["variant"]: c.data.metrics["accuracy"] for c in children}
    for name, entry in manifest["variants"].items():
        assert (version_dir / entry["file"]).is_file()
        assert entry["metrics"]["accuracy"] == pytest.approx(run_accuracy[name], abs=LOGGED_ROUNDING)
    shipped = manifest["metrics"]  # the shipped variant's: test quality with its interval, the paired delta, validation
    assert shipped["accuracy_ci_low"] <= shipped["accuracy"] <= shipped["accuracy_ci_high"]
    assert {"val_accuracy", "quality_delta_ci_low", "quality_delta_ci_high", "val_quality_delta"} <= set(shipped)
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert {"saved_model.pb", "model.keras", "variants/pruned-int8.tflite"} <= set(listed)
    for path, entry in listed.items():
        assert sha256_file(version_dir / path) == entry["sha256"]
        assert (version_dir / path).stat().st_size == entry["size_bytes"]
    assert not [p for p in (workspace.exports / config.name).iterdir() if p.name.startswith(".")]


def test_saved_model_in_a_fresh_process_reproduces_the_logged_accuracy(finished_run) -> None:
    config, _, workspace, client = finished_run
    _, children = parent_and_children(client, config.name)
    [baseline] = [c for c in children if c.data.tags["variant"] == "baseline"]
    script = f"""
import json, sys
import shrinkflow, numpy as np, tensorflow as tf
from shrinkflow.core.config import load_config
from shrinkflow.core.data import prepare_dataset
from tests.datasets import load_splits
config = load_config({str(REPO / 'configs' / 'digits_cnn.yaml')!r})
splits = load_splits(prepare_dataset(config.data, {str(workspace.datasets)!r}))
serve = tf.saved_model.load({str(workspace.exports / config.name / '1')!r}).signatures["serving_default"]
probabilities = serve(inputs=tf.constant(splits.x_test))["probabilities"].numpy()
print(json.dumps(float((probabilities.argmax(1) == splits.y_test).mean())))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(), check=True, cwd=REPO
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == pytest.approx(baseline.data.metrics["accuracy"], abs=LOGGED_ROUNDING)


def test_a_worse_model_is_registered_but_does_not_take_the_champion_alias(finished_run) -> None:
    from shrinkflow.flows.pipeline import pipeline

    config, _, workspace, client = finished_run
    worse = config.model_copy(
        update={
            "train": config.train.model_copy(update={"epochs": 1, "learning_rate": 1e-6}),
            "prune": config.prune.model_copy(update={"enabled": False}),
            "quantize": config.quantize.model_copy(update={"modes": ()}),
        }
    )
    rows = pipeline(worse, workspace=str(workspace.root))
    assert selected_row(rows).promoted is False
    version = client.get_model_version(config.name, "2")
    assert version.tags["promoted"] == "false"
    # The gate's paired test of the new version against the champion on this run's test rows is recorded.
    assert "shown worse than" in version.tags["promotion_reason"]
    assert version.tags["gate_test"] == "McNemar's exact test" and float(version.tags["gate_p_value"]) < 0.05
    assert float(version.tags["gate_difference"]) < -0.01 and ".." in version.tags["gate_difference_interval"]
    assert str(client.get_model_version_by_alias(config.name, "champion").version) == "1"
    assert (workspace.exports / config.name / "2" / MANIFEST_NAME).is_file()


def test_a_failing_conversion_is_isolated(prefect_harness, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: float16 conversion raises; every other variant still completes and ships."""
    from shrinkflow.flows.pipeline import pipeline
    from shrinkflow.core import compression

    real_convert = compression.convert_to_tflite

    def convert_failing_float16(keras_path, step, *args, **kwargs):
        if step.mode == "float16":
            raise RuntimeError("injected converter failure")
        return real_convert(keras_path, step, *args, **kwargs)

    monkeypatch.setattr(compression, "convert_to_tflite", convert_failing_float16)
    config = tiny_digits_config(**{"name": "isolated", "prune.enabled": "false", "quantize.modes": "[dynamic, float16]"})
    rows = pipeline(config, workspace=str(workspace))
    status = {row.variant: row.status for row in rows}
    assert status["baseline"] == status["baseline-dynamic"] == "ok"
    assert status["baseline-float16"].startswith("failed") and "injected converter failure" in status["baseline-float16"]
    assert selected_row(rows).version == "1"
    ws = Workspace(workspace)
    client = MlflowClient(tracking_uri=ws.tracking_uri(), registry_uri=ws.tracking_uri())
    parent, children = parent_and_children(client, "isolated")
    assert parent.info.status == "FINISHED"
    failed = {c.data.tags["variant"]: c for c in children if c.info.status == "FAILED"}
    assert set(failed) == {"baseline-float16"}
    assert "injected converter failure" in failed["baseline-float16"].data.tags["error"]
    manifest = json.loads((ws.exports / "isolated" / "1" / MANIFEST_NAME).read_text())
    assert set(manifest["variants"]) == {"baseline", "baseline-dynamic"}


@pytest.mark.parametrize(
    ("name", "overrides", "error"),
    [
        ("missing-data", {"data.source": "missing.csv", "model.family": "mlp"}, "missing.csv"),
        ("cnn-on-table", {"data.source": str(REPO / "examples" / "wine.csv"), "data.label_column": "cultivar"}, "cnn needs image data"),
    ],
)
def test_a_failed_run_marks_mlflow_failed_and_ships_nothing(
    prefect_harness, workspace: Path, name: str, overrides: dict[str, str], error: str
) -> None:
    from shrinkflow.flows.pipeline import pipeline
    from shrinkflow.core.errors import UserError

    config = tiny_digits_config(name=name, **overrides)
    with pytest.raises(UserError, match=error):
        pipeline(config, workspace=str(workspace))
    ws = Workspace(workspace)
    client = MlflowClient(tracking_uri=ws.tracking_uri(), registry_uri=ws.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    [parent] = runs  # no variant was built: the parent run says why
    assert parent.info.status == "FAILED" and error in parent.data.tags["error"]
    assert not (ws.exports / name).exists()
    assert client.search_model_versions(f"name='{name}'") == []
