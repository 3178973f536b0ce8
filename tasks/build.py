"""The stage part of the pipeline, one function for every caller: the `pipeline` flow and a sweep's trials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.stages import converts_to_onnx, onnx_problem, prune_problem, quantization_problem, to_cluster
from shrinkflow.core.variants import BASELINE, CLUSTERED, PRUNED, Failure, Variant, derived_name, student_name
from shrinkflow.core.workspace import Workspace
from tasks.stages import attempt, cluster, distill, load_data, prune, quantize, to_onnx, train


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
    config: PipelineConfig,
    ws: Workspace,
    on_dataset: Callable[[DatasetRef], None] = lambda dataset: None,
    on_built: Callable[[Variant | Failure], Variant | Failure] = lambda built: built,
) -> Built:
    """load -> train -> distill -> prune -> cluster -> quantize -> ONNX, each a cached task of tasks/stages.py.

    `on_dataset` and `on_built` see the dataset and each variant (or failure) as soon as it exists, and may
    return the variant with more on it: the pipeline records each in its MLflow run; a sweep's trial does not.
    A stage that fails leaves a Failure and the others go on; one that cannot apply to this model family is not
    run and leaves a "not applicable" Failure (core.stages: prune_problem, ...); training the baseline must succeed.
    """
    dataset = load_data(config.data, ws)
    on_dataset(dataset)
    baseline = on_built(train(dataset, config.model, config.train, ws))
    assert isinstance(baseline, Variant)
    students: list[Variant | Failure] = [
        on_built(attempt(
            student_name(number, scratch), distill, number, baseline, dataset, student.model(config.model),
            config.distill.for_student(scratch), config.train, scratch, ws,
        ))
        for number, student in enumerate(config.distill.students, start=1)
        for scratch in ((False, True) if config.distill.from_scratch else (False,))
    ]
    # Each compression chain starts from the baseline or a distilled student (not a scratch one).
    models = [baseline, *(s for s in students if isinstance(s, Variant) and s.parent == BASELINE)]
    compressed: list[Variant | Failure] = []
    for model in models:
        pruned = None
        if config.prune.enabled:
            pruned = on_built(attempt(
                derived_name(model.name, PRUNED), prune, model, dataset, config.prune, config.train, ws,
                not_applicable=prune_problem(config.model),
            ))
            compressed.append(pruned)
        compressed += [
            on_built(attempt(derived_name(source.name, CLUSTERED), cluster, source, dataset, config.cluster, config.train, ws))
            for source in to_cluster(config.cluster, model, pruned)
        ]
    quantized = [
        on_built(attempt(
            f"{source.name}-{mode}", quantize, source, config.quantize.for_mode(mode), dataset, config.train, ws,
            not_applicable=quantization_problem(mode, config.model),
        ))
        for source in [*models, *compressed]
        if isinstance(source, Variant)
        for mode in config.quantize.modes
    ]
    converted = [
        on_built(attempt(
            f"{source.name}-onnx", to_onnx, source, config.onnx, dataset, ws, not_applicable=onnx_problem(source, config.model)
        ))
        for source in [*models, *compressed, *quantized]
        if isinstance(source, Variant) and converts_to_onnx(config.onnx, source)
    ]
    return Built(dataset, baseline, [baseline, *students, *compressed, *quantized, *converted])
