"""Model building and training on tiny real data (scikit-learn digits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shrinkflow.core.config import DataConfig, ModelConfig, TrainConfig
from shrinkflow.core.data import prepare_dataset
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.training import build_model, load_keras_model, make_learning_rate, make_optimizer, train_baseline


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return prepare_dataset(DataConfig(max_samples=400), tmp_path_factory.mktemp("datasets"))


def test_cnn_and_mlp_layers_follow_the_config() -> None:
    cnn = build_model(ModelConfig(family="cnn", conv_filters=(4, 6), hidden_units=(12,), dropout=0.1), (8, 8, 1), 10)
    kinds = [type(layer).__name__ for layer in cnn.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense"]
    assert [layer.filters for layer in cnn.layers if hasattr(layer, "filters")] == [4, 6]
    assert cnn.output_shape == (None, 10)

    mlp = build_model(ModelConfig(family="mlp", hidden_units=(128,), dropout=0.2, l2=0.01), (13,), 3)
    assert [type(layer).__name__ for layer in mlp.layers] == ["Flatten", "Dense", "Dropout", "Dense"]
    assert mlp.layers[1].units == 128 and mlp.layers[2].rate == 0.2
    assert mlp.layers[1].kernel_regularizer.l2 == pytest.approx(0.01)


def test_cnn_on_flat_features_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model.family: cnn needs image data .* shape \[13\]"):
        build_model(ModelConfig(family="cnn"), (13,), 3)


@pytest.mark.parametrize(
    ("name", "expected_class"), [("adam", "Adam"), ("sgd", "SGD"), ("rmsprop", "RMSprop"), ("adagrad", "Adagrad")]
)
def test_every_optimizer_builds(name: str, expected_class: str) -> None:
    optimizer = make_optimizer(TrainConfig(optimizer=name, learning_rate=0.05, momentum=0.5), steps_per_epoch=10)
    assert type(optimizer).__name__ == expected_class
    if name == "sgd":
        assert float(optimizer.momentum) == pytest.approx(0.5)


def test_exponential_schedule_decays_once_per_epoch() -> None:
    assert make_learning_rate(TrainConfig(learning_rate=0.1), 10) == 0.1
    schedule = make_learning_rate(TrainConfig(lr_schedule="exponential", learning_rate=0.1, decay_rate=0.5), 10)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.05)
    assert float(schedule(20)) == pytest.approx(0.025)


def test_training_learns_logs_every_epoch_and_saves_a_reloadable_model(digits, tmp_path: Path) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    history = train_baseline(
        digits, ModelConfig(conv_filters=(8,), hidden_units=(16,)), TrainConfig(epochs=3, batch_size=32),
        tmp_path / "model.keras", on_epoch=lambda epoch, logs: seen.append((epoch, logs)),
    )
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert set(seen[0][1]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert seen[-1][1]["loss"] < seen[0][1]["loss"]
    assert history["epochs_run"] == 3
    model = load_keras_model(tmp_path / "model.keras")
    assert model.optimizer is None  # saved for inference: no optimizer state in the file
    assert model.predict(np.zeros((2, 8, 8, 1), np.float32), verbose=0).shape == (2, 10)


def test_same_seed_same_weights(digits, tmp_path: Path) -> None:
    configs = ModelConfig(family="mlp", hidden_units=(8,)), TrainConfig(epochs=1, batch_size=64, seed=7)
    train_baseline(digits, *configs, tmp_path / "a.keras")
    train_baseline(digits, *configs, tmp_path / "b.keras")
    for a, b in zip(load_keras_model(tmp_path / "a.keras").get_weights(), load_keras_model(tmp_path / "b.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_ends_training_when_validation_loss_stops_improving(digits, tmp_path: Path) -> None:
    # A learning rate this large makes the validation loss blow up after the first epoch.
    history = train_baseline(
        digits, ModelConfig(family="mlp", hidden_units=(8,)),
        TrainConfig(epochs=30, optimizer="sgd", learning_rate=5.0, early_stopping_patience=2),
        tmp_path / "model.keras",
    )
    assert history["epochs_run"] < 30
