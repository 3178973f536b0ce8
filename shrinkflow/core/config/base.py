"""What every config section is: a frozen pydantic model in which an unknown key is an error (a typo never
silently falls back to a default)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Task = Literal["classification", "regression"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
