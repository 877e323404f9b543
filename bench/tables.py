"""What every benchmark does with its rows: a CSV and a Markdown page in reports/, and the
command line that made them (quoted in the page so a reader can re-make it)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def command(script: str) -> str:
    """``python bench/<script> <its arguments>`` as this process was started."""
    return " ".join([f"python bench/{Path(script).name}"] + sys.argv[1:])


def write_report(out: str | Path, name: str, rows: list[dict], lines: list[str]) -> None:
    """``rows`` to ``out/name.csv`` (columns: the first row's keys) and ``lines`` to ``out/name.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
