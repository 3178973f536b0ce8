"""The registered model's versions and the champion's history: every move of the alias `champion` (by a pipeline
run's gate, `shrinkflow promote` or `shrinkflow rollback`) goes through `move_champion`, which records it in MLflow
beside the alias and points the export's TF Serving config (<exports>/<name>/models.config) at the new champion.

The history is the registered model's tag `shrinkflow.champion_history`: a JSON list of moves, oldest first, each
{version, from_version, at, by, user, reason}; `by` is the pipeline run's name, "promote" or "rollback". It keeps
the newest moves that fit HISTORY_CHARS.

A move writes three things, in this order, so that a crash between any two leaves nothing that lies:
1. the history with the move appended (written ahead),
2. the alias,
3. models.config, derived from the alias: `shrinkflow models` says when it lags, and promoting the champion
   again rewrites it.
Until step 2 is done, the move is the history's last entry while the alias still names its from_version: readers
drop such an entry (`effective`), so a move that never happened is never shown or rolled back to. A step that raises
undoes the steps before it, newest first.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from sqlalchemy.exc import SQLAlchemyError

from shrinkflow.core.config import QUALITY_METRICS
from shrinkflow.core.export import SERVING_CONFIG_NAME, read_manifest, served_version, write_serving_config
from shrinkflow.core.errors import UserError
from shrinkflow.tracking.registry import CHAMPION_ALIAS, ModelNotFound, require_model, resolve_version
from shrinkflow.tracking.store import client_for

HISTORY_TAG = "shrinkflow.champion_history"
# A registered model's tag value in MLflow's SQL stores is a VARCHAR(5000) (SQLite does not enforce it, PostgreSQL
# and MySQL do): the oldest moves go first when the history would not fit.
HISTORY_CHARS = 5000
REASON_CHARS = 300  # the gate's full reason stays on the version's promotion_reason tag
PROMOTE, ROLLBACK = "promote", "rollback"
# The pipeline run's tag with the export folder of the version it shipped.
EXPORT_PATH_TAG = "export_path"
# The version tags `shrinkflow models` shows: the quality the gate measured, then the decisive size.
SHOWN_TAGS = (*dict.fromkeys(metric for metrics in QUALITY_METRICS.values() for metric in metrics), "gzip_size_bytes")


@dataclass(frozen=True)
class Move:
    """One move of the alias: to `version` from `from_version` (None: the first champion), when (UTC, ISO 8601),
    by whom (the pipeline run's name, PROMOTE or ROLLBACK), the user of the process that moved it, and why."""

    version: str
    from_version: str | None
    at: str
    by: str
    user: str
    reason: str


@dataclass(frozen=True)
class ChampionMoved:
    """What a promotion or rollback did: the move (None: the version already was the champion) and the TF Serving
    config now serving the champion (None: its export folder is not on this machine)."""

    move: Move | None
    serving_config: Path | None


@dataclass(frozen=True)
class VersionRow:
    """A registered version as `shrinkflow models` lists it."""

    version: str
    created: datetime
    variant: str | None
    tags: dict[str, str]
    run_name: str | None  # the pipeline run that registered it
    aliases: tuple[str, ...]
    export: Path | None  # its export folder, when it is on this machine
    refused_by_gate: str | None  # why the pipeline run's gate did not make it the champion


@dataclass(frozen=True)
class ModelVersions:
    """A registered model's versions (newest first), its champion and the champion's history (oldest first)."""

    name: str
    versions: list[VersionRow]
    champion: str | None
    history: list[Move]

    def export_of(self, version: str | None) -> Path | None:
        return next((row.export for row in self.versions if row.version == version), None)


def describe_model(tracking_uri: str, name: str) -> ModelVersions:
    """Every version of the registered model `name`, with the pipeline run that registered it and its export.

    Raises:
        ModelNotFound: no such registered model (naming those there are).
    """
    client = client_for(tracking_uri)
    champion, history = champion_history(tracking_uri, name)
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    runs: dict[str | None, tuple[str | None, Path | None]] = {}
    rows = []
    for version in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        number = str(version.version)
        if version.run_id not in runs:
            runs[version.run_id] = _pipeline_run(client, version.run_id)
        run_name, export = runs[version.run_id]
        rows.append(VersionRow(
            number, datetime.fromtimestamp(version.creation_timestamp / 1000, timezone.utc), version.tags.get("variant"),
            {key: version.tags[key] for key in SHOWN_TAGS if key in version.tags}, run_name,
            tuple(sorted(aliases.get(number, []))), export if _holds(export, name, number) else None,
            version.tags.get("promotion_reason") if version.tags.get("promoted") == "false" else None,
        ))
    return ModelVersions(name, rows, champion, history)


def champion_history(tracking_uri: str, name: str) -> tuple[str | None, list[Move]]:
    """The champion's version (None without one) and the moves that made it, oldest first.

    Raises:
        ModelNotFound: no such registered model.
    """
    model = require_model(tracking_uri, name)
    champion = model.aliases.get(CHAMPION_ALIAS)
    champion = None if champion is None else str(champion)
    return champion, effective(parse_history(model.tags.get(HISTORY_TAG)), champion)


def promote(tracking_uri: str, name: str, version: str, reason: str) -> ChampionMoved:
    """Move the alias to `version`, the user's decision (no gate). If it already is the champion, nothing moves and
    nothing is recorded, but models.config is rewritten: that is how one that lags behind the alias is repaired.

    Raises:
        ModelNotFound: no such model, or no such version of it.
    """
    resolve_version(tracking_uri, f"{name}/{version}")
    champion, _ = champion_history(tracking_uri, name)
    if champion == version:
        return ChampionMoved(None, point_export(tracking_uri, name, version))
    return move_champion(tracking_uri, name, version, PROMOTE, reason)


def roll_back(tracking_uri: str, name: str, reason: str) -> ChampionMoved:
    """Move the alias back to the champion before the current one.

    Raises:
        UserError: no champion, no earlier one in the history, or that version is no longer registered.
    """
    champion, history = champion_history(tracking_uri, name)
    if champion is None:
        raise UserError(f"{name!r} has no champion, so nothing to roll back; choose one: shrinkflow promote {name} VERSION --reason TEXT")
    previous = previous_champion(history, champion)
    if previous is None:
        raise UserError(
            f"{name!r}: nothing to roll back to: version {champion} is the first champion in its history "
            f"(shrinkflow models {name}); promote another version instead: shrinkflow promote {name} VERSION --reason TEXT"
        )
    try:
        resolve_version(tracking_uri, f"{name}/{previous}")
    except ModelNotFound as exc:
        raise UserError(f"the champion before version {champion} was version {previous}, which is gone: {exc}") from None
    return move_champion(tracking_uri, name, previous, ROLLBACK, reason)


def move_champion(tracking_uri: str, name: str, version: str, by: str, reason: str) -> ChampionMoved:
    """Point the alias `champion` at `version` and record the move (the one way the alias moves; see the module's
    note for the order of the writes)."""
    client = client_for(tracking_uri)
    version = str(version)
    champion, history = champion_history(tracking_uri, name)
    move = Move(version, champion, _now(), by, _user(), reason[:REASON_CHARS])
    _write_history(client, name, [*history, move])
    try:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        try:
            serving_config = point_export(tracking_uri, name, version)
        except BaseException:
            _set_alias(client, name, champion)
            raise
    except BaseException:
        _write_history(client, name, history)
        raise
    return ChampionMoved(move, serving_config)


def undo_move(tracking_uri: str, name: str, version: str, previous: str | None) -> None:
    """Take back the move to `version` from `previous` (a shipment rolled back): the alias, then its history entry,
    then models.config, the reverse of move_champion's order. Nothing to do if the alias is not at `version`."""
    client = client_for(tracking_uri)
    version, previous = str(version), None if previous is None else str(previous)
    champion, history = champion_history(tracking_uri, name)
    if champion != version:
        return
    undone = _version_export(client, name, version)
    _set_alias(client, name, previous)
    if history and (history[-1].version, history[-1].from_version) == (version, previous):
        _write_history(client, name, history[:-1])
    if previous is not None:
        point_export(tracking_uri, name, previous)
    elif undone is not None:
        (undone.parent / SERVING_CONFIG_NAME).unlink(missing_ok=True)


def point_export(tracking_uri: str, name: str, version: str) -> Path | None:
    """Point models.config beside `version`'s export folder at it; None when that folder is not on this machine
    (the run that exported it ran elsewhere, or the folder was removed)."""
    folder = _version_export(client_for(tracking_uri), name, version)
    return None if folder is None else write_serving_config(folder.parent, name, version)


def serving_config(model: ModelVersions) -> tuple[Path, str | None] | None:
    """(models.config, the version it serves: None if it serves none) beside the model's export folders; None when
    none of them is on this machine."""
    folder = model.export_of(model.champion) or next((row.export for row in model.versions if row.export), None)
    return None if folder is None else (folder.parent / SERVING_CONFIG_NAME, served_version(folder.parent))


@contextmanager
def store_errors(tracking_uri: str) -> Iterator[None]:
    """A store that fails (a file that is not an MLflow database, a server gone since it answered) as a UserError:
    one line."""
    try:
        yield
    except (MlflowException, SQLAlchemyError) as exc:
        detail = (exc.message if isinstance(exc, MlflowException) else str(exc)).strip().splitlines()[0][:300]
        raise UserError(
            f"the MLflow store at {tracking_uri} failed: {detail}; name the store that holds the model "
            "(--workspace DIR, --tracking-uri URI or MLFLOW_TRACKING_URI)"
        ) from None


def pipeline_run_name(tracking_uri: str, run_id: str) -> str:
    return str(client_for(tracking_uri).get_run(run_id).info.run_name)


def parse_history(text: str | None) -> list[Move]:
    """The moves in the history tag; an entry that is not one (the tag edited by hand) is skipped."""
    try:
        entries = json.loads(text or "[]")
    except ValueError:
        return []
    moves = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            moves.append(Move(**entry))
        except TypeError:
            continue
    return moves


def effective(history: Sequence[Move], champion: str | None) -> list[Move]:
    """The history without a last move that never happened: written ahead of an alias move that failed or was
    interrupted, so the alias still names that move's from_version."""
    if history and history[-1].version != champion and history[-1].from_version == champion:
        return list(history[:-1])
    return list(history)


def lineage(history: Sequence[Move], champion: str | None) -> list[str]:
    """The champions in the order they succeeded each other, the current one last, as rollbacks undo them: a
    promotion or a gate's move stacks its version, a rollback takes the stack back down to its version. An alias
    moved outside shrinkflow (the MLflow UI) counts as a move too."""
    stack: list[str] = []
    for move in history:
        if move.by == ROLLBACK:
            while stack and stack[-1] != move.version:
                stack.pop()
            stack = stack or [move.version]
            continue
        if move.from_version is not None and (not stack or stack[-1] != move.from_version):
            stack.append(move.from_version)
        stack.append(move.version)
    if champion is not None and (not stack or stack[-1] != champion):
        stack.append(champion)
    return stack


def previous_champion(history: Sequence[Move], champion: str | None) -> str | None:
    """The version a rollback returns to: the champion before the current one; None if there was none."""
    stack = lineage(history, champion)
    return stack[-2] if len(stack) > 1 else None


def _write_history(client: MlflowClient, name: str, history: Sequence[Move]) -> None:
    entries = [asdict(move) for move in history]
    text = json.dumps(entries, separators=(",", ":"))
    while len(text) > HISTORY_CHARS and len(entries) > 1:
        entries.pop(0)
        text = json.dumps(entries, separators=(",", ":"))
    client.set_registered_model_tag(name, HISTORY_TAG, text)


def _set_alias(client: MlflowClient, name: str, version: str | None) -> None:
    """Point the alias at `version`, or remove it (None)."""
    if version is not None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    elif CHAMPION_ALIAS in client.get_registered_model(name).aliases:
        client.delete_registered_model_alias(name, CHAMPION_ALIAS)


def _pipeline_run(client: MlflowClient, run_id: str | None) -> tuple[str | None, Path | None]:
    """(name, export folder) of the pipeline run that registered a version from its child run `run_id`."""
    if not run_id:  # registered from outside a run
        return None, None
    try:
        run = client.get_run(run_id)
        parent_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        parent = client.get_run(parent_id) if parent_id else run
    except MlflowException:  # the run was deleted
        return None, None
    export = parent.data.tags.get(EXPORT_PATH_TAG)
    return parent.info.run_name, Path(export) if export else None


def _version_export(client: MlflowClient, name: str, version: str) -> Path | None:
    """`version`'s export folder, if it is on this machine and holds that version."""
    registered: ModelVersion = client.get_model_version(name, version)
    _, folder = _pipeline_run(client, registered.run_id)
    return folder if _holds(folder, name, version) else None


def _holds(folder: Path | None, name: str, version: str) -> bool:
    manifest = None if folder is None else read_manifest(folder)
    return manifest is not None and (manifest.get("name"), str(manifest.get("version"))) == (name, version)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return "unknown"
