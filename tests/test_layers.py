"""The package's structure, read from the source (every import, also those inside functions):

- the layers import only downward: core < tracking < tasks < flows < deployments < cli;
- no module imports another that imports it back, however indirectly (no import circle);
- everything is installed under the one name `shrinkflow`, and nothing imports the repository's folders by
  their own names (`tasks`, `flows`, ...): pyproject.toml maps them into the package;
- no module is longer than MAX_LINES.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.typecheck import INSTALLED_AS

# Lowest first. A module may import its own layer and those before it.
LAYERS = (
    "shrinkflow.core", "shrinkflow.tracking", "shrinkflow.tasks", "shrinkflow.flows", "shrinkflow.deployments",
    "shrinkflow.cli",
)
# Libraries a layer must not touch: the core knows neither Prefect nor MLflow; tracking knows no Prefect.
FORBIDDEN = {"shrinkflow.core": ("prefect", "mlflow"), "shrinkflow.tracking": ("prefect",)}
# The repository's folders, which are not importable names once installed.
FOLDER_NAMES = ("tasks", "flows", "deployments", "cli")
MAX_LINES = 450


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(f"{layer}."):
            return index
    return None


def installed_modules() -> Iterator[tuple[str, Path]]:
    """(module name as installed, source file) of every module of the package."""
    for folder, installed in INSTALLED_AS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = (*installed.split("/"), *path.relative_to(REPO / folder).with_suffix("").parts)
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


MODULES = dict(installed_modules())


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return found


def project_imports(path: Path) -> set[str]:
    """The package's modules that `path` imports (`from a.b import c` names a.b.c if that is a module, else a.b)."""
    return {name for name in imports(path) if name in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_imports_go_only_downward(module: str) -> None:
    path = MODULES[module]
    own = layer_of(module)
    if module == "shrinkflow":
        return  # the package's own __init__: no imports of the layers
    assert own is not None, f"{module} is in no layer"
    upward = sorted(name for name in imports(path) if (layer := layer_of(name)) is not None and layer > own)
    assert upward == [], f"{module} ({LAYERS[own]}) imports a higher layer"
    banned = FORBIDDEN.get(LAYERS[own], ())
    assert sorted(name for name in imports(path) if name.split(".")[0] in banned) == []
    assert sorted(name for name in imports(path) if name.split(".")[0] in FOLDER_NAMES) == [], (
        f"{module} imports a folder by its repository name; import it as shrinkflow.<folder>"
    )


def test_no_import_circle() -> None:
    graph = {module: project_imports(path) - {module} for module, path in MODULES.items()}
    # A package's __init__ is imported by its submodules implicitly; only explicit imports count here.
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circle = visiting[visiting.index(module):] + [module]
            pytest.fail("import circle: " + " -> ".join(circle))
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_modules_stay_short(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by concern (at most {MAX_LINES})"


def test_every_package_is_installed() -> None:
    """pyproject.toml lists exactly the package's folders (each with an __init__.py), under the one name."""
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert settings["package-dir"] == {name.replace("/", "."): folder for folder, name in INSTALLED_AS.items()}
    packages = {module for module, path in MODULES.items() if path.name == "__init__.py"}
    assert set(settings["packages"]) == packages
    assert all(package.split(".")[0] == "shrinkflow" for package in packages)
    top_level = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert top_level == {*INSTALLED_AS, "tests", "bench"}


def test_the_wheel_installs_the_one_name_shrinkflow(tmp_path: Path) -> None:
    """`pip install .` installs only `shrinkflow` and its subpackages: the wheel's top-level names, built from a
    copy of the sources (setuptools writes build folders beside them)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"
    for folder in INSTALLED_AS:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )
    [wheel] = tmp_path.glob("shrinkflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"shrinkflow", wheel.name.split("-py3")[0] + ".dist-info"}
    installed = {".".join(Path(name).with_suffix("").parts) for name in names if name.endswith(".py")}
    assert {module.removesuffix(".__init__") for module in installed} == set(MODULES)
