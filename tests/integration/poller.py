"""A port's availability, measured from outside: a thread that GETs http://<host>:<port>/ every few ms.

Used by the zero-downtime tests and by benchmarks/redeploy.py and benchmarks/failed_deploy.py, which import
it with the repository root on ``sys.path``; so it needs nothing but the standard library (no pytest).

    with Poller(port) as poller:      # waits for a first 200, then counts from zero
        apply()
        figures = poller.finish()     # waits for a 200 after now, stops, returns the counts

A gap is the time between two 200s; a finish that sees no 200 again counts the time since the last one.
Times are ``time.perf_counter()`` values.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass


def get_problem(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> str | None:
    """GET http://<host>:<port>/: None for a 200, else what went wrong (``HTTP 502``, ``ConnectionRefusedError: …``)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return None if response.status == 200 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def wait_200(port: int, timeout: float, host: str = "127.0.0.1", interval: float = 0.01) -> None:
    """Return at the first 200 from http://<host>:<port>/; RuntimeError if none comes within ``timeout`` s."""
    limit = time.monotonic() + timeout
    while get_problem(port, host, timeout=0.5) is not None:
        if time.monotonic() > limit:
            raise RuntimeError(f"port {port}: no 200 within {timeout:g} s")
        time.sleep(interval)


@dataclass(frozen=True)
class PollFigures:
    """What a Poller saw from its first 200 to ``finish()``."""

    requests: int
    failed: int
    longest_gap: float  # seconds without a 200, the open one included when it never served again
    served_again: bool  # a 200 came after ``finish``'s ``after``


class Poller:
    """GETs http://<host>:<port>/ every ``interval`` s in a thread: requests, failures, the longest time without a 200.

    ``failures`` holds what went wrong with each failed request, in order; ``failed`` is how many there were.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", interval: float = 0.01, *,
                 request_timeout: float = 2.0, ready_timeout: float = 30.0):
        self.port, self.host, self.interval = port, host, interval
        self.request_timeout, self.ready_timeout = request_timeout, ready_timeout
        self.requests = 0
        self.failures: list[str] = []
        self._longest_gap = 0.0
        self._last_ok: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll-{port}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            problem = get_problem(self.port, self.host, self.request_timeout)
            now = time.perf_counter()
            with self._lock:
                self.requests += 1
                if problem is None:
                    if self._last_ok is not None:
                        self._longest_gap = max(self._longest_gap, now - self._last_ok)
                    self._last_ok = now
                else:
                    self.failures.append(problem)
            self._stop.wait(self.interval)

    @property
    def failed(self) -> int:
        """How many requests did not get a 200."""
        with self._lock:
            return len(self.failures)

    @property
    def longest_gap(self) -> float:
        """The longest time between two 200s so far (an open gap is counted only by ``finish``)."""
        with self._lock:
            return self._longest_gap

    def last_ok(self) -> float | None:
        """When the last 200 came (``time.perf_counter()``), None before the first."""
        with self._lock:
            return self._last_ok

    def __enter__(self) -> "Poller":
        self._thread.start()
        limit = time.monotonic() + self.ready_timeout
        while self.last_ok() is None:  # serving before we start measuring
            if time.monotonic() > limit:
                self._halt()
                raise RuntimeError(f"port {self.port} never answered 200 before the measurement")
            time.sleep(0.005)
        with self._lock:
            self.requests = 0
            self.failures.clear()
            self._longest_gap = 0.0
        return self

    def finish(self, after: float | None = None, timeout: float = 30.0) -> PollFigures:
        """Wait up to ``timeout`` s for a 200 later than ``after`` (default: now), stop polling, return the figures."""
        after = time.perf_counter() if after is None else after
        limit = time.perf_counter() + timeout
        while not self._served_since(after) and self._thread.is_alive() and time.perf_counter() < limit:
            time.sleep(0.005)
        ended = time.perf_counter()  # before the join, which may wait out a request in flight
        self._halt()
        with self._lock:
            served_again = self._last_ok is not None and self._last_ok > after
            longest = self._longest_gap if served_again else max(self._longest_gap,
                                                                   ended - (self._last_ok or after))
            return PollFigures(self.requests, len(self.failures), longest, served_again)

    def summary(self) -> str:
        """One line for an assertion message: the counts and the first failures."""
        with self._lock:
            return (f"{len(self.failures)} of {self.requests} requests failed, longest time without a 200 "
                    f"{self._longest_gap:.2f} s; first failures: {self.failures[:3]}")

    def _served_since(self, after: float) -> bool:
        last = self.last_ok()
        return last is not None and last > after

    def _halt(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self._halt()
