"""What the API shows of each deployment: its spec summary, state, URL, builds and webhook URL.

``kalpana status`` gives the state; this adds what a dashboard card needs from
the files (description, subdomain, ports, the file itself) and the history
(the build that serves now, the newest build), in a fixed number of reads
however many deployments and builds there are.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitops import webhook
from gitops.build import Build
from gitops.config import Settings
from gitops.history import History
from gitops.loader import LoadResult
from gitops.runtime.protocol import Runtime
from gitops.status import DeploymentStatus, report


@dataclass
class DeploymentView:
    """One deployment as the API shows it."""

    status: DeploymentStatus
    description: str | None
    file: str | None  # None: no file declares it any more (a leftover container)
    subdomain: str | None
    port: int | None
    exposed_port: int | None  # declared, or the host port handed out
    webhook_url: str
    current_build: Build | None  # the build whose image runs (or ran last) in its container
    last_build: Build | None  # the newest build, whatever its status

    @property
    def name(self) -> str:
        return self.status.name


def overview(load: LoadResult, runtime: Runtime, history: History, settings: Settings,
             only: str | None = None) -> list[DeploymentView]:
    """Every declared deployment (and leftover container), or only the one named ``only``."""
    snapshot = history.snapshot()  # one parse of the history for every question below
    rows = report(load, runtime, snapshot, settings.instance, settings.publish_address, with_uptime=False)
    if only is not None:
        rows = [row for row in rows if row.name == only]
    latest = snapshot.latest_per_deployment()
    running = snapshot.by_ids({row.build_id for row in rows if row.build_id})
    ports = snapshot.assigned_ports()
    base = (settings.public_url or f"http://{settings.listen}").rstrip("/")
    views = []
    for row in rows:
        d = load.desired.get(row.name)
        spec = d.spec if d else None
        views.append(DeploymentView(
            status=row, description=spec.description if spec else None, file=d.file if d else None,
            subdomain=spec.subdomain if spec else None, port=spec.port if spec else None,
            exposed_port=(spec.exposed_port if spec and spec.exposed_port else ports.get(row.name)),
            webhook_url=base + webhook.DEPLOYMENT_PATH.format(name=row.name),
            current_build=running.get(row.build_id) if row.build_id else None, last_build=latest.get(row.name)))
    return views
