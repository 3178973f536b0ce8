"""Exclusive locks between processes, held for as long as a piece of work runs: a flock on a file beside a SQLite
database (or any local file), or a PostgreSQL session advisory lock for a database shared by several machines.

Either kind is released by the operating system when its holder dies, however it dies (the kernel drops the
flock; PostgreSQL drops the advisory lock with the holder's connection), so a crashed holder never blocks the
next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shrinkflow.core.errors import UserError

POLL_SECONDS = 1.0
# A lock's connection to PostgreSQL: keepalives bound how long a lock outlives a vanished host (about
# idle + interval * count = 25 s); a short connect timeout keeps a down database from hanging the caller.
POSTGRES_CONNECT_ARGS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3, "connect_timeout": 10}


class LockBusy(UserError):
    """Another live process holds the lock (the message names it, as far as it is known)."""


class HeldLock:
    """An acquired lock; `release()` lets go of it (more than once is fine)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def acquire(where: str | Path, name: str, wait: float, busy: str, on_wait: Callable[[str], None] | None = None) -> HeldLock:
    """Take the exclusive lock `name` at `where`: a postgresql:// URL (an advisory lock in that database), or a
    local file path (a flock on it). Waits up to `wait` seconds for another holder to let go, calling
    `on_wait(holder)` once if it has to wait.

    Raises:
        LockBusy: the lock is still held after `wait` seconds: `busy`, its `{holder}` replaced by who holds it.
    """
    if isinstance(where, str) and where.split(":", 1)[0].split("+", 1)[0] == "postgresql":
        return _postgres_lock(where, name, wait, busy, on_wait)
    return _file_lock(Path(where), wait, busy, on_wait)


@contextlib.contextmanager
def held(where: str | Path, name: str, wait: float, busy: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """`acquire` for the length of a block."""
    lock = acquire(where, name, wait, busy, on_wait)
    try:
        yield
    finally:
        lock.release()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _holder_text() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _file_lock(path: Path, wait: float, busy: str, on_wait: Callable[[str], None] | None) -> HeldLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, waited = time.monotonic() + wait, False
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
                if time.monotonic() >= deadline:
                    raise LockBusy(busy.replace("{holder}", holder)) from None
                if on_wait is not None and not waited:
                    on_wait(holder)
                waited = True
                time.sleep(POLL_SECONDS)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{_holder_text()}\n".encode(), 0)
    except BaseException:
        os.close(descriptor)
        raise
    return HeldLock(lambda: os.close(descriptor))  # closing drops the flock


def _postgres_lock(url: str, name: str, wait: float, busy: str, on_wait: Callable[[str], None] | None) -> HeldLock:
    import sqlalchemy as sa

    # One connection of its own, held for as long as the lock: AUTOCOMMIT, so the session is never "idle in
    # transaction" (idle_in_transaction_session_timeout would end it, and the lock with it).
    engine = sa.create_engine(
        url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT",
        connect_args={**POSTGRES_CONNECT_ARGS, "application_name": f"shrinkflow {_holder_text()}"[:63]},
    )
    key, deadline, waited = lock_key(name), time.monotonic() + wait, False
    connection: Any = None
    try:
        connection = engine.connect()
        while not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if time.monotonic() >= deadline:
                raise LockBusy(busy.replace("{holder}", _postgres_holder(connection, key)))
            if on_wait is not None and not waited:
                on_wait(_postgres_holder(connection, key))
            waited = True
            time.sleep(POLL_SECONDS)
    except BaseException:
        if connection is not None:
            connection.close()
        engine.dispose()
        raise

    def release() -> None:
        try:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except sa.exc.DBAPIError:
            pass  # the connection is gone, and the lock with it
        finally:
            connection.close()
            engine.dispose()

    return HeldLock(release)


def _postgres_holder(connection: Any, key: int) -> str:
    import sqlalchemy as sa

    row = connection.execute(sa.text(
        "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ((:k >> 32) & 4294967295)::oid "
        "AND l.objid = (:k & 4294967295)::oid AND l.objsubid = 1"
    ), {"k": key}).first()
    if row is None:
        return "another session"
    return str(row[0] or "another session") + (f" from {row[1]}" if row[1] else "")
