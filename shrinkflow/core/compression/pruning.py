"""Magnitude pruning of a copy of a model (tensorflow-model-optimization), fine-tuned while it prunes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.compression.tuning import fine_tune, load_model
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.kernels.keras import keras_sparsity
from shrinkflow.core.steps import PruneStep
from shrinkflow.core.training import load_keras_model, save_for_inference

# The polynomial schedule ramps sparsity up over this share of the fine-tuning steps; the steps
# left recover accuracy at the final sparsity.
PRUNING_RAMP_SHARE = 2 / 3
# The masks are recomputed at least this many times during the ramp (tfmot's default, every 100
# steps, would never prune a small dataset's few steps), but at most every 100 steps.
MIN_MASK_UPDATES = 20
MAX_STEPS_BETWEEN_MASK_UPDATES = 100


def prune(source_path: str | Path, dataset: DatasetRef, step: PruneStep, out_path: str | Path) -> float:
    """Magnitude-prune a copy of the model while fine-tuning it, and save it as a plain Keras model.

    The source file is only read. The schedule (see pruning_schedule) reaches `step.target_sparsity` within
    `step.tuning.epochs` epochs. The pruning wrappers are stripped before saving, so the file holds ordinary
    layers whose kernels contain the zeros.

    Returns:
        The share of zeros among the saved model's kernels (see keras_sparsity).

    Raises:
        CompressionError: the source file is missing or unreadable.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(step.tuning.seed)
    model = load_model(source_path)
    steps_per_epoch = int(np.ceil(dataset.split_size("train") / step.tuning.batch_size))
    schedule = pruning_schedule(step, total_steps=steps_per_epoch * step.tuning.epochs)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    fine_tune(pruned, dataset, step.tuning, [tfmot.sparsity.keras.UpdatePruningStep()])
    save_for_inference(tfmot.sparsity.keras.strip_pruning(pruned), out_path)
    return keras_sparsity(load_keras_model(out_path))


def pruning_schedule(step: PruneStep, total_steps: int) -> Any:
    """The tfmot schedule that reaches the target sparsity within `total_steps` training steps.

    "polynomial" ramps from 0 to the target over the first two thirds of the steps (all of them when
    there are very few); "constant" prunes to the target from the first mask update on. The pruning
    wrappers count steps from 1 and recompute the masks every `frequency` steps; the ramp's end step
    is a multiple of it, so its last update applies exactly the target.
    """
    import tensorflow_model_optimization as tfmot

    ramp_steps = max(1, int(total_steps * PRUNING_RAMP_SHARE))
    frequency = min(MAX_STEPS_BETWEEN_MASK_UPDATES, max(1, ramp_steps // MIN_MASK_UPDATES))
    if step.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            step.target_sparsity, begin_step=0, end_step=-1, frequency=frequency
        )
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=step.target_sparsity,
        begin_step=0,
        end_step=frequency * (ramp_steps // frequency),
        frequency=frequency,
    )
