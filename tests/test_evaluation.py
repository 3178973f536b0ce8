"""One evaluation for every variant: metrics, sizes, latency and the confusion matrix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from shrinkflow.core.config import DataConfig, ModelConfig, TrainConfig
from shrinkflow.core.data import load_splits, prepare_dataset
from shrinkflow.core.evaluation import (
    METRIC_NAMES, classification_metrics, evaluate_model_file, file_sizes, load_row_predictions,
)
from shrinkflow.core.training import train_baseline


def test_classification_metrics_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    metrics = classification_metrics(y_true, probabilities, num_classes=2)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # class 0: precision 1, recall 0.5; class 1: precision 2/3, recall 1
    assert metrics["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["recall_macro"] == pytest.approx(0.75)
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert metrics["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))


def test_unnormalised_quantized_outputs_still_give_a_finite_loss() -> None:
    metrics = classification_metrics(np.array([0, 1]), np.array([[0.5, 0.0, 0.0], [0.0, 0.52, 0.01]]), num_classes=3)
    assert metrics["accuracy"] == 1.0 and np.isfinite(metrics["loss"])


def test_file_sizes_are_raw_and_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0" * 10_000)
    sizes = file_sizes(path)
    assert sizes["size_bytes"] == 10_000
    assert sizes["gzip_size_bytes"] == len(gzip.compress(b"\0" * 10_000, compresslevel=9))


def test_evaluating_a_keras_file_gives_every_metric_and_a_plot(tmp_path: Path) -> None:
    dataset = prepare_dataset(DataConfig(max_samples=300), tmp_path / "datasets")
    model_path = tmp_path / "model.keras"
    train_baseline(dataset, ModelConfig(family="mlp", hidden_units=(16,)), TrainConfig(epochs=2), model_path)
    evaluation = evaluate_model_file(model_path, dataset, tmp_path / "eval", latency_repeats=5)
    quality = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "loss"}
    intervals = {f"{name}_ci_{end}" for name in ("accuracy", "f1_macro") for end in ("low", "high")}
    assert set(evaluation.metrics) == set(METRIC_NAMES) | {f"val_{name}" for name in quality} | intervals
    metrics = evaluation.metrics
    assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
    assert metrics["f1_macro_ci_low"] <= metrics["f1_macro"] <= metrics["f1_macro_ci_high"]
    assert evaluation.metrics["size_bytes"] == model_path.stat().st_size
    assert 0 < evaluation.metrics["gzip_size_bytes"] < evaluation.metrics["size_bytes"]
    assert evaluation.metrics["latency_ms"] > 0
    assert Path(evaluation.plot_png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import tf_keras

    model = tf_keras.models.load_model(model_path)
    splits = load_splits(dataset)
    direct = float((model.predict(splits.x_test, verbose=0).argmax(1) == splits.y_test).mean())
    assert evaluation.metrics["accuracy"] == pytest.approx(direct)
    # The selection's split, evaluated the same way, and every row's prediction kept for paired comparisons.
    on_validation = model.predict(splits.x_val, verbose=0).argmax(1)
    assert evaluation.metrics["val_accuracy"] == pytest.approx(float((on_validation == splits.y_val).mean()))
    np.testing.assert_array_equal(load_row_predictions(evaluation.predictions, "validation"), on_validation)
    assert len(load_row_predictions(evaluation.predictions, "test")) == len(splits.y_test)


def test_unknown_model_file_type_is_refused(tmp_path: Path) -> None:
    dataset = prepare_dataset(DataConfig(max_samples=100), tmp_path / "datasets")
    with pytest.raises(ValueError, match=r"expected a .keras, .tflite or .onnx file"):
        evaluate_model_file(tmp_path / "model.pt", dataset, tmp_path)
