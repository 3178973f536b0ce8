"""Cached, resumable runs: unchanged stages are skipped (read from Prefect's task states), changed ones
recompute exactly downstream, a killed run resumes, and concurrent runs keep apart."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shrinkflow.core.export import MANIFEST_NAME
from shrinkflow.core.files import file_fingerprint, sha256_file
from shrinkflow.tasks.caching import CHECKSUMS_SUFFIX
from shrinkflow.core.workspace import Workspace
from tests.conftest import ONLY_PRUNE_AND_QUANTIZE, REPO, descendants, subprocess_env, tiny_digits_config

QUICK = {"prune.epochs": 1, "quantize.modes": "[dynamic, int8]"}


def run_and_read_task_states(config, workspace: Path, use_cache: bool = True) -> dict[str, str]:
    """Run the flow; return {task run name: final state name} read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from shrinkflow.flows.pipeline import pipeline

    state = pipeline(config, workspace=str(workspace), use_cache=use_cache, return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    # A stage rebuilt after a stale cache hit has two task runs; the later one is the stage's outcome.
    return {run.name: run.state.name for run in sorted(task_runs, key=lambda run: run.created)}


def stage_states(states: dict[str, str]) -> dict[str, str]:
    """The states of the cached stages: a stage's task run is named after the variant it builds (load-data gets a
    suffix from Prefect); the tracking tasks' runs are left out."""
    stable = {}
    for name, state in states.items():
        if name.startswith("load-data-"):
            stable["load-data"] = state
        elif name.startswith(("baseline", "pruned")):
            stable[name] = state
    return stable


@pytest.fixture(scope="module")
def first_run(prefect_harness, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("cache") / "workspace"
    config = tiny_digits_config(**QUICK)
    states = stage_states(run_and_read_task_states(config, workspace))
    return config, workspace, states


def test_first_run_computes_every_stage(first_run) -> None:
    _, _, states = first_run
    assert states == {
        "load-data": "Completed", "baseline": "Completed", "pruned": "Completed",
        "baseline-dynamic": "Completed", "baseline-int8": "Completed",
        "pruned-dynamic": "Completed", "pruned-int8": "Completed",
    }


def test_unchanged_rerun_skips_every_cached_stage(first_run) -> None:
    config, workspace, _ = first_run
    states = stage_states(run_and_read_task_states(config, workspace))
    assert set(states.values()) == {"Cached"}
    client = MlflowClient(tracking_uri=Workspace(workspace).tracking_uri())
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])
    latest_parent = next(run for run in runs if "mlflow.parentRunId" not in run.data.tags)
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{latest_parent.info.run_id}'"
    )
    assert latest_parent.data.tags["data.cache_hit"] == "true"
    by_variant = {c.data.tags["variant"]: c for c in children}
    baseline = by_variant["baseline"]
    assert baseline.data.tags["cache_hit"] == "true"
    assert Path(baseline.data.tags["reused_artifact"]).is_file()
    # Built by the first run's flow run, not this one's.
    assert baseline.data.tags["reused_from_flow_run"] not in ("", latest_parent.data.tags["prefect.flow_run_id"])
    # The reused evaluation and training history are recorded in this run too, not evaluated again.
    first_baseline = next(
        run for run in client.search_runs([experiment.experiment_id], "tags.variant = 'baseline'")
        if run.data.tags["cache_hit"] == "false"
    )
    assert baseline.data.metrics["accuracy"] == first_baseline.data.metrics["accuracy"]
    assert baseline.data.metrics["latency_ms"] == first_baseline.data.metrics["latency_ms"]
    assert [m.step for m in client.get_metric_history(baseline.info.run_id, "epoch/val_loss")] == [0, 1]
    assert by_variant["pruned-int8"].data.params["parent_variant"] == "pruned"  # a cache hit carries its params too
    # The same file ships, and it already is the champion: no second version of it.
    assert [str(v.version) for v in client.search_model_versions(f"name='{config.name}'")] == ["1"]
    assert latest_parent.data.tags["shipped_variant"] != "none"


def test_each_stage_keeps_its_files_in_a_folder_of_its_own(first_run) -> None:
    """A stage's folder is named after its cache key and shared by every run that reuses it: it holds the
    stage's model, plot and row predictions, written whole (no partial files), and Prefect keeps the stage's
    result beside."""
    _, workspace, _ = first_run
    stages = [path for path in (workspace / "cache").iterdir() if path.name != "results"]
    assert len(stages) == 6  # train, prune and four quantizations; load-data writes under datasets/
    for stage in stages:
        assert sorted(path.name for path in stage.iterdir()) in (
            ["confusion_matrix.png", "model.keras", "predictions.npz"],
            ["confusion_matrix.png", "model.tflite", "predictions.npz"],
        ), stage
    records = sorted(path.name for path in (workspace / "cache" / "results").iterdir() if not path.name.endswith(CHECKSUMS_SUFFIX))
    assert len(records) == 1 + len(stages)
    for record in records:  # the sha256 of each file a result names, recorded with it
        checksums = json.loads((workspace / "cache" / "results" / f"{record}{CHECKSUMS_SUFFIX}").read_text())
        assert checksums and all(
            (sha256_file(path) if Path(path).is_file() else file_fingerprint(path)) == digest for path, digest in checksums.items()
        )
    # the prepared dataset's folder of shards is checksummed too, every file in it
    assert any(Path(path).is_dir() for record in records for path in json.loads(
        (workspace / "cache" / "results" / f"{record}{CHECKSUMS_SUFFIX}").read_text()))


def test_the_code_version_covers_the_tasks_and_the_flow(tmp_path: Path) -> None:
    """Editing a task or the flow changes the code version in every cache key, so no stale output is reused."""
    import shutil

    from shrinkflow.tasks.caching import CODE_PACKAGES, package_folder, source_digest

    copies = {package: tmp_path / package for package in CODE_PACKAGES}
    for package, copy in copies.items():
        shutil.copytree(package_folder(package), copy, ignore=shutil.ignore_patterns("__pycache__"))
    versions = {source_digest(copies)}
    for package, edited in (("shrinkflow.tasks", "stages.py"), ("shrinkflow.flows", "variants.py"), ("shrinkflow.core", "training.py")):
        with open(copies[package] / edited, "a") as source:
            source.write("\n# edited\n")
        versions.add(source_digest(copies))
    assert len(versions) == 4


def test_changing_modes_keeps_training_and_pruning(first_run) -> None:
    config, workspace, _ = first_run
    changed = config.model_copy(update={"quantize": config.quantize.model_copy(update={"modes": ("dynamic", "float16")})})
    states = stage_states(run_and_read_task_states(changed, workspace))
    assert states["baseline"] == states["pruned"] == states["load-data"] == "Cached"
    assert states["baseline-dynamic"] == states["pruned-dynamic"] == "Cached"
    assert states["baseline-float16"] == states["pruned-float16"] == "Completed"


def test_changing_pruning_recomputes_only_downstream_of_it(first_run) -> None:
    config, workspace, _ = first_run
    changed = config.model_copy(update={"prune": config.prune.model_copy(update={"target_sparsity": 0.5})})
    states = stage_states(run_and_read_task_states(changed, workspace))
    assert states["baseline"] == states["load-data"] == "Cached"
    assert states["baseline-dynamic"] == states["baseline-int8"] == "Cached"
    assert states["pruned"] == states["pruned-dynamic"] == states["pruned-int8"] == "Completed"


def test_no_cache_recomputes_everything(first_run) -> None:
    config, workspace, _ = first_run
    states = stage_states(run_and_read_task_states(config, workspace, use_cache=False))
    assert set(states.values()) == {"Completed"}


def test_a_damaged_cached_file_is_rebuilt_not_reused(first_run) -> None:
    """Before: a truncated cached model was used again, and every later run failed (or shipped it) until the
    user deleted the cache or passed --no-cache."""
    config, workspace, _ = first_run
    damaged = sorted((workspace / "cache").glob("quantize-*/model.tflite"))
    assert damaged
    for model in damaged:
        with open(model, "r+b") as file:
            file.truncate(model.stat().st_size // 2)
    started = time.time()
    states = stage_states(run_and_read_task_states(config, workspace))
    assert states["baseline"] == states["pruned"] == states["load-data"] == "Cached"
    assert {states[name] for name in ("baseline-dynamic", "baseline-int8", "pruned-dynamic", "pruned-int8")} == {"Completed"}
    # This config's four quantized files are written whole again, each with its checksum recorded anew (the other
    # configs' files stay damaged until those configs run again).
    recorded = [path for path in (workspace / "cache" / "results").glob(f"quantize-*{CHECKSUMS_SUFFIX}") if path.stat().st_mtime >= started]
    assert len(recorded) == 4
    for checksums in recorded:
        assert all(sha256_file(path) == digest for path, digest in json.loads(checksums.read_text()).items())


def test_a_deleted_cached_file_is_rebuilt(first_run) -> None:
    config, workspace, _ = first_run
    changed = config.model_copy(update={"quantize": config.quantize.model_copy(update={"modes": ("dynamic",)})})
    run_and_read_task_states(changed, workspace)
    for model in (Workspace(workspace).root / "cache").glob("quantize-*/model.tflite"):
        model.unlink()
    states = stage_states(run_and_read_task_states(changed, workspace))
    assert states["baseline"] == "Cached"
    assert states["baseline-dynamic"] == states["pruned-dynamic"] == "Completed"


def cli(workspace: Path, *overrides: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "shrinkflow.cli.main", "run", str(REPO / "configs" / "digits_cnn.yaml"), "--workspace", str(workspace)]
    for key, value in {**{k: str(v) for k, v in QUICK.items()}, "model.conv_filters": "[8]", "model.hidden_units": "[16]",
                       "train.epochs": "2", **ONLY_PRUNE_AND_QUANTIZE, **dict(o.split("=", 1) for o in overrides)}.items():
        args += ["--set", f"{key}={value}"]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=subprocess_env(),
        start_new_session=True,
    )


def wait_for_log_line(process: subprocess.Popen[str], text: str, timeout: float = 300) -> None:
    """Read the run's output until a line containing `text` appears."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in lines.get(timeout=1):
                return
        except queue.Empty:
            assert process.poll() is None, "the run ended before the stage started"
    raise AssertionError(f"no {text!r} within {timeout} s")


@pytest.mark.e2e
def test_a_run_killed_during_pruning_resumes_and_exports_what_an_uninterrupted_run_does(tmp_path: Path) -> None:
    killed_ws, clean_ws = tmp_path / "killed", tmp_path / "clean"
    process = cli(killed_ws, "prune.epochs=30")  # long enough to be caught mid-pruning
    try:
        wait_for_log_line(process, "  baseline ")  # its progress line: trained, measured and recorded
        time.sleep(3)  # pruning (30 epochs) has begun
    finally:
        # Prefect's temporary server runs in a session of its own: kill it too, as a crash would.
        for pid in [process.pid, *descendants(process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
    assert not (killed_ws / "exports").exists()
    assert not list((killed_ws / "cache").glob("prune-*/model.keras"))  # nothing half-written

    resumed = cli(killed_ws, "prune.epochs=30")
    uninterrupted = cli(clean_ws, "prune.epochs=30")
    outputs = [p.communicate(timeout=600)[0] for p in (resumed, uninterrupted)]
    assert resumed.returncode == 0, outputs[0][-3000:]
    assert uninterrupted.returncode == 0, outputs[1][-3000:]

    client = MlflowClient(tracking_uri=Workspace(killed_ws).tracking_uri())
    experiment = client.get_experiment_by_name("digits_cnn")
    baselines = client.search_runs([experiment.experiment_id], "tags.variant = 'baseline'", order_by=["start_time ASC"])
    assert [run.data.tags["cache_hit"] for run in baselines] == ["false", "true"], [l for l in outputs[0].splitlines() if "train-baseline" in l or "load-data" in l]  # training was not repeated
    # The killed run's MLflow runs do not stay RUNNING: the resumed run closed them.
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    killed, resumed_parent = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert (killed.info.status, resumed_parent.info.status) == ("KILLED", "FINISHED")
    assert resumed_parent.info.run_id in killed.data.tags["abandoned"]
    killed_children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{killed.info.run_id}'")
    assert "baseline" in {run.data.tags["variant"] for run in killed_children}
    assert "RUNNING" not in {run.info.status for run in killed_children}  # each recorded variant closed itself

    def exported(workspace: Path) -> tuple[dict[str, str], dict[str, float]]:
        """The TFLite files' hashes and every variant's accuracy (Keras and SavedModel files embed
        their save time, so their bytes differ between identical models)."""
        manifest = json.loads((workspace / "exports" / "digits_cnn" / "1" / MANIFEST_NAME).read_text())
        tflite = {entry["path"]: entry["sha256"] for entry in manifest["files"] if entry["path"].endswith(".tflite")}
        accuracy = {name: entry["metrics"]["accuracy"] for name, entry in manifest["variants"].items()}
        return tflite, accuracy

    assert exported(killed_ws) == exported(clean_ws)


@pytest.mark.e2e
def test_two_different_configs_run_at_the_same_time_without_interfering(tmp_path: Path) -> None:
    workspace = tmp_path / "shared"
    first = cli(workspace, "name=first", "quantize.modes=[dynamic]", "prune.enabled=false")
    second = cli(workspace, "name=second", "quantize.modes=[int8]", "prune.enabled=false", "model.hidden_units=[24]")
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0, outputs[0][-3000:]
    assert second.returncode == 0, outputs[1][-3000:]
    client = MlflowClient(tracking_uri=Workspace(workspace).tracking_uri())
    for name, variant in (("first", "baseline-dynamic"), ("second", "baseline-int8")):
        manifest = json.loads((workspace / "exports" / name / "1" / MANIFEST_NAME).read_text())
        assert manifest["name"] == name and variant in manifest["variants"]
        [parent] = client.search_runs(
            [client.get_experiment_by_name(name).experiment_id], "tags.`shrinkflow.config_hash` != ''"
        )
        assert parent.info.status == "FINISHED"
        assert client.get_model_version(name, "1").tags["config_hash"] == manifest["config_hash"]
