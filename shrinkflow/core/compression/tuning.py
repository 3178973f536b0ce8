"""What the compression steps share: their error, loading the model they start from, and fine-tuning a wrapped
copy (pruning, clustering, QAT) with the baseline's loss, batch size and shuffling seed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shrinkflow.core.data import DatasetRef
from shrinkflow.core.steps import FineTuning
from shrinkflow.core.training import compile_for_training, load_keras_model, training_data


class CompressionError(RuntimeError):
    """A model could not be read, converted, or run after conversion; no output was written."""


def fine_tune(model: Any, dataset: DatasetRef, tuning: FineTuning, callbacks: Sequence[Any] = ()) -> None:
    """Fine-tune a wrapped copy with Adam at `tuning.learning_rate` for `tuning.epochs` epochs."""
    import tf_keras

    compile_for_training(model, tf_keras.optimizers.Adam(tuning.learning_rate), tuning.loss)
    train_data, validation_data = training_data(dataset, tuning.batch_size, tuning.seed)
    model.fit(
        train_data,
        validation_data=validation_data,
        epochs=tuning.epochs,
        callbacks=list(callbacks),
        verbose=0,
    )


def load_model(path: str | Path) -> Any:
    """The Keras model in `path`, or a CompressionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CompressionError(f"{path}: model file not found")
    try:
        return load_keras_model(path)
    except Exception as exc:  # Keras raises many types for an unreadable file
        raise CompressionError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc})") from exc
