"""The deploy phase: start the new container, prove it healthy, retire the old one.

Never break what is running: if the new container does not get healthy it
is removed and the old one keeps serving. In port mode two containers cannot
hold one host port, so the new version is first proven in a *trial*
container (``<name>--candidate``: the same image, settings and labels, no
host port) probed on its own address while the old one serves. Only a
proven version gets the port: the old container is stopped (not removed),
the final container starts with the port binding (Docker cannot add one to
an existing container) and must be healthy again, else the old one is
restarted. The trial is removed once the final container serves (its removal is neither on
the way to serving nor in the gap). A version that never gets healthy therefore costs no request,
and the gap, from that stop until the final container is healthy, is
measured and recorded.

In subdomain mode there is no host port to share, so there is no gap: the new
container joins the Traefik network beside the old one and is probed on its own
address; only once healthy does Kalpana rewrite the deployment's route document
(atomically) to name the new container alone. The old one, no longer routed, keeps
running for ``drain_seconds`` (Traefik's reload and requests in flight) and is then
stopped. A new container that never gets healthy is removed; the route never named it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, replace
from typing import Callable

from gitops import health, routing
from gitops import labels as L
from gitops.errors import DeployFailed, KalpanaError
from gitops.runtime.objects import Container
from gitops.routes import RouteTable
from gitops.runtime.protocol import ContainerConfig, Runtime
from gitops.spec import Desired, HealthCheck, HealthKind

Probe = Callable[[HealthCheck, int | None, str], tuple[bool, str]]  #: one health probe: (healthy, what was seen)
PortFree = Callable[[int, str], bool]  #: is this host port free on this address (routing.port_is_free)

@dataclass
class Rollout:
    """What a deploy did and how long each part took."""

    container_id: str
    host_port: int | None
    deploy_seconds: float
    gap_seconds: float | None  # time the port answered nobody (port mode only)
    trial_seconds: float | None = None  # proving the new version beside the old one, before the gap


def container_labels(instance: str, desired: Desired, *, build_id: str, revision: str, host_port: int | None,
                     workspace: str | None = None, rolled_back_from: str | None = None,
                     route_host: str | None = None, alias: str | None = None) -> dict[str, str]:
    """Labels on a deployment's container: what desired state it satisfies, and which workspace manages it.

    ``rolled_back_from``: set by a rollback, the build that serves what the files declare ("" when unknown).
    """
    labels = {**L.base_labels(instance, desired.name), L.BUILD_ID: build_id, L.BUILD_HASH: desired.build_hash,
              L.RUNTIME_HASH: desired.runtime_hash, L.REVISION: revision, L.FIELD_HASHES: L.dumps_labels(desired.hashes),
              # The plan compares the same digest (plan.py) to say a changed check applies to the next deploy.
              L.HEALTHCHECK_HASH: L.digest(desired.spec.healthcheck.model_dump(mode="json"))}
    if host_port:
        labels[L.HOST_PORT] = str(host_port)
    if workspace:
        labels[L.WORKSPACE] = workspace
    if rolled_back_from is not None:
        labels[L.ROLLED_BACK_FROM] = rolled_back_from
    if route_host:
        labels[L.ROUTE_HOST] = route_host
    if alias:
        labels[L.ROUTE_ALIAS] = alias
    return labels


def container_config(instance: str, desired: Desired, image: str, *, build_id: str, revision: str,
                     host_port: int | None, publish_address: str = routing.ANY_ADDRESS,
                     workspace: str | None = None, rolled_back_from: str | None = None,
                     route: routing.RouteSettings | None = None, route_host: str | None = None,
                     alias: str | None = None) -> ContainerConfig:
    """How a deployment's container is created: start command, env, labels, port, resources.

    With ``route_host`` (subdomain mode) it joins ``route.network`` under ``alias``; with
    ``route.labels`` it also carries Traefik's Docker labels for that route.
    """
    spec = desired.spec
    labels = container_labels(instance, desired, build_id=build_id, revision=revision, host_port=host_port,
                              workspace=workspace, rolled_back_from=rolled_back_from, route_host=route_host,
                              alias=alias)
    if route_host and route is not None and route.labels:
        labels.update(routing.route_labels(routing.route_name(instance, spec.name), route_host, spec.port, route))
    return ContainerConfig(
        name=L.container_name(instance, spec.name), image=image,
        # An explicit shell: the image's own entrypoint must not swallow the start command.
        entrypoint=["/bin/sh", "-c"] if spec.start_command else None,
        command=[spec.start_command] if spec.start_command else None,
        working_dir=spec.working_dir, env=dict(desired.env),
        labels=labels, port=spec.port, host_port=host_port, publish_address=publish_address,
        memory=spec.resources.memory_bytes, cpus=spec.resources.cpus,
        network=route.network if route_host and route is not None else None,
        aliases=(alias,) if alias else ())


#: Where a failure's message turns to the container's own output (``Deployer._failure``): what is
#: said about the failure goes before it, never glued to its last line.
LOG_LINES = "; its last log lines:\n"

class Deployer:
    """Swaps a deployment's container for one running ``image``.

    ``workspace`` (the deployments directory) is labelled on every container it makes.
    ``probe``, ``port_free``, ``monotonic`` and ``sleep`` are injectable so that unit
    tests drive health checks, host ports and timeouts without a network or a real clock.
    """

    def __init__(self, runtime: Runtime, instance: str, *, stop_timeout: int = 10, log_tail: int = 20,
                 publish_address: str = routing.ANY_ADDRESS, probe: Probe = health.probe,
                 port_free: PortFree = routing.port_is_free, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, workspace: str | None = None):
        self.runtime = runtime
        self.instance = instance
        self.workspace = workspace
        self.stop_timeout = stop_timeout
        self.log_tail = log_tail
        self.publish_address = publish_address
        self._probe = probe
        self.port_free = port_free  # the engine's plan asks the same question (routing.busy_ports)
        self._monotonic = monotonic
        self._sleep = sleep
        # Subdomain mode (set by the engine when a base URL is configured): how routes look, and where they live.
        self.route: routing.RouteSettings | None = None
        self.routes: RouteTable | None = None
        # Set by the engine: raises KeyboardInterrupt once the run is cancelled (on a worker thread, which
        # signals never reach; on the main thread, when Python dropped the signal's exception), so a
        # health wait ends as Ctrl-C would end it.
        self.checkpoint: Callable[[], None] = _nothing

    def rollout(self, desired: Desired, image: str, *, build_id: str, revision: str, old: Container | None,
                host_port: int | None, on_phase: Callable[[str], None],
                rolled_back_from: str | None = None, route_host: str | None = None) -> Rollout:
        """Replace ``old`` (if any) with a container of ``image``; DeployFailed keeps ``old`` serving.

        In port mode with a running ``old``, the new version is proven in a trial container
        first, and a failure there leaves ``old`` untouched (not even renamed).
        ``rolled_back_from`` marks a rollback (see ``container_labels``).
        ``route_host`` (subdomain mode): Traefik routes that host to the new container once healthy.
        """
        started = self._monotonic()
        route = self.route if route_host else None
        if route_host and route is None:
            raise DeployFailed("subdomain mode without Traefik settings")  # the engine sets them: a bug
        alias = f"{L.container_name(self.instance, desired.name)}-{secrets.token_hex(4)}" if route else None
        config = container_config(self.instance, desired, image, build_id=build_id, revision=revision,
                                  host_port=host_port, publish_address=self.publish_address,
                                  workspace=self.workspace, rolled_back_from=rolled_back_from,
                                  route=route, route_host=route_host, alias=alias)
        if route and not host_port:
            return self._routed_rollout(desired, config, old, route_host, started, on_phase)
        # Two containers can't bind one host port: stop the old one first, as late as possible.
        must_stop_old = bool(old and old.running and host_port)
        held = old.host_port if old and old.running else None
        if not must_stop_old:
            return self._swap(desired, config, old, host_port, held, route, route_host, started, None, on_phase)
        self._require_free(host_port, held)  # fail before the trial, not after it
        trial = self._trial(desired, config, on_phase)
        trial_seconds = self._monotonic() - started
        removed = False

        def serving() -> None:
            # The proven trial goes once the final container serves, not before the swap: its removal
            # (~0.1 s) is then off the way to serving and out of the gap (removing it during the swap
            # lengthened the gap by ~0.13 s, measured). Inside the swap, so that a Ctrl-C here restores
            # the old container as one a moment earlier would, and the CANCELLED record stays true.
            nonlocal removed
            self._remove_trial(trial, desired, on_phase)
            removed = True

        try:
            return self._swap(desired, config, old, host_port, held, route, route_host, started, trial_seconds,
                              on_phase, serving=serving)
        finally:
            if not removed:  # the swap failed or was interrupted first: the old container serves again
                self._remove_trial(trial, desired, on_phase)

    def _remove_trial(self, trial: str, desired: Desired, on_phase: Callable[[str], None]) -> None:
        try:
            self.runtime.remove(trial)
        except KalpanaError as exc:  # the new version's fate does not hang on it: the next run's recovery removes it
            on_phase(f"could not remove the trial container {L.candidate_name(self.instance, desired.name)}: "
                     f"{exc}; the next apply removes it")

    def _swap(self, desired: Desired, config: ContainerConfig, old: Container | None, host_port: int | None,
              held: int | None, route: routing.RouteSettings | None, route_host: str | None, started: float,
              trial_seconds: float | None, on_phase: Callable[[str], None],
              serving: Callable[[], None] = lambda: None) -> Rollout:
        """Port mode: the old container (if any) gives up the name, then the port, to the new one.

        ``serving`` is called as soon as the new one is healthy (and routed), before the old one is removed;
        an interrupt while it runs restores the old one, as one during the health wait does.
        """
        must_stop_old = bool(old and old.running and host_port)
        if host_port:
            self._require_free(host_port, held)  # (again: the trial took time) while the old one still serves
        name = config.name
        if old:
            self.runtime.rename(old.id, L.retired_name(self.instance, desired.name))
        gap_start = None
        new_id = None
        try:
            # Create first (the name is free after the rename; the port binds only at start),
            # so the gap does not hold the create.
            new_id = self.runtime.create(config)
            if must_stop_old:
                on_phase(f"stopping the old container {old.name}")
                gap_start = self._monotonic()
                self.runtime.stop(old.id, timeout=self.stop_timeout)
            self.runtime.start(new_id)
            on_phase(f"waiting for health ({self._describe(desired, host_port)})")
            self.wait_healthy(desired, new_id, host_port)
            if route:  # subdomain mode with an exposed_port: routed once healthy, like the port
                self._route_to(desired, route_host, config)
            served = self._monotonic()
            serving()
        except BaseException as exc:  # KeyboardInterrupt included: the old container must come back
            self._restore(name, new_id, old, must_stop_old)
            if isinstance(exc, KalpanaError) and not isinstance(exc, DeployFailed):
                raise DeployFailed(f"{exc}; the previous container keeps serving" if old else str(exc)) from None
            raise
        gap = served - gap_start if gap_start is not None else None
        if not route and self.routes is not None:
            # Port mode now (no base URL, or no subdomain any more) and the new container serves on its
            # port: a route left from subdomain mode would name a container that is about to go.
            try:
                self.routes.drop(desired.name)
            except KalpanaError as exc:  # the new version serves: say so, and the next apply drops it
                on_phase(f"{exc}; the next apply removes it")
        if old:
            self.runtime.remove(old.id)
        return Rollout(new_id, host_port, self._monotonic() - started, gap, trial_seconds)

    def _routed_rollout(self, desired: Desired, config: ContainerConfig, old: Container | None, host: str,
                        started: float, on_phase: Callable[[str], None]) -> Rollout:
        """Subdomain mode: new beside old, probed on its own address, then the route switches, then old drains."""
        name = config.name
        if old:
            self.runtime.rename(old.id, L.retired_name(self.instance, desired.name))
        new_id = None
        try:
            new_id = self.runtime.create(config)
            self.runtime.start(new_id)
            on_phase(f"waiting for health ({self._describe(desired, None, trial=True)})"
                     + ("; the old one keeps serving" if old and old.running else ""))
            self.wait_healthy(desired, new_id, None, trial=True)
            on_phase(f"routing https://{host} to {name}")
            self._route_to(desired, host, config)
        except BaseException as exc:  # the route still names the old container (or nothing): put it back
            self._restore(name, new_id, old, False)
            if isinstance(exc, KalpanaError) and not isinstance(exc, DeployFailed):
                raise DeployFailed(f"{exc}; the previous container keeps serving" if old else str(exc)) from None
            raise
        if old:
            # Routed no more: if this run dies now, the next run's recovery removes it (never the routed one).
            with contextlib.suppress(KalpanaError):
                self.runtime.rename(old.id, L.draining_name(self.instance, desired.name))
            if old.running and self.route.drain_seconds:
                on_phase(f"draining {old.name} for {self.route.drain_seconds:g} s (Traefik's reload, requests "
                         "in flight), then stopping it")
                self._sleep(self.route.drain_seconds)
            try:
                self.runtime.stop(old.id, timeout=self.stop_timeout)
                self.runtime.remove(old.id)
            except KalpanaError as exc:
                # The route names the new, healthy container: this deploy succeeded. The old one
                # (named --draining) is removed by the next run's recovery.
                on_phase(f"could not remove the old container {old.name}: {exc}; the next run removes it")
        return Rollout(new_id, None, self._monotonic() - started, None, None)

    def _route_to(self, desired: Desired, host: str, config: ContainerConfig) -> None:
        """Point the deployment's route at the (healthy) container made from ``config``: one atomic rewrite."""
        if self.route.labels or self.routes is None:  # the user's Traefik reads the container's labels
            return
        self.routes.write(desired.name, host, [routing.server_url(config.aliases[0], desired.spec.port)], self.route)

    def _trial(self, desired: Desired, config: ContainerConfig, on_phase: Callable[[str], None]) -> str:
        """Prove the new version in a container without the host port, beside the old one; its id.

        If it fails (or is interrupted), it is removed, and the old one, which was never touched,
        keeps serving. A proven one is the caller's to remove.
        """
        trial = replace(config, name=L.candidate_name(self.instance, desired.name), host_port=None)
        on_phase(f"trying the new version beside the old one ({self._describe(desired, None, trial=True)}); "
                 "the old one keeps serving")
        trial_id = None
        try:
            trial_id = self.runtime.create(trial)
            self.runtime.start(trial_id)
            self.wait_healthy(desired, trial_id, None, trial=True)
        except BaseException as exc:
            # A failing removal must not hide why the trial failed; the next run's recovery removes it.
            # By name when create() never returned: Ctrl-C can land after Docker made the container.
            with contextlib.suppress(KalpanaError):
                self.runtime.remove(trial_id or trial.name)
            if isinstance(exc, KalpanaError) and not isinstance(exc, DeployFailed):
                raise DeployFailed(f"{exc}; the previous container keeps serving") from None
            raise
        return trial_id

    def _require_free(self, port: int, held: int | None) -> None:
        """DeployFailed, before the old container is touched, when something outside Kalpana holds ``port``."""
        if port == held or self.port_free(port, self.publish_address):
            return
        keeps = f"; the previous container keeps serving on port {held}" if held else ""
        raise DeployFailed(routing.busy_message(port) + keeps)

    def wait_healthy(self, desired: Desired, container_id: str, host_port: int | None, *, trial: bool = False) -> None:
        """Probe until healthy; DeployFailed (with the last log lines) on exit or timeout.

        ``trial``: a container without a host port, probed on its own address only.
        """
        check = desired.spec.healthcheck
        deadline = self._monotonic() + check.timeout
        reachable = host_port is not None or (trial and desired.spec.port is not None)
        # Without a probe, "healthy" means still running after a short settle time.
        settle = self._monotonic() + 1.0 if (not reachable or check.type is HealthKind.NONE) else None
        last = "no probe yet"
        target = None  # the container's own address: Docker's port proxy accepts before the app does
        while True:
            state, code = self.runtime.exit_info(container_id)
            if state not in ("running", "created"):
                # With restart policy unless-stopped, a crashed container is usually seen "restarting".
                what = f"stopped with exit code {code}" if state in ("exited", "restarting") and code is not None else state
                again = " (Docker was restarting it)" if state == "restarting" else ""
                raise DeployFailed(self._failure(container_id, f"the new container {what}{again} "
                                                 "before it became healthy"))
            if state == "running":
                if target is None and reachable and check.type is not HealthKind.NONE:
                    ip = self.runtime.address_of(container_id)
                    if ip:
                        target = (ip, desired.spec.port)
                    elif host_port is not None:
                        target = (routing.local_address(self.publish_address), host_port)
                if target is None and trial and reachable and check.type is not HealthKind.NONE:
                    ok, last = False, ("it has no IP address of its own to probe: give Docker a bridge network "
                                       "(is `\"bridge\": \"none\"` set in daemon.json?)")
                else:
                    ok, last = self._probe(check, target[1] if target else None,
                                           target[0] if target else "127.0.0.1")
                if ok and (settle is None or self._monotonic() >= settle):
                    return
            if self._monotonic() >= deadline:
                raise DeployFailed(self._failure(container_id, f"the new container was not healthy within "
                                                 f"{check.timeout:g} s (last probe: {last})"))
            self.checkpoint()
            self._sleep(check.interval)

    def _describe(self, desired: Desired, host_port: int | None, *, trial: bool = False) -> str:
        check = desired.spec.healthcheck
        if check.type is HealthKind.NONE or (host_port is None and not (trial and desired.spec.port)):
            return "container keeps running"
        if trial:
            what = f"GET {check.path}" if check.type is HealthKind.HTTP else "accepts connections"
            return f"port {desired.spec.port} on its own address {what}"
        host = routing.local_address(self.publish_address)
        if check.type is HealthKind.HTTP:
            return f"GET http://{host}:{host_port}{check.path}"
        return f"port {host_port} accepts connections"

    def _failure(self, container_id: str, reason: str) -> str:
        tail = self.runtime.logs(container_id, tail=self.log_tail).strip() if self.log_tail else ""
        return reason + (f"{LOG_LINES}{tail}" if tail else "; it logged nothing")

    def _restore(self, name: str, new_id: str | None, old: Container | None, was_stopped: bool) -> None:
        if new_id:
            self.runtime.remove(new_id)
        if old:
            self.runtime.rename(old.id, name)
            if was_stopped:
                self.runtime.start(old.id)

    def start_existing(self, desired: Desired, container: Container) -> None:
        """Start a stopped container and wait for it to be healthy (then route to it, in subdomain mode)."""
        self.runtime.start(container.id)
        routed = bool(container.route_host and container.route_alias)
        self.wait_healthy(desired, container.id, container.host_port, trial=routed and not container.host_port)
        if routed and self.route is not None and not self.route.labels and self.routes is not None:
            self.routes.write(desired.name, container.route_host,
                              [routing.server_url(container.route_alias, desired.spec.port)], self.route)

    def _unroute(self, container: Container) -> None:
        """Take a container out of its route before it stops, and give Traefik the drain time to notice."""
        if container.route_host and self.routes is not None and self.routes.drop(container.deployment):
            if container.running and self.route is not None and self.route.drain_seconds:
                self._sleep(self.route.drain_seconds)

    def stop(self, container: Container) -> None:
        """Stop (not remove) a container; its route goes first."""
        self._unroute(container)
        self.runtime.stop(container.id, timeout=self.stop_timeout)

    def remove(self, container: Container) -> None:
        """Stop and remove a container; its route goes first."""
        self._unroute(container)
        self.runtime.stop(container.id, timeout=self.stop_timeout)
        self.runtime.remove(container.id)


def _nothing() -> None:
    pass
