"""Compressing a trained Keras model into smaller variants: distillation, magnitude pruning, weight clustering,
TFLite conversion with post-training quantization, quantization-aware training, and ONNX conversion.

Plain functions over files. Each reads a model file without changing it and writes its result to a new file
atomically (a temporary file beside it, then a rename), so a failed step leaves nothing behind. TensorFlow and
tensorflow-model-optimization (tfmot) are imported inside the functions that use them, so importing this package
stays cheap.
"""

from shrinkflow.core.compression.clustering import cluster, clusters_that_fit, min_clusters
from shrinkflow.core.compression.distillation import distill
from shrinkflow.core.compression.onnx import OnnxConversionError, convert_to_onnx
from shrinkflow.core.compression.pruning import prune, pruning_schedule
from shrinkflow.core.compression.qat import quantization_aware_train
from shrinkflow.core.compression.tflite import convert_to_tflite, tflite_converter
from shrinkflow.core.compression.tuning import CompressionError, fine_tune

__all__ = [
    "CompressionError", "OnnxConversionError", "cluster", "clusters_that_fit", "convert_to_onnx", "convert_to_tflite",
    "distill", "fine_tune", "min_clusters", "prune", "pruning_schedule", "quantization_aware_train", "tflite_converter",
]
