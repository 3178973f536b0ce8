"""`shrinkflow models NAME`, `shrinkflow promote NAME VERSION --reason TEXT` and `shrinkflow rollback NAME`: a
registered model's versions, its champion and the champion's history, without the MLflow UI."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from shrinkflow.core.errors import UserError

if TYPE_CHECKING:
    from shrinkflow.tracking.versions import ChampionMoved, ModelVersions, Move

EXIT_OK = 0
SHOWN = 20  # versions and moves `models` lists without --all


def models(args: argparse.Namespace) -> int:
    uri = tracking_store(args.workspace, args.tracking_uri)  # first, before MLflow is imported: fail fast
    from shrinkflow.core.tables import text_table
    from shrinkflow.tracking import versions

    with versions.store_errors(uri):
        model = versions.describe_model(uri, args.name)
    shown = model.versions if args.all else model.versions[:SHOWN]
    if model.champion is not None and model.champion not in {row.version for row in shown}:
        shown = [*shown, *(row for row in model.versions if row.version == model.champion)]
    tags = [tag for tag in versions.SHOWN_TAGS if any(tag in row.tags for row in shown)]
    champion = f"version {model.champion}" if model.champion else "none"
    count = f"{len(model.versions)} version{'' if len(model.versions) == 1 else 's'}"
    print(f"{model.name}: {count} in {uri}; champion: {champion}\n")
    print(text_table(
        ["version", "created", "variant", *tags, "run", "aliases"],
        [[row.version, _local(row.created), row.variant, *(row.tags.get(tag) for tag in tags), row.run_name,
          ", ".join(row.aliases)] for row in shown],
    ))
    if len(shown) < len(model.versions):
        print(f"({len(model.versions) - len(shown)} older versions: --all lists them)")
    for row in shown:
        if row.refused_by_gate:
            print(f"version {row.version}: its run's gate kept the champion: {row.refused_by_gate}")
    print()
    _print_export(model)
    _print_history(model, args.all)
    return EXIT_OK


def promote(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not reason:
        raise UserError("--reason: say why this version becomes the champion (it is recorded in the champion history)")
    uri = tracking_store(args.workspace, args.tracking_uri)
    from shrinkflow.tracking import versions

    with versions.store_errors(uri):
        moved = versions.promote(uri, args.name, str(args.version), reason)
    if moved.move is None:
        print(f"version {args.version} already is the champion of {args.name!r}: nothing moved, nothing recorded")
    _print_moved(args.name, moved)
    return EXIT_OK


def rollback(args: argparse.Namespace) -> int:
    uri = tracking_store(args.workspace, args.tracking_uri)
    from shrinkflow.tracking import versions

    with versions.store_errors(uri):
        moved = versions.roll_back(uri, args.name, args.reason.strip() or versions.ROLLBACK)
    _print_moved(args.name, moved)
    return EXIT_OK


def tracking_store(workspace_flag: str | None, tracking_uri_flag: str | None = None) -> str:
    """The MLflow store a command reads the registry of: --tracking-uri, else the workspace's (MLFLOW_TRACKING_URI,
    else its SQLite file, as `shrinkflow run` tracks). Refused when it cannot hold the model: a SQLite file that
    does not exist (MLflow would create an empty one), a URI of no known kind, a server that does not answer."""
    from shrinkflow.core.environment import check_tracking_uri
    from shrinkflow.core.workspace import Workspace

    workspace = Workspace.resolve(workspace_flag)
    uri = tracking_uri_flag or workspace.tracking_uri()
    database = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not database.is_file():
        where = f"--tracking-uri {uri}" if tracking_uri_flag else f"workspace {workspace.root}"
        raise UserError(
            f"no MLflow store at {database} ({where}): nothing was registered there yet; run `shrinkflow run CONFIG` "
            "first, or name the store that holds the model (--workspace DIR, or MLFLOW_TRACKING_URI)"
        )
    check_tracking_uri(uri, "--tracking-uri" if tracking_uri_flag else None)
    return uri


def _print_moved(name: str, moved: ChampionMoved) -> None:
    move = moved.move
    if move is not None:
        print(
            f"the champion of {name!r} is now version {move.version} (was {move.from_version or 'none'}); "
            f"recorded: {_by(move)} at {_local(move.at)}: {move.reason}"
        )
    version = f"version {move.version}" if move else "the champion"
    if moved.serving_config is not None:
        print(f"TF Serving config {moved.serving_config} serves {version}")
    else:
        print(f"the export folder of {version} is not on this machine: no TF Serving config (models.config) was rewritten")


def _print_export(model: ModelVersions) -> None:
    from shrinkflow.tracking.versions import serving_config

    export = model.export_of(model.champion)
    config = serving_config(model)
    if config is None or model.champion is None:
        return
    path, served = config
    if served == model.champion:
        print(f"the champion's export: {export}; TF Serving's config {path} serves it")
    else:
        print(
            f"the champion's export: {export or 'not on this machine'}; warning: TF Serving's config {path} serves "
            f"{'version ' + served if served else 'nothing'}, not the champion; to rewrite it: "
            f"shrinkflow promote {model.name} {model.champion} --reason repair"
        )


def _print_history(model: ModelVersions, everything: bool) -> None:
    from shrinkflow.core.tables import text_table
    from shrinkflow.tracking.versions import previous_champion

    if not model.history:
        print("champion history: none recorded")
        return
    newest_first = model.history[::-1]
    shown = newest_first if everything else newest_first[:SHOWN]
    previous = previous_champion(model.history, model.champion)
    back = f"`shrinkflow rollback {model.name}` returns to version {previous}" if previous else "nothing to roll back to"
    print(f"champion history, newest first ({back}):")
    print(text_table(
        ["at", "version", "from", "by", "reason"],
        [[_local(move.at), move.version, move.from_version or "-", _by(move), _shorter(move.reason)] for move in shown],
    ))
    if len(shown) < len(newest_first):
        print(f"({len(newest_first) - len(shown)} older moves: --all lists them)")


def _shorter(text: str, most: int = 90) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def _by(move: Move) -> str:
    from shrinkflow.tracking.versions import PROMOTE, ROLLBACK

    return f"{move.by} by {move.user}" if move.by in (PROMOTE, ROLLBACK) else f"gate of run {move.by}"


def _local(moment: datetime | str) -> str:
    """A UTC time (or its ISO 8601 text) in the user's time zone, to the minute."""
    when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"models": models, "promote": promote, "rollback": rollback}
