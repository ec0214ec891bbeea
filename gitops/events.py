"""What the core tells instead of printing: one small dataclass per kind of event.

The engine and the daemon emit; the CLI renders (rich, plain lines or JSON),
the daemon relays its workers' events, and an SSE stream will send them to
browsers. That makes these classes a public contract: each has a fixed
``kind`` (its name on the wire) and typed fields, and ``to_dict`` /
``event_from_dict`` are the one JSON form.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar


@dataclass(frozen=True)
class Event:
    """Something that happened, for one deployment (or the whole run when ``deployment`` is None)."""

    kind: ClassVar[str] = "event"

    deployment: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"event": kind, "deployment": ..., "message": ..., <fields>}``."""
        return {"event": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}


@dataclass(frozen=True)
class LockWait(Event):
    """Another Kalpana process holds the apply lock; this one waits."""

    kind: ClassVar[str] = "lock_wait"


@dataclass(frozen=True)
class Recovered(Event):
    """A leftover of an interrupted run (a BUILDING record, a half-swapped container) was repaired."""

    kind: ClassVar[str] = "recovered"


@dataclass(frozen=True)
class Planned(Event):
    """The plan of a run: its changes (``message`` lists them), or that there are none."""

    kind: ClassVar[str] = "plan"
    changes: int = 0


@dataclass(frozen=True)
class StepStarted(Event):
    """One step of a plan begins; ``message`` is its reason."""

    kind: ClassVar[str] = "step_start"
    action: str = ""  # create, rebuild, redeploy, start, stop, remove, rollback


@dataclass(frozen=True)
class PhaseEntered(Event):
    """A step enters a phase (fetch, build, deploy, health); ``message`` says which."""

    kind: ClassVar[str] = "phase"
    build_id: str | None = None


@dataclass(frozen=True)
class LogLine(Event):
    """One line of build output (already masked); ``message`` is the line."""

    kind: ClassVar[str] = "log"
    build_id: str | None = None


@dataclass(frozen=True)
class StepSucceeded(Event):
    """A step finished; ``build`` is its record (as JSON) when it made one."""

    kind: ClassVar[str] = "step_done"
    build: dict[str, Any] | None = None


@dataclass(frozen=True)
class StepFailed(Event):
    """A step failed (``message`` says why); what was running still runs."""

    kind: ClassVar[str] = "step_failed"
    transient: bool = False  # the cause was outside the deployment (Docker, disk, network): worth retrying


@dataclass(frozen=True)
class Warned(Event):
    """Something the operator should know, e.g. that pruning was skipped."""

    kind: ClassVar[str] = "warning"


@dataclass(frozen=True)
class Triggered(Event):
    """The daemon saw a reason to work: a file save, a push, a poll, drift."""

    kind: ClassVar[str] = "trigger"


@dataclass(frozen=True)
class JobStarted(Event):
    """The daemon started a run; ``message`` describes it."""

    kind: ClassVar[str] = "job_start"
    reasons: list[str] = field(default_factory=list)
    commit: str | None = None


@dataclass(frozen=True)
class JobFinished(Event):
    """A daemon run ended: done, failed or cancelled."""

    kind: ClassVar[str] = "job_done"
    ok: bool = False
    cancelled: str | None = None  # why it was cancelled, if it was
    changed: int = 0  # how many steps it executed


@dataclass(frozen=True)
class Info(Event):
    """Daemon life: listening, stopping, Docker answering again."""

    kind: ClassVar[str] = "info"


@dataclass(frozen=True)
class DaemonError(Event):
    """A problem the daemon reports and keeps running through."""

    kind: ClassVar[str] = "error"


EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in (
    LockWait, Recovered, Planned, StepStarted, PhaseEntered, LogLine, StepSucceeded, StepFailed, Warned,
    Triggered, JobStarted, JobFinished, Info, DaemonError)}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of ``Event.to_dict``. An unknown kind becomes ``Info``; unknown fields are dropped."""
    cls = EVENT_TYPES.get(str(data.get("event", "")), Info)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


Listener = Callable[[Event], None]


class Events:
    """A tiny synchronous bus: subscribers are called in order, on the emitting thread, one event at a time.

    Steps of one apply run on several threads (see ``gitops.pool``); the bus delivers one event
    to all subscribers before the next, so a subscriber need not be thread-safe itself and the
    lines it writes (a terminal, the daemon's worker protocol) never interleave mid-line.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        # Re-entrant: a subscriber may emit (the daemon relays what it hears).
        self._lock = threading.RLock()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` for every event from now on."""
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        """Deliver one event to every subscriber."""
        with self._lock:
            for listener in self._listeners:
                listener(event)
