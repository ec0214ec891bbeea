"""The Traefik that serves subdomain mode: Kalpana's own ``kalpana-traefik``, or one the user runs.

Kalpana's own container is started by the first apply that routes a deployment (or
``kalpana traefik up``). It reads routes from Kalpana's route directory only (the file
provider; the Docker socket is not mounted, so an internet-facing proxy holds no key to the
host), listens on web :80 (every request redirected to HTTPS) and websecure :443, gets
certificates by ACME HTTP-01 into ``acme.json`` on a named volume that ``down`` never
removes, and restarts unless stopped. Static configuration keys, as documented:

- entrypoints and the redirect: https://doc.traefik.io/traefik/reference/install-configuration/entrypoints/
  (``--entryPoints.web.http.redirections.entryPoint.to/scheme``)
- ACME: https://doc.traefik.io/traefik/https/acme/ (``certificatesResolvers.<r>.acme.email/storage/
  caServer/httpChallenge.entryPoint``; the staging ``caServer`` for experiments)
- file provider: https://doc.traefik.io/traefik/providers/file/ (``providers.file.directory/watch``)
- dashboard: https://doc.traefik.io/traefik/operations/dashboard/ (``api.dashboard``; ``api.insecure``
  serves it on the ``traefik`` entrypoint, :8080, which Kalpana publishes on 127.0.0.1 only by default)

These flags are the same in Traefik v2.10+ and v3.

A Traefik the user already runs on ``traefik_network`` (a container of a ``traefik`` image not
made by Kalpana) is used and never duplicated: when it mounts our route directory it serves
the file routes; otherwise Kalpana falls back to Docker labels (see ``routing.route_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from gitops import labels as L
from gitops.config import Settings
from gitops.errors import ImageMissing, KalpanaError
from gitops.runtime.objects import Container
from gitops.runtime.protocol import ContainerConfig, Runtime

ROUTES_MOUNT = "/etc/traefik/kalpana"  # where the route directory appears inside kalpana-traefik
ACME_MOUNT = "/letsencrypt"
STAGING_CA = "https://acme-staging-v02.api.letsencrypt.org/directory"
DASHBOARD_PORT = 8080  # Traefik's own "traefik" entrypoint


class TraefikMode(str, Enum):
    """Which Traefik serves this instance's routes."""

    OURS = "kalpana"  #: kalpana-traefik, reading the route directory
    USER_FILE = "user (file provider)"  #: the user's Traefik, with our route directory mounted
    USER_LABELS = "user (docker labels)"  #: the user's Traefik without our directory: routes are labels
    NONE = "none"  #: nothing runs yet


@dataclass(frozen=True)
class TraefikState:
    """What ``kalpana traefik status`` shows."""

    mode: TraefikMode
    container: str | None
    running: bool
    image: str | None
    network: str
    routes_dir: str

    def to_dict(self) -> dict:
        """JSON form."""
        return {"mode": self.mode.value, "container": self.container, "running": self.running, "image": self.image,
                "network": self.network, "routes_dir": self.routes_dir}


def command(settings: Settings) -> list[str]:
    """The static configuration of kalpana-traefik, as command-line flags."""
    web, secure, resolver = (settings.traefik_web_entrypoint, settings.traefik_websecure_entrypoint,
                             settings.traefik_cert_resolver)
    acme = f"--certificatesresolvers.{resolver}.acme"
    args = [
        f"--providers.file.directory={ROUTES_MOUNT}",
        "--providers.file.watch=true",
        f"--entrypoints.{web}.address=:80",
        f"--entrypoints.{web}.http.redirections.entrypoint.to={secure}",
        f"--entrypoints.{web}.http.redirections.entrypoint.scheme=https",
        f"--entrypoints.{secure}.address=:443",
        f"{acme}.storage={ACME_MOUNT}/acme.json",
        f"{acme}.httpchallenge.entrypoint={web}",
    ]
    if settings.traefik_email:
        args.append(f"{acme}.email={settings.traefik_email}")
    if settings.traefik_acme_staging:
        args.append(f"{acme}.caserver={STAGING_CA}")
    if settings.traefik_dashboard:
        args += ["--api.dashboard=true", "--api.insecure=true", f"--entrypoints.traefik.address=:{DASHBOARD_PORT}"]
    return args


def container_config(settings: Settings) -> ContainerConfig:
    """kalpana-traefik: image, flags, ports 80/443 (+ the dashboard on its own address), volume, network."""
    instance = settings.instance
    published = [(80, "0.0.0.0", settings.traefik_http_port), (443, "0.0.0.0", settings.traefik_https_port)]
    if settings.traefik_dashboard:
        host, _, port = settings.traefik_dashboard_address.rpartition(":")
        published.append((DASHBOARD_PORT, host or "127.0.0.1", int(port)))
    return ContainerConfig(
        name=L.traefik_name(instance), image=settings.traefik_image, command=command(settings),
        labels={L.MANAGED_BY: L.MANAGED_BY_VALUE, L.INSTANCE: instance, L.ROLE: L.TRAEFIK_ROLE},
        network=settings.traefik_network, published=tuple(published),
        mounts=((L.acme_volume(instance), ACME_MOUNT, False), (str(settings.routes_path), ROUTES_MOUNT, True)))


def _is_traefik(container: Container) -> bool:
    repository = container.image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return repository == "traefik" or container.labels.get("org.opencontainers.image.title", "").lower() == "traefik"


class TraefikManager:
    """Finds, starts and stops the Traefik of one instance."""

    def __init__(self, runtime: Runtime, settings: Settings):
        self.runtime = runtime
        self.settings = settings

    @property
    def name(self) -> str:
        return L.traefik_name(self.settings.instance)

    def user_traefik(self) -> Container | None:
        """A Traefik on our network that Kalpana did not make (the user's), if one runs."""
        for container in self.runtime.containers_on_network(self.settings.traefik_network):
            if container.labels.get(L.MANAGED_BY) == L.MANAGED_BY_VALUE:
                continue
            if _is_traefik(container):
                return container
        return None

    def state(self) -> TraefikState:
        """Which Traefik serves the routes, and whether it runs."""
        settings = self.settings
        routes = str(settings.routes_path)
        ours = self.runtime.container_named(self.name)
        if ours is not None:
            return TraefikState(TraefikMode.OURS, ours.name, ours.running, ours.image, settings.traefik_network, routes)
        user = self.user_traefik()
        if user is not None:
            reads = any(Path(m) == Path(routes) for m in user.mounts)
            mode = TraefikMode.USER_FILE if reads else TraefikMode.USER_LABELS
            return TraefikState(mode, user.name, True, user.image, settings.traefik_network, routes)
        return TraefikState(TraefikMode.NONE, None, False, None, settings.traefik_network, routes)

    def ensure_network(self) -> bool:
        """The shared network, created (labelled with this instance) when missing; True when created."""
        return self.runtime.ensure_network(self.settings.traefik_network,
                                           {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.INSTANCE: self.settings.instance})

    def up(self) -> tuple[TraefikState, bool]:
        """Make sure a Traefik serves the routes: (its state, whether kalpana-traefik was started now).

        A user's Traefik on the network is used as it is. ImageMissing-like KalpanaError, naming
        the image and how to provide it, when kalpana-traefik's image is not here and cannot be pulled.
        """
        self.ensure_network()
        state = self.state()
        if state.mode is not TraefikMode.NONE and (state.running or state.mode is not TraefikMode.OURS):
            return state, False
        settings = self.settings
        try:
            self.runtime.ensure_image(settings.traefik_image)
        except ImageMissing as exc:
            # From the fields, not the text: Docker's detail itself holds colons ("Get "https://...").
            detail = " ".join(exc.detail.split())
            raise KalpanaError(
                f"Traefik image {exc.image!r} is not on this Docker host and could not be pulled"
                f"{f' ({detail})' if detail else ''}: run `docker pull {settings.traefik_image}` where a registry is "
                "reachable (or `docker load` a saved copy), or set traefik_image in kalpana.yaml "
                "(KALPANA_TRAEFIK_IMAGE) to an image you have; no deployment was changed") from None
        settings.routes_path.mkdir(parents=True, exist_ok=True)
        if state.mode is TraefikMode.OURS:  # created but stopped: start it as it is
            existing = self.runtime.container_named(self.name)
            self.runtime.start(existing.id)
        else:
            self.runtime.ensure_volume(L.acme_volume(settings.instance),
                                       {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.INSTANCE: settings.instance})
            container_id = self.runtime.create(container_config(settings))
            try:
                self.runtime.start(container_id)
            except KalpanaError as exc:
                self.runtime.remove(container_id)  # a half-made kalpana-traefik would be taken for a working one
                raise KalpanaError(
                    f"cannot start {self.name}: {str(exc).split(': free that host port')[0]}: free host ports "
                    f"{settings.traefik_http_port}/{settings.traefik_https_port} or set traefik_http_port / "
                    "traefik_https_port in kalpana.yaml; no deployment was changed") from None
        return self.state(), True

    def down(self) -> Container | None:
        """Stop and remove kalpana-traefik (never its certificate volume); None when it did not exist."""
        ours = self.runtime.container_named(self.name)
        if ours is None:
            return None
        self.runtime.stop(ours.id, timeout=self.settings.stop_timeout)
        self.runtime.remove(ours.id)
        return ours
