"""Files the command line writes: checked before the work (a folder that cannot be written
ends the command in one line before minutes of compression, not after), and written whole
or not at all (a failed write leaves an existing file as it was)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def check_writable(path: Path, flag: str) -> None:
    """Refuse, naming ``flag``, a ``path`` that is a folder or whose folder cannot be made or
    written to (tried with a probe file: permission bits alone say nothing to root)."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".lowrank-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {flag} {path}: {err.strerror or err} ({path.parent}); choose a file in a folder you "
                         "can write to") from err


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` to a temporary file beside ``path``, then move it into place: a write that
    fails part-way leaves no half file and an existing ``path`` untouched."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def os_error_line(err: OSError) -> str:
    """An operating-system error as one line that names the file and what to do."""
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or str(err)
    return (f"cannot use{where}: {what}. Check the path, and that its folder exists and you may read and write it; or "
            "choose another path")
