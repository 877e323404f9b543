"""Command-line interface: ``lowrank sweep | report | compress | zoo | demo``, one module per
command family (:mod:`.compress`, :mod:`.sweep`, :mod:`.zoo`) and the flags they share
(:mod:`.options`).

User mistakes (a bad budget, an unknown model, a missing dataset or file) end in one line on
stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .. import resources
from ..data import DatasetMissingError
from . import compress, sweep, zoo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowrank", description="Compress PyTorch networks by low-rank factorisation under "
                                     "budgets on " + ", ".join(resources.get(r).label for r in resources.names()) + ".")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (zoo, sweep, compress):
        command.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, DatasetMissingError, FileNotFoundError) as err:  # user mistakes: one clear line
        print(f"lowrank: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowrank: interrupted (a sweep resumes where it stopped when run again)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
