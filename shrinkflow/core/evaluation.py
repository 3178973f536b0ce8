"""Evaluate any model variant the same way: a Keras, TFLite or ONNX file, on the held-out test set.

Every variant of a run gets the same metric names, so the MLflow compare view lines them up. Classification:
accuracy, precision_macro, recall_macro, f1_macro, loss (and roc_auc with two classes); regression, in the
targets' original units: rmse, mae, mse, r2. Both: size_bytes, gzip_size_bytes, latency_ms.
"""

from __future__ import annotations

import gzip
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shrinkflow.core.data import DatasetRef, batches, split_targets
from shrinkflow.core.files import atomic_path
from shrinkflow.core.predictors import SLICE, BatchPredictor, load_predictor

SIZE_METRIC_NAMES = ("size_bytes", "gzip_size_bytes", "latency_ms")
METRIC_NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "loss", *SIZE_METRIC_NAMES)
REGRESSION_METRIC_NAMES = ("rmse", "mae", "mse", "r2", *SIZE_METRIC_NAMES)
# A model file is evaluated on batches of about this many bytes of float32 features (its outputs are gathered, the
# features are not): few calls for small samples, little memory for images.
PREDICT_BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class Evaluation:
    """A variant's metrics (see METRIC_NAMES, REGRESSION_METRIC_NAMES) and where its plot is: the confusion
    matrix, or predicted against actual values for regression."""

    metrics: dict[str, float]
    plot_png: str


def evaluate_model_file(
    model_path: str | Path, dataset: DatasetRef, out_dir: str | Path, latency_repeats: int = 100
) -> Evaluation:
    """Evaluate a saved `.keras`, `.tflite` or `.onnx` model on the dataset's test split, streamed batch by batch."""
    predict = load_predictor(model_path)
    outputs = predict_split(predict, dataset, "test")
    y_test = split_targets(dataset, "test")
    metrics = task_metrics(dataset, y_test, outputs)
    metrics.update(file_sizes(model_path))
    first_sample = next(batches(dataset, "test", 1))[0]
    metrics["latency_ms"] = median_latency_ms(predict, first_sample, repeats=latency_repeats)
    if dataset.task == "classification":
        png = Path(out_dir) / "confusion_matrix.png"
        save_confusion_matrix(y_test, outputs.argmax(axis=1), dataset.class_names, png)
    else:
        png = Path(out_dir) / "predicted_vs_actual.png"
        save_predicted_vs_actual(dataset.to_original_units(y_test), dataset.to_original_units(outputs), dataset.target_names, png)
    return Evaluation(metrics=metrics, plot_png=str(png))


def predict_split(predict: BatchPredictor, dataset: DatasetRef, split: str, batch_size: int | None = None) -> np.ndarray:
    """The model's outputs on every sample of a split (class probabilities, or standardized regression targets), in
    the split's stored order (that of data.split_targets and data.split_rows): the features are read batch by batch
    (of `batch_size`, or of about PREDICT_BATCH_BYTES), only the outputs are kept."""
    sample_bytes = 4 * int(np.prod(dataset.input_shape))
    rows = batch_size or max(64, min(SLICE, PREDICT_BATCH_BYTES // sample_bytes))
    outputs = [predict(x) for x, _ in batches(dataset, split, rows)]
    return np.concatenate(outputs)


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
        f"{metrics['latency_ms']:.3f} ms per sample"
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


def median_latency_ms(predict: BatchPredictor, sample: np.ndarray, repeats: int = 100, warmup: int = 5) -> float:
    """Median wall time of one single-sample prediction, in milliseconds."""
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
