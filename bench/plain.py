"""The same stages as `shrinkflow run`, as a hand-written script would call them: no Prefect, no MLflow.

    .venv/bin/python -m bench.plain CONFIG [--set key=value ...] --workspace DIR

Load and split the data, train the baseline, evaluate it, distill the students, prune and cluster
each model, quantize every source in every mode (QAT included), convert to ONNX, evaluate every
variant by running its file, select the variant to ship and write the export folder. It calls shrinkflow.core.stages, exactly what the flow's tasks call;
what it leaves out is the orchestration and tracking: the Prefect server and task states, the
cache keys, the MLflow runs, model registration, the champion gate and the comparison report. It is
side (a) of the orchestration-overhead benchmark (bench/overhead.py); side (b) is `shrinkflow run`.

Prints the variant table, then one JSON line `PLAIN_STAGE_SECONDS {...}` with each stage's time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from shrinkflow.core.comparison import compare_to_baseline, split_truth
from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.data import prepare_dataset
from shrinkflow.core.export import build_manifest, export_variants
from shrinkflow.core.names import BASELINE, clustered_name, onnx_name, pruned_name, quantized_name
from shrinkflow.core.runtime import configure_libraries
from shrinkflow.core.selection import select_variant
from shrinkflow.core.stages import (
    cluster_stage, converts_to_onnx, distill_stage, onnx_problem, onnx_stage, prune_problem, prune_stage,
    quantization_problem, quantize_stage, to_cluster, train_stage,
)
from shrinkflow.core.steps import Steps
from shrinkflow.core.summary import SummaryRow, format_table, summary_rows
from shrinkflow.core.variants import Variant

STAGE_MARKER = "PLAIN_STAGE_SECONDS"


def run_plain(config: PipelineConfig, workspace: Path) -> tuple[list[SummaryRow], dict[str, float]]:
    """Run every stage once; returns the summary rows and the seconds spent in each stage."""
    seconds: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    models = workspace / "models"
    steps = Steps.from_config(config)
    with stage("load"):
        dataset = prepare_dataset(config.data, workspace / "datasets")
    with stage("train"):
        baseline = train_stage(steps.train, dataset, models / BASELINE)
    students = []
    for distill_step in steps.students:
        with stage("distill"):
            students.append(distill_stage(distill_step, baseline, dataset, models / distill_step.variant))
    chain_starts = [baseline, *(s for s in students if s.parent == BASELINE)]
    compressed: list[Variant] = []
    for model in chain_starts:
        pruned = None
        if steps.prune is not None and not prune_problem(config.model):
            with stage("prune"):
                pruned = prune_stage(steps.prune, model, dataset, models / pruned_name(model.name))
            compressed.append(pruned)
        for source in to_cluster(steps.cluster_sources, model, pruned) if steps.cluster is not None else []:
            with stage("cluster"):
                compressed.append(cluster_stage(steps.cluster, source, dataset, models / clustered_name(source.name)))
    sources = [*chain_starts, *compressed]
    quantized = []
    for source in sources:
        for quantize_step in steps.quantize:
            if quantization_problem(quantize_step.mode, config.model):
                continue
            with stage(f"quantize-{quantize_step.mode}"):
                quantized.append(quantize_stage(
                    quantize_step, source, dataset, models / quantized_name(source.name, quantize_step.mode)
                ))
    converted = []
    for source in [*sources, *quantized]:
        if steps.onnx is not None and converts_to_onnx(steps.onnx_sources, source) and not onnx_problem(source, config.model):
            with stage("onnx"):
                converted.append(onnx_stage(steps.onnx, source, dataset, models / onnx_name(source.name)))
    variants: list[Variant] = [baseline, *students, *compressed, *quantized, *converted]
    with stage("compare"):  # every variant against the baseline, paired over the same rows, as the flow does
        truth = split_truth(dataset)
        judging = steps.judging
        variants = [
            replace(v, metrics=v.metrics | compare_to_baseline(v, baseline, dataset, truth, judging.metric, judging.confidence))
            for v in variants
        ]
    baseline = variants[0]
    selection = select_variant(
        {v.name: v.metrics for v in variants}, baseline.metrics, config.select, dataset.split_size("validation")
    )
    rows = summary_rows(variants, config.select.quality)
    if selection.selected is not None:
        selected = next(variant for variant in variants if variant.name == selection.selected)
        with stage("export"):
            export_selected(config, selected, variants, dataset, workspace)
        rows = [replace(row, selected=True) if row.variant == selected.name else row for row in rows]
    return rows, seconds


def export_selected(config: PipelineConfig, selected: Variant, variants: list[Variant], dataset, workspace: Path) -> Path:
    """The same export folder as the flow's export task: baseline SavedModel, every variant beside it."""
    manifest = build_manifest(config.name, "1", selected, variants, dataset, config.config_hash(), {})
    return export_variants(workspace / "exports" / config.name / "1", variants, config.export, manifest, dataset)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args(argv)
    configure_libraries()
    rows, seconds = run_plain(load_config(args.config, args.overrides), Path(args.workspace))
    print(format_table(rows))
    leaked = sorted(name for name in ("prefect", "mlflow") if name in sys.modules)
    if leaked:  # the comparison is only fair if side (a) never loads them
        print(f"bench.plain: {', '.join(leaked)} got imported", file=sys.stderr)
        return 1
    print(f"{STAGE_MARKER} {json.dumps({k: round(v, 3) for k, v in seconds.items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
