"""Beyond image classification: regression, recurrent models on sequences, and text classification, each
through the real flow (MLflow tracking, registry, export) on small real data; bad input refused by field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.data import DatasetRef, prepare_dataset
from tests.datasets import load_splits
from shrinkflow.core.errors import ConfigError, DataError
from shrinkflow.core.evaluation import load_predictor
from shrinkflow.core.summary import SummaryRow
from shrinkflow.core.workspace import Workspace
from tests.conftest import REPO
from tests.test_cli import shrinkflow

# Small and quick; a budget wide enough that a variant ships, since the journey is under test here, not quality.
QUICK = {"distill.students": "[]", "cluster.enabled": "false", "select.max_quality_drop": "1", "prune.epochs": "1"}
FAMILIES = {
    "regression": ("diabetes_regression.yaml", {
        **QUICK, "train.epochs": "8", "quantize.modes": "[int8]", "onnx.convert": "[int8]",
        "distill.students": "[{hidden_units: [8], dropout: 0}]", "distill.epochs": "3", "distill.from_scratch": "false",
    }),
    "rnn": ("digits_cnn.yaml", {
        **QUICK, "data.sequence_shape": "[8, 8]", "data.max_samples": "400", "model.family": "rnn",
        "model.recurrent_units": "[8]", "model.hidden_units": "[]", "train.epochs": "3", "quantize.modes": "[int8, qat]",
        "onnx.enabled": "true", "onnx.convert": "[int8]",
    }),
    "text": ("text_debian.yaml", {
        **QUICK, "data.max_samples": "400", "model.embedding_dim": "8", "model.conv_filters": "[16]",
        "model.hidden_units": "[8]", "train.epochs": "2", "quantize.modes": "[int8, qat]", "onnx.convert": "[int8]",
    }),
}


def family_config(family: str) -> PipelineConfig:
    preset, sets = FAMILIES[family]
    return load_config(REPO / "configs" / preset, [f"{key}={value}" for key, value in sets.items()])


@pytest.fixture(scope="module")
def family_runs(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[PipelineConfig, Path, list[SummaryRow]]]:
    from shrinkflow.flows.pipeline import pipeline

    runs = {}
    for family in FAMILIES:
        config = family_config(family)
        workspace = tmp_path_factory.mktemp(family) / "workspace"
        runs[family] = (config, workspace, pipeline(config, workspace=str(workspace)))
    return runs


def rows_by_name(rows: list[SummaryRow]) -> dict[str, SummaryRow]:
    return {row.variant: row for row in rows}


@pytest.mark.e2e
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_the_flow_and_ships_a_tracked_registered_exported_variant(family_runs, family: str) -> None:
    config, workspace, rows = family_runs[family]
    failed = [row for row in rows if not row.ok and not row.status.startswith("not applicable")]
    assert not failed, failed
    [shipped] = [row for row in rows if row.selected]
    assert shipped.version == "1" and shipped.promoted

    ws = Workspace(workspace)
    client = MlflowClient(tracking_uri=ws.tracking_uri(), registry_uri=ws.tracking_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == config.name]
    [parent] = client.search_runs([experiment.experiment_id], "tags.shipped_variant != ''")
    quality = "shipped_rmse" if family == "regression" else "shipped_accuracy"
    assert parent.data.tags["shipped_variant"] == shipped.variant and quality in parent.data.metrics
    children = client.search_runs([experiment.experiment_id], "tags.variant != ''")
    assert {run.data.tags["variant"] for run in children} == {row.variant for row in rows}
    champion = client.get_model_version_by_alias(config.name, "champion")
    assert champion.tags["variant"] == shipped.variant

    manifest = json.loads((ws.exports / config.name / "1" / "manifest.json").read_text())
    assert manifest["selected_variant"] == shipped.variant and manifest["task"] == config.data.task


@pytest.mark.e2e
def test_a_mode_that_cannot_apply_is_a_not_applicable_row(family_runs) -> None:
    rnn = rows_by_name(family_runs["rnn"][2])
    assert rnn["baseline-qat"].status.startswith("not applicable: tfmot QAT has no scheme for LSTM layers")
    assert rnn["baseline-int8-onnx"].status.startswith("not applicable: tf2onnx cannot convert")
    assert rnn["baseline-int8"].ok and rnn["pruned-int8"].ok  # the post-training modes apply to an LSTM
    text = rows_by_name(family_runs["text"][2])
    assert text["pruned-qat"].status.startswith("not applicable") and text["pruned-int8-onnx"].ok


@pytest.mark.e2e
def test_an_lstm_in_tflite_predicts_like_its_keras_model(family_runs) -> None:
    """A fused TFLite LSTM keeps state between calls unless reset: each sample must start from zero state."""
    config, workspace, rows = family_runs["rnn"]
    rows_by = rows_by_name(rows)
    assert rows_by["baseline-int8"].accuracy is not None and rows_by["baseline"].accuracy is not None
    assert abs(rows_by["baseline-int8"].accuracy - rows_by["baseline"].accuracy) <= 0.05


@pytest.mark.e2e
def test_regression_is_reported_in_the_target_units_and_served_in_them(family_runs) -> None:
    import tensorflow as tf

    config, workspace, rows = family_runs["regression"]
    baseline = rows_by_name(rows)["baseline"]
    assert baseline.rmse is not None and 30 < baseline.rmse < 120  # diabetes progression: targets 25..346
    assert baseline.accuracy is None and any(row.variant == "student-1" and row.ok for row in rows)

    dataset = prepare_dataset(config.data, Workspace(workspace).datasets)
    export = Workspace(workspace).exports / config.name / "1"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["target_scaling"]["mean"] == list(dict(dataset.target_scaling)["mean"])
    x_test = load_splits(dataset).x_test
    served = tf.saved_model.load(str(export)).signatures["serving_default"](inputs=tf.constant(x_test))["predictions"]
    standardized = load_predictor(export / "model.keras")(x_test)
    np.testing.assert_allclose(served.numpy(), dataset.to_original_units(standardized), rtol=1e-4, atol=1e-3)


@pytest.mark.e2e
def test_the_text_export_takes_raw_text(family_runs) -> None:
    import tensorflow as tf

    config, workspace, _ = family_runs["text"]
    export = Workspace(workspace).exports / config.name / "1"
    vocabulary = (export / "vocabulary.txt").read_text().splitlines()
    assert vocabulary[:2] == ["", "[UNK]"] and "font" in vocabulary
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    texts = ["TrueType font with Latin glyphs", "a puzzle game for children", "astronomy toolkit"]
    probabilities = serve(inputs=tf.constant(texts))["probabilities"].numpy()
    assert probabilities.shape == (3, 5) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    # The same as the Keras model fed the token ids that the training data went through.
    ids = np.array([[vocabulary.index(token) if token in vocabulary else 1 for token in text.lower().split()] for text in texts[:1]])
    ids = np.pad(ids, ((0, 0), (0, config.data.sequence_length - ids.shape[1])))
    keras = load_predictor(export / "model.keras")(ids.astype(np.float32))
    np.testing.assert_allclose(probabilities[:1], keras, atol=1e-5)


# --- bad input: refused before training, naming the field -------------------------------------------


def test_a_text_column_that_is_numeric_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    pd.DataFrame({"description": range(20), "section": ["a", "b"] * 10}).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"data.text_column 'description' holds numbers"):
        prepare_dataset(family_config("text").data.model_copy(update={"source": str(table)}), tmp_path)


def test_a_regression_target_with_strings_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    pd.DataFrame({"x": range(20), "price": ["cheap", "1.5"] * 10}).to_csv(table, index=False)
    config = load_config(REPO / "configs" / "diabetes_regression.yaml", [f"data.source={table}", "data.target_columns=[price]"])
    with pytest.raises(DataError, match=r"data.target_columns \(a regression target\): column 'price' is not numeric \(first bad value 'cheap'\)"):
        prepare_dataset(config.data, tmp_path)


def test_a_sequence_shape_that_does_not_divide_the_values_is_refused(tmp_path: Path) -> None:
    config = family_config("rnn").data.model_copy(update={"sequence_shape": (8, 7)})
    with pytest.raises(DataError, match=r"data.sequence_shape \[8, 7\] holds 56 values, but each sample has 64"):
        prepare_dataset(config, tmp_path)


def test_a_window_longer_than_the_series_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "series.csv"
    pd.DataFrame({"load": np.sin(np.arange(30.0))}).to_csv(table, index=False)
    sets = [f"data.source={table}", "data.series_column=load", "data.window=40", "model.family=rnn", "data.task=regression"]
    config = load_config(REPO / "configs" / "digits_cnn.yaml", sets)
    with pytest.raises(DataError, match=r"data.window 40 plus data.horizon 1 is longer than the series \(30 values"):
        prepare_dataset(config.data, tmp_path)


def test_a_windowed_series_is_split_in_time_order(tmp_path: Path) -> None:
    table = tmp_path / "series.csv"
    pd.DataFrame({"load": np.arange(200.0)}).to_csv(table, index=False)
    sets = [f"data.source={table}", "data.series_column=load", "data.window=5", "data.horizon=2", "model.family=rnn",
            "data.task=regression", "data.scaling=none"]
    dataset: DatasetRef = prepare_dataset(load_config(REPO / "configs" / "digits_cnn.yaml", sets).data, tmp_path)
    splits = load_splits(dataset)
    assert dataset.input_shape == (5, 1) and dataset.target_names == ("load",)
    first = dataset.to_original_units(splits.y_train[:1])[0, 0]
    assert splits.x_train[0, :, 0].tolist() == [0, 1, 2, 3, 4] and first == pytest.approx(6.0)  # 2 steps after the window
    # Validation and test come later, and share no value with what training saw (inputs or targets).
    assert splits.x_train[:, -1, 0].max() + 2 < splits.x_val[:, 0, 0].min()


@pytest.mark.parametrize("sets, expected", [
    (["data.task=regression", "select.quality=accuracy"], "select.quality: accuracy does not measure a regression; use rmse or r2"),
    (["train.loss=mse"], "train.loss: mse is not a classification loss"),
    (["model.family=text"], "model.family: text reads data.text_column"),
    (["model.family=rnn"], "model.family: rnn needs sequences"),
    (["data.target_columns=[y]"], "target_columns are for task: regression"),
])
def test_config_pairings_are_validated(sets: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace(".", r"\.")):
        load_config(REPO / "configs" / "digits_cnn.yaml", sets)


def test_the_command_refuses_bad_family_input_with_exit_2_and_the_field(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    pd.DataFrame({"description": range(20), "section": ["a", "b"] * 10}).to_csv(table, index=False)
    result = shrinkflow(
        "run", str(REPO / "configs" / "text_debian.yaml"), "--set", f"data.source={table}", "--workspace", str(tmp_path / "ws"),
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "data.text_column 'description' holds numbers" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
