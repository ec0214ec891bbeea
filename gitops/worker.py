"""The daemon's worker: each job runs in a child process, which the daemon can cancel cleanly.

Parent side: ``Worker.run`` (the work queue's runner) starts the child, sends
the job, relays the child's events onto the daemon's bus and, on cancel, sends
SIGTERM: the child records the build CANCELLED and restores the old container.
Child side: ``python -m gitops.worker`` (``child_main``) runs one job through
the engine. The line format between the two is ``worker_protocol``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from gitops import worker_protocol as wire
from gitops.build import BuildStatus
from gitops.events import DaemonError, Event, Events, JobFinished, JobStarted
from gitops.history import History
from gitops.queue import Running

CANCEL_GRACE = 30.0  # seconds a cancelled run gets to record itself and restore the old container


class Worker:
    """Runs jobs as child processes, one at a time (the work queue calls ``run``)."""

    def __init__(self, config_path: Path | None, history: History, events: Events, *,
                 after_run: Callable[[], None] = lambda: None):
        self.config_path = config_path
        self.history = history
        self.events = events
        self._after_run = after_run

    def run(self, running: Running) -> None:
        """Run ``running.job`` to its end (or cancel it when asked); reports JobStarted / JobFinished."""
        job = running.job
        self.events.emit(JobStarted(None, job.describe(), reasons=list(job.reasons), commit=job.commit))
        started = time.monotonic()
        try:
            child = subprocess.Popen(wire.child_command(self.config_path), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        except OSError as exc:
            self.events.emit(DaemonError(None, f"cannot start a run: {exc}"))
            return
        watcher = threading.Thread(target=self._cancel_when_asked, args=(running, child), daemon=True)
        watcher.start()
        errors = _Drain(child.stderr)  # read stderr alongside stdout: a full pipe would block the child
        try:
            builds, result = self._follow(child, job)
            stderr = errors.result()
            code = child.wait()
        except BaseException:
            # Nobody reads the child's output any more: left alone it would block on a full pipe while
            # holding the apply lock, and every later run would wait for it. It runs in its own session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        self._after_run()
        if running.cancel_reason:
            self._mark_cancelled(builds, running.cancel_reason)
        ok = code == 0
        if running.cancel_reason:
            outcome, detail = "cancelled", running.cancel_reason
        else:
            outcome = "done" if ok else "failed"
            detail = "" if ok else (stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}")
        self.events.emit(JobFinished(None, f"{job.describe()} {outcome} in {time.monotonic() - started:.1f} s"
                                     + (f": {detail}" if detail else ""), ok=ok, cancelled=running.cancel_reason,
                                     changed=result.changed if result else 0))

    def _follow(self, child: subprocess.Popen, job) -> tuple[set[str], wire.RunResult | None]:
        """Send the job, relay the child's events until it closes stdout; the builds it touched and its result."""
        try:
            child.stdin.write(wire.encode_job(job))
            child.stdin.close()
        except OSError:
            pass  # the child died at start: its stderr and exit code say why
        builds: set[str] = set()
        result: wire.RunResult | None = None
        for line in child.stdout:
            message = wire.decode_line(line)
            if isinstance(message, wire.RunResult):
                result = message
            elif isinstance(message, Event):
                build_id = getattr(message, "build_id", None) or (getattr(message, "build", None) or {}).get("id")
                if build_id:
                    builds.add(build_id)
                self.events.emit(message)
        return builds, result

    def _cancel_when_asked(self, running: Running, child: subprocess.Popen) -> None:
        while child.poll() is None:
            if running.cancelled.wait(0.2):
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(CANCEL_GRACE)
                    except subprocess.TimeoutExpired:
                        child.kill()
                return

    def _mark_cancelled(self, builds: set[str], reason: str) -> None:
        """The child only knows it was interrupted; the record says why (e.g. "superseded by <sha>")."""
        for build_id in builds:
            build = self.history.get(build_id)
            if build and build.status is BuildStatus.CANCELLED:
                self.history.update(build_id, error_message=reason)


class _Drain:
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


# -- the child ------------------------------------------------------------------


def child_main(argv: list[str] | None = None) -> int:
    """``python -m gitops.worker [-c FILE]``: read one job on stdin, run it, write event lines; the exit code."""
    # SIGTERM (the daemon's cancel) gets what Ctrl-C gets: the build is recorded
    # CANCELLED and the old container restored.
    signal.signal(signal.SIGTERM, _interrupt)
    # A short-lived process: skip the full garbage collection at exit (about 0.1 s), as the CLI does.
    atexit.register(gc.freeze)
    from gitops.crash import EXIT_CODE, crash_line
    from gitops.errors import KalpanaError

    try:
        config = wire.parse_child_args(sys.argv[1:] if argv is None else argv)
        job = wire.decode_job(sys.stdin.readline())
        result = _run(job, config)
    except (KalpanaError, wire.ProtocolError) as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).splitlines())}\n")
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence, as in the CLI
        sys.stderr.write(f"error: {crash_line(exc)}\n")
        return EXIT_CODE
    sys.stdout.write(wire.encode_result(result.to_dict()))
    sys.stdout.flush()
    return 0 if result.ok else 1


def _run(job, config: Path | None):
    from gitops.config import load_settings
    from gitops.engine import Engine
    from gitops.runtime.docker_runtime import DockerRuntime

    settings = load_settings(str(config) if config else None)
    events = Events()
    events.subscribe(_write_event)
    engine = Engine(settings, DockerRuntime.connect(settings.docker_host), History(settings.state_path), events)
    names = sorted(job.names) if job.names is not None else None
    # As `kalpana apply NAME...` would; a job for every deployment prunes only when it asks to.
    prune = job.prune or job.names is not None
    if job.config:
        return engine.sync(names, prune=prune, trigger=job.trigger)
    return engine.apply(names, prune=prune, trigger=job.trigger, fetch=job.fetch, heal=job.heal)


def _write_event(event: Event) -> None:
    sys.stdout.write(wire.encode_event(event))
    sys.stdout.flush()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(child_main())
