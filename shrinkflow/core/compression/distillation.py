"""Knowledge distillation: a smaller student of the teacher's family trained on its softened outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from shrinkflow.core.compression.tuning import load_model
from shrinkflow.core.data import DatasetRef, write_targets
from shrinkflow.core.steps import DistillStep
from shrinkflow.core.training import keras_loss, model_for, save_for_inference, training_data


class Student(NamedTuple):
    params: int
    epochs_run: int  # early stopping (step.tuning.early_stopping_patience) may end before step.tuning.epochs


def distill(teacher_path: str | Path, dataset: DatasetRef, step: DistillStep, out_path: str | Path) -> Student:
    """Train the step's student from the teacher's soft targets and the hard labels, and save it.

    Classification: the loss is alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels,
    student), where x_T is the softmax of log-probabilities divided by the temperature T (Hinton et al., 2015).
    Regression: alpha * MSE(teacher's predictions, student's) + (1 - alpha) * the task's loss on the targets
    (there are no probabilities to soften, so the temperature does not apply). The teacher's outputs are
    computed once, before training, and written as shards beside the dataset's (streamed with the samples, never
    held whole). From scratch (`step.from_scratch`) the student learns from the labels alone,
    with the same settings: the comparison that measures what distillation adds. Epochs, learning rate (Adam),
    batch size, seed and early stopping on the validation loss as in `step.tuning`.

    Returns:
        The student's number of parameters and how many epochs it trained.
    """
    import tensorflow as tf
    import tf_keras
    from tf_keras.callbacks import EarlyStopping

    tuning = step.tuning
    tf_keras.utils.set_random_seed(tuning.seed)
    alpha = step.alpha or 0.0
    temperature = step.temperature or 1.0
    classification = dataset.task == "classification"
    labels_width = 1 if classification else dataset.num_outputs

    teacher = None if alpha == 0 else load_model(teacher_path)

    def with_teacher(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each sample's label (or targets), then the teacher's softened probabilities (or predictions)."""
        if teacher is None:
            taught = np.zeros((len(x), dataset.num_outputs), dtype=np.float32)
        elif classification:
            log_probabilities = np.log(np.clip(np.asarray(teacher.predict_on_batch(x)), 1e-7, 1.0))
            taught = tf.nn.softmax(log_probabilities / temperature).numpy()
        else:
            taught = np.asarray(teacher.predict_on_batch(x))
        return np.concatenate([y.reshape(len(y), -1).astype(np.float32), taught], axis=1)

    task_loss = None if classification else keras_loss(tuning.loss)

    def loss(y_true: Any, y_pred: Any) -> Any:
        truth, taught = y_true[:, :labels_width], y_true[:, labels_width:]
        if classification:
            hard = tf_keras.losses.sparse_categorical_crossentropy(tf.cast(truth[:, 0], tf.int32), y_pred)
        else:
            assert task_loss is not None
            hard = task_loss(truth, y_pred)
        if alpha == 0:
            return hard
        if not classification:
            return alpha * tf_keras.losses.mean_squared_error(taught, y_pred) + (1 - alpha) * hard
        soft_student = tf.nn.softmax(tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)) / temperature)
        soft = tf_keras.losses.kl_divergence(taught, soft_student)
        return alpha * temperature**2 * soft + (1 - alpha) * hard

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        return tf_keras.metrics.sparse_categorical_accuracy(tf.cast(y_true[:, 0], tf.int32), y_pred)

    def rmse(y_true: Any, y_pred: Any) -> Any:
        return tf.sqrt(tf_keras.losses.mean_squared_error(y_true[:, :labels_width], y_pred))

    student = model_for(step.student, dataset)
    student.compile(
        optimizer=tf_keras.optimizers.Adam(tuning.learning_rate), loss=loss,
        metrics=[accuracy if classification else rmse],
    )
    callbacks: list[Any] = []
    if tuning.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=tuning.early_stopping_patience, restore_best_weights=True))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".teacher-targets-", dir=Path(out_path).parent) as targets:
        for split in ("train", "validation"):
            write_targets(dataset, split, with_teacher, targets)
        train_data, validation_data = training_data(dataset, tuning.batch_size, tuning.seed, targets_from=targets)
        history = student.fit(train_data, validation_data=validation_data, epochs=tuning.epochs, callbacks=callbacks, verbose=0)
    save_for_inference(student, out_path)
    return Student(int(student.count_params()), len(history.epoch))
