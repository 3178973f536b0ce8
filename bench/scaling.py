"""6. Scaling: how a full run's time and memory grow with the data size and with the number of variants.

Each point is one `shrinkflow run --no-cache` (MNIST CNN preset, temporary Prefect server, fresh
workspace), one repetition per point, except the full point (8,000 train+validation, all four
quantize modes: ten variants), which is the median of the overhead benchmark's repetitions.
Data size goes through `data.max_samples` (a stratified subsample before the 80 / 20 split), so
1,250 / 5,000 / 10,000 samples give 1,000 / 4,000 / 8,000 for training and validation.
"""

from __future__ import annotations

from typing import Any

from shrinkflow.core.tables import markdown_table
from bench.common import MNIST_CNN, MNIST_SOURCE, ChildRun, Context, child_env, flow_argv, median, run_child
from bench.overhead import cold_home, flow_phases, mnist_reps

NAME = "scaling"
ALL_MODES = ("dynamic", "float16", "int8", "qat")
DATA_POINTS = ((1000, 1250), (4000, 5000))  # (train + validation samples, data.max_samples)
MODE_POINTS = (("dynamic",), ("dynamic", "int8"))
LINEAR_TOLERANCE = 0.10  # every point within 10% of the least-squares line


def run(ctx: Context) -> dict[str, Any] | None:
    if ctx.smoke:
        return None
    reps = mnist_reps(ctx)
    full = _point_from_reps(reps)
    env = child_env(prefect_home=cold_home(ctx))
    data_points, mode_points = [], []
    for samples, max_samples in DATA_POINTS:
        work = ctx.fresh_dir(f"scaling/samples-{samples}")
        sets = [MNIST_SOURCE, f"data.max_samples={max_samples}"]
        data_points.append({"train_validation_samples": samples, "variants": 10,
                            **_point(run_child(f"{samples} samples", flow_argv(MNIST_CNN, sets, work / "ws"), work / "run.log", env))})
        print(f"  {samples} samples: {data_points[-1]['wall_s']} s", flush=True)
    data_points.append({"train_validation_samples": 8000, "variants": 10, **full})
    for modes in MODE_POINTS:
        work = ctx.fresh_dir(f"scaling/modes-{len(modes)}")
        sets = [MNIST_SOURCE, f"quantize.modes=[{','.join(modes)}]"]
        variants = 2 + 2 * len(modes)  # baseline, pruned, and each mode of each
        mode_points.append({"quantize_modes": list(modes), "variants": variants,
                            **_point(run_child(f"{variants} variants", flow_argv(MNIST_CNN, sets, work / "ws"), work / "run.log", env))})
        print(f"  {variants} variants: {mode_points[-1]['wall_s']} s", flush=True)
    mode_points.append({"quantize_modes": list(ALL_MODES), "variants": 10, **full})
    return {
        "data": "MNIST t10k, configs/mnist_cnn.yaml (10 epochs with early stopping, pruning 6 epochs, QAT 1 epoch)",
        "repetitions": "1 per point; the 8,000-sample, 10-variant point is the median of the overhead repetitions",
        "by_data_size": data_points,
        "by_data_size_fit": linear_fit([p["train_validation_samples"] for p in data_points], [p["wall_s"] for p in data_points]),
        "by_data_size_flow_body_fit": linear_fit(
            [p["train_validation_samples"] for p in data_points], [p["flow_body_s"] for p in data_points]),
        "by_variants": mode_points,
        "by_variants_fit": linear_fit([p["variants"] for p in mode_points], [p["wall_s"] for p in mode_points]),
    }


def _point(run: ChildRun) -> dict[str, Any]:
    phases = flow_phases(run)
    return {"wall_s": round(run.wall_s, 1), "flow_body_s": round(phases.get("flow", run.wall_s), 1),
            "peak_rss_mib": round(run.peak_rss_mib), "tree_peak_rss_mib": round(run.tree_peak_rss_mib)}


def _point_from_reps(reps: list[dict[str, ChildRun]]) -> dict[str, Any]:
    points = [_point(r["flow"]) for r in reps]
    return {key: round(median([p[key] for p in points]), 1) for key in points[0]}


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, Any]:
    """Least-squares line y = intercept + slope * x, and whether every point lies within 10% of it."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    intercept = mean_y - slope * mean_x
    deviation = max(abs(y - (intercept + slope * x)) / y for x, y in zip(xs, ys))
    return {"intercept": round(intercept, 1), "slope": round(slope, 4), "max_relative_deviation": round(deviation, 3),
            "linear": deviation <= LINEAR_TOLERANCE}


def render(result: dict[str, Any]) -> str:
    data_fit, body_fit, mode_fit = result["by_data_size_fit"], result["by_data_size_flow_body_fit"], result["by_variants_fit"]
    return "\n".join([
        f"Data: {result['data']}; {result['repetitions']}.", "",
        markdown_table(["train+validation samples", "variants", "wall s", "flow body s", "peak MiB (flow)", "peak MiB (tree)"],
                 [[f"{p['train_validation_samples']:,}", p["variants"], p["wall_s"], p["flow_body_s"], round(p["peak_rss_mib"]),
                   round(p["tree_peak_rss_mib"])] for p in result["by_data_size"]]),
        f"Time against samples: {data_fit['intercept']} s + {round(data_fit['slope'] * 1000, 1)} s per 1,000 samples, "
        f"every point within {round(data_fit['max_relative_deviation'] * 100, 1)}% of the line: "
        f"{'linear' if data_fit['linear'] else 'not linear'} (the flow body alone: {body_fit['intercept']} s + "
        f"{round(body_fit['slope'] * 1000, 1)} s per 1,000, within {round(body_fit['max_relative_deviation'] * 100, 1)}%).", "",
        markdown_table(["quantize modes", "variants", "wall s", "flow body s", "peak MiB (flow)", "peak MiB (tree)"],
                 [[", ".join(p["quantize_modes"]), p["variants"], p["wall_s"], p["flow_body_s"], round(p["peak_rss_mib"]),
                   round(p["tree_peak_rss_mib"])] for p in result["by_variants"]]),
        f"Time against variants: {mode_fit['intercept']} s + {round(mode_fit['slope'], 1)} s per variant, every point within "
        f"{round(mode_fit['max_relative_deviation'] * 100, 1)}% of the line: "
        f"{'linear' if mode_fit['linear'] else 'not linear'} (a QAT variant costs a training epoch, the others a "
        "conversion).", "",
    ])


def goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    data_fit, mode_fit = result["by_data_size_fit"], result["by_variants_fit"]
    return [
        ["time against data size (1k, 4k, 8k samples)", "(report: linear?)",
         f"{'linear' if data_fit['linear'] else 'not linear'}, {round(data_fit['slope'] * 1000, 1)} s per 1k samples + "
         f"{data_fit['intercept']} s", "n/a"],
        ["time against variants (4, 6, 10)", "(report: linear?)",
         f"{'linear' if mode_fit['linear'] else 'not linear'}, {round(mode_fit['slope'], 1)} s per variant + {mode_fit['intercept']} s",
         "n/a"],
    ]
