"""Image folders (images:DIR) as keras.utils.image_dataset_from_directory reads them: one subfolder per class, the
folder's name the class's name, classes in sorted order, image files (.png, .jpg, .jpeg, .bmp, .gif; the first
frame of a GIF) anywhere below it in sorted order, decoded with tf.io.decode_image to 1 (grayscale) or 3 (rgb,
the default) channels and resized bilinearly to data.image_size. Decoding and resizing run in a parallel tf.data
pipeline; the pixels are kept as 8-bit values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data.source import Source
from shrinkflow.core.errors import DataError

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Images decoded per chunk handed to the prepared dataset's writer.
DECODE_BATCH = 256


def image_files(root: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Every image file in class order, each one's class index, and the class names (the folders' names)."""
    if not root.is_dir():
        raise DataError(f"images:{root}: folder not found")
    folders = sorted(folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    if len(folders) < 2:
        raise DataError(
            f"images:{root}: {len(folders)} class subfolder(s); put each class's images in a subfolder named after the "
            "class (at least 2)"
        )
    files: list[Path] = []
    labels = []
    for index, folder in enumerate(folders):
        images = sorted(
            path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise DataError(
                f"{folder}: an empty class folder (no {', '.join(IMAGE_SUFFIXES)} files); add its images or remove it"
            )
        files.extend(images)
        labels.append(np.full(len(images), index, dtype=np.int64))
    return files, np.concatenate(labels), tuple(folder.name for folder in folders)


def decode_image(contents: Any, channels: int, size: Sequence[int] | None) -> Any:
    """One encoded image (a scalar tf.string) as uint8 pixels [height, width, channels], resized bilinearly to `size`
    [height, width] and rounded back to 8 bits when a size is given. The preparation and the exported model's
    image-bytes signature both decode with this, so a served image becomes the same pixels as a trained one."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    if size is None:
        return image
    resized = tf.image.resize(image, list(size), method="bilinear")
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def image_folder_source(root: Path, cfg: DataConfig) -> Source:
    """The folder's images (decoded in chunks) and class indices."""
    files, labels, class_names = image_files(root)
    channels = cfg.channels
    size = cfg.image_size or first_image_size(files[0], channels)

    def chunks() -> Iterator[np.ndarray]:
        import tensorflow as tf

        def load(path: Any) -> Any:
            image = decode_image(tf.io.read_file(path), channels, cfg.image_size)
            if cfg.image_size is None:  # every image must have the first one's size
                tf.debugging.assert_equal(tf.shape(image)[:2], tf.constant(size), message="image size differs")
            return tf.ensure_shape(image, [*size, channels])

        pipeline = (
            tf.data.Dataset.from_tensor_slices([str(path) for path in files])
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(DECODE_BATCH)
            .prefetch(1)
        )
        done = 0
        iterator = iter(pipeline)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError:
                raise first_bad_image(files[done:], channels, cfg.image_size, size, files[0]) from None
            done += len(batch)
            yield batch.numpy()

    return Source(
        labels, (*size, channels), np.dtype(np.uint8), chunks, label_field="the class folders", class_names=class_names,
        encoded_images=True,
    )


def first_image_size(path: Path, channels: int) -> tuple[int, int]:
    """The first image's [height, width]: every image's size when data.image_size is left out."""
    shape = decoded_shape(path, channels)
    return shape[0], shape[1]


def decoded_shape(path: Path, channels: int) -> tuple[int, ...]:
    """The shape of one decoded image, or a DataError naming the file that cannot be decoded."""
    import tensorflow as tf

    try:
        return tuple(int(size) for size in decode_image(tf.io.read_file(str(path)), channels, None).shape)
    except tf.errors.OpError as exc:
        reason = (exc.message or type(exc).__name__).strip().splitlines()[0]
        raise DataError(
            f"{path}: cannot be decoded as an image ({reason}); an image folder holds PNG, JPEG, BMP or GIF files: "
            "replace or remove it"
        ) from None


def first_bad_image(
    files: Sequence[Path], channels: int, image_size: Sequence[int] | None, size: Sequence[int], first: Path
) -> DataError:
    """Which of `files` (in order) the pipeline failed on, found one file at a time: its DataError (a file that
    cannot be decoded raises its own)."""
    for path in files:
        shape = decoded_shape(path, channels)
        if image_size is None and list(shape[:2]) != list(size):
            return DataError(
                f"{path}: {shape[0]} x {shape[1]} pixels, but {first.name} (the first image) has {size[0]} x {size[1]}; "
                f"set data.image_size: [{size[0]}, {size[1]}] to resize every image to one size"
            )
    return DataError(f"{files[0].parent}: the images could not be read (no single file found at fault)")
