"""Shipping is all or nothing: registration, export and the champion alias commit together with the run,
or not at all; and a workspace reused with a fresh MLflow store still ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shrinkflow.core.export import MANIFEST_NAME, served_version
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking import versions
from tests.conftest import tiny_digits_config

QUICK = {"prune.enabled": "false", "quantize.modes": "[dynamic]"}


def client_of(workspace: Path) -> MlflowClient:
    uri = Workspace(workspace).tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_run_that_fails_after_shipping_rolls_the_shipment_back(
    prefect_harness, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection at the last step before the run completes (the comparison report): the version the run
    registered is deleted, its export removed, and the alias goes back to the champion it had."""
    from shrinkflow.flows.pipeline import pipeline

    config = tiny_digits_config(name="rolled_back", **QUICK)
    [first] = [row for row in pipeline(config, workspace=str(workspace)) if row.selected]
    assert (first.version, first.promoted) == ("1", True)

    def report_fails(*args: object, **kwargs: object) -> None:
        raise OSError("disk full while writing the report")

    monkeypatch.setattr("shrinkflow.tasks.report.write_comparison", report_fails)
    better = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 4})})
    with pytest.raises(OSError, match="disk full"):
        pipeline(better, workspace=str(workspace))

    client = client_of(workspace)
    assert [str(v.version) for v in client.search_model_versions("name='rolled_back'")] == ["1"]
    assert str(client.get_model_version_by_alias("rolled_back", "champion").version) == "1"
    assert sorted(p.name for p in (Workspace(workspace).exports / "rolled_back").iterdir() if p.is_dir()) == ["1"]
    parents = [r for r in client.search_runs([client.get_experiment_by_name("rolled_back").experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]
    # The failed run's gate had moved the alias; its rollback took the move back out of the champion's history too,
    # and the TF Serving config serves version 1 again.
    [failed] = [r for r in parents if r.info.status == "FAILED"]
    [shipped] = [r for r in parents if r.info.status == "FINISHED"]
    assert failed.data.tags["promoted"] == "true"
    champion, history = versions.champion_history(Workspace(workspace).tracking_uri(), "rolled_back")
    assert [(move.version, move.from_version, move.by) for move in history] == [("1", None, shipped.info.run_name)]
    assert served_version(Workspace(workspace).exports / "rolled_back") == "1"


def test_the_first_shipment_rolled_back_leaves_no_registered_model(
    prefect_harness, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shrinkflow.flows.pipeline import pipeline

    monkeypatch.setattr("shrinkflow.tasks.report.write_comparison", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        pipeline(tiny_digits_config(name="never_shipped", **QUICK), workspace=str(workspace))
    client = client_of(workspace)
    assert client.search_registered_models() == []
    assert not (Workspace(workspace).exports / "never_shipped").exists()


def test_a_workspace_reused_with_a_fresh_store_ships_and_sets_the_old_exports_aside(
    prefect_harness, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: FileExistsError on exports/<name>/1 after registering version 1 in the new store. The old
    folders are moved aside, so TF Serving (which serves the highest number) serves what the registry says."""
    from shrinkflow.flows.pipeline import pipeline

    config = tiny_digits_config(name="reused", **QUICK)
    pipeline(config, workspace=str(workspace))
    longer = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 3})})
    pipeline(longer, workspace=str(workspace))  # versions 1 and 2 in the first store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}")  # the same workspace

    [shipped] = [row for row in pipeline(config, workspace=str(workspace)) if row.selected]
    assert shipped.version == "1"
    exports = Workspace(workspace).exports / "reused"
    assert sorted(p.name for p in exports.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["1"]
    assert served_version(exports) == "1"  # the new store's champion, not the old store's version 2
    [aside] = (exports / ".superseded").iterdir()
    assert sorted(p.name for p in aside.iterdir()) == ["1", "2"]
    manifest = json.loads((exports / "1" / MANIFEST_NAME).read_text())
    registered = client_of(workspace).get_model_version("reused", "1")
    assert manifest["variants"][manifest["selected_variant"]]["mlflow_run_id"] == registered.run_id
