"""The daemon's warm worker: the next job's child process, started and done importing before the job arrives.

Starting Python and importing the engine, the docker SDK and the settings
models costs a worker about 0.4 s, and a webhook or a file save should not
wait for that. So the ``Worker`` keeps one child started ahead of time: it
imports everything and reads the settings (``worker.child_main``'s warm-up),
then waits on its stdin for a job. ``take`` hands it out, ``prepare`` starts the
next one right after. Each child still runs exactly one job, so a cancel is still
a kill of that one process, a crash takes only that job down, and a job's memory
goes away with its process.

A warm child that died while it waited, or that read settings which changed
since (kalpana.yaml, or the .env beside it), is replaced by a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gitops.config import DEFAULT_CONFIG

PARENT_ENV = "KALPANA_WORKER_PARENT"  # the daemon's pid, so that a child can tell its parent is already gone


def settings_fingerprint(config: Path | None) -> bytes:
    """A digest of the files a worker's settings come from (as ``load_settings`` finds them)."""
    path = Path(config or os.environ.get("KALPANA_CONFIG") or DEFAULT_CONFIG)
    digest = hashlib.sha256()
    for file in (path, path.parent / ".env"):
        try:
            digest.update(file.read_bytes())
        except OSError as exc:  # missing (defaults) or unreadable: the child finds the same
            digest.update(f"\0{type(exc).__name__}".encode())
        digest.update(b"\0\0")
    return digest.digest()


class Drain:
    """Reads a child's stream on a thread; ``result()`` waits for EOF and returns the text."""

    def __init__(self, stream):
        self._chunks: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._chunks.append(line)

    def result(self) -> str:
        self._thread.join()
        return "".join(self._chunks)


@dataclass
class WorkerProcess:
    """One worker child: its process, its stderr (read from the start), when and with what settings it started."""

    process: subprocess.Popen
    errors: Drain
    started: float  # time.time() when it was started
    settings: bytes  # settings_fingerprint() just before it started

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """End it at once (it never got a job, or nobody reads it any more) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: whatever it started goes too
        self.process.wait()


class WarmWorker:
    """Keeps one worker child started ahead of the next job; ``take`` it, then ``prepare`` the next.

    Children must be started on a thread that lives as long as the daemon (the work queue's): the
    kernel's parent-death signal that a child asks for follows the thread that started it.
    """

    def __init__(self, command: Callable[[], list[str]], config: Path | None):
        self._command = command
        self._config = config
        self._lock = threading.Lock()
        self._spare: WorkerProcess | None = None
        self._closed = False

    def take(self) -> WorkerProcess:
        """The warm child if it still waits and its settings are current, else a fresh one (OSError: none starts)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            if spare.process.poll() is None and spare.settings == settings_fingerprint(self._config):
                return spare
            spare.kill()
        return self._start()

    def prepare(self) -> None:
        """Start the next job's child now, unless one waits already; a child that cannot start is left for ``take``."""
        with self._lock:
            if self._closed or self._spare is not None:
                return
        try:
            spare = self._start()
        except OSError:
            return  # ``take`` tries again, and reports it, when a job needs one
        with self._lock:
            if self._closed or self._spare is not None:
                spare.kill()
            else:
                self._spare = spare

    def close(self) -> None:
        """Kill the waiting child, if any; no new one is prepared after this."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()

    @property
    def waiting(self) -> WorkerProcess | None:
        """The child started for the next job, if any."""
        with self._lock:
            return self._spare

    def _start(self) -> WorkerProcess:
        settings = settings_fingerprint(self._config)  # before the child reads them: a change after is seen
        started = time.time()
        process = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True,
                                   env={**os.environ, PARENT_ENV: str(os.getpid())})
        # Read stderr alongside stdout from the start: a full pipe would block the child.
        return WorkerProcess(process, Drain(process.stderr), started, settings)
