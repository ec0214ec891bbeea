"""The Docker engine: its API over the socket (``socket_api``), and the docker SDK for builds and pulls.

Everything an apply of unchanged or redeploy-only deployments does goes through
the standard-library client, so such a command never imports the SDK (about
0.2 s of CPU per process, most of what a redeploy's start-up used to cost). Builds and pulls use the SDK's low-level API: its
build streaming and registry credentials (~/.docker/config.json, credential
helpers) are worth keeping. Addresses the standard-library client cannot reach
(ssh://, TLS) use the SDK for everything.
"""

from __future__ import annotations

import io
import os
import sys
from datetime import datetime, timezone
from typing import Callable, Iterator

from gitops import labels as L
from gitops.errors import BuildFailed, DockerError, DockerUnavailable, ImageMissing, KalpanaError
from gitops.runtime.objects import Container, Image, Observed
from gitops.runtime.protocol import ContainerConfig
from gitops.runtime.socket_api import APIStatus, SocketAPI, demultiplex, segment

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class _LazyErrors:
    """``docker.errors``, imported on first use: only an exception from the SDK needs it, and then it is loaded."""

    def __getattr__(self, name: str):
        from docker import errors

        return getattr(errors, name)


derrors = _LazyErrors()


def _docker_error(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()


class DockerRuntime:
    """One connection to a Docker engine: the ``Runtime`` every real Kalpana command uses."""

    def __init__(self, address: str, timeout: int = 120):
        self.address = address
        self.timeout = timeout
        # Container and image calls go through the standard library where it can reach the engine.
        self._socket = SocketAPI(address, timeout) if SocketAPI.supports(address) else None
        self._api = None

    @classmethod
    def connect(cls, docker_host: str | None = None, timeout: int = 120) -> "DockerRuntime":
        """A runtime for ``docker_host`` (else DOCKER_HOST, else the local socket).

        Nothing is contacted yet: the first call that finds nobody raises DockerUnavailable.
        """
        return cls(docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET, timeout)

    @property
    def api(self):
        """The docker SDK's low-level client, created (and imported) on first use."""
        if self._api is None:
            import docker

            with self._guard():
                self._api = docker.APIClient(base_url=self.address, version="auto", timeout=self.timeout)
        return self._api

    def load_sdk(self, builds: bool = True) -> None:
        """Import and connect the SDK now, before work that must be cleanly interruptible starts.

        ``builds``: the coming work builds or pulls images. Without that, the SDK is needed
        only where the standard-library client cannot reach the engine.
        """
        if builds or self._socket is None:
            self.api  # noqa: B018 - the property does the work

    def _call(self, method: str, path: str, *, body: object = None, timeout: float | None = None,
              raw: bool = False, **params: object):
        with self._guard():
            return self._socket.request(method, path, params=params, body=body, timeout=timeout, raw=raw)

    def _read(self, path: str, **params: object):
        return self._call("GET", path, **params)

    # -- observing -------------------------------------------------------

    @property
    def speaks_socket(self) -> bool:
        """True when the standard-library client reaches the engine (no docker SDK needed for listings)."""
        return self._socket is not None

    def listings(self, instance: str) -> tuple[list[dict], list[dict]]:
        """This instance's containers (all, stopped too) and images, as Docker lists them (raw dicts)."""
        filters = {"label": L.instance_filter(instance)}
        if self._socket is not None:
            return (self._read("/containers/json", all="1", filters=filters),
                    self._read("/images/json", filters=filters))
        with self._guard():
            return self.api.containers(all=True, filters=filters), self.api.images(filters=filters)

    def observe(self, instance: str) -> Observed:
        """One listing of this instance's containers and one of its images."""
        raw_containers, raw_images = self.listings(instance)
        return Observed.from_lists([Container.from_ps(c) for c in raw_containers],
                                   [Image.from_list(i) for i in raw_images])

    def _inspect_raw(self, container_id: str) -> dict | None:
        if self._socket is not None:
            try:
                return self._read(f"/containers/{segment(container_id)}/json")
            except _Gone:
                return None
        try:
            with self._guard():
                return self.api.inspect_container(container_id)
        except derrors.NotFound:
            return None

    def exit_info(self, container_id: str) -> tuple[str, int | None]:
        """(state, exit code) of a container; ("gone", None) when it no longer exists."""
        raw = self._inspect_raw(container_id)
        if raw is None:
            return "gone", None
        state = raw.get("State") or {}
        return state.get("Status", ""), state.get("ExitCode")

    def address_of(self, container_id: str) -> str | None:
        """The container's IP address on its first network (for probes that skip Docker's port proxy)."""
        raw = self._inspect_raw(container_id) or {}
        for network in ((raw.get("NetworkSettings") or {}).get("Networks") or {}).values():
            if network.get("IPAddress"):
                return network["IPAddress"]
        return None

    def started_at(self, container_id: str) -> "datetime | None":
        """When a container last started (for uptime)."""
        raw = (self._inspect_raw(container_id) or {}).get("State", {}).get("StartedAt", "")
        if not raw:
            return None
        try:
            # Docker gives nanoseconds; Python takes microseconds.
            head, _, frac = raw.rstrip("Z").partition(".")
            return datetime.fromisoformat(head + "." + (frac + "000000")[:6]).replace(tzinfo=timezone.utc)
        except ValueError:
            return None

    # -- images ----------------------------------------------------------

    def ensure_image(self, image: str, on_line: Callable[[str], None] = lambda line: None) -> None:
        """Make sure a base image is local, pulling it (reporting progress) if needed; ImageMissing otherwise."""
        if self.image_exists(image):
            return
        with self._guard():
            repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
            on_line(f"pulling {image}")
            try:
                last = None
                for event in self.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                    if "error" in event:
                        raise ImageMissing(image, str(event["error"]).strip())
                    # One line per layer state change, not per progress tick.
                    status = f"{event.get('id', '')} {event.get('status', '')}".strip()
                    if status != last and "progress" not in event:
                        on_line(status)
                    last = status
            except derrors.APIError as exc:
                raise ImageMissing(image, _short(exc)) from None
            if not self.image_exists(image):
                raise ImageMissing(image, "the pull ended without the image")

    def build(self, context: io.BytesIO, *, tag: str, dockerfile: str = "Dockerfile") -> Iterator[str]:
        """Build an image from a tar context, yielding its log lines; BuildFailed on error."""
        with self._guard():
            stream = self.api.build(fileobj=context, custom_context=True, encoding=None, tag=tag,
                                    dockerfile=dockerfile, rm=True, forcerm=True, decode=True, pull=False)
            for chunk in stream:
                if "error" in chunk:
                    raise BuildFailed(str(chunk.get("error", "")).strip())
                text = chunk.get("stream")
                if text:
                    for line in text.rstrip("\n").split("\n"):
                        if line.strip():
                            yield line
        if not self.image_exists(tag):
            raise BuildFailed("the build finished without producing an image")

    def image_exists(self, image: str) -> bool:
        """True when ``image`` is on the host."""
        if self._socket is not None:
            try:
                self._read(f"/images/{segment(image)}/json")
                return True
            except _Gone:
                return False
        try:
            with self._guard():
                self.api.inspect_image(image)
            return True
        except derrors.ImageNotFound:
            return False

    def remove_image(self, image: str) -> None:
        """Remove an image; an image still in use or already gone is left alone."""
        if self._socket is not None:
            try:
                self._call("DELETE", f"/images/{segment(image)}", force=False, noprune=False)
            except (_Gone, DockerError):
                pass
            return
        try:
            with self._guard():
                self.api.remove_image(image, noprune=False)
        except (derrors.NotFound, DockerError):
            pass

    # -- containers ------------------------------------------------------

    def create(self, config: ContainerConfig) -> str:
        """Create (not start) a container with Kalpana's run settings; returns its id."""
        port, host_port = config.port, config.host_port
        # The default (every interface) is Docker's own default binding, IPv4 and IPv6 alike; an
        # explicit 0.0.0.0 binding would drop IPv6 and with it clients that resolve localhost to ::1.
        bound = host_port if config.publish_address in (None, "0.0.0.0", "::") else (config.publish_address, host_port)
        bindings: dict = {port: bound} if port and host_port else {}
        for inside, address, outside in config.published:
            bindings[inside] = outside if address in ("", "0.0.0.0", "::") else (address, outside)
        binds = {source: {"bind": target, "mode": "ro" if read_only else "rw"}
                 for source, target, read_only in config.mounts}
        if self._socket is not None:
            try:
                created = self._call("POST", "/containers/create", body=_create_body(config, bound), name=config.name)
            except (_Gone, _Refused) as exc:  # 404: no such image; 409: the name is taken
                raise KalpanaError(f"cannot create container {config.name}: {exc.detail}") from None
            return created["Id"]
        host_config = self.api.create_host_config(
            port_bindings=bindings or None,
            binds=binds or None,
            network_mode=config.network,
            restart_policy={"Name": "unless-stopped"},
            # An init as PID 1 forwards SIGTERM: a shell or httpd as PID 1 ignores it,
            # and every stop would then wait the whole grace period.
            init=True,
            mem_limit=config.memory,
            nano_cpus=int(config.cpus * 1e9) if config.cpus else None,
        )
        with self._guard():
            try:
                networking = self.api.create_networking_config(
                    {config.network: self.api.create_endpoint_config(aliases=list(config.aliases) or None)}) \
                    if config.network else None
                exposed = ([port] if port else []) + [inside for inside, _, _ in config.published]
                created = self.api.create_container(
                    image=config.image, name=config.name, command=config.command, entrypoint=config.entrypoint,
                    working_dir=config.working_dir, environment=config.env, labels=config.labels,
                    ports=exposed or None, host_config=host_config, networking_config=networking, detach=True)
            except derrors.APIError as exc:
                raise KalpanaError(f"cannot create container {config.name}: {_short(exc)}") from None
        return created["Id"]

    def ensure_network(self, name: str, labels: dict[str, str]) -> bool:
        """Create a bridge network ``name`` unless one exists; True when it was created."""
        with self._guard():
            if any(n.get("Name") == name for n in self.api.networks(names=[name])):
                return False
            self.api.create_network(name, driver="bridge", labels=labels, check_duplicate=True)
        return True

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create a named volume unless it exists (an existing one, with its certificates, is kept as it is)."""
        with self._guard():
            try:
                self.api.inspect_volume(name)
            except derrors.NotFound:
                self.api.create_volume(name, labels=labels)

    def container_named(self, name: str) -> Container | None:
        """Any container called exactly ``name`` (Docker's name filter matches substrings)."""
        with self._guard():
            raw = self.api.containers(all=True, filters={"name": name})
        for c in raw:
            if name in [n.lstrip("/") for n in c.get("Names") or []]:
                return Container.from_ps(c)
        return None

    def containers_on_network(self, network: str) -> list[Container]:
        """Running containers attached to ``network``."""
        with self._guard():
            raw = self.api.containers(filters={"network": network})
        return [Container.from_ps(c) for c in raw]

    def start(self, container_id: str) -> None:
        """Start a container; a port already taken is explained."""
        if self._socket is not None:
            try:
                self._call("POST", f"/containers/{segment(container_id)}/start")
            except (_Gone, _Refused) as exc:
                raise _start_refused(exc.detail) from None
            return
        with self._guard():
            try:
                self.api.start(container_id)
            except derrors.APIError as exc:
                raise _start_refused(_short(exc)) from None

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` s); gone is fine."""
        if self._socket is not None:
            try:
                # The answer comes after the grace period: wait for it on top of the usual timeout.
                self._call("POST", f"/containers/{segment(container_id)}/stop", t=timeout,
                           timeout=self.timeout + timeout)
            except _Gone:
                pass
            return
        try:
            with self._guard():
                self.api.stop(container_id, timeout=timeout)
        except derrors.NotFound:
            pass

    def remove(self, container_id: str) -> None:
        """Force-remove a container; gone is fine."""
        if self._socket is not None:
            try:
                self._call("DELETE", f"/containers/{segment(container_id)}", force=True, v=True)
            except _Gone:
                pass
            return
        try:
            with self._guard():
                self.api.remove_container(container_id, force=True, v=True)
        except derrors.NotFound:
            pass

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container (frees its name for a successor)."""
        if self._socket is not None:
            try:
                self._call("POST", f"/containers/{segment(container_id)}/rename", name=name)
            except _Gone as exc:  # as with the SDK: a 404 here is Docker's refusal like any other
                raise DockerError(f"Docker refused: {exc.detail}") from None
            return
        with self._guard():
            self.api.rename(container_id, name)

    def logs(self, container_id: str, tail: int | str = "all") -> str:
        """The container's stdout+stderr (last ``tail`` lines)."""
        if self._socket is not None:
            # A failed deploy quotes these: that must not import the SDK mid-rollout (see load_sdk).
            attrs = self._inspect_raw(container_id)
            if attrs is None:
                return ""
            lines = tail if tail == "all" or (isinstance(tail, int) and tail >= 0) else "all"
            try:
                data = self._call("GET", f"/containers/{segment(container_id)}/logs", raw=True, stdout=True,
                                  stderr=True, tail=str(lines))
            except _Gone:
                return ""
            if not (attrs.get("Config") or {}).get("Tty"):  # without a TTY, stdout and stderr come framed
                data = demultiplex(data)
            return data.decode("utf-8", "replace")
        try:
            with self._guard():
                raw = self.api.logs(container_id, stdout=True, stderr=True, tail=tail)
        except derrors.NotFound:
            return ""
        return raw.decode("utf-8", "replace")

    def follow_logs(self, container_id: str, tail: int | str = 100) -> Iterator[str]:
        """Stream a container's logs as they come (``-f``)."""
        with self._guard():
            for chunk in self.api.logs(container_id, stdout=True, stderr=True, stream=True, follow=True, tail=tail):
                yield chunk.decode("utf-8", "replace")

    def _guard(self) -> "_Guard":
        return _Guard(self.address)


class _Gone(KalpanaError):
    """404 from the engine through the standard-library client."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


class _Refused(DockerError):
    """Any other error status from the engine through the standard-library client."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"Docker refused: {detail}")


def _start_refused(detail: str) -> KalpanaError:
    if "port is already allocated" in detail or "address already in use" in detail:
        return KalpanaError(f"cannot start container: {detail}: free that host port or set another exposed_port")
    return KalpanaError(f"cannot start container: {detail}")


def _create_body(config: ContainerConfig, bound: int | tuple[str, int] | None) -> dict:
    """The JSON of ``POST /containers/create``: what the SDK's create_container sends for the same settings."""
    port, host_port = config.port, config.host_port
    host_config: dict = {"NetworkMode": config.network or "default", "RestartPolicy": {"Name": "unless-stopped"},
                         # An init as PID 1 forwards SIGTERM: a shell or httpd as PID 1 ignores it,
                         # and every stop would then wait the whole grace period.
                         "Init": True}
    bindings: dict[str, list[dict]] = {}
    if port and host_port:
        address, published = bound if isinstance(bound, tuple) else ("", bound)
        bindings[f"{port}/tcp"] = [{"HostIp": address, "HostPort": str(published)}]
    for inside, address, outside in config.published:
        bindings[f"{inside}/tcp"] = [{"HostIp": "" if address in ("", "0.0.0.0", "::") else address,
                                      "HostPort": str(outside)}]
    if bindings:
        host_config["PortBindings"] = bindings
    if config.mounts:
        host_config["Binds"] = [f"{source}:{target}:{'ro' if read_only else 'rw'}"
                                for source, target, read_only in config.mounts]
    if config.memory:
        host_config["Memory"] = config.memory
    if config.cpus:
        host_config["NanoCpus"] = int(config.cpus * 1e9)
    body: dict = {"Image": config.image, "Tty": False, "OpenStdin": False, "StdinOnce": False,
                  "AttachStdin": False, "AttachStdout": False, "AttachStderr": False, "NetworkDisabled": False,
                  "Env": [f"{key}={value}" for key, value in config.env.items()],
                  "Labels": dict(config.labels), "HostConfig": host_config}
    exposed = ([port] if port else []) + [inside for inside, _, _ in config.published]
    if exposed:
        body["ExposedPorts"] = {f"{inside}/tcp": {} for inside in exposed}
    if config.network:
        endpoint = {"Aliases": list(config.aliases)} if config.aliases else {}
        body["NetworkingConfig"] = {"EndpointsConfig": {config.network: endpoint}}
    for key, value in (("Cmd", config.command), ("Entrypoint", config.entrypoint), ("WorkingDir", config.working_dir)):
        if value is not None:
            body[key] = value
    return body


class _Guard:
    """Turns 'nobody answers' into DockerUnavailable, wherever it happens."""

    def __init__(self, address: str):
        self.address = address

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, KalpanaError):
            return False
        if isinstance(exc, APIStatus):
            if exc.status == 404:
                raise _Gone(str(exc)) from None
            raise _Refused(str(exc)) from None
        if isinstance(exc, OSError) and not hasattr(exc, "response"):  # the socket: refused, missing, timed out
            raise DockerUnavailable(self.address, _short(exc)) from None
        if "docker" not in sys.modules:  # nothing below can be an SDK error, and importing requests costs
            return False
        from requests.exceptions import ConnectionError as RequestsConnectionError, ReadTimeout

        if isinstance(exc, (RequestsConnectionError, ReadTimeout)):
            raise DockerUnavailable(self.address, _short(exc)) from None
        if isinstance(exc, derrors.DockerException) and not isinstance(exc, derrors.APIError):
            raise DockerUnavailable(self.address, _short(exc)) from None
        if isinstance(exc, derrors.APIError) and not isinstance(exc, derrors.NotFound):
            # Callers catch NotFound themselves; any other refusal is Docker's answer, said plainly.
            raise DockerError(f"Docker refused: {_short(exc)}") from None
        return False


def _short(exc: Exception) -> str:
    text = _docker_error(exc)
    if "Connection refused" in text or "No such file or directory" in text:
        return "connection refused" if "refused" in text else "socket not found"
    return text.splitlines()[0][:300] if text else type(exc).__name__
