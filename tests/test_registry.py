"""TFLite variants as registered pyfunc model versions, on a real MLflow SQLite store."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shrinkflow.core.predictors import load_predictor
from shrinkflow.tracking import tflite_pyfunc
from shrinkflow.tracking.models import log_and_register_tflite_model
from shrinkflow.tracking.registry import CHAMPION_ALIAS, champion_version, predict_with_version
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tracking.store import client_for, fluent_mlflow

INPUT_SHAPE = (4, 4, 1)
NUM_CLASSES = 3


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
            tf_keras.layers.Dense(NUM_CLASSES, activation="softmax"),
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
def features() -> np.ndarray:
    return np.random.default_rng(1).random((7, *INPUT_SHAPE), dtype=np.float32)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_a_registered_tflite_version_predicts_like_the_interpreter(
    kind: str,
    tflite_files: dict[str, Path],
    tracking: TrackingRef,
    features: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow.models.model
    import mlflow.pyfunc

    name = f"digits-{kind}"
    run_id = child_run(tracking, kind)
    version = log_and_register_tflite_model(
        tracking, run_id, str(tflite_files[kind]), name, {"variant": kind, "format": "tflite"}
    )
    assert int(version.version) == 1
    assert version.run_id == run_id
    assert version.tags == {"variant": kind, "format": "tflite"}

    with fluent_mlflow(tracking.tracking_uri):
        requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/{version.version}")).read_text()
    assert "ai-edge-litert==" in requirements and "numpy==" in requirements

    # The logged model carries its own code and must not need shrinkflow to load and predict. MLflow
    # never clears the model a code file last passed to set_model: clear it, or a stale one could load.
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "shrinkflow", None)
        patch.setattr(mlflow.models.model, "__mlflow_model__", None)
        with fluent_mlflow(tracking.tracking_uri):
            model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        probabilities = model.predict(features)

    expected = load_predictor(tflite_files[kind])(features)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(features), NUM_CLASSES)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, *INPUT_SHAPE)
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, NUM_CLASSES)

    # A DataFrame with one flattened sample per row, through MLflow's schema enforcement (as served)...
    one_column = pd.DataFrame({"x": [row.ravel().tolist() for row in features]})
    np.testing.assert_allclose(model.predict(one_column), expected, atol=1e-6)
    # ...and one feature per column, straight into the Python model.
    wide = pd.DataFrame(features.reshape(len(features), -1))
    np.testing.assert_allclose(model.unwrap_python_model().predict(None, wide), expected, atol=1e-6)


def test_predictions_span_several_interpreter_batches(
    tflite_files: dict[str, Path], tracking: TrackingRef, tmp_path: Path
) -> None:
    import mlflow

    x = np.random.default_rng(2).random((tflite_pyfunc.BATCH_SIZE + 5, *INPUT_SHAPE), dtype=np.float32)
    run_id = child_run(tracking, "int8")
    version = log_and_register_tflite_model(tracking, run_id, str(tflite_files["int8"]), "batches", {})
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/elsewhere.db")  # predict_with_version must set its own
    probabilities = predict_with_version(tracking.tracking_uri, "batches", version.version, x)
    np.testing.assert_allclose(probabilities, load_predictor(tflite_files["int8"])(x), atol=1e-6)


def test_champion_is_none_until_the_alias_is_set(
    tflite_files: dict[str, Path], tracking: TrackingRef, features: np.ndarray
) -> None:
    uri = tracking.tracking_uri
    assert champion_version(uri, "digits") is None

    for kind in ("float", "int8"):
        run_id = child_run(tracking, kind)
        log_and_register_tflite_model(tracking, run_id, str(tflite_files[kind]), "digits", {"variant": kind})
    assert champion_version(uri, "digits") is None

    client_for(uri).set_registered_model_alias("digits", CHAMPION_ALIAS, "2")
    champion = champion_version(uri, "digits")
    assert champion is not None and int(champion.version) == 2 and champion.tags["variant"] == "int8"

    probabilities = predict_with_version(tracking.tracking_uri, "digits", champion.version, features)
    np.testing.assert_allclose(probabilities, load_predictor(tflite_files["int8"])(features), atol=1e-6)


def test_importing_the_pyfunc_module_sets_no_mlflow_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.models.model

    monkeypatch.setattr(mlflow.models.model, "__mlflow_model__", None)
    importlib.reload(tflite_pyfunc)
    assert mlflow.models.model.__mlflow_model__ is None
