"""3. Compression on the real MNIST test set: every variant, and int8 against float latency.

    make bench-compression     (or: .venv/bin/python -m bench --only compression)

Reads the variant table of a real `shrinkflow run` (CNN preset, 8,000 / 2,000 split): the first
repetition of the overhead benchmark (of this invocation, else the one the last full run left in
bench/.work/), else a run of its own.
Then times the float32 and full-int8 TFLite models side by side, interleaved, so machine noise hits
both alike. Writes compression.json and compression.md into the results folder.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import MNIST, MNIST_CNN, MNIST_SOURCE, Context, child_env, flow_argv, goal, run_child, yes_no
from bench.overhead import cold_home

NAME = "compression"
GOAL_RATIO, GOAL_MAX_DROP = 12.0, 0.005
ROUNDS, REPEATS = 5, 200


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    if not MNIST.is_dir():
        return {"skipped": f"{MNIST} is absent"}
    import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    from shrinkflow.core.compression import convert_to_tflite
    from shrinkflow.core.config import load_config
    from shrinkflow.core.data import load_splits, prepare_dataset

    config = load_config(MNIST_CNN, [MNIST_SOURCE])
    workspace = flow_workspace(ctx)
    # Version 1: the first run's export (a cached re-run in the same workspace ships version 2).
    export_dir = min((workspace / "exports" / config.name).glob("*/manifest.json"), key=lambda p: int(p.parent.name)).parent
    manifest = json.loads((export_dir / "manifest.json").read_text())
    rows = json.loads(next(workspace.glob(f"mlartifacts/**/{manifest['mlflow_run_id']}/artifacts/summary.json")).read_text())

    dataset = prepare_dataset(config.data, workspace / "datasets")
    float_tflite = ctx.fresh_dir("compression") / "baseline-float32.tflite"
    convert_to_tflite(export_dir / "model.keras", "float32", dataset, config.quantize, float_tflite)
    models = {
        "baseline (Keras)": export_dir / "model.keras",
        "baseline float32 TFLite": float_tflite,
        "baseline-int8 TFLite": export_dir / manifest["variants"]["baseline-int8"]["file"],
        "pruned-int8 TFLite": export_dir / manifest["variants"]["pruned-int8"]["file"],
    }
    latency = interleaved_latency(models, load_splits(dataset).x_test[:1])

    within = [r for r in rows if r.get("status") == "ok" and r["accuracy_delta"] >= -GOAL_MAX_DROP - 1e-9]
    best = max(within, key=lambda r: r["compression_ratio"])
    int8_vs_float = latency["baseline-int8 TFLite"] / latency["baseline float32 TFLite"]
    result = {
        "data": "MNIST t10k, 8,000 train+validation / 2,000 test, configs/mnist_cnn.yaml",
        "flow_workspace": str(workspace),
        "variants": rows,
        "latency_ms_median_of_round_medians": latency,
        "latency_rounds": f"{ROUNDS} rounds of {REPEATS} single-sample predictions per model, models taking turns",
        "int8_over_float32_tflite_latency": round(int8_vs_float, 3),
        "best_within_0.5_point": {k: best[k] for k in ("variant", "accuracy", "accuracy_delta", "compression_ratio")},
        "goals": {
            "gzip_compression_at_most_0.5_point_lost": goal(f">= {GOAL_RATIO}x", best["compression_ratio"],
                                                            best["compression_ratio"] >= GOAL_RATIO),
            "int8_faster_than_float": goal("< 1.0", round(int8_vs_float, 3), int8_vs_float < 1.0),
        },
    }
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "compression.md").write_text(f"# Compression benchmark\n\n{render(result)}")
    return result


def flow_workspace(ctx: Context) -> Path:
    """The workspace of a finished MNIST `shrinkflow run`: the overhead benchmark's, or a run of our own."""
    reps = ctx.shared.get("mnist_reps")
    if reps:
        argv = reps[0]["flow"].argv
        return Path(argv[argv.index("--workspace") + 1])
    earlier = ctx.work_dir / "mnist" / "rep0" / "flow"  # what the last full `make bench` left in bench/.work/
    if not ctx.smoke and list(earlier.glob("exports/*/1/manifest.json")):
        return earlier
    work = ctx.fresh_dir("compression-run")
    env = child_env(prefect_home=cold_home(ctx))
    run_child("flow", flow_argv(MNIST_CNN, [MNIST_SOURCE], work / "ws"), work / "run.log", env)
    return work / "ws"


def interleaved_latency(models: dict[str, Path], sample: Any, rounds: int = ROUNDS, repeats: int = REPEATS) -> dict[str, float]:
    """Median single-sample latency per model, the models taking turns round by round (A B C A B C ...)."""
    from shrinkflow.core.evaluation import load_predictor, median_latency_ms

    predictors = {name: load_predictor(path) for name, path in models.items()}
    per_round: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, predict in predictors.items():
            per_round[name].append(median_latency_ms(predict, sample, repeats=repeats))
    return {name: round(statistics.median(values), 4) for name, values in per_round.items()}


def render(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    from shrinkflow.core.tables import markdown_table

    headers = list(result["variants"][0]) if result["variants"] else []
    lines = [
        f"Data: {result['data']}. The variant table of the flow run:", "",
        markdown_table(headers, [[row.get(header, "") for header in headers] for row in result["variants"]]),
        f"Single-sample latency, median of round medians ({result['latency_rounds']}, one process):", "",
    ]
    lines += [f"- {name}: {value} ms" for name, value in result["latency_ms_median_of_round_medians"].items()]
    best = result["best_within_0.5_point"]
    lines += ["", f"Best within 0.5 point: {best['variant']}, {best['compression_ratio']}x smaller gzipped for "
              f"{round(-best['accuracy_delta'] * 100, 2)} point(s); full int8 / float32 TFLite latency = "
              f"{result['int8_over_float32_tflite_latency']}.", ""]
    return "\n".join(lines)


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    if "skipped" in result:
        return [["compression", "", "skipped", "n/a"]]
    goals = result["goals"]
    best = result["best_within_0.5_point"]
    return [
        ["gzipped compression at most 0.5 point lost", f">= {GOAL_RATIO}x",
         f"{best['compression_ratio']}x ({best['variant']}, {round(best['accuracy_delta'] * 100, 2)} pt)",
         yes_no(goals["gzip_compression_at_most_0.5_point_lost"]["met"])],
        ["full int8 / float32 TFLite single-sample latency", "< 1.0", result["int8_over_float32_tflite_latency"],
         yes_no(goals["int8_faster_than_float"]["met"])],
    ]


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
