"""The runtime's container and image calls over the Engine API socket, against the real engine.

Since issue 12 these calls go through the standard-library client (gitops/runtime/socket_api.py)
instead of the docker SDK. What the engine ends up with is read back with the SDK (the tests'
own client): the two must agree on everything the SDK used to send.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid

import docker
import pytest

from gitops import labels as L
from gitops.errors import DockerError, DockerUnavailable, KalpanaError
from gitops.runtime.docker_runtime import DockerRuntime
from gitops.runtime.protocol import ContainerConfig


@pytest.fixture
def runtime() -> DockerRuntime:
    rt = DockerRuntime.connect()
    assert rt._socket is not None, "these tests need a unix:// or tcp:// engine address"
    return rt


def _config(instance: str, base_image: str, name: str, **overrides) -> ContainerConfig:
    settings = dict(name=f"{instance}_{name}", image=base_image, entrypoint=["/bin/sh", "-c"],
                    command=["exec httpd -f -p 8080 -h /tmp"], working_dir="/tmp",
                    env={"GREETING": "hello world", "EMPTY": ""}, labels=L.base_labels(instance, name), port=8080)
    settings.update(overrides)
    return ContainerConfig(**settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_create_sends_what_the_sdk_sent(runtime, instance, base_image, docker_client):
    port = _free_port()
    config = _config(instance, base_image, "web", host_port=port, publish_address="127.0.0.1",
                     memory=64 * 1024 * 1024, cpus=0.5)
    container_id = runtime.create(config)
    attrs = docker_client.api.inspect_container(container_id)
    assert attrs["Name"] == f"/{config.name}"
    assert attrs["Config"]["Image"] == base_image
    assert attrs["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert attrs["Config"]["Cmd"] == ["exec httpd -f -p 8080 -h /tmp"]
    assert attrs["Config"]["WorkingDir"] == "/tmp"
    assert {"GREETING=hello world", "EMPTY="} <= set(attrs["Config"]["Env"])
    assert config.labels.items() <= attrs["Config"]["Labels"].items()  # (the image adds its own)
    assert attrs["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    host = attrs["HostConfig"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["Init"] is True
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert runtime.exit_info(container_id) == ("created", 0)


def test_default_address_binds_every_interface_and_no_host_port_binds_none(runtime, instance, base_image,
                                                                             docker_client):
    port = _free_port()
    published = runtime.create(_config(instance, base_image, "any", host_port=port))
    private = runtime.create(_config(instance, base_image, "private", command=None, entrypoint=None,
                                     working_dir=None, port=None))
    bindings = docker_client.api.inspect_container(published)["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    attrs = docker_client.api.inspect_container(private)
    assert not attrs["HostConfig"]["PortBindings"]
    assert not attrs["Config"].get("ExposedPorts")
    assert attrs["Config"]["Cmd"] == ["sh"]  # the image's own command, as when the SDK sent none


def test_start_rename_stop_remove_and_gone_is_fine(runtime, instance, base_image, docker_client):
    container_id = runtime.create(_config(instance, base_image, "cycle"))
    runtime.start(container_id)
    runtime.start(container_id)  # already running: Docker answers 304, not an error
    assert runtime.exit_info(container_id)[0] == "running"
    assert runtime.address_of(container_id)
    assert runtime.started_at(container_id) is not None

    runtime.rename(container_id, f"{instance}_renamed")
    assert docker_client.api.inspect_container(container_id)["Name"] == f"/{instance}_renamed"

    runtime.stop(container_id, timeout=0)
    state, code = runtime.exit_info(container_id)
    assert state == "exited" and code is not None
    runtime.stop(container_id, timeout=0)  # already stopped: fine

    runtime.remove(container_id)
    assert runtime.exit_info(container_id) == ("gone", None)
    runtime.remove(container_id)
    runtime.stop(container_id, timeout=0)
    with pytest.raises(DockerError, match="No such container"):
        runtime.rename(container_id, f"{instance}_again")


def test_remove_forces_a_running_container(runtime, instance, base_image):
    container_id = runtime.create(_config(instance, base_image, "force"))
    runtime.start(container_id)
    runtime.remove(container_id)
    assert runtime.exit_info(container_id) == ("gone", None)


def test_refusals_say_what_docker_said(runtime, instance, base_image):
    missing = f"kalpana/{instance}/missing:{uuid.uuid4().hex[:8]}"
    with pytest.raises(KalpanaError, match=rf"cannot create container {instance}_nope: .*No such image"):
        runtime.create(_config(instance, missing, "nope"))
    runtime.create(_config(instance, base_image, "twice"))
    with pytest.raises(KalpanaError, match=rf"cannot create container {instance}_twice: .*already in use"):
        runtime.create(_config(instance, base_image, "twice"))


def test_start_on_a_taken_host_port_says_what_to_do(runtime, instance, base_image):
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        container_id = runtime.create(_config(instance, base_image, "clash", host_port=port))
        with pytest.raises(KalpanaError, match="cannot start container: .*free that host port or set another "
                                               "exposed_port"):
            runtime.start(container_id)


def test_images_exist_and_are_removed_through_the_socket(runtime, instance, base_image, docker_client):
    tag = f"kalpana/{instance}/web:{uuid.uuid4().hex[:8]}"
    docker_client.api.tag(base_image, tag)
    assert runtime.image_exists(tag)
    assert runtime.image_exists(base_image)
    runtime.ensure_image(tag, on_line=lambda line: pytest.fail(f"no pull expected: {line}"))
    runtime.remove_image(tag)
    assert not runtime.image_exists(tag)
    runtime.remove_image(tag)  # gone: fine
    runtime.remove_image(base_image.split(":")[0] + ":no-such-tag")
    assert runtime.image_exists(base_image)


def test_logs_join_stdout_and_stderr_and_tail_them(runtime, instance, base_image, docker_client):
    script = "echo one; echo two >&2; printf 'caf\\303\\251\\n'; exec sleep 1000"
    container_id = runtime.create(_config(instance, base_image, "talk", command=[script], port=None))
    runtime.start(container_id)
    deadline = time.monotonic() + 10
    while "café" not in runtime.logs(container_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    # (stdout and stderr are two pipes: Docker may log "two" first)
    assert sorted(runtime.logs(container_id).splitlines()) == ["café", "one", "two"]
    assert runtime.logs(container_id) == docker_client.api.logs(container_id, stdout=True, stderr=True).decode()
    # The last line Docker logged, whichever of the two pipes it came from.
    assert runtime.logs(container_id, tail=1) == runtime.logs(container_id).splitlines(keepends=True)[-1]
    assert runtime.logs(container_id, tail=0) == ""
    runtime.remove(container_id)
    assert runtime.logs(container_id) == ""


def test_a_missing_socket_is_docker_unavailable(instance, base_image):
    runtime = DockerRuntime(f"unix:///tmp/no-such-docker-{uuid.uuid4().hex}.sock")
    with pytest.raises(DockerUnavailable):
        runtime.create(_config(instance, base_image, "nowhere"))
    for call in (lambda: runtime.start("x"), lambda: runtime.stop("x", 0), lambda: runtime.remove("x"),
                 lambda: runtime.rename("x", "y"), lambda: runtime.image_exists(base_image)):
        with pytest.raises(DockerUnavailable):
            call()


def test_the_socket_calls_never_need_the_sdk(runtime, instance, base_image, monkeypatch):
    """With the SDK made unimportable, a container's whole life still works (a redeploy needs no more)."""
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` now raises ImportError
    container_id = runtime.create(_config(instance, base_image, "nosdk"))
    runtime.start(container_id)
    runtime.rename(container_id, f"{instance}_nosdk-old")
    runtime.stop(container_id, timeout=0)
    assert runtime.image_exists(base_image)
    assert isinstance(runtime.logs(container_id, tail=5), str)
    runtime.load_sdk(builds=False)
    runtime.remove(container_id)
    assert runtime.exit_info(container_id) == ("gone", None)
    with pytest.raises(ImportError):
        runtime.load_sdk(builds=True)
    assert isinstance(docker, type(sys))  # the module this file imported is untouched
