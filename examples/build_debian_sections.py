"""Build examples/debian_sections.csv: Debian package descriptions labelled with their archive section.

A small, real text-classification table that needs no download at run time: the one-line descriptions of
Debian 12 (bookworm) packages from apt's package list, 400 per section for five topical sections. It was
built once on a Debian machine and committed; rebuild it with

    /usr/lib/apt/apt-helper cat-file /var/lib/apt/lists/*_bookworm_main_binary-amd64_Packages.lz4 > Packages
    .venv/bin/python examples/build_debian_sections.py Packages examples/debian_sections.csv
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pandas as pd

SECTIONS = ("fonts", "games", "graphics", "science", "sound")
PER_SECTION = 400
SEED = 0


def read_packages(path: Path) -> pd.DataFrame:
    """One row per package stanza: name, section and one-line description."""
    rows = []
    for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        if {"Package", "Section", "Description"} <= fields.keys():
            rows.append((fields["Package"], fields["Section"], fields["Description"].strip()))
    return pd.DataFrame(rows, columns=["package", "section", "description"])


def main(packages: str, out: str) -> None:
    table = read_packages(Path(packages))
    table = table[table["section"].isin(SECTIONS)].drop_duplicates("description").sort_values("package")
    rng = random.Random(SEED)
    chosen = [
        rows.loc[sorted(rng.sample(list(rows.index), PER_SECTION))]
        for _, rows in table.groupby("section")
    ]
    dataset = pd.concat(chosen)[["description", "section"]].sample(frac=1.0, random_state=SEED)
    dataset.to_csv(out, index=False)
    print(f"{out}: {len(dataset)} rows, {dataset['section'].value_counts().to_dict()}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
