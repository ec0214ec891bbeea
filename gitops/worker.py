"""The daemon's worker: each job runs in a child process, which the daemon can cancel cleanly.

Parent side: ``Worker.run`` (the work queue's runner) starts the child, sends
the job, relays the child's events onto the daemon's bus and, on cancel, sends
SIGTERM: the child records the build CANCELLED and restores the old container.
It then judges how the run ended (``judge``, a pure function) and what should
follow it (``follow_up``): nothing, a retry with backoff, or an immediate
recovery when the child was killed mid-swap.
Child side: ``python -m gitops.worker`` (``child_main``) runs one job through
the engine. The line format between the two is ``worker_protocol``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gitops import interrupt
from gitops import worker_protocol as wire
from gitops.build import BuildStatus, Trigger, now_iso
from gitops.events import DaemonError, Event, Events, JobFinished, JobStarted, StepFailed
from gitops.history import History
from gitops.queue import Job, Running
from gitops.source import CONFIG_REPOSITORY
from gitops.warm_worker import PARENT_ENV, WarmWorker

if TYPE_CHECKING:
    from gitops.config import Settings

CANCEL_GRACE = 30.0  # seconds a cancelled run gets to record itself and restore the old container
CANCELLED_EXIT = 130  # what a child exits with when a SIGTERM (or Ctrl-C) cancelled its run
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


# -- what a run came to, and what follows it ------------------------------------------


class Outcome(str, Enum):
    """How a run ended, as far as what happens next is concerned."""

    DONE = "done"
    """Everything it did succeeded."""
    CANCELLED = "cancelled"
    """The daemon cancelled it (superseded, stopping): its work went on in the next job, or stops with the daemon."""
    FAILED = "failed"
    """A build, a deploy or a file failed on its own (or an operator stopped it): it runs again when something changes."""
    RETRY = "retry"
    """It failed outside its builds (Docker, the history, the lock, a crash): retried with backoff."""
    KILLED = "killed"
    """A signal the daemon did not send killed it, perhaps mid-swap: recovered at once, then retried with backoff."""


@dataclass(frozen=True)
class RunReport:
    """What the daemon saw of one run: the input of ``judge``."""

    code: int | None  # the child's exit code; negative: killed by that signal; None: it never started
    cancelled: bool = False  # the daemon asked it to stop
    finished: bool = False  # it wrote its result line (the engine ran to its end)
    failed_steps: frozenset[str] = frozenset()  # deployments with a failed step (StepFailed)
    transient_steps: frozenset[str] = frozenset()  # of those, failed for a cause outside the deployment
    failed_builds: frozenset[str] = frozenset()  # deployments with a build of this run recorded FAILED
    unfetched: frozenset[str] = frozenset()  # git fetches that failed: deployment names or CONFIG_REPOSITORY


@dataclass(frozen=True)
class Verdict:
    """``judge``'s answer: the outcome, and which deployments a retry covers (None: the whole job)."""

    outcome: Outcome
    retry: frozenset[str] | None = None
    signal: int | None = None  # KILLED: the signal


def judge(report: RunReport) -> Verdict:
    """How a run ended; pure, so that every row of the rule has a table test.

    A FAILED build record of this run says the deployment failed on its own command (its build, its
    deploy): running it again before something changes would fail the same way. Everything else that
    fails (a child that died before writing its result line, a step that failed without a build record
    of its own or for a transient cause such as Docker being unreachable, a git fetch that failed) came
    from outside the build, and goes away by itself: it is retried.
    """
    if report.cancelled:
        return Verdict(Outcome.CANCELLED)
    if report.code == 0:
        return Verdict(Outcome.DONE)
    if report.code is not None and report.code < 0:
        return Verdict(Outcome.KILLED, signal=-report.code)
    if report.code == CANCELLED_EXIT and not report.finished:
        return Verdict(Outcome.FAILED)  # someone else's SIGTERM: the run recorded itself CANCELLED, as asked
    if not report.finished:
        return Verdict(Outcome.RETRY)
    if CONFIG_REPOSITORY in report.unfetched:
        return Verdict(Outcome.RETRY)  # the files themselves may be stale: the whole job again
    outside = (report.failed_steps - report.failed_builds) | report.transient_steps | report.unfetched
    if outside:
        return Verdict(Outcome.RETRY, retry=frozenset(outside))
    return Verdict(Outcome.FAILED)


@dataclass(frozen=True)
class FollowUp:
    """What the daemon does after a run: a job now, a job after the next backoff delay, and the backoff."""

    now: Job | None = None
    later: Job | None = None
    reset_backoff: bool = False


def follow_up(job: Job, verdict: Verdict) -> FollowUp:
    """The work that follows a run of ``job``; pure.

    A success resets the backoff, unless the job was a heal (a recovery or a drift restart): starting
    a container proves nothing about the work that keeps failing, and a run killed over and over
    (the OOM killer) must not be retried every 5 s because each recovery succeeds.
    """
    if verdict.outcome is Outcome.DONE:
        return FollowUp(reset_backoff=not job.heal)
    if verdict.outcome is Outcome.RETRY:
        names = job.names if verdict.retry is None else verdict.retry
        whole = verdict.retry is None
        return FollowUp(later=Job(names, job.trigger, fetch=job.fetch, config=job.config and whole,
                                  commit=job.commit, reasons=_retry_reasons(job), prune=job.prune and whole,
                                  heal=job.heal, deliveries=job.deliveries))
    if verdict.outcome is Outcome.KILLED:
        # The engine's recovery (any apply runs it first) renames a half-swapped container back and starts
        # it; a heal does only that and starts what is stopped, so what served before serves again at once.
        recover = Job(job.names, Trigger.AUTO, reasons=[f"recovery: the run was killed by "
                                                        f"{_signal_name(verdict.signal)}"], heal=True)
        retry = None if job.heal else Job(job.names, job.trigger, fetch=job.fetch, config=job.config,
                                          commit=job.commit, reasons=_retry_reasons(job), prune=job.prune,
                                          deliveries=job.deliveries)
        return FollowUp(now=recover, later=retry)
    return FollowUp()


def _retry_reasons(job: Job) -> list[str]:
    return list(dict.fromkeys(["retry", *job.reasons]))  # a retry of a retry says so once


def _signal_name(number: int | None) -> str:
    try:
        return signal.Signals(number).name
    except (ValueError, TypeError):
        return f"signal {number}"


# -- the parent -------------------------------------------------------------------------


class Worker:
    """Runs jobs as child processes, one at a time (the work queue calls ``run``)."""

    def __init__(self, config_path: Path | None, history: History, events: Events, *,
                 after_run: Callable[[], None] = lambda: None):
        self.config_path = config_path
        self.history = history
        self.events = events
        self._after_run = after_run
        self._warm = WarmWorker(lambda: wire.child_command(self.config_path), config_path)
        self.last_pid: int | None = None  # the process of the latest run (tests, diagnostics)

    def close(self) -> None:
        """Kill the child waiting for the next job; call when no run will come (the daemon stops)."""
        self._warm.close()

    @property
    def warm_pid(self) -> int | None:
        """The process started for the next job, if one waits (tests, diagnostics)."""
        waiting = self._warm.waiting
        return waiting.pid if waiting is not None else None

    def run(self, running: Running) -> Verdict:
        """Run ``running.job`` to its end (or cancel it when asked); reports JobStarted / JobFinished.

        The job goes to the warm child (started before the job came), and the next job's child starts
        right after. Returns how it ended (``judge``), for the daemon to decide what follows.
        """
        job = running.job
        self.events.emit(JobStarted(None, job.describe(), reasons=list(job.reasons), commit=job.commit))
        started = time.monotonic()
        since = now_iso()
        try:
            worker = self._warm.take()
        except OSError as exc:
            self.events.emit(DaemonError(None, f"cannot start a run: {exc}"))
            self.events.emit(JobFinished(None, f"{job.describe()} failed: cannot start a run: {exc}", ok=False))
            return judge(RunReport(code=None))
        child = worker.process
        self.last_pid = child.pid
        watcher = threading.Thread(target=self._cancel_when_asked, args=(running, child), daemon=True)
        watcher.start()
        try:
            self._send(child, job)
            self._warm.prepare()  # the next job's child imports while this one runs
            seen = self._follow(child)
            stderr = worker.errors.result()
            code = child.wait()
        except BaseException:
            # Nobody reads the child's output any more: left alone it would block on a full pipe while
            # holding the apply lock, and every later run would wait for it. It runs in its own session.
            worker.kill()
            raise
        self._after_run()
        if running.cancel_reason:
            # Also the records it made before it said so: a cancel can land right after one is made.
            self._mark_cancelled(seen.builds, child.pid, since, job, running.cancel_reason)
        ok = code == 0
        if running.cancel_reason:
            outcome, detail = "cancelled", running.cancel_reason
        elif code < 0:
            outcome, detail = "failed", f"killed by {_signal_name(-code)}"
        else:
            outcome = "done" if ok else "failed"
            detail = "" if ok else (stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}")
        self.events.emit(JobFinished(None, f"{job.describe()} {outcome} in {time.monotonic() - started:.1f} s"
                                     + (f": {detail}" if detail else ""), ok=ok, cancelled=running.cancel_reason,
                                     changed=seen.result.changed if seen.result else 0))
        finished = seen.result is not None
        failed_builds = self._failed_builds(seen.builds) if finished and seen.failed_steps else frozenset()
        return judge(RunReport(code=code, cancelled=bool(running.cancel_reason), finished=finished,
                               failed_steps=frozenset(seen.failed_steps), failed_builds=failed_builds,
                               transient_steps=frozenset(seen.transient_steps),
                               unfetched=frozenset(seen.result.unfetched if seen.result else ())))

    @staticmethod
    def _send(child: subprocess.Popen, job: Job) -> None:
        try:
            child.stdin.write(wire.encode_job(job))
            child.stdin.close()
        except OSError:
            pass  # the child died at start: its stderr and exit code say why

    def _follow(self, child: subprocess.Popen) -> _Seen:
        """Relay the child's events until it closes stdout; what they told."""
        seen = _Seen()
        for line in child.stdout:
            message = wire.decode_line(line)
            if isinstance(message, wire.RunResult):
                seen.result = message
            elif isinstance(message, Event):
                build_id = getattr(message, "build_id", None) or (getattr(message, "build", None) or {}).get("id")
                if build_id:
                    seen.builds.add(build_id)
                if isinstance(message, StepFailed) and message.deployment:
                    seen.failed_steps.add(message.deployment)
                    if message.transient:
                        seen.transient_steps.add(message.deployment)
                self.events.emit(message)
        return seen

    def _failed_builds(self, builds: set[str]) -> frozenset[str]:
        """The deployments whose build of this run is recorded FAILED: they failed on their own command."""
        failed = set()
        for build_id in builds:
            try:
                build = self.history.get(build_id)
            except Exception:  # noqa: BLE001 - an unreadable history: judged as a failure from outside
                continue
            if build is not None and build.status is BuildStatus.FAILED:
                failed.add(build.deployment)
        return frozenset(failed)

    def _cancel_when_asked(self, running: Running, child: subprocess.Popen) -> None:
        while child.poll() is None:
            if running.cancelled.wait(0.2):
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(CANCEL_GRACE)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(child.pid, signal.SIGKILL)  # its own session: git and all it started too
                        # Said, not silent: a hang here is a bug, and the next run waited for it.
                        self.events.emit(DaemonError(None, f"the cancelled run (pid {child.pid}) did not stop "
                                                     f"within {CANCEL_GRACE:g} s: killed; the next run repairs "
                                                     "what it left"))
                return

    def _mark_cancelled(self, seen: set[str], pid: int, since: str, job: Job, reason: str) -> None:
        """The child only knows it was interrupted; its records say why (e.g. "superseded by <sha>").

        Its records: those its events named, and those it made (or took over from ``job``) on this host
        since ``since`` (a cancel can land right after one is made, before any event names it). A record
        the child left unfinished (killed, or interrupted while making it) is finished CANCELLED here:
        the child is gone, nothing else would finish it before the next run.
        """
        host = socket.gethostname()
        reserved = set(job.builds.values())
        try:
            found = [b for b in self.history.list() if b.id in seen or (
                b.pid == pid and b.host == host and (b.created_at >= since or b.id in reserved))]
        except Exception as exc:  # noqa: BLE001 - the records then keep what the child wrote
            self.events.emit(DaemonError(None, f"could not record why the cancelled run's builds ended: {exc}"))
            return
        for build in found:
            try:
                if build.status is BuildStatus.CANCELLED:
                    self.history.update(build.id, error_message=reason)
                elif not build.status.finished:
                    self.history.finish(build.id, BuildStatus.CANCELLED, error_message=reason)
            except Exception as exc:  # noqa: BLE001 - pruned meanwhile, or the history is locked: one record
                self.events.emit(DaemonError(None, f"could not record why build {build.id} ended: {exc}"))


@dataclass
class _Seen:
    """What a child's event lines told: the builds it touched, the deployments whose step failed, its result."""

    builds: set[str] = field(default_factory=set)
    failed_steps: set[str] = field(default_factory=set)
    transient_steps: set[str] = field(default_factory=set)
    result: wire.RunResult | None = None


# -- the child ------------------------------------------------------------------


def child_main(argv: list[str] | None = None) -> int:
    """``python -m gitops.worker [-c FILE]``: warm up, read one job on stdin, run it, write event lines; the exit code.

    Everything a job needs that does not depend on the job (imports, the settings) is done before
    the job line is read: the daemon starts this process ahead of its job (``warm_worker``).
    """
    # SIGTERM (the daemon's cancel) gets what Ctrl-C gets: the build is recorded
    # CANCELLED and the old container restored.
    signal.signal(signal.SIGTERM, _interrupt)
    # A daemon killed by SIGKILL cannot cancel its run: the kernel does it (the same SIGTERM) instead of
    # leaving an orphan to build on for nobody.
    if not _die_with_parent():
        return CANCELLED_EXIT  # the daemon is already gone: nothing was started, nobody waits for this run
    # A short-lived process: skip the full garbage collection at exit (about 0.1 s), as the CLI does.
    atexit.register(gc.freeze)
    from gitops.crash import EXIT_CODE, crash_line
    from gitops.errors import KalpanaError

    try:
        warm = _warm_up(wire.parse_child_args(sys.argv[1:] if argv is None else argv))
        line = sys.stdin.readline()
        if not line:
            return 0  # the daemon let this warm worker go (or died) before it had a job: nothing to do
        job = wire.decode_job(line)
        result = _run(job, warm)
    except (KalpanaError, wire.ProtocolError) as exc:
        _write(sys.stderr, f"error: {' '.join(str(exc).splitlines())}\n")
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        _write(sys.stderr, "error: interrupted\n")
        return CANCELLED_EXIT
    except Exception as exc:  # noqa: BLE001 - the last line of defence, as in the CLI
        _write(sys.stderr, f"error: {crash_line(exc)}\n")
        return EXIT_CODE
    _write(sys.stdout, wire.encode_result(result.to_dict()))
    # A daemon run that could not fetch did not deploy what the push or poll asked for: not a success.
    return 0 if result.ok and not result.unfetched else 1


# What a run may import that the engine's module does not import at once (the SDK and GitPython are
# imported on first use elsewhere, to keep short CLI commands fast): a warm worker imports them early.
WARM_IMPORTS = ("gitops.config", "gitops.engine", "gitops.loader", "gitops.runtime.docker_runtime", "docker",
                "docker.errors", "requests.exceptions", "git")


@dataclass(frozen=True)
class Warm:
    """What a worker prepared before its job: the settings file it was started with, and those settings."""

    config: Path | None
    settings: "Settings | None" = None  # None: read with the job (whose run then reports their error)


def _warm_up(config: Path | None) -> Warm:
    """Import what a run needs and read the settings, before the job arrives; nothing here contacts Docker."""
    import importlib

    for module in WARM_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from gitops.config import load_settings
    from gitops.errors import KalpanaError
    from gitops.loader import load_configured

    try:
        settings = load_settings(str(config) if config else None)
    except KalpanaError:
        return Warm(config)
    # Validating the current files once builds whatever models are built on first use; the job
    # reads the files again (they may change meanwhile), so the result is dropped.
    with contextlib.suppress(Exception):
        load_configured(settings)
    gc.collect()
    gc.freeze()  # what start-up made lives as long as the process: later collections skip it
    return Warm(config, settings)


def _run(job, warm: Warm):
    from gitops.config import load_settings
    from gitops.engine import Engine
    from gitops.runtime.docker_runtime import DockerRuntime

    config = warm.config
    settings = warm.settings or load_settings(str(config) if config else None)
    events = Events()
    events.subscribe(_write_event)
    history = History(settings.state_path, max_log_bytes=settings.max_log_bytes)
    engine = Engine(settings, DockerRuntime.connect(settings.docker_host), history, events)
    names = sorted(job.names) if job.names is not None else None
    # As `kalpana apply NAME...` would; a job for every deployment prunes only when it asks to.
    prune = job.prune or job.names is not None
    if job.config:
        return engine.sync(names, prune=prune, trigger=job.trigger, force=job.force, builds=job.builds)
    return engine.apply(names, prune=prune, trigger=job.trigger, fetch=job.fetch, heal=job.heal,
                        force=job.force, builds=job.builds)


def _die_with_parent() -> bool:
    """Have the kernel send SIGTERM when the daemon dies (Linux); False when it is gone already.

    Best effort: elsewhere, or where prctl fails, an orphaned run goes on to its end, and ``_write``
    keeps its writes to the dead daemon from failing the build.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError, TypeError, ValueError):
            pass
    # The daemon may have died before prctl (the kernel then sends nothing): the parent's pid it gave
    # says whether this process was orphaned meanwhile. Started by hand, without it, there is nobody to lose.
    parent = os.environ.get(PARENT_ENV, "")
    return not parent.isdigit() or os.getppid() == int(parent)


def _write_event(event: Event) -> None:
    _write(sys.stdout, wire.encode_event(event))


_output_gone = False  # the daemon stopped reading (it died): events go nowhere, the run goes on


def _write(stream, text: str) -> None:
    """Write and flush ``text``; a reader that went away never fails the run (its builds are recorded anyway).

    After the first failure stdout and stderr point at /dev/null, so that no later write, nor the
    interpreter's last flush at exit, raises BrokenPipeError again.
    """
    global _output_gone
    if _output_gone:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # BrokenPipeError; ValueError: the stream was closed
        _output_gone = True
        _silence_output()


def _silence_output() -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(null, stream.fileno())
    os.close(null)


def _interrupt(signum, frame) -> None:
    # One cancel is enough: a second SIGTERM (the kernel's parent-death signal can follow the daemon's
    # own, or come twice) must not cut short the recording of the first and leave the build BUILDING.
    # A cancel that hangs is ended with SIGKILL by the daemon after CANCEL_GRACE.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Marked as well as raised: the one SIGTERM must not be lost where Python drops the exception.
    interrupt.request()


if __name__ == "__main__":
    sys.exit(child_main())
