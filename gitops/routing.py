"""How a deployment is reached: its host port (port mode) or its Traefik route (subdomain mode).

Port mode: when a file sets no ``exposed_port``, one is assigned once, remembered as
operator intent in the history database, and kept across redeploys so the
URL never changes. Host ports are published on one address of this host
(``publish_address``: every interface by default).

Subdomain mode (``traefik_base_url`` set and the file names a ``subdomain``): the
deployment is served at ``https://<subdomain>.<base-url>``. Its route is a Traefik
*file provider* document (``route_document``) that Kalpana writes only once the
container it names is healthy; the keys follow Traefik's documented reference:

- routers/services in a file: https://doc.traefik.io/traefik/reference/routing-configuration/other-providers/file/
  and https://doc.traefik.io/traefik/providers/file/ (``http.routers.<r>.rule/entryPoints/service/tls``,
  ``http.services.<s>.loadBalancer.servers[].url``)
- ``tls.certResolver``: https://doc.traefik.io/traefik/https/acme/ ("each router ... must reference it")
- Docker labels (``traefik_labels``, only for a Traefik that cannot read our route directory):
  https://doc.traefik.io/traefik/routing/providers/docker/ (``traefik.enable``,
  ``traefik.http.routers.<r>.rule``, ``...entrypoints``, ``...tls.certresolver``, ``...service``,
  ``traefik.http.services.<s>.loadbalancer.server.port``, ``traefik.docker.network``)
"""

from __future__ import annotations

import ipaddress
import socket
import zlib
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Protocol

from gitops.errors import KalpanaError
from gitops.spec import Desired
from dataclasses import dataclass

if TYPE_CHECKING:
    from gitops.runtime.objects import Observed

PORT_RANGE = (20000, 29999)  # below the kernel's ephemeral range, so outgoing connections never take them
ANY_ADDRESS = "0.0.0.0"  # publish_address's default: every IPv4 interface


class PortBook(Protocol):
    """What routing needs from the history: remembered port assignments."""

    def assigned_port(self, deployment: str) -> int | None: ...
    def assign_port(self, deployment: str, port: int) -> None: ...
    def assigned_ports(self) -> dict[str, int]: ...


def host_port(desired: Desired, book: PortBook, *, current: int | None = None, instance: str = "default",
              address: str = ANY_ADDRESS) -> int | None:
    """The host port for ``desired``: the file's, the remembered one, or a newly assigned one free on ``address``."""
    spec = desired.spec
    if not spec.port:
        return None
    if spec.exposed_port:
        return spec.exposed_port
    remembered = book.assigned_port(spec.name)
    if remembered:
        return remembered
    if current:
        book.assign_port(spec.name, current)
        return current
    taken = set(book.assigned_ports().values())
    low, high = PORT_RANGE
    span = high - low + 1
    # Start from a spot derived from the instance and name, so ports are stable and spread out,
    # and two instances' deployments of the same name don't race for one port.
    first = zlib.crc32(f"{instance}/{spec.name}".encode()) % span
    for offset in range(span):
        port = low + (first + offset) % span
        if port not in taken and port_is_free(port, address):
            book.assign_port(spec.name, port)
            return port
    raise KalpanaError("no free host port left in 20000-29999: set exposed_port, or remove unused deployments")


def port_is_free(port: int, address: str = ANY_ADDRESS) -> bool:
    """True when nothing on this host listens on ``port`` where Docker would publish it (``address``).

    A listener on every interface also holds the port for one address, and the other way
    round: the kernel refuses the bind in both cases.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def busy_message(port: int) -> str:
    """What to tell the user about a host port something outside Kalpana holds."""
    return f"port {port} is in use by another process: free it or choose another exposed_port"


def busy_ports(desired: Iterable[Desired], observed: Observed, *, address: str = ANY_ADDRESS,
               is_free: Callable[[int, str], bool] = port_is_free,
               declared: Mapping[str, Desired] | None = None) -> dict[str, str]:
    """Deployments whose ``exposed_port`` is held by something else: {name: message}.

    Checked before anything is built, so a taken port fails in ``plan`` instead of after the build
    with Docker's text. A deployment's own container keeps its port through a swap: not busy. A port
    another deployment of this instance holds is busy unless that deployment moves off it (its file,
    in ``declared``, names another exposed_port); two files claiming one port are the loader's.
    Disabled deployments are skipped: nothing will bind their port.
    """
    holders: dict[int, set[str]] = {}
    for container in list(observed.containers.values()) + observed.extra:
        ports = {public for _private, public in container.ports}
        if container.running and container.host_port:
            ports.add(container.host_port)
        for public in ports:
            holders.setdefault(public, set()).add(container.deployment)
    declared = declared or {}
    busy: dict[str, str] = {}
    for d in desired:
        port = d.spec.exposed_port
        if not (d.spec.enabled and d.spec.port and port):
            continue
        others = holders.get(port, set()) - {d.name}
        staying = sorted(o for o in others if o in declared and declared[o].spec.exposed_port in (None, port))
        if staying:
            busy[d.name] = (f"port {port} is held by deployment {staying[0]} ({declared[staying[0]].file}): "
                            "choose another exposed_port, or move that deployment off it first")
        elif port not in holders and not is_free(port, address):
            busy[d.name] = busy_message(port)
    return busy


def local_address(address: str = ANY_ADDRESS) -> str:
    """The address this host reaches a port published on ``address`` at (a wildcard means loopback)."""
    if address == ANY_ADDRESS:
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def url(port: int | None, address: str = ANY_ADDRESS) -> str | None:
    """The address users open (port mode): localhost, unless ports are published on one other address only."""
    if not port:
        return None
    host = local_address(address)
    if host in ("127.0.0.1", "::1"):
        return f"http://localhost:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- subdomain mode ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSettings:
    """What subdomain mode needs from the settings (one value, so the deployer takes no dozen keywords)."""

    base_url: str
    network: str
    entrypoint: str = "websecure"
    cert_resolver: str = "letsencrypt"
    drain_seconds: float = 3.0
    labels: bool = False  # the Traefik in use reads Docker labels only (no access to our route directory)

    @classmethod
    def from_settings(cls, settings) -> "RouteSettings | None":
        """None without a base URL (every deployment is in port mode)."""
        if not settings.traefik_base_url:
            return None
        return cls(settings.traefik_base_url, settings.traefik_network, settings.traefik_websecure_entrypoint,
                   settings.traefik_cert_resolver, settings.traefik_drain_seconds)


def route_host(desired: Desired, base_url: str | None) -> str | None:
    """``<subdomain>.<base-url>`` in subdomain mode; None in port mode (no base URL or no subdomain)."""
    if not (base_url and desired.spec.subdomain and desired.spec.port):
        return None
    return f"{desired.spec.subdomain}.{base_url}"


def missing_base_url(desired: Desired, base_url: str | None) -> str | None:
    """The warning for a subdomain with no base URL to serve it under (it falls back to port mode), or None.

    ``apply`` emits it and ``validate`` prints it: a warning, not an error, so one file can serve both setups.
    """
    spec = desired.spec
    if not spec.subdomain or base_url or not spec.enabled:
        return None
    return (f"{desired.file}:{desired.line_of('subdomain')}: subdomain {spec.subdomain!r} needs a base URL: "
            "set TRAEFIK_BASE_URL (traefik_base_url in kalpana.yaml); until then it is served in port mode")


def route_name(instance: str, deployment: str) -> str:
    """The router's and the service's name: unique per instance and deployment on one Traefik."""
    return f"kalpana-{instance}-{deployment}"


def server_url(alias: str, port: int) -> str:
    """Where Traefik sends requests: the container's alias on the shared network, and the deployment's port."""
    return f"http://{alias}:{port}"


def route_document(name: str, host: str, servers: Iterable[str], route: RouteSettings) -> dict:
    """One deployment's dynamic configuration for Traefik's file provider.

    A router on the websecure entrypoint with ``Host(`host`)`` and the certificate resolver, and an
    explicit service listing ``servers`` (only containers Kalpana proved healthy). The HTTP->HTTPS
    redirect is the web entrypoint's (static configuration, ``traefik.command``).
    """
    return {"http": {
        "routers": {name: {"rule": f"Host(`{host}`)", "entryPoints": [route.entrypoint], "service": name,
                           "tls": {"certResolver": route.cert_resolver}}},
        "services": {name: {"loadBalancer": {"servers": [{"url": url} for url in servers]}}},
    }}


def route_labels(name: str, host: str, port: int, route: RouteSettings) -> dict[str, str]:
    """Docker provider labels for the same route (only for a Traefik without our route directory).

    Limit: Traefik's Docker provider routes to a container as soon as it runs (unless the image has a
    Docker HEALTHCHECK), so a redeploy in this mode can send requests to a container still starting.
    """
    return {
        "traefik.enable": "true",
        f"traefik.http.routers.{name}.rule": f"Host(`{host}`)",
        f"traefik.http.routers.{name}.entrypoints": route.entrypoint,
        f"traefik.http.routers.{name}.tls.certresolver": route.cert_resolver,
        f"traefik.http.routers.{name}.service": name,
        f"traefik.http.services.{name}.loadbalancer.server.port": str(port),
        # On several networks Traefik would pick one at random (intermittent 504s): name ours.
        "traefik.docker.network": route.network,
    }


def https_url(host: str) -> str:
    """The address users open in subdomain mode."""
    return f"https://{host}"
