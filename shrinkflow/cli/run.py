"""`shrinkflow run`: the pipeline once, on a temporary Prefect server unless one is configured."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from shrinkflow.cli.signals import SERVER_LOST_SIGNAL, ServerLost, signals_interrupt

if TYPE_CHECKING:
    from shrinkflow.deployments.temporary_server import TemporaryPrefectServer
    from shrinkflow.core.config import PipelineConfig
    from shrinkflow.core.workspace import Workspace

EXIT_OK = 0


def run(args: argparse.Namespace) -> int:
    from shrinkflow.core.summary import DECISIVE_COLUMNS, compact_rows, format_table, headline

    show_progress(args.verbose)
    with orchestrated(args, "the run stopped; its MLflow runs are marked KILLED and nothing from it was shipped") as (
        config, workspace, _,
    ):
        from shrinkflow.flows.pipeline import pipeline

        rows = pipeline(config, workspace=str(workspace.root), use_cache=args.use_cache)
    shown, left_out = compact_rows(rows)
    print(f"\n{headline(rows, config.name)}\n")
    print(format_table(shown, DECISIVE_COLUMNS))
    comparison = latest_comparison(workspace)
    if left_out or comparison:
        print(f"\n{f'{left_out} more variants; ' if left_out else ''}every column of every variant: {comparison}")
    shipped = next((row for row in rows if row.selected), None)
    if shipped is not None:
        print(f"export: {workspace.exports / config.name / shipped.version}")
        if shipped.promoted is False:
            print("the champion alias stays: see the version's promotion_reason tag (shrinkflow models " f"{config.name})")
    else:
        print("why each variant was not eligible: selection.json beside that table, and the flow run's log")
    return EXIT_OK


def show_progress(verbose: bool) -> None:
    """The terminal shows one line per variant as the run goes (the flows' `shrinkflow.progress` logger) and
    Prefect's warnings and errors; Prefect's full log goes to its server (the flow run's page) as always, and to
    the terminal too with --verbose. Set before Prefect is first imported: it reads its logging settings then."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    progress = logging.getLogger("shrinkflow.progress")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False  # with --verbose, Prefect's console handler would print it a second time


def native_output_to(log: Path) -> None:
    """Send what TensorFlow, LiteRT and the TFLite converter print from native code (to file descriptor 2: oneDNN
    and XNNPACK notices, converter settings) to `log`, while Python's stderr (Prefect's warnings and errors, the
    command's own messages) stays on the terminal."""
    log.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.dup(2)
    sys.stderr.flush()
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    with open(log, "ab") as native:
        os.dup2(native.fileno(), 2)


def latest_comparison(workspace: Workspace) -> Path | None:
    """The comparison table the run just wrote (<workspace>/runs/<parent run>/comparison/comparison.md)."""
    written = sorted(workspace.runs.glob("*/comparison/comparison.md"), key=lambda path: path.stat().st_mtime)
    return written[-1] if written else None


@contextlib.contextmanager
def orchestrated(
    args: argparse.Namespace, stopped: str, check: Callable[[PipelineConfig, Workspace], None] | None = None
) -> Iterator[tuple[PipelineConfig, Workspace, str]]:
    """The config, workspace and Prefect API a `run` or `sweep` command's flow runs with, everything checked first.

    Rejects a bad config (and whatever `check` rejects), environment or data before anything starts; then,
    inside, Ctrl-C and SIGTERM stop the command with the one line `stopped`, the flow talks to the configured
    Prefect server or a temporary one, and losing that server stops the command.
    """
    from shrinkflow.core.config import load_config
    from shrinkflow.core.data import prepare_dataset
    from shrinkflow.core.environment import check_prefect_api, check_tracking_uri, check_workspace
    from shrinkflow.core.training import check_model_fits_data
    from shrinkflow.core.workspace import Workspace

    config = load_config(args.config, args.overrides)
    workspace = Workspace.resolve(args.workspace)
    # Reject a bad environment and bad data before the run starts. The data preparation is the same
    # content-addressed one the flow's first task does, so the flow finds it ready.
    check_workspace(workspace, args.workspace)
    if not getattr(args, "verbose", True):
        native_output_to(workspace.root / "native.log")
    check_tracking_uri(workspace.tracking_uri())
    if check is not None:
        check(config, workspace)
    api_url = _configured_prefect_api()
    check_prefect_api(api_url)
    with signals_interrupt(stopped):
        # The temporary server takes seconds to start: it does while the data is checked and Prefect and MLflow
        # are imported. TensorFlow is imported by the first stage that needs it (none, on an unchanged re-run).
        server = None if api_url else _start_temporary_server(workspace)
        dataset = prepare_dataset(config.data, workspace.datasets)
        check_model_fits_data(config.model, dataset.input_shape)
        sizes = dict(dataset.split_sizes)
        logging.getLogger("shrinkflow.progress").info(
            f"shrinkflow: {config.name}: {sum(sizes.values()):,} samples ({sizes['train']:,} train, {sizes['validation']:,} "
            f"validation, {sizes['test']:,} test); each variant as it is built:"
        )
        import shrinkflow.flows.pipeline  # noqa: F401  (Prefect and MLflow: seconds of imports, while the server starts)
        from shrinkflow.tracking.store import prepare_tracking_store

        if server is not None:
            prepare_tracking_store(workspace.tracking_uri())  # a second of imports, while the server starts
            server.wait_until_ready()
        watched = server.api_url if server is not None else str(api_url)
        with _prefect_api(watched, temporary=server is not None), _stopped_if_lost(watched, server, workspace.tracking_uri()):
            yield config, workspace, watched


def _configured_prefect_api() -> str | None:
    """The Prefect API the environment or the active Prefect profile names, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _start_temporary_server(workspace: Workspace) -> TemporaryPrefectServer:
    """Prefect's server for this run only, stopped at exit after Prefect has sent it its last logs and events
    (atexit runs last what was registered first)."""
    import atexit

    from shrinkflow.deployments.temporary_server import TemporaryPrefectServer

    server = TemporaryPrefectServer(workspace.root / "prefect-server.log")
    atexit.register(server.stop)
    return server


@contextlib.contextmanager
def _prefect_api(api_url: str, temporary: bool) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    # Our own server on loopback either answers or is gone: no minute of back-off before saying so.
    retries = {PREFECT_CLIENT_MAX_RETRIES: 1} if temporary else {}
    with temporary_settings(updates={PREFECT_API_URL: api_url, **retries}):
        yield


@contextlib.contextmanager
def _stopped_if_lost(api_url: str, server: TemporaryPrefectServer | None, tracking_uri: str) -> Iterator[None]:
    """Stop the run (ServerLost, raised in the main thread) as soon as its Prefect server or its MLflow server is
    gone: tasks run on without the one and would ship a model whose run Prefect can no longer record; without
    the other every tracking call fails, each after MLflow's retries."""
    from shrinkflow.core.environment import PROBE_TIMEOUT, health_problem
    from shrinkflow.deployments.processes import watching

    lost: list[str] = []
    # A busy server may miss a beat: three health checks in a row must fail.
    watched = {"Prefect": f"{api_url.rstrip('/')}/health"} if server is None else {}
    if tracking_uri.startswith(("http://", "https://")):
        watched["MLflow"] = f"{tracking_uri.rstrip('/')}/health"
    misses = dict.fromkeys(watched, 0)

    def gone() -> str | None:
        if server is not None and (code := server.process.poll()) is not None:
            return f"the temporary Prefect server stopped unexpectedly (exit code {code}); its log is {server.log}"
        for title, health in watched.items():
            problem = health_problem(health, b"true" if title == "Prefect" else b"OK")
            misses[title] = misses[title] + 1 if problem else 0
            if misses[title] >= 3:
                where = api_url if title == "Prefect" else tracking_uri
                return f"the {title} server at {where} stopped answering ({problem}, {3 * PROBE_TIMEOUT:.0f} s)"
        return None

    def stop_run(reason: str) -> None:
        lost.append(reason)
        os.kill(os.getpid(), SERVER_LOST_SIGNAL)

    def raise_lost(signum: int, frame: object) -> None:
        raise ServerLost(lost[0] if lost else "the Prefect server is gone")

    previous = signal.signal(SERVER_LOST_SIGNAL, raise_lost)
    try:
        with watching(gone, stop_run):
            yield
    except Exception:
        if lost:  # what failed is Prefect's last call to the server that is gone: say why, not how
            raise ServerLost(lost[0]) from None
        raise
    finally:
        signal.signal(SERVER_LOST_SIGNAL, previous)
