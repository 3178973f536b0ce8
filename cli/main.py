"""The `shrinkflow` command.

Exit codes: 0 success; 2 a user error (bad config, bad data), reported in one short message with no
traceback; 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shrinkflow.core.errors import UserError

if TYPE_CHECKING:
    from deployments.stack import RunningStack, SchedulerWatch, ServerProcess
    from deployments.temporary_server import TemporaryPrefectServer
    from shrinkflow.core.workspace import Workspace

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shrinkflow", description="Train, compress and ship TensorFlow models as a Prefect flow tracked in MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    workspace_help = "Output folder (default: $SHRINKFLOW_WORKSPACE or ./workspace)."

    run = commands.add_parser("run", help="Run the pipeline once on a YAML config.")
    run.add_argument("config", help="YAML config, e.g. configs/digits_cnn.yaml")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Override a config value, e.g. --set train.epochs=2 (repeatable).",
    )
    run.add_argument("--workspace", help=workspace_help)
    run.add_argument(
        "--no-cache", dest="use_cache", action="store_false",
        help="Recompute every stage instead of reusing what an earlier run with the same inputs produced.",
    )

    serve = commands.add_parser(
        "serve",
        help="Serve the scheduled deployments (one per preset) on the configured Prefect server until Ctrl-C.",
    )
    serve.add_argument("--workspace", help=workspace_help)
    serve.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N",
        help="Most flow runs at the same time (default: 1).",
    )

    up = commands.add_parser(
        "up",
        help="Start a local Prefect server and MLflow server and serve the deployments on them, until Ctrl-C.",
    )
    up.add_argument("--workspace", help=workspace_help + " The servers keep their data under <workspace>/stack/.")
    up.add_argument("--prefect-port", type=int, default=None, metavar="PORT", help="Prefect server port (default: 4200).")
    up.add_argument("--mlflow-port", type=int, default=None, metavar="PORT", help="MLflow server port (default: 5000).")

    down = commands.add_parser("down", help="Stop the local stack started by `shrinkflow up` in this workspace.")
    down.add_argument("--workspace", help=workspace_help)

    deployments = commands.add_parser(
        "deployments", help="List the deployments; regenerate or check deployments/prefect.yaml."
    )
    action = deployments.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="Regenerate deployments/prefect.yaml from the presets.")
    action.add_argument(
        "--check", action="store_true", help="Exit 1 if deployments/prefect.yaml does not match the presets."
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"run": _run, "serve": _serve, "up": _up, "down": _down, "deployments": _deployments}
    try:
        return commands[args.command](args)
    except UserError as exc:
        print(f"shrinkflow: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ServerLost as exc:
        print(f"shrinkflow: error: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Prefect would spend minutes trying to send its last events to the server that is gone.
        os._exit(EXIT_FAILURE)
    except Interrupted as exc:
        print(f"shrinkflow: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("shrinkflow: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


class Interrupted(KeyboardInterrupt):
    """A command was asked to stop (Ctrl-C, SIGTERM, the terminal closing): raised where it is, so that it
    stops through its clean-up (for a run: MLflow runs closed as KILLED, an unfinished shipment rolled back)."""

    def __init__(self, signum: int, outcome: str) -> None:
        self.signum = signum
        name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"interrupted by {name}: {outcome}")


class ServerLost(BaseException):
    """The Prefect server a run reports to stopped answering: the run is stopped (a BaseException, so no
    task retries it) rather than left to go on without an orchestrator and fail at its very end."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; the run was stopped and nothing from it was shipped")


SERVER_LOST_SIGNAL = signal.SIGUSR1


def _run(args: argparse.Namespace) -> int:
    from shrinkflow.core.config import load_config
    from shrinkflow.core.data import prepare_dataset
    from shrinkflow.core.environment import check_prefect_api, check_tracking_uri, check_workspace
    from shrinkflow.core.training import check_model_fits_data
    from shrinkflow.core.variants import format_table
    from shrinkflow.core.workspace import Workspace

    config = load_config(args.config, args.overrides)
    workspace = Workspace.resolve(args.workspace)
    # Reject a bad environment and bad data before starting Prefect or TensorFlow. The data preparation
    # is the same content-addressed one the flow's first task does, so the flow finds it ready.
    check_workspace(workspace, args.workspace)
    check_tracking_uri(workspace.tracking_uri())
    api_url = _configured_prefect_api()
    check_prefect_api(api_url)
    dataset = prepare_dataset(config.data, workspace.datasets)
    check_model_fits_data(config.model, dataset.input_shape)

    with _signals_interrupt("the run stopped; its MLflow runs are marked KILLED and nothing from it was shipped"):
        server = None if api_url else _start_temporary_server(workspace)
        from flows.pipeline import pipeline

        # The first stage needs TensorFlow, which takes seconds to import: import it while the server starts.
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401

        if server is not None:
            server.wait_until_ready()
        watched = server.api_url if server is not None else str(api_url)
        with _prefect_api(watched, temporary=server is not None), _stopped_if_lost(watched, server):
            rows = pipeline(config, workspace=str(workspace.root), use_cache=args.use_cache)
    print(f"\nshrinkflow: {config.name} done\n")
    print(format_table(rows))
    shipped = next((row for row in rows if row.selected), None)
    if shipped is not None:
        champion = (
            "it is now the champion" if shipped.promoted
            else "the champion alias stays (see the version's promotion_reason tag)"
        )
        print(
            f"\nshipped {shipped.variant} as version {shipped.version} of {config.name!r}; {champion}.\n"
            f"export: {workspace.exports / config.name / shipped.version}"
        )
    else:
        print("\nno variant passed the selection policy (config section 'select'): nothing registered or exported.")
    return EXIT_OK


def _configured_prefect_api() -> str | None:
    """The Prefect API the environment or the active Prefect profile names, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _start_temporary_server(workspace: Workspace) -> TemporaryPrefectServer:
    """Prefect's server for this run only, stopped at exit after Prefect has sent it its last logs and events
    (atexit runs last what was registered first)."""
    import atexit

    from deployments.temporary_server import TemporaryPrefectServer

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
def _stopped_if_lost(api_url: str, server: TemporaryPrefectServer | None) -> Iterator[None]:
    """Stop the run (ServerLost, raised in the main thread) as soon as its Prefect server is gone: tasks run
    on without it and would ship a model whose run Prefect can no longer record."""
    from shrinkflow.core.environment import PROBE_TIMEOUT, health_problem

    lost: list[str] = []
    done = threading.Event()

    def watch() -> None:
        failures = 0
        while not done.wait(2.0):
            if server is not None and server.process.poll() is not None:
                lost.append(
                    f"the temporary Prefect server stopped unexpectedly (exit code {server.process.returncode}); "
                    f"its log is {server.log}"
                )
            elif server is None and (problem := health_problem(f"{api_url.rstrip('/')}/health", b"true")):
                failures += 1
                if failures < 3:  # a busy server may miss a beat
                    continue
                lost.append(f"the Prefect server at {api_url} stopped answering ({problem}, {3 * PROBE_TIMEOUT:.0f} s)")
            else:
                failures = 0
                continue
            os.kill(os.getpid(), SERVER_LOST_SIGNAL)
            return

    def raise_lost(signum: int, frame: object) -> None:
        raise ServerLost(lost[0] if lost else "the Prefect server is gone")

    previous = signal.signal(SERVER_LOST_SIGNAL, raise_lost)
    watcher = threading.Thread(target=watch, name="watch-prefect-server", daemon=True)
    watcher.start()
    try:
        yield
    except Exception:
        if lost:  # what failed is Prefect's last call to the server that is gone: say why, not how
            raise ServerLost(lost[0]) from None
        raise
    finally:
        done.set()
        signal.signal(SERVER_LOST_SIGNAL, previous)


@contextlib.contextmanager
def _signals_interrupt(outcome: str) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise Interrupted where the command is, so it stops through its clean-up;
    once it is stopping, further signals are ignored so the clean-up itself is not cut short.

    SIGINT gets its handler here too: a process started as a background job of a non-interactive shell
    (`make test &`, CI) inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
    """

    def interrupt(signum: int, frame: object) -> None:
        _ignore_stop_signals()
        raise Interrupted(signum, outcome)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(args: argparse.Namespace) -> int:
    from deployments.serving import DEFAULT_RUN_LIMIT, serve
    from shrinkflow.core.workspace import Workspace

    serve(Workspace.resolve(args.workspace), limit=args.limit or DEFAULT_RUN_LIMIT)
    return EXIT_OK


def _up(args: argparse.Namespace) -> int:
    from deployments import serving as deploy
    from deployments.stack import (
        DEFAULT_MLFLOW_PORT, DEFAULT_PREFECT_PORT, SchedulerWatch, StackConfig, stack_dir, start_stack,
    )
    from shrinkflow.tracking.runs import mlflow_ui_url
    from shrinkflow.core.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    config = StackConfig(
        workspace,
        prefect_port=DEFAULT_PREFECT_PORT if args.prefect_port is None else args.prefect_port,
        mlflow_port=DEFAULT_MLFLOW_PORT if args.mlflow_port is None else args.mlflow_port,
    )
    with _signals_interrupt("the stack was stopped and nothing is left running"):
        leftover = deploy.recorded_runner(workspace)
        if leftover is not None and leftover.is_running():
            raise UserError(
                f"the runner of an earlier `shrinkflow up` is still running for workspace {workspace.root} "
                f"(pid {leftover.pid}); stop it with `shrinkflow down`"
            )
        print(
            f"shrinkflow: starting the Prefect server (port {config.prefect_port}) and the MLflow server "
            f"(port {config.mlflow_port}) in {workspace.root / 'stack'} ...",
            flush=True,
        )
        prefect_log = stack_dir(workspace) / "prefect.log"
        scheduler = SchedulerWatch(prefect_log, offset=prefect_log.stat().st_size if prefect_log.exists() else 0)
        stack = start_stack(config)
        try:
            runner_started = datetime.now(timezone.utc)
            runner = deploy.start_runner(stack)
            try:
                deploy.wait_for_deployments(stack, runner, since=runner_started)
                upcoming = deploy.wait_for_scheduled_runs(stack.prefect_api_url)
                names = ", ".join(spec.full_name for spec in deploy.DEPLOYMENTS)
                print(
                    f"\nshrinkflow: the local stack is up (workspace {workspace.root})\n"
                    f"  Prefect UI   {stack.prefect_ui_url}   deployments {names}\n"
                    f"  MLflow UI    {mlflow_ui_url(stack.mlflow_url)}\n"
                    f"  runner log   {runner.log}\n"
                    f"  next runs    {_describe_upcoming(upcoming)}\n"
                    "Scheduled and UI-triggered runs execute here, one at a time. "
                    "Press Ctrl-C to stop the runner and both servers.",
                    flush=True,
                )
                unscheduled = [name for name, when in upcoming.items() if when is None]
                _warn_scheduler(scheduler, prefect_log, unscheduled)
                code = _until_stopped(stack, runner, scheduler, prefect_log)
            finally:
                _ignore_stop_signals()  # a second Ctrl-C must not leave the servers running
                print("shrinkflow: stopping the runner and the servers ...", flush=True)
                deploy.stop_runner(runner)
        finally:
            _ignore_stop_signals()
            stack.stop()
    print("shrinkflow: stopped", flush=True)
    return code


def _describe_upcoming(upcoming: dict[str, datetime | None]) -> str:
    return ", ".join(
        f"{name.split('/')[-1]} {when.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC" if when else f"{name.split('/')[-1]} NONE"
        for name, when in upcoming.items()
    )


def _warn_scheduler(scheduler: SchedulerWatch, prefect_log: Path, unscheduled: Sequence[str] = ()) -> None:
    """Say it loudly when the Prefect server's scheduler fails: the UI would still show the schedules as active."""
    errors = scheduler.new_errors()
    if not errors and not unscheduled:
        return
    lines = ["", "shrinkflow: WARNING: THE PREFECT SERVER'S SCHEDULER IS FAILING: scheduled runs will not happen."]
    if unscheduled:
        lines.append(f"  no upcoming run was created for {', '.join(unscheduled)}")
    lines += [f"  {error}" for error in dict.fromkeys(errors)]
    lines.append(f"  See {prefect_log}. Runs started from the UI or the API still execute.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _until_stopped(stack: RunningStack, runner: ServerProcess, scheduler: SchedulerWatch, prefect_log: Path) -> int:
    """Block until Ctrl-C / SIGTERM (exit 0), or until the runner or a server dies (exit 1).

    Meanwhile, report every failure of the Prefect server's scheduler as it is logged.
    """
    from deployments.stack import TITLES, log_tail

    try:
        while True:
            _warn_scheduler(scheduler, prefect_log)
            code = runner.popen.poll() if runner.popen is not None else None
            if code == 0:  # it was stopped on purpose, by `shrinkflow down` from another terminal
                print("shrinkflow: the runner was stopped from elsewhere (`shrinkflow down`?)", flush=True)
                return EXIT_OK
            if code is not None:
                print(
                    f"shrinkflow: error: the runner exited with code {code}; its log is {runner.log}, ending:\n"
                    f"{log_tail(runner.log)}",
                    file=sys.stderr, flush=True,
                )
                return EXIT_FAILURE
            for server in stack.servers:
                if not server.is_running():
                    print(
                        f"shrinkflow: error: the {TITLES[server.name]} stopped; its log is {server.log}, ending:\n"
                        f"{log_tail(server.log)}",
                        file=sys.stderr, flush=True,
                    )
                    return EXIT_FAILURE
            time.sleep(1)
    except KeyboardInterrupt:
        print("", flush=True)
        return EXIT_OK


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _down(args: argparse.Namespace) -> int:
    from deployments import serving as deploy
    from deployments.stack import stop_stack
    from shrinkflow.core.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    runner = deploy.recorded_runner(workspace)
    stopped_runner = deploy.stop_runner(runner) if runner is not None else False
    stopped_servers = stop_stack(workspace)
    if stopped_runner or stopped_servers:
        print(f"shrinkflow: stopped the local stack of workspace {workspace.root}")
    else:
        print(f"shrinkflow: no stack is running for workspace {workspace.root}")
    return EXIT_OK


def _deployments(args: argparse.Namespace) -> int:
    from deployments import serving as deploy

    relative = deploy.PREFECT_FILE.relative_to(deploy.REPO)
    if args.write:
        changed = deploy.write_prefect_yaml()
        print(f"shrinkflow: {relative} {'written' if changed else 'is already up to date'}")
        return EXIT_OK
    if args.check:
        if deploy.prefect_yaml_is_current():
            print(f"shrinkflow: {relative} is up to date")
            return EXIT_OK
        print(
            f"shrinkflow: {relative} does not match the presets and schedules: run `shrinkflow deployments --write`",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(f"{'deployment':<24}{'config':<28}{'schedule':<14}timezone")
    for spec in deploy.DEPLOYMENTS:
        print(f"{spec.full_name:<24}{spec.preset:<28}{spec.cron:<14}{spec.timezone}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
