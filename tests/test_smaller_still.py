"""Distillation, weight clustering, the prune -> cluster -> PCQAT chain, ONNX Runtime and param_bits, on
tiny real data (scikit-learn digits); and the flow with every new stage, its cache keys and its registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from shrinkflow.core import stages
from shrinkflow.core.config import DataConfig, ModelConfig, TrainConfig
from shrinkflow.core.data import DatasetRef, prepare_dataset
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.kernels import kernel_stats, weight_stats
from shrinkflow.core.kernels.tflite import tflite_sparsity
from shrinkflow.core.names import Quantization
from shrinkflow.core.steps import ClusterStep, DistillStep, FineTuning, OnnxStep, PruneStep, QuantizeStep, TrainStep
from shrinkflow.core.variants import Variant
from shrinkflow.core.workspace import Workspace
from tests.conftest import REPO, tiny_digits_config

# 280 training samples in full batches of 28 (as tests/test_compression.py): one trace per function.
TRAIN = TrainConfig(epochs=4, batch_size=28, learning_rate=0.02, early_stopping_patience=None)
TEACHER = ModelConfig(conv_filters=(16,), hidden_units=(32,))
STUDENT = ModelConfig(conv_filters=(4,), hidden_units=(8,))


def tuning(epochs: int, learning_rate: float) -> FineTuning:
    return FineTuning(epochs, learning_rate, TRAIN.batch_size, TRAIN.seed, "crossentropy")


TEMPERATURE = 4.0
DISTILLED = DistillStep(1, False, STUDENT, tuning(6, 0.02), temperature=TEMPERATURE, alpha=0.7)
FROM_SCRATCH = DistillStep(1, True, STUDENT, tuning(6, 0.02))
CLUSTERS = 4
CLUSTER = ClusterStep(CLUSTERS, per_channel=False, tuning=tuning(1, 1e-3))
PRUNE = PruneStep(0.6, "polynomial", tuning(2, 3e-3))
QAT = QuantizeStep(Quantization.QAT, tuning=tuning(1, 1e-4))
INT8 = QuantizeStep(Quantization.INT8, representative_samples=100)
CHANCE = 0.1


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    return prepare_dataset(DataConfig(max_samples=400), tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def teacher(digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory) -> Variant:
    return stages.train_stage(TrainStep(TEACHER, TRAIN), digits, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def students(teacher: Variant, digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory) -> tuple[Variant, Variant]:
    """The student distilled from the teacher, and the same student trained from the labels alone."""
    return tuple(  # type: ignore[return-value]
        stages.distill_stage(step, teacher, digits, tmp_path_factory.mktemp("student")) for step in (DISTILLED, FROM_SCRATCH)
    )


@pytest.fixture(scope="module")
def chain(teacher: Variant, digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    """The collaborative chain on the teacher: pruned, then sparsity-preserving clustering, then PCQAT."""
    pruned = stages.prune_stage(PRUNE, teacher, digits, tmp_path_factory.mktemp("pruned"))
    clustered = stages.cluster_stage(CLUSTER, pruned, digits, tmp_path_factory.mktemp("clustered"))
    pcqat = stages.quantize_stage(QAT, clustered, digits, tmp_path_factory.mktemp("pcqat"))
    return {"pruned": pruned, "clustered": clustered, "pcqat": pcqat}


# --- distillation --------------------------------------------------------------------------------


def test_a_student_is_smaller_than_its_teacher_and_learns(teacher: Variant, students: tuple[Variant, Variant]) -> None:
    distilled, scratch = students
    assert (distilled.name, distilled.parent, scratch.name, scratch.parent) == ("student-1", "baseline", "student-1-scratch", None)
    for student in students:
        assert student.metrics["param_bits"] < teacher.metrics["param_bits"] / 4
        assert student.metrics["gzip_size_bytes"] < teacher.metrics["gzip_size_bytes"] / 2
        assert student.metrics["accuracy"] > 3 * CHANCE  # it learned
    settings = distilled.lineage()["step"]
    assert (settings["conv_filters"], settings["hidden_units"]) == ([4], [8])
    assert settings["temperature"] == TEMPERATURE and "temperature" not in scratch.lineage()["step"]


# --- clustering and the chain ----------------------------------------------------------------------


def test_a_clustered_kernel_has_at_most_k_values_in_the_tflite_file(
    teacher: Variant, digits: DatasetRef, tmp_path: Path
) -> None:
    clustered = stages.cluster_stage(CLUSTER, teacher, digits, tmp_path / "clustered")
    float32 = tmp_path / "float32.tflite"
    from shrinkflow.core.compression import convert_to_tflite

    convert_to_tflite(clustered.model_path, QuantizeStep(Quantization.NONE), digits, float32)
    for path in (clustered.model_path, float32):
        kernels = weight_stats(path).kernels
        assert len(kernels) == 3 and all(kernel.unique <= CLUSTERS for kernel in kernels), kernels
    assert weight_stats(teacher.model_path).max_unique > 100  # what it was before
    assert clustered.clusters == CLUSTERS and clustered.metrics["max_unique_weights"] <= CLUSTERS
    assert clustered.metrics["param_bits"] < teacher.metrics["param_bits"] / 8  # 2-bit indices instead of 32-bit floats
    assert clustered.metrics["accuracy"] > 3 * CHANCE


def test_pcqat_keeps_the_sparsity_and_the_clusters(chain: dict[str, Variant]) -> None:
    pruned, clustered, pcqat = chain["pruned"], chain["clustered"], chain["pcqat"]
    assert clustered.lineage()["step"]["preserve_sparsity"] is True
    assert pcqat.lineage()["step"]["preserve_clusters"] is True and pcqat.lineage()["step"]["preserve_sparsity"] is True
    # Preserving keeps the pruned zeros; a cluster or int8 rounding can add a few more, never many.
    for sparsity in (clustered.sparsity, tflite_sparsity(pcqat.model_path)):
        assert pruned.sparsity - 0.02 <= sparsity <= pruned.sparsity + 0.05, (sparsity, pruned.sparsity)
    # int8 per output channel: each channel keeps at most k distinct non-zero values.
    assert all(kernel.unique_per_channel <= CLUSTERS for kernel in weight_stats(pcqat.model_path).kernels)
    assert pcqat.metrics["param_bits"] < pruned.metrics["param_bits"] / 8
    assert pcqat.metrics["accuracy"] > 3 * CHANCE


# --- ONNX Runtime --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_and_onnx(teacher: Variant, digits: DatasetRef, tmp_path_factory: pytest.TempPathFactory) -> tuple[Variant, Variant]:
    """The teacher's int8 TFLite variant and its ONNX twin."""
    int8 = stages.quantize_stage(INT8, teacher, digits, tmp_path_factory.mktemp("int8"))
    return int8, stages.onnx_stage(OnnxStep(15), int8, digits, tmp_path_factory.mktemp("int8-onnx"))


@pytest.mark.parametrize("source", ["keras", "int8", "pcqat"])
def test_onnx_matches_the_accuracy_of_its_source(
    source: str, teacher: Variant, chain: dict[str, Variant], int8_and_onnx: tuple[Variant, Variant], digits: DatasetRef,
    tmp_path: Path,
) -> None:
    if source == "int8":
        original, onnx = int8_and_onnx
    else:
        original = teacher if source == "keras" else chain["pcqat"]
        onnx = stages.onnx_stage(OnnxStep(15), original, digits, tmp_path / "onnx")
    assert onnx.runtime == "onnxruntime" and onnx.name == f"{original.name}-onnx"
    assert onnx.metrics["accuracy"] == pytest.approx(original.metrics["accuracy"], abs=0.01)
    # The same weights: int8 stays int8 (QDQ), and the same kernels count the same.
    assert onnx.metrics["param_bits"] == original.metrics["param_bits"]
    assert onnx.lineage()["step"]["route"] == ("saved_model" if source == "keras" else "tflite")


def test_int8_onnx_runs_every_layer_with_integer_kernels(int8_and_onnx: tuple[Variant, Variant], digits: DatasetRef, tmp_path: Path) -> None:
    """tf2onnx leaves a Reshape or Transpose between some QuantizeLinear / DequantizeLinear pairs, which keeps
    onnxruntime from fusing those layers; the written file has them moved, and answers as tf2onnx's does."""
    import onnx
    import onnxruntime

    from shrinkflow.core.compression.onnx import convert_tflite
    from tests.datasets import load_splits
    from shrinkflow.core.predictors import onnx_session_options

    int8, written = int8_and_onnx
    as_converted = tmp_path / "tf2onnx.onnx"
    convert_tflite(int8.model_path, 15, as_converted)
    kernels = {}
    for name, path in (("tf2onnx", as_converted), ("written", Path(written.model_path))):
        options = onnx_session_options()
        options.optimized_model_filepath = str(tmp_path / f"{name}-optimized.onnx")
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        kernels[name] = {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}
    assert kernels["tf2onnx"] & {"Conv", "Gemm", "MatMul"}  # what the rewrite is for: float layers left
    assert not kernels["written"] & {"Conv", "Gemm", "MatMul"} and {"QLinearConv", "QGemm"} <= kernels["written"]
    # The same answers as tf2onnx's graph on real rows, its operators run as ONNX defines them.
    reference = onnxruntime.SessionOptions()
    reference.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [onnxruntime.InferenceSession(str(path), reference, providers=["CPUExecutionProvider"]) for path in (as_converted, written.model_path)]
    batch = {sessions[0].get_inputs()[0].name: load_splits(digits).x_test[:64]}
    assert np.array_equal(sessions[0].run(None, batch)[0], sessions[1].run(None, batch)[0])


@pytest.mark.parametrize("per_channel", [False, True])
def test_only_a_quantize_with_one_scale_moves_after_a_transpose(per_channel: bool) -> None:
    """Quantizing with one scale commutes with a Transpose; with a scale per channel it does not (the axis moves)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from shrinkflow.core.compression.onnx import quantize_after_layout_ops

    scale = np.array([0.02, 0.05, 0.1], np.float32) if per_channel else np.array(0.05, np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=1),
        helper.make_node("Transpose", ["q"], ["t"], perm=[0, 2, 1]),
        helper.make_node("DequantizeLinear", ["t", "scale", "zero"], ["y"], axis=2),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 3])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(np.zeros(scale.shape, np.int8), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    x = {"x": np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)}
    before = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert quantize_after_layout_ops(model) == (0 if per_channel else 1)
    assert [node.op_type for node in model.graph.node][:2] == (["QuantizeLinear", "Transpose"] if per_channel else ["Transpose", "QuantizeLinear"])
    after = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.array_equal(before, after)


def test_onnx_of_an_integer_input_model_is_not_applicable(teacher: Variant, digits: DatasetRef, tmp_path: Path) -> None:
    int8_io = QuantizeStep(Quantization.INT8, representative_samples=50, int8_io=True)
    source = stages.quantize_stage(int8_io, teacher, digits, tmp_path / "int8-io")
    assert (stages.onnx_problem(source, TEACHER) or "").startswith("integer input and output")
    assert stages.onnx_problem(teacher, TEACHER) is None


# --- param_bits ----------------------------------------------------------------------------------


def test_param_bits_take_the_cheapest_encoding_of_the_non_zero_weights() -> None:
    dense = np.arange(1, 101, dtype=np.float32).reshape(10, 10)  # 100 distinct values: plain 32-bit floats
    assert kernel_stats("dense", dense, 32).param_bits == 100 * 32
    clustered = np.tile(np.array([0, 0, 1.5, -2, 3, 4], np.float32), 10)  # 40 non-zeros, 4 values
    stats = kernel_stats("clustered", clustered, 32)
    assert (stats.weights, stats.nonzero, stats.unique) == (60, 40, 4)
    assert stats.param_bits == 40 * 2 + 4 * 32  # 2-bit indices and a codebook of four floats
    per_channel = np.stack([np.full(8, value, np.int8) for value in range(1, 9)], axis=0)  # 8 channels, 1 value each
    stats = kernel_stats("per-channel", per_channel, 8, channel_axis=0)
    assert stats.unique == 8 and stats.unique_per_channel == 1
    assert stats.param_bits == 64 * 1 + 8 * 8  # per channel beats one codebook of 8 (64 * 3 + 64)


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["distill.students=[{conv_filters: [32, 64], hidden_units: [128]}]"], "distill.students.0 (student-1): not smaller than its teacher"),
        (["distill.students=[{width: 1.5}]"], "distill.students.0.width"),
        (["distill.students=[{conv_filters: [4]}]"], "conv_filters needs 2 entries"),
        (["cluster.clusters=1"], "cluster.clusters"),
        (["cluster.clusters=2"], "sparsity-preserving clustering of pruned models .apply_to: pruned. needs at least 3"),
        (["onnx.opset=19"], "onnx.opset"),
    ],
)
def test_bad_settings_of_the_new_stages_are_named(sets: list[str], expected: str) -> None:
    from shrinkflow.core.config import load_config

    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(REPO / "configs" / "digits_cnn.yaml", sets)


# --- the flow ------------------------------------------------------------------------------------

# The prune -> cluster -> PCQAT chain is tested on its own above; here clustering applies to the models
# directly (no pruning), which keeps the flow's variant count, and its time, down.
NEW_STAGES = {
    "model.conv_filters": "[8]", "model.hidden_units": "[16]", "prune.enabled": "false", "quantize.modes": "[qat]",
    "quantize.qat_epochs": 1, "distill.students": "[{width: 0.5}]", "distill.epochs": 2, "cluster.enabled": "true",
    "cluster.apply_to": "[unpruned]", "cluster.epochs": 1, "onnx.enabled": "true", "onnx.convert": "[qat]",
}


@pytest.fixture(scope="module")
def flow_runs(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    """Two runs in one workspace: every new stage, then the same with a second student added."""
    from shrinkflow.flows.pipeline import pipeline

    workspace = tmp_path_factory.mktemp("smaller") / "workspace"
    first = pipeline(tiny_digits_config(**NEW_STAGES), workspace=str(workspace))
    second = pipeline(
        tiny_digits_config(**{**NEW_STAGES, "distill.students": "[{width: 0.5}, {width: 0.25}]"}), workspace=str(workspace)
    )
    return workspace, first, second


def test_the_flow_builds_every_new_variant(flow_runs) -> None:
    _, rows, _ = flow_runs
    names = {row.variant for row in rows}
    assert names == {
        "baseline", "student-1", "student-1-scratch", "clustered", "student-1-clustered",
        *(f"{source}-qat{onnx}" for source in ("baseline", "student-1", "clustered", "student-1-clustered") for onnx in ("", "-onnx")),
    }
    assert not any(name.startswith("student-1-scratch-") for name in names)  # the comparison only
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]
    assert all(row.param_bits_ratio and row.param_bits_ratio > 0 for row in rows)


def test_mlflow_compares_the_new_variants_by_params(flow_runs) -> None:
    workspace, _, _ = flow_runs
    ws = Workspace(workspace)
    client = MlflowClient(tracking_uri=ws.tracking_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "digits_cnn"]
    children = {
        run.data.tags["variant"]: run for run in client.search_runs([experiment.experiment_id], "tags.variant != ''")
    }
    onnx = children["clustered-qat-onnx"].data
    assert onnx.params["runtime"] == "onnxruntime" and onnx.params["clusters"] == "16"  # cluster.clusters' default
    assert onnx.params["step.opset"] == "15" and onnx.metrics["param_bits"] > 0
    student = children["student-1"].data
    assert student.params["parent_variant"] == "baseline" and student.params["step.temperature"] == "4"


def test_adding_a_student_retrains_neither_the_teacher_nor_the_first_student(flow_runs) -> None:
    workspace, first, second = flow_runs
    client = MlflowClient(tracking_uri=Workspace(workspace).tracking_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "digits_cnn"]
    latest = client.search_runs([experiment.experiment_id], "tags.variant != ''", order_by=["start_time DESC"])
    hits = {}
    for run in latest:  # the newest child run of each variant: the second pipeline run's
        hits.setdefault(run.data.tags["variant"], run.data.tags.get("cache_hit", "failed or not applicable"))
    assert hits["baseline"] == hits["student-1"] == hits["student-1-clustered-qat-onnx"] == "true"
    assert hits["student-2"] == "false"
    assert {row.variant for row in second} - {row.variant for row in first} >= {"student-2", "student-2-clustered-qat-onnx"}


def test_an_onnx_variant_registers_as_a_served_model_and_predicts(
    chain: dict[str, Variant], digits: DatasetRef, tmp_path: Path
) -> None:
    from tests.datasets import load_splits
    from shrinkflow.tracking import models, registry
    from shrinkflow.tracking.runs import TrackingRef

    onnx = stages.onnx_stage(OnnxStep(15), chain["pcqat"], digits, tmp_path / "onnx")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("onnx", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    version = models.log_and_register_model(
        TrackingRef(uri, experiment_id, run_id), run_id, onnx.model_path, onnx.runtime, digits, "digits_onnx", {"variant": onnx.name}
    )
    import mlflow

    from shrinkflow.tracking.store import fluent_mlflow

    with fluent_mlflow(uri):
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/digits_onnx/{version.version}", dst_path=str(tmp_path / "dl")))
    assert "onnxruntime==" in (model_dir / "requirements.txt").read_text()
    assert (model_dir / "artifacts" / Path(onnx.model_path).name).stat().st_size > 0
    splits = load_splits(digits)
    probabilities = registry.predict_with_version(uri, "digits_onnx", version.version, digits, splits.x_test)
    assert (probabilities.argmax(axis=1) == splits.y_test).mean() == pytest.approx(onnx.metrics["accuracy"], abs=1e-9)
