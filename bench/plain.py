"""The same stages as `shrinkflow run`, as a hand-written script would call them: no Prefect, no MLflow.

    .venv/bin/python -m bench.plain CONFIG [--set key=value ...] --workspace DIR

Load and split the data, train the baseline, evaluate it, prune, quantize every source in every
mode (QAT included), evaluate every variant by running its file, select the variant to ship and
write the export folder. It calls shrinkflow's plain functions, exactly what the flow's tasks call;
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

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shrinkflow.core.compression import (
    convert_to_tflite,
    keras_sparsity,
    prune,
    quantization_aware_train,
    tflite_sparsity,
)
from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.data import prepare_dataset
from shrinkflow.core.evaluation import Evaluation, evaluate_model_file
from shrinkflow.core.export import export_version
from shrinkflow.core.selection import select_variant
from shrinkflow.core.training import load_keras_model, train_baseline
from shrinkflow.core.variants import VariantRef, format_table, summary_row

STAGE_MARKER = "PLAIN_STAGE_SECONDS"


def run_plain(config: PipelineConfig, workspace: Path) -> tuple[list[dict], dict[str, float]]:
    """Run every stage once; returns the summary rows and the seconds spent in each stage."""
    seconds: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    models = workspace / "models"
    with stage("load"):
        dataset = prepare_dataset(config.data, workspace / "datasets")
    baseline_path = models / "baseline" / "model.keras"
    with stage("train"):
        train_baseline(dataset, config.model, config.train, baseline_path)
        baseline = VariantRef("baseline", str(baseline_path), "", sparsity=keras_sparsity(load_keras_model(baseline_path)))
    evaluations: dict[str, Evaluation] = {}

    def evaluate(ref: VariantRef) -> None:
        with stage("evaluate"):
            evaluations[ref.variant] = evaluate_model_file(ref.model_path, dataset, Path(ref.model_path).parent)

    evaluate(baseline)
    variants, sources = [baseline], [baseline]
    if config.prune.enabled:
        pruned_path = models / "pruned" / "model.keras"
        with stage("prune"):
            sparsity = prune(baseline_path, dataset, config.prune, config.train, pruned_path)
        pruned = VariantRef("pruned", str(pruned_path), "", parent_variant="baseline", sparsity=sparsity)
        evaluate(pruned)
        variants.append(pruned)
        sources.append(pruned)
    for source in sources:
        for mode in config.quantize.modes:
            name = f"{source.variant}-{mode}"
            out_path = models / name / "model.tflite"
            with stage("quantize"):
                if mode == "qat":
                    quantization_aware_train(
                        source.model_path, dataset, config.quantize, config.train, out_path,
                        preserve_sparsity=source.variant == "pruned",
                    )
                else:
                    convert_to_tflite(source.model_path, mode, dataset, config.quantize, out_path)
                ref = VariantRef(
                    name, str(out_path), "", parent_variant=source.variant, quantization=mode,
                    sparsity=tflite_sparsity(out_path),
                )
            evaluate(ref)
            variants.append(ref)

    baseline_metrics = evaluations["baseline"].metrics
    selection = select_variant(
        {ref.variant: evaluations[ref.variant].metrics for ref in variants}, baseline_metrics["accuracy"], config.select
    )
    rows = [summary_row(ref, evaluations[ref.variant].metrics, baseline_metrics) for ref in variants]
    if selection.selected is not None:
        with stage("export"):
            export_selected(config, selection.selected, variants, evaluations, workspace)
        rows = [replace(row, selected=True) if row.variant == selection.selected else row for row in rows]
    return rows, seconds


def export_selected(
    config: PipelineConfig, selected: str, variants: list[VariantRef], evaluations: dict[str, Evaluation], workspace: Path
) -> Path:
    """The same export folder layout as the flow's export task: baseline SavedModel, every variant beside it."""
    baseline, *others = variants
    files = {ref.variant: f"variants/{ref.variant}{'.tflite' if ref.is_tflite else '.keras'}" for ref in others}
    manifest = {
        "name": config.name,
        "selected_variant": selected,
        "config_hash": config.config_hash(),
        "variants": {ref.variant: evaluations[ref.variant].metrics for ref in variants},
    }
    pruned = next((ref for ref in others if ref.variant == "pruned"), None)
    return export_version(
        workspace / "exports" / config.name / "1", baseline.model_path, config.export, manifest,
        {files[ref.variant]: ref.model_path for ref in others},
        extra_saved_models={"variants/pruned": pruned.model_path} if pruned and config.export.saved_model else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args(argv)
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
