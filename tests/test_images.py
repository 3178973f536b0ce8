"""Images and colour: image folders (PNG, JPEG; grayscale, RGB; mixed sizes resized), the CIFAR caches in Keras's
layout, and the exported image-bytes signature, on small generated data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shrinkflow.core.config import DataConfig, ModelConfig
from shrinkflow.core.data import DatasetRef, prepare_dataset, split_rows, split_targets
from shrinkflow.core.data.images import image_files
from shrinkflow.core.errors import DataError
from tests.conftest import REPO
from tests.datasets import load_splits
from tests.test_cli import shrinkflow

CLASSES = ("cat", "dog", "eel")


def write_image_folder(
    root: Path, per_class: int = 10, mode: str = "L", suffix: str = ".png", sizes: tuple[tuple[int, int], ...] = ((8, 8),),
) -> Path:
    """`per_class` random images in a subfolder per class, cycling through `sizes` ([height, width])."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for number in range(per_class):
            height, width = sizes[number % len(sizes)]
            shape = (height, width) if mode == "L" else (height, width, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{number:03d}{suffix}")
    return root


def prepare(tmp_path: Path, **settings: object) -> DatasetRef:
    return prepare_dataset(DataConfig(scaling="none", **settings), tmp_path / "prepared")


def test_a_png_folder_of_mixed_sizes_is_resized_like_keras(tmp_path: Path) -> None:
    import tensorflow as tf

    root = write_image_folder(tmp_path / "pngs", sizes=((8, 8), (12, 10)))
    (root / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pngs" / "stray.png").write_bytes(b"outside any class folder: ignored, as Keras does")

    ref = prepare(tmp_path, source=f"images:{root}", image_size=(6, 6), color_mode="grayscale")

    assert ref.input_shape == (6, 6, 1) and ref.is_image and ref.encoded_images
    assert ref.class_names == CLASSES and ref.class_counts == tuple((name, 10) for name in CLASSES)
    files, _, _ = image_files(root)
    splits = load_splits(ref)
    for split, x in (("train", splits.x_train), ("test", splits.x_test)):
        for row, pixels, label in zip(split_rows(ref, split), x, split_targets(ref, split)):
            expected = tf.image.resize(np.asarray(Image.open(files[row]))[..., None], (6, 6)).numpy()
            np.testing.assert_allclose(pixels, np.round(np.clip(expected, 0, 255)), atol=0)
            assert files[row].parent.name == CLASSES[label]


def test_a_jpeg_folder_in_colour_keeps_its_size(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "jpegs", mode="RGB", suffix=".jpg", sizes=((10, 7),))

    ref = prepare(tmp_path, source=f"images:{root}")  # color_mode defaults to rgb, as in Keras

    assert ref.input_shape == (10, 7, 3)
    files, _, _ = image_files(root)
    for row, pixels in zip(split_rows(ref, "test"), load_splits(ref).x_test):
        # JPEG decoders (TensorFlow's, Pillow's) round differently: a step or two, where another image is ~85 away
        assert np.abs(pixels - np.asarray(Image.open(files[row]).convert("RGB"))).mean() < 2


def test_images_of_another_size_need_image_size(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pngs", sizes=((8, 8), (8, 9)))
    with pytest.raises(DataError, match=r"cat/001\.png: 8 x 9 pixels, but 000\.png \(the first image\) has 8 x 8; set data\.image_size: \[8, 8\]"):
        prepare(tmp_path, source=f"images:{root}", color_mode="grayscale")


@pytest.mark.parametrize("problem", ["corrupt", "empty"])
def test_a_bad_image_folder_exits_2_naming_the_path(tmp_path: Path, problem: str) -> None:
    root = write_image_folder(tmp_path / "pngs")
    if problem == "corrupt":
        (root / "dog" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n but the rest is missing")
        expected = f"{root / 'dog' / '002.png'}: cannot be decoded as an image"
    else:
        (root / "fox").mkdir()
        (root / "fox" / "readme.txt").write_text("no images yet")
        expected = f"{root / 'fox'}: an empty class folder"
    result = shrinkflow(
        "run", str(REPO / "configs" / "digits_cnn.yaml"), "--set", f"data.source=images:{root}",
        "--workspace", str(tmp_path / "ws"), cwd=tmp_path,
    )
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "ws" / "mlflow.db").exists()


def write_cifar_cache(keras_home: Path, source: str, per_batch: int = 15) -> np.ndarray:
    """A tiny CIFAR cache in exactly Keras's layout: python pickles of rows of 3,072 bytes (the red, green and blue
    planes of 32 x 32), bytes keys, labels as lists; returns the rows written, in reading order."""
    rng = np.random.default_rng(1)
    if source == "keras:cifar10":
        folder, names, label_key = keras_home / "datasets" / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
        meta = ("batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072})
    else:
        folder, names, label_key = keras_home / "datasets" / "cifar-100-python", ["train", "test"], b"fine_labels"
        meta = ("meta", {b"fine_label_names": [b"apple", b"aquarium_fish", b"baby"], b"coarse_label_names": [b"x"]})
    folder.mkdir(parents=True)
    rows = []
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        content = {b"batch_label": name.encode(), label_key: [i % 3 for i in range(per_batch)], b"data": data}
        if label_key == b"fine_labels":
            content[b"coarse_labels"] = [0] * per_batch
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
        rows.append(data)
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return np.concatenate(rows)


@pytest.mark.parametrize("source", ["keras:cifar10", "keras:cifar100"])
def test_the_cifar_cache_is_read_as_colour_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    rows = write_cifar_cache(tmp_path, source)

    ref = prepare(tmp_path, source=source)

    assert ref.input_shape == (32, 32, 3) and ref.encoded_images
    assert ref.class_names == (("airplane", "automobile", "bird") if source == "keras:cifar10" else ("apple", "aquarium_fish", "baby"))
    assert sum(count for _, count in ref.class_counts) == len(rows)
    x_test = load_splits(ref).x_test
    for row, image in zip(split_rows(ref, "test"), x_test):
        # pixel (r, c) of channel k is byte k * 1024 + r * 32 + c of the row
        assert image[3, 5, 1] == rows[row][1024 + 3 * 32 + 5] and image[31, 0, 2] == rows[row][2048 + 31 * 32]


def test_an_incomplete_cifar_cache_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    write_cifar_cache(tmp_path, "keras:cifar10")
    (tmp_path / "datasets" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"half a download")
    with pytest.raises(DataError, match=r"data_batch_3: cannot read the CIFAR batch"):
        prepare(tmp_path, source="keras:cifar10")


def test_the_image_bytes_signature_predicts_like_the_pixel_one(tmp_path: Path) -> None:
    """An untrained CNN is as good as a trained one here: what is compared is the two signatures' inputs."""
    import tensorflow as tf

    from shrinkflow.core.export import IMAGE_BYTES_INPUT, IMAGE_BYTES_SIGNATURE, serving_fields, write_saved_model
    from shrinkflow.core.training import model_for, save_for_inference

    root = write_image_folder(tmp_path / "pngs", mode="RGB", sizes=((9, 9), (12, 7)))
    ref = prepare_dataset(DataConfig(source=f"images:{root}", image_size=(8, 8)), tmp_path / "prepared")
    save_for_inference(model_for(ModelConfig(conv_filters=(4,), hidden_units=(8,)), ref), tmp_path / "model.keras")
    write_saved_model(tmp_path / "model.keras", tmp_path / "saved", ref)

    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    files, _, _ = image_files(root)
    x_test = load_splits(ref).x_test
    encoded = tf.constant([files[row].read_bytes() for row in split_rows(ref, "test")])
    from_bytes = loaded.signatures[IMAGE_BYTES_SIGNATURE](**{IMAGE_BYTES_INPUT: encoded})["probabilities"].numpy()
    from_pixels = loaded.signatures["serving_default"](inputs=tf.constant(x_test))["probabilities"].numpy()
    np.testing.assert_allclose(from_bytes, from_pixels, atol=1e-5)
    low, scale = dict(ref.preprocessing)["offset"], dict(ref.preprocessing)["scale"]
    assert serving_fields(ref)["client_preprocessing"].startswith(f"x = (raw - {low:g}) * {scale:.10g}, as float32")


@pytest.mark.e2e
def test_the_flow_ships_an_image_folder_model_that_takes_image_bytes(prefect_harness, tmp_path: Path) -> None:
    """The whole pipeline on a tiny RGB folder: tracked in MLflow, registered, exported with both signatures."""
    import json

    import tensorflow as tf
    from mlflow import MlflowClient

    from shrinkflow.core.workspace import Workspace
    from shrinkflow.flows.pipeline import pipeline
    from tests.conftest import tiny_digits_config

    root = write_image_folder(tmp_path / "pngs", mode="RGB", sizes=((9, 9), (10, 8)))
    config = tiny_digits_config(**{
        "name": "folder_cnn", "data.source": f"images:{root}", "data.image_size": "[8, 8]", "train.epochs": 1,
        "prune.enabled": "false", "quantize.modes": "[]",
    })
    rows = pipeline(config, workspace=str(tmp_path / "ws"))

    workspace = Workspace(tmp_path / "ws")
    assert {row.variant: row.status for row in rows} == {"baseline": "ok"}
    client = MlflowClient(tracking_uri=workspace.tracking_uri(), registry_uri=workspace.tracking_uri())
    [version] = client.search_model_versions("name='folder_cnn'")
    export = workspace.exports / "folder_cnn" / str(version.version)
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["class_names"] == list(CLASSES) and manifest["input_shape"] == [8, 8, 3]
    assert manifest["image_bytes_signature"]["signature"] == "image_bytes"
    served = tf.saved_model.load(str(export)).signatures["image_bytes"](images=tf.constant([(root / "dog" / "000.png").read_bytes()]))
    assert served["probabilities"].shape == (1, 3)


def test_image_settings_belong_to_image_folders() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"image_size and color_mode apply to images:DIR sources only"):
        DataConfig(source="sklearn:digits", image_size=(8, 8), color_mode="rgb")
