"""7. Sweep: the same trials on 1 and 2 Dask workers, the orchestration around each trial, and what a sweep finds.

(a) Throughput. Each side runs the same 10 trials of configs/digits_sweep.yaml shrunk to seconds a trial
(TRIAL_SETS): trial 0 is the base config, trials 1-9 points of a grid over model.hidden_units x
train.learning_rate (GRID; Optuna's grid sampler gives trial n the n-th point of its seeded order, so both
sides run the same points). Every trial trains its own baseline, so no trial reuses another's cached stages
whatever the order they run in, and the base config's values are not on the grid. The grid has more points
than the sweep asks for: Optuna's GridSampler stops the study when its last point is told, which raises
outside study.optimize, and the sweep uses ask/tell. Sides: `shrinkflow sweep --workers 1` against
`--workers 2` (a LocalCluster of single-threaded worker processes), as a user runs it (its temporary Prefect
server, MLflow in SQLite), interleaved 1 2 2 1 1 2 ..., each a fresh process in a fresh workspace. The trial
phase runs from the flow's "N of M trials done" line (just before it asks for the first trial) to its
"trials of" line (after it told Optuna and MLflow of the last one), by the log's timestamps: the start-up
before it and the chosen config's pipeline run after it are not in it. Goal: 2 workers take at most 0.6 of
1 worker's trial phase.

(b) Orchestration per trial, on the 1-worker runs, where trials run one at a time: the flow sees trial n
from its "record-trial-(n-1)" line to its "record-trial-n" line (ask, submit, the task on Dask, the result,
tell, the MLflow trial run); TrialOutcome.stage_seconds is the part inside the trial task's body (the
pipeline's stages, run as the same cached Prefect tasks as in `shrinkflow run`, and the selection). Goal:
the rest under 10 % of the trial time, trials after the first (whose body also imports TensorFlow).

(c) Quality. `shrinkflow run configs/digits_cnn.yaml` (the default preset) and `shrinkflow sweep
configs/digits_sweep.yaml` (12 TPE trials, as written) one after the other, each in a fresh workspace:
each one's shipped variant (the export's manifest), and whether the sweep's is smaller and keeps the
preset's accuracy budget (its baseline's accuracy minus select.max_quality_drop).
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shrinkflow.core.tables import markdown_table
from bench.common import (
    DIGITS_CNN, REPO, SPAWNED_CHILD, ChildRun, Context, child_env, flow_argv, goal, median, run_child, spread, venv_script,
    yes_no,
)
from bench.overhead import cold_home

NAME = "sweep"
DIGITS_SWEEP = REPO / "configs" / "digits_sweep.yaml"
WORKER_COUNTS = (1, 2)
GOAL_TIME_SHARE = 0.6  # 2 workers' trial phase over 1 worker's
GOAL_OVERHEAD_SHARE = 0.10
# The digits sweep shrunk to a few seconds a trial: two epochs, one of pruning, one quantization mode.
TRIAL_SETS = ("train.epochs=2", "prune.epochs=1", "quantize.modes=[dynamic]", "sweep.sampler=grid")
GRID: dict[str, list[Any]] = {"model.hidden_units": [[16], [24], [32], [48]], "train.learning_rate": [0.003, 0.005, 0.008]}
THROUGHPUT_TRIALS = 10  # the base config and 9 grid points: 5 full batches of 2

# The sweep flow's log lines (flows/sweep.py) that mark its phases, and its trial tasks' (flows/trial.py).
TRIALS_BEGIN = re.compile(r"^Flow run '[^']+' - study \S+ in .*: \d+ of \d+ trials done; \d+ at a time$")
TRIALS_END = re.compile(r"^Flow run '[^']+' - trials of ")
TRIAL_FINISHED = re.compile(r"^Task run 'trial-(\d+)' - trial \d+ (on |failed)")  # the trial task's last line
TRIAL_RECORDED = re.compile(r"^Task run 'record-trial-(\d+)' - recorded trial ")


def sweep_argv(config: Path, sets: list[str], workspace: Path, workers: int | None = None, trials: int | None = None) -> list[str]:
    """`shrinkflow sweep` on `config`; the local cluster's default size (one worker per core) without `workers`."""
    argv = [venv_script("shrinkflow"), "sweep", str(config), *(f"--set={s}" for s in sets), "--workspace", str(workspace), "--verbose"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv if trials is None else [*argv, "--trials", str(trials)]


def shown(argv: list[str]) -> str:
    """A command as a reader would type it in the repository: paths relative to it, quoted for the shell."""
    return shlex.join(part.replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../") for part in argv)


def throughput_sets() -> list[str]:
    parameters = {key: {"choice": values} for key, values in GRID.items()}
    return [*TRIAL_SETS, f"sweep.parameters={json.dumps(parameters)}"]


@dataclass(frozen=True)
class Timeline:
    """When (s since the command started) the trial phase began and ended, and each trial finished and was recorded."""

    trials_begin: float
    trials_end: float
    finished: dict[int, float]
    recorded: dict[int, float]


def sweep_timeline(run: ChildRun) -> Timeline:
    begin = end = None
    finished: dict[int, float] = {}
    recorded: dict[int, float] = {}
    for offset, message in run.log_messages():
        if begin is None and TRIALS_BEGIN.match(message):
            begin = offset
        elif TRIALS_END.match(message):
            end = offset
        elif match := TRIAL_FINISHED.match(message):
            finished[int(match.group(1))] = offset
        elif match := TRIAL_RECORDED.match(message):
            recorded[int(match.group(1))] = offset
    if begin is None or end is None:
        raise ValueError(f"{run.log}: no trial phase in the sweep's log")
    return Timeline(begin, end, finished, recorded)


def study_outcomes(workspace: Path) -> list[Any]:
    """The TrialOutcome of every finished trial, in trial order, from the study database in the workspace."""
    import optuna

    from shrinkflow.core.sweep import finished_outcomes

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (database,) = (workspace / "sweeps").glob("*.db")
    return sorted(finished_outcomes(optuna.load_study(study_name=None, storage=f"sqlite:///{database}")),
                  key=lambda outcome: outcome.number)


def sweep_figures(run: ChildRun, workspace: Path, workers: int) -> dict[str, Any]:
    """Where one sweep's time went: start-up, trial phase, after; per batch of trials (as many as workers, asked,
    run and told together) the flow's cycle, the slowest trial's stage time in it, and the worker time left idle."""
    timeline = sweep_timeline(run)
    outcomes = study_outcomes(workspace)
    stage = {o.number: o.stage_seconds for o in outcomes}
    numbers = sorted(stage)
    batches, previous = [], timeline.trials_begin
    for first in range(0, len(numbers), workers):
        batch = numbers[first:first + workers]
        done = timeline.recorded[batch[-1]]
        slowest = max(stage[n] for n in batch)
        batches.append({
            "trials": batch, "cycle_s": round(done - previous, 2), "slowest_stage_s": round(slowest, 2),
            "overhead_s": round(done - previous - slowest, 2),
            "idle_worker_s": round(sum(slowest - stage[n] for n in batch), 2),
        })
        previous = done
    figures: dict[str, Any] = {
        "workers": workers,
        "wall_s": round(run.wall_s, 2),
        "startup_s": round(timeline.trials_begin, 2),
        "trial_phase_s": round(timeline.trials_end - timeline.trials_begin, 2),
        "after_trials_s": round(run.wall_s - timeline.trials_end, 2),
        "trials": len(outcomes),
        "failed_trials": [o.number for o in outcomes if not o.ok],
        "trials_by_worker": dict(Counter(o.worker for o in outcomes)),
        "stage_s": [round(stage[n], 2) for n in numbers],
        "stage_s_total": round(sum(stage.values()), 2),
        "cpu_s": round(run.cpu_s, 1),
        "worker_cpu_s": run.descendants_cpu_s.get(SPAWNED_CHILD, 0.0),  # the local cluster's workers
        "cpu_s_by_process": run.descendants_cpu_s,
        "batches": batches,
    }
    if workers == 1:
        figures["per_trial"] = [per_trial(o, timeline, previous) for o, previous in zip(
            outcomes, [timeline.trials_begin, *(timeline.recorded[o.number] for o in outcomes[:-1])])]
    return figures


def per_trial(outcome: Any, timeline: Timeline, previous: float) -> dict[str, float]:
    """One trial as the flow of a 1-worker sweep sees it, from recording the trial before to recording this one.

    to_body: asking Optuna, the trial's config, submitting, Dask and Prefect starting the task (up to its body's
    start, TrialOutcome.seconds before the task's "Finished" line); body_outside_stages: the trial body's own
    steps (TrialOutcome.seconds - stage_seconds); after_body: the result back, telling Optuna, the MLflow trial run.
    """
    number = outcome.number
    flow_s = timeline.recorded[number] - previous
    finished = timeline.finished[number]
    return {
        "trial": number, "flow_s": round(flow_s, 3), "stage_s": round(outcome.stage_seconds, 3),
        "overhead_s": round(flow_s - outcome.stage_seconds, 3),
        "to_body_s": round(finished - outcome.seconds - previous, 3),
        "body_outside_stages_s": round(outcome.seconds - outcome.stage_seconds, 3),
        "after_body_s": round(timeline.recorded[number] - finished, 3),
    }


def side(workers: int) -> str:
    """The key of a side in the results."""
    return f"workers_{workers}"


def throughput(ctx: Context) -> dict[int, list[dict[str, Any]]]:
    """The interleaved repetitions of the 1- and 2-worker sweeps: each one's figures by worker count."""
    env = child_env(prefect_home=cold_home(ctx))
    sets = throughput_sets()
    runs: dict[int, list[dict[str, Any]]] = {workers: [] for workers in WORKER_COUNTS}
    for rep in range(ctx.reps):
        work = ctx.fresh_dir(f"sweep/rep{rep}")
        for workers in (WORKER_COUNTS if rep % 2 == 0 else WORKER_COUNTS[::-1]):
            workspace = work / f"workers-{workers}"
            argv = sweep_argv(DIGITS_SWEEP, sets, workspace, workers, THROUGHPUT_TRIALS)
            run = run_child(f"{workers} workers", argv, work / f"workers-{workers}.log", env)
            runs[workers].append(sweep_figures(run, workspace, workers))
        print(f"  rep {rep + 1}/{ctx.reps}: " + ", ".join(
            f"{w} worker(s) trial phase {runs[w][-1]['trial_phase_s']:.1f} s of {runs[w][-1]['wall_s']:.1f} s"
            for w in WORKER_COUNTS), flush=True)
    return runs


def throughput_result(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    from shrinkflow.tasks.sweep import worker_threads

    one, two = runs[1], runs[2]
    phase = {w: [r["trial_phase_s"] for r in runs[w]] for w in WORKER_COUNTS}
    wall = {w: [r["wall_s"] for r in runs[w]] for w in WORKER_COUNTS}
    share = median(phase[2]) / median(phase[1])
    speedup = median(phase[1]) / median(phase[2])
    # What each side's trials cost: the sum of their stage times, and how much of the workers' time they kept busy.
    stage_total = {w: median([r["stage_s_total"] for r in runs[w]]) for w in WORKER_COUNTS}
    idle = median([sum(b["idle_worker_s"] for b in r["batches"]) for r in two])
    batch_overhead = {w: median([sum(b["overhead_s"] for b in r["batches"]) for r in runs[w]]) for w in WORKER_COUNTS}
    return {
        "data": "sklearn digits, configs/digits_sweep.yaml with " + ", ".join(TRIAL_SETS) + f"; grid {GRID}",
        "trials": THROUGHPUT_TRIALS,
        "command": shown(sweep_argv(DIGITS_SWEEP, throughput_sets(), Path("WORKSPACE"), None, THROUGHPUT_TRIALS))
                   + " --workers N",
        "repetitions": len(one),
        "tensorflow_threads_per_trial": {
            side(w): worker_threads({f"tcp://127.0.0.1:{port}": {"nthreads": 1} for port in range(w)})["127.0.0.1"]
            for w in WORKER_COUNTS
        },
        "trial_phase_s": {side(w): spread(phase[w]) for w in WORKER_COUNTS},
        "wall_s": {side(w): spread(wall[w]) for w in WORKER_COUNTS},
        "per_rep_speedup": [round(a / b, 3) for a, b in zip(phase[1], phase[2])],
        "time_share": round(share, 3),
        "speedup": round(speedup, 3),
        "efficiency": round(speedup / 2, 3),
        "wall_speedup": round(median(wall[1]) / median(wall[2]), 3),
        "why": {
            "stage_s_total": {side(w): round(stage_total[w], 1) for w in WORKER_COUNTS},
            "trial_slowdown_side_by_side": round(stage_total[2] / stage_total[1], 3),
            "idle_worker_s_2_workers": round(idle, 1),
            "batch_overhead_s": {side(w): round(batch_overhead[w], 1) for w in WORKER_COUNTS},
            "startup_s": {side(w): round(median([r["startup_s"] for r in runs[w]]), 1) for w in WORKER_COUNTS},
            "after_trials_s": {side(w): round(median([r["after_trials_s"] for r in runs[w]]), 1) for w in WORKER_COUNTS},
            # the Dask worker processes' CPU seconds (their whole life) over the trial phase: the cores they kept busy
            "cores_busy_in_workers": {
                side(w): round(median([r["worker_cpu_s"] / r["trial_phase_s"] for r in runs[w]]), 2) for w in WORKER_COUNTS
            },
        },
    }


def overhead_result(one_worker: list[dict[str, Any]]) -> dict[str, Any]:
    """Orchestration around a trial on the 1-worker runs: per repetition, over the trials after the first."""
    later = [[t for t in r["per_trial"] if t["trial"] > 0] for r in one_worker]
    shares = [sum(t["overhead_s"] for t in trials) / sum(t["flow_s"] for t in trials) for trials in later]
    pooled = [t for trials in later for t in trials]
    first = [r["per_trial"][0] for r in one_worker]
    return {
        "share_per_rep": [round(s, 4) for s in shares],
        "share": round(median(shares), 4),
        "trial_flow_s": spread([t["flow_s"] for t in pooled], 2),
        "trial_stage_s": spread([t["stage_s"] for t in pooled], 2),
        "overhead_s": spread([t["overhead_s"] for t in pooled], 3),
        "to_body_s": round(median([t["to_body_s"] for t in pooled]), 3),
        "body_outside_stages_s": round(median([t["body_outside_stages_s"] for t in pooled]), 3),
        "after_body_s": round(median([t["after_body_s"] for t in pooled]), 3),
        "first_trial": {key: round(median([t[key] for t in first]), 2) for key in ("flow_s", "stage_s", "overhead_s")},
    }


# --- (c) quality --------------------------------------------------------------------------------------------------


def shipped(workspace: Path, name: str, metric: str) -> dict[str, Any]:
    """The variant a run shipped as version 1 of `name` (its export's manifest), and its baseline's quality."""
    manifest = json.loads((workspace / "exports" / name / "1" / "manifest.json").read_text())
    variant = manifest["selected_variant"]
    return {
        "variant": variant, "quality": round(manifest["variants"][variant]["metrics"][metric], 4),
        "gzip_size_bytes": int(manifest["variants"][variant]["metrics"]["gzip_size_bytes"]),
        "baseline_quality": round(manifest["variants"]["baseline"]["metrics"][metric], 4),
    }


def sweep_found(workspace: Path, config_path: Path, sets: list[str]) -> dict[str, Any]:
    """What a finished sweep found: its floor, chosen trial, trials table, and what its pipeline run shipped."""
    from shrinkflow.core.config import load_config
    from shrinkflow.core.selection import Quality
    from shrinkflow.core.sweep import best_trial, quality_floor_for, table_rows

    config = load_config(config_path, sets)
    quality = Quality(config.select.quality)
    outcomes = study_outcomes(workspace)
    floor = quality_floor_for(outcomes, config)
    best = best_trial(outcomes, floor, quality)
    return {
        "sampler": config.sweep.sampler,
        "metric": quality.metric,
        "floor": None if floor is None else round(floor, 4),
        "chosen_trial": None if best is None else {
            "trial": best.number, "params": best.params, "variant": best.variant,
            "quality": round(best.quality or 0.0, 4), "gzip_size_bytes": best.gzip_size_bytes,
        },
        "shipped": shipped(workspace, config.name, quality.metric) if best is not None else None,
        "failed_trials": [o.number for o in outcomes if not o.ok],
        "trials_table": table_rows(outcomes, floor, best, quality),
    }


def quality_comparison(ctx: Context) -> dict[str, Any]:
    from shrinkflow.core.config import load_config
    from shrinkflow.core.selection import Quality

    work = ctx.fresh_dir("sweep/quality")
    env = child_env(prefect_home=cold_home(ctx))
    preset_run = run_child("digits_cnn", flow_argv(DIGITS_CNN, [], work / "preset"), work / "preset.log", env)
    sweep_run = run_child("digits_sweep", sweep_argv(DIGITS_SWEEP, [], work / "sweep"), work / "sweep.log", env)
    preset = load_config(DIGITS_CNN)
    quality = Quality(preset.select.quality)
    preset_shipped = shipped(work / "preset", preset.name, quality.metric)
    budget_floor = quality.worst_allowed(preset_shipped["baseline_quality"], preset.select.max_quality_drop)
    found = sweep_found(work / "sweep", DIGITS_SWEEP, [])
    ours = found["shipped"]
    smaller = (ours is not None and ours["gzip_size_bytes"] < preset_shipped["gzip_size_bytes"]
               and quality.meets(ours["quality"], budget_floor))
    print(f"  digits: the preset shipped {_described(preset_shipped)}, the sweep {_described(ours)}", flush=True)
    return {
        "commands": [shown(flow_argv(DIGITS_CNN, [], Path("WORKSPACE"))), shown(sweep_argv(DIGITS_SWEEP, [], Path("WORKSPACE")))],
        "preset": {**preset_shipped, "budget_floor": round(budget_floor, 4), "wall_s": round(preset_run.wall_s, 1)},
        "sweep": {**found, "wall_s": round(sweep_run.wall_s, 1), "trials": len(found["trials_table"])},
        "smaller_at_the_same_budget": smaller,
    }


def _described(shipped_variant: dict[str, Any] | None) -> str:
    if shipped_variant is None:
        return "nothing"
    return f"{shipped_variant['variant']} ({shipped_variant['gzip_size_bytes']:,} bytes, {shipped_variant['quality']})"


# --- the benchmark ------------------------------------------------------------------------------------------------


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:  # minutes of sweeps at the least: not for the smoke mode
        return None
    runs = throughput(ctx)
    speed = throughput_result(runs)
    overhead = overhead_result(runs[1])
    quality = quality_comparison(ctx)
    return {
        "throughput": speed,
        "overhead": overhead,
        "quality": quality,
        "runs": {side(w): runs[w] for w in WORKER_COUNTS},
        "goals": {
            "2_workers_at_most_0.6_of_1": goal(
                f"<= {GOAL_TIME_SHARE}", speed["time_share"], speed["time_share"] <= GOAL_TIME_SHARE,
                f"speed-up {speed['speedup']}x, efficiency {speed['efficiency']}"),
            "orchestration_under_10pct_of_a_trial": goal(
                f"< {GOAL_OVERHEAD_SHARE:.0%}", overhead["share"], overhead["share"] < GOAL_OVERHEAD_SHARE),
            "digits_sweep_ships_smaller_at_the_same_budget": goal(
                "smaller, same budget",
                f"{(quality['sweep']['shipped'] or {}).get('gzip_size_bytes')} vs {quality['preset']['gzip_size_bytes']} bytes",
                quality["smaller_at_the_same_budget"]),
        },
    }


def render(result: dict[str, Any]) -> str:
    speed, over, quality = result["throughput"], result["overhead"], result["quality"]
    why = speed["why"]
    rows = [[f"{w} worker(s)", speed["tensorflow_threads_per_trial"][side(w)], *_cells(speed["trial_phase_s"][side(w)]),
             speed["trial_phase_s"][side(w)]["values"], *_cells(speed["wall_s"][side(w)])] for w in WORKER_COUNTS]
    one, two = side(1), side(2)
    preset, found = quality["preset"], quality["sweep"]
    ours, chosen = found["shipped"], found["chosen_trial"]
    lines = [
        f"(a) Throughput. Data: {speed['data']}; {speed['trials']} trials a sweep, the same on both sides; "
        f"{speed['repetitions']} repetitions, interleaved (1 2 2 1 ...), each a fresh `shrinkflow sweep` in a fresh "
        f"workspace (`{speed['command']}`). Trial phase: the flow's first trial asked to its last trial recorded.", "",
        markdown_table(["side", "TensorFlow threads a trial", "trial phase median s", "min s", "max s", "per repetition s",
                        "whole command median s", "min s", "max s"], rows),
        f"2 workers / 1 worker, trial phase = **{speed['time_share']}**: speed-up **{speed['speedup']}x**, efficiency "
        f"**{speed['efficiency']}** (per repetition: {speed['per_rep_speedup']}); whole command {speed['wall_speedup']}x "
        f"(start-up before the trials: {why['startup_s'][one]} / {why['startup_s'][two]} s; after them, the "
        f"chosen config's pipeline run and the exit: {why['after_trials_s'][one]} / {why['after_trials_s'][two]} s).",
        "",
        f"Where the 2-worker side's time goes (medians): its trials' stage time adds up to {why['stage_s_total'][two]} s "
        f"against {why['stage_s_total'][one]} s one at a time ({why['trial_slowdown_side_by_side']}x: each trial is "
        f"slower beside another); a batch waits for its slower trial, leaving {why['idle_worker_s_2_workers']} "
        f"worker-seconds idle; orchestration between batches {why['batch_overhead_s'][two]} s "
        f"(1 worker: {why['batch_overhead_s'][one]} s). The Dask worker processes' CPU seconds (their whole "
        f"life) over the trial phase, the cores they kept busy: {why['cores_busy_in_workers'][one]} (1 worker), "
        f"{why['cores_busy_in_workers'][two]} (2 workers).", "",
        f"(b) Orchestration per trial (1 worker, trials after the first, {len(over['share_per_rep'])} repetitions): the "
        f"flow sees a trial for {over['trial_flow_s']['median']} s (median; {over['trial_flow_s']['min']} to "
        f"{over['trial_flow_s']['max']}), {over['trial_stage_s']['median']} s of it inside the stages; the rest, "
        f"{over['overhead_s']['median']} s, is **{over['share']:.1%}** of the trial time (per repetition: "
        f"{[f'{s:.1%}' for s in over['share_per_rep']]}): to the task's body (ask, submit, Dask, Prefect) "
        f"{over['to_body_s']} s, in the body outside the stages {over['body_outside_stages_s']} s, after it (result, "
        f"tell, MLflow trial run) {over['after_body_s']} s. The first trial: {over['first_trial']['flow_s']} s, of which "
        f"{over['first_trial']['stage_s']} s in its body (TensorFlow's import and start in the worker included). The "
        "stage time includes the stages' own Prefect task runs (cache keys, results), as in `shrinkflow run` "
        "(benchmark 1).", "",
        f"(c) Quality on digits: `{quality['commands'][0]}` against `{quality['commands'][1]}` ({found['trials']} trials, "
        f"sampler {found['sampler']}).", "",
        markdown_table(["run", "shipped", f"test {found['metric']}", "gzipped bytes",
                        f"its own baseline's {found['metric']}", "floor", "wall s"], [
            ["preset digits_cnn", preset["variant"], preset["quality"], preset["gzip_size_bytes"],
             preset["baseline_quality"], preset["budget_floor"], preset["wall_s"]],
            ["sweep digits_sweep", ours["variant"] if ours else "nothing", ours["quality"] if ours else "",
             ours["gzip_size_bytes"] if ours else "", ours["baseline_quality"] if ours else "", found["floor"],
             found["wall_s"]],
        ]),
        (f"Chosen: trial {chosen['trial']} ({described_params(chosen['params'])}). " if chosen else "No trial kept the floor. ")
        + ("The sweep ships a **smaller** model at the preset's budget." if quality["smaller_at_the_same_budget"]
           else "The sweep does **not** ship a smaller model at the preset's budget.")
        + (f" Failed trials: {found['failed_trials']}." if found["failed_trials"] else ""), "",
        trials_table(found["trials_table"]),
    ]
    return "\n".join(lines)


def trials_table(rows: list[dict[str, Any]]) -> str:
    from shrinkflow.core.sweep import format_trials

    # Results written before trials were compared on validation have one `quality` column: the test split's.
    return format_trials([{"val_quality": "", "test_quality": row.get("quality"), **row} for row in rows], markdown=True)


def described_params(params: dict[str, Any]) -> str:
    """A trial's sampled values as key=value (floats to 4 significant digits), or "the base config"."""
    shown_values = {key: f"{value:.4g}" if isinstance(value, float) else value for key, value in params.items()}
    return ", ".join(f"{key}={value}" for key, value in shown_values.items()) or "the base config"


def _cells(values: dict[str, Any]) -> list[Any]:
    return [values["median"], values["min"], values["max"]]


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    goals, speed, quality = result["goals"], result["throughput"], result["quality"]
    ours = quality["sweep"]["shipped"]
    return [
        ["sweep: 2 Dask workers' trial phase / 1 worker's (same 10 trials)", f"<= {GOAL_TIME_SHARE} (>= 1.67x)",
         f"{speed['time_share']} ({speed['speedup']}x, efficiency {speed['efficiency']})",
         yes_no(goals["2_workers_at_most_0.6_of_1"]["met"])],
        ["sweep: orchestration around a small trial (1 worker)", f"< {GOAL_OVERHEAD_SHARE:.0%}",
         f"{result['overhead']['share']:.1%} of {result['overhead']['trial_flow_s']['median']} s",
         yes_no(goals["orchestration_under_10pct_of_a_trial"]["met"])],
        ["sweep on digits (12 trials) ships smaller than the preset at its budget", "smaller",
         (f"{ours['gzip_size_bytes']:,} vs {quality['preset']['gzip_size_bytes']:,} bytes gzipped" if ours else "nothing shipped"),
         yes_no(goals["digits_sweep_ships_smaller_at_the_same_budget"]["met"])],
    ]
