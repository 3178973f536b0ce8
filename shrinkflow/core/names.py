"""The one home of variant names, and of the two kinds every variant has: how it is quantized and what runs it.

baseline; student-1 (distilled), student-1-scratch (the same student from the labels alone); pruned, clustered
and pruned-clustered of the baseline, student-1-pruned and so on of a student; <source>-<mode> for a TFLite
file (pruned-int8); <source>-onnx for its ONNX twin (pruned-int8-onnx).
"""

from __future__ import annotations

from enum import StrEnum

BASELINE = "baseline"
PRUNED = "pruned"
CLUSTERED = "clustered"
ONNX = "onnx"
STUDENT = "student"
FROM_SCRATCH = "scratch"


class Quantization(StrEnum):
    """How a variant's weights (and, for int8 and QAT, activations) are stored."""

    NONE = "none"
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    QAT = "qat"


class Runtime(StrEnum):
    """What runs a variant's file: TensorFlow (.keras), LiteRT (.tflite) or ONNX Runtime (.onnx)."""

    TENSORFLOW = "tensorflow"
    TFLITE = "tflite"
    ONNXRUNTIME = "onnxruntime"

    @classmethod
    def of_file(cls, path: str) -> Runtime:
        return {".tflite": cls.TFLITE, ".onnx": cls.ONNXRUNTIME}.get(path[path.rfind("."):], cls.TENSORFLOW)


def student_name(number: int, from_scratch: bool = False) -> str:
    """student-1, ...; the same student trained without its teacher is student-1-scratch."""
    return f"{STUDENT}-{number}" + (f"-{FROM_SCRATCH}" if from_scratch else "")


def pruned_name(source: str) -> str:
    """"pruned" of the baseline, "student-1-pruned" of a student."""
    return _derived(source, PRUNED)


def clustered_name(source: str) -> str:
    """"clustered" of the baseline, "pruned-clustered" of the pruned baseline, "student-1-clustered" of a student."""
    return _derived(source, CLUSTERED)


def quantized_name(source: str, mode: Quantization) -> str:
    """"baseline-int8", "pruned-qat", ...: the source's name and the mode, the baseline's included."""
    return f"{source}-{mode}"


def onnx_name(source: str) -> str:
    return f"{source}-{ONNX}"


def _derived(source: str, step: str) -> str:
    return step if source == BASELINE else f"{source}-{step}"
