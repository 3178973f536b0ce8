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
# The headline (Deep Compression's LeNet results are ~40x; distillation moves it an order of magnitude).
GOAL_RATIO, GOAL_MAX_DROP = 100.0, 0.005
ROUNDS, REPEATS = 5, 200
# Each step on its own: the variant, and what it is compared with.
STEPS = (
    ("distillation", "student-1", "student-1-scratch"),
    ("pruning", "pruned", "baseline"),
    ("clustering after pruning", "pruned-clustered", "pruned"),
    ("chain: prune -> cluster -> PCQAT", "pruned-clustered-qat", "baseline"),
    ("chain on the student: distill -> prune -> cluster -> PCQAT", "student-1-pruned-clustered-qat", "student-1"),
    ("the same as ONNX (onnxruntime)", "student-1-pruned-clustered-qat-onnx", "student-1-pruned-clustered-qat"),
)


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    if not MNIST.is_dir():
        return {"skipped": f"{MNIST} is absent"}
    from shrinkflow.core.compression import convert_to_tflite
    from shrinkflow.core.config import load_config
    from shrinkflow.core.data import load_splits, prepare_dataset
    from shrinkflow.core.evaluation import evaluate_model_file
    from shrinkflow.core.names import Quantization
    from shrinkflow.core.steps import QuantizeStep

    config = load_config(MNIST_CNN, [MNIST_SOURCE])
    workspace = flow_workspace(ctx, config.config_hash())
    export_dir = first_export(workspace, config.name)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    rows = json.loads(next(workspace.glob(f"mlartifacts/**/{manifest['mlflow_run_id']}/artifacts/summary.json")).read_text())
    by_name = {row["variant"]: row for row in rows}

    dataset = prepare_dataset(config.data, workspace / "datasets")
    shipped_file = export_dir / manifest["selected_file"]
    scratch = ctx.fresh_dir("compression")
    # The shipped file, re-evaluated from the export folder: what a user downloads is what was measured.
    reevaluated = evaluate_model_file(shipped_file, dataset, scratch, latency_repeats=1).metrics
    float_tflite = scratch / "baseline-float32.tflite"
    convert_to_tflite(export_dir / "model.keras", QuantizeStep(Quantization.NONE), dataset, float_tflite)
    models = {
        "baseline (Keras)": export_dir / "model.keras",
        "baseline float32 TFLite": float_tflite,
        "baseline-int8 TFLite": export_dir / manifest["variants"]["baseline-int8"]["file"],
        f"{manifest['selected_variant']} (shipped)": shipped_file,
    }
    twin = manifest["variants"].get(f"{manifest['selected_variant']}-onnx")
    if twin:
        models[f"{manifest['selected_variant']}-onnx"] = export_dir / twin["file"]
    latency = interleaved_latency(models, load_splits(dataset).x_test[:1])

    shipped = next(row for row in rows if row.get("selected"))
    int8_vs_float = latency["baseline-int8 TFLite"] / latency["baseline float32 TFLite"]
    steps = [
        {"step": step, "variant": variant, "compared_with": other,
         "quality_delta_pt": round((by_name[variant]["accuracy"] - by_name[other]["accuracy"]) * 100, 2),
         "gzip_ratio": round(by_name[other]["gzip_size_bytes"] / by_name[variant]["gzip_size_bytes"], 2),
         "against_baseline": f"{by_name[variant]['compression_ratio']}x, {round(by_name[variant]['quality_delta'] * 100, 2)} pt"}
        for step, variant, other in STEPS
        if by_name.get(variant, {}).get("status") == "ok" and by_name.get(other, {}).get("status") == "ok"
    ]
    headline_met = shipped["compression_ratio"] >= GOAL_RATIO and shipped["quality_delta"] >= -GOAL_MAX_DROP - 1e-9
    result = {
        "data": "MNIST t10k, 8,000 train+validation / 2,000 test, configs/mnist_cnn.yaml",
        "flow_workspace": str(workspace),
        "variants": rows,
        "steps": steps,
        "shipped": {k: shipped[k] for k in ("variant", "accuracy", "quality_delta", "gzip_size_bytes", "compression_ratio", "param_bits_ratio")},
        "shipped_reevaluated_from_export": {"file": str(shipped_file.relative_to(workspace)), "accuracy": reevaluated["accuracy"],
                                            "gzip_size_bytes": reevaluated["gzip_size_bytes"]},
        "latency_ms_median_of_round_medians": latency,
        "latency_rounds": f"{ROUNDS} rounds of {REPEATS} single-sample predictions per model, models taking turns",
        "int8_over_float32_tflite_latency": round(int8_vs_float, 3),
        "goals": {
            "shipped_gzip_compression_at_most_0.5_point_lost": goal(f">= {GOAL_RATIO}x", shipped["compression_ratio"], headline_met),
            "int8_faster_than_float": goal("< 1.0", round(int8_vs_float, 3), int8_vs_float < 1.0),
        },
    }
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "compression.md").write_text(f"# Compression benchmark\n\n{render(result)}")
    return result


def mnist_export(ctx: Context) -> Path:
    """Version 1 of the export of a finished MNIST run of the preset as it is now (see flow_workspace)."""
    from shrinkflow.core.config import load_config

    config = load_config(MNIST_CNN, [MNIST_SOURCE])
    return first_export(flow_workspace(ctx, config.config_hash()), config.name)


def first_export(workspace: Path, name: str) -> Path:
    """Version 1 of the model's exports: the first run's (a cached re-run in the same workspace ships nothing new)."""
    return min((workspace / "exports" / name).glob("*/manifest.json"), key=lambda p: int(p.parent.name)).parent


def flow_workspace(ctx: Context, config_hash: str) -> Path:
    """The workspace of a finished MNIST `shrinkflow run` of the preset as it is now (`config_hash`): the
    overhead benchmark's, or a run of our own."""
    reps = ctx.shared.get("mnist_reps")
    if reps:
        argv = reps[0]["flow"].argv
        return Path(argv[argv.index("--workspace") + 1])
    earlier = ctx.work_dir / "mnist" / "rep0" / "flow"  # what the last full `make bench` left in bench/.work/
    manifests = list(earlier.glob("exports/*/1/manifest.json"))
    if not ctx.smoke and manifests and json.loads(manifests[0].read_text()).get("config_hash") == config_hash:
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
    shipped, again = result["shipped"], result["shipped_reevaluated_from_export"]
    lines = [
        f"Data: {result['data']}. The pipeline shipped **{shipped['variant']}**: {shipped['compression_ratio']}x smaller "
        f"gzipped than the float baseline ({shipped['gzip_size_bytes']:,} bytes) for {round(-_quality_delta(shipped) * 100, 2)} "
        f"point(s) of accuracy; param_bits {shipped['param_bits_ratio']}x. Re-evaluated from the export "
        f"(`{again['file']}`): accuracy {again['accuracy']:.4f}, {int(again['gzip_size_bytes']):,} bytes gzipped.", "",
        "Each step on its own:", "",
        markdown_table(list(result["steps"][0]) if result["steps"] else ["step"],
                       [list(step.values()) for step in result["steps"]]),
        "The variant table of the flow run:", "",
        markdown_table(headers, [[row.get(header, "") for header in headers] for row in result["variants"]]),
        f"Single-sample latency, median of round medians ({result['latency_rounds']}, one process):", "",
    ]
    lines += [f"- {name}: {value} ms" for name, value in result["latency_ms_median_of_round_medians"].items()]
    lines += ["", f"Full int8 / float32 TFLite latency = {result['int8_over_float32_tflite_latency']}.", ""]
    return "\n".join(lines)


def _quality_delta(shipped: dict[str, Any]) -> float:
    """The shipped variant's quality delta; results written before the metric was generalized call it accuracy_delta."""
    return float(shipped["quality_delta"] if "quality_delta" in shipped else shipped["accuracy_delta"])


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    if "skipped" in result:
        return [["compression", "", "skipped", "n/a"]]
    goals = result["goals"]
    shipped = result["shipped"]
    return [
        ["shipped variant, gzipped, at most 0.5 point lost", f">= {GOAL_RATIO:g}x",
         f"{shipped['compression_ratio']}x ({shipped['variant']}, {round(_quality_delta(shipped) * 100, 2)} pt)",
         yes_no(goals["shipped_gzip_compression_at_most_0.5_point_lost"]["met"])],
        ["full int8 / float32 TFLite single-sample latency", "< 1.0", result["int8_over_float32_tflite_latency"],
         yes_no(goals["int8_faster_than_float"]["met"])],
    ]


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
