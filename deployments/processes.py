"""Which process is which (Linux /proc): a pid with its kernel start time names one process for good.

`shrinkflow up`/`down` use it to tell their servers from a later process given the same pid, and
tracking uses it to tell that the process behind a RUNNING MLflow run is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcState:
    state: str  # R, S, D, Z (zombie), X (dead), ...; "?" where /proc is unavailable
    start_ticks: int | None


def proc_state(pid: int) -> ProcState | None:
    """The state of process `pid`, or None if there is no such process.

    With its kernel start time (`start_ticks`), which tells a process from a later one given the same pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
        return ProcState(fields[0].decode(), int(fields[19]))
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):  # no /proc (not Linux): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ProcState("?", None)


def start_ticks(pid: int) -> int | None:
    """The kernel start time of `pid`, if it exists and /proc tells."""
    state = proc_state(pid)
    return state.start_ticks if state is not None else None


def is_same_process(state: ProcState, ticks: int | None) -> bool:
    """Whether the process in `state` is the one that started at `ticks` (not a later one with its pid)."""
    return ticks is None or state.start_ticks in (None, ticks)


def is_alive(pid: int, ticks: int | None) -> bool:
    """Whether the process `pid` that started at `ticks` still runs (a zombie does not)."""
    state = proc_state(pid)
    return state is not None and state.state not in ("Z", "X") and is_same_process(state, ticks)
