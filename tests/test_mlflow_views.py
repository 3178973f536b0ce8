"""What the MLflow UI shows at a glance: the version descriptions, the experiment's saved runs view, rounded metrics,
and the Pareto chart. No training: variants are described from their steps, runs go to a SQLite store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib.image
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from shrinkflow.core.config import load_config
from shrinkflow.core.names import Quantization
from shrinkflow.core.report import byte_size, plot_pareto
from shrinkflow.core.selection import pareto_front
from shrinkflow.core.steps import OnnxStep, Steps
from shrinkflow.core.summary import SummaryRow
from shrinkflow.core.variants import Variant
from shrinkflow.tracking import runs
from shrinkflow.tracking.registry import version_description
from shrinkflow.tracking.runs import TrackingRef, logged
from shrinkflow.tracking.ui import RUNS_VIEW_TAG
from tests.conftest import REPO, tiny_digits_config

METRICS = {
    "accuracy": 0.95, "f1_macro": 0.94, "size_bytes": 9000.0, "gzip_size_bytes": 6000.0, "latency_ms": 0.01,
    "batch64_samples_per_s": 90000.0, "params": 2410.0,
}


def test_each_version_description_tells_how_its_variant_was_made_and_names_the_run() -> None:
    steps = Steps.from_config(load_config(REPO / "configs" / "digits_cnn.yaml"))  # a student, from scratch too
    distilled, scratch = steps.students
    assert steps.prune is not None and steps.cluster is not None
    [qat] = [step for step in steps.quantize if step.mode is Quantization.QAT]
    [int8] = [step for step in steps.quantize if step.mode is Quantization.INT8]
    chain = dict(target_sparsity=steps.prune.target_sparsity, clusters=steps.cluster.clusters)
    variants = {
        "baseline": Variant("baseline", "m.keras", METRICS, "", step=steps.train),
        "student-1": Variant("student-1", "m.keras", METRICS, "", parent="baseline", step=distilled),
        "student-1-scratch": Variant("student-1-scratch", "m.keras", METRICS, "", step=scratch),
        "student-1-pruned": Variant(
            "student-1-pruned", "m.keras", METRICS, "", parent="student-1", step=steps.prune, target_sparsity=0.8
        ),
        "student-1-pruned-clustered-qat": Variant(
            "student-1-pruned-clustered-qat", "m.tflite", METRICS, "", parent="student-1-pruned-clustered", step=qat,
            quantization=Quantization.QAT, **chain,
        ),
        "pruned-int8": Variant("pruned-int8", "m.tflite", METRICS, "", parent="pruned", step=int8, quantization=Quantization.INT8),
        "pruned-int8-onnx": Variant("pruned-int8-onnx", "m.onnx", METRICS, "", parent="pruned-int8", step=OnnxStep(15)),
    }
    described = {
        name: version_description(variant, "0f3a", run_name="brave-otter", experiment_id="7")
        for name, variant in variants.items()
    }
    assert "the baseline, trained from the labels" in described["baseline"]
    assert "student 1 (2,410 parameters), distilled from baseline's soft targets" in described["student-1"]
    assert "trained from the labels alone, without a teacher" in described["student-1-scratch"]
    assert "baseline" not in described["student-1-scratch"]
    sparsity = f"{steps.prune.target_sparsity:.0%}"
    assert f"a copy of student-1 pruned to {sparsity} zero weights" in described["student-1-pruned"]
    assert (
        "TFLite file, run in LiteRT; student-1-pruned-clustered fine-tuned with quantization-aware training, keeping its "
        "zeros and clusters" in described["student-1-pruned-clustered-qat"]
    )
    assert "pruned converted with full-integer quantization" in described["pruned-int8"]
    assert "ONNX file, run in ONNX Runtime; pruned-int8 converted to ONNX (opset 15)" in described["pruned-int8-onnx"]
    # The pipeline run by its name, linked to its page, and its id.
    run_link = "Selected by pipeline run [brave-otter](#/experiments/7/runs/0f3a?workflowType=machine_learning) (0f3a)."
    assert all(text.endswith(run_link) for text in described.values()), described


def test_the_experiment_opens_its_runs_in_a_view_of_the_decisive_columns(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)

    def view_of(config_path: Path | None, run_name: str) -> dict:
        config = tiny_digits_config() if config_path is None else load_config(config_path)
        tracking = runs.start_parent_run(uri, config, tmp_path / "artifacts", tmp_path / "runs", run_name, None)
        runs.finish_pipeline(tracking, RunStatus.FINISHED)
        envelope = json.loads(client.get_experiment(tracking.experiment_id).tags[RUNS_VIEW_TAG])
        return json.loads(envelope["state"])

    classification = view_of(None, "brave-otter")
    columns = classification["selectedColumns"]
    assert columns[:6] == [
        "tags.`outcome`", "metrics.`accuracy`", "metrics.`val_quality_delta`", "metrics.`gzip_size_bytes`",
        "metrics.`compression_ratio`", "metrics.`latency_ms`",
    ]
    assert {"metrics.`accuracy_ci_low`", "metrics.`accuracy_ci_high`"} <= set(columns)
    # The run names' column is wide enough for the longest variant names, and the widths apply (the UI applies
    # widths only to the columns its order lists).
    assert classification["columnWidths"]["attributes.`Run Name`"] >= 300
    assert set(classification["columnWidths"]) <= set(classification["columnOrder"])
    regression = view_of(REPO / "configs" / "diabetes_regression.yaml", "calm-heron")["selectedColumns"]
    assert {"metrics.`rmse`", "metrics.`r2`"} <= set(regression) and "metrics.`accuracy`" not in regression
    # Every link shrinkflow gives to the runs table opens the view.
    links = TrackingRef("http://127.0.0.1:5000", "3", "0f3a").ui_links()
    assert links is not None
    assert "(http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=shrinkflow-decisive&workflowType=machine_learning)" in links


def test_metrics_are_logged_to_four_significant_digits_and_sizes_whole() -> None:
    assert logged(0.9416666666666667) == 0.9417
    assert logged(-0.027777777) == -0.02778
    assert logged(0.0123456) == 0.01235
    assert logged(53468.0) == 53468.0 and logged(1234.5678) == 1235.0
    assert logged(0.0) == 0.0


def test_the_pareto_chart_labels_only_the_front_and_the_shipped_variant(tmp_path: Path) -> None:
    sizes = [2100 + 137 * i for i in range(30)]
    qualities = [0.5 + ((i * 7) % 30) / 60 for i in range(30)]
    rows = [
        SummaryRow(f"v{i}", accuracy=quality, gzip_size_bytes=size) for i, (size, quality) in enumerate(zip(sizes, qualities))
    ]
    front = pareto_front({row.variant: (float(row.gzip_size_bytes or 0), row.accuracy or 0.0) for row in rows})
    shipped = next(row.variant for row in rows if row.variant not in front)
    rows = [replace(row, selected=row.variant == shipped) for row in rows]
    labelled = plot_pareto(rows, tmp_path / "pareto.png")
    assert set(labelled) == front | {shipped} and len(labelled) < len(rows)
    assert matplotlib.image.imread(tmp_path / "pareto.png").shape[:2] == (600, 1000)
    assert [byte_size(size) for size in (950, 4000, 12500, 1_250_000)] == ["950 B", "4 kB", "12.5 kB", "1.25 MB"]
