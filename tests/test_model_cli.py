"""Managing versions from the command line: `shrinkflow models`, `promote` and `rollback` on a real MLflow SQLite
store in a workspace, with versions registered as a pipeline run leaves them (a named parent run tagged with its
export folder, a child run per variant, the version's tags) and champion moves made by the gate's own function.
The gate itself moving the alias, and a failed run taking its move back, are in tests/test_shipping.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shrinkflow.cli.main import main
from shrinkflow.core.export import MANIFEST_NAME, served_version, write_serving_config
from shrinkflow.core.files import write_json_atomically
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking import versions
from shrinkflow.tracking.registry import CHAMPION_ALIAS
from shrinkflow.tracking.store import client_for, store_creation_lock
from shrinkflow.tracking.versions import ROLLBACK, Move, effective, lineage, previous_champion
from tests.conftest import subprocess_env


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with its own SQLite store, shared by the module (each test ships models of its own name)."""
    workspace = Workspace(tmp_path_factory.mktemp("versions") / "workspace")
    with store_creation_lock(workspace.tracking_uri()):
        pass  # creates the store
    client_for(workspace.tracking_uri()).create_experiment("versions", artifact_location=(workspace.root / "art").as_uri())
    return workspace


def ship(workspace: Workspace, name: str, run_name: str, variant: str, accuracy: float, promote: bool = True) -> str:
    """What a pipeline run leaves: its parent run named run_name and tagged with the export folder, the variant's
    child run, the registered version with its tags, the export folder with its manifest; then the gate's move."""
    uri = workspace.tracking_uri()
    client = client_for(uri)
    experiment = client.get_experiment_by_name("versions").experiment_id
    parent = client.create_run(experiment, run_name=run_name).info.run_id
    child = client.create_run(experiment, run_name=variant, tags={"mlflow.parentRunId": parent}).info.run_id
    if name not in {model.name for model in client.search_registered_models()}:
        client.create_registered_model(name)
    tags = {"variant": variant, "accuracy": f"{accuracy:.4f}", "gzip_size_bytes": "18105", "promoted": str(promote).lower()}
    if not promote:
        tags["promotion_reason"] = f"accuracy {accuracy:.4f} against the champion's 0.9528: shown worse"
    version = str(client.create_model_version(name, f"runs:/{child}/model", run_id=child, tags=tags).version)
    export = workspace.exports / name / version
    write_json_atomically(export / MANIFEST_NAME, {"name": name, "version": version, "selected_variant": variant})
    client.set_tag(parent, versions.EXPORT_PATH_TAG, str(export))
    if promote:
        versions.move_champion(uri, name, version, by=run_name, reason="first champion" if version == "1" else "not shown worse")
    return version


def three_versions(workspace: Workspace, name: str) -> None:
    """Versions 1 and 2 made champion by their runs' gates; version 3 refused by its gate, so 2 is the champion."""
    ship(workspace, name, "calm-heron", "baseline-int8", 0.9444)
    ship(workspace, name, "sage-bull", "baseline-dynamic", 0.9528)
    ship(workspace, name, "brave-otter", "student-1-int8", 0.9306, promote=False)


def champion_of(workspace: Workspace, name: str) -> str:
    return str(client_for(workspace.tracking_uri()).get_registered_model(name).aliases[CHAMPION_ALIAS])


def shrinkflow(*args: str) -> int:
    """The command in this process (its exit code), as `shrinkflow ARGS` runs it."""
    return main(list(args))


def test_models_lists_the_versions_newest_first_and_marks_the_champion(store: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    three_versions(store, "listed")

    assert shrinkflow("models", "listed", "--workspace", str(store.root)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"listed: 3 versions in {store.tracking_uri()}; champion: version 2\n")
    header, rule, *rows = out.split("\n\n")[1].splitlines()
    assert header.split() == ["version", "created", "variant", "accuracy", "gzip_size_bytes", "run", "aliases"]
    assert [row.split()[0] for row in rows[:3]] == ["3", "2", "1"]
    assert rows[1].split()[3:] == ["baseline-dynamic", "0.9528", "18105", "sage-bull", "champion"]
    assert not rows[0].endswith("champion") and not rows[2].endswith("champion")
    assert "version 3: its run's gate kept the champion: accuracy 0.9306 against the champion's 0.9528: shown worse" in out
    assert f"the champion's export: {store.exports / 'listed' / '2'}; TF Serving's config {store.exports / 'listed' / 'models.config'} serves it" in out
    history = out[out.index("champion history"):].splitlines()
    assert history[0] == "champion history, newest first (`shrinkflow rollback listed` returns to version 1):"
    assert history[3].split()[2:] == ["2", "1", "gate", "of", "run", "sage-bull", "not", "shown", "worse"]
    assert history[4].split()[2:] == ["1", "-", "gate", "of", "run", "calm-heron", "first", "champion"]
    assert served_version(store.exports / "listed") == "2"


def test_promote_and_rollback_move_the_champion_and_record_who_when_why(store: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    three_versions(store, "moved")
    where = ["--workspace", str(store.root)]
    uri, exports = store.tracking_uri(), store.exports / "moved"

    assert shrinkflow("promote", "moved", "3", "--reason", "version 2 misreads sevens on the device", *where) == 0
    assert champion_of(store, "moved") == "3" and served_version(exports) == "3"
    champion, history = versions.champion_history(uri, "moved")
    last = history[-1]
    assert (champion, last.version, last.from_version, last.by) == ("3", "3", "2", "promote")
    assert last.reason == "version 2 misreads sevens on the device" and last.user and last.at
    assert "the champion of 'moved' is now version 3 (was 2); recorded: promote by" in capsys.readouterr().out

    # A TF Serving config left behind the alias (a crash after the alias moved) is reported, and promoting the
    # champion again rewrites it; that moves nothing and records nothing (exit 0: the wanted state holds).
    write_serving_config(exports, "moved", "2")
    assert shrinkflow("models", "moved", *where) == 0
    assert f"warning: TF Serving's config {exports / 'models.config'} serves version 2, not the champion" in capsys.readouterr().out
    assert shrinkflow("promote", "moved", "3", "--reason", "again", *where) == 0
    assert "already is the champion" in capsys.readouterr().out
    assert len(versions.champion_history(uri, "moved")[1]) == len(history) and served_version(exports) == "3"

    assert shrinkflow("rollback", "moved", "--reason", "sevens fixed only in version 2", *where) == 0
    champion, history = versions.champion_history(uri, "moved")
    assert (champion, history[-1].from_version, history[-1].by, history[-1].reason) == ("2", "3", ROLLBACK, "sevens fixed only in version 2")
    assert served_version(exports) == "2"

    # A rollback goes further back, not to the version it rolled back from; its default reason is "rollback".
    assert shrinkflow("rollback", "moved", *where) == 0
    champion, history = versions.champion_history(uri, "moved")
    assert (champion, history[-1].from_version, history[-1].reason) == ("1", "2", "rollback")
    assert served_version(exports) == "1"
    capsys.readouterr()

    assert shrinkflow("models", "moved", *where) == 0
    out = capsys.readouterr().out
    assert "champion history, newest first (nothing to roll back to):" in out
    assert [line.split()[2:4] for line in out[out.index("champion history"):].splitlines()[3:]] == [
        ["1", "2"], ["2", "3"], ["3", "2"], ["2", "1"], ["1", "-"],
    ]


def test_bad_names_versions_and_stores_exit_2_with_one_line(
    store: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real command: in subprocesses for what is refused before MLflow is imported and for an unknown model
    (nothing MLflow prints on its way may reach the terminal), in this process for the rest (importing MLflow takes
    each process seconds)."""
    from shrinkflow.deployments.processes import free_port

    three_versions(store, "checked")
    ship(store, "single", "calm-heron", "baseline-int8", 0.9444)
    where = ["--workspace", str(store.root)]
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "mlflow.db").write_text("not a database\n")
    corrupt = f"MLflow store {re.escape(str(tmp_path / 'corrupt' / 'mlflow.db'))}.*file is not a database.*move it aside"
    in_subprocesses = {
        ("models", "nope", *where): "no registered model 'nope' in sqlite:///.*; registered models: .*checked.*single",
        ("rollback", "checked", "--tracking-uri", f"http://127.0.0.1:{free_port()}"): "no MLflow server answers at",
        ("models", "checked", "--workspace", str(tmp_path)): re.escape(f"no MLflow store at {tmp_path / 'mlflow.db'}"),
        ("promote", "checked", "2", "--reason", " ", *where): "--reason: say why",
    }
    in_this_process = {
        ("promote", "checked", "9", "--reason", "x", *where): "'checked/9': model 'checked' has no version 9; its versions: 1, 2, 3",
        ("rollback", "single", *where): "'single': nothing to roll back to: version 1 is the first champion",
        ("models", "checked", "--workspace", str(tmp_path / "corrupt")): corrupt,
        ("promote", "checked", "1", "--reason", "x", "--workspace", str(tmp_path / "corrupt")): corrupt,
        ("rollback", "checked", "--workspace", str(tmp_path / "corrupt")): corrupt,
        ("serve-model", "checked", "--port", str(free_port()), "--workspace", str(tmp_path / "corrupt")): corrupt,
    }
    started = {
        args: subprocess.Popen(
            [sys.executable, "-m", "shrinkflow.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=subprocess_env(),
        )
        for args in in_subprocesses
    }
    outcomes = {}
    for args in in_this_process:
        code = shrinkflow(*args)
        outcomes[args] = (code, *capsys.readouterr())
    for args, process in started.items():
        out, err = process.communicate(timeout=300)
        outcomes[args] = (process.returncode, out, err)
    for args, (code, out, err) in outcomes.items():
        assert code == 2, (args, err)
        assert out == "" and len(err.splitlines()) == 1 and err.startswith("shrinkflow: error: "), (args, err)
        assert re.search({**in_subprocesses, **in_this_process}[args], err), (args, err)
    assert champion_of(store, "checked") == "2" and champion_of(store, "single") == "1"


def test_a_failed_move_leaves_neither_the_alias_nor_its_history_entry(store: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The history is written first, then the alias, then models.config; a failure at either later write takes the
    earlier ones back."""
    three_versions(store, "faulty")
    uri = store.tracking_uri()
    before = versions.champion_history(uri, "faulty")

    def stored() -> str:  # the tag as written, before readers drop a move that never happened
        return str(client_for(uri).get_registered_model("faulty").tags[versions.HISTORY_TAG])

    tag = stored()

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(versions, "write_serving_config", refuse)
    with pytest.raises(OSError, match="disk full"):
        versions.promote(uri, "faulty", "3", "wanted")
    assert versions.champion_history(uri, "faulty") == before and stored() == tag
    assert served_version(store.exports / "faulty") == "2"
    monkeypatch.undo()

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(OSError, match="disk full"):
        versions.roll_back(uri, "faulty", "wanted")
    monkeypatch.undo()
    assert versions.champion_history(uri, "faulty") == before and stored() == tag
    assert champion_of(store, "faulty") == "2"


def moved(version: str, from_version: str | None, by: str = "some-run") -> Move:
    return Move(version, from_version, "2026-12-06T10:00:00+00:00", by, "me", "why")


def test_a_move_written_ahead_of_an_alias_that_never_moved_is_not_history() -> None:
    """A crash between the history write and the alias write: the alias still names the move's from_version."""
    history = [moved("1", None), moved("2", "1"), moved("3", "2", "promote")]
    assert effective(history, champion="2") == history[:2]
    assert effective(history, champion="3") == history
    assert effective([moved("1", None)], champion=None) == []


@pytest.mark.parametrize(
    ("history", "champion", "previous"),
    [
        ([moved("1", None), moved("2", "1"), moved("3", "2")], "3", "2"),
        ([moved("1", None), moved("2", "1"), moved("3", "2"), moved("2", "3", ROLLBACK)], "2", "1"),
        ([moved("1", None), moved("2", "1"), moved("1", "2", "promote")], "1", "2"),
        ([moved("1", None), moved("2", "1"), moved("1", "2", ROLLBACK)], "1", None),
        # The alias moved outside shrinkflow (the MLflow UI) to 5: a rollback returns to the last recorded champion.
        ([moved("1", None), moved("2", "1")], "5", "2"),
        # Only the newest moves are kept: the oldest kept move still says where it came from.
        ([moved("7", "6"), moved("8", "7")], "8", "7"),
    ],
)
def test_a_rollback_returns_to_the_champion_before_the_current_one(history: list[Move], champion: str, previous: str | None) -> None:
    assert previous_champion(history, champion) == previous
    assert lineage(history, champion)[-1] == champion


def test_the_history_keeps_the_newest_moves_that_fit_a_tag(store: Workspace) -> None:
    ship(store, "busy", "calm-heron", "baseline-int8", 0.9444)
    ship(store, "busy", "sage-bull", "baseline-dynamic", 0.9528)
    uri = store.tracking_uri()
    for turn in range(16):
        versions.promote(uri, "busy", "1" if turn % 2 else "2", "x" * versions.REASON_CHARS)
    stored = client_for(uri).get_registered_model("busy").tags[versions.HISTORY_TAG]
    champion, history = versions.champion_history(uri, "busy")
    assert len(stored) <= versions.HISTORY_CHARS and 5 < len(history) < 18
    assert (champion, history[-1].version, history[-1].from_version) == ("1", "1", "2")
