"""9. ONNX Runtime against LiteRT: which session settings matter for shrinkflow's small models.

    .venv/bin/python -m bench --only onnx_latency              (the MNIST run of the compression benchmark)
    .venv/bin/python -m bench.onnx_latency --export DIR        (an export version folder of configs/mnist_cnn.yaml)

Times the shipped MNIST student's int8 TFLite file in LiteRT and its ONNX twin in onnxruntime under each session
setting, one sample and 64 samples per call, through the same predictor functions evaluation uses
(shrinkflow.core.predictors): every side takes its turn in each round (A B C ... A B C ...), medians of the
rounds' medians. The teacher's int8 pair (baseline-int8) shows the settings on a 14x larger model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MNIST, RESULTS, Context, goal, write_result, yes_no

NAME = "onnx_latency"
GOAL_RATIO = 2.0  # ONNX Runtime's single-sample latency at most this times LiteRT's, on the shipped student
ROUNDS, REPEATS_ONE, REPEATS_BATCH, BATCH = 7, 300, 40, 64
CHOSEN = "1 thread, no spinning, QDQ fusion off (shrinkflow)"


def session_settings() -> dict[str, Callable[[], Any]]:
    """Each setting measured, as a function making its onnxruntime.SessionOptions; each adds to the one before,
    the last two vary the chosen one."""
    import onnxruntime

    from shrinkflow.core.predictors import onnx_session_options

    def options(threads: int | None = None, spinning: bool = True, qdq_fusion: bool = True,
                level: Any = None, parallel: bool = False) -> Callable[[], Any]:
        def make() -> Any:
            made = onnxruntime.SessionOptions()
            made.log_severity_level = 3
            if threads is not None:
                made.intra_op_num_threads = made.inter_op_num_threads = threads
            if not spinning:
                made.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if not qdq_fusion:
                made.add_session_config_entry("session.disable_quant_qdq", "1")
            if level is not None:
                made.graph_optimization_level = level
            if parallel:
                made.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
            return made
        return make

    level = onnxruntime.GraphOptimizationLevel
    return {
        "defaults (shrinkflow before)": options(),
        "1 intra-op thread": options(threads=1),
        "1 thread, no spinning": options(threads=1, spinning=False),
        CHOSEN: onnx_session_options,
        "chosen, basic graph optimization only": options(threads=1, spinning=False, qdq_fusion=False, level=level.ORT_ENABLE_BASIC),
        "chosen, parallel execution mode": options(threads=1, spinning=False, qdq_fusion=False, parallel=True),
        "QDQ fusion off, default threads": options(qdq_fusion=False),
    }


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    if not MNIST.is_dir():
        return {"skipped": f"{MNIST} is absent"}
    from bench.compression import mnist_export

    return measure(mnist_export(ctx))


def measure(export_dir: Path) -> dict[str, Any]:
    """Latencies of the shipped variant's TFLite file and ONNX twin (and of baseline-int8's) in `export_dir`."""
    from shrinkflow.core.predictors import onnx_predictor, tflite_predictor

    manifest = json.loads((export_dir / "manifest.json").read_text())
    shipped = manifest["selected_variant"]
    models = {}
    for variant in (shipped, "baseline-int8"):
        twin = manifest["variants"].get(f"{variant}-onnx")
        if twin is None or not manifest["variants"][variant]["file"].endswith(".tflite"):
            continue
        models[variant] = (export_dir / manifest["variants"][variant]["file"], export_dir / twin["file"])
    x = np.random.default_rng(0).random((BATCH, *manifest["input_shape"]), dtype=np.float32)
    results: dict[str, Any] = {}
    for variant, (tflite, onnx) in models.items():
        predictors = {"LiteRT": tflite_predictor(tflite)}
        predictors |= {f"onnxruntime: {name}": onnx_predictor(onnx, make()) for name, make in session_settings().items()}
        results[variant] = interleaved(predictors, x)
    student = results[shipped]
    ratio = student[f"onnxruntime: {CHOSEN}"]["batch1_ms"] / student["LiteRT"]["batch1_ms"]
    before = student["onnxruntime: defaults (shrinkflow before)"]["batch1_ms"] / student["LiteRT"]["batch1_ms"]
    return {
        "data": f"version {export_dir.name} of the export of configs/mnist_cnn.yaml on MNIST t10k (shipped: {shipped}); "
                f"inputs random, {ROUNDS} rounds of {REPEATS_ONE} single-sample and {REPEATS_BATCH} {BATCH}-sample calls per side",
        "shipped": shipped,
        "latency": results,
        "onnx_over_litert_batch1": {"before": round(before, 2), "after": round(ratio, 2)},
        "goals": {"onnx_within_2x_of_litert": goal(f"<= {GOAL_RATIO}x", round(ratio, 2), ratio <= GOAL_RATIO)},
    }


def interleaved(predictors: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray) -> dict[str, dict[str, float]]:
    """Per side: median over rounds of the round's median ms per call with 1 and with len(x) samples, and the
    samples per second that batch gives."""
    from shrinkflow.core.evaluation import median_latency_ms

    rounds: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in predictors}
    for _ in range(ROUNDS):
        for name, predict in predictors.items():
            rounds[name][0].append(median_latency_ms(predict, x[:1], REPEATS_ONE))
            rounds[name][1].append(median_latency_ms(predict, x, REPEATS_BATCH))
    return {
        name: {"batch1_ms": round(statistics.median(one), 4), f"batch{len(x)}_ms": round(statistics.median(many), 3),
               f"batch{len(x)}_samples_per_s": round(len(x) * 1000 / statistics.median(many))}
        for name, (one, many) in rounds.items()
    }


def render(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    from shrinkflow.core.tables import markdown_table

    lines = [f"Data: {result['data']}.", ""]
    for variant, sides in result["latency"].items():
        columns = list(next(iter(sides.values())))
        lines += [f"**{variant}**:", "", markdown_table(["runtime and settings", *columns], [[name, *row.values()] for name, row in sides.items()])]
    ratio = result["onnx_over_litert_batch1"]
    lines += [f"ONNX Runtime / LiteRT, one sample per call, shipped student: {ratio['before']}x with the defaults, "
              f"{ratio['after']}x with shrinkflow's settings. The {BATCH}-sample columns spread more from run to run on a "
              f"loaded machine (load average at the end: {result.get('load_average_at_end', 'not recorded')}) than the "
              "single-sample ones.", ""]
    return "\n".join(lines)


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    if "skipped" in result:
        return [["ONNX Runtime / LiteRT single-sample latency", "", "skipped", "n/a"]]
    ratio = result["onnx_over_litert_batch1"]
    return [["ONNX Runtime / LiteRT single-sample latency, shipped MNIST student", f"<= {GOAL_RATIO:g}x",
             f"{ratio['after']}x (before {ratio['before']}x)", yes_no(result["goals"]["onnx_within_2x_of_litert"]["met"])]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="an export version folder of configs/mnist_cnn.yaml (default: the harness's MNIST run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results/)")
    args = parser.parse_args(argv)
    if args.export is None:
        from bench.__main__ import main as harness

        return harness(["--only", NAME, "--out", str(args.out)])
    started = time.perf_counter()
    result = measure(args.export.resolve())
    ctx = Context(out_dir=args.out, work_dir=args.out / ".work")
    path = write_result(ctx, NAME, result, "python -m bench.onnx_latency " + " ".join(argv), time.perf_counter() - started)
    print(render(json.loads(path.read_text())))
    print(path)
    if args.out.resolve() == RESULTS:
        from bench.__main__ import BENCHMARKS
        from bench.common import DOCS
        from bench.report import write

        write(RESULTS, DOCS, BENCHMARKS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
