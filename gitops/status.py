"""What runs, per deployment: the report behind `kalpana status`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Iterable

from gitops import routing
from gitops.build import BuildStatus
from gitops.errors import UnknownDeployment
from gitops.history import History, Snapshot
from gitops.loader import LoadResult
from gitops.plan import foreign_owner, rollback_note
from gitops.runtime.protocol import Runtime


class State(str, Enum):
    """A deployment's state as a user sees it."""

    RUNNING = "running"  #: its container runs
    CRASH_LOOPING = "crash-looping"  #: its container keeps dying; Docker restarts it with backoff
    STOPPED = "stopped"  #: stopped by the operator or disabled
    FAILED = "failed"  #: its container exited, or its only builds failed
    BUILDING = "building"  #: a build is in progress
    NOT_DEPLOYED = "not deployed"  #: declared, never deployed


@dataclass
class DeploymentStatus:
    """One row of `kalpana status`."""

    name: str
    state: State
    url: str | None
    build_id: str | None
    image: str | None
    uptime_seconds: float | None
    container: str | None
    last_build_status: str | None
    detail: str
    rolled_back_to: str | None = None  # the build a rollback serves, while the files declare a newer one

    def to_dict(self) -> dict:
        """JSON form (`kalpana status --json`)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data


def select(rows: list[DeploymentStatus], names: Iterable[str] = ()) -> list[DeploymentStatus]:
    """The rows of ``names`` in that order (every row when none are given); UnknownDeployment for a name with none."""
    names = list(dict.fromkeys(names))
    if not names:
        return rows
    by_name = {r.name: r for r in rows}
    for name in names:
        if name not in by_name:
            raise UnknownDeployment(name, sorted(by_name))
    return [by_name[name] for name in names]


def report(load: LoadResult, runtime: Runtime, history: History | Snapshot, instance: str,
           publish_address: str = routing.ANY_ADDRESS, workspace: str | None = None, *,
           with_uptime: bool = True) -> list[DeploymentStatus]:
    """Status of every declared deployment plus any container no file declares any more.

    ``workspace``: containers another workspace manages are noted as such, not as about to be removed.
    ``with_uptime`` False skips one inspect per running container (the API does not show it).
    """
    observed = runtime.observe(instance)
    stopped = history.stopped()
    latest_of = history.latest_per_deployment()  # one read of the database, one Build per deployment
    problems = history.problems()  # what the last apply found wrong with a source or a host port
    rows = []
    for name in sorted(set(load.desired) | set(observed.containers)):
        container = observed.containers.get(name)
        latest = latest_of.get(name)
        desired = load.desired.get(name)
        detail = ""
        # A build whose process was killed says BUILDING until the next apply marks it: what runs
        # (or not) is the truth then, with a note, not "building" for ever.
        interrupted = latest is not None and latest.orphaned
        if latest and latest.status in (BuildStatus.BUILDING, BuildStatus.PENDING) and not interrupted:
            state = State.BUILDING
        elif container and container.state == "restarting":
            state = State.CRASH_LOOPING
            detail = container.status
        elif container and container.running:
            state = State.RUNNING
        elif name in stopped or (desired and not desired.spec.enabled):
            state = State.STOPPED
            detail = "stopped by the operator" if name in stopped else "disabled in its file"
        elif container:
            state = State.FAILED
            detail = container.status
        elif latest and (latest.status is BuildStatus.FAILED or interrupted):
            state = State.FAILED
            detail = latest.error_message or ""
        else:
            state = State.NOT_DEPLOYED
        owner = foreign_owner(container, workspace)
        if owner:
            detail = f"managed from {owner}"
        elif desired is None:
            detail = "no file declares it (the next apply removes it)"
        rolled_back = rollback_note(container) if desired is not None else None
        if rolled_back and not detail:
            detail = rolled_back
        if latest and latest.status is BuildStatus.FAILED and state is State.RUNNING:
            detail = f"last build {latest.id} failed; the previous version serves"
        if desired is not None and problems.get(name) and not detail:
            detail = problems[name]  # left alone by the last apply: this is why (its file, line and field)
        if interrupted:
            half_swapped = any(c.deployment == name and c.retiring for c in observed.extra)
            if half_swapped:
                what = "its swap was cut short: `kalpana apply` (or `kalpana watch`) restores the previous container"
            elif state is State.RUNNING:
                what = "the previous version serves"
            else:
                what = "`kalpana apply` repairs it"
            # Read only: the record is marked FAILED by the next apply, which holds the lock.
            detail = f"build {latest.id} was interrupted (its process, pid {latest.pid}, is gone); {what}"
        uptime = None
        if with_uptime and container and container.running:
            started = runtime.started_at(container.id)
            if started:
                uptime = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
        port = container.host_port if container else None
        rows.append(DeploymentStatus(
            name=name, state=state, url=(routing.https_url(container.route_host) if container.route_host
                                         else routing.url(port, publish_address))
            # While a new build runs, the current container still serves: its URL stays useful.
            if state is State.RUNNING or (state is State.BUILDING and container and container.running) else None,
            build_id=container.build_id if container else None, image=container.image if container else None,
            uptime_seconds=uptime, container=container.name if container else None,
            # An interrupted build is recorded FAILED by the next run: say so now.
            last_build_status=(BuildStatus.FAILED.value if interrupted else latest.status.value) if latest else None,
            detail=detail, rolled_back_to=container.build_id if rolled_back else None))
    return rows
