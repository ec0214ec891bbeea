"""What the HTTP API asks of the daemon: reads through the core, changes through the work queue.

Reads (deployments, builds, logs) and the quick operating commands (stop,
rollback) are one ``Engine`` call each, as in the CLI. Work that builds or
applies (deploy, start, the apply after a create or delete) goes through the
daemon's one work queue like a webhook's, so it runs in a worker child and
never beside another run. A deploy reserves its build record (PENDING) first,
so that the caller has an id to follow before the queue gets to it.

Builds end in the worker child; what the daemon sees of them are the child's
events relayed on its bus. ``on_event`` turns those into the build streams'
messages and endings, and ``after_run`` settles what a run left open.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ContextManager

from gitops.build import Build, BuildStatus, Trigger
from gitops.engine import Engine
from gitops.events import Event, Events, StepFailed, StepSucceeded
from gitops.history import History
from gitops.queue import Job, WorkQueue
from gitops.server.broadcast import BuildStreams
from gitops.server.metrics import Metrics
from gitops.spec import DNS_LABEL

UNUSED_RESERVATION = "the run did not build it (its file or source has errors, or it was removed): see the daemon log"


class Operations:
    """The daemon behind the API (``api.Backend``)."""

    def __init__(self, engine: Engine, history: History, work: WorkQueue, *,
                 token: Callable[[], str | None], reload: Callable[[], object],
                 known: Callable[[str], bool] = lambda name: False,
                 writing: Callable[[Path], ContextManager[None]] = lambda path: contextlib.nullcontext()):
        self.engine = engine
        self.history = history
        self.work = work
        self.streams = BuildStreams()
        self.metrics = Metrics(queue_depth=self._depth, states=lambda: [r.state.value for r in engine.status()],
                               followers=self.streams.followers)
        self._token = token
        self._reload = reload
        self._known = known  # the daemon's view of the files (kept current by its file watcher): no load per request
        self._writing = writing  # tells the file watcher that a write is the API's (its apply is queued here)
        self._lock = threading.Lock()
        self._waiting: dict[str, str] = {}  # deployment -> its reserved build, while its job waits

    def token(self) -> str | None:
        """The API token now (kalpana.yaml may change it while the daemon runs)."""
        return self._token()

    def subscribe(self, events: Events) -> None:
        """Follow the daemon's bus (the engine's own events and those relayed from workers)."""
        events.subscribe(self.on_event)

    # -- changes -------------------------------------------------------------------

    def deploy(self, name: str) -> Build:
        """Queue a rebuild + redeploy of ``name``; its build record (PENDING until the worker takes it).

        A deploy asked while another waits for the same deployment joins it: one build, one id.
        """
        if not self._known(name):
            self.engine.desired(name)  # UnknownDeployment (listing the known ones) before anything is queued
        with self._lock:
            waiting = self._waiting.get(name)
            if waiting is not None:
                build = self.history.get(waiting)
                if build is not None and build.status is BuildStatus.PENDING:
                    return build
            # The worker's apply clears an operator's stop of a forced deployment, as `kalpana deploy` does.
            build = self.history.new_build(name, Trigger.MANUAL, "deploy", reason="deploy requested over the API")
            self.streams.open(build.id, name)
            self._waiting[name] = build.id
            self.work.submit(Job(frozenset({name}), Trigger.MANUAL, force=frozenset({name}),
                                 builds={name: build.id}, reasons=["API deploy"]))
        return build

    def start(self, name: str, timeout: float) -> bool:
        """Undo a stop and apply ``name`` through the queue; True when that run ended within ``timeout``."""
        self.engine.desired(name)
        self.history.set_stopped(name, False)
        return self.apply(frozenset({name}), reasons=["API start"], timeout=timeout)

    def stop(self, name: str) -> None:
        """The CLI's stop (it takes the apply lock, so it waits for a run in progress)."""
        self.engine.stop(name)

    def rollback(self, name: str, to: str | None) -> Build:
        """The CLI's rollback: the image of an earlier successful build, recorded as a build of its own."""
        return self.engine.rollback(name, to)

    def create(self, body: object) -> str:
        """Write the deployment's file and queue its apply (the only one: the file watcher skips the write); its name."""
        name = body.get("name") if isinstance(body, dict) else None
        valid = isinstance(name, str) and re.match(DNS_LABEL, name)  # else create_deployment refuses it, unwritten
        with self._writing(self.engine.settings.deployments_path / f"{name}.yaml") if valid \
                else contextlib.nullcontext():
            self.engine.create_deployment(body)
        name = body["name"]  # create_deployment checked it
        self._reload()
        self.apply(frozenset({name}), reasons=["API create"], timeout=0)
        return name

    def delete(self, name: str, timeout: float) -> bool:
        """Remove the deployment's file and apply everything with pruning; True when that run ended in time."""
        self.engine.delete_deployment(name)
        self._reload()
        return self.apply(None, reasons=["API delete"], timeout=timeout, prune=True)

    def apply(self, names: frozenset[str] | None, *, reasons: list[str], timeout: float, prune: bool = False) -> bool:
        """Queue an apply; wait up to ``timeout`` seconds for the run that does it to end."""
        done = threading.Event()
        self.work.submit(Job(names, Trigger.MANUAL, prune=prune, reasons=reasons, done=[done]))
        return done.wait(timeout) if timeout > 0 else False

    # -- what the daemon tells ---------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An event listener: stream build output; end a build's stream when its step ends."""
        self.streams.publish(event)
        if isinstance(event, StepSucceeded) and event.build:
            self._ended(Build.from_dict(event.build))
        elif isinstance(event, StepFailed) and event.deployment:
            self._settle(self.streams.open_builds(event.deployment))

    def running(self, job: Job) -> None:
        """The worker took ``job``: deploys asked from now on reserve a new record."""
        with self._lock:
            for name, build_id in job.builds.items():
                if self._waiting.get(name) == build_id:
                    del self._waiting[name]

    def after_run(self, job: Job) -> None:
        """A run ended: fail reservations it did not use, end every stream whose build ended, wake waiters."""
        for build_id in job.builds.values():
            try:
                build = self.history.get(build_id)
                if build is not None and build.status is BuildStatus.PENDING:
                    self.history.finish(build_id, BuildStatus.FAILED, error_message=UNUSED_RESERVATION)
            except Exception:  # noqa: BLE001 - an unreadable history: its stream ends below when it can
                pass
        self._settle(self.streams.open_builds())
        for done in job.done:
            done.set()

    def _settle(self, build_ids: list[str]) -> None:
        if not build_ids:
            return
        try:
            found = self.history.by_ids(build_ids)
        except Exception:  # noqa: BLE001 - tried again after the run
            return
        for build in found.values():
            if build.status.finished:
                self._ended(build)

    def _ended(self, build: Build) -> None:
        if self.streams.known(build.id) and build.id in self.streams.open_builds():
            self.metrics.build_ended(build)
        self.streams.finish(build.id, build.to_dict())

    def _depth(self) -> int:
        return int(self.work.busy) + int(self.work.retry_waiting is not None)
