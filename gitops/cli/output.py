"""Plain output of the CLI, with nothing but the standard library (rich output is ``render``'s)."""

from __future__ import annotations

import os
import sys
from typing import Any


def reader_gone(stream: Any) -> None:
    """The reader of ``stream`` went away (``kalpana deploy x | head -1``): send the rest to /dev/null.

    The work goes on and is recorded; only its output has nobody left to read it. The file
    descriptor itself is pointed at /dev/null, so every later write, and the interpreter's final
    flush of what is still buffered, succeed instead of raising (or exiting 120).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing left to redirect
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def write(text: str, stderr: bool = False) -> None:
    """Write plain ``text`` to stdout (or stderr) now; a closed reader is not an error (see reader_gone)."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        reader_gone(stream)
