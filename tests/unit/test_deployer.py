"""The deployer against a fake runtime, a scripted probe and a fake clock: no Docker, no network, no sleeping.

What runs must survive a bad new container: these tests pin the order of the
swap (rename, create, stop, start, health, remove) and the restore (remove the
new one, give the old one its name back, restart it if it was stopped for the
port). The same paths are proven against a real engine in
tests/integration/test_rollout_safety.py.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from fake_clock import FakeClock
from fake_runtime import FakeContainer, FakeRuntime

from gitops import labels as L
from gitops.deployer import Deployer, Rollout, container_labels
from gitops.errors import DeployFailed, KalpanaError
from gitops.runtime.objects import Container
from gitops.runtime.protocol import ContainerConfig
from gitops.spec import Deployment, Desired, HealthCheck

INSTANCE = "default"
HOST_PORT = 28080
STOP_TIMEOUT = 7
LOG_TAIL = 5
NEW_IMAGE = L.image_tag(INSTANCE, "web", "b2")
OLD_IMAGE = L.image_tag(INSTANCE, "web", "b1")
ROLLOUT = ("create", "start", "stop", "remove", "rename", "exit_info", "address_of", "logs")


def make_desired(**overrides) -> Desired:
    spec = Deployment.model_validate({
        "name": "web", "image": "busybox", "start_command": "httpd -f -p 8080 -h /srv", "working_dir": "/srv",
        "port": 8080, "env": {"GREETING": "hello"}, "resources": {"memory": "64m", "cpus": 0.5},
        "healthcheck": {"timeout": 2, "interval": 0.5}, **overrides})
    return Desired(spec, "deployments.d/web.yaml", 1, image=spec.image, env=dict(spec.env))


class Probe:
    """A health probe answering from a script: healthy from the ``healthy_from``-th probe on (None: never)."""

    def __init__(self, healthy_from: int | None = 1, raises: BaseException | None = None):
        self.healthy_from = healthy_from
        self.raises = raises
        self.seen: list[tuple[str, int | None]] = []

    def __call__(self, check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        self.seen.append((host, port))
        if self.raises is not None:
            raise self.raises
        if self.healthy_from is not None and len(self.seen) >= self.healthy_from:
            return True, f"{host}:{port} accepts connections"
        return False, f"port {port}: Connection refused"


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime(allow=ROLLOUT)
    yield fake
    fake.assert_no_violations()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


def make_deployer(runtime: FakeRuntime, clock: FakeClock, probe: Probe) -> Deployer:
    return Deployer(runtime, INSTANCE, stop_timeout=STOP_TIMEOUT, log_tail=LOG_TAIL, probe=probe,
                    monotonic=clock.now, sleep=clock.advance)


def add_old(runtime: FakeRuntime, desired: Desired, *, state: str = "running",
            host_port: int | None = HOST_PORT) -> tuple[FakeContainer, Container]:
    """The running version: a container of build b1, and the engine's view of it."""
    labels = container_labels(INSTANCE, desired, build_id="b1", revision="", host_port=host_port)
    fake = runtime.add_container("web", OLD_IMAGE, labels, state=state, port=8080, host_port=host_port,
                                 exit_code=0 if state == "exited" else None, logs="old app\n")
    return fake, Container.from_ps(fake.raw())


def rollout(deployer: Deployer, desired: Desired, old: Container | None, host_port: int | None = HOST_PORT,
            phases: list[str] | None = None) -> Rollout:
    return deployer.rollout(desired, NEW_IMAGE, build_id="b2", revision="rev-2", old=old, host_port=host_port,
                            on_phase=(phases if phases is not None else []).append)


def new_id(runtime: FakeRuntime) -> str:
    """The id of the one container the rollout created."""
    [created] = runtime.created_ids
    return created


# -- first deploy and a good swap ----------------------------------------------------------------------------

def test_first_deploy_creates_the_configured_container_and_starts_it(runtime, clock):
    runtime.forbid("rename", "stop", "remove")
    desired = make_desired()
    phases: list[str] = []
    result = rollout(make_deployer(runtime, clock, Probe()), desired, None, phases=phases)

    [config] = runtime.created
    assert isinstance(config, ContainerConfig)
    assert (config.name, config.image) == ("web", NEW_IMAGE)
    assert config.entrypoint == ["/bin/sh", "-c"], "an explicit shell: the image's entrypoint must not eat the command"
    assert config.command == ["httpd -f -p 8080 -h /srv"]
    assert config.working_dir == "/srv"
    assert config.env == {"GREETING": "hello"}
    assert (config.port, config.host_port) == (8080, HOST_PORT)
    assert (config.memory, config.cpus) == (64 * 1024 * 1024, 0.5)
    labels = config.labels
    assert labels[L.MANAGED_BY] == L.MANAGED_BY_VALUE and labels[L.INSTANCE] == INSTANCE
    assert labels[L.DEPLOYMENT] == "web"
    assert labels[L.BUILD_ID] == "b2" and labels[L.REVISION] == "rev-2"
    assert labels[L.HOST_PORT] == str(HOST_PORT)
    assert labels[L.BUILD_HASH] == desired.build_hash and labels[L.RUNTIME_HASH] == desired.runtime_hash

    assert [m for m, _ in runtime.changes()] == ["create", "start"]
    assert result.container_id == new_id(runtime)
    assert (result.host_port, result.gap_seconds) == (HOST_PORT, None)
    running = runtime.by_name("web")
    assert running is not None and running.state == "running" and running.id == result.container_id
    assert phases == [f"waiting for health (port {HOST_PORT} accepts connections)"]


def test_without_a_start_command_the_image_keeps_its_own_entrypoint(runtime, clock, tmp_path):
    desired = make_desired(start_command=None, dockerfile="Dockerfile", source=str(tmp_path))
    rollout(make_deployer(runtime, clock, Probe()), desired, None)
    [config] = runtime.created
    assert (config.entrypoint, config.command) == (None, None)


def test_swap_in_port_mode_stops_the_old_one_only_just_before_the_new_one_starts(runtime, clock):
    desired = make_desired()
    _, old = add_old(runtime, desired)
    phases: list[str] = []
    result = rollout(make_deployer(runtime, clock, Probe(healthy_from=3)), desired, old, phases=phases)

    new = new_id(runtime)
    assert runtime.changes() == [
        ("rename", (old.id, "web--retiring")),
        ("create", tuple(runtime.created)),
        ("stop", (old.id, STOP_TIMEOUT)),
        ("start", (new,)),
        ("remove", (old.id,)),
    ]
    assert old.id not in runtime.containers
    assert runtime.by_name("web").id == new and runtime.containers[new].state == "running"
    # Two probe intervals of 0.5 s passed before the third probe answered; the port served nobody from the stop on.
    assert (result.deploy_seconds, result.gap_seconds) == (1.0, 1.0)
    assert phases == ["stopping the old container web", f"waiting for health (port {HOST_PORT} accepts connections)"]


def test_swap_without_a_host_port_keeps_the_old_one_running_until_the_new_one_is_healthy(runtime, clock):
    desired = make_desired(port=None)
    _, old = add_old(runtime, desired, host_port=None)
    probe = Probe()
    result = rollout(make_deployer(runtime, clock, probe), desired, old, host_port=None)

    new = new_id(runtime)
    assert [(m, a[0]) for m, a in runtime.changes()] == [
        ("rename", old.id), ("create", runtime.created[0]), ("start", new), ("remove", old.id)]
    assert result.gap_seconds is None
    # Nothing to probe: "healthy" means still running after a settle time of one second.
    assert result.deploy_seconds >= 1.0
    assert set(probe.seen) == {("127.0.0.1", None)}


def test_probe_goes_to_the_container_address_when_it_has_one(runtime, clock):
    runtime.script_container(address="172.17.0.5")
    probe = Probe()
    rollout(make_deployer(runtime, clock, probe), make_desired(), None)
    assert probe.seen == [("172.17.0.5", 8080)], "Docker's port proxy accepts before the app does: skip it"


# -- failures: the new one goes, the old one serves again ----------------------------------------------------

# One row per way a new container fails: what it does (script_container), whether probes pass, the message.
FAILURES = [
    pytest.param(dict(logs="listening on nothing\n"), None,
                 ["the new container was not healthy within 2 s", "last probe: port 28080: Connection refused",
                  "its last log lines:\nlistening on nothing"], id="never-healthy"),
    pytest.param(dict(state="exited", exit_code=3, logs="boom: no config\n"), 1,
                 ["the new container stopped with exit code 3 before it became healthy",
                  "its last log lines:\nboom: no config"], id="exits-code-3"),
    pytest.param(dict(state="restarting", exit_code=1), 1,
                 ["stopped with exit code 1 (Docker was restarting it)", "it logged nothing"], id="restarting"),
    pytest.param(dict(start_error=KalpanaError("cannot start container: port is already allocated")), 1,
                 ["cannot start container: port is already allocated", "the previous container keeps serving"],
                 id="start-fails"),
]


@pytest.mark.parametrize(("script", "healthy_from", "message"), FAILURES)
def test_failed_swap_removes_the_new_container_and_restores_the_old_one(runtime, clock, script, healthy_from,
                                                                         message):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    runtime.script_container(**script)

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe(healthy_from)), desired, old)

    for part in message:
        assert part in str(failure.value)
    new = new_id(runtime)
    assert runtime.changes() == [
        ("rename", (old.id, "web--retiring")),
        ("create", tuple(runtime.created)),
        ("stop", (old.id, STOP_TIMEOUT)),
        ("start", (new,)),
        ("remove", (new,)),
        ("rename", (old.id, "web")),
        ("start", (old.id,)),
    ]
    assert list(runtime.containers) == [old.id], "only the old container is left"
    assert (old_fake.name, old_fake.state) == ("web", "running")


def test_failure_quotes_only_the_last_log_lines(runtime, clock):
    desired = make_desired()
    runtime.script_container("exited", 1, "".join(f"line {n}\n" for n in range(1, 11)))
    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe()), desired, None)
    assert ("logs", (new_id(runtime), LOG_TAIL)) in runtime.calls
    assert str(failure.value).endswith("its last log lines:\nline 6\nline 7\nline 8\nline 9\nline 10")


def test_never_healthy_fails_at_the_timeout_of_the_fake_clock(runtime, clock):
    probe = Probe(healthy_from=None)
    with pytest.raises(DeployFailed):
        rollout(make_deployer(runtime, clock, probe), make_desired(), None)
    assert clock.now() == 102.0, "timeout 2 s from 100.0"
    assert len(probe.seen) == 5, "probes at 100, 100.5, 101, 101.5 and 102"


def test_interrupt_during_the_health_wait_restores_the_old_one_and_propagates(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    with pytest.raises(KeyboardInterrupt):
        rollout(make_deployer(runtime, clock, Probe(raises=KeyboardInterrupt())), desired, old)

    new = new_id(runtime)
    assert [(m, a[0]) for m, a in runtime.changes()] == [
        ("rename", old.id), ("create", runtime.created[0]), ("stop", old.id), ("start", new),
        ("remove", new), ("rename", old.id), ("start", old.id)]
    assert list(runtime.containers) == [old.id]
    assert (old_fake.name, old_fake.state) == ("web", "running")


def test_an_old_container_that_was_stopped_is_not_started_on_failure(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired, state="exited")
    runtime.script_container("exited", 3)

    with pytest.raises(DeployFailed):
        rollout(make_deployer(runtime, clock, Probe()), desired, old)

    new = new_id(runtime)
    assert [(m, a[0]) for m, a in runtime.changes()] == [
        ("rename", old.id), ("create", runtime.created[0]), ("start", new),
        ("remove", new), ("rename", old.id)]
    assert (old_fake.name, old_fake.state) == ("web", "exited")


def test_a_failed_first_deploy_leaves_nothing_behind(runtime, clock):
    runtime.forbid("rename", "stop")
    runtime.script_container(start_error=KalpanaError("cannot start container: no such image"))
    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe()), make_desired(), None)
    assert str(failure.value) == "cannot start container: no such image"
    assert runtime.containers == {}
