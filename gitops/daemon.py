"""`kalpana watch`: the daemon that keeps the host matching the files, the pushes and reality.

Its parts: the triggers (a file watcher, a git poller, a drift checker, and
the webhook server's receiver) turn what they see into ``Job``s; one
``WorkQueue`` coalesces them; the ``Worker`` runs each job as a child process
that it can cancel cleanly and whose memory goes away when it ends, so the
daemon itself stays small however many builds it runs. This module wires them
together, owns start-up and shutdown, and does what the worker's verdict on a
run asks for (``worker.follow_up``): settle its webhook deliveries, recover a
run killed mid-swap at once, retry a failure from outside the build with backoff.
"""

from __future__ import annotations

import threading
from pathlib import Path

from gitops.build import Trigger
from gitops.config import Settings
from gitops.events import DaemonError, Events, Info, Warned
from gitops.history import History
from gitops.queue import Backoff, Job, Running, WorkQueue
from gitops.runtime.protocol import Runtime
from gitops.triggers import Triggers
from gitops.worker import CANCEL_GRACE, Outcome, Verdict, Worker, follow_up


class Daemon:
    """Runs until ``stop()``; every trigger goes through one work queue."""

    def __init__(self, settings: Settings, config_path: Path | None, runtime: Runtime, history: History,
                 events: Events, *, serve: bool = True):
        self.settings = settings
        self.events = events
        self.serve = serve
        self._stop = threading.Event()
        self._stop_reason = "stopping"
        self._server = None
        self.operations = None  # the API's side of the daemon, while it serves
        self.runtime = runtime
        self.history = history
        # The worker and the queue call back into the triggers, which need the queue: the lambdas
        # look self.triggers up when called, after all three exist.
        self.worker = Worker(config_path, history, events, after_run=lambda: self.triggers.reload_quietly())
        self.retries = Backoff()
        # A push or an API request that finds no run in progress starts at once: it needs no debounce.
        # File events keep the quiet period (their watchers see one save more than once).
        self.work = WorkQueue(self._run, quiet=max(settings.debounce, 0.05),
                              at_once=frozenset({Trigger.WEBHOOK, Trigger.MANUAL}),
                              on_supersede=lambda running, job: self.triggers.superseded(running, job),
                              on_error=self._run_failed)
        self.triggers = Triggers(settings, config_path, runtime, history, events, self.work, self._stop)

    def run(self) -> int:
        """Start everything, apply once, and block until stopped; returns the exit code."""
        self.triggers.reload()
        if self.serve:
            self._start_server()  # first: a port already taken must fail before any work starts
        self.work.start()
        self.work.submit(Job(None, Trigger.AUTO, config=self.settings.repo is not None, prune=True,
                             reasons=["daemon start"]))
        for thread in self.triggers.threads():
            thread.start()
        self._stop.wait()
        # Shutdown happens here, on the thread that run() blocks, so the process cannot exit
        # before the running build has been cancelled and recorded.
        self.events.emit(Info(None, f"{self._stop_reason}: no new work; cancelling what runs"))
        if self._server is not None:
            self._server.stop()
        self.work.close(cancel_reason="the daemon is stopping", timeout=CANCEL_GRACE + 10)
        self.worker.close()  # the child waiting for a next job that will not come
        self.events.emit(Info(None, "stopped"))
        return 0

    def stop(self, reason: str = "stopping") -> None:
        """Ask the daemon to stop: no new work, the running build cancelled (bounded), server closed."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def _start_server(self) -> None:
        from gitops.engine import Engine
        from gitops.server.app import create_app
        from gitops.server.auth import check_listen
        from gitops.server.operations import Operations
        from gitops.server.serve import Server

        check_listen(self.settings.listen, self.settings.api_token)
        engine = Engine(self.settings, self.runtime, self.history, self.events)
        self.operations = Operations(engine, self.history, self.work,
                                     token=lambda: self.triggers.settings.api_token, reload=self.triggers.reload,
                                     known=self.triggers.known, writing=self.triggers.writing)
        self.operations.subscribe(self.events)
        self._server = Server(create_app(self.triggers, self.events, backend=self.operations), self.settings.listen)
        self._server.start()
        self.events.emit(Info(None, f"webhooks on http://{self.settings.listen}"))
        if self.settings.insecure_webhooks:
            self.events.emit(Warned(None, "insecure_webhooks is on: endpoints without a secret accept "
                                    "unsigned deliveries from anyone who can reach them"))

    def _run(self, running: Running) -> None:
        ops = self.operations
        if ops is not None:
            ops.running(running.job)
        try:
            verdict = self.worker.run(running)
        finally:
            if ops is not None:
                ops.after_run(running.job)
            else:
                for done in running.job.done:
                    done.set()
        self._after(running.job, verdict)

    def _after(self, job: Job, verdict: Verdict) -> None:
        """Do what follows a run: its deliveries handled (or free again), a recovery now, a retry later."""
        self.triggers.settle_deliveries(job, verdict.outcome)
        follow = follow_up(job, verdict)
        if follow.reset_backoff:
            self.retries.reset()
        if follow.now is not None:
            self.events.emit(Warned(None, f"{job.describe()}: {follow.now.reasons[0]}; "
                                    "restoring what served before"))
            self.work.submit(follow.now)
        if follow.later is not None:
            delay = self.retries.next()
            why = "it failed outside the build" if verdict.outcome is Outcome.RETRY else "it was killed"
            self.events.emit(Warned(None, f"{why}: retrying {follow.later.describe()} in {delay:g} s"))
            self.work.submit_later(follow.later, delay)

    def _run_failed(self, job: Job, exc: Exception) -> None:
        self.triggers.settle_deliveries(job, Outcome.FAILED)  # a redelivery may try again
        self.events.emit(DaemonError(None, f"the run of {job.describe()} failed: {type(exc).__name__}: {exc}"))
