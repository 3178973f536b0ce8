"""Prefect owns the caching of the pipeline's stages: a cache policy over each stage's real inputs, and
result storage inside the workspace.

A stage's key covers the task, the version of the pipeline's code, and a fingerprint of every input: a
config section as its values (a data section also by its source files' sizes and modification times), a
variant by the content of its model file, a dataset by its content fingerprint, the workspace by its path.
So a change recomputes exactly the stages downstream of it, and an unchanged re-run recomputes nothing.
The stage writes its files into the folder named after its key (`Workspace.stage_dir`); Prefect keeps the
small result (a reference to those files) under <workspace>/cache/results/, and beside it the sha256 of each file
the result names (`<key>.sha256.json`, written first). A cached result is used only while its files match those
checksums: a file changed or damaged since (truncated, overwritten) makes the stage run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultRecord, ResultStore
from prefect.transactions import get_transaction
from pydantic import BaseModel

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data import DatasetRef, source_stamp
from shrinkflow.core.files import file_fingerprint, write_json_atomically
from shrinkflow.core.variants import Variant
from shrinkflow.core.workspace import Workspace

# Every package whose code decides what a stage produces.
CODE_PACKAGES = ("shrinkflow.core", "shrinkflow.tasks", "shrinkflow.flows")
# The flow parameter that turns reuse off: the stages run again, and their new results replace the old.
USE_CACHE_PARAMETER = "use_cache"
# Beside a cached result's record: the sha256 of each file the result names.
CHECKSUMS_SUFFIX = ".sha256.json"


@lru_cache(maxsize=None)
def code_version() -> str:
    """A digest of the pipeline's source files: editing any of them invalidates every cached stage."""
    return source_digest({package: package_folder(package) for package in CODE_PACKAGES})


def source_digest(folders: dict[str, Path]) -> str:
    """A digest of the .py files under each package's folder, with their paths."""
    digest = hashlib.sha256()
    for package, folder in sorted(folders.items()):
        for source in sorted(folder.rglob("*.py")):
            digest.update(f"{package}/{source.relative_to(folder).as_posix()}".encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def package_folder(package: str) -> Path:
    """Where an installed package's source files are (the repository's folder, for an editable install)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not an installed package"
    return Path(next(iter(spec.submodule_search_locations)))


def fingerprint(value: Any) -> Any:
    """What identifies an input of a cached stage, as JSON-able data."""
    if isinstance(value, DataConfig):
        return [value.model_dump(mode="json"), source_stamp(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and not isinstance(value, (Variant, DatasetRef, Workspace)):
        # a step's parameters (shrinkflow.core.steps): its kind and every field
        return [type(value).__name__, {field.name: fingerprint(getattr(value, field.name)) for field in dataclasses.fields(value)}]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Variant):
        return [value.name, value.target_sparsity, value.clusters, file_fingerprint(value.model_path)]
    if isinstance(value, DatasetRef):
        return [value.fingerprint, Path(value.path).name]
    if isinstance(value, Workspace):
        return str(value.root)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, tuple):
        return [fingerprint(item) for item in value]
    raise TypeError(f"a cached stage cannot take a {type(value).__name__}: give it steps, configs, datasets and variants")


class StageInputs(CachePolicy):
    """The cache key of a pipeline stage: its task, the code version and its inputs' fingerprints.

    A cached result whose files are gone (deleted by hand) or no longer match the checksums recorded with it
    (damaged, changed) is forgotten, so the stage runs again; so is every cached result when the flow runs with
    `use_cache` off, so the stage runs and is cached anew.
    """

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str:
        payload = [code_version(), {name: fingerprint(value) for name, value in sorted(inputs.items())}]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
        key = f"{task_ctx.task.name}-{digest}"
        if not flow_parameters.get(USE_CACHE_PARAMETER, True) or _unusable(task_ctx.result_store, key):
            _forget(task_ctx.result_store, key)
        return key


class ChecksummedResults(ResultStore):
    """Prefect's result store, which records with each result the sha256 of every file the result names
    (`output_paths()`), before the result itself: a record without its checksums is never a usable hit."""

    def persist_result_record(self, result_record: ResultRecord[Any], holder: str | None = None) -> None:
        result = result_record.result
        outputs = result.output_paths() if hasattr(result, "output_paths") else ()
        path = _record_path(self, Path(str(result_record.metadata.storage_key)).name)
        if outputs and path is not None:
            write_json_atomically(_checksums_path(path), {output: file_fingerprint(output) for output in outputs})
        super().persist_result_record(result_record, holder)


def keep_results_in(workspace: Workspace) -> None:
    """Keep the results of this run's cached stages in the workspace, beside the files they name, with their
    checksums. Called by a flow, and by a task that runs stages on a Dask worker (the run's result store
    reaches a worker without its class)."""
    store = ChecksummedResults(result_storage=LocalFileSystem(basepath=str(workspace.stage_results)))
    for context in (FlowRunContext.get(), TaskRunContext.get()):
        if context is not None:
            context.result_store = store


def stage_dir(workspace: Workspace) -> Path:
    """The running stage's own folder, named after its cache key (a fresh one for an uncached task)."""
    transaction = get_transaction()
    key = transaction.key if transaction is not None and transaction.key else None
    if key is None:
        raise RuntimeError("stage_dir is for cached stages, inside their task run")
    return workspace.stage_dir(key)


def _record_path(store: ResultStore, key: str) -> Path | None:
    storage = store.result_storage
    return Path(str(storage.basepath)) / key if isinstance(storage, LocalFileSystem) else None


def _checksums_path(record: Path) -> Path:
    return record.with_name(record.name + CHECKSUMS_SUFFIX)


def _unusable(store: ResultStore, key: str) -> bool:
    """Whether the cached result of `key` exists but must not be used: its record unreadable, a file it names
    gone, or one that does not match the checksum recorded with it."""
    path = _record_path(store, key)
    if path is None or not path.exists():
        return False
    try:
        result = store.read(key).result
    except Exception:  # an unreadable record (another version's, a half-written one): not a usable cache hit
        return True
    outputs = result.output_paths() if hasattr(result, "output_paths") else ()
    if any(not Path(output).exists() for output in outputs):
        return True
    try:
        recorded = json.loads(_checksums_path(path).read_text())
    except (OSError, ValueError):  # no checksums: written by a run that died in between, or by another version
        return bool(outputs)
    damaged = [output for output in outputs if recorded.get(output) != file_fingerprint(output)]
    if damaged:
        get_run_logger().warning(
            "%s does not match the checksum recorded when it was cached (damaged or changed since): building it again",
            damaged[0],
        )
    return bool(damaged)


def _forget(store: ResultStore, key: str) -> None:
    path = _record_path(store, key)
    if path is not None:
        path.unlink(missing_ok=True)
        _checksums_path(path).unlink(missing_ok=True)
