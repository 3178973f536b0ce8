"""Build and train the baseline Keras model (Keras 2 via tf_keras, as tfmot requires)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.config import ModelConfig, TrainConfig, resolve_loss
from shrinkflow.core.data import DatasetRef, tf_dataset
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.files import atomic_path

EpochCallback = Callable[[int, dict[str, float]], None]


def build_model(
    model_cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int, task: str = "classification",
    vocabulary_size: int = 0,
) -> Any:
    """A Sequential model of the config's family: the family's feature layers (conv blocks; stacked LSTM or GRU
    layers; a token embedding then recurrent or 1-D conv layers), dense hidden layers, and a softmax over
    `num_outputs` classes, or `num_outputs` linear regression outputs.

    Raises:
        ConfigError: the family cannot take this data (a cnn on a flat table, an rnn without timesteps).
    """
    from tf_keras import Sequential, layers, regularizers

    check_model_fits_data(model_cfg, input_shape)
    regularizer = regularizers.L1L2(l1=model_cfg.l1, l2=model_cfg.l2) if model_cfg.l1 or model_cfg.l2 else None
    stack: list[Any] = [layers.Input(shape=input_shape)]
    if model_cfg.family == "text":
        stack.append(layers.Embedding(vocabulary_size, model_cfg.embedding_dim))
    if model_cfg.family == "cnn":
        for filters in model_cfg.conv_filters:
            stack.append(
                layers.Conv2D(
                    filters, model_cfg.kernel_size, padding="same", activation=model_cfg.activation,
                    kernel_regularizer=regularizer,
                )
            )
            stack.append(layers.MaxPooling2D(2, padding="same"))
    elif model_cfg.is_recurrent:
        cell = {"lstm": layers.LSTM, "gru": layers.GRU}[model_cfg.cell]
        for number, units in enumerate(model_cfg.recurrent_units, start=1):
            recurrent = cell(units, return_sequences=number < len(model_cfg.recurrent_units), kernel_regularizer=regularizer)
            stack.append(layers.Bidirectional(recurrent) if model_cfg.bidirectional else recurrent)
    elif model_cfg.family == "text":
        for filters in model_cfg.conv_filters:
            stack.append(
                layers.Conv1D(
                    filters, model_cfg.kernel_size, padding="same", activation=model_cfg.activation,
                    kernel_regularizer=regularizer,
                )
            )
        stack.append(layers.GlobalMaxPooling1D())
    stack.append(layers.Flatten())
    for units in model_cfg.hidden_units:
        stack.append(layers.Dense(units, activation=model_cfg.activation, kernel_regularizer=regularizer))
        if model_cfg.dropout:
            stack.append(layers.Dropout(model_cfg.dropout))
    stack.append(layers.Dense(num_outputs, activation="softmax" if task == "classification" else None))
    return Sequential(stack)


def model_for(model_cfg: ModelConfig, dataset: DatasetRef) -> Any:
    """`build_model` for this dataset's inputs, outputs, task and vocabulary."""
    return build_model(model_cfg, dataset.input_shape, dataset.num_outputs, dataset.task, dataset.vocabulary_size)


def check_model_fits_data(model_cfg: ModelConfig, input_shape: tuple[int, ...]) -> None:
    """Raises ConfigError when the model family cannot take this data (a cnn on a flat table)."""
    if model_cfg.family == "cnn" and len(input_shape) != 3:
        raise ConfigError(
            f"model.family: cnn needs image data (height, width, channels), but the data has "
            f"shape {list(input_shape)}; use family: mlp, or set data.image_shape"
        )
    if model_cfg.family == "rnn" and len(input_shape) != 2:
        raise ConfigError(
            f"model.family: rnn needs sequences (timesteps, features), but the data has shape {list(input_shape)}; "
            "set data.sequence_shape, or data.series_column and data.window"
        )


def make_learning_rate(train_cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """A constant, or a schedule that multiplies the rate by `decay_rate` once per epoch."""
    from tf_keras import optimizers

    if train_cfg.lr_schedule == "exponential":
        return optimizers.schedules.ExponentialDecay(
            train_cfg.learning_rate, decay_steps=steps_per_epoch, decay_rate=train_cfg.decay_rate
        )
    return train_cfg.learning_rate


def make_optimizer(train_cfg: TrainConfig, steps_per_epoch: int) -> Any:
    from tf_keras import optimizers

    learning_rate = make_learning_rate(train_cfg, steps_per_epoch)
    if train_cfg.optimizer == "sgd":
        return optimizers.SGD(learning_rate, momentum=train_cfg.momentum)
    return {"adam": optimizers.Adam, "rmsprop": optimizers.RMSprop, "adagrad": optimizers.Adagrad}[
        train_cfg.optimizer
    ](learning_rate)


def training_data(dataset: DatasetRef, batch_size: int, seed: int, targets_from: str | Path | None = None) -> tuple[Any, Any]:
    """The training split (shuffled with `seed`, anew each epoch) and the validation split, streamed from the
    prepared shards as tf.data pipelines; with `targets_from`, the targets written there (see data.write_targets)."""
    return (
        tf_dataset(dataset, "train", batch_size, shuffle_seed=seed, targets_from=targets_from),
        tf_dataset(dataset, "validation", batch_size, targets_from=targets_from),
    )


def compile_for_training(model: Any, optimizer: Any, loss: str = "crossentropy") -> None:
    """Compile with the loss (see config.resolve_loss): accuracy is followed for classification, RMSE (of the
    standardized targets) for regression."""
    import tf_keras

    if loss == "crossentropy":
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return
    model.compile(optimizer=optimizer, loss=keras_loss(loss), metrics=[tf_keras.metrics.RootMeanSquaredError(name="rmse")])


def keras_loss(loss: str) -> Any:
    """A regression loss of the config (mse, mae, huber) as a Keras per-sample loss function."""
    import tf_keras

    return tf_keras.losses.get({"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}[loss])


def epoch_reporter(on_epoch: EpochCallback) -> Any:
    """Adapts a plain `on_epoch(epoch, metrics)` function to a Keras callback."""
    from tf_keras.callbacks import LambdaCallback

    return LambdaCallback(
        on_epoch_end=lambda epoch, logs: on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()})
    )


def describe_epoch(logs: dict[str, float]) -> str:
    """Keras epoch logs as one line: "loss 0.4123, accuracy 0.8811, val_loss 0.3567, val_accuracy 0.9021"."""
    return ", ".join(f"{name} {value:.4f}" for name, value in logs.items())


def train_baseline(
    dataset: DatasetRef,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_path: str | Path,
    on_epoch: EpochCallback | None = None,
) -> dict[str, float]:
    """Train the baseline and save it, ready for inference, to `out_path` (a .keras file).

    Returns the training history's last values plus `epochs_run` (early stopping may end sooner),
    `train_seconds` (the wall time of `fit`) and `train_samples_per_s` (training samples times
    epochs run, per second of `fit`).
    """
    import tf_keras
    from tf_keras.callbacks import EarlyStopping

    tf_keras.utils.set_random_seed(train_cfg.seed)
    model = model_for(model_cfg, dataset)
    train_samples = dataset.split_size("train")
    steps_per_epoch = int(np.ceil(train_samples / train_cfg.batch_size))
    compile_for_training(model, make_optimizer(train_cfg, steps_per_epoch), resolve_loss(train_cfg.loss, dataset.task))
    callbacks: list[Any] = []
    if train_cfg.early_stopping_patience:
        callbacks.append(
            EarlyStopping(monitor="val_loss", patience=train_cfg.early_stopping_patience, restore_best_weights=True)
        )
    if on_epoch is not None:
        callbacks.append(epoch_reporter(on_epoch))
    train_data, validation_data = training_data(dataset, train_cfg.batch_size, train_cfg.seed)
    started = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=train_cfg.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    fit_seconds = time.perf_counter() - started
    save_for_inference(model, out_path)
    final = {name: float(values[-1]) for name, values in history.history.items()}
    epochs_run = len(history.history["loss"])
    return {
        **final,
        "epochs_run": float(epochs_run),
        "train_seconds": fit_seconds,
        # Training throughput, validation passes included: what bench/input_pipeline.py compares.
        "train_samples_per_s": train_samples * epochs_run / fit_seconds,
    }


def save_for_inference(model: Any, out_path: str | Path) -> None:
    """Save a Keras file without optimizer state: what serving needs, and what its size measures.

    Written to a temporary name and renamed, so a crash never leaves a partial model behind.
    """
    import tf_keras

    inference_model = tf_keras.models.clone_model(model)
    inference_model.set_weights(model.get_weights())
    with atomic_path(out_path) as partial:
        inference_model.save(partial)


def load_keras_model(path: str | Path) -> Any:
    import tf_keras

    return tf_keras.models.load_model(path, compile=False)
