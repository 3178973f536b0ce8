"""4. Input pipeline: training throughput as the flow trains against a bare `model.fit` on in-memory arrays.

In this process, interleaved (A B A B ...): A is shrinkflow.core.training.train_baseline, what the flow's
train stage calls (the splits streamed from the prepared shards through a shuffled, batched, prefetched
tf.data pipeline, the model saved at the end); B builds the same model with the same optimizer and calls
`model.fit(x, y, batch_size, shuffle=True, validation_data=...)` on the arrays already in memory.
Both run the same epochs (early stopping off) and count training samples times epochs per second of
`fit`, validation passes included. Goal: A / B at least 0.95.

When the overhead benchmark ran in the same invocation, the throughput the real flow runs logged
(the baseline child run's `train_samples_per_s` metric in MLflow) is reported too.
"""

from __future__ import annotations

import time
from typing import Any

from shrinkflow.core.tables import markdown_table
from bench.common import MNIST_CNN, MNIST_SOURCE, Context, goal, median, split_arrays, spread, yes_no
from bench.overhead import SMOKE_SETS, mnist_setup

NAME = "input_pipeline"
GOAL_SHARE = 0.95
EPOCHS = 3


def run(ctx: Context) -> dict[str, Any]:
    from shrinkflow.core.config import load_config
    from shrinkflow.core.data import prepare_dataset
    from shrinkflow.core.training import train_baseline

    epochs = 1 if ctx.smoke else EPOCHS
    sets = [*(SMOKE_SETS if ctx.smoke else [MNIST_SOURCE]), f"train.epochs={epochs}", "train.early_stopping_patience=null"]
    config = load_config(mnist_setup(ctx)[0] if ctx.smoke else MNIST_CNN, sets)
    work = ctx.fresh_dir("input-pipeline")
    dataset = prepare_dataset(config.data, work / "datasets")
    splits = (*split_arrays(dataset, "train"), *split_arrays(dataset, "validation"))
    flow_side, bare_side = [], []
    for rep in range(ctx.reps):
        flow_side.append(train_baseline(dataset, config.model, config.train, work / f"model-{rep}.keras")["train_samples_per_s"])
        bare_side.append(bare_fit_samples_per_s(splits, dataset, config))
        print(f"  rep {rep + 1}/{ctx.reps}: train_baseline {flow_side[-1]:.0f} samples/s, bare fit "
              f"{bare_side[-1]:.0f} samples/s", flush=True)
    share = median(flow_side) / median(bare_side)
    result: dict[str, Any] = {
        "data": mnist_setup(ctx)[2],
        "training": f"{len(splits[0]):,} training samples, {epochs} epochs, batch {config.train.batch_size}, "
                    f"validation on {len(splits[2]):,} samples each epoch",
        "repetitions": ctx.reps,
        "train_baseline_samples_per_s": spread(flow_side, 0),
        "bare_fit_samples_per_s": spread(bare_side, 0),
        "per_rep_share": [round(a / b, 3) for a, b in zip(flow_side, bare_side)],
        "train_baseline_over_bare": round(share, 3),
        "goals": {"throughput_at_least_0.95_of_bare_fit": goal(f">= {GOAL_SHARE}", round(share, 3), share >= GOAL_SHARE)},
    }
    in_flow = flow_run_throughputs(ctx)
    if in_flow:
        result["flow_runs_samples_per_s"] = spread(in_flow, 0)
        result["flow_runs_over_bare"] = round(median(in_flow) / median(bare_side), 3)
    return result


def bare_fit_samples_per_s(splits: Any, dataset: Any, config: Any) -> float:
    """The hand-written baseline: same model and optimizer, `fit` straight on the in-memory arrays
    (x_train, y_train, x_val, y_val)."""
    import numpy as np
    import tf_keras

    from shrinkflow.core.training import build_model, compile_for_training, make_optimizer

    train_cfg = config.train
    x_train, y_train, x_val, y_val = splits
    tf_keras.utils.set_random_seed(train_cfg.seed)
    model = build_model(config.model, dataset.input_shape, dataset.num_classes)
    compile_for_training(model, make_optimizer(train_cfg, int(np.ceil(len(x_train) / train_cfg.batch_size))))
    started = time.perf_counter()
    model.fit(
        x_train, y_train, batch_size=train_cfg.batch_size, epochs=train_cfg.epochs, shuffle=True,
        validation_data=(x_val, y_val), verbose=0,
    )
    return len(x_train) * train_cfg.epochs / (time.perf_counter() - started)


def flow_run_throughputs(ctx: Context) -> list[float]:
    """`train_samples_per_s` of the baseline in each overhead repetition's flow run, read back from MLflow."""
    reps = ctx.shared.get("mnist_reps")
    if not reps:
        return []
    from mlflow.tracking import MlflowClient

    values = []
    for rep in reps:
        workspace = rep["flow"].argv[rep["flow"].argv.index("--workspace") + 1]
        client = MlflowClient(tracking_uri=f"sqlite:///{workspace}/mlflow.db")
        for experiment in client.search_experiments():
            runs = client.search_runs([experiment.experiment_id], "tags.variant = 'baseline' and tags.cache_hit = 'false'")
            values += [r.data.metrics["train_samples_per_s"] for r in runs if "train_samples_per_s" in r.data.metrics]
    return values


def render(result: dict[str, Any]) -> str:
    rows = [["A: `shrinkflow.core.training.train_baseline` (tf.data streamed from the prepared shards)",
             *_cells(result["train_baseline_samples_per_s"])],
            ["B: bare `model.fit` on in-memory arrays", *_cells(result["bare_fit_samples_per_s"])]]
    if "flow_runs_samples_per_s" in result:
        rows.append(["the real flow runs (metric `train_samples_per_s`, 10 epochs, early stopping)",
                     *_cells(result["flow_runs_samples_per_s"])])
    text = [
        f"Data: {result['data']}; {result['training']}; {result['repetitions']} repetitions, A and B interleaved in "
        "one process.", "",
        markdown_table(["training", "median samples/s", "min", "max"], rows),
        f"A / B = **{result['train_baseline_over_bare']}** (per repetition: {result['per_rep_share']}).",
    ]
    if "flow_runs_over_bare" in result:
        text[-1] += f" The real flow runs / B = {result['flow_runs_over_bare']}."
    return "\n".join(text) + "\n"


def _cells(values: dict[str, Any]) -> list[Any]:
    return [int(values["median"]), int(values["min"]), int(values["max"])]


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [["training throughput in the flow / bare `model.fit`", f">= {GOAL_SHARE}", result["train_baseline_over_bare"],
             yes_no(result["goals"]["throughput_at_least_0.95_of_bare_fit"]["met"])]]
