"""8. Sweep on MNIST: what a 20-trial `shrinkflow sweep` of configs/digits_sweep.yaml finds on 8,000 / 2,000 MNIST images.

The digits sweep as written (TPE, its search space, its budget: the base config's baseline accuracy minus
select.max_quality_drop), on the MNIST test set (10,000 images: 8,000 train+validation, 2,000 test by the
config's fractions), on the local cluster's default size (one single-threaded worker per core). One run: it
reports what the search finds, it does not compare sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import MNIST, MNIST_SOURCE, Context, child_env, run_child
from bench.overhead import cold_home
from bench.sweep import DIGITS_SWEEP, described_params, shown, sweep_argv, sweep_found, trials_table

NAME = "sweep_mnist"
TRIALS = 20
SETS = [MNIST_SOURCE, "name=mnist_sweep"]


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:  # a quarter of an hour of training
        return None
    if not MNIST.is_dir():
        return {"skipped": f"{MNIST} is absent"}
    work = ctx.fresh_dir("sweep-mnist")
    argv = sweep_argv(DIGITS_SWEEP, SETS, work / "ws", trials=TRIALS)
    sweep = run_child("mnist sweep", argv, work / "sweep.log", child_env(prefect_home=cold_home(ctx)))
    found = sweep_found(work / "ws", DIGITS_SWEEP, SETS)
    return {
        "data": "MNIST t10k, 8,000 train+validation / 2,000 test, configs/digits_sweep.yaml",
        "command": shown(sweep_argv(DIGITS_SWEEP, SETS, Path("WORKSPACE"), trials=TRIALS)),
        "wall_s": round(sweep.wall_s, 1),
        **found,
    }


def render(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    chosen, ours = result["chosen_trial"], result["shipped"]
    found = (
        f"Chosen: trial {chosen['trial']} ({described_params(chosen['params'])}); "
        f"its pipeline run shipped **{ours['variant']}**: {result['metric']} {ours['quality']}, {ours['gzip_size_bytes']:,} "
        f"bytes gzipped (its baseline {ours['baseline_quality']})." if chosen and ours else "No trial kept the floor."
    )
    return "\n".join([
        f"Data: {result['data']}; `{result['command']}`: {len(result['trials_table'])} trials in {result['wall_s']} s; "
        f"{result['metric']} floor {result['floor']} (the base config's baseline within its budget). {found}", "",
        trials_table(result["trials_table"]),
    ])


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    if "skipped" in result:
        return [["sweep on MNIST (20 trials)", "(report)", "skipped", "n/a"]]
    ours = result["shipped"]
    measured = (f"{ours['variant']}, {result['metric']} {ours['quality']}, {ours['gzip_size_bytes']:,} bytes gzipped"
                if ours else "nothing kept the floor")
    return [[f"sweep on MNIST ({len(result['trials_table'])} trials): what it ships", "(report)", measured, "n/a"]]
