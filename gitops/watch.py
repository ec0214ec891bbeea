"""`kalpana watch`: the daemon that keeps the host matching the files, the pushes and reality.

Threads: a file watcher (watchfiles), a git poller, a drift checker, the
webhook server (uvicorn) and one worker. Every trigger becomes a ``Job`` in
one ``WorkQueue``; the worker runs each job as a child `kalpana apply`/`sync`
process, which it can cancel cleanly with SIGTERM (the child records the
build CANCELLED and restores the old container) and whose memory goes away
when it ends, so the daemon itself stays small however many builds it runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gitops import webhook as wh
from gitops.config import Settings, load_settings
from gitops.deliveries import Deliveries
from gitops.errors import DockerUnavailable, KalpanaError, SourceError
from gitops.events import EventKind, Events
from gitops.history import BuildStatus, History, Trigger
from gitops.loader import LoadResult, load_configured, load_file
from gitops.queue import Job, Running, WorkQueue
from gitops.runtime.docker_runtime import DockerRuntime
from gitops.source import GitCheckout

CANCEL_GRACE = 30.0  # seconds a cancelled run gets to record itself and restore the old container
HEAL_BACKOFF_MAX = 300.0
_CHILD_EVENTS = {e.value: e for e in EventKind}


class Daemon:
    """Runs until ``stop()``; every trigger goes through one work queue."""

    def __init__(self, settings: Settings, config_path: Path | None, runtime: DockerRuntime, history: History,
                 events: Events, *, serve: bool = True):
        self.settings = settings
        self.config_path = config_path
        self.runtime = runtime
        self.history = history
        self.events = events
        self.serve = serve
        self.insecure = settings.insecure_webhooks
        self.deliveries = Deliveries(settings.state_path / "deliveries.log")
        self.work = WorkQueue(self._run_job, quiet=max(settings.debounce, 0.05), on_supersede=self._superseded,
                              on_error=self._run_failed)
        self._stop = threading.Event()
        self._stop_reason = "stopping"
        self._load = LoadResult()
        self._file_names: dict[Path, set[str]] = {}
        self._env_files: dict[Path, set[str]] = {}  # env_file -> the deployments that read it
        self._heal: dict[str, tuple[int, float]] = {}  # name -> (attempts, next allowed time)
        self._docker_down = False
        self._server = None
        self._threads: list[threading.Thread] = []

    # -- life ------------------------------------------------------------

    def run(self) -> int:
        """Start everything, apply once, and block until stopped; returns the exit code."""
        self._reload()
        if self.serve:
            self._start_server()  # first: a port already taken must fail before any work starts
        self.work.start()
        self.work.submit(Job(None, Trigger.AUTO, config=self.settings.repo is not None, prune=True,
                             reasons=["daemon start"]))
        for target in (self._watch_files, self._poll, self._drift):
            thread = threading.Thread(target=target, name=f"kalpana-{target.__name__.strip('_')}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._stop.wait()
        # Shutdown happens here, on the thread that run() blocks, so the process cannot exit
        # before the running build has been cancelled and recorded.
        self.events.emit(EventKind.INFO, None, f"{self._stop_reason}: no new work; cancelling what runs")
        if self._server is not None:
            self._server.should_exit = True
        self.work.close(cancel_reason="the daemon is stopping", timeout=CANCEL_GRACE + 10)
        self.events.emit(EventKind.INFO, None, "stopped")
        return 0

    def stop(self, reason: str = "stopping") -> None:
        """Ask the daemon to stop: no new work, the running build cancelled (bounded), server closed."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    # -- triggers ----------------------------------------------------------

    def _reload(self) -> LoadResult:
        load = load_configured(self.settings)
        for error in load.errors:
            self.events.emit(EventKind.ERROR, None, str(error))
        self._load = self._loaded(load)
        return load

    def _reload_quietly(self) -> None:
        """Refresh the daemon's view after a run (a sync may have changed the files); errors were reported by the run."""
        try:
            self._load = self._loaded(load_configured(self.settings))
        except Exception as exc:  # noqa: BLE001 - keep the previous view
            self.events.emit(EventKind.ERROR, None, f"cannot reload the deployment files: {exc}")

    def _loaded(self, load: LoadResult) -> LoadResult:
        files: dict[Path, set[str]] = {}
        env_files: dict[Path, set[str]] = {}
        for d in load.desired.values():
            files.setdefault(Path(d.file).resolve(), set()).add(d.name)
            if d.spec.env_file:
                env_files.setdefault((Path(d.file).resolve().parent / d.spec.env_file).resolve(), set()).add(d.name)
        self._file_names = files
        self._env_files = env_files
        return load

    def _watch_files(self) -> None:
        from watchfiles import watch

        # With a config repository the directory appears after the first sync: wait for it.
        while not self.settings.deployments_path.is_dir():
            if self._stop.wait(1.0):
                return
        deployments = self.settings.deployments_path.resolve()
        config = self.config_path.resolve() if self.config_path else None
        # Directories, not files: editors save by replacing a file, which ends a watch on the file itself.
        paths = {deployments} | ({config.parent} if config else set())
        paths |= {env.parent for env in self._env_files if env.parent.is_dir()}

        def relevant(change, path: str) -> bool:
            path = Path(path)
            return path.parent == deployments or path == config or path in self._env_files

        try:
            for changes in watch(*paths, watch_filter=relevant, recursive=False, stop_event=self._stop,
                                 debounce=int(self.settings.debounce * 1000), step=20, rust_timeout=500,
                                 yield_on_timeout=False, raise_interrupt=False):
                self._files_changed({Path(path).resolve() for _, path in changes})
        except Exception as exc:  # noqa: BLE001 - a watcher crash must not take the daemon down
            self.events.emit(EventKind.ERROR, None, f"file watching stopped: {exc}")

    def _files_changed(self, paths: set[Path]) -> None:
        config = self.config_path.resolve() if self.config_path else None
        if config in paths:
            try:
                settings = load_settings(config)
            except KalpanaError as exc:
                self.events.emit(EventKind.ERROR, None, f"{exc} (settings not reloaded; what runs stays)")
                return
            if settings.listen != self.settings.listen or settings.state_path != self.settings.state_path:
                self.events.emit(EventKind.WARNING, None, "listen and state_dir take effect when `kalpana watch` "
                                 "restarts")
            # Runs are child processes that read kalpana.yaml themselves; the daemon's own
            # secrets, intervals and paths follow it from here on.
            self.settings = settings.model_copy(update={"listen": self.settings.listen,
                                                        "state_dir": self.settings.state_dir})
            self.insecure = self.settings.insecure_webhooks
            self._reload()
            self.events.emit(EventKind.TRIGGER, None, f"{config.name} changed: applying everything")
            self.work.submit(Job(None, Trigger.AUTO, prune=True, reasons=["config changed"]))
            return
        names: set[str] = set()
        removed = False
        for path in sorted(paths):
            if path in self._env_files:  # an env_file: the deployments reading it get the new values
                names |= self._env_files[path]
                continue
            if path.suffix not in (".yaml", ".yml", ".json") or path.name.startswith("."):
                continue
            before = self._file_names.get(path, set())
            if path.exists():
                loaded, errors = load_file(path, workspace=self.settings.workspace_path,
                                           default_image=self.settings.default_image)
                if errors:
                    for error in errors:
                        self.events.emit(EventKind.ERROR, None, f"{error} (nothing applied for this file; "
                                         "what runs stays)")
                    continue
                after = {d.name for d in loaded}
            else:
                after = set()
            removed = removed or bool(before - after)
            names |= before | after
        if not names and not removed:
            return
        self._reload()
        if removed:
            self.events.emit(EventKind.TRIGGER, None, "deployment file(s) removed: applying everything (prune)")
            self.work.submit(Job(None, Trigger.AUTO, prune=True, reasons=["file removed"]))
        else:
            self.events.emit(EventKind.TRIGGER, None, f"file change: {', '.join(sorted(names))}")
            self.work.submit(Job(frozenset(names), Trigger.AUTO, reasons=["file change"]))

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval):
            try:
                self._poll_once()
            except Exception as exc:  # noqa: BLE001 - keep polling whatever one round hit
                self.events.emit(EventKind.ERROR, None, f"poll failed: {exc}")

    def _poll_once(self) -> None:
        repo = self.settings.repo
        if repo is not None:
            checkout = GitCheckout.for_config(repo, self.settings.config_checkout)
            sha = self._new_commit(checkout, "config repository")
            if sha:
                self.work.submit(Job(None, Trigger.AUTO, config=True, commit=sha, prune=True, reasons=["poll"]))
        groups: dict[Path, tuple[GitCheckout, set[str]]] = {}
        for d in self._load.desired.values():
            source = d.spec.source
            if source and source.repo and d.spec.auto_rebuild and d.spec.enabled:
                try:
                    checkout = GitCheckout.for_source(source, self.settings.checkouts_path, d.name)
                except SourceError as exc:
                    self.events.emit(EventKind.ERROR, d.name, str(exc))
                    continue
                groups.setdefault(checkout.path, (checkout, set()))[1].add(d.name)
        for checkout, names in groups.values():
            sha = self._new_commit(checkout, ", ".join(sorted(names)))
            if sha:
                self.work.submit(Job(frozenset(names), Trigger.AUTO, fetch=True, commit=sha, reasons=["poll"]))

    def _new_commit(self, checkout: GitCheckout, what: str) -> str | None:
        if not checkout.exists():
            return None
        try:
            remote = checkout.remote_head()
            local = checkout.head()
        except SourceError as exc:
            self.events.emit(EventKind.ERROR, None, f"poll of {what}: {exc}; keeps serving what runs, retrying")
            return None
        if remote and remote != local:
            self.events.emit(EventKind.TRIGGER, None, f"poll: new commit {remote[:7]} for {what}")
            return remote
        return None

    def _drift(self) -> None:
        delay = self.settings.drift_interval
        while not self._stop.wait(delay):
            try:
                self._drift_once()
                if self._docker_down:
                    # What failed while it was away (the start-up run, say) gets its turn now.
                    self.events.emit(EventKind.INFO, None, "Docker answers again: applying everything")
                    self.work.submit(Job(None, Trigger.AUTO, prune=True, reasons=["Docker is back"]))
                self._docker_down = False
                delay = self.settings.drift_interval
            except DockerUnavailable as exc:
                if not self._docker_down:
                    self.events.emit(EventKind.ERROR, None, f"{exc}; retrying with backoff")
                self._docker_down = True
                delay = min(delay * 2, 60.0)
            except Exception as exc:  # noqa: BLE001 - drift checks go on
                self.events.emit(EventKind.ERROR, None, f"drift check failed: {exc}")

    def _drift_once(self) -> None:
        observed = self.runtime.observe(self.settings.instance)  # first: it also tells whether Docker answers
        if self.work.busy:
            return  # a run in progress changes containers on purpose
        stopped = self.history.stopped()
        now = time.monotonic()
        for name, d in self._load.desired.items():
            if not d.spec.enabled or name in stopped:
                continue
            container = observed.containers.get(name)
            if container is not None and container.running:
                # Running again (a crash loop inside the container is Docker's restart policy's job,
                # with its own backoff; `status` shows it as crash-looping).
                self._heal.pop(name, None)
                continue
            if container is None and not observed.images.get(name):
                continue  # never built (or its build failed): not drift, nothing to heal from
            attempts, allowed = self._heal.get(name, (0, 0.0))
            if now < allowed:
                continue
            wait = min(self.settings.drift_interval * (2 ** attempts), HEAL_BACKOFF_MAX)
            self._heal[name] = (attempts + 1, now + wait)
            what = "is gone" if container is None else f"is {container.state}"
            loop = f" (attempt {attempts + 1}; crash-looping, next try in {wait:.0f} s)" if attempts >= 2 else ""
            self.events.emit(EventKind.TRIGGER, name, f"drift: container {what}; restoring it{loop}")
            self.work.submit(Job(frozenset({name}), Trigger.AUTO, reasons=["drift"], heal=True))

    # -- the worker --------------------------------------------------------

    def _run_job(self, running: Running) -> None:
        job = running.job
        command = [sys.executable, "-m", "gitops"]
        if self.config_path:
            command += ["-c", str(self.config_path)]
        command += ["sync" if job.config else "apply", "--trigger", job.trigger.value, "--events-json"]
        if job.fetch and not job.config:
            command.append("--fetch")
        if job.heal:
            command.append("--heal")
        if not job.prune and job.names is None:
            command.append("--no-prune")
        command += sorted(job.names or [])
        self.events.emit(EventKind.JOB_START, None, job.describe(), reasons=job.reasons, commit=job.commit)
        started = time.monotonic()
        builds: set[str] = set()
        try:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self.events.emit(EventKind.ERROR, None, f"cannot start a run: {exc}")
            return
        watcher = threading.Thread(target=self._cancel_when_asked, args=(running, child), daemon=True)
        watcher.start()
        errors = _Drain(child.stderr)  # read stderr alongside stdout: a full pipe would block the child
        result = None
        for line in child.stdout:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("build_id"):
                builds.add(data["build_id"])
            if data.get("event") == "result":
                result = data
            else:
                self._relay(data)
        stderr = errors.result()
        code = child.wait()
        self._reload_quietly()
        if running.cancel_reason:
            self._mark_cancelled(builds, running.cancel_reason)
        ok = code == 0
        if running.cancel_reason:
            outcome, detail = "cancelled", running.cancel_reason
        else:
            outcome = "done" if ok else "failed"
            detail = "" if ok else (stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}")
        self.events.emit(EventKind.JOB_DONE, None,
                         f"{job.describe()} {outcome} in {time.monotonic() - started:.1f} s"
                         + (f": {detail}" if detail else ""), ok=ok,
                         cancelled=running.cancel_reason, changed=len((result or {}).get("results", [])))

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

    def _relay(self, data: dict) -> None:
        kind = _CHILD_EVENTS.get(data.pop("event", ""), EventKind.INFO)
        deployment = data.pop("deployment", None)
        message = data.pop("message", "")
        self.events.emit(kind, deployment, message, **data)

    def _mark_cancelled(self, builds: set[str], reason: str) -> None:
        for build_id in builds:
            build = self.history.get(build_id)
            if build and build.status is BuildStatus.CANCELLED:
                self.history.update(build_id, error_message=reason)

    def _run_failed(self, job: Job, exc: Exception) -> None:
        self.events.emit(EventKind.ERROR, None, f"the run of {job.describe()} failed: {type(exc).__name__}: {exc}")

    def _superseded(self, running: Running, job: Job) -> None:
        self.events.emit(EventKind.TRIGGER, None, f"cancelling the run of {running.job.describe()}: "
                         f"superseded by {(job.commit or '')[:7]}")

    # -- webhooks (the server's Receiver) ------------------------------------

    def _start_server(self) -> None:
        import uvicorn

        from gitops.server.app import create_app

        host, _, port = self.settings.listen.rpartition(":")
        config = uvicorn.Config(create_app(self), host=host or "127.0.0.1", port=int(port), log_level="warning",
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, name="kalpana-server", daemon=True)
        thread.start()
        self._threads.append(thread)
        deadline = time.monotonic() + 10
        while not self._server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise KalpanaError(f"cannot listen on {self.settings.listen}: is another process using it? "
                               "Set `listen` in kalpana.yaml")
        self.events.emit(EventKind.INFO, None, f"webhooks on http://{self.settings.listen}")
        if self.insecure:
            self.events.emit(EventKind.WARNING, None, "insecure_webhooks is on: endpoints without a secret accept "
                             "unsigned deliveries from anyone who can reach them")

    def secret_for(self, name: str | None) -> tuple[str | None, str]:
        if name is None:
            return self.settings.webhook_secret, "webhook_secret in kalpana.yaml (or KALPANA_WEBHOOK_SECRET)"
        d = self._load.desired.get(name)
        where = d.file if d else "its deployment file"
        return (d.spec.webhook_secret if d else None), f"webhook_secret in {where}"

    def known(self, name: str) -> bool:
        return name in self._load.desired

    def targets(self, name: str | None) -> list[wh.Target]:
        found = []
        if name is None and self.settings.repo is not None:
            found.append(wh.Target(None, self.settings.repo.url, self.settings.repo.branch))
        for d in self._load.desired.values():
            if name is not None and d.name != name:
                continue
            source = d.spec.source
            if source and source.repo:
                found.append(wh.Target(d.name, source.repo, source.branch, auto_rebuild=d.spec.auto_rebuild))
            elif name is not None and self.settings.repo is not None:
                # A local source inside the config repository: a push to that repository is its push
                # (a sync of the config repository, then an apply of this deployment alone).
                found.append(wh.Target(d.name, self.settings.repo.url, self.settings.repo.branch,
                                       auto_rebuild=d.spec.auto_rebuild, config=True))
        return found

    def first_delivery(self, delivery: str | None) -> bool:
        return self.deliveries.first(delivery)

    def enqueue_push(self, routing: wh.Routing, push: wh.Push, delivery: str | None) -> None:
        what = (["config repository"] if routing.config else []) + routing.deployments
        self.events.emit(EventKind.TRIGGER, None, f"webhook push to {push.branch} at {push.after[:7]}"
                         f" (delivery {delivery or '-'}): {', '.join(what)}")
        if routing.config:
            self.work.submit(Job(None, Trigger.WEBHOOK, config=True, commit=push.after, prune=True,
                               reasons=[f"push {push.after[:7]}"]))
        if routing.deployments:
            self.work.submit(Job(frozenset(routing.deployments), Trigger.WEBHOOK, fetch=True, commit=push.after,
                                 config=routing.via_config, reasons=[f"push {push.after[:7]}"]))


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
