"""Compression benchmark on the real MNIST test set: every variant, and int8 against float latency.

    make bench-compression     (or: .venv/bin/python -m bench.compression)

Runs the real flow (CNN preset, 8,000 / 2,000 split) in a fresh workspace, then times the float and
full-int8 TFLite models side by side, interleaved, so machine noise hits both alike. Writes
bench/results/compression.json and bench/results/compression.md.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shrinkflow.compression import convert_to_tflite
from shrinkflow.config import load_config
from shrinkflow.data import load_splits, prepare_dataset
from shrinkflow.evaluation import load_predictor, median_latency_ms
from shrinkflow.report import markdown_table

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist-t10k"
RESULTS = REPO / "bench" / "results"
WORK = REPO / "bench" / ".work" / "compression"
GOAL_RATIO, GOAL_MAX_DROP = 12.0, 0.005
ROUNDS, REPEATS = 5, 200


def main() -> int:
    if not MNIST.is_dir():
        print(f"skipped: {MNIST} is absent")
        return 0
    from flows.pipeline import pipeline

    shutil.rmtree(WORK, ignore_errors=True)
    config = load_config(REPO / "configs" / "mnist_cnn.yaml", [f"data.source=idx:{MNIST}"])
    rows = pipeline(config, workspace=str(WORK), use_cache=False)
    manifest = json.loads(next((WORK / "exports" / config.name).glob("*/manifest.json")).read_text())
    export_dir = next((WORK / "exports" / config.name).glob("*/manifest.json")).parent

    dataset = prepare_dataset(config.data, WORK / "datasets")
    float_tflite = WORK / "baseline-float32.tflite"
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
        "benchmark": "compression",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "command": "make bench-compression",
        "data": "MNIST t10k, 8,000 train+validation / 2,000 test, configs/mnist_cnn.yaml",
        "variants": rows,
        "latency_ms_median_of_round_medians": latency,
        "int8_over_float32_tflite_latency": round(int8_vs_float, 3),
        "best_within_0.5_point": {k: best[k] for k in ("variant", "accuracy", "accuracy_delta", "compression_ratio")},
        "goals": {
            "gzip_compression_at_most_0.5_point_lost": {"goal": f">= {GOAL_RATIO}x", "measured": best["compression_ratio"],
                                                        "met": best["compression_ratio"] >= GOAL_RATIO},
            "int8_faster_than_float": {"goal": "< 1.0", "measured": round(int8_vs_float, 3), "met": int8_vs_float < 1.0},
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compression.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "compression.md").write_text(render(result))
    print(render(result))
    return 0


def interleaved_latency(models: dict[str, Path], sample, rounds: int = ROUNDS, repeats: int = REPEATS) -> dict[str, float]:
    """Median single-sample latency per model, the models taking turns round by round (A B C A B C ...)."""
    predictors = {name: load_predictor(path) for name, path in models.items()}
    per_round: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, predict in predictors.items():
            per_round[name].append(median_latency_ms(predict, sample, repeats=repeats))
    return {name: round(statistics.median(values), 4) for name, values in per_round.items()}


def render(result: dict) -> str:
    lines = [
        f"# Compression benchmark ({result['date']})", "",
        f"`{result['command']}` on {result['machine']}; {result['data']}.", "",
        markdown_table(result["variants"]),
        "Single-sample latency, median of round medians (interleaved, same process):", "",
    ]
    lines += [f"- {name}: {value} ms" for name, value in result["latency_ms_median_of_round_medians"].items()]
    lines += ["", "Goals:", ""]
    lines += [f"- {name}: goal {g['goal']}, measured {g['measured']}: {'met' if g['met'] else 'NOT met'}"
              for name, g in result["goals"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
