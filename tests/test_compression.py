"""Pruning, TFLite conversion and quantization-aware training on tiny real data (scikit-learn digits)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shrinkflow.core.compression import CompressionError, convert_to_tflite, prune, quantization_aware_train
from shrinkflow.core.config import DataConfig, ModelConfig, TrainConfig
from shrinkflow.core.data import DatasetRef, prepare_dataset
from shrinkflow.core.evaluation import evaluate_model_file
from shrinkflow.core.kernels.keras import keras_sparsity
from shrinkflow.core.kernels.tflite import tflite_sparsity
from shrinkflow.core.names import Quantization
from shrinkflow.core.steps import FineTuning, PruneStep, QuantizeStep
from shrinkflow.core.training import load_keras_model, train_baseline

# 280 training samples make 10 full batches of 28: no ragged last batch, so Keras traces each
# training function once, which keeps this file fast.
TRAIN = TrainConfig(epochs=3, batch_size=28, learning_rate=0.02, early_stopping_patience=None)
TARGET_SPARSITY = 0.8
PRUNE = PruneStep(TARGET_SPARSITY, "polynomial", FineTuning(2, 3e-3, TRAIN.batch_size, TRAIN.seed, "crossentropy"))
# Enough fine-tuning for plain QAT to visibly move a pruned model's zeros.
QAT = QuantizeStep(Quantization.QAT, tuning=FineTuning(2, 1e-3, TRAIN.batch_size, TRAIN.seed, "crossentropy"))


def post_training(mode: str, representative_samples: int = 0, int8_io: bool = False) -> QuantizeStep:
    """The step of a post-training conversion; "float32" is the plain reference conversion."""
    return QuantizeStep(Quantization.NONE if mode == "float32" else Quantization(mode), representative_samples, int8_io)
CHANCE = 0.1  # ten digit classes


@dataclass(frozen=True)
class Baseline:
    path: Path
    sha256: str
    accuracy: float


@dataclass(frozen=True)
class Pruned:
    path: Path
    sparsity: float


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def accuracy(model_path: Path, dataset: DatasetRef, tmp_path: Path) -> float:
    return evaluate_model_file(model_path, dataset, tmp_path / "evaluation", latency_repeats=1).metrics["accuracy"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    return prepare_dataset(DataConfig(max_samples=400), tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def baseline(digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """A tiny trained CNN, its file's hash and its test accuracy, taken before anything else reads it."""
    out_dir = tmp_path_factory.mktemp("baseline")
    path = out_dir / "model.keras"
    train_baseline(digits, ModelConfig(conv_filters=(8,), hidden_units=(32,)), TRAIN, path)
    return Baseline(path, sha256(path), accuracy(path, digits, out_dir))


@pytest.fixture(scope="module")
def pruned(baseline: Baseline, digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory) -> Pruned:
    path = tmp_path_factory.mktemp("pruned") / "model.keras"
    return Pruned(path, prune(baseline.path, digits, PRUNE, path))


@pytest.fixture(scope="module")
def baseline_tflite(
    baseline: Baseline, digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The baseline converted in every mode, int8 twice: with float and with int8 input and output."""
    out_dir = tmp_path_factory.mktemp("baseline-tflite")
    variants = {
        "float32": post_training("float32"),
        "dynamic": post_training("dynamic"),
        "float16": post_training("float16"),
        "int8": post_training("int8", representative_samples=100),
        "int8-io": post_training("int8", representative_samples=100, int8_io=True),
    }
    paths = {}
    for name, step in variants.items():
        paths[name] = out_dir / f"{name}.tflite"
        convert_to_tflite(baseline.path, step, digits, paths[name])
    return paths


def litert_io_dtypes(tflite_path: Path) -> tuple[type, type]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    return interpreter.get_input_details()[0]["dtype"], interpreter.get_output_details()[0]["dtype"]


def no_files_but(directory: Path, *names: str) -> bool:
    """Nothing in `directory` except `names`: no output, no leftover temporary file."""
    return sorted(path.name for path in directory.iterdir()) == sorted(names)


# --- pruning -------------------------------------------------------------------------------------


def test_pruning_reaches_the_target_and_leaves_the_baseline_untouched(
    baseline: Baseline, pruned: Pruned, digits: DatasetRef, tmp_path: Path
) -> None:
    assert sha256(baseline.path) == baseline.sha256
    assert accuracy(baseline.path, digits, tmp_path) == baseline.accuracy
    assert keras_sparsity(load_keras_model(baseline.path)) == 0.0

    assert pruned.sparsity == pytest.approx(TARGET_SPARSITY, abs=0.02)
    model = load_keras_model(pruned.path)
    assert keras_sparsity(model) == pruned.sparsity
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense"
    ]  # pruning wrappers stripped
    assert accuracy(pruned.path, digits, tmp_path) > 3 * CHANCE


def test_constant_schedule_reaches_the_target_too(baseline: Baseline, digits: DatasetRef, tmp_path: Path) -> None:
    out_path = tmp_path / "constant.keras"
    sparsity = prune(baseline.path, digits, dataclasses.replace(PRUNE, schedule="constant"), out_path)
    assert sparsity == pytest.approx(TARGET_SPARSITY, abs=0.02)
    assert keras_sparsity(load_keras_model(out_path)) == sparsity
    assert sha256(baseline.path) == baseline.sha256


def hand_made_model(tmp_path: Path) -> tuple[Path, float]:
    """A conv + dense model with known zeros in its kernels and all-zero biases, saved; and its kernel sparsity."""
    from tf_keras import Sequential, layers

    inner = Sequential([layers.Dense(3, bias_initializer="zeros")])
    model = Sequential([
        layers.Input(shape=(8, 8, 1)),
        layers.Conv2D(2, 3, padding="same", bias_initializer="zeros"),
        layers.MaxPooling2D(2),
        layers.Flatten(),  # 4 * 4 * 2 = 32 features
        inner,  # nested models count too
        layers.Dense(10, activation="softmax", bias_initializer="zeros"),
    ])
    rng = np.random.default_rng(0)
    zeros = 0
    for layer, zero_count in ((model.layers[0], 9), (inner.layers[0], 40), (model.layers[-1], 0)):
        kernel = rng.uniform(0.1, 1.0, size=layer.kernel.shape) * rng.choice([-1, 1], size=layer.kernel.shape)
        kernel.flat[rng.choice(kernel.size, size=zero_count, replace=False)] = 0.0
        layer.kernel.assign(kernel)
        zeros += zero_count
    path = tmp_path / "hand-made.keras"
    model.save(path)
    return path, zeros / (3 * 3 * 1 * 2 + 32 * 3 + 3 * 10)


def test_keras_sparsity_counts_exact_zeros_of_kernels_only(tmp_path: Path) -> None:
    from tf_keras import Sequential, layers

    path, expected = hand_made_model(tmp_path)
    assert expected == pytest.approx(49 / 144)
    assert keras_sparsity(load_keras_model(path)) == expected  # the zero biases do not count
    assert keras_sparsity(Sequential([layers.Input(shape=(3,)), layers.Flatten()])) == 0.0


# --- TFLite conversion ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["float32", "dynamic", "float16", "int8", "int8-io"])
def test_every_mode_converts_and_runs_in_litert(
    variant: str, baseline: Baseline, baseline_tflite: dict[str, Path], digits: DatasetRef, tmp_path: Path
) -> None:
    tflite_accuracy = accuracy(baseline_tflite[variant], digits, tmp_path)
    assert tflite_accuracy > 5 * CHANCE
    assert tflite_accuracy == pytest.approx(baseline.accuracy, abs=0.1)
    io_dtype = np.int8 if variant == "int8-io" else np.float32
    assert litert_io_dtypes(baseline_tflite[variant]) == (io_dtype, io_dtype)
    # A dense model: only the few weights that int8 rounds to zero.
    assert tflite_sparsity(baseline_tflite[variant]) < 0.05


def test_quantized_files_are_smaller_than_float32(baseline_tflite: dict[str, Path]) -> None:
    size = {name: path.stat().st_size for name, path in baseline_tflite.items()}
    assert size["float16"] < size["float32"]
    for name in ("dynamic", "int8", "int8-io"):
        assert size[name] < 0.6 * size["float32"], size


def test_tflite_sparsity_counts_the_same_zeros_as_keras(tmp_path: Path, digits: DatasetRef) -> None:
    path, expected = hand_made_model(tmp_path)
    for mode in ("float32", "float16", "dynamic"):
        out_path = tmp_path / f"{mode}.tflite"
        convert_to_tflite(path, post_training(mode), digits, out_path)
        # Kernel values are at least 0.1 in magnitude: no weight but the pruned ones rounds to 0.
        assert tflite_sparsity(out_path) == pytest.approx(expected, abs=1e-12), mode


@pytest.mark.parametrize("mode", ["int8", "float16", "dynamic"])
def test_pruned_model_keeps_its_sparsity_through_conversion(
    mode: str, pruned: Pruned, baseline_tflite: dict[str, Path], digits: DatasetRef, tmp_path: Path
) -> None:
    out_path = tmp_path / f"pruned-{mode}.tflite"
    convert_to_tflite(pruned.path, post_training(mode, representative_samples=100), digits, out_path)
    assert tflite_sparsity(out_path) == pytest.approx(pruned.sparsity, abs=0.01)
    assert accuracy(out_path, digits, tmp_path) == pytest.approx(accuracy(pruned.path, digits, tmp_path), abs=0.1)
    if mode == "float16":  # stored sparse-encoded
        assert out_path.stat().st_size < 0.8 * baseline_tflite["float16"].stat().st_size


# --- quantization-aware training -----------------------------------------------------------------


def test_qat_converts_to_an_int8_model_that_runs(baseline: Baseline, digits: DatasetRef, tmp_path: Path) -> None:
    out_path = tmp_path / "qat.tflite"
    quantization_aware_train(baseline.path, digits, QAT, out_path, preserve_sparsity=False)
    assert accuracy(out_path, digits, tmp_path) >= baseline.accuracy - 0.1  # two more epochs of fine-tuning may add
    assert litert_io_dtypes(out_path) == (np.float32, np.float32)
    assert sha256(baseline.path) == baseline.sha256


def test_pruning_preserving_qat_keeps_the_zeros_that_plain_qat_loses(
    pruned: Pruned, digits: DatasetRef, tmp_path: Path
) -> None:
    preserving, plain = tmp_path / "pqat.tflite", tmp_path / "qat.tflite"
    quantization_aware_train(pruned.path, digits, QAT, preserving, preserve_sparsity=True)
    quantization_aware_train(pruned.path, digits, QAT, plain, preserve_sparsity=False)
    assert tflite_sparsity(preserving) == pytest.approx(pruned.sparsity, abs=0.01)
    assert tflite_sparsity(plain) < pruned.sparsity - 0.2
    pruned_accuracy = accuracy(pruned.path, digits, tmp_path)
    for path in (preserving, plain):
        assert accuracy(path, digits, tmp_path) >= pruned_accuracy - 0.1


# --- failures ------------------------------------------------------------------------------------


def test_a_missing_or_corrupt_model_raises_and_writes_nothing(digits: DatasetRef, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a keras archive")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for source, problem in ((tmp_path / "missing.keras", "model file not found"), (corrupt, "cannot load")):
        with pytest.raises(CompressionError, match=problem):
            convert_to_tflite(source, post_training("dynamic"), digits, out_dir / "model.tflite")
        with pytest.raises(CompressionError, match=problem):
            quantization_aware_train(source, digits, QAT, out_dir / "model.tflite", preserve_sparsity=True)
        with pytest.raises(CompressionError, match=problem):
            prune(source, digits, PRUNE, out_dir / "model.keras")
    assert no_files_but(out_dir)


def test_bad_requests_are_refused_before_any_work(baseline: Baseline, digits: DatasetRef, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qat is not a post-training mode"):
        convert_to_tflite(baseline.path, QAT, digits, tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="representative_samples"):
        convert_to_tflite(baseline.path, post_training("int8", representative_samples=0), digits, tmp_path / "model.tflite")
    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a TFLite model"):
        tflite_sparsity(not_tflite)
    assert no_files_but(tmp_path, "model.tflite")
