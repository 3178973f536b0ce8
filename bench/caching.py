"""2. Caching: an unchanged re-run against the first run, same config, same workspace.

Reuses the overhead benchmark's repetitions: after each first run (`--no-cache`, fresh workspace)
the same command runs again with the cache. Goal: the re-run takes at most 0.15 of the time.
A re-run still starts Prefect and MLflow, evaluates every variant again into its new MLflow run,
registers and exports a new version and re-evaluates the champion for the gate.
"""

from __future__ import annotations

from typing import Any

from shrinkflow.core.tables import markdown_table
from bench.common import Context, goal, median, spread, yes_no
from bench.overhead import _median_phases, mnist_reps, mnist_setup

NAME = "caching"
GOAL_SHARE = 0.15


def run(ctx: Context) -> dict[str, Any]:
    reps = mnist_reps(ctx)
    first = [r["flow"].wall_s for r in reps]
    again = [r["cached"].wall_s for r in reps]
    share = median(again) / median(first)
    cached_tasks = [r["cached"].output().count("Finished in state Cached") for r in reps]
    return {
        "data": mnist_setup(ctx)[2],
        "repetitions": len(reps),
        "first_run_s": spread(first),
        "cached_rerun_s": spread(again),
        "per_rep_share": [round(b / a, 3) for a, b in zip(first, again)],
        "rerun_over_first": round(share, 3),
        "cached_tasks_per_rerun": cached_tasks,
        "cached_rerun_phases_s": _median_phases([r["cached"] for r in reps]),
        "goals": {"rerun_at_most_0.15_of_first": goal(f"<= {GOAL_SHARE}", round(share, 3), share <= GOAL_SHARE)},
    }


def render(result: dict[str, Any]) -> str:
    phases = ", ".join(f"{k} {v}" for k, v in result["cached_rerun_phases_s"].items())
    return "\n".join([
        f"Data: {result['data']}; {result['repetitions']} repetitions, each re-run straight after its first run.", "",
        markdown_table(["run", "median s", "min s", "max s"], [
            ["first run (`--no-cache`, fresh workspace)", *_cells(result["first_run_s"])],
            ["unchanged re-run (cache)", *_cells(result["cached_rerun_s"])],
        ]),
        f"Re-run / first run = **{result['rerun_over_first']}** (per repetition: {result['per_rep_share']}); "
        f"tasks answered from the cache per re-run: {result['cached_tasks_per_rerun']}. Re-run phases (median s): "
        f"{phases}.", "",
    ])


def _cells(values: dict[str, Any]) -> list[Any]:
    return [values["median"], values["min"], values["max"]]


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [["unchanged re-run / first run", f"<= {GOAL_SHARE}", result["rerun_over_first"],
             yes_no(result["goals"]["rerun_at_most_0.15_of_first"]["met"])]]
