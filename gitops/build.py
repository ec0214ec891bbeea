"""The build record: what was built, why, from which commit, and how it ended.

A plain value with no storage attached, so that the engine, the CLI, the API
and the history store all share one model; ``history`` persists it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class BuildStatus(str, Enum):
    """Where a build stands; PENDING → BUILDING → SUCCESS | FAILED | CANCELLED."""

    PENDING = "PENDING"
    """Recorded, waiting for its turn in the work queue."""
    BUILDING = "BUILDING"
    """A process is fetching the source, building or deploying it."""
    SUCCESS = "SUCCESS"
    """The new container is up and healthy; the old one was retired."""
    FAILED = "FAILED"
    """Something went wrong; what was running before is still running."""
    CANCELLED = "CANCELLED"
    """The operator stopped it (Ctrl-C, or a newer build superseded it)."""

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the build."""
        return self in (BuildStatus.SUCCESS, BuildStatus.FAILED, BuildStatus.CANCELLED)


class Trigger(str, Enum):
    """What started a build."""

    MANUAL = "manual"
    """An operator ran a command (``kalpana apply``, the API)."""
    WEBHOOK = "webhook"
    """A git host announced a push."""
    AUTO = "auto"
    """``kalpana watch`` saw a file change, a new commit or drift."""


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a ``Z``."""
    return iso(datetime.now(timezone.utc))


def iso(moment: datetime) -> str:
    """``moment`` as stored in records: ISO-8601, milliseconds, ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    """The inverse of :func:`iso`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Build:
    """One build record: what was built, why, from which commit, and how it ended."""

    id: str
    deployment: str
    status: BuildStatus
    triggered_by: Trigger
    action: str
    reason: str | None = None
    commit_hash: str | None = None
    commit_message: str | None = None
    branch: str | None = None
    revision: str | None = None
    error_message: str | None = None
    image: str | None = None
    created_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    completed_at: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
    pid: int | None = None
    host: str | None = None

    @property
    def orphaned(self) -> bool:
        """An unfinished build whose process on this host is gone (killed): nothing will ever finish it.

        Builds of other hosts cannot be checked from here and are never called orphaned.
        """
        if self.status.finished or not isinstance(self.pid, int) or self.host != socket.gethostname():
            return False
        return self.pid == os.getpid() or not process_alive(self.pid)

    @property
    def duration(self) -> float | None:
        """Seconds from start to completion, or None while either is missing."""
        if not self.started_at or not self.completed_at:
            return None
        return (parse_iso(self.completed_at) - parse_iso(self.started_at)).total_seconds()

    def to_dict(self, logs: str | None = None) -> dict[str, Any]:
        """JSON-ready dict with snake_case keys; ``logs`` is included only when given."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["status"] = self.status.value
        data["triggered_by"] = self.triggered_by.value
        data["durations"] = dict(self.durations)
        if logs is not None:
            data["logs"] = logs
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Build:
        """The inverse of :meth:`to_dict`; unknown keys (e.g. ``logs``) are ignored."""
        if FIELDS.issuperset(data):
            values = dict(data)  # the usual case, and the fast one
        else:
            values = {k: v for k, v in data.items() if k in FIELDS}
        values["status"] = _STATUSES.get(values["status"]) or BuildStatus(values["status"])
        values["triggered_by"] = _TRIGGERS.get(values["triggered_by"]) or Trigger(values["triggered_by"])
        values["durations"] = dict(values.get("durations") or {})
        return cls(**values)


# Computed once: dataclasses.fields() per record is most of the cost of listing 1,000 builds.
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Build))
FIELDS = frozenset(_FIELD_NAMES)  #: every field name of a Build
# Plain dict look-ups: calling the Enum class costs more than the rest of a record.
_STATUSES = {s.value: s for s in BuildStatus}
_TRIGGERS = {t.value: t for t in Trigger}


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    # A zombie has exited but not been reaped: it runs nothing any more.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
