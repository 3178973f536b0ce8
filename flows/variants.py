"""The stage part of the pipeline's DAG: which stage feeds which, from the data to the last ONNX twin.

    data -> baseline -> students (distilled from the baseline; from scratch beside them)
    each chain (the baseline, each distilled student) -> pruned -> clustered (of the model or of its pruned copy)
    every model of the chains -> one TFLite variant per quantization mode
    the variants onnx.convert names -> their ONNX twins

Each stage is a cached task of shrinkflow.tasks.stages called with its step (shrinkflow.core.steps), so the type
checker sees every argument. The `pipeline` flow and a sweep's trials both build their variants here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from prefect import get_run_logger

from shrinkflow.core.comparison import compare_to_baseline, split_truth
from shrinkflow.core.config import ModelConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.selection import resolution_warning
from shrinkflow.core.names import clustered_name, onnx_name, pruned_name, quantized_name
from shrinkflow.core.stages import converts_to_onnx, onnx_problem, prune_problem, quantization_problem, to_cluster
from shrinkflow.core.steps import Steps
from shrinkflow.core.variants import Failure, Variant
from shrinkflow.core.workspace import Workspace
from shrinkflow.tasks.stages import cluster, distill, load_data, prune, quantize, to_onnx, train

# What the caller does with each variant (or failure) as soon as it exists: the pipeline records it in MLflow
# and gets it back with its run id; a sweep's trial keeps it as it is.
OnBuilt = Callable[[Variant | Failure], Variant | Failure]


@dataclass(frozen=True)
class Built:
    """What the stages built: the dataset, the baseline, and every variant or failure in build order."""

    dataset: DatasetRef
    baseline: Variant
    built: list[Variant | Failure]

    @property
    def variants(self) -> list[Variant]:
        return [variant for variant in self.built if isinstance(variant, Variant)]


def build_variants(
    steps: Steps, model_cfg: ModelConfig, ws: Workspace,
    on_dataset: Callable[[DatasetRef], None] = lambda dataset: None, on_built: OnBuilt = lambda built: built,
) -> Built:
    """Run every stage the steps ask for, in the order above. A stage that fails leaves a Failure and the others go
    on; one that cannot apply to this model (`model_cfg`, the baseline's) is not run and leaves a "not applicable"
    Failure; training the baseline must succeed."""
    dataset = load_data(steps.data, ws)
    on_dataset(dataset)
    trained = train(steps.train, dataset, ws)
    truth = split_truth(dataset)
    judging = steps.judging

    def judged(variant: Variant) -> Variant:
        """The variant with its differences from the baseline, paired over the same rows (shrinkflow.core.comparison)."""
        compared = compare_to_baseline(variant, trained, dataset, truth, judging.metric, judging.confidence)
        return replace(variant, metrics=variant.metrics | compared)

    baseline = on_built(judged(trained))
    assert isinstance(baseline, Variant)  # the caller records a variant as a variant
    warning = resolution_warning(baseline.metrics, judging.metric, dataset.split_size("test"), judging.budget)
    if warning is not None:
        get_run_logger().warning(warning)
    built: list[Variant | Failure] = [baseline]

    def stage(name: str, build: Callable[[], Variant], not_applicable: str | None = None) -> Variant | None:
        """Build variant `name` (unless not applicable), compare it with the baseline, let the caller record what came
        of it; the variant or None."""
        result = attempt(name, build, not_applicable)
        result = on_built(judged(result) if isinstance(result, Variant) else result)
        built.append(result)
        return result if isinstance(result, Variant) else None

    students = [stage(step.variant, lambda: distill(step, baseline, dataset, ws)) for step in steps.students]
    # Each compression chain starts from the baseline or a distilled student (not one trained from scratch).
    chains = [baseline, *(s for s, step in zip(students, steps.students) if s is not None and not step.from_scratch)]
    compressed: list[Variant | None] = []
    for model in chains:
        pruned = None
        if (prune_step := steps.prune) is not None:
            pruned = stage(pruned_name(model.name), lambda: prune(prune_step, model, dataset, ws), prune_problem(model_cfg))
            compressed.append(pruned)
        if (cluster_step := steps.cluster) is not None:
            compressed += [
                stage(clustered_name(source.name), lambda: cluster(cluster_step, source, dataset, ws))
                for source in to_cluster(steps.cluster_sources, model, pruned)
            ]
    models = [*chains, *(variant for variant in compressed if variant is not None)]
    quantized = [
        stage(
            quantized_name(source.name, step.mode), lambda: quantize(step, source, dataset, ws),
            quantization_problem(step.mode, model_cfg),
        )
        for source in models
        for step in steps.quantize
    ]
    if (onnx_step := steps.onnx) is not None:
        for source in [*models, *(variant for variant in quantized if variant is not None)]:
            if converts_to_onnx(steps.onnx_sources, source):
                stage(onnx_name(source.name), lambda: to_onnx(onnx_step, source, dataset, ws), onnx_problem(source, model_cfg))
    return Built(dataset, baseline, built)


def attempt(name: str, build: Callable[[], Variant], not_applicable: str | None = None) -> Variant | Failure:
    """Build variant `name`; if the stage fails, the run goes on without it (a Failure says why).

    The task run stays Failed in Prefect (its traceback in the logs). With `not_applicable` (why the stage cannot
    apply to this model) the stage is not run at all. Interrupts (Ctrl-C, SIGTERM) are not failures: they go on up.
    """
    if not_applicable:
        get_run_logger().info("%s: not applicable: %s", name, not_applicable)
        return Failure(name, not_applicable, not_applicable=True)
    try:
        return build()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        get_run_logger().error("%s failed, the other variants go on: %s", name, reason)
        return Failure(name, reason)
