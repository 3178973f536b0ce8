"""5. Memory: peak resident memory of a full run on MNIST-10k, and what it is made of.

The full runs are the overhead benchmark's repetitions: for each, the peak of the biggest process
(what /usr/bin/time reports) and the peak summed over the process tree (the flow plus the temporary
Prefect server it starts). A probe process then measures resident memory step by step: bare Python,
after each import, with the dataset prepared (its shards on disk) and after one training epoch streamed from them. Goal: under 3 GiB.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from shrinkflow.core.tables import markdown_table
from bench.common import Context, child_env, goal, median, run_child, yes_no
from bench.overhead import mnist_reps, mnist_setup

NAME = "memory"
GOAL_MIB = 3 * 1024
PROBE = r"""
import json, os, sys
from pathlib import Path
def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
steps = [("bare Python 3.11", rss())]
import shrinkflow.core.config, shrinkflow.core.data
steps.append(("+ numpy, pandas, scikit-learn (shrinkflow.core.data)", rss()))
import tensorflow, tf_keras
steps.append(("+ tensorflow, tf_keras", rss()))
import tensorflow_model_optimization, ai_edge_litert.interpreter
steps.append(("+ tensorflow_model_optimization, ai_edge_litert", rss()))
import prefect, mlflow, flows.pipeline
steps.append(("+ prefect, mlflow (the flow's modules)", rss()))
from shrinkflow.core.config import load_config
from shrinkflow.core.data import prepare_dataset, tf_dataset
from shrinkflow.core.training import build_model, compile_for_training
config = load_config(sys.argv[1], sys.argv[3:])
dataset = prepare_dataset(config.data, sys.argv[2])
stored = sum(path.stat().st_size for path in Path(dataset.path).rglob("*.npy")) / 2**20
steps.append((f"+ the dataset prepared ({stored:.0f} MiB of shards on disk, streamed)", rss()))
model = build_model(config.model, dataset.input_shape, dataset.num_classes)
compile_for_training(model, tf_keras.optimizers.Adam())
model.fit(tf_dataset(dataset, "train", config.train.batch_size, 0), epochs=1, verbose=0)
steps.append((f"+ the CNN ({model.count_params():,} weights) trained one epoch", rss()))
print("PROBE " + json.dumps(steps))
"""


def run(ctx: Context) -> dict[str, Any]:
    reps = mnist_reps(ctx)
    config, sets, description = mnist_setup(ctx)
    flow_peak = median([r["flow"].peak_rss_mib for r in reps])
    flow_tree = median([r["flow"].tree_peak_rss_mib for r in reps])
    steps, probe_peak = probe_steps(ctx, config, sets) if not ctx.smoke else ([], 0.0)  # the probe takes 12 s
    return {
        "data": description,
        "repetitions": len(reps),
        "flow_peak_rss_mib": round(flow_peak),
        "flow_tree_peak_rss_mib": round(flow_tree),
        "cached_rerun_tree_peak_rss_mib": round(median([r["cached"].tree_peak_rss_mib for r in reps])),
        "plain_peak_rss_mib": round(median([r["plain"].peak_rss_mib for r in reps])),
        "prefect_server_and_other_children_mib": round(flow_tree - flow_peak),
        "probe_steps_mib": [[name, round(value)] for name, value in steps],
        "probe_peak_mib": round(probe_peak),
        "goals": {"peak_under_3_gib": goal(f"< {GOAL_MIB} MiB (3 GiB)", round(flow_tree), flow_tree < GOAL_MIB,
                                           "process tree: the flow plus its temporary Prefect server")},
    }


def probe_steps(ctx: Context, config: Any, sets: list[str]) -> tuple[list[tuple[str, float]], float]:
    """Resident memory after each step of the probe, and the probe's peak."""
    work = ctx.fresh_dir("memory-probe")
    probe = run_child("probe", [sys.executable, "-c", PROBE, str(config), str(work), *sets], work / "probe.log",
                      child_env())
    steps = json.loads(next(line for line in probe.output().splitlines() if line.startswith("PROBE "))[6:])
    return steps, probe.peak_rss_mib


def render(result: dict[str, Any]) -> str:
    steps = result["probe_steps_mib"]
    rows = [[name, value, value - (steps[i - 1][1] if i else 0)] for i, (name, value) in enumerate(steps)]
    return "\n".join([
        f"Data: {result['data']}; medians of {result['repetitions']} full runs.", "",
        markdown_table(["process", "peak resident MiB"], [
            ["`shrinkflow run`, the flow's process", result["flow_peak_rss_mib"]],
            ["`shrinkflow run`, whole process tree (with the temporary Prefect server)", result["flow_tree_peak_rss_mib"]],
            ["unchanged cached re-run, process tree", result["cached_rerun_tree_peak_rss_mib"]],
            ["plain script", result["plain_peak_rss_mib"]],
        ]),
        *(["What it is made of (a probe process, resident MiB after each step, and what the step added):", "",
            markdown_table(["step", "resident MiB", "added MiB"], rows)] if rows else []),
    ])


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [["peak resident memory of a full MNIST run (process tree)", "< 3 GiB",
             f"{result['flow_tree_peak_rss_mib']} MiB", yes_no(result["goals"]["peak_under_3_gib"]["met"])]]

