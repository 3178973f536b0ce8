"""9. ONNX Runtime against LiteRT: which graph and session settings matter for shrinkflow's small models.

    .venv/bin/python -m bench --only onnx_latency              (the MNIST run of the compression benchmark)
    .venv/bin/python -m bench.onnx_latency --export DIR        (an export version folder of configs/mnist_cnn.yaml)

Times the shipped MNIST student's int8 TFLite file in LiteRT against ONNX Runtime, one sample and 64 samples
per call, every side taking its turn in each round (A B C ... A B C ...), medians of the rounds' medians. ONNX
Runtime runs two graphs: the export's ONNX file (shrinkflow's, with its QuantizeLinear nodes moved next to their
DequantizeLinear, see shrinkflow.core.compression.onnx) and tf2onnx's conversion of the same TFLite file as
tf2onnx writes it, each under several session settings, through the predictor functions evaluation uses
(shrinkflow.core.predictors). Both runtimes are also timed bare (input in, run, output out, nothing else:
LiteRT's set_tensor / invoke / get_tensor against an ONNX Runtime IO binding), so that neither side's wrapper
decides the ratio. The teacher's int8 pair (baseline-int8) shows the same on a 14x larger model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MNIST, RESULTS, Context, goal, write_result, yes_no

NAME = "onnx_latency"
GOAL_RATIO = 2.0  # ONNX Runtime's single-sample latency at most this times LiteRT's, on the shipped student
ROUNDS, REPEATS_ONE, REPEATS_BATCH, BATCH = 7, 300, 40, 64
LITERT, LITERT_BARE = "LiteRT (shrinkflow)", "LiteRT, bare calls"
CHOSEN = "shrinkflow's graph, 1 intra-op thread (shrinkflow)"
BEFORE = "tf2onnx's graph, 1 thread, no spinning, QDQ fusion off (shrinkflow before)"
ORT_BARE = "shrinkflow's graph and settings, bare calls (IO binding)"


def session_settings() -> dict[str, tuple[str, Callable[[], Any]]]:
    """Each ONNX Runtime side measured: which graph ("tf2onnx" or "shrinkflow") and a function making its
    onnxruntime.SessionOptions; the chosen one and variations of it, one setting at a time."""
    import onnxruntime

    from shrinkflow.core.predictors import onnx_session_options

    def options(threads: int | None = None, spinning: bool = True, qdq_fusion: bool = True, level: Any = None,
                parallel: bool = False, inter_op_threads: int | None = None) -> Callable[[], Any]:
        def make() -> Any:
            made = onnxruntime.SessionOptions()
            made.log_severity_level = 3
            if threads is not None:
                made.intra_op_num_threads = threads
            if inter_op_threads is not None:
                made.inter_op_num_threads = inter_op_threads
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
        "tf2onnx's graph, defaults": ("tf2onnx", options()),
        BEFORE: ("tf2onnx", options(threads=1, inter_op_threads=1, spinning=False, qdq_fusion=False)),
        "shrinkflow's graph, defaults": ("shrinkflow", options()),
        CHOSEN: ("shrinkflow", onnx_session_options),
        "chosen, no spinning": ("shrinkflow", options(threads=1, spinning=False)),
        "chosen, 1 inter-op thread": ("shrinkflow", options(threads=1, inter_op_threads=1)),
        "chosen, parallel execution mode": ("shrinkflow", options(threads=1, parallel=True)),
        "chosen, basic graph optimization only": ("shrinkflow", options(threads=1, level=level.ORT_ENABLE_BASIC)),
        "chosen, QDQ fusion off": ("shrinkflow", options(threads=1, qdq_fusion=False)),
    }


def litert_bare(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """LiteRT's own calls and nothing else: set_tensor, invoke, get_tensor (a float-input file)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = [()]

    def predict(batch: np.ndarray) -> np.ndarray:
        if batch.shape != shape[0]:
            interpreter.resize_tensor_input(input_index, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return predict


def onnxruntime_bare(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime's leanest call under shrinkflow's settings: an IO binding with the input and output
    OrtValues bound once per batch shape; a call copies the batch in, runs, and copies the output out."""
    import onnxruntime

    from shrinkflow.core.predictors import onnx_session_options

    session = onnxruntime.InferenceSession(str(path), onnx_session_options(), providers=["CPUExecutionProvider"])
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    bindings: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}

    def predict(batch: np.ndarray) -> np.ndarray:
        if batch.shape not in bindings:
            x = onnxruntime.OrtValue.ortvalue_from_numpy(np.array(batch, dtype=np.float32))
            y = onnxruntime.OrtValue.ortvalue_from_shape_and_type([len(batch), *model_output.shape[1:]], np.float32)
            binding = session.io_binding()
            binding.bind_ortvalue_input(model_input.name, x)
            binding.bind_ortvalue_output(model_output.name, y)
            bindings[batch.shape] = (binding, x, y)
        binding, x, y = bindings[batch.shape]
        x.update_inplace(batch)
        session.run_with_iobinding(binding)
        return y.numpy()

    return predict


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    if not MNIST.is_dir():
        return {"skipped": f"{MNIST} is absent"}
    from bench.compression import mnist_export

    return measure(mnist_export(ctx))


def measure(export_dir: Path) -> dict[str, Any]:
    """Latencies of the shipped variant's TFLite file and ONNX twin (and of baseline-int8's) in `export_dir`."""
    import onnx

    from shrinkflow.core.compression.onnx import convert_tflite, quantize_after_layout_ops
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
    unmoved: dict[str, int] = {}
    kernels: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="onnx-latency-") as scratch:
        for variant, (tflite, shipped_onnx) in models.items():
            model = onnx.load(str(shipped_onnx))
            opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
            unmoved[variant] = quantize_after_layout_ops(model)  # 0: every QuantizeLinear next to its DequantizeLinear
            graphs = {"shrinkflow": shipped_onnx, "tf2onnx": Path(scratch) / f"{variant}.onnx"}
            convert_tflite(tflite, opset, graphs["tf2onnx"])
            predictors = {LITERT: tflite_predictor(tflite), LITERT_BARE: litert_bare(tflite)}
            predictors |= {f"onnxruntime: {name}": onnx_predictor(graphs[graph], make()) for name, (graph, make) in session_settings().items()}
            predictors[f"onnxruntime: {ORT_BARE}"] = onnxruntime_bare(shipped_onnx)
            outputs = {name: predict(x[:8]) for name, predict in predictors.items()}
            results[variant] = interleaved(predictors, x)
            if variant == shipped:  # the chosen setting, and QDQ fusion off (float kernels between quantize-dequantize pairs)
                kernels = {name: kernel_times(shipped_onnx, session_settings()[name][1], x, Path(scratch))
                           for name in (CHOSEN, "chosen, QDQ fusion off")}
            for name, row in results[variant].items():
                row["max_abs_difference_from_litert"] = float(np.abs(outputs[name] - outputs[LITERT]).max())
    student = results[shipped]

    def ratio(onnx_side: str, litert_side: str) -> float:
        return round(student[f"onnxruntime: {onnx_side}"]["batch1_ms"] / student[litert_side]["batch1_ms"], 2)

    ratios = {
        "defaults": ratio("tf2onnx's graph, defaults", LITERT), "before": ratio(BEFORE, LITERT),
        "after": ratio(CHOSEN, LITERT), "bare": ratio(ORT_BARE, LITERT_BARE),
    }
    worst = max(ratios["after"], ratios["bare"])
    return {
        "data": f"version {export_dir.name} of the export of configs/mnist_cnn.yaml on MNIST t10k (shipped: {shipped}); "
                f"inputs random, {ROUNDS} rounds of {REPEATS_ONE} single-sample and {REPEATS_BATCH} {BATCH}-sample calls per side",
        "shipped": shipped,
        "quantize_nodes_left_apart_in_shipped_onnx": unmoved,
        "latency": results,
        "onnxruntime_kernels_batch1": kernels,
        "onnx_over_litert_batch1": ratios,
        "goals": {"onnx_within_2x_of_litert": goal(
            f"<= {GOAL_RATIO}x, through shrinkflow's predictors and bare", worst, worst <= GOAL_RATIO,
        )},
    }


def kernel_times(path: Path, make_options: Callable[[], Any], x: np.ndarray, scratch: Path) -> list[dict[str, Any]]:
    """Where ONNX Runtime's single-sample time goes under a session setting: the graph as ONNX Runtime optimized
    it, cut after each of its nodes and run as it is (no further optimization); each node's time is what it adds
    to the cut before it, interleaved and medians as the other sides. The first includes the call itself."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    from shrinkflow.core.evaluation import median_latency_ms
    from shrinkflow.core.predictors import onnx_session_options

    optimized = scratch / "optimized.onnx"
    options = make_options()
    options.optimized_model_filepath = str(optimized)
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    nodes = list(onnx.load(str(optimized)).graph.node)
    cuts: dict[str, Callable[[np.ndarray], Any]] = {}
    for count, node in enumerate(nodes, start=1):
        model = onnx.load(str(optimized))
        del model.graph.node[count:]
        for element_type in (TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8):  # the file does not record it
            model.graph.ClearField("output")
            model.graph.output.append(helper.make_tensor_value_info(node.output[0], element_type, None))
            onnx.save(model, str(scratch / f"cut-{count}.onnx"))
            as_it_is = onnx_session_options()
            as_it_is.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                session = onnxruntime.InferenceSession(str(scratch / f"cut-{count}.onnx"), as_it_is, providers=["CPUExecutionProvider"])
            except Exception:  # onnxruntime's own error for the wrong output type: try the next
                continue
            input_name = session.get_inputs()[0].name
            cuts[f"{count:2d} {node.op_type}"] = lambda batch, session=session, input_name=input_name: session.run(None, {input_name: batch})
            break
    times: dict[str, list[float]] = {name: [] for name in cuts}
    for _ in range(ROUNDS):
        for name, predict in cuts.items():
            times[name].append(median_latency_ms(predict, x[:1], REPEATS_ONE))
    medians = [statistics.median(one) for one in times.values()]
    return [
        {"node": name.split()[1], "cumulative_ms": round(median, 4), "added_ms": round(median - ([0.0, *medians][k]), 4)}
        for k, (name, median) in enumerate(zip(times, medians, strict=True))
    ]


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
    kernels = result["onnxruntime_kernels_batch1"]
    chosen, fusion_off = kernels[CHOSEN], kernels["chosen, QDQ fusion off"]
    layers = ", ".join(f"{row['node']} {row['added_ms']}" for row in fusion_off if row["node"] in ("Conv", "Gemm", "MatMul"))
    lines += [f"Where ONNX Runtime's single-sample time goes on {result['shipped']}, shrinkflow's graph and settings (its "
              "optimized graph cut after each node, each node's time what it adds; the first includes the call itself):", "",
              markdown_table(["node", "cumulative ms", "added ms"], [list(row.values()) for row in chosen]),
              f"The same layers with QDQ fusion off (float kernels), ms added: {layers}; that graph's total {fusion_off[-1]['cumulative_ms']} ms.", ""]
    ratio = result["onnx_over_litert_batch1"]
    lines += [f"ONNX Runtime / LiteRT, one sample per call, shipped student: {ratio['defaults']}x with tf2onnx's graph and "
              f"ONNX Runtime's defaults, {ratio['before']}x as shrinkflow ran it before (QDQ fusion off), {ratio['after']}x "
              f"with shrinkflow's graph and settings, {ratio['bare']}x with both runtimes called bare. QuantizeLinear nodes "
              f"left apart from their DequantizeLinear in the shipped ONNX files: {result['quantize_nodes_left_apart_in_shipped_onnx']}. "
              f"The {BATCH}-sample columns spread more from run to run on a loaded machine (load average at the end: "
              f"{result.get('load_average_at_end', 'not recorded')}) than the single-sample ones.", ""]
    return "\n".join(lines)


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    if "skipped" in result:
        return [["ONNX Runtime / LiteRT single-sample latency", "", "skipped", "n/a"]]
    ratio = result["onnx_over_litert_batch1"]
    return [["ONNX Runtime / LiteRT single-sample latency, shipped MNIST student (predictors; bare calls)", f"<= {GOAL_RATIO:g}x",
             f"{ratio['after']}x; {ratio['bare']}x (before {ratio['before']}x, defaults {ratio['defaults']}x)",
             yes_no(result["goals"]["onnx_within_2x_of_litert"]["met"])]]


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
