"""Time as the work queue sees it: a reading and a timed wait, nothing more.

The queue takes a ``Clock`` through its constructor so that a test can hand it
a clock that moves only when the test says so: "nothing ran during the quiet
period" is then a fact about the queue, not about how busy the machine was.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the work queue needs of time: a monotonic reading and a timed wait on a condition."""

    def now(self) -> float:
        """Monotonic seconds; only differences between two readings mean anything."""
        ...

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        """Wait on ``condition``, whose lock the caller holds, until notified or ``timeout`` seconds pass.

        ``None`` waits for a notification only. Returns False when the timeout
        passed. It may return early, as ``Condition.wait`` may: callers re-check
        what they wait for.
        """
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``Condition.wait``."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        """``condition.wait(timeout)``."""
        return condition.wait(timeout)
