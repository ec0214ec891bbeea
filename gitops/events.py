"""The hooks the core calls instead of printing.

The engine emits; the CLI renders (rich or JSON), and later the server streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable


class EventKind(str, Enum):
    """What happened."""

    LOCK_WAIT = "lock_wait"  #: another apply holds the lock; waiting
    RECOVERED = "recovered"  #: a leftover from an interrupted run was repaired
    PLAN = "plan"  #: the plan of a run (its changes, or that there are none)
    STEP_START = "step_start"  #: one plan step begins
    PHASE = "phase"  #: a step enters a phase (source, build, deploy, health, ...)
    LOG = "log"  #: one line of build output (already masked)
    STEP_DONE = "step_done"  #: a step finished successfully
    STEP_FAILED = "step_failed"  #: a step failed; what runs was kept
    WARNING = "warning"  #: something the operator should know (e.g. pruning skipped)
    TRIGGER = "trigger"  #: the daemon saw a reason to work (file save, push, poll, drift)
    JOB_START = "job_start"  #: the daemon started a run
    JOB_DONE = "job_done"  #: a run ended (``ok`` in data)
    INFO = "info"  #: daemon life: listening, stopping, Docker back
    ERROR = "error"  #: the daemon hit a problem it keeps running through


@dataclass(frozen=True)
class Event:
    """One thing that happened, for one deployment (or the whole run when ``deployment`` is None)."""

    kind: EventKind
    deployment: str | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Event], None]


class Events:
    """A tiny synchronous bus: subscribers are called in order, on the emitting thread."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` for every event from now on."""
        self._listeners.append(listener)

    def emit(self, kind: EventKind, deployment: str | None = None, message: str = "", **data: Any) -> None:
        """Deliver one event to every subscriber."""
        event = Event(kind, deployment, message, data)
        for listener in self._listeners:
            listener(event)
