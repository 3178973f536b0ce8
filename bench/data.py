"""9. Data at scale: preparing a large table, a run on a Parquet folder of 300,000 and 3,000,000 rows, training from
image files, and the CIFAR preset on CIFAR-layout colour data.

    .venv/bin/python -m bench --only data            (about 25 minutes on 2 cores)
    .venv/bin/python -m bench.data --small OUT       the same on small data, for development (about 3 minutes)

- prepare: `prepare_dataset` of one Parquet file of 1,000,000 rows x 64 float32 features (A) against what any
  preparation must do at least (B): read it with pyarrow into float32 arrays and write them as .npy shards of
  32 MiB. Each side a fresh process, interleaved; the seconds of the work itself (imports excluded).
- table: `shrinkflow run` (temporary Prefect server, MLflow, the export) of an MLP on a folder of 10 Parquet files of
  300,000 and of 3,000,000 rows x 32 float32 features, one epoch, dynamic quantization only; its peak resident
  memory (the flow's process, and the process tree with the Prefect server), and its wall time against
  bench/table_plain.py doing the same job in memory at 3,000,000 rows.
- images: MNIST t10k written as 10,000 PNG files (a folder per digit); the MNIST CNN preset's model trained for 3
  epochs from `images:DIR` (prepare_dataset: decode in tf.data, then train_baseline streaming the shards) against
  `model.fit` on the same pixels already in memory (uint8 -> float, the same split). In one process, interleaved.
- cifar: configs/cifar10_cnn.yaml on colour data in exactly the CIFAR-10 cache layout. The real CIFAR-10 cannot be
  downloaded here, so the data is MNIST t10k made colour: each digit padded to 32 x 32, drawn in a random bright
  colour on a random dark background with noise, written as `data_batch_1..5` and `test_batch` pickles.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.tables import markdown_table
from bench.common import (
    MNIST, REPO, ChildRun, Context, child_env, flow_argv, goal, median, run_child, spread, yes_no,
)
from bench.overhead import cold_home

NAME = "data"
FULL = {"prepare_rows": 1_000_000, "prepare_features": 64, "table_rows": (300_000, 3_000_000), "table_files": 10,
        "table_features": 32, "image_epochs": 3, "cifar": True}
SMALL = {"prepare_rows": 100_000, "prepare_features": 64, "table_rows": (30_000, 300_000), "table_files": 10,
         "table_features": 32, "image_epochs": 1, "cifar": False}
GOAL_PREPARE, GOAL_MEMORY_GROWTH, GOAL_MEMORY_MIB, GOAL_PLAIN, GOAL_IMAGES = 2.0, 0.25, 2048, 1.3, 1.3
TABLE_CONFIG = """name: wide_table
data:
  source: {source}
  scaling: standard
model:
  family: mlp
  hidden_units: [64, 32]
  dropout: 0
train:
  epochs: 1
  batch_size: 256
  early_stopping_patience: null
quantize:
  modes: [dynamic]
select:
  max_quality_drop: 0.02
"""
PREPARE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from shrinkflow.core.runtime import configure_libraries
configure_libraries()
from shrinkflow.core.config import DataConfig
from shrinkflow.core.data import prepare_dataset
started = time.perf_counter()
prepare_dataset(DataConfig(source=sys.argv[1], scaling="standard"), sys.argv[2])
print("SECONDS " + json.dumps(time.perf_counter() - started))
"""
READ_AND_WRITE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pyarrow.parquet as pq
started = time.perf_counter()
table = pq.read_table(sys.argv[1])
x = np.column_stack([table.column(name).to_numpy() for name in table.column_names if name != "label"]).astype(np.float32)
y = table.column("label").to_numpy()
out = Path(sys.argv[2]); out.mkdir(parents=True)
rows = (32 << 20) // x[0].nbytes
for number, start in enumerate(range(0, len(x), rows)):
    np.save(out / f"{number:05d}-x.npy", x[start:start + rows]); np.save(out / f"{number:05d}-y.npy", y[start:start + rows])
print("SECONDS " + json.dumps(time.perf_counter() - started))
"""


def run(ctx: Context, sizes: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    sizes = sizes or FULL
    result: dict[str, Any] = {"sizes": sizes, "repetitions": ctx.reps}
    result["prepare"] = prepare_benchmark(ctx, sizes)
    result["table"] = table_benchmark(ctx, sizes)
    result["images"] = image_benchmark(ctx, sizes)
    if sizes["cifar"]:
        result["cifar"] = cifar_benchmark(ctx)
    small, large = result["table"]["by_rows"]
    growth = large["flow_tree_peak_rss_mib"] / small["flow_tree_peak_rss_mib"] - 1
    result["goals"] = {
        "prepare_within_2x_of_read_and_write": goal(
            f"<= {GOAL_PREPARE}", result["prepare"]["ratio"], result["prepare"]["ratio"] <= GOAL_PREPARE),
        "peak_memory_growth_10x_rows": goal(
            f"<= {GOAL_MEMORY_GROWTH:.0%}", f"{growth:+.1%}", growth <= GOAL_MEMORY_GROWTH,
            f"process tree peak {small['flow_tree_peak_rss_mib']} MiB at {small['rows']:,} rows, "
            f"{large['flow_tree_peak_rss_mib']} MiB at {large['rows']:,}"),
        "peak_memory_under_2_gib": goal(
            f"< {GOAL_MEMORY_MIB} MiB", large["flow_tree_peak_rss_mib"], large["flow_tree_peak_rss_mib"] < GOAL_MEMORY_MIB,
            "the process tree: the flow and its temporary Prefect server"),
        "large_table_run_within_1.3x_of_plain": goal(
            f"<= {GOAL_PLAIN}", result["table"]["flow_over_plain"], result["table"]["flow_over_plain"] <= GOAL_PLAIN),
        "training_from_png_files_within_1.3x_of_memory": goal(
            f"<= {GOAL_IMAGES}", result["images"]["ratio"], result["images"]["ratio"] <= GOAL_IMAGES),
    }
    return result


# --- prepare ---------------------------------------------------------------------------------------------------


def write_table(path: Path, rows: int, features: int, seed: int = 0) -> None:
    """`rows` x `features` float32 values and an int label (5 classes) a linear model can partly learn; written in
    slices so the generator never holds the whole table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, 5))
    names = [f"f{i}" for i in range(features)]
    schema = pa.schema([*(pa.field(name, pa.float32()) for name in names), pa.field("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 250_000):
            x = rng.normal(size=(min(250_000, rows - start), features)).astype(np.float32)
            labels = (x @ weights + rng.normal(scale=2.0, size=(len(x), 5))).argmax(1)
            writer.write_table(pa.table([*(pa.array(x[:, i]) for i in range(features)), pa.array(labels)], schema=schema))


def prepare_benchmark(ctx: Context, sizes: dict[str, Any]) -> dict[str, Any]:
    work = ctx.fresh_dir("data/prepare")
    table = work / "table.parquet"
    write_table(table, sizes["prepare_rows"], sizes["prepare_features"])
    prepare, reference = [], []
    for rep in range(ctx.reps):
        for side, script, out in (("prepare", PREPARE_SCRIPT, work / f"prepared-{rep}"),
                                  ("read-and-write", READ_AND_WRITE_SCRIPT, work / f"shards-{rep}")):
            child = run_child(side, [sys.executable, "-c", script, str(table), str(out)], work / f"{side}-{rep}.log", child_env())
            seconds = float(child.output().split("SECONDS ")[-1].split()[0])
            (prepare if side == "prepare" else reference).append({"work_s": seconds, "wall_s": child.wall_s, "peak_rss_mib": child.peak_rss_mib})
        print(f"  prepare rep {rep + 1}: prepare_dataset {prepare[-1]['work_s']:.1f} s, read and write "
              f"{reference[-1]['work_s']:.1f} s", flush=True)
    ratio = median([p["work_s"] for p in prepare]) / median([r["work_s"] for r in reference])
    return {
        "data": f"one Parquet file, {sizes['prepare_rows']:,} rows x {sizes['prepare_features']} float32 features + label "
                f"({table.stat().st_size / 2**20:.0f} MiB)",
        "prepare_dataset_s": spread([p["work_s"] for p in prepare]),
        "read_and_write_s": spread([r["work_s"] for r in reference]),
        "prepare_peak_rss_mib": round(median([p["peak_rss_mib"] for p in prepare])),
        "read_and_write_peak_rss_mib": round(median([r["peak_rss_mib"] for r in reference])),
        "ratio": round(ratio, 2),
    }


# --- a run on a Parquet folder -------------------------------------------------------------------------------


def table_benchmark(ctx: Context, sizes: dict[str, Any]) -> dict[str, Any]:
    env = child_env(prefect_home=cold_home(ctx))
    by_rows, plain_runs, flow_runs = [], [], []
    for rows in sizes["table_rows"]:
        work = ctx.fresh_dir(f"data/table-{rows}")
        folder = work / "parts"
        folder.mkdir()
        per_file = rows // sizes["table_files"]
        for number in range(sizes["table_files"]):
            write_table(folder / f"part-{number:03d}.parquet", per_file, sizes["table_features"], seed=number)
        config = work / "wide_table.yaml"
        config.write_text(TABLE_CONFIG.format(source=folder))
        runs: list[ChildRun] = []
        for rep in range(ctx.reps):
            runs.append(run_child("flow", flow_argv(config, [], work / f"ws-{rep}"), work / f"flow-{rep}.log", env))
            if rows == max(sizes["table_rows"]):
                plain_runs.append(run_child("plain", [sys.executable, "-m", "bench.table_plain", str(folder), str(config)],
                                            work / f"plain-{rep}.log", child_env()))
                print(f"  {rows:,} rows rep {rep + 1}: flow {runs[-1].wall_s:.1f} s, plain {plain_runs[-1].wall_s:.1f} s",
                      flush=True)
            else:
                print(f"  {rows:,} rows rep {rep + 1}: flow {runs[-1].wall_s:.1f} s", flush=True)
        flow_runs = runs
        by_rows.append({
            "rows": rows, "flow_wall_s": spread([r.wall_s for r in runs]),
            "flow_peak_rss_mib": round(median([r.peak_rss_mib for r in runs])),
            "flow_tree_peak_rss_mib": round(median([r.tree_peak_rss_mib for r in runs])),
        })
    plain = [json.loads(run.output().split("PLAIN_TABLE ")[-1].splitlines()[0]) for run in plain_runs]
    return {
        "data": f"a folder of {sizes['table_files']} Parquet files, {sizes['table_features']} float32 features, 5 classes; "
                "MLP [64, 32], one epoch, batch 256, dynamic quantization only",
        "by_rows": by_rows,
        "plain_wall_s": spread([r.wall_s for r in plain_runs]),
        "plain_peak_rss_mib": round(median([r.peak_rss_mib for r in plain_runs])),
        "plain_accuracy": round(median([p["keras_accuracy"] for p in plain]), 4),
        "flow_over_plain": round(median([r.wall_s for r in flow_runs]) / median([r.wall_s for r in plain_runs]), 3),
    }


# --- training from image files ---------------------------------------------------------------------------------


def write_png_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST t10k as PNG files, a folder per digit; returns the images and labels in the folder's reading order."""
    from PIL import Image

    from shrinkflow.core.data.readers import read_idx_dir

    images, labels = read_idx_dir(MNIST)
    order = np.lexsort((np.arange(len(labels)), labels))  # by class, then as in the file: the folder's order
    for position, index in enumerate(order):
        (folder / str(labels[index])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index, :, :, 0], "L").save(folder / str(labels[index]) / f"{position:05d}.png")
    return images[order], labels[order]


def image_benchmark(ctx: Context, sizes: dict[str, Any]) -> dict[str, Any]:
    from shrinkflow.core.config import DataConfig, load_config
    from shrinkflow.core.data import prepare_dataset, split_rows
    from shrinkflow.core.training import train_baseline

    from bench.input_pipeline import bare_fit_samples_per_s

    work = ctx.fresh_dir("data/images")
    images, labels = write_png_folder(work / "pngs")
    epochs = sizes["image_epochs"]
    config = load_config(REPO / "configs" / "mnist_cnn.yaml", [f"train.epochs={epochs}", "train.early_stopping_patience=null"])
    data_cfg = DataConfig(source=f"images:{work / 'pngs'}", color_mode="grayscale")
    from_files, from_memory = [], []
    for rep in range(ctx.reps):
        started = time.perf_counter()
        dataset = prepare_dataset(data_cfg, work / f"datasets-{rep}")
        prepared_s = time.perf_counter() - started
        train_baseline(dataset, config.model, config.train, work / f"model-{rep}.keras")
        from_files.append({"total_s": time.perf_counter() - started, "prepare_s": prepared_s})
        # The same pixels and split, in memory: uint8 images scaled as the preparation scaled them.
        scale = dict(dataset.preprocessing)
        arrays = []
        for split in ("train", "validation"):
            rows = split_rows(dataset, split)
            arrays += [((images[rows].astype(np.float32) - scale["offset"]) * scale["scale"]), labels[rows].astype(np.int64)]
        started = time.perf_counter()
        bare_fit_samples_per_s(tuple(arrays), dataset, config)
        from_memory.append(time.perf_counter() - started)
        print(f"  images rep {rep + 1}: from PNG files {from_files[-1]['total_s']:.1f} s (prepare "
              f"{prepared_s:.1f} s), from memory {from_memory[-1]:.1f} s", flush=True)
    ratio = median([f["total_s"] for f in from_files]) / median(from_memory)
    return {
        "data": f"MNIST t10k as 10,000 PNG files; configs/mnist_cnn.yaml's CNN, {epochs} epochs, batch "
                f"{config.train.batch_size}, 7,000 / 1,000 / 2,000 split",
        "from_png_files_s": spread([f["total_s"] for f in from_files]),
        "of_which_prepare_s": spread([f["prepare_s"] for f in from_files]),
        "from_memory_s": spread(from_memory),
        "ratio": round(ratio, 3),
    }


# --- CIFAR-layout colour data ------------------------------------------------------------------------------------


def write_colour_cifar(keras_home: Path) -> str:
    """MNIST t10k made colour, in the CIFAR-10 cache layout (rows of 3,072 bytes: R, G, B planes of 32 x 32)."""
    from shrinkflow.core.data.readers import read_idx_dir

    images, labels = read_idx_dir(MNIST)
    rng = np.random.default_rng(0)
    digits = np.pad(images[..., 0], ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255  # n x 32 x 32
    foreground = rng.uniform(0.5, 1.0, (len(digits), 1, 1, 3))
    background = rng.uniform(0.0, 0.4, (len(digits), 1, 1, 3))
    colour = digits[..., None] * foreground + (1 - digits[..., None]) * background
    noisy = np.clip(colour + rng.normal(scale=0.08, size=colour.shape), 0, 1)
    rows = (noisy * 255).round().astype(np.uint8).transpose(0, 3, 1, 2).reshape(len(digits), 3072)
    folder = keras_home / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, part in zip(names, np.array_split(np.arange(len(rows)), len(names))):
        content = {b"batch_label": name.encode(), b"labels": labels[part].tolist(), b"data": rows[part]}
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    meta = {b"label_names": [str(digit).encode() for digit in range(10)], b"num_cases_per_batch": len(rows) // 6}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return f"MNIST t10k made colour (random bright digit on a random dark background, noise), {len(rows):,} images"


def cifar_benchmark(ctx: Context) -> dict[str, Any]:
    work = ctx.fresh_dir("data/cifar")
    description = write_colour_cifar(work / "keras")
    env = {**child_env(prefect_home=cold_home(ctx)), "KERAS_HOME": str(work / "keras")}
    run = run_child("cifar preset", flow_argv(REPO / "configs" / "cifar10_cnn.yaml", [], work / "ws"), work / "run.log", env)
    [manifest_path] = (work / "ws" / "exports" / "cifar10_cnn").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    variants = {name: entry["metrics"] for name, entry in manifest["variants"].items()}
    baseline = variants["baseline"]
    rows = [[name, round(m["accuracy"], 4), f"{(m['accuracy'] - baseline['accuracy']) * 100:+.2f} pt",
             int(m["gzip_size_bytes"]), round(baseline["gzip_size_bytes"] / m["gzip_size_bytes"], 1), round(m["latency_ms"], 3)]
            for name, m in variants.items()]
    return {"data": description, "wall_s": round(run.wall_s), "tree_peak_rss_mib": round(run.tree_peak_rss_mib),
            "selected": manifest["selected_variant"], "variants": rows}


# --- report ---------------------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    prepare, table, images = result["prepare"], result["table"], result["images"]
    text = [
        f"**Preparing a large table.** {prepare['data']}; {result['repetitions']} repetitions, each side a fresh process, "
        "interleaved; seconds of the work (imports excluded).", "",
        markdown_table(["side", "median s", "min", "max", "peak RSS MiB"], [
            ["A: `prepare_dataset` (two passes: labels, then checked, fingerprinted, counted, sharded chunks)",
             *_cells(prepare["prepare_dataset_s"]), prepare["prepare_peak_rss_mib"]],
            ["B: pyarrow `read_table`, float32 arrays, `.npy` shards of 32 MiB", *_cells(prepare["read_and_write_s"]),
             prepare["read_and_write_peak_rss_mib"]],
        ]),
        f"A / B = **{prepare['ratio']}**.", "",
        f"**A run on a Parquet folder.** {table['data']}; `shrinkflow run` with a temporary Prefect server.", "",
        markdown_table(["rows", "wall s (median)", "flow process peak MiB", "process tree peak MiB"], [
            [f"{point['rows']:,}", point["flow_wall_s"]["median"], point["flow_peak_rss_mib"], point["flow_tree_peak_rss_mib"]]
            for point in table["by_rows"]
        ]),
        f"Plain script (bench/table_plain.py, all in memory) at {table['by_rows'][-1]['rows']:,} rows: "
        f"{table['plain_wall_s']['median']} s, peak {table['plain_peak_rss_mib']} MiB, accuracy {table['plain_accuracy']}; "
        f"`shrinkflow run` / plain = **{table['flow_over_plain']}**.", "",
        f"**Training from image files.** {images['data']}; in one process, interleaved.", "",
        markdown_table(["side", "median s", "min", "max"], [
            ["from the PNG files (`images:DIR`: prepare, then train_baseline)", *_cells(images["from_png_files_s"])],
            ["of which preparing (decoding 10,000 PNGs in tf.data, writing shards)", *_cells(images["of_which_prepare_s"])],
            ["the same pixels from memory (`model.fit` on arrays)", *_cells(images["from_memory_s"])],
        ]),
        f"From files / from memory = **{images['ratio']}**.",
    ]
    if "cifar" in result:
        cifar = result["cifar"]
        text += ["", f"**CIFAR layout, colour.** `configs/cifar10_cnn.yaml` on {cifar['data']}, in the CIFAR-10 cache "
                 f"layout (the real CIFAR-10 cannot be downloaded here); {cifar['wall_s']} s, process tree peak "
                 f"{cifar['tree_peak_rss_mib']} MiB; shipped: `{cifar['selected']}`.", "",
                 markdown_table(["variant", "accuracy", "delta", "gzip bytes", "ratio", "latency ms"], cifar["variants"])]
    return "\n".join(text) + "\n"


def _cells(values: dict[str, Any]) -> list[Any]:
    return [values["median"], values["min"], values["max"]]


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    goals = result["goals"]
    return [
        ["preparing 1M x 64 Parquet / pyarrow read + write shards", f"<= {GOAL_PREPARE}",
         goals["prepare_within_2x_of_read_and_write"]["measured"], yes_no(goals["prepare_within_2x_of_read_and_write"]["met"])],
        ["peak memory, Parquet folder of 3M rows against 300k", f"<= +{GOAL_MEMORY_GROWTH:.0%}",
         goals["peak_memory_growth_10x_rows"]["measured"], yes_no(goals["peak_memory_growth_10x_rows"]["met"])],
        ["peak memory at 3M rows (process tree)", "< 2 GiB", f"{goals['peak_memory_under_2_gib']['measured']} MiB",
         yes_no(goals["peak_memory_under_2_gib"]["met"])],
        ["3M-row run / plain script", f"<= {GOAL_PLAIN}", goals["large_table_run_within_1.3x_of_plain"]["measured"],
         yes_no(goals["large_table_run_within_1.3x_of_plain"]["met"])],
        ["CNN from 10,000 PNG files / from memory", f"<= {GOAL_IMAGES}",
         goals["training_from_png_files_within_1.3x_of_memory"]["measured"],
         yes_no(goals["training_from_png_files_within_1.3x_of_memory"]["met"])],
    ]


if __name__ == "__main__":  # python -m bench.data --small OUT: the small sizes, results in OUT
    from bench.common import write_result

    out = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/shrinkflow-bench-data")
    small_ctx = Context(out_dir=out, work_dir=out / ".work", reps=1)
    begin = time.perf_counter()
    outcome = run(small_ctx, SMALL if "--small" in sys.argv else FULL)
    assert outcome is not None
    print(write_result(small_ctx, NAME, outcome, " ".join(sys.argv), time.perf_counter() - begin))
    print(render(outcome))
