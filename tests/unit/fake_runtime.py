"""An in-memory ``gitops.runtime.protocol.Runtime`` for unit tests, strict about what it is asked.

A test says which methods it expects (``FakeRuntime(allow=...)`` or ``allow(...)``);
any other call raises AssertionError naming the method and its arguments, and is
also kept in ``violations``: the engine turns exceptions into FAILED records, so a
test's ``runtime`` fixture calls ``assert_no_violations()`` at teardown and a
swallowed violation still fails the test.

Observations go through the real named constructors (``Container.from_ps``,
``Image.from_list``) with dicts shaped like Docker's listings, so labels, names and
published ports read back the way they do from a real engine. Docker's refusals
that the core relies on are kept: a name held by another container, a host port
held by another running container, a container that is gone.

Behaviour is scripted: ``script_build`` (lines, then an error), ``script_container``
(what the next created container does once started: run, exit with a code, be
restarting, fail to start, have no address of its own). A running container has an
address on the bridge network, as Docker gives it one. Every call lands in ``calls``
as ``(method, args)``.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Callable, Iterable, Iterator

from gitops import labels as L
from gitops.errors import KalpanaError
from gitops.runtime.objects import Container, Image, Observed
from gitops.runtime.protocol import ContainerConfig

#: Every method of the Runtime protocol.
METHODS = frozenset({"load_sdk", "observe", "exit_info", "address_of", "started_at", "ensure_image", "build",
                     "image_exists", "remove_image", "create", "start", "stop", "remove", "rename", "logs",
                     "follow_logs", "ensure_network", "ensure_volume", "container_named", "containers_on_network"})
#: Calls that only look.
READS = frozenset({"observe", "exit_info", "address_of", "started_at", "image_exists", "logs", "follow_logs",
                   "container_named", "containers_on_network"})
#: What setting up Traefik takes.
TRAEFIK = frozenset({"ensure_network", "ensure_volume", "container_named", "containers_on_network", "ensure_image",
                     "create", "start"})
#: What building an image takes.
BUILD = frozenset({"load_sdk", "ensure_image", "build"})
#: What a rollout (swap, restore, health wait) takes.
DEPLOY = frozenset({"load_sdk", "create", "start", "stop", "remove", "rename", "exit_info", "address_of", "logs"})

_LABEL = re.compile(r'(\S+?)=("(?:[^"\\]|\\.)*")')
#: ``Behaviour.address`` default: the container gets an address on the bridge network while it runs.
BRIDGE = "bridge"
_WILDCARDS = ("0.0.0.0", "::")
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass
class Behaviour:
    """What a container does once started: its state then, exit code, output, address, or a start error."""

    state: str = "running"  # running, exited, restarting
    exit_code: int | None = None
    logs: str = ""
    address: str | None = BRIDGE  # BRIDGE: 172.17.0.<n>; None: no address of its own
    start_error: BaseException | None = None


@dataclass
class FakeContainer:
    """One container as the fake engine holds it."""

    id: str
    name: str
    image: str
    labels: dict[str, str]
    created: float
    port: int | None = None
    host_port: int | None = None
    state: str = "created"
    exit_code: int | None = None
    started_at: datetime | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)
    config: ContainerConfig | None = None
    publish_address: str = "0.0.0.0"

    def raw(self) -> dict:
        """The ``/containers/json`` entry Docker would list (ports are published only while running)."""
        ports = [{"PrivatePort": self.port, "Type": "tcp"}] if self.port else []
        if ports and self.host_port and self.state == "running":
            ports[0].update(IP=self.publish_address, PublicPort=self.host_port)
        status = {"running": "Up 5 minutes", "created": "Created",
                  "restarting": f"Restarting ({self.exit_code}) 1 second ago"}.get(
                      self.state, f"Exited ({self.exit_code}) 1 second ago")
        mounts = [{"Source": source, "Destination": target} for source, target, _ in
                  (self.config.mounts if self.config else ())]
        network = self.config.network if self.config and self.config.network else "bridge"
        return {"Id": self.id, "Names": [f"/{self.name}"], "Image": self.image, "State": self.state,
                "Status": status, "Labels": dict(self.labels), "Created": self.created, "Ports": ports,
                "Mounts": mounts, "NetworkSettings": {"Networks": {network: {}}}}


@dataclass
class FakeImage:
    """One image as the fake engine holds it."""

    id: str
    tag: str
    labels: dict[str, str]
    created: float

    def raw(self) -> dict:
        """The ``/images/json`` entry Docker would list."""
        return {"Id": self.id, "RepoTags": [self.tag], "Labels": dict(self.labels), "Created": self.created}


@dataclass
class _BuildScript:
    lines: list[str]
    error: BaseException | None


class FakeRuntime:
    """A container engine in memory that rejects calls the test did not allow and records every call.

    ``allow``: the Runtime methods the test expects (see ``METHODS``, ``READS``, ``BUILD``,
    ``DEPLOY``); ``allow``/``forbid`` change the set mid-test. Set up state with
    ``add_container``/``add_image`` (not recorded, never rejected). Read back ``calls``,
    ``changes()``, ``created`` (the ContainerConfig of each create), ``containers`` and ``images``.
    """

    def __init__(self, allow: Iterable[str] = ()):
        self.allowed: set[str] = set()
        self.calls: list[tuple[str, tuple]] = []
        self.violations: list[str] = []
        self.containers: dict[str, FakeContainer] = {}  # by id
        self.images: dict[str, FakeImage] = {}  # by id
        self.dockerfiles: dict[str, str] = {}  # tag -> the Dockerfile it was built from
        self.created: list[ContainerConfig] = []  # what each create() was given, in order
        self.created_ids: list[str] = []  # and the id it returned
        self.sdk_loads: list[bool] = []  # the ``builds`` argument of each load_sdk()
        self._next_containers: list[Behaviour] = []
        self._builds: list[_BuildScript] = []
        self._serial = 0
        self.networks: dict[str, dict[str, str]] = {}  # name -> labels
        self.volumes: dict[str, dict[str, str]] = {}
        self.allow(*allow)

    # -- what the test expects -------------------------------------------

    def allow(self, *methods: str) -> FakeRuntime:
        """Accept calls of these Runtime methods from now on."""
        unknown = set(methods) - METHODS
        assert not unknown, f"not Runtime methods: {sorted(unknown)}"
        self.allowed.update(methods)
        return self

    def forbid(self, *methods: str) -> FakeRuntime:
        """Reject calls of these methods from now on."""
        self.allowed.difference_update(methods)
        return self

    def assert_no_violations(self) -> None:
        """Fail if any call was rejected, even one whose AssertionError the code under test caught."""
        if self.violations:
            raise AssertionError("unexpected runtime calls:\n  " + "\n  ".join(self.violations))

    def called(self, *methods: str) -> list[tuple[str, tuple]]:
        """The recorded calls of ``methods`` (all calls when none are named), in order."""
        return [c for c in self.calls if not methods or c[0] in methods]

    def changes(self) -> list[tuple[str, tuple]]:
        """The recorded calls that change something (everything but ``READS``), in order."""
        return [c for c in self.calls if c[0] not in READS]

    def _call(self, method: str, *args: object) -> None:
        self.calls.append((method, args))
        if method not in self.allowed:
            text = f"{method}({', '.join(map(repr, args))})"
            self.violations.append(text)
            raise AssertionError(f"unexpected runtime call {text}; the test allows {sorted(self.allowed)}")

    # -- scripting and state ---------------------------------------------

    def script_build(self, lines: Iterable[str] = ("Step 1/1 : done",), error: BaseException | None = None) -> None:
        """The next ``build`` yields ``lines``, then raises ``error`` (BuildFailed, KeyboardInterrupt) if given.

        Without a script a build yields one line and succeeds.
        """
        self._builds.append(_BuildScript(list(lines), error))

    def script_container(self, state: str = "running", exit_code: int | None = None, logs: str = "",
                         address: str | None = BRIDGE, start_error: BaseException | None = None) -> None:
        """What the next container ``create`` makes does once started (default: keeps running)."""
        self._next_containers.append(Behaviour(state, exit_code, logs, address, start_error))

    def add_container(self, name: str, image: str, labels: dict[str, str], *, state: str = "running",
                      port: int | None = None, host_port: int | None = None, exit_code: int | None = None,
                      logs: str = "") -> FakeContainer:
        """Put a container on the fake host (test set-up: not recorded)."""
        if exit_code is None and state == "exited":
            exit_code = 0
        self._serial += 1
        container = FakeContainer(f"c{self._serial:04d}{'0' * 60}", name, image, dict(labels), float(self._serial),
                                  port, host_port, state, exit_code, behaviour=Behaviour(logs=logs))
        if state == "running":
            container.started_at = _EPOCH + timedelta(seconds=self._serial)
        self.containers[container.id] = container
        return container

    def add_image(self, tag: str, labels: dict[str, str]) -> FakeImage:
        """Put an image on the fake host (test set-up: not recorded)."""
        self._serial += 1
        image = FakeImage(f"sha256:{self._serial:04d}{'0' * 60}", tag, dict(labels), float(self._serial))
        self.images[image.id] = image
        return image

    def by_name(self, name: str) -> FakeContainer | None:
        """The container called ``name`` now, if any."""
        return next((c for c in self.containers.values() if c.name == name), None)

    def _container(self, container_id: str) -> FakeContainer:
        found = self.containers.get(container_id)
        if found is None:
            raise KalpanaError(f"No such container: {container_id}")
        return found

    def _image(self, ref: str) -> FakeImage | None:
        return next((i for i in self.images.values() if ref in (i.id, i.tag)), None)

    # -- the Runtime protocol --------------------------------------------

    def load_sdk(self, builds: bool = True) -> None:
        """Nothing to load."""
        self.sdk_loads.append(builds)
        self._call("load_sdk")

    def observe(self, instance: str) -> Observed:
        """This instance's containers and images, read through Docker's listing shapes."""
        self._call("observe", instance)
        mine = {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.INSTANCE: instance}

        def selected(labels: dict[str, str]) -> bool:
            return all(labels.get(k) == v for k, v in mine.items())

        return Observed.from_lists([Container.from_ps(c.raw()) for c in self.containers.values() if selected(c.labels)],
                                   [Image.from_list(i.raw()) for i in self.images.values() if selected(i.labels)])

    def exit_info(self, container_id: str) -> tuple[str, int | None]:
        """(state, exit code); ("gone", None) for a container that does not exist."""
        self._call("exit_info", container_id)
        container = self.containers.get(container_id)
        return ("gone", None) if container is None else (container.state, container.exit_code)

    def address_of(self, container_id: str) -> str | None:
        """Its bridge address (``172.17.0.<serial>``) or the scripted one, while it runs; else None, as Docker."""
        self._call("address_of", container_id)
        container = self.containers.get(container_id)
        if container is None or container.state != "running" or container.behaviour.address is None:
            return None
        if container.behaviour.address == BRIDGE:
            return f"172.17.0.{int(container.id[1:5]) % 250 + 2}"
        return container.behaviour.address

    def started_at(self, container_id: str) -> datetime | None:
        """When it last started, if it did."""
        self._call("started_at", container_id)
        container = self.containers.get(container_id)
        return container.started_at if container else None

    def ensure_image(self, image: str, on_line: Callable[[str], None] = lambda line: None) -> None:
        """Base images are always there."""
        self._call("ensure_image", image)

    def build(self, context: BinaryIO, *, tag: str, dockerfile: str = "Dockerfile") -> Iterator[str]:
        """Yield the scripted lines, then raise the scripted error or store the image (labels from its LABEL line)."""
        self._call("build", tag, dockerfile)
        script = self._builds.pop(0) if self._builds else _BuildScript(["Step 1/1 : done"], None)
        text = _read_member(context, dockerfile)
        return self._run_build(script, tag, text)

    def _run_build(self, script: _BuildScript, tag: str, dockerfile_text: str) -> Iterator[str]:
        yield from script.lines
        if script.error is not None:
            raise script.error
        self.dockerfiles[tag] = dockerfile_text
        self.add_image(tag, _labels_of(dockerfile_text))

    def image_exists(self, image: str) -> bool:
        """True when an image has this id or tag."""
        self._call("image_exists", image)
        return self._image(image) is not None

    def remove_image(self, image: str) -> None:
        """Remove an image unless a container uses it; gone is fine."""
        self._call("remove_image", image)
        found = self._image(image)
        if found and not any(c.image in (found.id, found.tag) for c in self.containers.values()):
            del self.images[found.id]

    def create(self, config: ContainerConfig) -> str:
        """Make a container from ``config`` in state "created"; a name in use is refused like Docker does."""
        self._call("create", config)
        if self.by_name(config.name):
            raise KalpanaError(f"cannot create container {config.name}: Conflict. The container name "
                               f'"/{config.name}" is already in use')
        behaviour = self._next_containers.pop(0) if self._next_containers else Behaviour()
        self._serial += 1
        container = FakeContainer(f"n{self._serial:04d}{'0' * 60}", config.name, config.image, dict(config.labels),
                                  float(self._serial), config.port, config.host_port, behaviour=behaviour,
                                  config=config, publish_address=config.publish_address)
        self.containers[container.id] = container
        self.created.append(config)
        self.created_ids.append(container.id)
        return container.id

    def start(self, container_id: str) -> None:
        """Start it: its scripted start error, a host port another running container holds, else its scripted state."""
        self._call("start", container_id)
        container = self._container(container_id)
        if container.behaviour.start_error is not None:
            raise container.behaviour.start_error
        if container.host_port and any(c.host_port == container.host_port and c.state == "running"
                                       and c.id != container.id
                                       and _overlap(c.publish_address, container.publish_address)
                                       for c in self.containers.values()):
            raise KalpanaError(f"cannot start container: Bind for {container.publish_address}:{container.host_port} "
                               "failed: port is already allocated: free that host port or set another exposed_port")
        container.state = container.behaviour.state
        container.exit_code = container.behaviour.exit_code
        container.started_at = _EPOCH + timedelta(seconds=self._serial)

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop it (exit code 0); gone is fine."""
        self._call("stop", container_id, timeout)
        container = self.containers.get(container_id)
        if container is not None:
            container.state, container.exit_code = "exited", 0

    def remove(self, container_id: str) -> None:
        """Remove it; gone is fine."""
        self._call("remove", container_id)
        self.containers.pop(container_id, None)

    def rename(self, container_id: str, name: str) -> None:
        """Rename it; a name another container holds is refused like Docker does."""
        self._call("rename", container_id, name)
        container = self._container(container_id)
        holder = self.by_name(name)
        if holder is not None and holder.id != container_id:
            raise KalpanaError(f"Conflict. The container name \"/{name}\" is already in use by {holder.id[:12]}")
        container.name = name

    def ensure_network(self, name: str, labels: dict[str, str]) -> bool:
        """Create the network unless it exists; True when created."""
        self._call("ensure_network", name, labels)
        if name in self.networks:
            return False
        self.networks[name] = dict(labels)
        return True

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create the volume unless it exists."""
        self._call("ensure_volume", name, labels)
        self.volumes.setdefault(name, dict(labels))

    def container_named(self, name: str) -> Container | None:
        """Any container called ``name``."""
        self._call("container_named", name)
        found = self.by_name(name)
        return Container.from_ps(found.raw()) if found else None

    def containers_on_network(self, network: str) -> list[Container]:
        """Running containers whose config names ``network``."""
        self._call("containers_on_network", network)
        return [Container.from_ps(c.raw()) for c in self.containers.values()
                if c.state == "running" and c.config is not None and c.config.network == network]

    def logs(self, container_id: str, tail: int | str = "all") -> str:
        """Its scripted output (last ``tail`` lines); "" when it is gone."""
        self._call("logs", container_id, tail)
        container = self.containers.get(container_id)
        if container is None:
            return ""
        lines = container.behaviour.logs.splitlines(keepends=True)
        return "".join(lines if tail == "all" else lines[-int(tail):])

    def follow_logs(self, container_id: str, tail: int | str = 100) -> Iterator[str]:
        """Its scripted output, line by line, then the end of the stream."""
        self._call("follow_logs", container_id, tail)
        container = self.containers.get(container_id)
        lines = container.behaviour.logs.splitlines() if container else []
        return iter(lines if tail == "all" else lines[-int(tail):])


def _overlap(one: str, other: str) -> bool:
    """Two publish addresses collide on one port: the same, or either is every interface."""
    return one == other or one in _WILDCARDS or other in _WILDCARDS


def _read_member(context: BinaryIO, name: str) -> str:
    """One file of a tar build context."""
    data = context.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(name)
        assert member is not None, f"the build context has no {name}"
        return member.read().decode()


def _labels_of(dockerfile: str) -> dict[str, str]:
    """The labels of a Dockerfile's LABEL lines (``key="json string"`` pairs, as the builder writes them)."""
    labels: dict[str, str] = {}
    for line in dockerfile.splitlines():
        if line.startswith("LABEL "):
            labels.update({key: json.loads(value) for key, value in _LABEL.findall(line[len("LABEL "):])})
    return labels
