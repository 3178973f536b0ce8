"""mypy over the installed package's layout: `python -m tests.typecheck` (what `make test` runs first).

The repository keeps flows/, tasks/ and deployments/ at its top, and setuptools installs them as
shrinkflow.flows, shrinkflow.tasks and shrinkflow.deployments (pyproject.toml's package-dir). mypy finds a
package only where the folders are laid out like its names, and it does not follow the import hook of an
editable install, so it checks a mirror of the source: folders laid out as installed, every file a symlink to
the source file (errors name the installed path, e.g. shrinkflow/tasks/stages.py).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO / ".typecheck"
# Where each folder of the repository sits in the installed package (pyproject.toml, [tool.setuptools]).
INSTALLED_AS = {"shrinkflow": "shrinkflow", "tasks": "shrinkflow/tasks", "flows": "shrinkflow/flows", "deployments": "shrinkflow/deployments"}


def build_mirror(root: Path = MIRROR) -> Path:
    """Symlink every .py file of the package to where it is installed, under `root`; returns `root`."""
    shutil.rmtree(root / "shrinkflow", ignore_errors=True)
    for folder, installed in INSTALLED_AS.items():
        for source in sorted((REPO / folder).rglob("*.py")):
            target = root / installed / source.relative_to(REPO / folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return root


def run_mypy(root: Path, *targets: str) -> tuple[str, int]:
    """mypy with the project's settings on `targets` (default: the package), run from `root`; (report, status)."""
    from mypy import api

    arguments = ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(REPO / ".mypy_cache")]
    arguments += list(targets) if targets else ["-p", "shrinkflow"]
    cwd = Path.cwd()
    try:
        import os

        os.chdir(root)
        report, errors, status = api.run(arguments)
    finally:
        os.chdir(cwd)
    return report + errors, status


def main() -> int:
    report, status = run_mypy(build_mirror())
    print(report, end="")
    return status


if __name__ == "__main__":
    sys.exit(main())
