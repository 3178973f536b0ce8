"""Evaluate any model variant the same way: a Keras, TFLite or ONNX file, on the validation split (what the
selection decides on) and on the held-out test split (what the run reports, once, with intervals).

Every variant of a run gets the same metric names, so the MLflow compare view lines them up. Classification:
accuracy, precision_macro, recall_macro, f1_macro, loss (and roc_auc with two classes); regression, in the
targets' original units: rmse, mae, mse, r2. The same on the validation split as val_<metric>. A 95 % interval
of the test quality: <metric>_ci_low and <metric>_ci_high for accuracy, f1_macro, rmse, mae and r2
(shrinkflow.core.statistics). Both tasks: size_bytes, gzip_size_bytes, and the time the file takes in its runtime:
latency_ms (one sample per call), batch64_latency_ms and batch64_samples_per_s (64 per call). Each row's
prediction on both splits is kept beside the model (PREDICTIONS_FILE), so two variants can be compared row by
row (paired).
"""

from __future__ import annotations

import gzip
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shrinkflow.core.data import DatasetRef, load_splits
from shrinkflow.core.files import atomic_path
from shrinkflow.core.predictors import BatchPredictor, load_predictor
from shrinkflow.core.statistics import REPORTED_CONFIDENCE, metric_interval

LATENCY_BATCH = 64
LATENCY_METRIC_NAMES = ("latency_ms", f"batch{LATENCY_BATCH}_latency_ms", f"batch{LATENCY_BATCH}_samples_per_s")
SIZE_METRIC_NAMES = ("size_bytes", "gzip_size_bytes", *LATENCY_METRIC_NAMES)
METRIC_NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "loss", *SIZE_METRIC_NAMES)
REGRESSION_METRIC_NAMES = ("rmse", "mae", "mse", "r2", *SIZE_METRIC_NAMES)
VALIDATION_PREFIX = "val_"
PREDICTIONS_FILE = "predictions.npz"
# The splits a variant is evaluated on, and the prefix of their metrics.
EVALUATED_SPLITS = {"validation": VALIDATION_PREFIX, "test": ""}


@dataclass(frozen=True)
class Evaluation:
    """A variant's metrics (see the module's docstring), where its plot is (the confusion matrix, or predicted
    against actual values for regression), and the file of its predictions on the validation and test rows."""

    metrics: dict[str, float]
    plot_png: str
    predictions: str


def evaluate_model_file(
    model_path: str | Path, dataset: DatasetRef, out_dir: str | Path, latency_repeats: int = 100
) -> Evaluation:
    """Evaluate a saved `.keras`, `.tflite` or `.onnx` model on the dataset's validation and test splits."""
    splits = load_splits(dataset)
    predict = load_predictor(model_path)
    metrics: dict[str, float] = {}
    predicted: dict[str, np.ndarray] = {}
    for split, (x, y) in {"validation": (splits.x_val, splits.y_val), "test": (splits.x_test, splits.y_test)}.items():
        outputs = predict(x)
        prefix = EVALUATED_SPLITS[split]
        metrics |= {f"{prefix}{name}": value for name, value in task_metrics(dataset, y, outputs).items()}
        predicted[split] = row_predictions(dataset, outputs)
    metrics |= quality_intervals(dataset, true_rows(dataset, splits.y_test), predicted["test"])
    predictions = Path(out_dir) / PREDICTIONS_FILE
    with atomic_path(predictions) as partial:
        with open(partial, "wb") as file:  # uncompressed: zlib gains nothing on predictions and costs seconds
            np.savez(file, **predicted)  # type: ignore[arg-type]
    metrics.update(file_sizes(model_path))
    metrics.update(latency_metrics(predict, splits.x_test, repeats=latency_repeats))
    if dataset.task == "classification":
        png = Path(out_dir) / "confusion_matrix.png"
        save_confusion_matrix(splits.y_test, predicted["test"], dataset.class_names, png)
    else:
        png = Path(out_dir) / "predicted_vs_actual.png"
        save_predicted_vs_actual(true_rows(dataset, splits.y_test), predicted["test"], dataset.target_names, png)
    return Evaluation(metrics=metrics, plot_png=str(png), predictions=str(predictions))


def row_predictions(dataset: DatasetRef, outputs: np.ndarray) -> np.ndarray:
    """What a model predicts for each row, as compared row by row: the class index, or the targets in their own
    units (rows x targets)."""
    if dataset.task == "classification":
        return outputs.argmax(axis=1).astype(np.int32)
    return dataset.to_original_units(outputs).astype(np.float32)


def true_rows(dataset: DatasetRef, y: np.ndarray) -> np.ndarray:
    """The stored labels of a split as row_predictions gives predictions: class indices, or targets in units."""
    return y if dataset.task == "classification" else dataset.to_original_units(y).astype(np.float32)


def load_row_predictions(path: str | Path, split: str) -> np.ndarray:
    """A variant's predictions on a split ("validation" or "test"), as evaluate_model_file kept them."""
    with np.load(path) as stored:
        return stored[split]


def quality_intervals(
    dataset: DatasetRef, y_true: np.ndarray, predicted: np.ndarray, confidence: float = REPORTED_CONFIDENCE
) -> dict[str, float]:
    """<metric>_ci_low and <metric>_ci_high of the task's metrics that get an interval (statistics.INTERVAL_METRICS)."""
    names = ("accuracy", "f1_macro") if dataset.task == "classification" else ("rmse", "mae", "r2")
    intervals: dict[str, float] = {}
    for name in names:
        interval = metric_interval(name, y_true, predicted, confidence, dataset.num_classes)
        intervals |= {f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}
    return intervals


def task_metrics(dataset: DatasetRef, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's quality metrics of a model's outputs on stored labels: class probabilities against class
    indices, or standardized predictions against standardized targets (compared in original units)."""
    if dataset.task == "classification":
        return classification_metrics(y_true, outputs, dataset.num_classes)
    return regression_metrics(dataset.to_original_units(y_true), dataset.to_original_units(outputs))


def describe_metrics(metrics: dict[str, float]) -> str:
    """A variant's test result in one line, for logs."""
    quality = (
        f"accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1_macro']:.4f}" if "accuracy" in metrics
        else f"RMSE {metrics['rmse']:.4g}, MAE {metrics['mae']:.4g}, R2 {metrics['r2']:.4f}"
    )
    return (
        f"{quality}, {int(metrics['size_bytes']):,} bytes ({int(metrics['gzip_size_bytes']):,} gzipped), "
        f"{metrics['latency_ms']:.3f} ms per sample, {metrics[LATENCY_METRIC_NAMES[2]]:,.0f} samples/s in batches of {LATENCY_BATCH}"
    )


def regression_metrics(y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, MSE and R2 (scikit-learn; averaged over targets), in the targets' units."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    mse = float(mean_squared_error(y_true, predictions))
    return {
        "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(y_true, predictions)),
        "mse": mse,
        "r2": float(r2_score(y_true, predictions)),
    }


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1 and cross-entropy loss (scikit-learn); with two classes also
    ROC AUC (of the second class's probability)."""
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support, roc_auc_score

    labels = list(range(num_classes))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, predicted, labels=labels, average="macro", zero_division=0
    )
    # Quantized models' dequantized outputs need not sum to exactly one.
    clipped = np.clip(probabilities.astype(np.float64), 1e-12, None)
    normalized = clipped / clipped.sum(axis=1, keepdims=True)
    metrics = {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "loss": float(log_loss(y_true, normalized, labels=labels)),
    }
    if num_classes == 2 and len(np.unique(y_true)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y_true, normalized[:, 1]))
    return metrics


def file_sizes(path: str | Path) -> dict[str, float]:
    """On-disk size of a model file, and its gzipped size (what a download actually costs)."""
    data = Path(path).read_bytes()
    return {"size_bytes": float(len(data)), "gzip_size_bytes": float(len(gzip.compress(data, compresslevel=9)))}


def latency_metrics(predict: BatchPredictor, x: np.ndarray, repeats: int = 100) -> dict[str, float]:
    """Median milliseconds per call with one sample and with LATENCY_BATCH samples (the first of `x`, repeated
    if it has fewer), and the samples per second that batch size gives. Serving one request at a time pays the
    first; scoring batches, the second."""
    batch = np.resize(x[:LATENCY_BATCH], (LATENCY_BATCH, *x.shape[1:])).astype(x.dtype)
    # A call of 64 samples varies less than one of a single sample: a tenth of the calls (at least 3) will do.
    batch_ms = median_latency_ms(predict, batch, repeats=max(3, repeats // 10))
    return dict(zip(LATENCY_METRIC_NAMES, (median_latency_ms(predict, x[:1], repeats=repeats), batch_ms, LATENCY_BATCH * 1000.0 / batch_ms)))


def median_latency_ms(predict: BatchPredictor, sample: np.ndarray, repeats: int = 100, warmup: int = 5) -> float:
    """Median wall time of one prediction of `sample` (a batch), in milliseconds."""
    for _ in range(warmup):
        predict(sample)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(sample)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000.0


def save_predicted_vs_actual(
    y_true: np.ndarray, predictions: np.ndarray, target_names: tuple[str, ...], png_path: str | Path
) -> None:
    """A scatter of the first target's predictions against its actual values, the diagonal being perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actual, predicted = y_true[:, 0], predictions[:, 0]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(actual, predicted, s=10, alpha=0.6)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="tab:gray", linewidth=1)
    ax.set_xlabel(f"actual {target_names[0]}")
    ax.set_ylabel(f"predicted {target_names[0]}")
    ax.set_title("Predicted against actual (test split)")
    fig.tight_layout()
    with atomic_path(png_path) as partial:
        fig.savefig(partial, dpi=100)
    plt.close(fig)


def save_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...], png_path: str | Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.5 * len(class_names))
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(class_names))), display_labels=list(class_names),
        ax=ax, colorbar=False,
    )
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    with atomic_path(png_path) as partial:  # a cached stage's folder may be shared by concurrent runs
        fig.savefig(partial, dpi=100)
    plt.close(fig)
