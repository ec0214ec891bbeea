"""The deployer against a fake runtime, a scripted probe and a fake clock: no Docker, no network, no sleeping.

What runs must survive a bad new container: these tests pin the order of the
swap and of the restore. In port mode with a running old container the new
version is first proven in a trial container (``web--candidate``: no host port,
probed on its own address) while the old one serves; a trial that fails leaves
the old one untouched. Only then: rename the old one, create the final
container, stop the old one, start the final one, health, remove the old one;
a final container that fails is removed and the old one gets its name back and
is restarted. The same paths are proven against a real engine in
tests/integration/test_rollout_safety.py and test_zero_downtime.py.
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest
from fake_clock import FakeClock
from fake_runtime import FakeContainer, FakeRuntime

from gitops import labels as L
from gitops import routing
from gitops.deployer import Deployer, Rollout, container_labels
from gitops.labels import candidate_name, is_candidate_name
from gitops.errors import DeployFailed, KalpanaError
from gitops.runtime.objects import Container, Observed
from gitops.runtime.protocol import ContainerConfig
from gitops.spec import Deployment, Desired, HealthCheck

INSTANCE = "default"
HOST_PORT = 28080
OTHER_PORT = 28081
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
    """A health probe answering from a script, per probed address (one container each).

    ``healthy_from``: healthy from the n-th probe of an address on (None: never); a list gives
    one such value per address, in the order they are first probed (the trial, then the final one).
    """

    def __init__(self, healthy_from: int | None | list[int | None] = 1, raises: BaseException | None = None):
        self.healthy_from = healthy_from
        self.raises = raises
        self.seen: list[tuple[str, int | None]] = []
        self.hosts: list[str] = []

    def __call__(self, check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        self.seen.append((host, port))
        if host not in self.hosts:
            self.hosts.append(host)
        if self.raises is not None:
            raise self.raises
        scripted = self.healthy_from
        threshold = scripted[self.hosts.index(host)] if isinstance(scripted, list) else scripted
        if threshold is not None and self.seen.count((host, port)) >= threshold:
            return True, f"{host}:{port} accepts connections"
        return False, f"port {port}: Connection refused"


class Ports:
    """``port_free`` for the deployer: answers from a script, records what it was asked."""

    def __init__(self, *answers: bool):
        self.answers = list(answers)
        self.asked: list[tuple[int, str]] = []

    def __call__(self, port: int, address: str) -> bool:
        self.asked.append((port, address))
        return self.answers.pop(0) if self.answers else True


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime(allow=ROLLOUT)
    yield fake
    fake.assert_no_violations()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


def make_deployer(runtime: FakeRuntime, clock: FakeClock, probe: Probe, ports: Ports | None = None,
                  publish_address: str = "0.0.0.0") -> Deployer:
    return Deployer(runtime, INSTANCE, stop_timeout=STOP_TIMEOUT, log_tail=LOG_TAIL, probe=probe,
                    port_free=ports or Ports(), publish_address=publish_address,
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


def trial_and_final(runtime: FakeRuntime) -> tuple[str, str]:
    """The ids of the trial container and of the final one, in the order the rollout created them."""
    trial, final = runtime.created_ids
    return trial, final


TRIAL_PHASE = ("trying the new version beside the old one (port 8080 on its own address accepts connections); "
               "the old one keeps serving")


# -- first deploy and a good swap ----------------------------------------------------------------------------

def test_first_deploy_creates_the_configured_container_and_starts_it(runtime, clock):
    runtime.forbid("rename", "stop", "remove")
    desired = make_desired()
    phases: list[str] = []
    probe = Probe()
    ports = Ports()
    result = rollout(make_deployer(runtime, clock, probe, ports), desired, None, phases=phases)

    [config] = runtime.created
    assert isinstance(config, ContainerConfig)
    assert (config.name, config.image) == ("web", NEW_IMAGE)
    assert config.entrypoint == ["/bin/sh", "-c"], "an explicit shell: the image's entrypoint must not eat the command"
    assert config.command == ["httpd -f -p 8080 -h /srv"]
    assert config.working_dir == "/srv"
    assert config.env == {"GREETING": "hello"}
    assert (config.port, config.host_port, config.publish_address) == (8080, HOST_PORT, "0.0.0.0")
    assert (config.memory, config.cpus) == (64 * 1024 * 1024, 0.5)
    labels = config.labels
    assert labels[L.MANAGED_BY] == L.MANAGED_BY_VALUE and labels[L.INSTANCE] == INSTANCE
    assert labels[L.DEPLOYMENT] == "web"
    assert labels[L.BUILD_ID] == "b2" and labels[L.REVISION] == "rev-2"
    assert labels[L.HOST_PORT] == str(HOST_PORT)
    assert labels[L.BUILD_HASH] == desired.build_hash and labels[L.RUNTIME_HASH] == desired.runtime_hash

    assert [m for m, _ in runtime.changes()] == ["create", "start"], "nothing serves yet: no trial"
    assert result.container_id == new_id(runtime)
    assert (result.host_port, result.gap_seconds, result.trial_seconds) == (HOST_PORT, None, None)
    running = runtime.by_name("web")
    assert running is not None and running.state == "running" and running.id == result.container_id
    assert phases == [f"waiting for health (port {HOST_PORT} accepts connections)"]
    assert ports.asked == [(HOST_PORT, "0.0.0.0")], "a port taken by another process fails before the create"
    assert probe.hosts == ["172.17.0.3"], "probed on the container's own address"


def test_without_a_start_command_the_image_keeps_its_own_entrypoint(runtime, clock, tmp_path):
    desired = make_desired(start_command=None, dockerfile="Dockerfile", source=str(tmp_path))
    rollout(make_deployer(runtime, clock, Probe()), desired, None)
    [config] = runtime.created
    assert (config.entrypoint, config.command) == (None, None)


def test_swap_in_port_mode_proves_the_new_version_beside_the_old_one_before_stopping_it(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    phases: list[str] = []
    probe = Probe(healthy_from=3)
    ports = Ports()
    result = rollout(make_deployer(runtime, clock, probe, ports), desired, old, phases=phases)

    trial, final = trial_and_final(runtime)
    assert runtime.changes() == [
        ("create", (runtime.created[0],)),
        ("start", (trial,)),
        ("rename", (old.id, "web--retiring")),
        ("create", (runtime.created[1],)),
        ("stop", (old.id, STOP_TIMEOUT)),
        ("start", (final,)),
        ("remove", (trial,)),  # once the final one serves: off the way to serving, and not in the gap
        ("remove", (old.id,)),
    ]
    assert list(runtime.containers) == [final]
    assert runtime.by_name("web").id == final and runtime.containers[final].state == "running"
    # Each container answered its third probe, two intervals of 0.5 s after it started: the port
    # served nobody only from the stop of the old one until the final one was healthy.
    assert (result.trial_seconds, result.gap_seconds, result.deploy_seconds) == (1.0, 1.0, 2.0)
    assert phases == [TRIAL_PHASE, "stopping the old container web",
                      f"waiting for health (port {HOST_PORT} accepts connections)"]
    assert ports.asked == [], "the port the old container holds needs no check"
    assert len(probe.hosts) == 2 and all(host.startswith("172.17.0.") for host in probe.hosts)


class TrialStaysPut(FakeRuntime):
    """Docker refuses to remove the trial container."""

    def remove(self, container_id: str) -> None:
        found = self.containers.get(container_id)
        if found is not None and is_candidate_name(found.name):
            self._call("remove", container_id)
            raise KalpanaError("Docker refused: removal of container web--candidate is already in progress")
        super().remove(container_id)


def test_a_failed_trial_that_cannot_be_removed_still_says_why_it_failed(clock):
    """The removal's error must not hide the health failure; the next run's recovery removes the trial."""
    runtime = TrialStaysPut(allow=ROLLOUT)
    desired = make_desired()
    _, old = add_old(runtime, desired)

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe(healthy_from=None)), desired, old)

    assert "was not healthy within" in str(failure.value), failure.value
    assert "removal of container" not in str(failure.value)


def test_a_proven_trial_that_cannot_be_removed_is_said_and_the_swap_goes_on(clock):
    """The new version was proven: a leftover trial is the next run's to remove (recovery), not a failed deploy."""
    runtime = TrialStaysPut(allow=ROLLOUT)
    desired = make_desired()
    _, old = add_old(runtime, desired)
    phases: list[str] = []

    result = rollout(make_deployer(runtime, clock, Probe()), desired, old, phases=phases)

    assert runtime.by_name("web").id == result.container_id
    assert runtime.containers[result.container_id].state == "running"
    assert phases[-1] == ("could not remove the trial container web--candidate: Docker refused: removal of "
                          "container web--candidate is already in progress; the next apply removes it")
    runtime.assert_no_violations()


def test_the_trial_container_is_the_final_one_without_the_host_port(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    rollout(make_deployer(runtime, clock, Probe()), desired, old)

    trial, final = runtime.created
    assert (trial.name, trial.host_port) == ("web--candidate", None)
    assert (final.name, final.host_port) == ("web", HOST_PORT)
    # The same image, command, env, labels and limits: what is proven is what will run.
    assert trial == ContainerConfig(**{**vars(final), "name": "web--candidate", "host_port": None})
    assert trial.labels[L.INSTANCE] == INSTANCE and trial.labels[L.DEPLOYMENT] == "web", \
        "labelled like the deployment: cleanup and recovery find a leftover trial"


def test_a_new_version_that_never_gets_healthy_never_touches_the_old_one(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    runtime.script_container(logs="listening on nothing\n")
    probe = Probe(healthy_from=None)

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, probe), desired, old)

    [trial] = runtime.created_ids
    assert runtime.changes() == [("create", (runtime.created[0],)), ("start", (trial,)), ("remove", (trial,))]
    assert "the new container was not healthy within 2 s" in str(failure.value)
    assert str(failure.value).endswith("its last log lines:\nlistening on nothing")
    assert list(runtime.containers) == [old.id]
    assert (old_fake.name, old_fake.state) == ("web", "running"), "never renamed, never stopped"
    assert clock.now() == 102.0, "the whole health timeout, spent while the old one served"
    [host] = probe.hosts
    assert set(probe.seen) == {(host, 8080)}, "the app's own port on the trial's own address: it has no host port"


def test_swap_without_a_host_port_keeps_the_old_one_running_until_the_new_one_is_healthy(runtime, clock):
    desired = make_desired(port=None)
    _, old = add_old(runtime, desired, host_port=None)
    probe = Probe()
    ports = Ports()
    result = rollout(make_deployer(runtime, clock, probe, ports), desired, old, host_port=None)

    new = new_id(runtime)
    assert [(m, a[0]) for m, a in runtime.changes()] == [
        ("rename", old.id), ("create", runtime.created[0]), ("start", new), ("remove", old.id)], \
        "no trial: the new container starts beside the old one anyway"
    assert (result.gap_seconds, result.trial_seconds) == (None, None)
    # Nothing to probe: "healthy" means still running after a settle time of one second.
    assert result.deploy_seconds >= 1.0
    assert set(probe.seen) == {("127.0.0.1", None)}
    assert ports.asked == []


def test_a_trial_without_a_probe_must_keep_running_for_the_settle_time(runtime, clock):
    desired = make_desired(healthcheck="none")
    _, old = add_old(runtime, desired)
    result = rollout(make_deployer(runtime, clock, Probe()), desired, old)
    assert result.trial_seconds >= 1.0 and len(runtime.created) == 2


def test_probe_goes_to_the_container_address_when_it_has_one(runtime, clock):
    runtime.script_container(address="172.17.0.5")
    probe = Probe()
    rollout(make_deployer(runtime, clock, probe), make_desired(), None)
    assert probe.seen == [("172.17.0.5", 8080)], "Docker's port proxy accepts before the app does: skip it"


def test_without_an_address_the_probe_goes_to_the_published_port(runtime, clock):
    runtime.script_container(address=None)
    probe = Probe()
    rollout(make_deployer(runtime, clock, probe, publish_address="10.1.2.3"), make_desired(), None)
    assert probe.seen == [("10.1.2.3", HOST_PORT)], "published on one address only: probed there"


def test_a_trial_without_an_address_of_its_own_fails_and_the_old_one_serves(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    runtime.script_container(address=None)
    probe = Probe()

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, probe), desired, old)

    assert "no IP address of its own to probe" in str(failure.value)
    assert probe.seen == [], "never probed through a port it does not have"
    assert list(runtime.containers) == [old.id] and (old_fake.name, old_fake.state) == ("web", "running")


def test_the_publish_address_reaches_the_container_config_and_the_port_check(runtime, clock):
    ports = Ports()
    rollout(make_deployer(runtime, clock, Probe(), ports, publish_address="127.0.0.1"), make_desired(), None)
    [config] = runtime.created
    assert config.publish_address == "127.0.0.1"
    assert ports.asked == [(HOST_PORT, "127.0.0.1")]
    assert runtime.by_name("web").raw()["Ports"][0]["IP"] == "127.0.0.1"


# -- a host port taken by another process -------------------------------------------------------------------

def test_a_busy_new_host_port_fails_before_anything_is_touched(runtime, clock):
    desired = make_desired(exposed_port=OTHER_PORT)
    old_fake, old = add_old(runtime, desired)
    ports = Ports(False)

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe(), ports), desired, old, host_port=OTHER_PORT)

    assert str(failure.value) == (f"port {OTHER_PORT} is in use by another process: free it or choose another "
                                  f"exposed_port; the previous container keeps serving on port {HOST_PORT}")
    assert runtime.changes() == [], "not even a trial"
    assert ports.asked == [(OTHER_PORT, "0.0.0.0")]
    assert (old_fake.name, old_fake.state) == ("web", "running")


def test_a_new_host_port_taken_during_the_trial_fails_before_the_old_one_stops(runtime, clock):
    desired = make_desired(exposed_port=OTHER_PORT)
    old_fake, old = add_old(runtime, desired)
    ports = Ports(True, False)

    with pytest.raises(DeployFailed, match=f"port {OTHER_PORT} is in use by another process"):
        rollout(make_deployer(runtime, clock, Probe(), ports), desired, old, host_port=OTHER_PORT)

    [trial] = runtime.created_ids
    assert [m for m, _ in runtime.changes()] == ["create", "start", "remove"]
    assert ports.asked == [(OTHER_PORT, "0.0.0.0")] * 2, "checked before the trial and again just before the stop"
    assert list(runtime.containers) == [old.id] and (old_fake.name, old_fake.state) == ("web", "running")


def test_a_free_new_host_port_moves_the_deployment(runtime, clock):
    desired = make_desired(exposed_port=OTHER_PORT)
    _, old = add_old(runtime, desired)
    ports = Ports()
    result = rollout(make_deployer(runtime, clock, Probe(), ports), desired, old, host_port=OTHER_PORT)
    assert result.host_port == OTHER_PORT and runtime.by_name("web").host_port == OTHER_PORT
    assert ports.asked == [(OTHER_PORT, "0.0.0.0")] * 2


def test_a_busy_port_on_a_first_deploy_creates_nothing(runtime, clock):
    with pytest.raises(DeployFailed, match=f"^port {HOST_PORT} is in use by another process: free it or choose "
                                           "another exposed_port$"):
        rollout(make_deployer(runtime, clock, Probe(), Ports(False)), make_desired(), None)
    assert runtime.calls == []


# -- failures: the new one goes, the old one serves again ----------------------------------------------------

# One row per way a new container fails: what it does (script_container), whether probes pass, the message.
FAILURES = [
    pytest.param(dict(logs="listening on nothing\n"), None,
                 ["the new container was not healthy within 2 s", "last probe: port 8080: Connection refused",
                  "its last log lines:\nlistening on nothing"], id="never-healthy"),
    pytest.param(dict(state="exited", exit_code=3, logs="boom: no config\n"), 1,
                 ["the new container stopped with exit code 3 before it became healthy",
                  "its last log lines:\nboom: no config"], id="exits-code-3"),
    pytest.param(dict(state="restarting", exit_code=1), 1,
                 ["stopped with exit code 1 (Docker was restarting it)", "it logged nothing"], id="restarting"),
    pytest.param(dict(start_error=KalpanaError("cannot start container: no such file")), 1,
                 ["cannot start container: no such file", "the previous container keeps serving"],
                 id="start-fails"),
]


@pytest.mark.parametrize(("script", "healthy_from", "message"), FAILURES)
def test_a_failed_trial_is_removed_and_the_old_one_was_never_touched(runtime, clock, script, healthy_from,
                                                                      message):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    runtime.script_container(**script)

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe(healthy_from)), desired, old)

    for part in message:
        assert part in str(failure.value)
    [trial] = runtime.created_ids
    assert runtime.changes() == [("create", (runtime.created[0],)), ("start", (trial,)), ("remove", (trial,))]
    assert list(runtime.containers) == [old.id], "only the old container is left"
    assert (old_fake.name, old_fake.state) == ("web", "running")


@pytest.mark.parametrize(("script", "healthy_from", "message"), [
    *FAILURES[:3],
    pytest.param(dict(start_error=KalpanaError("cannot start container: port is already allocated")), 1,
                 ["cannot start container: port is already allocated", "the previous container keeps serving"],
                 id="start-fails"),
])
def test_a_final_container_that_fails_after_a_good_trial_is_removed_and_the_old_one_restored(
        runtime, clock, script, healthy_from, message):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    runtime.script_container()  # the trial is fine
    runtime.script_container(**script)  # the final one is not

    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe([1, healthy_from])), desired, old)

    for part in message:
        assert part in str(failure.value)
    trial, final = trial_and_final(runtime)
    assert runtime.changes() == [
        ("create", (runtime.created[0],)),
        ("start", (trial,)),
        ("rename", (old.id, "web--retiring")),
        ("create", (runtime.created[1],)),
        ("stop", (old.id, STOP_TIMEOUT)),
        ("start", (final,)),
        ("remove", (final,)),
        ("rename", (old.id, "web")),
        ("start", (old.id,)),
        ("remove", (trial,)),  # the old one serves again first
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


def test_interrupt_during_the_trial_removes_it_leaves_the_old_one_alone_and_propagates(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    with pytest.raises(KeyboardInterrupt):
        rollout(make_deployer(runtime, clock, Probe(raises=KeyboardInterrupt())), desired, old)

    [trial] = runtime.created_ids
    assert [(m, a[0]) for m, a in runtime.changes()] == [
        ("create", runtime.created[0]), ("start", trial), ("remove", trial)]
    assert list(runtime.containers) == [old.id]
    assert (old_fake.name, old_fake.state) == ("web", "running")


class InterruptFinal(Probe):
    """Healthy for the first container probed (the trial); Ctrl-C while probing the second."""

    def __call__(self, check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        answer = super().__call__(check, port, host)
        if len(self.hosts) > 1:
            raise KeyboardInterrupt
        return answer


def test_interrupt_during_the_final_health_wait_restores_the_old_one_and_propagates(runtime, clock):
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    with pytest.raises(KeyboardInterrupt):
        rollout(make_deployer(runtime, clock, InterruptFinal()), desired, old)

    trial, final = trial_and_final(runtime)
    assert [(m, a[0]) for m, a in runtime.changes()] == [
        ("create", runtime.created[0]), ("start", trial),
        ("rename", old.id), ("create", runtime.created[1]), ("stop", old.id), ("start", final),
        ("remove", final), ("rename", old.id), ("start", old.id), ("remove", trial)]
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
        ("remove", new), ("rename", old.id)], "nothing serves: no trial"
    assert (old_fake.name, old_fake.state) == ("web", "exited")


def test_a_failed_first_deploy_leaves_nothing_behind(runtime, clock):
    runtime.forbid("rename", "stop")
    runtime.script_container(start_error=KalpanaError("cannot start container: no such image"))
    with pytest.raises(DeployFailed) as failure:
        rollout(make_deployer(runtime, clock, Probe()), make_desired(), None)
    assert str(failure.value) == "cannot start container: no such image"
    assert runtime.containers == {}


# -- naming ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("instance", "name"), [("default", "web--candidate"), ("blue", "blue_web--candidate")])
def test_the_trial_container_is_named_after_the_deployment(instance, name):
    assert candidate_name(instance, "web") == name
    assert is_candidate_name(name) and not L.is_retired_name(name)
    assert not is_candidate_name(L.container_name(instance, "web"))
    assert not is_candidate_name(L.retired_name(instance, "web"))


# -- routing: which host ports are busy (the plan's check, and the deployer's) ------------------------------

def spec_with(name: str, **fields) -> Desired:
    spec = Deployment.model_validate({"name": name, "image": "busybox", "start_command": "run", **fields})
    return Desired(spec, f"deployments.d/{name}.yaml", 3, image=spec.image, env={})


def observed_with(*containers: dict) -> Observed:
    """An observation of containers given as (name, state, host port label, published port)."""
    raw = []
    for n, c in enumerate(containers):
        labels = {**L.base_labels(INSTANCE, c["deployment"]),
                  **({L.HOST_PORT: str(c["label"])} if c.get("label") else {})}
        ports = [{"PrivatePort": 8080, "PublicPort": c["published"], "IP": "0.0.0.0"}] if c.get("published") else []
        raw.append(Container.from_ps({"Id": f"id{n}", "Names": [f"/{c.get('name', c['deployment'])}"],
                                      "State": c.get("state", "running"), "Labels": labels, "Ports": ports,
                                      "Created": n}))
    return Observed.from_lists(raw, [])


# One row per case: the deployment's fields, what runs, which ports are taken on the host, the answer.
BUSY = [
    pytest.param(dict(port=8080, exposed_port=8081), [], {8081}, {"api": routing.busy_message(8081)},
                 id="taken-by-a-stranger"),
    pytest.param(dict(port=8080, exposed_port=8081), [], set(), {}, id="free"),
    pytest.param(dict(port=8080, exposed_port=8081), [dict(deployment="api", label=8081, published=8081)], {8081},
                 {}, id="held-by-its-own-container"),
    pytest.param(dict(port=8080, exposed_port=8081), [dict(deployment="api", label=8081, state="restarting")],
                 {8081}, {}, id="held-by-its-own-restarting-container"),
    pytest.param(dict(port=8080, exposed_port=8081),
                 [dict(deployment="api", name="api--retiring", label=8081, published=8081)], {8081}, {},
                 id="held-by-its-half-swapped-container"),
    pytest.param(dict(port=8080, exposed_port=8081), [dict(deployment="web", label=8081, published=8081)], {8081},
                 {}, id="held-by-another-deployment-of-this-instance"),
    pytest.param(dict(port=8080, exposed_port=8081), [dict(deployment="api", label=8081, state="exited")], {8081},
                 {"api": routing.busy_message(8081)}, id="own-container-stopped-and-a-stranger-took-it"),
    pytest.param(dict(port=8080, exposed_port=8082), [dict(deployment="api", label=8081, published=8081)], {8082},
                 {"api": routing.busy_message(8082)}, id="moving-to-a-taken-port"),
    pytest.param(dict(port=8080), [], {20001}, {}, id="no-exposed-port"),
    pytest.param(dict(port=8080, exposed_port=8081, enabled=False), [], {8081}, {}, id="disabled"),
]


@pytest.mark.parametrize(("fields", "running", "taken", "expected"), BUSY)
def test_busy_ports(fields, running, taken, expected):
    asked: list[tuple[int, str]] = []

    def is_free(port: int, address: str) -> bool:
        asked.append((port, address))
        return port not in taken

    result = routing.busy_ports([spec_with("api", **fields)], observed_with(*running), address="127.0.0.1",
                                is_free=is_free)
    assert result == expected
    assert all(address == "127.0.0.1" for _, address in asked)


def test_busy_message_says_what_to_do():
    assert routing.busy_message(8080) == ("port 8080 is in use by another process: free it or choose another "
                                          "exposed_port")


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something outside Kalpana listens on (loopback only)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_is_free_binds_on_the_publish_address(listener):
    assert not routing.port_is_free(listener, "127.0.0.1")
    assert not routing.port_is_free(listener, "0.0.0.0"), "every interface includes loopback"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unused = sock.getsockname()[1]
    assert routing.port_is_free(unused, "127.0.0.1")


@pytest.mark.parametrize(("port", "address", "url"), [
    (8080, "0.0.0.0", "http://localhost:8080"),
    (8080, "127.0.0.1", "http://localhost:8080"),
    (8080, "::", "http://localhost:8080"),
    (8080, "10.1.2.3", "http://10.1.2.3:8080"),
    (8080, "fd00::5", "http://[fd00::5]:8080"),
    (None, "0.0.0.0", None),
])
def test_url_names_the_address_users_reach(port, address, url):
    assert routing.url(port, address) == url


@pytest.mark.parametrize(("web_fields", "expected"), [
    pytest.param(dict(port=8080), True, id="the-holder-keeps-its-assigned-port"),
    pytest.param(dict(port=8080, exposed_port=8081), True, id="the-holder-declares-that-port"),
    pytest.param(dict(port=8080, exposed_port=9090), False, id="the-holder-moves-off-it"),
])
def test_a_port_another_deployment_keeps_is_busy_and_named(web_fields, expected):
    web = spec_with("web", **web_fields)
    result = routing.busy_ports([spec_with("api", port=8080, exposed_port=8081)],
                                observed_with(dict(deployment="web", label=8081, published=8081)),
                                is_free=lambda port, address: False, declared={"web": web})
    if expected:
        assert result == {"api": f"port 8081 is held by deployment web ({web.file}): choose another exposed_port, "
                                 "or move that deployment off it first"}
    else:
        assert result == {}


def test_a_rollout_removes_the_proven_trial_once_the_final_one_serves(runtime, clock):
    desired = make_desired()
    _, old = add_old(runtime, desired)
    result = rollout(make_deployer(runtime, clock, Probe()), desired, old)

    trial, final = trial_and_final(runtime)
    assert list(runtime.containers) == [final] == [result.container_id]
    changes = runtime.changes()
    assert changes.index(("remove", (trial,))) > changes.index(("start", (final,)))
    runtime.assert_no_violations()


class InterruptTrialRemoval(FakeRuntime):
    """Ctrl-C lands while the proven trial is being removed (once)."""

    interrupted = False

    def remove(self, container_id: str) -> None:
        found = self.containers.get(container_id)
        if found is not None and is_candidate_name(found.name) and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        super().remove(container_id)


def test_interrupt_while_the_trial_is_removed_cancels_the_rollout_and_the_old_one_serves(clock):
    runtime = InterruptTrialRemoval(allow=ROLLOUT)
    desired = make_desired()
    old_fake, old = add_old(runtime, desired)
    with pytest.raises(KeyboardInterrupt):
        rollout(make_deployer(runtime, clock, Probe()), desired, old)
    # A cancelled build says the running version was left as it was: so it is, and no trial is left.
    assert list(runtime.containers) == [old.id]
    assert (old_fake.name, old_fake.state) == ("web", "running")
    runtime.assert_no_violations()
