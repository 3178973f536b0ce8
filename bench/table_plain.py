"""The job of a large-table run as a plain script would do it, all in memory: no Prefect, no MLflow, no shards.

    .venv/bin/python -m bench.table_plain FOLDER CONFIG

Reads the Parquet folder with pyarrow, splits it (stratified, the config's fractions and seed), standardizes the
features with the training split's statistics, trains the config's MLP for its epochs (`model.fit` on the arrays,
validation each epoch), converts it to TFLite with dynamic-range quantization, and evaluates both on the test split
in batches. The reference of the large-table benchmark (bench/data.py): what `shrinkflow run` is compared with.
Prints `PLAIN_TABLE {json}` with the accuracies and seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from shrinkflow.core.config import load_config
from shrinkflow.core.runtime import configure_libraries

EVALUATION_BATCH = 1024


def main(folder: str, config_path: str) -> None:
    configure_libraries()
    import pyarrow.dataset as ds
    import tensorflow as tf
    import tf_keras
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.model_selection import train_test_split

    from shrinkflow.core.training import build_model, compile_for_training, make_optimizer

    started = time.perf_counter()
    config = load_config(config_path)
    files = sorted(str(path) for path in Path(folder).rglob("*.parquet"))
    table = ds.dataset(files, format="parquet").to_table()
    label = config.data.label_column
    y_all = table.column(label).to_numpy()
    x_all = np.column_stack([table.column(name).to_numpy() for name in table.column_names if name != label]).astype(np.float32)
    del table
    classes, y_all = np.unique(y_all, return_inverse=True)
    data = config.data
    rest, test = train_test_split(np.arange(len(y_all)), test_size=data.test_fraction, stratify=y_all, random_state=data.seed)
    train, val = train_test_split(rest, test_size=data.validation_fraction / (1 - data.test_fraction), stratify=y_all[rest],
                                  random_state=data.seed)
    mean, std = x_all[train].mean(axis=0), x_all[train].std(axis=0)
    std[std == 0] = 1
    x_train, x_val, x_test = ((x_all[rows] - mean) / std for rows in (train, val, test))
    y_train, y_val, y_test = y_all[train], y_all[val], y_all[test]
    del x_all
    read_s = time.perf_counter() - started

    tf_keras.utils.set_random_seed(config.train.seed)
    model = build_model(config.model, x_train.shape[1:], len(classes))
    steps = int(np.ceil(len(x_train) / config.train.batch_size))
    compile_for_training(model, make_optimizer(config.train, steps))
    model.fit(x_train, y_train, batch_size=config.train.batch_size, epochs=config.train.epochs, shuffle=True,
              validation_data=(x_val, y_val), verbose=0)
    fit_s = time.perf_counter() - started - read_s

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    content = converter.convert()
    keras_accuracy = float((model.predict(x_test, batch_size=EVALUATION_BATCH, verbose=0).argmax(1) == y_test).mean())
    interpreter = Interpreter(model_content=content)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    predicted = []
    for start in range(0, len(x_test), EVALUATION_BATCH):
        batch = x_test[start : start + EVALUATION_BATCH]
        interpreter.resize_tensor_input(input_index, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        predicted.append(interpreter.get_tensor(output_index).argmax(1))
    tflite_accuracy = float((np.concatenate(predicted) == y_test).mean())
    print("PLAIN_TABLE " + json.dumps({
        "keras_accuracy": keras_accuracy, "tflite_dynamic_accuracy": tflite_accuracy, "read_split_scale_s": read_s,
        "fit_s": fit_s, "total_s": time.perf_counter() - started,
    }), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
