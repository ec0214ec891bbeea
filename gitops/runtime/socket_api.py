"""The Docker Engine API over its socket, with the standard library only.

Every command starts a fresh Python process, and importing the docker SDK (with
requests, urllib3 and certifi behind it) costs nearly as much CPU as a whole
no-op `kalpana apply`. What an apply of unchanged or redeploy-only deployments needs
(listings, inspecting containers and images, create/start/stop/remove/rename)
therefore goes through this module; the SDK is imported only to build or pull
images (its registry credentials and build streaming are worth keeping there).
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, urlsplit


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class APIStatus(Exception):
    """Docker answered with an error status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def segment(value: str) -> str:
    """``value`` quoted for one path segment; image references keep their ``/`` and ``:`` as the SDK sends them."""
    return quote(value, safe="/:@")


class SocketAPI:
    """Requests to a Docker engine on a unix socket or plain tcp:// address (JSON in, JSON out)."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address
        self.timeout = timeout
        parts = urlsplit(address)
        self._scheme = parts.scheme
        self._target = parts.path if parts.scheme == "unix" else parts.netloc

    @staticmethod
    def supports(address: str) -> bool:
        """True for unix:// and tcp:// (without TLS) addresses; others need the SDK."""
        return address.startswith(("unix://", "tcp://", "http://"))

    def get(self, path: str, **params: object) -> object:
        """GET ``path`` and decode JSON; OSError when nobody answers, APIStatus on an error status."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: object = None, *, timeout: float | None = None, **params: object) -> object:
        """POST (``body`` as JSON when given); the decoded answer, or None when it has no body (204, 304)."""
        return self.request("POST", path, params=params, body=body, timeout=timeout)

    def delete(self, path: str, **params: object) -> object:
        """DELETE ``path``; the decoded answer, or None when it has no body."""
        return self.request("DELETE", path, params=params)

    def request(self, method: str, path: str, *, params: dict[str, object] | None = None, body: object = None,
                timeout: float | None = None, raw: bool = False) -> object:
        """One request; OSError when nobody answers, APIStatus on a status >= 400.

        ``timeout`` replaces the default for calls that wait on purpose (a stop's grace period);
        ``raw`` returns the body as bytes instead of decoding JSON (container logs).
        """
        query = "&".join(f"{k}={quote(_param(v), safe='')}" for k, v in (params or {}).items() if v is not None)
        timeout = self.timeout if timeout is None else timeout
        conn = (_UnixConnection(self._target, timeout) if self._scheme == "unix"
                else http.client.HTTPConnection(self._target, timeout=timeout))
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path + (f"?{query}" if query else ""), body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except http.client.HTTPException as exc:
            raise OSError(f"bad answer from {self.address}: {exc}") from None
        finally:
            conn.close()
        if response.status >= 400:
            try:
                message = json.loads(data).get("message", "")
            except (ValueError, AttributeError):
                message = data[:200].decode("utf-8", "replace").strip()
            raise APIStatus(response.status, message or f"HTTP {response.status}")
        if raw:
            return data
        return json.loads(data) if data.strip() else None


def demultiplex(data: bytes) -> bytes:
    """The payloads of Docker's multiplexed stream (8-byte frame headers: stream, 0, 0, 0, size), joined."""
    out, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4:at + 8], "big")
        out.append(data[at + 8:at + 8 + size])
        at += 8 + size
    return b"".join(out)


def _param(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # Docker reads 1/0 (and true/false) for its boolean query parameters
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)
