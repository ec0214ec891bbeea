"""The route directory: one Traefik file-provider document per routed deployment.

Traefik watches the directory (``--providers.file.directory`` + ``--providers.file.watch``,
https://doc.traefik.io/traefik/providers/file/) and reloads on every change. A document is
replaced atomically: written to a temporary name Traefik ignores (it loads ``.yml``/``.yaml``/
``.toml`` files only), then renamed over the old one, so Traefik never reads half a file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from gitops import routing
from gitops.errors import KalpanaError

SUFFIX = ".yml"


@dataclass(frozen=True)
class RouteEntry:
    """One route as the directory holds it: host -> server URLs."""

    deployment: str
    host: str
    servers: tuple[str, ...]


class RouteTable:
    """Reads and atomically rewrites the route documents of one Kalpana instance."""

    def __init__(self, directory: Path, instance: str):
        self.directory = Path(directory)
        self.instance = instance

    def path(self, deployment: str) -> Path:
        return self.directory / f"{deployment}{SUFFIX}"

    def write(self, deployment: str, host: str, servers: list[str], route: routing.RouteSettings) -> None:
        """Route ``host`` to exactly ``servers`` (replacing what was routed before), atomically."""
        name = routing.route_name(self.instance, deployment)
        text = yaml.safe_dump(routing.route_document(name, host, servers, route), sort_keys=False)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{deployment}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)  # Traefik may run as another user
            os.replace(temp, self.path(deployment))
        except OSError as exc:
            raise KalpanaError(f"cannot write the route of {deployment} in {self.directory}: {exc.strerror or exc}: "
                               "check that directory's permissions") from None

    def drop(self, deployment: str) -> bool:
        """Remove a deployment's route (Traefik stops routing its host); True when there was one."""
        try:
            self.path(deployment).unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise KalpanaError(f"cannot remove the route of {deployment} in {self.directory}: "
                               f"{exc.strerror or exc}: check that directory's permissions") from None

    def get(self, deployment: str) -> RouteEntry | None:
        """The route of one deployment, or None."""
        return _parse(self.path(deployment))

    def entries(self) -> list[RouteEntry]:
        """Every route in the directory, by deployment name."""
        if not self.directory.is_dir():
            return []
        found = [_parse(p) for p in sorted(self.directory.glob(f"*{SUFFIX}"))]
        return [entry for entry in found if entry is not None]

    def ours(self) -> list[str]:
        """Deployments with a route document this instance wrote (its router's name is ours).

        The directory is mounted into Traefik, so a user may keep files of their own there, and
        those are never touched.
        """
        if not self.directory.is_dir():
            return []
        names = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                data = yaml.safe_load(path.read_text()) or {}
                routers = (data.get("http") or {}).get("routers") or {}
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if routing.route_name(self.instance, path.stem) in routers:
                names.append(path.stem)
        return names


def _parse(path: Path) -> RouteEntry | None:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    http = data.get("http") or {}
    routers = http.get("routers") or {}
    services = http.get("services") or {}
    for router in routers.values():
        rule = str(router.get("rule", ""))
        host = rule.removeprefix("Host(`").removesuffix("`)")
        service = services.get(router.get("service"), {})
        servers = tuple(s.get("url", "") for s in (service.get("loadBalancer") or {}).get("servers") or [])
        return RouteEntry(path.stem, host, servers)
    return None
