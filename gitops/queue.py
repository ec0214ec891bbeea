"""The daemon's single work queue: coalesced, one run at a time, newest commit wins.

Triggers (file saves, webhooks, polls, drift) ``submit`` jobs. Jobs that
arrive while another waits are merged into it, and the worker starts only
after a short quiet period, so ten pushes in a second give one build of the
newest commit. A job of an ``at_once`` trigger (the daemon's: pushes and API
requests) that finds no run in progress starts at once, with whatever waits
merged into it: someone waits for it, and a burst of pushes is handled by the
next rule. Automatic jobs (file saves, polls, drift) keep the quiet period, so
that the watchers seeing one change twice (a deployment file and its source
saved together) give one run. A push for a deployment that is being built *now*
cancels that build ("superseded by <sha>"): building an obsolete commit on a
small machine only delays the version the user just pushed.

A run that failed for a reason outside its build comes back through
``submit_later``: it waits, on the queue's clock, for a delay the daemon
takes from a ``Backoff``, then queues like any other job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from gitops.build import Trigger
from gitops.clock import Clock, SystemClock

_TRIGGER_RANK = {Trigger.AUTO: 0, Trigger.MANUAL: 1, Trigger.WEBHOOK: 2}


@dataclass
class Job:
    """One unit of work: apply these deployments (None = all), perhaps fetching first."""

    names: frozenset[str] | None
    trigger: Trigger
    fetch: bool = False  # fetch the git sources of these deployments first
    config: bool = False  # fetch the config repository first (then apply everything it declares)
    commit: str | None = None  # the pushed commit, when a push caused it
    reasons: list[str] = field(default_factory=list)
    prune: bool = False
    heal: bool = False  # drift: only start/recreate from existing images, never build
    # The webhook deliveries this job carries: handled once it succeeds, free to be redelivered if it fails.
    deliveries: frozenset[str] = frozenset()
    force: frozenset[str] = frozenset()  # rebuild these even if up to date (a deploy asked over the API)
    # Build records made in advance (PENDING, so that an API caller can follow them at once), by deployment.
    builds: dict[str, str] = field(default_factory=dict)
    # Set once a run that did this job's work ended (whoever asked waits on them); never sent to a worker.
    done: list[threading.Event] = field(default_factory=list)

    def merge(self, other: "Job") -> "Job":
        """One job doing the work of both (and carrying the deliveries of both)."""
        names = None if self.names is None or other.names is None else self.names | other.names
        trigger = max(self.trigger, other.trigger, key=lambda t: _TRIGGER_RANK[t])
        return Job(names, trigger, fetch=self.fetch or other.fetch, config=self.config or other.config,
                   commit=other.commit or self.commit, reasons=self.reasons + other.reasons,
                   prune=self.prune or other.prune, heal=self.heal and other.heal,
                   deliveries=self.deliveries | other.deliveries, force=self.force | other.force,
                   builds={**other.builds, **self.builds}, done=self.done + other.done)

    def overlaps(self, other: "Job") -> bool:
        """Do the two jobs touch a common deployment (None = every deployment)?"""
        return self.names is None or other.names is None or bool(self.names & other.names)

    def describe(self) -> str:
        """One line for the daemon's log: which deployments, the trigger, whether it fetches."""
        what = "all deployments" if self.names is None else ", ".join(sorted(self.names))
        return f"{what} ({self.trigger.value}{', fetch' if self.fetch or self.config else ''})"


def _supersedes(new: Job, running: Job) -> bool:
    """A newer pushed commit makes a running *build of a pushed commit* of the same deployments obsolete.

    Runs that were not caused by a push (start-up, file changes, drift heals) are never cancelled
    by one: their work is not what the push replaces.
    """
    pulls = (new.fetch or new.config) and (running.fetch or running.config)
    return bool(pulls and new.commit and running.commit and new.commit != running.commit and new.overlaps(running))


class Backoff:
    """Delays between retries of a failing run: ``first`` seconds, doubling up to ``cap``; ``reset`` after a success."""

    def __init__(self, first: float = 5.0, cap: float = 300.0):
        self.first = first
        self.cap = cap
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next retry (and count it)."""
        delay = min(self.first * (2 ** min(self.attempts, 32)), self.cap)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Something succeeded: the next failure waits ``first`` seconds again."""
        self.attempts = 0


class Running:
    """The job being run now, and how to cancel it."""

    def __init__(self, job: Job):
        self.job = job
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Ask the runner to stop, saying why (recorded on the cancelled builds)."""
        self.cancel_reason = reason
        self.cancelled.set()


class WorkQueue:
    """Coalescing queue with one worker thread; ``runner(running)`` does the work and watches ``cancelled``.

    Every time reading and timed wait goes through ``clock`` (the system's by default), so that
    tests can move time by hand.
    """

    def __init__(self, runner: Callable[[Running], None], *, quiet: float = 0.3, max_wait: float = 2.0,
                 at_once: frozenset[Trigger] = frozenset(),
                 on_supersede: Callable[[Running, Job], None] = lambda running, job: None,
                 on_error: Callable[[Job, Exception], None] = lambda job, exc: None,
                 clock: Clock | None = None):
        self._runner = runner
        self._quiet = quiet
        self._max_wait = max_wait
        self._at_once_triggers = at_once
        self._on_supersede = on_supersede
        self._on_error = on_error
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Condition()
        self._pending: Job | None = None
        self._deferred: Job | None = None  # a retry, waiting until _deferred_at
        self._deferred_at = 0.0
        self._first_at = 0.0
        self._last_at = 0.0
        self._at_once = False  # the pending job runs without its quiet period (see ``at_once``)
        self._running: Running | None = None
        self._closed = False
        self._stopped = False  # the worker has left its loop
        self._thread = threading.Thread(target=self._work, name="kalpana-worker", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (merging it into what waits); supersede a running build of an older commit."""
        with self._lock:
            if self._closed:
                return
            self._add(job, self._clock.now())
            running = self._running
            if running is not None and not running.cancelled.is_set() and _supersedes(job, running.job):
                running.cancel(f"superseded by {job.commit[:7]}")
                # The cancelled run may have covered more than the push (other deployments, a prune):
                # that work must still happen, with the newest commit.
                self._pending = running.job.merge(self._pending)
                self._on_supersede(running, job)
            self._lock.notify_all()

    def submit_later(self, job: Job, delay: float) -> None:
        """Queue ``job`` once ``delay`` seconds (on the queue's clock) have passed: a retry.

        A retry already waiting is merged with it and waits for the later of the two times.
        """
        with self._lock:
            if self._closed:
                return
            due = self._clock.now() + max(delay, 0.0)
            if self._deferred is None:
                self._deferred, self._deferred_at = job, due
            else:
                self._deferred, self._deferred_at = self._deferred.merge(job), max(self._deferred_at, due)
            self._lock.notify_all()

    @property
    def retry_waiting(self) -> Job | None:
        """The retry waiting for its time, if any."""
        with self._lock:
            return self._deferred

    def _add(self, job: Job, now: float) -> None:
        if self._pending is None:
            self._pending, self._first_at, self._at_once = job, now, False
        else:
            self._pending = self._pending.merge(job)
        if job.trigger in self._at_once_triggers and self._running is None:
            self._at_once = True
        self._last_at = now

    @property
    def busy(self) -> bool:
        """A job runs or waits for its quiet period (a retry waiting for its time does not count)."""
        with self._lock:
            return self._running is not None or self._pending is not None

    def close(self, cancel_reason: str | None = None, timeout: float = 60.0) -> None:
        """Stop taking work; cancel (or let finish) the running job; wait for the worker up to ``timeout``."""
        with self._lock:
            self._closed = True
            self._pending = None
            self._deferred = None
            if self._running is not None and cancel_reason:
                self._running.cancel(cancel_reason)
            self._lock.notify_all()
            if not self._thread.is_alive():
                return
            # Waiting for the worker on the condition, not with join(timeout), keeps the timeout on the
            # queue's clock.
            deadline = self._clock.now() + timeout
            while not self._stopped:
                left = deadline - self._clock.now()
                if left <= 0:
                    return
                self._clock.wait(self._lock, left)
        self._thread.join()  # it has left its loop: only its return is left

    def _work(self) -> None:
        try:
            self._serve()
        finally:  # also when on_error raises: close() must not wait for a thread that is gone
            with self._lock:
                self._stopped = True
                self._lock.notify_all()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    now = self._clock.now()
                    if self._deferred is not None and now >= self._deferred_at:
                        # Its time has come: from here on it is work like any other (quiet period included).
                        self._add(self._deferred, now)
                        self._deferred = None
                    wake = self._deferred_at if self._deferred is not None else None
                    if self._pending is not None:
                        settle = now if self._at_once else min(self._last_at + self._quiet,
                                                               self._first_at + self._max_wait)
                        if now >= settle:
                            break
                        wake = settle if wake is None else min(wake, settle)
                    self._clock.wait(self._lock, None if wake is None else wake - now)
                if self._closed:
                    return
                job, self._pending = self._pending, None
                self._running = Running(job)
                running = self._running
            try:
                self._runner(running)
            except Exception as exc:  # noqa: BLE001 - one bad run must not stop the worker for good
                self._on_error(running.job, exc)
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()
