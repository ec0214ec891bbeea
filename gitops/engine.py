"""The core: executes plans (source -> build -> deploy -> record), emitting events as it goes.

Every operation the CLI offers, and the HTTP API will, is one method here
(plan, apply, sync, deploy, stop, start, rollback, status, builds, build and
app logs, webhooks): callers translate arguments and render, nothing more.
``Engine.plan`` and ``Engine.apply`` share one function (``_prepare``); only
``apply`` and the operating commands touch Docker beyond one listing.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gitops import interrupt
from gitops import labels as L
from gitops import routing
from gitops.builder import Builder
from gitops.config import Settings
from gitops.deployer import LOG_LINES, Deployer
from gitops.build_logs import HistoryError
from gitops.errors import (Cancelled, DockerUnavailable, ImageMissing, KalpanaError, LockTimeout, SourceError,
                           SpecError, UnknownDeployment)
from gitops.events import (Events, LogLine, PhaseEntered, Planned, StepFailed, StepStarted,
                           StepSucceeded, Warned)
from gitops.build import Build, BuildStatus, Trigger, now_iso
from gitops.apply_result import ApplyResult, Outcome
from gitops.history import History
from gitops.housekeeping import Housekeeping
from gitops.loader import LoadResult, load_configured
from gitops.lock import ApplyLock
from gitops.masking import Masker, mask_url
from gitops.plan import Action, Plan, Step, foreign_owner, make_plan
from gitops.runtime.protocol import Runtime
from gitops.runtime.objects import Container, Observed
from gitops.source import CONFIG_REPOSITORY, NO_SOURCE, GitCheckout, Revision, resolve
from gitops.routes import RouteTable
from gitops.spec import Desired
from gitops.traefik import TraefikManager, TraefikMode, TraefikState

if TYPE_CHECKING:
    from gitops.overview import DeploymentView
    from gitops.pool import Cancel
    from gitops.route_report import RoutesReport
    from gitops.status import DeploymentStatus
    from gitops.webhook import Endpoint


class RecordedFailure(KalpanaError):
    """A build or deploy failed and was recorded as ``build``; what runs was kept.

    ``transient``: the cause was outside the build (Docker unreachable, the history or the disk,
    a registry or git remote that did not answer), so the same run may well succeed later.
    """

    def __init__(self, message: str, build: Build, transient: bool = False):
        super().__init__(message)
        self.build = build
        self.transient = transient


# Failures that say nothing about the deployment itself: retrying the same run later is sensible.
TRANSIENT = (DockerUnavailable, HistoryError, LockTimeout, ImageMissing, SourceError, OSError)


class Engine:
    """Makes the Docker host match the deployment files of one Kalpana instance."""

    def __init__(self, settings: Settings, runtime: Runtime, history: History, events: Events | None = None, *,
                 deployer: Deployer | None = None):
        self.settings = settings
        self.runtime = runtime
        self.history = history
        self.events = events or Events()
        self.instance = settings.instance
        # Which files manage a container: two workspaces on one instance must not prune each other.
        self.workspace = str(settings.deployments_path)
        self.builder = Builder(runtime, self.instance, image_fallbacks=settings.image_fallbacks)
        self.housekeeping = Housekeeping(runtime, history, settings, self.events)
        self._reserved: dict[str, str] = {}  # build records made in advance, for the apply that runs now
        # While steps run on worker threads: the run's cancel flag, and what only one of them may do at once.
        self._cancel: Cancel | None = None
        self._ports = threading.Lock()  # choosing a free host port, then recording it
        self._images = threading.Lock()  # pruning old images
        self.deployer = deployer or Deployer(runtime, self.instance, stop_timeout=settings.stop_timeout,
                                             log_tail=settings.log_tail, publish_address=settings.publish_address,
                                             workspace=self.workspace)
        if self.deployer.workspace is None:  # an injected deployer (tests) labels containers the same way
            self.deployer.workspace = self.workspace
        # Subdomain mode (a base URL is set): routes live in the route directory Traefik watches.
        self.route = routing.RouteSettings.from_settings(settings)
        self.routes = RouteTable(settings.routes_path, self.instance)
        self.deployer.route = self.route
        self.deployer.routes = self.routes
        self.deployer.checkpoint = self._checkpoint

    # -- reading ---------------------------------------------------------

    def config_repo(self) -> GitCheckout | None:
        """The checkout of the config repository, when kalpana.yaml sets ``repo``."""
        repo = self.settings.repo
        return GitCheckout.for_config(repo, self.settings.config_checkout) if repo else None

    def load(self) -> LoadResult:
        """Load and validate every deployment file (cloning the config repository on first use)."""
        checkout = self.config_repo()
        if checkout is not None and not checkout.exists():
            checkout.clone()
        return load_configured(self.settings)

    def desired(self, name: str) -> Desired:
        """The loaded spec of one deployment; UnknownDeployment (listing the known ones) otherwise."""
        load = self.load()
        _require_known({name}, load)
        return load.desired[name]

    def plan(self, names: list[str] | None = None, prune: bool = True,
             take_over: bool = False) -> tuple[Plan, LoadResult]:
        """Compute the plan (one listing of Docker, no changes); ``take_over`` as in ``apply``."""
        plan, load, _ = self._prepare(names, prune, take_over=take_over)
        return plan, load

    def status(self) -> list[DeploymentStatus]:
        """Every declared deployment (and any container no file declares any more): state, URL, build."""
        from gitops.status import report  # imported here: a no-op apply never needs it

        # One read of the history for the stops, latest builds and problems the report asks about.
        return report(self.load(), self.runtime, self.history.snapshot(), self.instance,
                      self.settings.publish_address, workspace=self.workspace)

    def deployments(self, name: str | None = None) -> list[DeploymentView]:
        """What the API shows of every deployment (or of ``name``): spec summary, state, builds, webhook URL."""
        from gitops.overview import overview  # imported here: a no-op apply never needs it

        load = self.load()
        views = overview(load, self.runtime, self.history, self.settings, only=name)
        if name is not None and not views:
            _require_known({name}, load)
        return views

    def create_deployment(self, body: object) -> Path:
        """Write a new deployment file from ``body`` (the fields a file holds); the next apply deploys it."""
        from gitops import deployment_files

        path = deployment_files.create(self.settings, body)
        # What the plan checks beyond the file (its source resolves, its host port is free): refused now,
        # with the field, rather than accepted and then left "not deployed" by every apply.
        try:
            _, load, _ = self._prepare([body["name"]], prune=False)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        mine = [e for e in load.errors if _same_file(e.file, path)]
        if mine:
            path.unlink(missing_ok=True)
            raise deployment_files.InvalidDeployment(mine[0].field, mine[0].message)
        return path

    def delete_deployment(self, name: str) -> Path:
        """Remove the file declaring ``name``; the next apply with pruning removes its container (history stays)."""
        from gitops import deployment_files

        return deployment_files.delete(self.settings, name)

    def builds(self, name: str, limit: int | None = 20) -> list[Build]:
        """Build history of ``name``, newest first (``limit`` None: all)."""
        self._require(name, history=True)
        return self.history.list(name, limit=limit)

    def build_logs(self, name: str, build_id: str | None = None) -> tuple[Build, str]:
        """The stored log of ``name``'s build ``build_id`` (default: its latest build)."""
        self._require(name, history=True)
        if build_id:
            build = self._build_of(name, build_id)
        else:
            build = self.history.latest(name)
            if build is None:
                raise KalpanaError(f"{name} has no builds yet: `kalpana apply` or `kalpana deploy {name}` makes one")
        return build, self.history.logs(build.id)

    def build(self, build_id: str) -> Build:
        """One build record by id (or unique prefix), whichever deployment it belongs to."""
        from gitops.build_logs import BuildNotFound

        build = self.history.get(build_id)
        if build is None:
            raise BuildNotFound(f"no build {build_id!r}: `kalpana builds NAME` lists a deployment's builds")
        return build

    def app_logs(self, name: str, tail: int | str = 200) -> str:
        """The last ``tail`` lines the running app wrote, its env values masked like build logs."""
        container, masker = self._container_of(name)
        return masker.mask(self.runtime.logs(container.id, tail=tail))

    def follow_app_logs(self, name: str, tail: int | str = 200) -> Iterator[str]:
        """The app's output as it comes, after its last ``tail`` lines, masked line by line."""
        container, masker = self._container_of(name)
        return masker.mask_stream(self.runtime.follow_logs(container.id, tail=tail))

    def webhooks(self) -> list[Endpoint]:
        """Each deployment's webhook URL (for GitHub), after the instance-wide one."""
        from gitops import webhook  # imported here: a no-op apply never needs it

        load = self.load()
        settings = self.settings
        base = settings.public_url or f"http://{settings.listen}"
        return webhook.endpoints(
            base, settings.webhook_secret, settings.repo.url if settings.repo else None,
            [(name, d.spec.webhook_secret, d.spec.auto_rebuild, d.spec.source.repo if d.spec.source else None)
             for name, d in load.desired.items()])

    def _prepare(self, names: list[str] | None, prune: bool, observed: Observed | None = None,
                 unfetched: list[str] | None = None,
                 fetch: bool = False, automatic: bool = False,
                 take_over: bool = False, record: bool = False) -> tuple[Plan, LoadResult, dict[str, Revision]]:
        """The plan of ``names`` (None: all), the files' load and the sources' revisions.

        ``record`` (an apply): each deployment's source or host-port problem is kept in the history,
        so that `status` and the API say why it was left alone after the run that found it.
        """
        load = self.load()
        observed = observed or self.runtime.observe(self.instance)
        only = set(names) if names else None
        if only:
            _require_known(only, load, also=set(observed.containers))
        if fetch:
            failed = self._fetch_sources([d for n, d in load.desired.items() if not only or n in only], automatic)
            if unfetched is not None:
                unfetched += failed
        revisions: dict[str, Revision] = {}
        broken: set[str] = set()
        found: dict[str, SpecError] = {}  # deployment -> what this run found wrong beyond its file
        for name, d in list(load.desired.items()):
            if only and name not in only:
                continue
            try:
                revisions[name] = self.revision_of(d)
            except SourceError as exc:
                # Like a file that fails to load: leave that deployment alone, prune nothing.
                found[name] = SpecError(d.file, d.line, "source", str(exc))
                load.errors.append(found[name])
                broken.add(name)
                del load.desired[name]
        stopped = self.history.stopped()
        selected = [d for n, d in load.desired.items() if (not only or n in only) and n not in stopped]
        busy = routing.busy_ports(selected, observed, address=self.deployer.publish_address,
                                  is_free=self.deployer.port_free, declared=load.desired)
        for name, message in busy.items():
            # Like a file error: nothing is built for it, what runs is left alone, nothing is pruned.
            d = load.desired.pop(name)
            found[name] = SpecError(d.file, d.line_of("exposed_port"), "exposed_port", message)
            load.errors.append(found[name])
            broken.add(name)
        if record:
            problems: dict[str, str | None] = {name: None for name in revisions}
            problems.update({name: str(error) for name, error in found.items()})
            self.history.set_problems(problems)
        for name, d in load.desired.items():
            warning = routing.missing_base_url(d, self.settings.traefik_base_url)
            if warning and (not only or name in only):
                self.events.emit(Warned(name, warning))
        note = None
        if not load.ok:
            note = f"pruning skipped: {len(load.errors)} file error(s) this run"
        plan = make_plan(load.desired, {n: r.revision for n, r in revisions.items()}, observed,
                         stopped=stopped, prune=prune and load.ok,
                         prune_note=note if prune else "--no-prune", only=only, broken=broken,
                         workspace=self.workspace, take_over=take_over)
        plan.steps = [self._rerouted(step) for step in plan.steps]
        return plan, load, revisions

    def revision_of(self, d: Desired) -> Revision:
        """The revision of ``d``'s source as it is now (NO_SOURCE when disabled); SourceError if unreadable."""
        if not d.spec.enabled:
            return NO_SOURCE
        return resolve(d.spec.source, self.settings.workspace_path, self.settings.checkouts_path, d.name,
                       state=self.settings.state_path)

    def _rerouted(self, step: Step) -> Step:
        """A running container reached the wrong way (port mode vs subdomain, another host) is redeployed.

        The base URL is a setting, not part of a deployment's hash: its change shows here, by the route label.
        """
        d, container = step.desired, step.container
        if step.action is not Action.NOOP or d is None or container is None or not container.running:
            return step
        wanted = routing.route_host(d, self.settings.traefik_base_url)
        if container.route_host == wanted:
            return step
        reason = (f"route changed: {routing.https_url(wanted)}" if wanted else "route changed: port mode") + \
            (f" (was {routing.https_url(container.route_host)})" if container.route_host else " (was port mode)")
        return Step(step.name, Action.REDEPLOY, reason, d, container, None, step.revision)

    def _fetch_sources(self, selected: list[Desired], automatic: bool) -> list[str]:
        """Fetch the git sources of ``selected``; a failure keeps the old checkout. Returns those that failed.

        ``automatic`` runs (webhooks, polls) leave deployments with auto_rebuild: false where they are.
        """
        failed: list[str] = []
        for d in selected:
            self._checkpoint()  # each fetch may take minutes: a cancelled run fetches no more
            source = d.spec.source
            if not (source and source.repo and d.spec.enabled) or (automatic and not d.spec.auto_rebuild):
                continue
            try:
                checkout = GitCheckout.for_source(source, self.settings.checkouts_path, d.name)
                before, after = checkout.sync()
            except SourceError as exc:
                self.events.emit(Warned(d.name, f"{exc}; using the last good checkout"))
                failed.append(d.name)
                continue
            if before != after:
                self.events.emit(PhaseEntered(d.name, f"fetched {mask_url(source.repo)}: {before[:7]} -> {after[:7]}"))
        return failed

    def fetch_config(self) -> tuple[str, str] | None:
        """Fetch + hard-reset the config repository; (old, new) head, or None without one."""
        checkout = self.config_repo()
        if checkout is None:
            return None
        try:
            before, after = checkout.sync()
        except SourceError as exc:
            self.events.emit(Warned(None, f"{exc}; using the last good checkout of the config repository"))
            return None
        if before != after:
            self.events.emit(PhaseEntered(None, f"config repository {before[:7]} -> {after[:7]}"))
        return before, after

    # -- changing --------------------------------------------------------

    def sync(self, names: list[str] | None = None, *, prune: bool = True,
             trigger: Trigger = Trigger.MANUAL, force: bool | Collection[str] = False,
             builds: Mapping[str, str] | None = None) -> ApplyResult:
        """`kalpana sync`: fetch the config repository and the git sources, then apply."""
        return self.apply(names, prune=prune, trigger=trigger, fetch=True, fetch_config=True, force=force,
                          builds=builds)

    def apply(self, names: list[str] | None = None, *, prune: bool = True, trigger: Trigger = Trigger.MANUAL,
              force: bool | Collection[str] = False, fetch: bool = False, heal: bool = False,
              fetch_config: bool = False, take_over: bool = False,
              builds: Mapping[str, str] | None = None) -> ApplyResult:
        """Execute the plan under the apply lock.

        ``force`` rebuilds the named deployments even if up to date (so a rollback returns
        to what the files declare); ``fetch``
        first brings their git sources to the newest commit of their branch;
        ``heal`` (drift) only starts or recreates containers from existing
        images and leaves every other change for a real trigger: no rebuild storms.
        A deployment declared here whose container another workspace manages is refused
        (a failed outcome) unless ``take_over``.
        ``force`` may also name the deployments to rebuild (a daemon job merges several requests);
        ``builds`` gives build records made in advance (PENDING, by deployment) for their builds to use.
        """
        self._reserved = dict(builds or {})
        try:
            return self._apply(names, prune=prune, trigger=trigger, force=force, fetch=fetch, heal=heal,
                               fetch_config=fetch_config, take_over=take_over)
        finally:
            self._reserved = {}  # a record no step used is settled by whoever reserved it

    def _apply(self, names: list[str] | None, *, prune: bool, trigger: Trigger, force: bool | Collection[str],
               fetch: bool, heal: bool, fetch_config: bool, take_over: bool) -> ApplyResult:
        forced = (lambda name: bool(force)) if isinstance(force, bool) else (lambda name: name in force)
        with ApplyLock(self.settings.state_path, self.settings.lock_timeout, self.events):
            if not isinstance(force, bool) and force:
                # Deploying a deployment by name means "run this", as `deploy` does: an operator's stop ends.
                for name in self.history.stopped() & set(force):
                    self.history.set_stopped(name, False)
            unfetched: list[str] = []
            # Under the lock: another run must never read a half-reset checkout.
            if fetch_config and self.fetch_config() is None and self.settings.repo is not None:
                unfetched.append(CONFIG_REPOSITORY)
            observed = self.housekeeping.recover()
            plan, load, revisions = self._prepare(names, prune, observed, unfetched, fetch=fetch,
                                                  automatic=trigger is not Trigger.MANUAL, take_over=take_over,
                                                  record=True)
            if plan.prune_note and prune:
                self.events.emit(Warned(None, plan.prune_note))
            result = ApplyResult(plan, load, unfetched=unfetched)
            if plan.changes or any(forced(s.name) for s in plan.steps):
                # Load the docker SDK before any record says BUILDING: an interrupt landing in the
                # middle of that import would leave half-imported modules instead of a clean cancel.
                # Only builds and pulls need it: a redeploy-only plan skips its import (issue 12).
                self.runtime.load_sdk(builds=bool(force) or any(s.action in (Action.CREATE, Action.REBUILD)
                                                          for s in plan.changes))
            if any(self._routed(s) for s in plan.changes) or (force and any(self._routed(s) for s in plan.steps)):
                self._ensure_traefik()
            changes = [f"{s.name} {s.action.value} ({s.reason})" for s in plan.changes]
            self.events.emit(Planned(None, "; ".join(changes) if changes else "nothing to change",
                                     changes=len(changes)))
            # --force returns to the files, not over the operator's `stop` (`deploy` and `start` lift that).
            held = self.history.stopped() if force else set()
            slots: list[Outcome | tuple[Step, Revision, bool]] = []  # in plan order: refused, or to execute
            for step in plan.steps:
                if forced(step.name) and step.name in held and step.action is Action.NOOP:
                    self.events.emit(Warned(step.name, "stopped by the operator: --force leaves it stopped "
                                            "(`kalpana start` resumes it)"))
                elif forced(step.name) and step.desired and step.action in (Action.NOOP, Action.START, Action.REDEPLOY) \
                        and step.desired.spec.enabled:
                    step = Step(step.name, Action.REBUILD, "deploy requested by the operator", step.desired,
                                step.container, None, step.revision)
                if step.action is Action.FOREIGN and step.desired is not None and not heal:
                    slots.append(self._refuse(step))
                    continue
                if not step.changes:
                    continue
                if heal and step.action is not Action.START:
                    self.events.emit(Warned(step.name, f"not healed: it needs {step.action.value} ({step.reason}), "
                                            "which waits for a file change, push or `kalpana apply`"))
                    continue
                slots.append((step, revisions.get(step.name, NO_SOURCE), forced(step.name)))
            done = iter(self._run_steps([s for s in slots if not isinstance(s, Outcome)], trigger, plan.steps))
            result.outcomes.extend(s if isinstance(s, Outcome) else next(done) for s in slots)
            # Nothing changed on Docker when no step ran: the observation taken at the start still holds.
            try:
                self._drop_stale_routes(observed if not result.outcomes else None)
            except KalpanaError as exc:  # housekeeping: the apply itself did what it said
                self.events.emit(Warned(None, f"stale routes not removed: {exc}"))
            self.housekeeping.prune_history(observed if not result.outcomes else None)
            return result

    def _run_steps(self, work: list[tuple[Step, Revision, bool]], trigger: Trigger,
                   planned: list[Step]) -> list[Outcome]:
        """Execute ``work`` (step, revision, forced); outcomes in the same order.

        Independent steps run ``parallelism`` at a time (see ``gitops.pool``); with 1, or a single
        step, they run one after another on this thread, as they always did. Kept in order: the
        steps of one deployment (one step each), removals (pruning) after every other step, and a
        step whose exposed_port another deployment's container holds now after the step that
        moves that one off it. A failed step does not stop the others.
        """
        size = min(self.settings.parallelism, len(work))
        if size <= 1:
            return [self._execute(step, revision, trigger, forced) for step, revision, forced in work]
        held = {s.container.host_port: s.name for s in planned if s.container and s.container.host_port}

        def waits(step: Step) -> bool:
            port = step.desired.spec.exposed_port if step.desired else None
            return step.action is Action.REMOVE or held.get(port, step.name) != step.name

        first = [i for i, (step, _, _) in enumerate(work) if not waits(step)]
        outcomes: dict[int, Outcome] = {}
        outcomes.update(zip(first, self._run_parallel([work[i] for i in first], trigger, size)))
        for i, (step, revision, forced) in enumerate(work):
            if i not in outcomes:
                outcomes[i] = self._execute(step, revision, trigger, forced)
        return [outcomes[i] for i in range(len(work))]

    def _run_parallel(self, work: list[tuple[Step, Revision, bool]], trigger: Trigger, size: int) -> list[Outcome]:
        """The pool: every step on a worker thread; Ctrl-C cancels them all and waits (see ``gitops.pool``)."""
        from gitops import pool  # imported here: a no-op apply never starts a thread

        if len(work) <= 1:
            return [self._execute(step, revision, trigger, forced) for step, revision, forced in work]
        cancel = pool.Cancel()
        self._cancel = cancel
        try:
            done = pool.run([lambda w=w: self._execute(w[0], w[1], trigger, w[2]) for w in work],
                            min(size, len(work)), cancel)
        finally:
            self._cancel = None
        cancelled = [d.error for d in done if isinstance(d.error, Cancelled)]
        if cancelled:
            raise Cancelled("\n".join(str(e) for e in cancelled))
        if cancel.is_set or any(isinstance(d.error, KeyboardInterrupt) for d in done):
            raise KeyboardInterrupt
        for d in done:
            if d.error is not None:
                raise d.error  # a bug, not a failed deployment (those are outcomes): after the others finished
        return [d.value for d in done]

    def _checkpoint(self) -> None:
        """KeyboardInterrupt, the cancel path of a step, when the run was cancelled.

        On a worker thread: its pool's ``Cancel`` says so. On the main thread a Ctrl-C or SIGTERM
        raises by itself, but Python drops that exception when it lands in a ``__del__``: the
        process's mark (``gitops.interrupt``) catches it here.
        """
        if self._cancel is not None:
            self._cancel.check()
        else:
            interrupt.check()

    def _routed(self, step: Step) -> bool:
        return bool(step.desired and step.desired.spec.enabled and step.action is not Action.REMOVE
                    and routing.route_host(step.desired, self.settings.traefik_base_url))

    def _drop_stale_routes(self, observed: Observed | None) -> None:
        """Remove this instance's route documents that no container of its deployment carries a route for.

        A deployment moved to port mode (base URL or subdomain removed), or removed while a run died,
        would otherwise keep a route to a container that is gone (`kalpana routes`: "no container answers").
        Under the apply lock, so no rollout is between writing a route and labelling its container.
        """
        names = self.routes.ours()
        if not names:
            return
        observed = observed or self.runtime.observe(self.instance)
        routed = {c.deployment for c in list(observed.containers.values()) + observed.extra if c.route_host}
        for name in names:
            if name not in routed:
                self.routes.drop(name)

    def _ensure_traefik(self) -> TraefikState:
        """Before the first routed container: the network and a Traefik (the user's, or kalpana-traefik).

        Raises (naming the image) when kalpana-traefik's image is missing: no deployment is touched.
        """
        manager = TraefikManager(self.runtime, self.settings)
        state, started = manager.up()
        if started:
            self.events.emit(PhaseEntered(None, f"started {state.container} ({state.image}) on network "
                                          f"{state.network}, routes from {state.routes_dir}"))
        if state.mode is TraefikMode.USER_LABELS:
            self.events.emit(Warned(None, f"the Traefik on {state.network} ({state.container}) does not mount "
                                    f"{state.routes_dir}: routes are Docker labels, and Traefik may send requests "
                                    "to a new container before its health check passes (mount that directory and "
                                    "add its file provider for zero-downtime switches)"))
        if self.route is not None:
            self.route = replace(self.route, labels=state.mode is TraefikMode.USER_LABELS)
            self.deployer.route = self.route
        return state

    def traefik_up(self) -> tuple[TraefikState, bool]:
        """`kalpana traefik up`: the network and kalpana-traefik (unless a user's Traefik serves); (state, started)."""
        return TraefikManager(self.runtime, self.settings).up()

    def traefik_down(self) -> Container | None:
        """`kalpana traefik down`: stop and remove kalpana-traefik; its certificate volume stays."""
        return TraefikManager(self.runtime, self.settings).down()

    def traefik_state(self) -> TraefikState:
        """`kalpana traefik status`."""
        return TraefikManager(self.runtime, self.settings).state()

    def routes_report(self) -> RoutesReport:
        """`kalpana routes`: every host routed, to which container and port, whether that target is ready now,
        and whether a Traefik runs to serve them."""
        from gitops.route_report import RoutesReport, report  # imported here: a no-op apply never needs it

        rows = report(self.routes, self.runtime, self.load(), self.instance)
        return RoutesReport(rows, self.traefik_state())

    def _execute(self, step: Step, revision: Revision, trigger: Trigger, force: bool) -> Outcome:
        self._checkpoint()  # a cancelled run starts no further step (stop, remove: steps without a record)
        self.events.emit(StepStarted(step.name, step.reason, action=step.action.value))
        try:
            if step.action in (Action.CREATE, Action.REBUILD):
                build = self._build_and_deploy(step, revision, trigger, action="deploy" if force else step.action.value)
                with self._images:
                    self.housekeeping.prune_images(step.name, keep=self.settings.keep_images)
                return self._done(step, build)
            if step.action is Action.REDEPLOY:
                image_build = step.container.build_id or "unknown"
                # Same image as before: a container serving a rollback still serves it afterwards.
                build = self._deploy_image(step, step.container.image, image_build, revision.revision, trigger,
                                           action="redeploy", revision_info=revision,
                                           rolled_back_from=step.container.labels.get(L.ROLLED_BACK_FROM))
                return self._done(step, build)
            if step.action is Action.START:
                if step.container is not None:
                    self.deployer.start_existing(step.desired, step.container)
                    return self._done(step, None)
                build = self._deploy_image(step, step.image.tag, step.image.build_id or "unknown", revision.revision,
                                           trigger, action="start", revision_info=revision)
                return self._done(step, build)
            if step.action is Action.STOP:
                self.deployer.stop(step.container)
                return self._done(step, None)
            if step.action is Action.REMOVE:
                if step.container is not None:  # None: the deployment left only images (its builds failed)
                    self.deployer.remove(step.container)
                for image in self.runtime.observe(self.instance).images.get(step.name, []):
                    self.runtime.remove_image(image.id)
                return self._done(step, None)
        except KalpanaError as exc:
            if isinstance(exc, Cancelled):
                raise
            # A failed start quotes the container's log lines: they may print secrets.
            message = self._masker(step.desired).mask(str(exc)) if step.desired else str(exc)
            transient = exc.transient if isinstance(exc, RecordedFailure) else isinstance(exc, TRANSIENT)
            self.events.emit(StepFailed(step.name, message, transient=transient))
            return Outcome(step, False, exc.build if isinstance(exc, RecordedFailure) else None, message)
        raise AssertionError(f"unhandled action {step.action}")

    def _refuse(self, step: Step) -> Outcome:
        """A deployment declared here whose container another workspace manages: left alone, reported failed."""
        message = f"not changed: its container is {step.reason}"
        self.events.emit(StepFailed(step.name, message))
        return Outcome(step, False, None, message)

    def _done(self, step: Step, build: Build | None) -> Outcome:
        self.events.emit(StepSucceeded(step.name, step.action.value, build=build.to_dict() if build else None))
        return Outcome(step, True, build)

    def _build_and_deploy(self, step: Step, revision: Revision, trigger: Trigger, action: str) -> Build:
        d = step.desired

        def work(record: Build, masker: Masker, durations: dict[str, float]) -> Build:
            self._phase(record, d.name, f"building {L.image_tag(self.instance, d.name, record.id)}"
                        + (f" at {revision.short}" if revision.revision else ""))
            began = time.monotonic()

            def on_line(line: str) -> None:
                self._checkpoint()  # a cancelled run's build stops at its next line
                line = masker.mask(line)
                self.history.append_log(record.id, line + "\n")
                self.events.emit(LogLine(d.name, line, build_id=record.id))

            self._checkpoint()
            if self._cancel is None:  # on the main thread: Ctrl-C interrupts even a silent build
                tag = self.builder.build(d, revision, record.id, on_line)
            else:
                # A build step may print nothing for minutes: wait for it where a cancel is seen at once.
                # An abandoned build that still produces its image has it removed: no record owns it.
                tag = self._cancel.call(lambda: self.builder.build(d, revision, record.id, on_line),
                                        abandoned=self.runtime.remove_image)
                if self._cancel.is_set:  # cancelled as the build ended: its image must not outlive the record
                    self.runtime.remove_image(tag)
                    raise KeyboardInterrupt
            durations["build"] = round(time.monotonic() - began, 3)
            self.history.update(record.id, image=tag, durations=dict(durations))
            return self._rollout(record, step, tag, revision.revision, durations)

        return self._recorded(step, trigger, action, revision, revision.revision, work)

    def _deploy_image(self, step: Step, image: str, image_build: str, revision: str, trigger: Trigger, *,
                      action: str, revision_info: Revision | None = None, record_revision: str | None = None,
                      rolled_back_from: str | None = None) -> Build:
        """Run an existing image; ``revision`` goes on the container, ``record_revision`` (default the same) on the record.

        ``rolled_back_from`` marks the container as serving a rollback (see ``deployer.container_labels``).
        """
        def work(record: Build, masker: Masker, durations: dict[str, float]) -> Build:
            durations["build"] = 0.0
            return self._rollout(record, step, image, revision, durations, image_build=image_build,
                                 rolled_back_from=rolled_back_from)

        return self._recorded(step, trigger, action, revision_info or NO_SOURCE,
                              revision if record_revision is None else record_revision, work, image=image)

    def _recorded(self, step: Step, trigger: Trigger, action: str, info: Revision, revision: str,
                  work: Callable[[Build, Masker, dict[str, float]], Build], image: str | None = None) -> Build:
        """Run ``work`` as one build record: BUILDING, then SUCCESS, FAILED or CANCELLED."""
        d = step.desired
        masker = self._masker(d)
        record = self._new_record(d.name, trigger, action, reason=step.reason, revision=revision, image=image,
                                  commit_hash=info.commit_hash, commit_message=info.commit_message,
                                  branch=info.branch)
        durations: dict[str, float] = {}
        kept = " (the running version was left as it was)" if step.container else ""
        try:
            self.history.update(record.id, status=BuildStatus.BUILDING, started_at=now_iso())
            self._checkpoint()  # a cancel that came before (while fetching, planning) stops it here
            return work(record, masker, durations)
        except KeyboardInterrupt:
            self._finish(record, BuildStatus.CANCELLED, f"cancelled: interrupted by Ctrl-C or SIGTERM{kept}", durations)
            raise Cancelled(f"{d.name}: {action} {record.id} cancelled{kept}") from None
        except Exception as exc:  # noqa: BLE001 - whatever it was, the record must say FAILED and why
            text = str(exc) if isinstance(exc, KalpanaError) else f"{type(exc).__name__}: {exc}"
            message = masker.mask(text)
            self.history.append_log(record.id, f"ERROR: {message}\n")
            failed = self._finish(record, BuildStatus.FAILED, message, durations)
            said, logs, tail = message.partition(LOG_LINES)  # the note goes before the container's log lines
            raise RecordedFailure(f"{said}{kept}{logs}{tail}", failed, transient=isinstance(exc, TRANSIENT)) from None

    def _new_record(self, name: str, trigger: Trigger, action: str, **fields) -> Build:
        """A new build record, or the one reserved in advance for ``name`` (taken over by this process)."""
        reserved = self._reserved.pop(name, None)
        if reserved:
            try:
                build = self.history.get(reserved)
            except HistoryError:
                build = None
            # Reserved records left PENDING only: a cancelled one (its run superseded) stays as it ended.
            if build is not None and build.status is BuildStatus.PENDING:
                return self.history.update(reserved, triggered_by=trigger, action=action, pid=os.getpid(),
                                           host=socket.gethostname(), **fields)
        return self.history.new_build(name, trigger, action, **fields)

    def _rollout(self, record: Build, step: Step, tag: str, revision: str, durations: dict[str, float],
                 image_build: str | None = None, rolled_back_from: str | None = None) -> Build:
        d = step.desired
        old = step.container
        current_port = old.host_port if old else None
        address = self.settings.publish_address
        host = routing.route_host(d, self.settings.traefik_base_url)
        if host and not d.spec.exposed_port:
            port = None  # subdomain mode publishes no host port unless the file sets exposed_port
        else:
            with self._ports:  # read the ports handed out, pick a free one, record it: one at a time
                port = routing.host_port(d, self.history, current=current_port, instance=self.instance,
                                         address=address)
        where = routing.https_url(host) if host else routing.url(port, address)
        self._phase(record, d.name, f"deploying {tag}" + (f" on {where}" if where else ""))
        rollout = self.deployer.rollout(d, tag, build_id=image_build or record.id, revision=revision, old=old,
                                        host_port=port, on_phase=lambda text: self._phase(record, d.name, text),
                                        rolled_back_from=rolled_back_from, route_host=host)
        durations["deploy"] = round(rollout.deploy_seconds, 3)
        if rollout.gap_seconds is not None:
            durations["gap"] = round(rollout.gap_seconds, 3)
        if rollout.trial_seconds is not None:
            durations["trial"] = round(rollout.trial_seconds, 3)
        self._phase(record, d.name, "healthy; " + (f"serving on {where}" if where else "running"))
        return self._finish(record, BuildStatus.SUCCESS, None, durations)

    def _finish(self, record: Build, status: BuildStatus, error: str | None, durations: dict[str, float]) -> Build:
        return self.history.finish(record.id, status, error_message=error, durations=dict(durations))

    def _phase(self, record: Build, name: str, text: str) -> None:
        self.history.append_log(record.id, f"==> {text}\n")
        self.events.emit(PhaseEntered(name, text, build_id=record.id))

    def _masker(self, d: Desired) -> Masker:
        return Masker(list(d.env.values()) + ([d.spec.webhook_secret] if d.spec.webhook_secret else []))

    # -- operating commands ---------------------------------------------

    def deploy(self, name: str, trigger: Trigger = Trigger.MANUAL) -> ApplyResult:
        """Rebuild and redeploy one deployment now, even if nothing changed."""
        self.desired(name)
        self.history.set_stopped(name, False)
        return self.apply([name], prune=False, trigger=trigger, force=True)

    def stop(self, name: str) -> Container | None:
        """The guide's stop: stop the container and keep it stopped across applies until ``start``."""
        self._require(name)
        with ApplyLock(self.settings.state_path, self.settings.lock_timeout, self.events):
            container = self.runtime.observe(self.instance).containers.get(name)
            self._refuse_foreign(container)
            self.history.set_stopped(name, True)
            if container and container.running:
                self.deployer.stop(container)
            return container

    def start(self, name: str) -> ApplyResult:
        """Undo ``stop``: clear the operator's stop and apply that deployment."""
        self.desired(name)
        self.history.set_stopped(name, False)
        return self.apply([name], prune=False)

    def rollback(self, name: str, to: str | None = None) -> Build:
        """Redeploy the image of an earlier successful build, without rebuilding; recorded as its own build."""
        d = self.desired(name)
        with ApplyLock(self.settings.state_path, self.settings.lock_timeout, self.events):
            self.runtime.load_sdk(builds=False)  # a rollback reuses an image
            observed = self.housekeeping.recover()
            current = observed.containers.get(name)
            self._refuse_foreign(current)
            target = self._rollback_target(name, to, current)
            revision = target.revision or ""
            # The build that serves what the files declare: kept across rollbacks in a row, so that
            # status and plan keep naming it; rolling back onto it ends the rollback.
            declared = current.labels.get(L.ROLLED_BACK_FROM, current.build_id or "") if current else ""
            rolled_back_from = None if target.id == declared else declared
            # The container is labelled with the *current* desired hashes and revision: the operator said
            # this image satisfies them, so the next apply keeps it until the files or the source change.
            desired_revision = resolve(d.spec.source, self.settings.workspace_path,
                                       self.settings.checkouts_path, name, state=self.settings.state_path).revision
            self.history.set_stopped(name, False)  # a rollback means "run this", like deploy
            step = Step(name, Action.REDEPLOY, f"rollback to build {target.id}", d, current, None, desired_revision)
            self.events.emit(StepStarted(name, step.reason, action="rollback"))
            try:
                build = self._deploy_image(step, target.image, target.id, desired_revision, Trigger.MANUAL,
                                           action="rollback", record_revision=revision,
                                           revision_info=Revision(revision, None, target.commit_hash,
                                                                  target.commit_message, target.branch),
                                           rolled_back_from=rolled_back_from)
            except KalpanaError as exc:
                self.events.emit(StepFailed(name, str(exc)))
                raise
            self.events.emit(StepSucceeded(name, "rollback", build=build.to_dict()))
            return build

    def _refuse_foreign(self, container: Container | None) -> None:
        """KalpanaError when another workspace of this instance manages ``container``."""
        owner = foreign_owner(container, self.workspace)
        if owner:
            raise KalpanaError(f"{container.deployment} is managed from {owner}, not from here ({self.workspace}): "
                               "run this there, or `kalpana apply --take-over` here first")

    def _rollback_target(self, name: str, to: str | None, current: Container | None) -> Build:
        if to:
            build = self._build_of(name, to)
            if build.status is not BuildStatus.SUCCESS or not build.image:
                raise KalpanaError(f"build {build.id} did not succeed ({build.status.value}): pick a SUCCESS build")
            if not self.runtime.image_exists(build.image):
                raise KalpanaError(f"the image of build {build.id} ({build.image}) is gone: pick a newer build")
            return build
        current_image = current.image if current else None
        for build in self.history.list(name):
            if build.status is BuildStatus.SUCCESS and build.image and build.image != current_image \
                    and self.runtime.image_exists(build.image):
                return build
        raise KalpanaError(f"{name} has no earlier successful build whose image still exists: nothing to roll back to")

    def _require(self, name: str, *, history: bool = False) -> LoadResult:
        """UnknownDeployment unless a file declares ``name``, or it has builds (``history``: reading it), or a container.

        Reading commands ask the files and the history only, so they answer without Docker;
        commands that change a container also accept one that no file declares any more.
        """
        load = self.load()
        if name in load.desired:
            return load
        if history:
            if self.history.latest(name) is None:
                _require_known({name}, load)
            return load
        _require_known({name}, load, also=set(self.runtime.observe(self.instance).containers))
        return load

    def _build_of(self, name: str, build_id: str) -> Build:
        from gitops.build_logs import BuildNotFound

        build = self.history.get(build_id)
        if build is None or build.deployment != name:
            known = [b.id for b in self.history.list(name, limit=5)]
            hint = f" (its newest: {', '.join(known)})" if known else f" ({name} has no builds yet)"
            raise BuildNotFound(f"no build {build_id!r} of {name}{hint}: see `kalpana builds {name}`")
        return build

    def _container_of(self, name: str) -> tuple[Container, Masker]:
        """The deployment's container, and the masker of its secrets (none known when no file declares it)."""
        load = self._require(name, history=True)
        container = self.runtime.observe(self.instance).containers.get(name)
        if container is None:
            raise KalpanaError(f"{name} has no container: `kalpana apply` deploys it")
        desired = load.desired.get(name)
        return container, self._masker(desired) if desired else Masker([])


def _same_file(file: str, path: Path) -> bool:
    return Path(file).resolve() == Path(path).resolve()


def _require_known(names: set[str], load: LoadResult, also: set[str] = frozenset()) -> None:
    """UnknownDeployment for the first name neither loaded nor in ``also`` (e.g. a running container).

    When files failed to load, the name may be in one of them: say that instead of "unknown".
    """
    missing = sorted(names - set(load.desired) - also)
    if not missing:
        return
    if not load.ok:
        raise KalpanaError(f"deployment {missing[0]!r} is not loaded; the files have errors:\n"
                           + "\n".join(str(e) for e in load.errors))
    raise UnknownDeployment(missing[0], sorted(load.desired))

