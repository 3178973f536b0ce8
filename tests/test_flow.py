"""The whole pipeline as a real Prefect flow, tracked in a real MLflow SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from shrinkflow.evaluation import METRIC_NAMES
from shrinkflow.export import MANIFEST_NAME, sha256_file
from shrinkflow.workspace import Workspace
from tests.conftest import REPO, subprocess_env, tiny_digits_config


@pytest.fixture(scope="module")
def finished_run(prefect_harness, tmp_path_factory):
    """One tiny digits run, shared by the read-back tests below."""
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("flow") / "workspace"
    config = tiny_digits_config()
    rows = pipeline(config, workspace=str(root))
    workspace = Workspace(root)
    client = MlflowClient(tracking_uri=workspace.tracking_uri(), registry_uri=workspace.tracking_uri())
    return config, rows, workspace, client


def parent_and_children(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def test_flow_returns_a_summary_row_per_variant(finished_run) -> None:
    _, rows, _, _ = finished_run
    assert [row["variant"] for row in rows] == ["baseline"]
    assert 0.5 < rows[0]["accuracy"] <= 1.0
    assert rows[0]["registered_version"] == "1"


def test_mlflow_parent_and_child_runs(finished_run) -> None:
    config, _, _, client = finished_run
    parent, children = parent_and_children(client, config.name)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.epochs"] == "2"
    assert parent.data.params["model.family"] == "cnn"
    assert parent.data.tags["prefect.flow_run_id"]
    assert len(parent.data.tags["data.fingerprint"]) == 64
    assert parent.data.params["data.num_classes"] == "10"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "dataset.json", "summary.json"} <= artifacts

    [baseline] = children
    assert baseline.data.tags["variant"] == "baseline"
    assert baseline.info.status == "FINISHED"
    assert set(METRIC_NAMES) <= set(baseline.data.metrics)
    epoch_history = client.get_metric_history(baseline.info.run_id, "val_loss")
    assert [m.step for m in epoch_history] == [0, 1]
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(baseline.info.run_id)}


def test_registered_version_points_at_the_logged_model(finished_run) -> None:
    import mlflow.pyfunc

    config, _, workspace, client = finished_run
    _, [baseline] = parent_and_children(client, config.name)
    version = client.get_model_version(config.name, "1")
    assert version.run_id == baseline.info.run_id
    assert version.tags["variant"] == "baseline"
    mlflow.set_tracking_uri(workspace.tracking_uri())
    model = mlflow.pyfunc.load_model(f"models:/{config.name}/1")
    probabilities = np.asarray(model.predict(np.zeros((3, 8, 8, 1), dtype=np.float32)))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


def test_export_layout_and_manifest(finished_run) -> None:
    config, _, workspace, client = finished_run
    parent, [baseline] = parent_and_children(client, config.name)
    version_dir = workspace.exports / config.name / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "model.keras").is_file()
    manifest = json.loads((version_dir / MANIFEST_NAME).read_text())
    assert manifest["mlflow_run_id"] == parent.info.run_id
    assert manifest["config_hash"] == config.config_hash()
    assert manifest["metrics"]["accuracy"] == pytest.approx(baseline.data.metrics["accuracy"])
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert "saved_model.pb" in listed and "model.keras" in listed
    for path, entry in listed.items():
        assert sha256_file(version_dir / path) == entry["sha256"]
        assert (version_dir / path).stat().st_size == entry["size_bytes"]
    assert not [p for p in (workspace.exports / config.name).iterdir() if p.name.startswith(".")]


def test_saved_model_in_a_fresh_process_reproduces_the_logged_accuracy(finished_run) -> None:
    config, _, workspace, client = finished_run
    _, [baseline] = parent_and_children(client, config.name)
    script = f"""
import json, sys
import shrinkflow, numpy as np, tensorflow as tf
from shrinkflow.config import load_config
from shrinkflow.data import prepare_dataset, load_splits
config = load_config({str(REPO / 'configs' / 'digits_cnn.yaml')!r})
splits = load_splits(prepare_dataset(config.data, {str(workspace.datasets)!r}))
serve = tf.saved_model.load({str(workspace.exports / config.name / '1')!r}).signatures["serving_default"]
probabilities = serve(inputs=tf.constant(splits.x_test))["probabilities"].numpy()
print(json.dumps(float((probabilities.argmax(1) == splits.y_test).mean())))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(), check=True, cwd=REPO
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == pytest.approx(baseline.data.metrics["accuracy"])


@pytest.mark.parametrize(
    ("name", "overrides", "error", "failed_children"),
    [
        ("missing-data", {"data.source": "missing.csv", "model.family": "mlp"}, "missing.csv", 0),
        ("cnn-on-table", {"data.source": str(REPO / "examples" / "wine.csv"), "data.label_column": "cultivar"}, "cnn needs image data", 1),
    ],
)
def test_a_failed_run_marks_mlflow_failed_and_ships_nothing(
    prefect_harness, workspace: Path, name: str, overrides: dict[str, str], error: str, failed_children: int
) -> None:
    from flows.pipeline import pipeline
    from shrinkflow.errors import UserError

    config = tiny_digits_config(name=name, **overrides)
    with pytest.raises(UserError, match=error):
        pipeline(config, workspace=str(workspace))
    ws = Workspace(workspace)
    client = MlflowClient(tracking_uri=ws.tracking_uri(), registry_uri=ws.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert {run.info.status for run in runs} == {"FAILED"}
    assert len(runs) == 1 + failed_children
    assert not (ws.exports / name).exists()
    assert client.search_model_versions(f"name='{name}'") == []
