"""Cache keys for the pipeline's stages.

A stage's key covers its own config section, what it consumes (the data fingerprint or the upstream
model file's content), the workspace, and the code's version. So re-running an unchanged config
skips the stage, and any change recomputes exactly the stages downstream of it: changing
`quantize.modes` keys only the quantize stage, never the baseline's training.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SOURCE_ROOT = Path(__file__).resolve().parents[1]
# Every package whose code decides what a stage produces: the logic, the tasks and the flow.
CODE_PACKAGES = ("shrinkflow", "tasks", "flows")


@lru_cache(maxsize=None)
def code_version(root: Path = SOURCE_ROOT) -> str:
    """A digest of the pipeline's source files: editing any of them invalidates every cached stage."""
    digest = hashlib.sha256()
    for source in sorted(path for package in CODE_PACKAGES for path in (root / package).rglob("*.py")):
        digest.update(source.relative_to(root).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def stage_key(stage: str, *inputs: Any) -> str:
    """A stable key from the stage's name, the code version and JSON-able inputs (pydantic models welcome)."""
    payload = [stage, code_version(), *(_jsonable(item) for item in inputs)]
    return f"{stage}-" + hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _jsonable(item: Any) -> Any:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else item
