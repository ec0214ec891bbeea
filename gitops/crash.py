"""The last line of defence: an unexpected error's traceback goes to a file, the user gets one line.

Shared by the CLI and the daemon's worker, so that a crash reads the same
wherever it happens and always says where the traceback is.
"""

from __future__ import annotations

import os
import tempfile
import traceback

EXIT_CODE = 70  # EX_SOFTWARE: an internal error, not the user's


def crash_line(exc: BaseException) -> str:
    """Write the traceback of ``exc`` (being handled) to a temporary file; the one line to show."""
    fd, path = tempfile.mkstemp(prefix="kalpana-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        traceback.print_exception(exc, file=handle)
    return f"unexpected error: {type(exc).__name__}: {exc} (traceback written to {path}; please report it)"
