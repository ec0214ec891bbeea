"""The daemon's worker protocol: how a job reaches a worker process and how its events come back.

`kalpana watch` runs every job in a child process (a cancel is a SIGTERM, and
the memory of a build goes away with it). The child is started with
``child_command()``; the daemon writes the job as one JSON line on its stdin;
the child writes one JSON line per event on its stdout, then one ``result``
line, and exits 0 when everything it did succeeded. Both ends use only this
module, so the line format has one definition and its own unit tests, and no
CLI command carries hidden flags for the daemon.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitops.build import Trigger
from gitops.events import Event, event_from_dict
from gitops.queue import Job

RESULT = "result"  # the "event" value of the last line a worker writes
WORKER_MODULE = "gitops.worker"


class ProtocolError(ValueError):
    """A line that is not what the other end of the protocol writes."""


@dataclass(frozen=True)
class RunResult:
    """The last line of a worker: did everything succeed, how many steps ran, which files failed to load."""

    ok: bool
    changed: int = 0
    errors: list[str] = field(default_factory=list)
    unfetched: list[str] = field(default_factory=list)  # git fetches that failed (the last good checkout was used)


def child_command(config: Path | None, python: str = sys.executable) -> list[str]:
    """The argument list that starts a worker (which then reads its job on stdin)."""
    return [python, "-m", WORKER_MODULE] + (["-c", str(config)] if config else [])


def parse_child_args(argv: list[str]) -> Path | None:
    """The settings file a worker was started with (the inverse of ``child_command``'s arguments)."""
    if not argv:
        return None
    if len(argv) == 2 and argv[0] == "-c":
        return Path(argv[1])
    raise ProtocolError(f"a worker takes no arguments but `-c FILE`, not {argv!r}")


def encode_job(job: Job) -> str:
    """One line (with its newline) that carries ``job`` to a worker."""
    return json.dumps({
        "names": sorted(job.names) if job.names is not None else None, "trigger": job.trigger.value,
        "fetch": job.fetch, "config": job.config, "commit": job.commit, "reasons": list(job.reasons),
        "prune": job.prune, "heal": job.heal, "force": sorted(job.force), "builds": dict(job.builds)}) + "\n"


def decode_job(line: str) -> Job:
    """The job a worker was sent; ProtocolError for anything else (nothing is guessed)."""
    try:
        data = json.loads(line)
        names = data["names"]
        flags = {key: data[key] for key in ("fetch", "config", "prune", "heal")}
        if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise TypeError("names must be null or a non-empty list of names")
        if not all(isinstance(v, bool) for v in flags.values()):
            raise TypeError("fetch, config, prune and heal must be true or false")
        if not (isinstance(data["reasons"], list) and all(isinstance(r, str) for r in data["reasons"])):
            raise TypeError("reasons must be a list of strings")
        if data["commit"] is not None and not isinstance(data["commit"], str):
            raise TypeError("commit must be null or a string")
        force, builds = data.get("force", []), data.get("builds", {})
        if not (isinstance(force, list) and all(isinstance(n, str) for n in force)):
            raise TypeError("force must be a list of names")
        if not (isinstance(builds, dict) and all(isinstance(v, str) for v in builds.values())):
            raise TypeError("builds must map names to build ids")
        return Job(frozenset(names) if names is not None else None, Trigger(data["trigger"]),
                   commit=data["commit"], reasons=list(data["reasons"]), force=frozenset(force),
                   builds=dict(builds), **flags)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"not a job line ({exc}): {line[:200]!r}") from None


def encode_event(event: Event) -> str:
    """One line (with its newline) for one event."""
    return json.dumps(event.to_dict(), default=str) + "\n"


def encode_result(result_dict: dict[str, Any]) -> str:
    """The last line, from an ``ApplyResult.to_dict()``."""
    return json.dumps({"event": RESULT, **result_dict}, default=str) + "\n"


def decode_line(line: str) -> Event | RunResult | None:
    """What one line of a worker's stdout says; None for a line that is not protocol (stray output)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or "event" not in data:
        return None
    if data["event"] == RESULT:
        return RunResult(ok=bool(data.get("ok")), changed=len(data.get("results") or []),
                         errors=[str(e) for e in data.get("errors") or []],
                         unfetched=[str(u) for u in data.get("unfetched") or []])
    return event_from_dict(data)
