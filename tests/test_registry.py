"""Registered versions as served pyfunc models (raw inputs in, answers by class out), on a real MLflow SQLite
store: TFLite files run as the interpreter runs them, the champion alias, and versions logged before the contract."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shrinkflow.core.data import DatasetRef
from shrinkflow.core.names import Runtime
from shrinkflow.core.predictors import CHUNK, load_predictor
from shrinkflow.tracking import served_pyfunc
from shrinkflow.tracking.models import log_and_register_model
from shrinkflow.tracking.registry import CHAMPION_ALIAS, champion_version, predict_with_version
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tracking.store import client_for, fluent_mlflow

INPUT_SHAPE = (4, 4, 1)
CLASSES = ("cat", "dog", "emu")


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny softmax classifier converted to a float TFLite file and to a full-int8 one (int8 io)."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input(INPUT_SHAPE),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(len(CLASSES), activation="softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("tflite")

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (out / "float.tflite").write_bytes(converter.convert())

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.random((1, *INPUT_SHAPE), dtype=np.float32)] for _ in range(32))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (out / "int8.tflite").write_bytes(converter.convert())
    return {"float": out / "float.tflite", "int8": out / "int8.tflite"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    """4x4 grayscale "images" of 0-255 pixels, scaled by 1/255 (minmax), three named classes."""
    x = np.random.default_rng(1).integers(0, 256, (20, *INPUT_SHAPE)).astype(np.float32) / 255
    y = np.arange(20) % len(CLASSES)
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y)
    return DatasetRef(
        path=str(path), fingerprint="test", source="test", input_shape=INPUT_SHAPE, num_classes=len(CLASSES),
        class_names=CLASSES, class_counts=(), split_sizes=(("train", 20), ("validation", 20), ("test", 20)),
        is_image=True, preprocessing=(("kind", "minmax"), ("offset", 0.0), ("scale", 1 / 255)),
    )


@pytest.fixture(autouse=True)
def _restore_mlflow_uris() -> Iterator[None]:
    """The functions under test set MLflow's process-wide URIs; don't leak this test's store."""
    import mlflow

    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> TrackingRef:
    """One SQLite store for the module (creating one takes seconds); each test registers its own name."""
    from mlflow import MlflowClient

    tmp_path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("registry-test", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(experiment_id, run_name="pipeline").info.run_id
    return TrackingRef(uri, experiment_id, parent)


def child_run(tracking: TrackingRef, name: str) -> str:
    """A run to log a model into, nested under the module's parent run as a variant's would be."""
    run = client_for(tracking.tracking_uri).create_run(
        tracking.experiment_id, run_name=name, tags={"mlflow.parentRunId": tracking.parent_run_id}
    )
    return str(run.info.run_id)


@pytest.fixture
def pixels() -> np.ndarray:
    """Raw requests: 7 images of 0-255 pixels, as the source holds them (no channel axis)."""
    return np.random.default_rng(2).integers(0, 256, (7, *INPUT_SHAPE[:-1])).astype(np.float64)


def model_inputs(pixels: np.ndarray) -> np.ndarray:
    return (pixels / 255).reshape(len(pixels), *INPUT_SHAPE).astype(np.float32)


def register(tracking: TrackingRef, path: Path, dataset: DatasetRef, name: str, tags: dict[str, str] | None = None) -> str:
    version = log_and_register_model(tracking, child_run(tracking, name), path, Runtime.TFLITE, dataset, name, tags or {})
    return str(version.version)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_a_registered_tflite_version_answers_raw_pixels_by_class_like_the_interpreter(
    kind: str, tflite_files: dict[str, Path], images: DatasetRef, tracking: TrackingRef, pixels: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow.models.model
    import mlflow.pyfunc

    name = f"images-{kind}"
    version = log_and_register_model(
        tracking, child_run(tracking, kind), tflite_files[kind], Runtime.TFLITE, images, name, {"variant": kind}
    )
    assert int(version.version) == 1 and version.tags == {"variant": kind}
    uri = f"models:/{name}/{version.version}"
    with fluent_mlflow(tracking.tracking_uri):
        requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text()
    assert "ai-edge-litert==" in requirements and "pandas==" in requirements and "tensorflow" not in requirements

    # The logged model carries its own code and must not need shrinkflow to load and predict. MLflow
    # never clears the model a code file last passed to set_model: clear it, or a stale one could load.
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "shrinkflow", None)
        patch.setattr(mlflow.models.model, "__mlflow_model__", None)
        with fluent_mlflow(tracking.tracking_uri):
            model = mlflow.pyfunc.load_model(uri)
        answers = model.predict(pixels)

    expected = load_predictor(tflite_files[kind])(model_inputs(pixels))
    assert list(answers.columns) == ["label", *CLASSES]
    np.testing.assert_allclose(answers[list(CLASSES)].to_numpy(), expected, atol=1e-6)
    assert list(answers["label"]) == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, *INPUT_SHAPE[:-1])
    assert model.metadata.get_output_schema().input_names() == ["label", *CLASSES]
    # One flattened image per row of a one-column DataFrame, as `dataframe_split` sends them, through MLflow's
    # schema enforcement.
    one_column = pd.DataFrame({"pixels": [row.ravel().tolist() for row in pixels]})
    np.testing.assert_allclose(model.predict(one_column)[list(CLASSES)].to_numpy(), expected, atol=1e-6)


def test_predictions_span_several_interpreter_batches(
    tflite_files: dict[str, Path], images: DatasetRef, tracking: TrackingRef, tmp_path: Path
) -> None:
    import mlflow

    x = np.random.default_rng(2).random((CHUNK + 5, *INPUT_SHAPE), dtype=np.float32)
    version = register(tracking, tflite_files["int8"], images, "batches")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/elsewhere.db")  # predict_with_version must set its own
    probabilities = predict_with_version(tracking.tracking_uri, "batches", version, images, x)
    # Through the contract and back (x -> pixels -> x), the int8 input quantization may round a value differently.
    np.testing.assert_allclose(probabilities, load_predictor(tflite_files["int8"])(x), atol=0.01)
    assert (probabilities.argmax(axis=1) == load_predictor(tflite_files["int8"])(x).argmax(axis=1)).mean() > 0.95


def test_champion_is_none_until_the_alias_is_set(
    tflite_files: dict[str, Path], images: DatasetRef, tracking: TrackingRef, pixels: np.ndarray
) -> None:
    uri = tracking.tracking_uri
    assert champion_version(uri, "digits") is None

    for kind in ("float", "int8"):
        register(tracking, tflite_files[kind], images, "digits", {"variant": kind})
    assert champion_version(uri, "digits") is None

    client_for(uri).set_registered_model_alias("digits", CHAMPION_ALIAS, "2")
    champion = champion_version(uri, "digits")
    assert champion is not None and int(champion.version) == 2 and champion.tags["variant"] == "int8"

    x = model_inputs(pixels)
    probabilities = predict_with_version(tracking.tracking_uri, "digits", champion.version, images, x)
    np.testing.assert_allclose(probabilities, load_predictor(tflite_files["int8"])(x), atol=1e-6)


def test_the_gate_matches_classes_by_name(tflite_files: dict[str, Path], images: DatasetRef, tracking: TrackingRef) -> None:
    """A champion trained on data whose classes come in another order answers probabilities that this run's
    metrics take in this run's order."""
    from dataclasses import replace

    version = register(tracking, tflite_files["float"], images, "renamed")
    x = model_inputs(np.full((2, *INPUT_SHAPE[:-1]), 128.0))
    reordered = replace(images, class_names=tuple(reversed(CLASSES)))
    direct = load_predictor(tflite_files["float"])(x)
    np.testing.assert_allclose(predict_with_version(tracking.tracking_uri, "renamed", version, reordered, x), direct[:, ::-1], atol=1e-6)
    with pytest.raises(ValueError, match="no probability for the classes \\['yak'\\]"):
        predict_with_version(tracking.tracking_uri, "renamed", version, replace(images, class_names=("cat", "dog", "yak")), x)


class ScaledFeaturesModel:
    """A version as shrinkflow logged it before the serving contract: model inputs in, probabilities out."""

    def predict(self, context: object, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        flat = np.asarray(model_input, dtype=np.float32).reshape(len(model_input), -1)
        return np.stack([flat.mean(axis=1), 1 - flat.mean(axis=1), np.zeros(len(flat))], axis=1)


def test_a_version_logged_before_the_contract_still_gets_model_inputs(images: DatasetRef, tracking: TrackingRef) -> None:
    import mlflow.pyfunc
    from mlflow.pyfunc import PythonModel

    legacy = type("Legacy", (ScaledFeaturesModel, PythonModel), {})()
    run_id = child_run(tracking, "legacy")
    with fluent_mlflow(tracking.tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=legacy, pip_requirements=["numpy"])
    with fluent_mlflow(tracking.tracking_uri):
        version = mlflow.register_model(info.model_uri, "legacy").version
    x = np.random.default_rng(3).random((5, *INPUT_SHAPE), dtype=np.float32)
    expected = ScaledFeaturesModel().predict(None, x)
    np.testing.assert_allclose(predict_with_version(tracking.tracking_uri, "legacy", version, images, x), expected, atol=1e-6)


def test_importing_the_pyfunc_module_sets_no_mlflow_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.models.model

    monkeypatch.setattr(mlflow.models.model, "__mlflow_model__", None)
    importlib.reload(served_pyfunc)
    assert mlflow.models.model.__mlflow_model__ is None


def test_the_modules_every_model_carries_import_nothing_of_shrinkflow() -> None:
    """served_pyfunc.py ships core/predictors.py and core/serving.py with every model: where shrinkflow is not
    installed they must still import."""
    from shrinkflow.core import predictors, serving
    from tests.test_layers import imports

    for module in (predictors, serving, served_pyfunc):
        assert not [name for name in imports(Path(str(module.__file__))) if name.split(".")[0] == "shrinkflow"], module.__name__


def test_the_manifest_says_what_each_file_takes_and_returns(tflite_files: dict[str, Path], images: DatasetRef) -> None:
    from shrinkflow.core.export import serving_fields
    from shrinkflow.core.predictors import describe_io

    int8 = describe_io(tflite_files["int8"])
    assert int8["input"]["dtype"] == "int8" and int8["input"]["shape"] == [-1, *INPUT_SHAPE]
    assert int8["input"]["quantization"]["scale"] > 0 and int8["output"]["shape"] == [-1, len(CLASSES)]
    assert describe_io(tflite_files["float"])["input"] == {"name": int8["input"]["name"], "dtype": "float32", "shape": [-1, *INPUT_SHAPE]}
    serving = serving_fields(images)["serving"]
    assert serving["registered_model"]["takes"].startswith("samples as the source holds them") and "[n, 4, 4]" in serving["registered_model"]["takes"]
    assert "'label'" in serving["registered_model"]["returns"]
    assert serving["saved_model"]["takes"] == serving["model_files"]["takes"]
    assert serving["model_files"]["takes"].startswith("float32 [n, 4, 4, 1]")
