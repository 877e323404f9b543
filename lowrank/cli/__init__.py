"""Command-line interface: ``lowrank sweep | report | compress | frontier | zoo | demo``, one module
per command family (:mod:`.compress`, :mod:`.sweep`, :mod:`.frontier`, :mod:`.zoo`) and the flags they share
(:mod:`.options`).

User mistakes (a bad budget, an unknown model, a missing dataset or file, a file or folder that
cannot be read or written, a results database that is not one) end in one line on stderr and
exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import re
import sys

from .. import resources
from ..data import DatasetMissingError
from . import compress, files, frontier, sweep, zoo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowrank", description="Compress PyTorch networks by low-rank factorisation under "
                                     "budgets on " + ", ".join(resources.get(r).label for r in resources.names()) + ".")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (zoo, sweep, compress, frontier):
        command.add(sub)
    return parser


def in_flags(message: str, flags: set[str]) -> str:
    """A library message in the command line's words: ``scheme='spatial'`` -> ``--scheme spatial``,
    ``Budget(macs_abs=1.5)`` -> ``--macs-abs 1.5``, ``accept_uncounted=True`` -> ``--accept-uncounted``
    (only where such a flag exists)."""
    def flag(match):
        name, value = match.group(1), match.group(2).strip("'\"")
        option = "--" + name.replace("_", "-")
        if option not in flags:
            return match.group(0)
        return option if value == "True" else f"{option} {value}"

    message = re.sub(r"Budget\((\w+)=([^)]*)\)", flag, message)
    return re.sub(r"\b(\w+)=('[^']*'|\"[^\"]*\"|[\w.+-]+)", flag, message)


def subcommands(parser: argparse.ArgumentParser):
    """(name, parser) of every subcommand, nested ones as ``"zoo train"``: argparse keeps them
    in its actions and offers no public listing."""
    for action in parser._actions:
        if isinstance(getattr(action, "choices", None), dict):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in subcommands(sub):
                    yield f"{name} {inner}", subsub


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    out = {o for action in parser._actions for o in action.option_strings if o.startswith("--")}
    for _, sub in subcommands(parser):
        out.update(o for action in sub._actions for o in action.option_strings if o.startswith("--"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, DatasetMissingError) as err:  # user mistakes: one clear line
        print(f"lowrank: error: {in_flags(str(err), _flags(parser))}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder that cannot be read or written (permissions, a full disk, ...)
        print(f"lowrank: error: {files.os_error_line(err) if err.strerror else err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowrank: interrupted (a sweep resumes where it stopped when run again)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `lowrank zoo list | head`)
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
