"""The data section: where the data comes from and how it is read, split and scaled."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from shrinkflow.core.config.base import Section, Task

# data.source of an image folder: images:DIR, one subfolder per class.
IMAGE_FOLDER_PREFIX = "images:"


class DataConfig(Section):
    """Where the data comes from and how it is split and scaled."""

    model_config = ConfigDict(title="Data")

    source: str = Field(
        "sklearn:digits",
        title="Data source",
        description=(
            "sklearn:digits, sklearn:diabetes (regression), keras:mnist, keras:fashion_mnist, keras:cifar10, "
            "keras:cifar100 (the Keras download cache), idx:DIR (MNIST-format IDX files), images:DIR (one subfolder "
            "of images per class), or a .csv or .parquet file, or a folder of them (read as one table)."
        ),
    )
    task: Task = Field(
        "classification", title="Task",
        description="classification: predict a class (the label column); regression: predict one or several numbers.",
    )
    label_column: str = Field(
        "label", title="Label column", description="Label column of a CSV or Parquet file (regression: the target, unless target columns are given)."
    )
    target_columns: tuple[str, ...] = Field(
        (), title="Target columns", description="regression: the numeric columns to predict; empty means the label column alone."
    )
    text_column: str | None = Field(
        None, title="Text column", description="A CSV or Parquet column of raw text to classify (model.family: text); other feature columns are ignored."
    )
    vocabulary_size: int = Field(
        5000, ge=10, le=1_000_000, title="Vocabulary size", description="text: most frequent tokens kept by the vocabulary fitted on the training split."
    )
    sequence_length: int = Field(
        32, ge=1, le=10_000, title="Tokens per text", description="text: each text is cut or padded to this many tokens."
    )
    sequence_shape: tuple[int, int] | None = Field(
        None, title="Sequence shape",
        description="Read each sample's values as [timesteps, features] for a recurrent model, e.g. [28, 28]: MNIST rows as 28 steps of 28 pixels.",
    )
    series_column: str | None = Field(
        None, title="Series column",
        description="A time series: this numeric column of a CSV or Parquet file, in time order, cut into windows (regression).",
    )
    window: int | None = Field(None, ge=1, title="Window", description="series: past values each sample sees.")
    horizon: int = Field(1, ge=1, title="Horizon", description="series: predict the value this many steps after the window's end.")
    image_shape: tuple[int, ...] | None = Field(
        None,
        title="Image shape",
        description="Reshape a table's pixel columns to this image shape, e.g. [28, 28] or [8, 8, 1].",
    )
    image_size: tuple[int, int] | None = Field(
        None, title="Image size",
        description=(
            "images:DIR: resize every image to [height, width] (bilinear); may be left out when all images have "
            "one size."
        ),
    )
    color_mode: Literal["grayscale", "rgb"] | None = Field(
        None, title="Colour mode",
        description="images:DIR: decode to 1 channel (grayscale) or 3 (rgb); left out: rgb, as Keras does.",
    )
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, title="Validation share", description="Share held out for validation.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, title="Test share", description="Share held out for the final test.")
    max_samples: int | None = Field(
        None, ge=10, title="Most samples", description="Use at most this many samples (a stratified subsample), for quick runs."
    )
    scaling: Literal["minmax", "standard", "none"] = Field(
        "minmax",
        title="Feature scaling",
        description=(
            "minmax: one range fitted on the training split (pixels); standard: per-feature mean and "
            "standard deviation fitted on the training split (tabular); none: as read."
        ),
    )
    seed: int = Field(42, title="Split seed", description="Seed of the stratified split and subsample.")

    @model_validator(mode="after")
    def _check_shape(self) -> DataConfig:
        if self.image_shape is not None and (
            not 2 <= len(self.image_shape) <= 3 or min(self.image_shape) < 1
        ):
            raise ValueError("image_shape must be [height, width] or [height, width, channels] of positive sizes")
        if self.image_size is not None and min(self.image_size) < 1:
            raise ValueError("image_size must be [height, width] of positive sizes")
        if not self.source.startswith(IMAGE_FOLDER_PREFIX):
            given = [name for name in ("image_size", "color_mode") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} apply to images:DIR sources only (data.source: images:DIR)")
        if self.sequence_shape is not None and min(self.sequence_shape) < 1:
            raise ValueError("sequence_shape must be [timesteps, features] of positive sizes")
        shapes = [name for name in ("image_shape", "sequence_shape", "text_column", "series_column") if getattr(self, name) is not None]
        if len(shapes) > 1:
            raise ValueError(f"{' and '.join(shapes)} exclude each other: give one way to read the samples")
        if (self.series_column is None) != (self.window is None):
            raise ValueError("series_column and window go together: name the series column and the window length")
        if self.series_column is not None and self.task != "regression":
            raise ValueError("a series (series_column) predicts future values: set task: regression")
        if self.target_columns and self.task != "regression":
            raise ValueError("target_columns are for task: regression; a classification predicts the label column")
        return self

    @property
    def channels(self) -> int:
        """images:DIR: colour channels of a decoded image."""
        return 1 if self.color_mode == "grayscale" else 3

    def targets(self) -> tuple[str, ...]:
        """regression: the columns to predict."""
        return self.target_columns or (self.label_column,)
