"""How a deployment is reached: its host port (port mode).

When a file sets no ``exposed_port``, one is assigned once, remembered as
operator intent in the history database, and kept across redeploys so the
URL never changes. Traefik routing arrives in a later change.
"""

from __future__ import annotations

import socket
import zlib
from typing import Protocol

from gitops.errors import KalpanaError
from gitops.spec import Desired

PORT_RANGE = (20000, 29999)  # below the kernel's ephemeral range, so outgoing connections never take them


class PortBook(Protocol):
    """What routing needs from the history: remembered port assignments."""

    def assigned_port(self, deployment: str) -> int | None: ...
    def assign_port(self, deployment: str, port: int) -> None: ...
    def assigned_ports(self) -> dict[str, int]: ...


def host_port(desired: Desired, book: PortBook, *, current: int | None = None, instance: str = "default") -> int | None:
    """The host port for ``desired``: the file's, the remembered one, or a newly assigned free one."""
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
        if port not in taken and port_is_free(port):
            book.assign_port(spec.name, port)
            return port
    raise KalpanaError("no free host port left in 20000-29999: set exposed_port, or remove unused deployments")


def port_is_free(port: int) -> bool:
    """True when nothing on this host listens on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def url(port: int | None) -> str | None:
    """The address users open (port mode)."""
    return f"http://localhost:{port}" if port else None
