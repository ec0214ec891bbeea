"""Is a freshly started container ready? Probes from the host."""

from __future__ import annotations

import http.client
import socket

from gitops.spec import HealthCheck, HealthKind


def probe(check: HealthCheck, port: int | None, host: str = "127.0.0.1") -> tuple[bool, str]:
    """One probe of ``host:port``: (healthy, what was seen). Without a port there is nothing to probe: healthy.

    The deployer probes the container's own address where it can: through a host port,
    Docker's proxy accepts connections before the app does.

    (The model refuses an http check without a port; the deployer then requires the
    container to keep running for a settle time instead.)
    """
    host_port = port
    if check.type is HealthKind.NONE or host_port is None:
        return True, "running"
    if check.type is HealthKind.TCP:
        try:
            with socket.create_connection((host, host_port), timeout=1.0) as sock:
                if host != "127.0.0.1":
                    return True, f"{host}:{host_port} accepts connections"
                # Docker's proxy accepts the connection even when nothing listens behind it,
                # then closes it: a read that returns EOF at once means "not yet".
                sock.settimeout(0.05)
                try:
                    if sock.recv(1) == b"":
                        return False, f"port {host_port} closed the connection"
                except socket.timeout:
                    pass
                return True, f"port {host_port} accepts connections"
        except OSError as exc:
            return False, f"port {host_port}: {exc.strerror or exc}"
    conn = http.client.HTTPConnection(host, host_port, timeout=2.0)
    try:
        conn.request("GET", check.path or "/")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"GET {check.path}: {getattr(exc, 'strerror', None) or exc}"
    finally:
        conn.close()
    return status < 500, f"GET {check.path} -> {status}"
