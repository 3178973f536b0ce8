"""The model section, and the students distillation derives from it."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from shrinkflow.core.config.base import Section


class ModelConfig(Section):
    """The Keras model to build."""

    model_config = ConfigDict(title="Model")

    family: Literal["mlp", "cnn", "rnn", "text"] = Field(
        "cnn", title="Model family",
        description=(
            "mlp: dense layers; cnn: conv blocks then dense layers (images); rnn: recurrent layers then dense "
            "layers (sequences); text: a token embedding, recurrent or 1-D conv layers, then dense layers."
        ),
    )
    conv_filters: tuple[int, ...] = Field(
        (32, 64), title="Conv filters",
        description="cnn: filters of each conv + 2x2 max-pool block; text with the conv encoder: of each 1-D conv layer.",
    )
    kernel_size: int = Field(3, ge=1, le=7, title="Kernel size", description="cnn and text conv: conv kernel size.")
    recurrent_units: tuple[int, ...] = Field(
        (64,), title="Recurrent units", description="rnn and text with the recurrent encoder: units of each stacked recurrent layer."
    )
    cell: Literal["lstm", "gru"] = Field("lstm", title="Recurrent cell", description="rnn and text: LSTM or GRU layers.")
    bidirectional: bool = Field(False, title="Bidirectional", description="rnn and text: read each sequence both ways.")
    embedding_dim: int = Field(32, ge=1, le=4096, title="Embedding size", description="text: size of each token's embedding.")
    text_encoder: Literal["recurrent", "conv"] = Field(
        "recurrent", title="Text encoder", description="text: recurrent layers, or 1-D conv layers and global max pooling."
    )
    hidden_units: tuple[int, ...] = Field((128,), title="Hidden units", description="Units of each dense hidden layer.")
    activation: Literal["relu", "tanh", "elu", "gelu"] = Field(
        "relu", title="Activation", description="Activation of the conv and hidden layers."
    )
    dropout: float = Field(0.2, ge=0, lt=1, title="Dropout", description="Dropout rate after each dense hidden layer.")
    l1: float = Field(0.0, ge=0, title="L1 penalty", description="L1 kernel regularization.")
    l2: float = Field(0.0, ge=0, title="L2 penalty", description="L2 kernel regularization.")

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        if any(n < 1 for n in self.conv_filters + self.recurrent_units + self.hidden_units):
            raise ValueError("conv_filters, recurrent_units and hidden_units must be positive integers")
        for name, sizes in self.layer_sizes().items():
            if name != "hidden_units" and not sizes:
                raise ValueError(f"a {self.family} model{' with the ' + self.text_encoder + ' encoder' if self.family == 'text' else ''} needs at least one entry in {name}")
        return self

    def layer_sizes(self) -> dict[str, tuple[int, ...]]:
        """The layer sizes this family uses, by field name: what a student shrinks."""
        feature_layers = {
            "mlp": (), "cnn": ("conv_filters",), "rnn": ("recurrent_units",),
            "text": ("conv_filters",) if self.text_encoder == "conv" else ("recurrent_units",),
        }[self.family]
        return {name: getattr(self, name) for name in (*feature_layers, "hidden_units")}

    @property
    def is_recurrent(self) -> bool:
        return self.family == "rnn" or (self.family == "text" and self.text_encoder == "recurrent")


class StudentConfig(Section):
    """A smaller model of the teacher's family, trained by distillation: by a width multiplier or explicit sizes."""

    model_config = ConfigDict(title="Student")

    width: float | None = Field(
        0.25, gt=0, lt=1, title="Width multiplier",
        description="The teacher's conv filters and hidden units times this (at least 1 each); ignored where sizes are given.",
    )
    conv_filters: tuple[int, ...] | None = Field(
        None, title="Conv filters", description="cnn and text conv: the student's filters per conv layer (as many as the teacher)."
    )
    recurrent_units: tuple[int, ...] | None = Field(
        None, title="Recurrent units", description="rnn and text: the student's units per recurrent layer (as many as the teacher)."
    )
    hidden_units: tuple[int, ...] | None = Field(None, title="Hidden units", description="The student's dense hidden layers.")
    dropout: float | None = Field(
        None, ge=0, lt=1, title="Dropout", description="Dropout after each dense hidden layer; empty: the teacher's (a small student often needs less)."
    )

    def sizes(self, teacher: ModelConfig) -> dict[str, tuple[int, ...]]:
        """The student's sizes of the layers its teacher's family uses (ModelConfig.layer_sizes): given, or the
        teacher's times the width."""
        scale = self.width or 1.0
        return {
            name: given if (given := getattr(self, name)) is not None else tuple(max(1, round(n * scale)) for n in sizes)
            for name, sizes in teacher.layer_sizes().items()
        }

    def model(self, teacher: ModelConfig) -> ModelConfig:
        """The student as a model config: the teacher's family and settings, the student's sizes."""
        dropout = teacher.dropout if self.dropout is None else self.dropout
        return teacher.model_copy(update={**self.sizes(teacher), "dropout": dropout})


def student_problem(student: StudentConfig, teacher: ModelConfig) -> str | None:
    """Why `student` cannot be a student of `teacher` (not smaller, or a different shape), or None."""
    sizes, teacher_sizes = student.sizes(teacher), teacher.layer_sizes()
    for name in ("conv_filters", "recurrent_units"):
        if getattr(student, name) and name not in teacher_sizes:
            return f"{name} is not a layer of this {teacher.family} teacher"
    for name, student_sizes in sizes.items():
        if any(n < 1 for n in student_sizes):
            return "layer sizes must be positive integers"
        if name != "hidden_units" and len(student_sizes) != len(teacher_sizes[name]):
            return f"{name} needs {len(teacher_sizes[name])} entries, one per layer of the teacher (got {list(student_sizes)})"
    if not sizes["hidden_units"] and teacher.hidden_units:
        return "hidden_units is empty; give at least one dense layer, like the teacher"
    flat, teacher_flat = [n for s in sizes.values() for n in s], [n for s in teacher_sizes.values() for n in s]
    wider = [mine > theirs for name in sizes for mine, theirs in zip(sizes[name], teacher_sizes[name])]
    if any(wider) or sum(flat) >= sum(teacher_flat):
        described = ", ".join(f"{name} {list(sizes[name])}" for name in sizes)
        teacher_described = ", ".join(f"{list(teacher_sizes[name])}" for name in sizes)
        return (
            f"not smaller than its teacher (student {described}; teacher {teacher_described}): no layer may be wider "
            "than the teacher's, and it needs fewer units in all"
        )
    return None
