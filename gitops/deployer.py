"""The deploy phase: start the new container, prove it healthy, retire the old one.

Never break what is running: if the new container does not get healthy it
is removed and the old one serves again. In port mode two containers cannot
hold one host port, so the old container is stopped (not removed) just
before the new one starts and restarted if the new one fails. The gap, from
that stop until the new container is healthy, is measured and recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from gitops import health
from gitops import labels as L
from gitops.errors import DeployFailed, KalpanaError
from gitops.runtime.objects import Container
from gitops.runtime.protocol import ContainerConfig, Runtime
from gitops.spec import Desired, HealthCheck

Probe = Callable[[HealthCheck, int | None, str], tuple[bool, str]]  #: one health probe: (healthy, what was seen)


@dataclass
class Rollout:
    """What a deploy did and how long each part took."""

    container_id: str
    host_port: int | None
    deploy_seconds: float
    gap_seconds: float | None  # time the port answered nobody (port mode only)


def container_labels(instance: str, desired: Desired, *, build_id: str, revision: str, host_port: int | None) -> dict[str, str]:
    """Labels on a deployment's container: what desired state it satisfies."""
    labels = {**L.base_labels(instance, desired.name), L.BUILD_ID: build_id, L.BUILD_HASH: desired.build_hash,
              L.RUNTIME_HASH: desired.runtime_hash, L.REVISION: revision, L.FIELD_HASHES: L.dumps_labels(desired.hashes)}
    if host_port:
        labels[L.HOST_PORT] = str(host_port)
    return labels


def container_config(instance: str, desired: Desired, image: str, *, build_id: str, revision: str,
                     host_port: int | None) -> ContainerConfig:
    """How a deployment's container is created: start command, env, labels, port, resources."""
    spec = desired.spec
    return ContainerConfig(
        name=L.container_name(instance, spec.name), image=image,
        # An explicit shell: the image's own entrypoint must not swallow the start command.
        entrypoint=["/bin/sh", "-c"] if spec.start_command else None,
        command=[spec.start_command] if spec.start_command else None,
        working_dir=spec.working_dir, env=dict(desired.env),
        labels=container_labels(instance, desired, build_id=build_id, revision=revision, host_port=host_port),
        port=spec.port, host_port=host_port, memory=spec.resources.memory_bytes, cpus=spec.resources.cpus)


class Deployer:
    """Swaps a deployment's container for one running ``image``.

    ``probe``, ``monotonic`` and ``sleep`` are injectable so that unit tests drive
    health checks and timeouts without a network or a real clock.
    """

    def __init__(self, runtime: Runtime, instance: str, *, stop_timeout: int = 10, log_tail: int = 20,
                 probe: Probe = health.probe, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.runtime = runtime
        self.instance = instance
        self.stop_timeout = stop_timeout
        self.log_tail = log_tail
        self._probe = probe
        self._monotonic = monotonic
        self._sleep = sleep

    def rollout(self, desired: Desired, image: str, *, build_id: str, revision: str, old: Container | None,
                host_port: int | None, on_phase: Callable[[str], None]) -> Rollout:
        """Replace ``old`` (if any) with a container of ``image``; DeployFailed keeps ``old`` serving."""
        spec = desired.spec
        started = self._monotonic()
        config = container_config(self.instance, desired, image, build_id=build_id, revision=revision,
                                  host_port=host_port)
        name = config.name
        # Two containers can't bind one host port: stop the old one first, as late as possible.
        must_stop_old = bool(old and old.running and host_port)
        if old:
            self.runtime.rename(old.id, L.retired_name(self.instance, spec.name))
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
            on_phase(f"waiting for health ({_describe(desired, host_port)})")
            self.wait_healthy(desired, new_id, host_port)
        except BaseException as exc:  # KeyboardInterrupt included: the old container must come back
            self._restore(name, new_id, old, must_stop_old)
            if isinstance(exc, KalpanaError) and not isinstance(exc, DeployFailed):
                raise DeployFailed(f"{exc}; the previous container keeps serving" if old else str(exc)) from None
            raise
        gap = self._monotonic() - gap_start if gap_start is not None else None
        if old:
            self.runtime.remove(old.id)
        return Rollout(new_id, host_port, self._monotonic() - started, gap)

    def wait_healthy(self, desired: Desired, container_id: str, host_port: int | None) -> None:
        """Probe until healthy; DeployFailed (with the last log lines) on exit or timeout."""
        check = desired.spec.healthcheck
        deadline = self._monotonic() + check.timeout
        # Without a probe, "healthy" means still running after a short settle time.
        settle = self._monotonic() + 1.0 if (host_port is None or check.type.value == "none") else None
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
                if target is None and host_port is not None:
                    ip = self.runtime.address_of(container_id)
                    target = (ip, desired.spec.port) if ip else ("127.0.0.1", host_port)
                ok, last = self._probe(check, target[1] if target else None, target[0] if target else "127.0.0.1")
                if ok and (settle is None or self._monotonic() >= settle):
                    return
            if self._monotonic() >= deadline:
                raise DeployFailed(self._failure(container_id, f"the new container was not healthy within "
                                                 f"{check.timeout:g} s (last probe: {last})"))
            self._sleep(check.interval)

    def _failure(self, container_id: str, reason: str) -> str:
        tail = self.runtime.logs(container_id, tail=self.log_tail).strip() if self.log_tail else ""
        return reason + (f"; its last log lines:\n{tail}" if tail else "; it logged nothing")

    def _restore(self, name: str, new_id: str | None, old: Container | None, was_stopped: bool) -> None:
        if new_id:
            self.runtime.remove(new_id)
        if old:
            self.runtime.rename(old.id, name)
            if was_stopped:
                self.runtime.start(old.id)

    def start_existing(self, desired: Desired, container: Container) -> None:
        """Start a stopped container and wait for it to be healthy."""
        self.runtime.start(container.id)
        self.wait_healthy(desired, container.id, container.host_port)

    def stop(self, container: Container) -> None:
        """Stop (not remove) a container."""
        self.runtime.stop(container.id, timeout=self.stop_timeout)

    def remove(self, container: Container) -> None:
        """Stop and remove a container."""
        self.runtime.stop(container.id, timeout=self.stop_timeout)
        self.runtime.remove(container.id)


def _describe(desired: Desired, host_port: int | None) -> str:
    check = desired.spec.healthcheck
    if host_port is None or check.type.value == "none":
        return "container keeps running"
    if check.type.value == "http":
        return f"GET http://127.0.0.1:{host_port}{check.path}"
    return f"port {host_port} accepts connections"


