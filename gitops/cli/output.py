"""Plain output of the CLI, with nothing but the standard library (rich output is ``render``'s)."""

from __future__ import annotations

import os
import re
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


# rich.markup's tag pattern: a tag is "[word...]", a run of backslashes before it escapes it when odd.
_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")


def plain(markup: str) -> str:
    """The text rich prints for ``markup`` on a single line, without importing rich (emoji codes stay as written).

    Tags go, escaped brackets stay: the same reading as ``rich.markup.render``, so that a line
    written plainly to a pipe says what the terminal shows (tests/unit/test_cli_output.py).
    """
    out: list[str] = []
    position = 0
    for match in _TAG.finditer(markup):
        full, escapes, _tag = match.groups()
        start, end = match.span()
        if start > position:
            out.append(markup[position:start].replace("\\[", "["))
        backslashes, escaped = divmod(len(escapes), 2)
        out.append("\\" * backslashes)
        if escaped:
            out.append(full[len(escapes):])
        position = end
    if position < len(markup):
        out.append(markup[position:].replace("\\[", "["))
    # As rich prints text: tabs expanded, the control codes that would move the cursor removed.
    return "".join(out).translate(_CONTROL).expandtabs(8)


_CONTROL = dict.fromkeys((7, 8, 11, 12, 13))  # rich.control.STRIP_CONTROL_CODES
