"""Starting the HTTP server on a thread beside the daemon (uvicorn lives here only)."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI

from gitops.errors import KalpanaError


class Server:
    """uvicorn serving ``app`` on ``listen`` (``host:port``) from a background thread."""

    def __init__(self, app: FastAPI, listen: str):
        import uvicorn

        host, _, port = listen.rpartition(":")
        self.listen = listen
        config = uvicorn.Config(app, host=host or "127.0.0.1", port=int(port), log_level="warning",
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="kalpana-server", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Listen now; KalpanaError when the address cannot be had (e.g. another process holds the port)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise KalpanaError(f"cannot listen on {self.listen}: is another process using it? "
                               "Set `listen` in kalpana.yaml")

    def stop(self) -> None:
        """Ask the server to close (it finishes the requests in flight)."""
        self._server.should_exit = True
