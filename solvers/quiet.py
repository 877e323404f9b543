"""Keep a native solver's own prints out of the user's terminal.

HiGHS writes progress lines (``Running HiGHS ...``, ``HighsMipSolverData::...``) straight to
the process's standard output from C++, past Python's ``sys.stdout``, whatever its options
say. :func:`native_output_silenced` points file descriptors 1 and 2 at /dev/null for the
duration of a call and puts them back after, also when the call fails.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def native_output_silenced():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real descriptors (an embedded interpreter): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
