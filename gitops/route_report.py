"""What `kalpana routes` shows: every routed host, its target container and port, and whether it is ready now.

Read from where the truth lives: the route directory Traefik reads (file routes), the
containers' labels (label routes, for a user's Traefik without our directory), and one
health probe of each target on its own address, as the deployer probes a new container.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from gitops import health
from gitops.loader import LoadResult
from gitops.routes import RouteTable
from gitops.runtime.protocol import Runtime
from gitops.spec import HealthCheck
from gitops.traefik import TraefikMode, TraefikState


@dataclass
class RouteStatus:
    """One row of `kalpana routes`."""

    host: str
    deployment: str
    container: str | None
    port: int | None
    ready: bool
    detail: str
    via: str  # "file" (the route directory) or "labels"

    def to_dict(self) -> dict:
        """JSON form (`kalpana routes --json`)."""
        return asdict(self)


@dataclass
class RoutesReport:
    """What `kalpana routes` shows: the rows, and the Traefik that should serve them.

    READY is about the target container; ``served`` says whether any Traefik runs to read the
    routes at all (after `kalpana traefik down` every target may be ready and nothing is served).
    """

    rows: list[RouteStatus]
    traefik: TraefikState

    @property
    def served(self) -> bool:
        """A Traefik runs that serves these routes."""
        return self.traefik.mode is not TraefikMode.NONE and self.traefik.running

    def unserved_reason(self) -> str | None:
        """One line saying why the routes are not served and what to do, or None when they are."""
        if self.served or not self.rows:
            return None
        state = self.traefik
        if state.mode is TraefikMode.NONE:
            return (f"no Traefik runs on network {state.network}: these routes are not served "
                    "(`kalpana traefik up` starts kalpana-traefik)")
        return (f"the Traefik container {state.container} is not running: these routes are not served "
                "(`kalpana traefik up` starts it)")

    def to_dict(self) -> dict:
        """JSON form (`kalpana routes --json`)."""
        return {"routes": [r.to_dict() for r in self.rows], "served": self.served,
                "traefik": self.traefik.to_dict(), "note": self.unserved_reason()}


def report(routes: RouteTable, runtime: Runtime, load: LoadResult, instance: str) -> list[RouteStatus]:
    """Every route of this instance, sorted by host."""
    observed = runtime.observe(instance)
    everything = list(observed.containers.values()) + observed.extra
    by_alias = {c.route_alias: c for c in everything if c.route_alias}
    rows: list[RouteStatus] = []
    in_files: set[str] = set()
    for entry in routes.entries():
        for server in entry.servers or ("",):
            url = urlsplit(server)
            container = by_alias.get(url.hostname or "")
            in_files.add(entry.deployment)
            rows.append(_row(entry.host, entry.deployment, container, url.port, "file", runtime, load))
    for c in everything:
        if c.route_host and c.labels.get("traefik.enable") == "true" and c.deployment not in in_files:
            desired = load.desired.get(c.deployment)
            rows.append(_row(c.route_host, c.deployment, c, desired.spec.port if desired else None, "labels",
                             runtime, load))
    return sorted(rows, key=lambda r: (r.host, r.container or ""))


def _row(host: str, deployment: str, container, port: int | None, via: str, runtime: Runtime,
         load: LoadResult) -> RouteStatus:
    if container is None:
        return RouteStatus(host, deployment, None, port, False, "no container answers to this server", via)
    if not container.running:
        return RouteStatus(host, deployment, container.name, port, False, f"container {container.state}", via)
    address = runtime.address_of(container.id)
    if not address or not port:
        return RouteStatus(host, deployment, container.name, port, False, "no address to probe", via)
    desired = load.desired.get(deployment)
    check = desired.spec.healthcheck if desired else HealthCheck()
    ok, seen = health.probe(check, port, address)
    return RouteStatus(host, deployment, container.name, port, ok, seen, via)
