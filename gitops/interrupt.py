"""The process's interrupt: a Ctrl-C or SIGTERM that cancels the run even when Python drops its exception.

Python raises a signal handler's exception wherever the main thread happens to be,
and that may be inside a ``__del__`` method (say ``subprocess.Popen.__del__``, run
when GitPython is done with a ``git`` process) or a weakref callback: there the
interpreter prints "Exception ignored in ..." and the KeyboardInterrupt is gone.
The daemon cancels a superseded run with a single SIGTERM, so a dropped one meant
an obsolete commit built and deployed to the end. ``request`` (what the signal
handlers call) therefore also leaves a mark that outlives the exception, and the
engine's checkpoints (``check``) raise KeyboardInterrupt again for as long as it is
there: the run's usual cancel path, at its next checkpoint at the latest.
"""

from __future__ import annotations

# A plain flag, not a threading.Event: a signal handler must not take a lock the interrupted code may
# hold. Threads only read it.
_requested = False


def request() -> None:
    """Mark the process interrupted and raise KeyboardInterrupt (from a signal handler)."""
    global _requested
    _requested = True
    raise KeyboardInterrupt


def requested() -> bool:
    """Has a Ctrl-C or SIGTERM interrupted this process (whether or not its exception was seen)?"""
    return _requested


def check() -> None:
    """A checkpoint: KeyboardInterrupt if the process was interrupted."""
    if _requested:
        raise KeyboardInterrupt


def clear() -> None:
    """Forget an interrupt (tests: one process runs many cases)."""
    global _requested
    _requested = False
