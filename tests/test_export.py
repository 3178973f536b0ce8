"""Exports: TF Serving layout, a manifest that matches the files, and nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shrinkflow.core.config import ExportConfig, ModelConfig
from shrinkflow.core.export import MANIFEST_NAME, export_version, sha256_file
from shrinkflow.core.training import build_model, save_for_inference


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.keras"
    save_for_inference(build_model(ModelConfig(family="mlp", hidden_units=(4,)), (3,), 2), path)
    return path


def test_export_writes_a_servable_version_and_a_true_manifest(keras_file: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    target = export_version(
        tmp_path / "exports" / "m" / "1", keras_file, ExportConfig(), {"name": "m", "metrics": {"accuracy": 0.5}},
        extra_files={"variants/extra.bin": keras_file},
    )
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["name"] == "m" and manifest["metrics"] == {"accuracy": 0.5}
    listed = {entry["path"]: entry for entry in manifest["files"]}
    on_disk = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert set(listed) == on_disk
    assert {"saved_model.pb", "model.keras", "variants/extra.bin"} <= on_disk
    for path, entry in listed.items():
        assert entry["sha256"] == sha256_file(target / path)
    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    output = serve(inputs=tf.constant(np.ones((2, 3), np.float32)))
    assert output["probabilities"].shape == (2, 2)


def test_formats_can_be_switched_off(keras_file: Path, tmp_path: Path) -> None:
    target = export_version(tmp_path / "1", keras_file, ExportConfig(saved_model=False), {})
    assert (target / "model.keras").is_file() and not (target / "saved_model.pb").exists()


def test_an_existing_version_is_never_overwritten(keras_file: Path, tmp_path: Path) -> None:
    target = export_version(tmp_path / "1", keras_file, ExportConfig(saved_model=False), {})
    before = (target / MANIFEST_NAME).read_text()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export_version(target, keras_file, ExportConfig(saved_model=False), {"other": True})
    assert (target / MANIFEST_NAME).read_text() == before


def test_a_failure_mid_export_leaves_nothing_behind(keras_file: Path, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    with pytest.raises(FileNotFoundError):
        export_version(exports / "1", keras_file, ExportConfig(), {}, extra_files={"x.bin": tmp_path / "missing"})
    assert list(exports.iterdir()) == []
