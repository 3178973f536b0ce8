"""9. Numbers that hold on unseen data: the MNIST preset's reported test accuracy against the shipped file's
accuracy on rows the run never saw.

    .venv/bin/python -m bench --only unseen

The MNIST t10k set is cut once (a fixed seed) into 8,000 images the run gets (as IDX files: its own 80/20 split,
so 6,400 train and validation rows and 1,600 test rows) and 2,000 it never sees. A real `shrinkflow run` of
configs/mnist_cnn.yaml on the 8,000 ships a variant; the shipped file from the export folder is then run outside
shrinkflow (ai_edge_litert, onnxruntime or tf_keras, the manifest's preprocessing applied by hand) on the 2,000.
Goals: the two accuracies within 1.0 point; the reported 95 % interval as wide as Wilson's interval predicts for
that many rows at that accuracy (about +-0.6 points at 98 % on 2,000 rows).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MNIST, MNIST_CNN, Context, child_env, flow_argv, goal, run_child, yes_no
from bench.overhead import cold_home

NAME = "unseen"
HOLD_OUT = 2000
SEED = 7
GOAL_GAP_POINTS = 1.0


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    if not MNIST.is_dir():
        return {"skipped": f"{MNIST} is absent"}
    work = ctx.fresh_dir("unseen")
    images, labels = read_idx_pair(MNIST)
    order = np.random.default_rng(SEED).permutation(len(labels))
    seen, unseen = order[HOLD_OUT:], order[:HOLD_OUT]
    write_idx_pair(work / "seen", images[seen], labels[seen])
    workspace = work / "ws"
    run_child(
        "flow", flow_argv(MNIST_CNN, [f"data.source=idx:{work / 'seen'}"], workspace), work / "run.log",
        child_env(prefect_home=cold_home(ctx)),
    )
    [manifest_path] = workspace.glob("exports/*/1/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    shipped_file = manifest_path.parent / manifest["selected_file"]
    reported = manifest["metrics"]
    predicted = predict_outside_shrinkflow(shipped_file, images[unseen], manifest)
    unseen_accuracy = float(np.mean(predicted == labels[unseen]))
    test_rows = int(manifest["split_sizes"]["test"]) if "split_sizes" in manifest else int(round(0.2 * len(seen)))
    gap = abs(unseen_accuracy - reported["accuracy"]) * 100
    predicted_half_width = wilson_half_width(reported["accuracy"], test_rows)
    reported_half_width = (reported["accuracy_ci_high"] - reported["accuracy_ci_low"]) / 2
    return {
        "data": f"MNIST t10k: {len(seen):,} images for the run (test split {test_rows:,} rows), {HOLD_OUT:,} held out (seed {SEED})",
        "shipped": {
            "variant": manifest["selected_variant"], "file": manifest["selected_file"],
            "reported_test_accuracy": round(reported["accuracy"], 4),
            "reported_interval": [round(reported["accuracy_ci_low"], 4), round(reported["accuracy_ci_high"], 4)],
            "quality_delta_pt": round(reported["quality_delta"] * 100, 2),
            "paired_delta_interval_pt": [round(reported["quality_delta_ci_low"] * 100, 2), round(reported["quality_delta_ci_high"] * 100, 2)],
            "val_quality_delta_pt": round(reported["val_quality_delta"] * 100, 2),
            "gzip_size_bytes": int(reported["gzip_size_bytes"]),
        },
        "unseen_accuracy": round(unseen_accuracy, 4),
        "unseen_interval": [round(x, 4) for x in wilson(unseen_accuracy, HOLD_OUT)],
        "gap_points": round(gap, 2),
        "reported_half_width_points": round(reported_half_width * 100, 2),
        "wilson_half_width_points_at_that_accuracy": round(predicted_half_width * 100, 2),
        "goals": {
            "unseen_within_1_point_of_reported": goal(f"<= {GOAL_GAP_POINTS} pt", round(gap, 2), gap <= GOAL_GAP_POINTS),
            "interval_width_as_predicted": goal(
                "reported half-width = Wilson's for the test rows", round(reported_half_width * 100, 2),
                abs(reported_half_width - predicted_half_width) < 0.001,
            ),
        },
    }


def predict_outside_shrinkflow(path: Path, images: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """Class indices from the shipped file, run by its own runtime with the manifest's preprocessing by hand."""
    scaling = manifest["preprocessing"]
    x = ((images.astype(np.float64) - scaling["offset"]) * scaling["scale"]).astype(np.float32)[..., np.newaxis]
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        outputs = []
        for sample in x:
            value = sample[None]
            if np.issubdtype(given["dtype"], np.integer):
                scale, zero = given["quantization"]
                value = np.clip(np.round(value / scale + zero), -128, 127).astype(given["dtype"])
            interpreter.set_tensor(given["index"], value)
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(taken["index"])[0].astype(np.float32))
        return np.argmax(outputs, axis=1)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0]).argmax(axis=1)
    import tf_keras

    return tf_keras.models.load_model(path, compile=False).predict(x, verbose=0).argmax(axis=1)


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def wilson_half_width(p: float, n: int) -> float:
    low, high = wilson(p, n)
    return (high - low) / 2


def read_idx_pair(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    def read(path: Path, ndim: int) -> np.ndarray:
        content = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        sizes = [int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim).reshape(sizes)

    [images] = sorted(folder.glob("*images*idx3-ubyte*"))
    [labels] = sorted(folder.glob("*labels*idx1-ubyte*"))
    return read(images, 3), read(labels, 1)


def write_idx_pair(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = (0x0803).to_bytes(4, "big") + b"".join(int(size).to_bytes(4, "big") for size in images.shape)
    (folder / "t10k-images-idx3-ubyte").write_bytes(header + images.astype(np.uint8).tobytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes((0x0801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes())


def render(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    shipped = result["shipped"]
    return "\n".join([
        f"Data: {result['data']}.", "",
        f"Shipped **{shipped['variant']}** ({shipped['gzip_size_bytes']:,} bytes gzipped). The run reported test accuracy "
        f"{shipped['reported_test_accuracy']:.4f} (95 % interval {shipped['reported_interval'][0]:.4f} to "
        f"{shipped['reported_interval'][1]:.4f}), {shipped['quality_delta_pt']:+.2f} pt against its baseline (paired "
        f"interval {shipped['paired_delta_interval_pt'][0]:+.2f} to {shipped['paired_delta_interval_pt'][1]:+.2f} pt; "
        f"{shipped['val_quality_delta_pt']:+.2f} pt on the validation rows it was chosen on).", "",
        f"On the {HOLD_OUT:,} rows the run never saw, the file (run by its own runtime, outside shrinkflow) scores "
        f"{result['unseen_accuracy']:.4f} (95 % interval {result['unseen_interval'][0]:.4f} to {result['unseen_interval'][1]:.4f}): "
        f"{result['gap_points']:.2f} points from the reported figure. The reported interval's half-width, "
        f"{result['reported_half_width_points']:.2f} points, is Wilson's for that many rows at that accuracy "
        f"({result['wilson_half_width_points_at_that_accuracy']:.2f}).", "",
    ])


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    if "skipped" in result:
        return [["unseen rows", "", "skipped", "n/a"]]
    goals = result["goals"]
    return [
        ["shipped file on 2,000 unseen MNIST rows against the reported test accuracy", f"<= {GOAL_GAP_POINTS:g} pt",
         f"{result['gap_points']} pt ({result['unseen_accuracy']} against {result['shipped']['reported_test_accuracy']})",
         yes_no(goals["unseen_within_1_point_of_reported"]["met"])],
        ["reported 95 % interval half-width = Wilson's for the test rows", "equal",
         f"{result['reported_half_width_points']} pt", yes_no(goals["interval_width_as_predicted"]["met"])],
    ]
