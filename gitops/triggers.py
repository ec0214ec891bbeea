"""The daemon's triggers: file saves, source edits, polls, drift and pushes, each turned into a ``Job``.

Each runs on a thread of its own (the pushes on the webhook server's) and only
ever submits jobs to the one work queue; the worker runs them. The triggers
keep the daemon's view of the deployment files (which file declares what,
which env_files and local sources they read) and are the webhook server's
``Receiver``.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from gitops import webhook as wh
from gitops.build import Trigger
from gitops.config import Settings, load_settings
from gitops.deliveries import Claim, Deliveries
from gitops.errors import DockerUnavailable, KalpanaError, SourceError
from gitops.events import DaemonError, Events, Info, Triggered, Warned
from gitops.history import History
from gitops.loader import LoadResult, load_configured, load_configured_file
from gitops.queue import Job, Running, WorkQueue
from gitops.runtime.protocol import Runtime
from gitops.source import GitCheckout
from gitops.source_watch import SourceDirs
from gitops.worker import Outcome

_WRITING = object()  # a file the daemon is writing now (see ``Triggers.writing``)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


HEAL_BACKOFF_MAX = 300.0
WATCH_RETRY = 5.0  # seconds before a source watch that failed (a directory gone, no inotify watches left) restarts


class _Either:
    """A ``stop_event`` for watchfiles that is set when any of ``events`` is."""

    def __init__(self, *events: threading.Event):
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


class Triggers:
    """Watches files, polls git, checks drift and receives pushes; submits the work each asks for."""

    def __init__(self, settings: Settings, config_path: Path | None, runtime: Runtime, history: History,
                 events: Events, work: WorkQueue, stopping: threading.Event):
        self.settings = settings
        self.config_path = config_path
        self.runtime = runtime
        self.history = history
        self.events = events
        self.work = work
        self._stop = stopping
        self.deliveries = Deliveries(settings.state_path / "deliveries.log")
        self._load = LoadResult()
        self._file_names: dict[Path, set[str]] = {}
        self._env_files: dict[Path, set[str]] = {}  # env_file -> the deployments that read it
        self._sources = SourceDirs({})
        self._sources_moved = threading.Event()  # the set of source directories to watch changed
        self._heal: dict[str, tuple[int, float]] = {}  # name -> (attempts, next allowed time)
        # Files the daemon itself writes (the API's create): path -> _WRITING, then their content's digest
        # (None: no file). Their events are not changes: the API queues the apply that covers them.
        self._own: dict[Path, object] = {}
        self._own_lock = threading.Lock()
        self._docker_down = False

    @property
    def insecure(self) -> bool:
        """Accept unsigned deliveries on endpoints without a secret (follows kalpana.yaml reloads)."""
        return self.settings.insecure_webhooks

    def threads(self) -> list[threading.Thread]:
        """The watchers (files, sources), poller and drift checker, not yet started."""
        return [threading.Thread(target=target, name=f"kalpana-{target.__name__.strip('_')}", daemon=True)
                for target in (self._watch_files, self._watch_sources, self._poll, self._drift)]

    def reload_quietly(self) -> None:
        """Refresh the view after a run (a sync may have changed the files); errors were reported by the run."""
        try:
            self._load = self._loaded(load_configured(self.settings))
        except Exception as exc:  # noqa: BLE001 - keep the previous view
            self.events.emit(DaemonError(None, f"cannot reload the deployment files: {exc}"))

    def superseded(self, running: Running, job: Job) -> None:
        """The work queue cancels a run for a newer push: say so."""
        self.events.emit(Triggered(None, f"cancelling the run of {running.job.describe()}: "
                                   f"superseded by {(job.commit or '')[:7]}"))

    def reload(self) -> LoadResult:
        """Read the deployment files again, reporting their errors."""
        load = load_configured(self.settings)
        for error in load.errors:
            self.events.emit(DaemonError(None, str(error)))
        self._load = self._loaded(load)
        return load

    def _loaded(self, load: LoadResult) -> LoadResult:
        files: dict[Path, set[str]] = {}
        env_files: dict[Path, set[str]] = {}
        for d in load.desired.values():
            files.setdefault(Path(d.file).resolve(), set()).add(d.name)
            if d.spec.env_file:
                env_files.setdefault((Path(d.file).resolve().parent / d.spec.env_file).resolve(), set()).add(d.name)
        self._file_names = files
        self._env_files = env_files
        sources = SourceDirs.of(load.desired.values(), self.settings.workspace_path, self.settings.state_path)
        moved = sources.roots() != self._sources.roots()
        self._sources = sources
        if moved:
            self._sources_moved.set()  # the source watcher restarts on the new set
        return load

    @contextlib.contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        """Around the daemon's own write of a deployment file: the file watcher leaves that write alone.

        Without this the API's create was applied twice (its own apply, then the watcher's "file
        change"), and a deployment whose build fails was built, and failed, twice.
        """
        path = path.resolve()
        with self._own_lock:
            self._own[path] = _WRITING
        try:
            yield
        finally:
            with self._own_lock:
                self._own[path] = _digest(path)

    def _own_write(self, path: Path) -> bool:
        """True when ``path`` is as the daemon itself left it (or is being written by it)."""
        with self._own_lock:
            if path not in self._own:
                return False
            expected = self._own[path]
            if expected is _WRITING:
                return True
            del self._own[path]  # once: an edit after it, even back to the same text, is the user's
            return expected == _digest(path)

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
            self.events.emit(DaemonError(None, f"file watching stopped: {exc}"))

    def _files_changed(self, paths: set[Path]) -> None:
        config = self.config_path.resolve() if self.config_path else None
        if config in paths:
            try:
                settings = load_settings(config)
            except KalpanaError as exc:
                self.events.emit(DaemonError(None, f"{exc} (settings not reloaded; what runs stays)"))
                return
            if settings.listen != self.settings.listen or settings.state_path != self.settings.state_path:
                self.events.emit(Warned(None, "listen and state_dir take effect when `kalpana watch` restarts"))
            # Runs are child processes that read kalpana.yaml themselves; the daemon's own
            # secrets, intervals and paths follow it from here on.
            self.settings = settings.model_copy(update={"listen": self.settings.listen,
                                                        "state_dir": self.settings.state_dir})
            self.reload()
            self.events.emit(Triggered(None, f"{config.name} changed: applying everything"))
            self.work.submit(Job(None, Trigger.AUTO, prune=True, reasons=["config changed"]))
            return
        names: set[str] = set()
        removed = False
        for path in sorted(paths):
            if path in self._env_files:  # an env_file: the deployments reading it get the new values
                names |= self._env_files[path]
                continue
            if path.suffix not in (".yaml", ".yml", ".json") or path.name.startswith(".") or self._own_write(path):
                continue
            before = self._file_names.get(path, set())
            if path.exists():
                loaded, errors = load_configured_file(self.settings, path)
                if errors:
                    for error in errors:
                        self.events.emit(DaemonError(None, f"{error} (nothing applied for this file; "
                                                     "what runs stays)"))
                    continue
                after = {d.name for d in loaded}
            else:
                after = set()
            removed = removed or bool(before - after)
            names |= before | after
        if not names and not removed:
            return
        self.reload()
        if removed:
            self.events.emit(Triggered(None, "deployment file(s) removed: applying everything (prune)"))
            self.work.submit(Job(None, Trigger.AUTO, prune=True, reasons=["file removed"]))
        else:
            self.events.emit(Triggered(None, f"file change: {', '.join(sorted(names))}"))
            self.work.submit(Job(frozenset(names), Trigger.AUTO, reasons=["file change"]))

    def _watch_sources(self) -> None:
        """Watch the local source directories (recursively); a save rebuilds the deployments built from it.

        The set follows the files: a deployment added, removed or given another ``source.path``
        changes it on the next reload, and the watch restarts on the new set.
        """
        from watchfiles import watch

        while not self._stop.is_set():
            self._sources_moved.clear()
            roots = self._sources.roots()
            if not roots:
                self._sources_moved.wait(1.0)
                continue
            try:
                for changes in watch(*roots, watch_filter=lambda change, path: self._sources.relevant(Path(path)),
                                     recursive=True, stop_event=_Either(self._stop, self._sources_moved),
                                     debounce=int(self.settings.debounce * 1000), step=20, rust_timeout=500,
                                     yield_on_timeout=False, raise_interrupt=False, ignore_permission_denied=True):
                    self._sources_changed({Path(path) for _, path in changes})
            except Exception as exc:  # noqa: BLE001 - a watcher crash must not take the daemon down
                self.events.emit(DaemonError(None, f"watching the sources failed: {exc}; "
                                             f"retrying in {WATCH_RETRY:g} s"))
                self._stop.wait(WATCH_RETRY)

    def _sources_changed(self, paths: set[Path]) -> None:
        sources = self._sources
        names = sources.owners_of(paths)
        if not names:
            return
        self.events.emit(Triggered(None, f"source change ({sources.describe(paths)}): {', '.join(sorted(names))}"))
        self.work.submit(Job(frozenset(names), Trigger.AUTO, reasons=["source change"]))

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval):
            try:
                self._poll_once()
            except Exception as exc:  # noqa: BLE001 - keep polling whatever one round hit
                self.events.emit(DaemonError(None, f"poll failed: {exc}"))

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
                    self.events.emit(DaemonError(d.name, str(exc)))
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
            self.events.emit(DaemonError(None, f"poll of {what}: {exc}; keeps serving what runs, retrying"))
            return None
        if remote and remote != local:
            self.events.emit(Triggered(None, f"poll: new commit {remote[:7]} for {what}"))
            return remote
        return None

    def _drift(self) -> None:
        delay = self.settings.drift_interval
        while not self._stop.wait(delay):
            try:
                self._drift_once()
                if self._docker_down:
                    # What failed while it was away (the start-up run, say) gets its turn now.
                    self.events.emit(Info(None, "Docker answers again: applying everything"))
                    self.work.submit(Job(None, Trigger.AUTO, prune=True, reasons=["Docker is back"]))
                self._docker_down = False
                delay = self.settings.drift_interval
            except DockerUnavailable as exc:
                if not self._docker_down:
                    self.events.emit(DaemonError(None, f"{exc}; retrying with backoff"))
                self._docker_down = True
                delay = min(delay * 2, 60.0)
            except Exception as exc:  # noqa: BLE001 - drift checks go on
                self.events.emit(DaemonError(None, f"drift check failed: {exc}"))

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
            self.events.emit(Triggered(name, f"drift: container {what}; restoring it{loop}"))
            self.work.submit(Job(frozenset({name}), Trigger.AUTO, reasons=["drift"], heal=True))

    # -- pushes (the webhook server's Receiver) ------------------------------

    def secret_for(self, name: str | None) -> tuple[str | None, str]:
        """(secret, the setting that holds it) of a deployment, or of the instance when ``name`` is None."""
        if name is None:
            return self.settings.webhook_secret, "webhook_secret in kalpana.yaml (or KALPANA_WEBHOOK_SECRET)"
        # Never the file's path: these words reach whoever calls the endpoint, signed or not.
        d = self._load.desired.get(name)
        return (d.spec.webhook_secret if d else None), "webhook_secret in the deployment's file"

    def known(self, name: str) -> bool:
        """Does a file declare ``name`` (as of the daemon's last reload)?"""
        return name in self._load.desired

    def targets(self, name: str | None) -> list[wh.Target]:
        """What a push to this endpoint may rebuild: the config repository and/or deployments' git sources."""
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

    def claim_delivery(self, delivery: str | None) -> Claim:
        """NEW (queue it), QUEUED (its job waits or runs) or HANDLED (its job succeeded): see ``Deliveries``."""
        return self.deliveries.claim(delivery)

    def settle_deliveries(self, job: Job, outcome: Outcome) -> None:
        """After a run of ``job``: its deliveries are handled if it succeeded, free to be redelivered if not.

        A run the daemon cancelled keeps them in flight: a superseded run's work (its deliveries
        with it) went into the job that runs next, and a stopping daemon forgets them anyway.
        """
        if outcome is Outcome.DONE:
            self.deliveries.done(job.deliveries)
        elif outcome is not Outcome.CANCELLED:
            self.deliveries.release(job.deliveries)

    def enqueue_push(self, work: wh.PushWork, push: wh.Push, delivery: str | None) -> None:
        """Queue what a push asks for: a sync of the config repository and/or a fetch + apply of deployments."""
        what = (["config repository"] if work.config else []) + work.deployments
        self.events.emit(Triggered(None, f"webhook push to {push.branch} at {push.after[:7]}"
                                   f" (delivery {delivery or '-'}): {', '.join(what)}"))
        carried = frozenset({delivery}) if delivery else frozenset()
        jobs = []
        if work.config:
            jobs.append(Job(None, Trigger.WEBHOOK, config=True, commit=push.after, prune=True,
                            reasons=[f"push {push.after[:7]}"], deliveries=carried))
        if work.deployments:
            jobs.append(Job(frozenset(work.deployments), Trigger.WEBHOOK, fetch=True, commit=push.after,
                            config=work.via_config, reasons=[f"push {push.after[:7]}"], deliveries=carried))
        if jobs:
            # One job, as the queue would make of the two: the delivery is handled when that one succeeds.
            job = jobs[0] if len(jobs) == 1 else jobs[0].merge(jobs[1])
            job.reasons = list(dict.fromkeys(job.reasons))
            self.work.submit(job)
