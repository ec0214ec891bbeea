"""What the core needs from a container runtime, and a container's run settings as one value.

The engine, builder, deployer and status report are typed against ``Runtime``,
not against the Docker implementation: their logic is unit-tested with a fake
runtime, and proven against the real engine (``DockerRuntime``) in the
integration tests. Another runtime (Podman, a remote agent) implements this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Callable, Iterator, Protocol

from gitops.runtime.objects import Container, Observed


@dataclass(frozen=True)
class ContainerConfig:
    """Everything a new container is created with (restart policy and init are the runtime's own)."""

    name: str
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # the app's port inside the container
    host_port: int | None = None  # published on the host (port mode), else None
    publish_address: str = "0.0.0.0"  # the host address ``host_port`` is published on (settings.publish_address)
    memory: int | None = None  # bytes
    cpus: float | None = None
    # Subdomain mode: the one network the container joins (instead of Docker's default bridge), and
    # DNS names it answers to there (Traefik's route names its server by such an alias).
    network: str | None = None
    aliases: tuple[str, ...] = ()
    # Further published ports: (container port, host address, host port), e.g. Traefik's 80 and 443.
    published: tuple[tuple[int, str, int], ...] = ()
    # (source, target, read_only): a source with a "/" is a host directory, else a named volume.
    mounts: tuple[tuple[str, str, bool], ...] = ()


class Runtime(Protocol):
    """The container engine as the core uses it. Errors are ``KalpanaError`` subclasses.

    Calls that find the engine down raise ``DockerUnavailable``; calls on a
    container that is gone are no-ops where the docstring says "gone is fine".
    """

    def load_sdk(self, builds: bool = True) -> None:
        """Do now any slow set-up a later call would do, before work that must be cleanly interruptible.

        ``builds``: whether that work builds or pulls images (a redeploy-only plan does not).
        """

    def observe(self, instance: str) -> Observed:
        """One listing of this instance's containers and images."""

    def exit_info(self, container_id: str) -> tuple[str, int | None]:
        """(state, exit code) of a container; ("gone", None) when it no longer exists."""

    def address_of(self, container_id: str) -> str | None:
        """The container's own IP address (for probes that skip the host's port proxy), if it has one."""

    def started_at(self, container_id: str) -> datetime | None:
        """When a container last started (for uptime)."""

    def ensure_image(self, image: str, on_line: Callable[[str], None] = ...) -> None:
        """Make a base image local (pulling it, reporting progress); ImageMissing otherwise."""

    def build(self, context: BinaryIO, *, tag: str, dockerfile: str = "Dockerfile") -> Iterator[str]:
        """Build an image from a tar context, yielding its log lines; BuildFailed on error."""

    def image_exists(self, image: str) -> bool:
        """True when ``image`` is on the host."""

    def remove_image(self, image: str) -> None:
        """Remove an image; one in use or already gone is left alone."""

    def create(self, config: ContainerConfig) -> str:
        """Create (not start) a container; returns its id."""

    def start(self, container_id: str) -> None:
        """Start a container."""

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` s); gone is fine."""

    def remove(self, container_id: str) -> None:
        """Force-remove a container; gone is fine."""

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container (frees its name for a successor)."""

    def ensure_network(self, name: str, labels: dict[str, str]) -> bool:
        """Create a bridge network ``name`` (with ``labels``) unless one exists; True when it was created."""

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create a named volume unless it exists."""

    def container_named(self, name: str) -> Container | None:
        """Any container (of any instance or none) called ``name``."""

    def containers_on_network(self, network: str) -> list[Container]:
        """Running containers attached to ``network`` (whoever made them)."""

    def logs(self, container_id: str, tail: int | str = "all") -> str:
        """The container's output (last ``tail`` lines); "" when it is gone."""

    def follow_logs(self, container_id: str, tail: int | str = 100) -> Iterator[str]:
        """Stream a container's output as it comes."""
