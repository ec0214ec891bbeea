"""Small read-only wrappers around Docker's raw listing dicts.

Nobody outside ``gitops.runtime`` indexes Docker's ``attrs``: they ask these
classes, whose named constructors know the raw shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gitops import labels as L


@dataclass(frozen=True)
class Container:
    """One Kalpana-managed container as the engine lists it."""

    id: str
    name: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    status: str  # Docker's human text, e.g. "Up 3 minutes"
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    ports: tuple[tuple[int, int], ...] = ()  # (container port, host port)
    mounts: tuple[str, ...] = ()  # sources: host directories, or volume names
    networks: tuple[str, ...] = ()

    @classmethod
    def from_ps(cls, raw: dict) -> "Container":
        """From one entry of the sparse ``/containers/json`` listing."""
        names = raw.get("Names") or ["/?"]
        ports = tuple((p["PrivatePort"], p["PublicPort"]) for p in raw.get("Ports") or [] if p.get("PublicPort"))
        return cls(id=raw["Id"], name=names[0].lstrip("/"), state=raw.get("State", ""), status=raw.get("Status", ""),
                   image=raw.get("Image", ""), labels=raw.get("Labels") or {}, created=float(raw.get("Created", 0)),
                   ports=tuple(sorted(set(ports))),
                   mounts=tuple(m.get("Source") or m.get("Name") or "" for m in raw.get("Mounts") or []),
                   networks=tuple(((raw.get("NetworkSettings") or {}).get("Networks") or {}).keys()))

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    @property
    def deployment(self) -> str:
        return self.labels.get(L.DEPLOYMENT, "")

    @property
    def build_id(self) -> str | None:
        return self.labels.get(L.BUILD_ID)

    @property
    def revision(self) -> str:
        return self.labels.get(L.REVISION, "")

    @property
    def field_hashes(self) -> dict[str, str]:
        try:
            return json.loads(self.labels.get(L.FIELD_HASHES, "{}"))
        except ValueError:
            return {}

    @property
    def retiring(self) -> bool:
        """The old container of a swap in progress (or of one that died half-way)."""
        return L.is_retired_name(self.name)

    @property
    def trial(self) -> bool:
        """A trial container proving a new version beside the running one: never the deployment's container."""
        return L.is_candidate_name(self.name)

    @property
    def draining(self) -> bool:
        """An old container whose route already moved to its successor (subdomain mode): only to be removed."""
        return L.is_draining_name(self.name)

    @property
    def host_port(self) -> int | None:
        value = self.labels.get(L.HOST_PORT)
        return int(value) if value else None

    @property
    def route_host(self) -> str | None:
        """The host name Traefik routes to it (subdomain mode), else None."""
        return self.labels.get(L.ROUTE_HOST) or None

    @property
    def route_alias(self) -> str | None:
        """Its DNS name on the Traefik network, which its route's server URL names."""
        return self.labels.get(L.ROUTE_ALIAS) or None


@dataclass(frozen=True)
class Image:
    """One image Kalpana built (``kalpana/<name>:<build-id>``)."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    created: float

    @classmethod
    def from_list(cls, raw: dict) -> "Image":
        """From one entry of ``/images/json``."""
        return cls(id=raw["Id"], tags=tuple(t for t in raw.get("RepoTags") or [] if t != "<none>:<none>"),
                   labels=raw.get("Labels") or {}, created=float(raw.get("Created", 0)))

    @property
    def deployment(self) -> str:
        return self.labels.get(L.DEPLOYMENT, "")

    @property
    def build_id(self) -> str | None:
        return self.labels.get(L.BUILD_ID)

    @property
    def build_hash(self) -> str:
        return self.labels.get(L.BUILD_HASH, "")

    @property
    def revision(self) -> str:
        return self.labels.get(L.REVISION, "")

    @property
    def tag(self) -> str | None:
        return self.tags[0] if self.tags else None


@dataclass
class Observed:
    """What this instance has on the Docker host: one listing of containers and one of images."""

    containers: dict[str, Container] = field(default_factory=dict)
    extra: list[Container] = field(default_factory=list)  # duplicates / half-swapped leftovers
    images: dict[str, list[Image]] = field(default_factory=dict)  # newest first

    @classmethod
    def from_lists(cls, containers: list[Container], images: list[Image]) -> "Observed":
        """Group containers and images by deployment label."""
        observed = cls()
        # Prefer the running, newest container that is neither retiring nor a trial as "the" container.
        for c in sorted(containers, key=lambda c: (not (c.retiring or c.trial or c.draining), c.running, c.created)):
            if c.labels.get(L.ROLE):  # Kalpana's own Traefik: no deployment's container
                continue
            if c.deployment in observed.containers:
                observed.extra.append(observed.containers[c.deployment])
            observed.containers[c.deployment] = c
        for image in sorted(images, key=lambda i: i.created, reverse=True):
            observed.images.setdefault(image.deployment, []).append(image)
        return observed
