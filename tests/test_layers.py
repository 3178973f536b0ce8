"""The layers import only downward: core < tracking < tasks < flows < deployments < cli.

Read from the source (every import, also those inside functions), so a new upward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# Lowest first. A module may import its own layer and those before it.
LAYERS = ("shrinkflow.core", "shrinkflow.tracking", "tasks", "flows", "deployments", "cli")
# Libraries a layer must not touch: the core knows neither Prefect nor MLflow; tracking knows no Prefect.
FORBIDDEN = {"shrinkflow.core": ("prefect", "mlflow"), "shrinkflow.tracking": ("prefect",)}


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(f"{layer}."):
            return index
    return None


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return found


SOURCES = sorted(
    path for layer in LAYERS for path in (REPO / layer.replace(".", "/")).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(REPO)))
def test_imports_go_only_downward(path: Path) -> None:
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    own = layer_of(module)
    assert own is not None
    upward = sorted(name for name in imports(path) if (layer := layer_of(name)) is not None and layer > own)
    assert upward == [], f"{module} ({LAYERS[own]}) imports a higher layer"
    banned = FORBIDDEN.get(LAYERS[own], ())
    assert sorted(name for name in imports(path) if name.split(".")[0] in banned) == []


def test_every_package_belongs_to_a_layer() -> None:
    packages = {path.parent.relative_to(REPO).as_posix() for path in REPO.glob("*/__init__.py")}
    packages |= {path.parent.relative_to(REPO).as_posix() for path in REPO.glob("shrinkflow/*/__init__.py")}
    expected = {layer.replace(".", "/") for layer in LAYERS} | {"shrinkflow", "tests", "bench"}
    assert packages == expected
