"""A few read-only Docker API calls without the docker SDK.

A no-op `kalpana apply` needs two listings. Importing the docker SDK (and
requests, urllib3, certifi behind it) costs about a quarter of that whole
command, so listings go through the standard library; the SDK is imported
only when something is built, started or stopped.
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


class SocketAPI:
    """GET requests to a Docker engine on a unix socket or plain tcp:// address."""

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
        query = "&".join(f"{k}={quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in params.items())
        conn = (_UnixConnection(self._target, self.timeout) if self._scheme == "unix"
                else http.client.HTTPConnection(self._target, timeout=self.timeout))
        try:
            conn.request("GET", path + (f"?{query}" if query else ""))
            response = conn.getresponse()
            body = response.read()
        except http.client.HTTPException as exc:
            raise OSError(f"bad answer from {self.address}: {exc}") from None
        finally:
            conn.close()
        if response.status >= 400:
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body[:200].decode("utf-8", "replace").strip()
            raise APIStatus(response.status, message or f"HTTP {response.status}")
        return json.loads(body)
