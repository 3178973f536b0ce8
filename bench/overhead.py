"""1. Orchestration overhead: the plain script against `shrinkflow run` with full tracking.

On real MNIST (CNN preset, 8,000 / 2,000 split), each repetition runs, one after the other
(A B C A B C ...), each as a fresh process in a fresh workspace:
  A  `python -m bench.plain` (bench/plain.py): the same plain functions, no Prefect, no MLflow;
  B  `shrinkflow run --no-cache` with its defaults: a temporary Prefect server, embedded SQLite MLflow;
  C  the same `shrinkflow run` again in B's workspace, with the cache (read by bench/caching.py).
Goal: median B / median A at most 1.10.

Fixed cost on tiny data (digits, every training step one epoch): A against B with a warm Prefect
server (started once, before the repetitions) and against B with a cold temporary server; goal:
warm B minus A under 5 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shrinkflow.core.tables import markdown_table
from bench.common import (
    DIGITS_CNN, MNIST_CNN, MNIST_SOURCE, ONE_EPOCH, PREFECT_SERVER, ChildRun, Context, child_env, flow_argv, goal, median,
    plain_argv, prefect_home, run_child, spread, tree_cpu_s, warm_prefect_server, yes_no,
)
from bench.plain import STAGE_MARKER

NAME = "overhead"
GOAL_RATIO = 1.10
GOAL_FIXED_S = 5.0
GOAL_COLD_FIXED_S = 8.0  # with the temporary server `shrinkflow run` starts
# The smoke mode's stand-in for MNIST: the digits preset, tiny and one epoch.
SMOKE_SETS = (
    *ONE_EPOCH, "model.conv_filters=[8]", "model.hidden_units=[16]", "prune.enabled=false", "quantize.modes=[dynamic]",
    "distill.students=[]",
)


def mnist_setup(ctx: Context) -> tuple[Any, list[str], str]:
    """The (config, --set overrides, description) of the "MNIST" comparison; tiny digits in smoke mode."""
    if ctx.smoke:
        return DIGITS_CNN, list(SMOKE_SETS), "smoke: digits, tiny CNN, 1 epoch, no pruning, 1 quantize mode"
    return MNIST_CNN, [MNIST_SOURCE], "MNIST t10k, 8,000 train+validation / 2,000 test, configs/mnist_cnn.yaml"


def mnist_reps(ctx: Context) -> list[dict[str, ChildRun]]:
    """The interleaved plain / flow / cached-flow repetitions; run once per harness invocation, shared."""
    if "mnist_reps" in ctx.shared:
        return ctx.shared["mnist_reps"]
    config, sets, _ = mnist_setup(ctx)
    warm = ctx.shared.get("warm_server")  # smoke mode: one server for every flow run, started in the background
    reps = []
    for rep in range(ctx.reps):
        work = ctx.fresh_dir(f"mnist/rep{rep}")
        plain = run_child("plain", plain_argv(config, sets, work / "plain"), work / "plain.log", child_env())
        env = child_env(prefect_api_url=warm.api_url(), prefect_home=warm.home) if warm else child_env(prefect_home=cold_home(ctx))
        flow = run_child("flow", flow_argv(config, sets, work / "flow"), work / "flow.log", env)
        cached = run_child("cached", flow_argv(config, sets, work / "flow", use_cache=True), work / "cached.log", env)
        reps.append({"plain": plain, "flow": flow, "cached": cached})
        print(f"  rep {rep + 1}/{ctx.reps}: plain {plain.wall_s:.1f} s, flow {flow.wall_s:.1f} s, cached re-run "
              f"{cached.wall_s:.1f} s", flush=True)
    ctx.shared["mnist_reps"] = reps
    return reps


def run(ctx: Context) -> dict[str, Any]:
    config, sets, description = mnist_setup(ctx)
    reps = mnist_reps(ctx)
    plain = [r["plain"].wall_s for r in reps]
    flow = [r["flow"].wall_s for r in reps]
    ratio = median(flow) / median(plain)
    result: dict[str, Any] = {
        "data": description,
        "command_a": " ".join(plain_argv(config, sets, "WORKSPACE")),  # type: ignore[arg-type]
        "command_b": " ".join(flow_argv(config, sets, "WORKSPACE")),  # type: ignore[arg-type]
        "repetitions": len(reps),
        "plain_s": spread(plain),
        "flow_s": spread(flow),
        "per_rep_ratio": [round(b / a, 3) for a, b in zip(plain, flow)],
        "flow_over_plain": round(ratio, 3),
        "extra_s": round(median(flow) - median(plain), 1),
        "plain_stage_s": _median_stages([r["plain"] for r in reps]),
        "flow_phases_s": _median_phases([r["flow"] for r in reps]),
        "cpu_s": cpu_seconds({"plain": [r["plain"] for r in reps], "flow": [r["flow"] for r in reps]}),
        "runs": [{side: run.summary() for side, run in rep.items()} for rep in reps],
    }
    goals = {"flow_over_plain_at_most_1.10": goal(f"<= {GOAL_RATIO}", result["flow_over_plain"], ratio <= GOAL_RATIO)}
    if not ctx.smoke:
        result["fixed_cost"] = fixed_cost(ctx)
        warm_extra = result["fixed_cost"]["warm_extra_s"]["median"]
        goals["fixed_cost_warm_under_5s"] = goal(f"< {GOAL_FIXED_S} s", warm_extra, warm_extra < GOAL_FIXED_S)
        cold_extra = result["fixed_cost"]["cold_extra_s"]["median"]
        goals["fixed_cost_cold_under_8s"] = goal(f"< {GOAL_COLD_FIXED_S} s", cold_extra, cold_extra < GOAL_COLD_FIXED_S)
    result["goals"] = goals
    return result


def fixed_cost(ctx: Context) -> dict[str, Any]:
    """Digits, one epoch: plain, flow on a warm Prefect server, flow on a cold temporary server, interleaved."""
    sets = list(ONE_EPOCH)
    home = cold_home(ctx)
    runs: dict[str, list[ChildRun]] = {"plain": [], "warm": [], "cold": []}
    with warm_prefect_server(ctx) as server:
        server_start_s = server.start_s
        envs = {"plain": child_env(prefect_home=home), "warm": child_env(prefect_api_url=server.url, prefect_home=home),
                "cold": child_env(prefect_home=home)}
        server_cpu: list[float] = []  # the warm server's CPU seconds during each warm run
        for rep in range(ctx.reps):
            work = ctx.fresh_dir(f"fixed/rep{rep}")
            for side, env in envs.items():
                argv = (plain_argv(DIGITS_CNN, sets, work / side) if side == "plain"
                        else flow_argv(DIGITS_CNN, sets, work / side))
                server_before = tree_cpu_s(server.process.pid)
                runs[side].append(run_child(side, argv, work / f"{side}.log", env))
                if side == "warm":
                    server_cpu.append(tree_cpu_s(server.process.pid) - server_before)
            print("  fixed cost rep {}/{}: ".format(rep + 1, ctx.reps)
                  + ", ".join(f"{side} {values[-1].wall_s:.1f} s" for side, values in runs.items()), flush=True)
    walls = {side: [r.wall_s for r in values] for side, values in runs.items()}
    return {
        "data": "sklearn digits (1,797 8x8 images), configs/digits_cnn.yaml with " + ", ".join(sets),
        "warm_server_start_s": round(server_start_s or 0, 1),
        **{f"{side}_s": spread(values) for side, values in walls.items()},
        "warm_extra_s": spread([w - p for w, p in zip(walls["warm"], walls["plain"])]),
        "cold_extra_s": spread([c - p for c, p in zip(walls["cold"], walls["plain"])]),
        "cold_server_adds_s": spread([c - w for c, w in zip(walls["cold"], walls["warm"])]),
        "plain_stage_s": _median_stages(runs["plain"]),
        "warm_phases_s": _median_phases(runs["warm"]),
        "cold_phases_s": _median_phases(runs["cold"]),
        "cpu_s": {**cpu_seconds(runs), "warm: the warm Prefect server during the run": round(median(server_cpu), 1)},
    }


def cpu_seconds(runs: dict[str, list[ChildRun]]) -> dict[str, float]:
    """Median CPU seconds of each side's process tree, and of the temporary Prefect server within it."""
    cpu = {side: round(median([r.cpu_s for r in values]), 1) for side, values in runs.items()}
    for side, values in runs.items():
        server = [r.descendants_cpu_s.get(PREFECT_SERVER, 0.0) for r in values]
        if any(server):
            cpu[f"{side}: of which its temporary Prefect server"] = round(median(server), 1)
    return cpu


def cold_home(ctx: Context) -> Path:
    """The PREFECT_HOME of every run on a temporary server: its database created once, before any timing."""
    if "cold_home" not in ctx.shared:
        ctx.shared["cold_home"] = prefect_home(ctx, "prefect-home")
    return ctx.shared["cold_home"]


def plain_stages(run: ChildRun) -> dict[str, float]:
    """The stage seconds bench.plain printed."""
    line = next(line for line in run.output().splitlines() if line.startswith(STAGE_MARKER))
    return json.loads(line.removeprefix(STAGE_MARKER))


def flow_phases(run: ChildRun) -> dict[str, float]:
    """Where a `shrinkflow run`'s wall time went, from the timestamps of its Prefect log lines.

    startup: process start to the flow run's first line (imports, the CLI's data check, and a
    temporary server's start); server_start: the temporary server's own start, within startup;
    flow: the flow body; teardown: the flow's end to the process's exit (stopping the server).
    """
    marks: dict[str, float] = {}
    for offset, message in run.log_messages():
        if "Starting temporary server" in message:
            marks.setdefault("server", offset)
        elif "Beginning flow run" in message:
            marks.setdefault("begin", offset)
        elif message.startswith("Flow run") and "Finished in state" in message:
            marks["end"] = offset
    if "begin" not in marks or "end" not in marks:
        return {}
    phases = {"startup": marks["begin"], "flow": marks["end"] - marks["begin"], "teardown": run.wall_s - marks["end"]}
    if "server" in marks:
        phases["server_start"] = marks["begin"] - marks["server"]
    return phases


def _median_stages(runs: list[ChildRun]) -> dict[str, float]:
    stages = [plain_stages(r) for r in runs]
    return {name: round(median([s.get(name, 0.0) for s in stages]), 1) for name in stages[0]}


def _median_phases(runs: list[ChildRun]) -> dict[str, float]:
    phases = [p for p in (flow_phases(r) for r in runs) if p]
    return {name: round(median([p[name] for p in phases]), 1) for name in phases[0]} if phases else {}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Data: {result['data']}. {result['repetitions']} repetitions, interleaved (A B A B ...), each a fresh "
        "process in a fresh workspace.", "",
        markdown_table(
            ["side", "median s", "min s", "max s"],
            [["(a) plain script, no Prefect, no MLflow", *_cells(result["plain_s"])],
             ["(b) `shrinkflow run --no-cache`, temporary Prefect server, MLflow", *_cells(result["flow_s"])]],
        ),
        f"(b) / (a) = **{result['flow_over_plain']}** (per repetition: {result['per_rep_ratio']}); (b) takes "
        f"{result['extra_s']} s more. Plain script's stages (median s): {_inline(result['plain_stage_s'])}. "
        f"Flow's phases (median s): {_inline(result['flow_phases_s'])}. CPU seconds (median): "
        f"{_inline(result.get('cpu_s', {}))}.", "",
    ]
    fixed = result.get("fixed_cost")
    if fixed:
        lines += [
            f"Fixed cost on tiny data ({fixed['data']}), {len(fixed['plain_s']['values'])} repetitions interleaved "
            f"plain / warm / cold (the warm server took {fixed['warm_server_start_s']} s to start, once):", "",
            markdown_table(
                ["run", "median s", "min s", "max s"],
                [["plain script", *_cells(fixed["plain_s"])],
                 ["`shrinkflow run`, warm Prefect server", *_cells(fixed["warm_s"])],
                 ["`shrinkflow run`, cold temporary server", *_cells(fixed["cold_s"])],
                 ["warm minus plain (per repetition)", *_cells(fixed["warm_extra_s"])],
                 ["cold minus plain (per repetition)", *_cells(fixed["cold_extra_s"])],
                 ["cold minus warm: what the temporary server adds", *_cells(fixed["cold_server_adds_s"])]],
            ),
            f"Warm run's phases (median s): {_inline(fixed['warm_phases_s'])}; cold run's: "
            f"{_inline(fixed['cold_phases_s'])}; plain script's stages: {_inline(fixed['plain_stage_s'])}. "
            f"CPU seconds (median): {_inline(fixed.get('cpu_s', {}))}.", "",
        ]
    return "\n".join(lines)


def _cells(values: dict[str, Any]) -> list[Any]:
    return [values["median"], values["min"], values["max"]]


def _inline(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "n/a"


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Headline rows: what, goal, measured, met."""
    rows = [["orchestration + tracking overhead on MNIST, (b)/(a) wall time",
             f"<= {GOAL_RATIO}", result["flow_over_plain"], yes_no(result["goals"]["flow_over_plain_at_most_1.10"]["met"])]]
    if "fixed_cost" in result:
        fixed = result["fixed_cost"]
        rows.append(["fixed cost on tiny data, warm Prefect server (s beyond the plain script)", f"< {GOAL_FIXED_S} s",
                     fixed["warm_extra_s"]["median"], yes_no(result["goals"]["fixed_cost_warm_under_5s"]["met"])])
        cold_extra = fixed["cold_extra_s"]["median"]
        rows.append(["fixed cost on tiny data, temporary Prefect server (s beyond the plain script)",
                     f"< {GOAL_COLD_FIXED_S} s", cold_extra, yes_no(cold_extra < GOAL_COLD_FIXED_S)])
        rows.append(["what a cold temporary Prefect server adds (s)", "(report)", fixed["cold_server_adds_s"]["median"], "n/a"])
    return rows
