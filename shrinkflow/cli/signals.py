"""Stopping a command from outside: Ctrl-C, SIGTERM, SIGHUP, and a run's Prefect server going away."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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


@contextlib.contextmanager
def signals_interrupt(outcome: str) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise Interrupted where the command is, so it stops through its clean-up;
    once it is stopping, further signals are ignored so the clean-up itself is not cut short.

    SIGINT gets its handler here too: a process started as a background job of a non-interactive shell
    (`make test &`, CI) inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
    """

    def interrupt(signum: int, frame: object) -> None:
        ignore_stop_signals()
        raise Interrupted(signum, outcome)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
