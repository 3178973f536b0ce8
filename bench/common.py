"""What every benchmark shares: child processes timed with their peak memory, medians, machine facts, results.

Each side of a comparison runs as a fresh child process, so TensorFlow's import and the memory it
takes are counted the same way for both. A child's peak memory is measured twice: the peak resident
set of its biggest process (from wait4, what /usr/bin/time reports) and the peak of the sum over its
whole process tree (sampled from /proc every 0.2 s), which also counts a Prefect server it starts.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from shrinkflow.deployments.processes import ProcessError, Spawned, answers, free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist-t10k"
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
MNIST_CNN = REPO / "configs" / "mnist_cnn.yaml"
DIGITS_CNN = REPO / "configs" / "digits_cnn.yaml"
MNIST_SOURCE = f"data.source=idx:{MNIST}"
# Every training step of the digits preset cut to one epoch: the fixed costs stand out.
ONE_EPOCH = ("train.epochs=1", "distill.epochs=1", "prune.epochs=1", "cluster.epochs=1", "quantize.qat_epochs=1")
VERSIONED_PACKAGES = (
    "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "prefect", "mlflow", "numpy",
)
SAMPLE_INTERVAL = 0.2
PREFECT_SERVER = "prefect server"
SPAWNED_CHILD = "multiprocessing child"  # a process multiprocessing spawned: a local Dask cluster's workers
NAMED_PROCESSES = (PREFECT_SERVER, SPAWNED_CHILD)  # the processes whose CPU seconds a ChildRun reports by name
MIB = 1024 * 1024
# A Prefect log line as a child prints it: "HH:MM:SS.mmm | LEVEL | message".
LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s+\| (.*)$")


@dataclass
class Context:
    """One harness invocation: where results go, scratch space, repetitions, and figures benchmarks share."""

    out_dir: Path
    work_dir: Path
    smoke: bool = False
    reps: int = 3
    shared: dict[str, Any] = field(default_factory=dict)

    def fresh_dir(self, name: str) -> Path:
        path = self.work_dir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


@dataclass
class ChildRun:
    """One child process: wall time, peak memory of its biggest process and of its process tree."""

    label: str
    argv: list[str]
    wall_s: float
    peak_rss_mib: float
    tree_peak_rss_mib: float
    returncode: int
    log: str
    started_at: float = 0.0  # time.time() at the start, to line up the child's log timestamps
    cpu_s: float = 0.0  # CPU seconds of the child and every descendant it waited for
    descendants_cpu_s: dict[str, float] = field(default_factory=dict)  # by command: a Prefect server's share

    def output(self) -> str:
        return Path(self.log).read_text(errors="replace")

    def log_messages(self) -> Iterator[tuple[float, str]]:
        """Each Prefect log line of the output: (seconds since the child started, the message).

        The lines carry the time of day only; a run that passes midnight still gets offsets in order.
        """
        day = datetime.fromtimestamp(self.started_at).replace(hour=0, minute=0, second=0, microsecond=0)
        for line in self.output().splitlines():
            match = LOG_TIME.match(line)
            if match:
                h, m, s, ms, message = match.groups()
                at = (day + timedelta(hours=int(h), minutes=int(m), seconds=int(s), milliseconds=int(ms))).timestamp()
                yield (at - self.started_at) % 86400, message

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label, "wall_s": round(self.wall_s, 2), "peak_rss_mib": round(self.peak_rss_mib),
            "tree_peak_rss_mib": round(self.tree_peak_rss_mib), "cpu_s": round(self.cpu_s, 1),
            "descendants_cpu_s": self.descendants_cpu_s,
        }


class ChildFailed(RuntimeError):
    pass


def run_child(label: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> ChildRun:
    """Run `argv` to completion (output to `log`); raises ChildFailed on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started_at, start = time.time(), time.perf_counter()
    with open(log, "wb") as out:
        popen = subprocess.Popen(list(argv), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        tree_peak = 0
        cpu_ticks: dict[int, tuple[str, int]] = {}  # pid -> (name, CPU ticks so far)
        while True:
            pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
            if pid:
                break
            rss, ticks = tree_sample(popen.pid)
            tree_peak = max(tree_peak, rss)
            for child, (command, count) in ticks.items():  # an exiting process has no command line left: keep its name
                earlier = cpu_ticks.get(child, (command, 0))[0]
                cpu_ticks[child] = (earlier if earlier in NAMED_PROCESSES else command, count)
            time.sleep(SAMPLE_INTERVAL)
    wall = time.perf_counter() - start
    popen.returncode = os.waitstatus_to_exitcode(status)
    by_command: dict[str, float] = {}
    for pid, (command, ticks) in cpu_ticks.items():
        if pid != popen.pid:
            by_command[command] = by_command.get(command, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    run = ChildRun(label, list(argv), wall, usage.ru_maxrss / 1024, max(tree_peak / MIB, usage.ru_maxrss / 1024),
                   popen.returncode, str(log), started_at, usage.ru_utime + usage.ru_stime,
                   {command: round(cpu, 1) for command, cpu in by_command.items()})
    if popen.returncode != 0:
        tail = "\n".join(run.output().splitlines()[-25:])
        raise ChildFailed(f"{label}: exit {popen.returncode} after {wall:.0f} s ({log}):\n{tail}")
    return run


def tree_sample(root: int) -> tuple[int, dict[int, tuple[str, int]]]:
    """Resident bytes summed over `root` and all its descendants now, and each one's command and CPU ticks."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        head, tail = stat.rsplit(")", 1)
        fields = [head.split("(", 1)[1], *tail.split()]  # comm, state, ppid, ...
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[2]), []).append(int(entry.name))
    total, todo, ticks = 0, [root], {}
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        if pid in stats:  # utime and stime are fields 14 and 15 of /proc/<pid>/stat
            ticks[pid] = (_command(pid, stats[pid][0]), int(stats[pid][12]) + int(stats[pid][13]))
        todo.extend(children.get(pid, []))
    return total, ticks


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by `root` and its live descendants (e.g. a warm server between two runs)."""
    return sum(ticks for _, ticks in tree_sample(root)[1].values()) / os.sysconf("SC_CLK_TCK")


def _command(pid: int, comm: str) -> str:
    """A short name for a process: PREFECT_SERVER for Prefect's, SPAWNED_CHILD for one that multiprocessing
    spawned, else its executable's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return comm
    text = " ".join(part.decode(errors="replace") for part in argv)
    if "prefect" in text and ("server" in text or "uvicorn" in text):
        return PREFECT_SERVER
    return SPAWNED_CHILD if "multiprocessing.spawn import spawn_main" in text else comm


def child_env(prefect_api_url: str | None = None, prefect_home: Path | None = None) -> dict[str, str]:
    """The shell's environment without tracking or workspace settings: each run uses its defaults.

    With `prefect_api_url` the run uses that (warm) Prefect server; without, a temporary one.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SHRINKFLOW_WORKSPACE", "PREFECT_API_URL")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    return env


def venv_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def flow_argv(config: Path, sets: Sequence[str], workspace: Path, use_cache: bool = False) -> list[str]:
    # --verbose: Prefect's log lines in the output, which the benchmarks read their phases from.
    argv = [venv_script("shrinkflow"), "run", str(config), *(f"--set={s}" for s in sets), "--workspace", str(workspace), "--verbose"]
    return argv if use_cache else [*argv, "--no-cache"]


def plain_argv(config: Path, sets: Sequence[str], workspace: Path) -> list[str]:
    return [sys.executable, "-m", "bench.plain", str(config), *(f"--set={s}" for s in sets), "--workspace", str(workspace)]


class PrefectServer:
    """A `prefect server start` of our own on a free loopback port (shrinkflow.deployments.processes: a session of its
    own, stopped with everything it started).

    Starts at once; `api_url()` waits until it answers, so other work can run while it starts.
    """

    def __init__(self, home: Path) -> None:
        self.home, port = home, free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        env = {**child_env(prefect_home=home), "PREFECT_API_URL": self.url, "PREFECT_SERVER_API_PORT": str(port)}
        self.started = time.perf_counter()
        self.start_s: float | None = None
        self.process = Spawned.start(
            "Prefect server", [venv_script("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            home / "server.log", env,
        )

    def api_url(self, timeout: float = 180) -> str:
        if self.start_s is None:
            try:
                wait_until_ready({self.process: answers(f"{self.url}/health", b"true")}, timeout)
            except ProcessError as exc:
                raise ChildFailed(str(exc)) from None
            self.start_s = time.perf_counter() - self.started
        return self.url

    def stop(self) -> None:
        self.process.stop(timeout=20)


@contextmanager
def warm_prefect_server(ctx: Context, name: str = "prefect-warm-home") -> Iterator[PrefectServer]:
    """A Prefect server up and answering for the block (its start time in `.start_s`)."""
    server = PrefectServer(ctx.fresh_dir(name))
    try:
        server.api_url()
        yield server
    finally:
        server.stop()


def prefect_home(ctx: Context, name: str) -> Path:
    """A PREFECT_HOME whose database exists: a temporary server started on it needs no migrations,
    as on a machine where shrinkflow has run before."""
    home = ctx.fresh_dir(name)
    subprocess.run([venv_script("prefect"), "server", "database", "upgrade", "-y"], env=child_env(prefect_home=home),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True)
    return home


# --- figures ---------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and every value in run order."""
    return {
        "median": round(median(values), digits), "min": round(min(values), digits), "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def goal(text: str, measured: Any, met: bool | None, note: str = "") -> dict[str, Any]:
    """One goal of issue 5: what we hold ourselves to, what was measured, and whether it is met."""
    return {"goal": text, "measured": measured, "met": met, **({"note": note} if note else {})}


def current_rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


# --- machine and results ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "gpu": "none (CPU only)",
    }


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_result(ctx: Context, name: str, result: dict[str, Any], command: str, seconds: float) -> Path:
    """bench results/<name>.json: the figures plus machine, versions, date, command and conditions."""
    result = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "smoke": ctx.smoke,
        "machine": machine_info(),
        "versions": versions(),
        "load_average_at_end": load_average(),
        "benchmark_seconds": round(seconds, 1),
        **result,
    }
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def yes_no(met: bool | None) -> str:
    return "n/a" if met is None else ("**yes**" if met else "**no**")
