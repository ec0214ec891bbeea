"""What runs, per deployment: the report behind `kalpana status`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import Enum

from gitops import routing
from gitops.build import BuildStatus
from gitops.history import History, Snapshot
from gitops.loader import LoadResult
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

    def to_dict(self) -> dict:
        """JSON form (`kalpana status --json`)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data


def report(load: LoadResult, runtime: Runtime, history: History | Snapshot, instance: str,
           publish_address: str = routing.ANY_ADDRESS, *, with_uptime: bool = True) -> list[DeploymentStatus]:
    """Status of every declared deployment plus any container no file declares any more.

    ``with_uptime`` False skips one inspect per running container (the API does not show it).
    """
    observed = runtime.observe(instance)
    stopped = history.stopped()
    latest_of = history.latest_per_deployment()  # one read of the database, one Build per deployment
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
        elif latest and latest.status is BuildStatus.FAILED:
            state = State.FAILED
            detail = latest.error_message or ""
        else:
            state = State.NOT_DEPLOYED
        if desired is None:
            detail = "no file declares it (the next apply removes it)"
        if latest and latest.status is BuildStatus.FAILED and state is State.RUNNING:
            detail = f"last build {latest.id} failed; the previous version serves"
        if interrupted:
            half_swapped = any(c.deployment == name and c.retiring for c in observed.extra)
            if half_swapped:
                what = "its swap was cut short: `kalpana apply` (or `kalpana watch`) restores the previous container"
            elif state is State.RUNNING:
                what = "the previous version serves"
            else:
                what = "`kalpana apply` repairs it"
            detail = f"build {latest.id} was interrupted (its process is gone); {what}"
        uptime = None
        if with_uptime and container and container.running:
            started = runtime.started_at(container.id)
            if started:
                uptime = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
        port = container.host_port if container else None
        rows.append(DeploymentStatus(
            name=name, state=state, url=routing.url(port, publish_address) if state is State.RUNNING else None,
            build_id=container.build_id if container else None, image=container.image if container else None,
            uptime_seconds=uptime, container=container.name if container else None,
            # An interrupted build is recorded FAILED by the next run: say so now.
            last_build_status=(BuildStatus.FAILED.value if interrupted else latest.status.value) if latest else None,
            detail=detail))
    return rows
