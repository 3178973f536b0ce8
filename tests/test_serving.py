"""Serving registered models as users call them: `shrinkflow serve-model` (MLflow's scoring server on 127.0.0.1,
started with a PATH that has no uvicorn) for a table classifier with string labels (shipped by the real pipeline),
a regression, a text model and an image model. Raw inputs go in as `dataframe_split` and `inputs`; the answers
name the classes and carry the targets' units, and reproduce the test metrics the run reported on the same rows;
a malformed request gets MLflow's 400 naming the column."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shrinkflow.cli.main import main
from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.data import DatasetRef, prepare_dataset, split_rows
from shrinkflow.core.workspace import Workspace
from tests.conftest import REPO, subprocess_env

SERVER_START_TIMEOUT_S = 240
# Small and quick: what is served is under test, not how good it is.
QUICK = ["distill.students=[]", "prune.enabled=false", "cluster.enabled=false", "onnx.enabled=false", "select.max_quality_drop=1"]
# name: (preset, overrides, how the variant is built when not by the pipeline: the TFLite mode, or None for Keras)
MODELS: dict[str, tuple[str, list[str], str | None]] = {
    "wine_mlp": ("tabular_csv.yaml", ["train.epochs=10", "quantize.modes=[dynamic]"], "pipeline"),
    "diabetes_mlp": ("diabetes_regression.yaml", ["train.epochs=5", "model.hidden_units=[16]"], "int8"),
    "debian_sections": ("text_debian.yaml", [
        "data.max_samples=400", "model.embedding_dim=8", "model.conv_filters=[16]", "model.hidden_units=[8]", "train.epochs=2",
    ], "dynamic"),
    "digits_cnn": ("digits_cnn.yaml", ["model.conv_filters=[4]", "model.hidden_units=[16]", "train.epochs=3"], None),
}


@dataclass(frozen=True)
class Served:
    """A registered model behind its own scoring server, the raw test rows of its data and what its run reported."""

    config: PipelineConfig
    url: str
    raw: pd.DataFrame | np.ndarray  # the test split's inputs as the source holds them
    truth: np.ndarray  # the test split's labels (as the data names them) or targets (in their units)
    reported: dict[str, float]  # the registered variant's test metrics, as its run logged them


def config_of(name: str) -> PipelineConfig:
    preset, sets, _ = MODELS[name]
    return load_config(REPO / "configs" / preset, [*QUICK, *sets])


def raw_test_rows(config: PipelineConfig, dataset: DatasetRef) -> tuple[pd.DataFrame | np.ndarray, np.ndarray]:
    """The test split as the source holds it: its rows, by the source row numbers the prepared dataset keeps
    (data.split_rows), read from the source itself."""
    cfg = config.data
    rows = split_rows(dataset, "test")
    if cfg.source == "sklearn:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images[rows], digits.target[rows].astype(str)
    if cfg.source == "sklearn:diabetes":
        from sklearn.datasets import load_diabetes

        diabetes = load_diabetes(scaled=False, as_frame=True)
        return diabetes.data.iloc[rows].reset_index(drop=True), diabetes.target.to_numpy()[rows].reshape(len(rows), -1)
    table = pd.read_csv(REPO / cfg.source).iloc[rows].reset_index(drop=True)
    truth = table[cfg.label_column].astype(str).to_numpy()
    features = table[[cfg.text_column]] if cfg.text_column is not None else table.drop(columns=[cfg.label_column])
    return features, truth


def build_and_register(name: str, mode: str | None, dataset: DatasetRef, workspace: Path, tmp: Path) -> dict[str, float]:
    """Train the preset's model (and convert it to TFLite in `mode`) with the pipeline's stage functions, and
    register it as version 1 of `name` in the workspace's store; returns the variant's test metrics."""
    from mlflow import MlflowClient

    from shrinkflow.core import stages
    from shrinkflow.core.names import Quantization
    from shrinkflow.core.steps import QuantizeStep, Steps
    from shrinkflow.tracking.models import log_and_register_model
    from shrinkflow.tracking.runs import TrackingRef

    steps = Steps.from_config(config_of(name))
    (tmp / "train").mkdir()
    (tmp / "tflite").mkdir()
    variant = stages.train_stage(steps.train, dataset, tmp / "train")
    if mode is not None:
        variant = stages.quantize_stage(QuantizeStep(Quantization(mode), representative_samples=50), variant, dataset, tmp / "tflite")
    uri = Workspace(workspace).tracking_uri()
    client = MlflowClient(uri, uri)
    experiment_id = client.create_experiment(name, artifact_location=(workspace / "mlartifacts" / name).as_uri())
    run_id = client.create_run(experiment_id, run_name=variant.name).info.run_id
    log_and_register_model(TrackingRef(uri, experiment_id, run_id), run_id, variant.model_path, variant.runtime, dataset, name, {})
    return variant.metrics


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving") / "workspace"


@pytest.fixture(scope="module")
def servers(prefect_harness, workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """The wine table through the real pipeline, which registers and promotes its champion, served by
    `shrinkflow serve-model` in a process of its own, started with a PATH that has no venv (MLflow's own
    `models serve` would not find uvicorn); the other three trained with the stage functions, registered, and
    served by the same scoring server (shrinkflow.tracking.scoring) in threads of this process, which has
    imported everything already."""
    from mlflow import MlflowClient

    from shrinkflow.deployments.processes import free_ports
    from shrinkflow.flows.pipeline import pipeline
    from shrinkflow.tracking import registry, scoring

    ports = dict(zip(MODELS, free_ports(len(MODELS))))
    pipeline(config_of("wine_mlp"), workspace=str(workspace))
    log = tmp_path_factory.mktemp("logs") / "serve-model.log"
    with log.open("w") as output:
        command = subprocess.Popen(
            [sys.executable, "-m", "shrinkflow.cli.main", "serve-model", "wine_mlp@champion", "--port", str(ports["wine_mlp"]),
             "--workspace", str(workspace)],
            stdout=output, stderr=subprocess.STDOUT, env={**subprocess_env(), "PATH": "/usr/bin:/bin"}, cwd=workspace.parent,
        )
    threads: list[tuple[Any, threading.Thread]] = []
    try:
        uri = Workspace(workspace).tracking_uri()
        champion = MlflowClient(uri, uri).get_model_version_by_alias("wine_mlp", "champion")
        reported = {"wine_mlp": MlflowClient(uri, uri).get_run(champion.run_id).data.metrics}
        datasets = {"wine_mlp": prepare_dataset(config_of("wine_mlp").data, workspace / "datasets")}
        for name, (_, _, mode) in MODELS.items():
            if mode == "pipeline":
                continue
            datasets[name] = dataset = prepare_dataset(config_of(name).data, workspace / "datasets")
            reported[name] = build_and_register(name, mode, dataset, workspace, tmp_path_factory.mktemp(name))
            model_dir = scoring.download_version(uri, registry.resolve_version(uri, f"{name}/1"), tmp_path_factory.mktemp(f"{name}-model"))
            server = scoring.scoring_server(model_dir, "127.0.0.1", ports[name])
            threads.append((server, threading.Thread(target=server.run, name=f"serve-{name}", daemon=True)))
            threads[-1][1].start()
        served = {
            name: Served(config_of(name), f"http://127.0.0.1:{ports[name]}", *raw_test_rows(config_of(name), datasets[name]), reported[name])
            for name in MODELS
        }
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        for model in served.values():
            while not ping(model.url):
                assert command.poll() is None and time.monotonic() < deadline, f"a server did not start:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
        yield served
    finally:
        command.terminate()
        for server, _ in threads:
            server.should_exit = True
        for _, thread in threads:
            thread.join(timeout=30)
        try:
            command.wait(timeout=30)
        except subprocess.TimeoutExpired:
            command.kill()
            command.wait()


def ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answers(url: str, body: dict[str, Any]) -> pd.DataFrame:
    status, reply = post(url, body)
    assert status == 200, reply
    return pd.DataFrame(reply["predictions"])


def split_body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


@pytest.mark.e2e
def test_a_table_classifier_answers_raw_rows_with_its_labels_and_reproduces_its_accuracy(servers: dict[str, Served]) -> None:
    wine = servers["wine_mlp"]
    classes = sorted(set(wine.truth))
    assert classes == ["class_0", "class_1", "class_2"]
    assert isinstance(wine.raw, pd.DataFrame) and "od280/od315_of_diluted_wines" in wine.raw.columns  # unscaled, as in the file
    by_split = answers(wine.url, split_body(wine.raw))
    assert list(by_split.columns) == ["label", *classes]
    np.testing.assert_allclose(by_split[classes].sum(axis=1), 1.0, atol=0.02)
    assert (by_split[classes].to_numpy().argmax(axis=1) == [classes.index(label) for label in by_split["label"]]).all()
    # The wine run's accuracy as MLflow has it: to 4 significant digits.
    assert (by_split["label"] == wine.truth).mean() == pytest.approx(wine.reported["accuracy"], abs=5e-5)
    by_records = answers(wine.url, {"inputs": wine.raw.to_dict(orient="records")})
    pd.testing.assert_frame_equal(by_records, by_split)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda rows: rows.drop(columns=["alcohol"]), "Model is missing inputs ['alcohol']"),
        (lambda rows: rows.assign(alcohol="abc"), "column alcohol"),
        (lambda rows: rows.assign(magnesium=None), "column 'magnesium', row 0: no value"),
    ],
    ids=["missing column", "text in a number column", "missing value"],
)
def test_a_malformed_request_gets_a_400_naming_the_column(servers: dict[str, Served], spoil: Any, expected: str) -> None:
    wine = servers["wine_mlp"]
    assert isinstance(wine.raw, pd.DataFrame)
    rows = spoil(wine.raw.head(2))
    body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.astype(object).where(rows.notna(), None).values.tolist()}}
    status, reply = post(wine.url, body)
    assert status == 400 and expected in reply["message"], reply


@pytest.mark.e2e
def test_a_regression_answers_in_the_targets_units_and_reproduces_its_rmse(servers: dict[str, Served]) -> None:
    diabetes = servers["diabetes_mlp"]
    assert isinstance(diabetes.raw, pd.DataFrame)
    by_columns = answers(diabetes.url, {"inputs": diabetes.raw.to_dict(orient="list")})
    assert list(by_columns.columns) == ["target"]
    predicted = by_columns["target"].to_numpy()
    assert 25 <= predicted.mean() <= 346  # disease progression runs from 25 to 346, not standardized units
    rmse = float(np.sqrt(np.mean((predicted - diabetes.truth[:, 0]) ** 2)))
    assert rmse == pytest.approx(diabetes.reported["rmse"], rel=1e-6)


@pytest.mark.e2e
def test_a_text_model_answers_raw_descriptions_and_reproduces_its_accuracy(servers: dict[str, Served]) -> None:
    debian = servers["debian_sections"]
    assert isinstance(debian.raw, pd.DataFrame)
    replies = answers(debian.url, split_body(debian.raw))
    assert list(replies.columns) == ["label", "fonts", "games", "graphics", "science", "sound"]
    assert (replies["label"] == debian.truth).mean() == pytest.approx(debian.reported["accuracy"], abs=1e-9)


@pytest.mark.e2e
def test_an_image_model_answers_raw_pixels_and_reproduces_its_accuracy(servers: dict[str, Served]) -> None:
    digits = servers["digits_cnn"]
    assert isinstance(digits.raw, np.ndarray) and digits.raw.shape[1:] == (8, 8) and digits.raw.max() == 16
    replies = answers(digits.url, {"inputs": digits.raw.tolist()})
    assert list(replies.columns) == ["label", *map(str, range(10))]
    assert (replies["label"] == digits.truth).mean() == pytest.approx(digits.reported["accuracy"], abs=1e-9)
    flattened = answers(digits.url, {"dataframe_split": {"columns": ["pixels"], "data": [[row.ravel().tolist()] for row in digits.raw[:3]]}})
    pd.testing.assert_frame_equal(flattened, replies.head(3))


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("nope", "no registered model 'nope'"),
        ("wine_mlp@staging", "model 'wine_mlp' has no alias 'staging'; its aliases: @champion (version 1)"),
        ("wine_mlp/7", "model 'wine_mlp' has no version 7; its versions: 1"),
        ("wine_mlp/x", "expected NAME/version"),
    ],
)
def test_serve_model_refuses_what_the_registry_does_not_hold(
    servers: dict[str, Served], workspace: Path, reference: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from shrinkflow.deployments.processes import free_port

    assert main(["serve-model", reference, "--port", str(free_port()), "--workspace", str(workspace)]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.e2e
def test_serve_model_refuses_a_taken_port(servers: dict[str, Served], workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = servers["wine_mlp"].url.rsplit(":", 1)[1]
    assert main(["serve-model", "wine_mlp", "--port", port, "--workspace", str(workspace)]) == 2
    assert f"--port {port}: 127.0.0.1:{port} is already in use; choose another port" in capsys.readouterr().err


def test_the_text_vectorization_is_tensorflows(tmp_path: Path) -> None:
    """The served model's own tokenizer (no TensorFlow) gives the training split's token ids on every text."""
    config = load_config(REPO / "configs" / "text_debian.yaml", ["data.max_samples=2000"])
    dataset = prepare_dataset(config.data, tmp_path)
    from shrinkflow.core.contract import served_model

    texts = [*pd.read_csv(REPO / config.data.source)[config.data.text_column].astype(str), "Ünïcode ÀND pünctuation: it's-a (test)!\t tabs\u00a0nbsp", "", "   "]
    from tf_keras.layers import TextVectorization

    from shrinkflow.core.data import load_vocabulary

    vectorizer = TextVectorization(vocabulary=load_vocabulary(dataset)[2:], output_sequence_length=config.data.sequence_length)
    served = served_model(lambda x: x, dataset)
    expected = vectorizer(np.array(texts)).numpy()
    np.testing.assert_array_equal(served.token_ids(texts), expected)
    np.testing.assert_array_equal(served.model_inputs(pd.DataFrame({"description": texts})), expected)


def test_encoded_images_predict_like_their_pixels(tmp_path: Path) -> None:
    """An image-bytes contract (image folders): PNG and JPEG bytes decoded and resized inside predict as the same
    pixels do."""
    import tensorflow as tf

    from shrinkflow.core.contract import serving_contract
    from shrinkflow.core.serving import IMAGE_BYTES, RequestError, ServedModel

    dataset = prepare_dataset(config_of("digits_cnn").data, tmp_path)
    pixels = raw_test_rows(config_of("digits_cnn"), dataset)[0][:4].astype(np.uint8)
    model = lambda x: x.reshape(len(x), -1)[:, :10]  # noqa: E731  (the first ten scaled pixels stand in for probabilities)
    by_pixels = ServedModel(model, serving_contract(dataset)).predict(pixels.astype(np.float64))
    contract = serving_contract(dataset) | {"input": {"kind": IMAGE_BYTES, "column": "image", "image_size": [8, 8], "color_mode": "grayscale"}}
    images = ServedModel(model, contract)
    png = [tf.io.encode_png(image[..., None]).numpy() for image in pixels]
    pd.testing.assert_frame_equal(images.predict(pd.DataFrame({"image": png})), by_pixels)
    bigger = [tf.io.encode_png(tf.image.resize(image[..., None], (16, 16), method="nearest")).numpy() for image in pixels]
    assert images.model_inputs({"image": bigger}).shape == (4, 8, 8, 1)
    with pytest.raises(RequestError, match="column 'image', row 1: not an image"):
        images.predict(pd.DataFrame({"image": [png[0], base64.b64encode(b"not an image")]}))
