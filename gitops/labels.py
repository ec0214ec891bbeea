"""Label keys and the naming of containers and images.

Every key Kalpana writes onto Docker objects lives here, so that the
observer, the planner and the tests agree on one spelling.
"""

from __future__ import annotations

import hashlib
import json

PREFIX = "dev.kalpana"

MANAGED_BY = f"{PREFIX}.managed-by"
MANAGED_BY_VALUE = "kalpana"
INSTANCE = f"{PREFIX}.instance"
DEPLOYMENT = f"{PREFIX}.deployment"
BUILD_HASH = f"{PREFIX}.build-hash"
RUNTIME_HASH = f"{PREFIX}.runtime-hash"
FIELD_HASHES = f"{PREFIX}.field-hashes"
REVISION = f"{PREFIX}.revision"
BUILD_ID = f"{PREFIX}.build-id"
HOST_PORT = f"{PREFIX}.host-port"
# The deployments directory whose files manage the container: two workspaces on one instance
# must not prune (or silently take over) each other's deployments. Absent on containers made
# before it existed: those count as managed from whichever workspace looks at them.
WORKSPACE = f"{PREFIX}.workspace"
# Set by `kalpana rollback` to the build that served what the files declare; a normal deploy
# makes a container without it, so its presence means "serving a rollback".
ROLLED_BACK_FROM = f"{PREFIX}.rolled-back-from"
# Digest of the health check the container was judged by: a changed check alone redeploys
# nothing (it only gates the next deploy), but the plan says it changed.
HEALTHCHECK_HASH = f"{PREFIX}.healthcheck-hash"

# Subdomain mode: the host Traefik routes to the container, and its unique DNS alias on the Traefik
# network (the route's server URL names it, so a rename or a new IP never breaks the route).
ROUTE_HOST = f"{PREFIX}.route-host"
ROUTE_ALIAS = f"{PREFIX}.route-alias"
# What an infrastructure container (not a deployment's) is for: "traefik".
ROLE = f"{PREFIX}.role"
TRAEFIK_ROLE = "traefik"

IMAGE_REPOSITORY = "kalpana"
# Deployment names may not contain "--" (spec.py), so no deployment's own container ends like this.
RETIRING_SUFFIX = "--retiring"
CANDIDATE_SUFFIX = "--candidate"
# Subdomain mode: the old container after its route moved to the new one, while requests drain.
DRAINING_SUFFIX = "--draining"


def instance_filter(instance: str) -> list[str]:
    """Docker ``label`` filter selecting every object of one Kalpana instance."""
    return [f"{MANAGED_BY}={MANAGED_BY_VALUE}", f"{INSTANCE}={instance}"]


def base_labels(instance: str, deployment: str) -> dict[str, str]:
    """Labels every object made for ``deployment`` carries."""
    return {MANAGED_BY: MANAGED_BY_VALUE, INSTANCE: instance, DEPLOYMENT: deployment}


def container_name(instance: str, deployment: str) -> str:
    """The container is named after the deployment (``<instance>_<name>`` outside the default instance).

    ``_`` never occurs in instance or deployment names, so two instances can't collide.
    """
    return deployment if instance == "default" else f"{instance}_{deployment}"


def retired_name(instance: str, deployment: str) -> str:
    """Name the old container carries while its successor starts (so a crash mid-swap is recognisable)."""
    return f"{container_name(instance, deployment)}{RETIRING_SUFFIX}"


def candidate_name(instance: str, deployment: str) -> str:
    """Name of the trial container that proves a new version beside the running one (port mode)."""
    return f"{container_name(instance, deployment)}{CANDIDATE_SUFFIX}"


def draining_name(instance: str, deployment: str) -> str:
    """Name of an old container no route names any more, in its drain time before it stops (subdomain mode)."""
    return f"{container_name(instance, deployment)}{DRAINING_SUFFIX}"


def is_draining_name(name: str) -> bool:
    """True for a drained container's name: a leftover one is removed, never restored."""
    return name.endswith(DRAINING_SUFFIX)


def is_candidate_name(name: str) -> bool:
    """True for a trial container's name: a leftover one is never the deployment's container."""
    return name.endswith(CANDIDATE_SUFFIX)


def is_retired_name(name: str) -> bool:
    """True for the name of an old container left half-way through a swap."""
    return name.endswith(RETIRING_SUFFIX)


def traefik_name(instance: str) -> str:
    """Kalpana's own Traefik container: ``kalpana-traefik`` (``<instance>_kalpana-traefik`` outside default)."""
    return container_name(instance, "kalpana-traefik")


def acme_volume(instance: str) -> str:
    """The named volume holding Traefik's acme.json (certificates): never removed by Kalpana."""
    return container_name(instance, "kalpana-traefik-acme")


def image_repository(instance: str, deployment: str) -> str:
    """Repository of a deployment's images: ``kalpana/<name>``, or ``kalpana/<instance>/<name>`` outside default."""
    name = deployment if instance == "default" else f"{instance}/{deployment}"
    return f"{IMAGE_REPOSITORY}/{name}"


def image_tag(instance: str, deployment: str, build_id: str) -> str:
    """The immutable tag of one build: ``kalpana/<name>:<build-id>``."""
    return f"{image_repository(instance, deployment)}:{build_id}"


def dumps_labels(hashes: dict[str, str]) -> str:
    """Field hashes as a compact, stable label value."""
    return json.dumps(hashes, sort_keys=True, separators=(",", ":"))


def digest(value: object) -> str:
    """A short stable digest of a JSON-able value, as a label value (the spec's field hashes use the same form)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
