"""The engine against a fake runtime: real deployment files, real settings, a real history, no Docker.

The fake rejects runtime calls a test does not allow, so "calls no build" or
"touches no container" is checked by the fake itself. The deployer gets a
scripted probe and a fake clock: nothing sleeps. The same flows run against a
real engine in tests/integration (test_apply.py, test_rollout_safety.py).
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from fake_clock import FakeClock
from dropped_interrupt import drop_an_interrupt, watch_unraisable
from fake_runtime import BUILD, DEPLOY, METHODS, FakeRuntime

from gitops import labels as L
from gitops.build import Build, BuildStatus, Trigger
from gitops.config import Settings
from gitops.deployer import Deployer
from gitops.engine import Engine
from gitops.errors import BuildFailed, Cancelled, DockerUnavailable, ImageMissing, KalpanaError, UnknownDeployment
from gitops.events import (Event, Events, LogLine, PhaseEntered, Planned, StepFailed, StepStarted, StepSucceeded,
                           Warned)
from gitops.history import History
from gitops.masking import MASK
from gitops.runtime.protocol import Runtime
from gitops.spec import HealthCheck

INSTANCE = "unit"
HOST_PORT = 28080  # exposed_port: no host port is searched for (that would bind sockets)
SECRET = "tok-9f8e7d6c"
URL = f"http://localhost:{HOST_PORT}"
NAME = L.container_name(INSTANCE, "web")  # "unit_web": outside the default instance names carry it
WEB = {
    "name": "web",
    "image": "busybox",
    "build_command": "echo building",
    "start_command": "httpd -f -p 8080 -h /workspace",
    "port": 8080,
    "exposed_port": HOST_PORT,
    "env": {"API_TOKEN": SECRET},
    "healthcheck": {"timeout": 2, "interval": 0.5},
}


class RecordingHistory(History):
    """The real history, also noting every status each build record passes through."""

    def __init__(self, state_dir: Path):
        super().__init__(state_dir)
        self.statuses: dict[str, list[BuildStatus]] = defaultdict(list)

    def new_build(self, *args: Any, **kwargs: Any) -> Build:
        build = super().new_build(*args, **kwargs)
        self.statuses[build.id].append(build.status)
        return build

    def update(self, build_id: str, **fields: Any) -> Build:
        build = super().update(build_id, **fields)
        if "status" in fields:
            self.statuses[build_id].append(build.status)
        return build

    def finish(self, build_id: str, *args: Any, **kwargs: Any) -> Build:
        build = super().finish(build_id, *args, **kwargs)
        self.statuses[build_id].append(build.status)
        return build


class Project:
    """A workspace in tmp_path (kalpana settings, deployments.d) and an engine over the fake runtime."""

    def __init__(self, root: Path, runtime: FakeRuntime):
        self.root = root
        self.runtime = runtime
        (root / "deployments.d").mkdir()
        self.settings = Settings(instance=INSTANCE, deployments_dir=root / "deployments.d", workspace=root,
                                 state_dir=root / "state", stop_timeout=0, lock_timeout=5,
                                 public_url="https://hooks.example.org/", config_dir=root)
        self.history = RecordingHistory(self.settings.state_path)
        self.events: list[Event] = []
        bus = Events()
        bus.subscribe(self.events.append)
        self.clock = FakeClock()
        self.probed: list[tuple[str, int | None]] = []
        # Host ports are free: whether one is taken by another process is the deployer's test, not the engine's.
        deployer = Deployer(runtime, INSTANCE, stop_timeout=0, log_tail=5, probe=self._probe,
                            port_free=lambda port, address: True, monotonic=self.clock.now, sleep=self.clock.advance)
        self.ports = {"web": HOST_PORT}  # one exposed_port per deployment: the loader refuses a shared one
        self.engine = Engine(self.settings, runtime, self.history, bus, deployer=deployer)

    def _probe(self, check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        self.probed.append((host, port))
        return True, f"port {port} accepts connections"

    def write(self, name: str = "web", **overrides: Any) -> Path:
        """deployments.d/<name>.yaml: the web spec under ``name``, with ``overrides``."""
        path = self.settings.deployments_path / f"{name}.yaml"
        port = self.ports.setdefault(name, HOST_PORT + len(self.ports))
        path.write_text(yaml.safe_dump({**WEB, "name": name, "exposed_port": port, **overrides}, sort_keys=False))
        return path

    def deployed(self, name: str = "web") -> Build:
        """Apply a first time (a create) and return its record; the calls it made are forgotten."""
        self.write(name)
        allowed = set(self.runtime.allowed)
        self.runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)
        result = self.engine.apply([name])
        assert result.ok, result.to_dict()
        self.runtime.allowed = allowed
        self.runtime.calls.clear()
        self.events.clear()
        return result.outcomes[0].build

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime()
    yield fake
    fake.assert_no_violations()


@pytest.fixture
def project(tmp_path: Path, runtime: FakeRuntime) -> Project:
    return Project(tmp_path, runtime)


def methods(runtime: FakeRuntime) -> list[str]:
    return [m for m, _ in runtime.calls]


# -- create, then nothing to do -------------------------------------------------------------------------------

def test_create_builds_deploys_and_the_next_plan_is_noop(project, runtime):
    project.write()
    runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)
    runtime.script_build(["Step 1/4 : FROM busybox", f"echo token {SECRET}", "Successfully built 1234"])

    result = project.engine.apply()

    assert result.ok, result.to_dict()
    [outcome] = result.outcomes
    build = outcome.build
    assert (outcome.step.action.value, build.action, build.status) == ("create", "create", BuildStatus.SUCCESS)
    tag = L.image_tag(INSTANCE, "web", build.id)
    assert build.image == tag and tag in {i.tag for i in runtime.images.values()}
    assert [args for m, args in runtime.calls if m == "build"] == [(tag, "Dockerfile")]
    assert "RUN [\"/bin/sh\", \"-c\", \"echo building\"]" in runtime.dockerfiles[tag]
    container = runtime.by_name(NAME)
    assert container is not None and container.state == "running" and container.image == tag
    assert container.labels[L.BUILD_ID] == build.id
    assert project.probed == [(runtime.address_of(container.id), 8080)], "probed on the container's own address"

    # What the container and image carry reads back as "up to date".
    plan, _ = project.engine.plan()
    assert [(s.name, s.action.value, s.reason) for s in plan.steps] == [("web", "noop", "up to date")]


def test_plain_apply_of_an_up_to_date_deployment_does_nothing(project, runtime):
    project.deployed()
    runtime.allow("observe")  # no load_sdk, build, create, stop: anything else is rejected

    result = project.engine.apply()

    assert result.ok and result.outcomes == []
    assert set(methods(runtime)) == {"observe"}
    assert project.events == [Planned(None, "nothing to change", changes=0)]


def test_deploy_forces_a_rebuild_of_an_up_to_date_deployment(project, runtime):
    first = project.deployed()
    old = runtime.by_name(NAME)
    runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)

    result = project.engine.deploy("web")

    assert result.ok, result.to_dict()
    [outcome] = result.outcomes
    assert outcome.step.action.value == "rebuild" and outcome.step.reason == "deploy requested by the operator"
    build = outcome.build
    assert (build.action, build.status, build.triggered_by) == ("deploy", BuildStatus.SUCCESS, Trigger.MANUAL)
    assert build.id != first.id and build.image == L.image_tag(INSTANCE, "web", build.id)
    assert len(runtime.called("build")) == 1
    # The old container was swapped out for one of the new image.
    assert old.id not in runtime.containers
    assert runtime.by_name(NAME).image == build.image
    assert [b.id for b in project.engine.builds("web")] == [build.id, first.id]


# -- heal: only start or recreate from an image, never build ----------------------------------------------------

def test_heal_recreates_a_vanished_container_from_its_image_without_building(project, runtime):
    first = project.deployed()
    gone = runtime.by_name(NAME)
    del runtime.containers[gone.id]
    runtime.allow("observe", "load_sdk", "create", "start", "exit_info", "address_of")  # no build, no ensure_image

    result = project.engine.apply(heal=True, trigger=Trigger.AUTO)

    assert result.ok, result.to_dict()
    [outcome] = result.outcomes
    assert outcome.step.action.value == "start"
    assert outcome.step.reason == f"container is gone; recreating it from {first.image}"
    assert (outcome.build.action, outcome.build.status, outcome.build.image) == ("start", BuildStatus.SUCCESS,
                                                                                 first.image)
    back = runtime.by_name(NAME)
    assert back.image == first.image and back.state == "running"
    assert back.labels[L.BUILD_ID] == first.id, "the container names the build that made its image"


def test_heal_starts_a_stopped_container_in_place(project, runtime):
    project.deployed()
    stopped = runtime.by_name(NAME)
    stopped.state, stopped.exit_code = "exited", 137
    runtime.allow("observe", "load_sdk", "start", "exit_info", "address_of")

    result = project.engine.apply(heal=True, trigger=Trigger.AUTO)

    assert result.ok and [o.step.action.value for o in result.outcomes] == ["start"]
    assert runtime.changes() == [("load_sdk", ()), ("start", (stopped.id,))]
    assert stopped.state == "running"


def test_heal_leaves_a_change_that_needs_a_rebuild_for_a_real_trigger(project, runtime):
    project.deployed()
    before = dict(runtime.containers)
    project.write(build_command="echo building v2")
    runtime.allow("observe", "load_sdk")  # a build or a create would be rejected

    result = project.engine.apply(heal=True, trigger=Trigger.AUTO)

    assert result.ok and result.outcomes == []
    warnings = [e for e in project.events if isinstance(e, Warned)]
    assert [(w.deployment, w.message.split(":")[0]) for w in warnings] == [("web", "not healed")]
    assert "it needs rebuild (build_command changed)" in warnings[0].message
    assert runtime.containers == before
    assert [b.action for b in project.engine.builds("web")] == ["create"], "no record for what was not done"


# -- the build record's lifecycle ------------------------------------------------------------------------------

def test_successful_create_record_goes_pending_building_success_with_masked_logs(project, runtime):
    project.write()
    runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)
    runtime.script_build(["Step 1/4 : FROM busybox", f"token is {SECRET}, do not print it"])

    result = project.engine.apply()

    build = result.outcomes[0].build
    assert project.history.statuses[build.id] == [BuildStatus.PENDING, BuildStatus.BUILDING, BuildStatus.SUCCESS]
    stored = project.engine.builds("web")[0]
    assert stored.id == build.id and stored.status is BuildStatus.SUCCESS and stored.error_message is None
    assert stored.started_at and stored.completed_at
    assert set(stored.durations) == {"build", "deploy", "total"}, "no old container: no gap"
    assert all(value >= 0 for value in stored.durations.values())

    record, log = project.engine.build_logs("web")
    assert record.id == build.id
    tag = L.image_tag(INSTANCE, "web", build.id)
    assert log.splitlines() == [
        f"==> building {tag}",
        "Step 1/4 : FROM busybox",
        f"token is {MASK}, do not print it",
        f"==> deploying {tag} on {URL}",
        f"==> waiting for health (port {HOST_PORT} accepts connections)",
        f"==> healthy; serving on {URL}",
    ]
    assert SECRET not in log
    lines = [e.message for e in project.events if isinstance(e, LogLine)]
    assert lines == ["Step 1/4 : FROM busybox", f"token is {MASK}, do not print it"]


def test_failed_build_is_recorded_and_leaves_the_running_container_alone(project, runtime):
    project.deployed()
    old = runtime.by_name(NAME)
    before = (old.id, old.name, old.state, old.image)
    project.write(build_command="exit 3")
    runtime.allow("observe", *BUILD)  # create, stop, rename, remove: rejected
    runtime.script_build(["Step 3/4 : RUN exit 3", f"token {SECRET}"],
                         BuildFailed("The command '/bin/sh -c exit 3' returned a non-zero code: 3"))

    result = project.engine.apply()

    assert not result.ok
    [outcome] = result.outcomes
    # The message quotes the command's last output line: masked like the log.
    masked = (f"build command exited with 3; its last output line: 'token {MASK}'; "
              f"the full log: `kalpana logs web --build {outcome.build.id}`")
    assert outcome.ok is False
    assert outcome.error == f"{masked} (the running version was left as it was)"
    assert outcome.build.status is BuildStatus.FAILED and outcome.build.error_message == masked
    assert project.history.statuses[outcome.build.id] == [BuildStatus.PENDING, BuildStatus.BUILDING,
                                                          BuildStatus.FAILED]
    assert project.history.logs(outcome.build.id).endswith(f"Step 3/4 : RUN exit 3\ntoken {MASK}\nERROR: {masked}\n")
    assert [e.message for e in project.events if isinstance(e, StepFailed)] == [outcome.error]
    assert "StepSucceeded" not in project.kinds()
    assert [m for m, _ in runtime.changes()] == ["load_sdk", "ensure_image", "build"]
    assert (old.id, old.name, old.state, old.image) == before and list(runtime.containers) == [old.id]
    # The change is still pending: the next apply tries again.
    plan, _ = project.engine.plan()
    assert plan.steps[0].action.value == "rebuild"


def test_interrupted_build_is_recorded_cancelled_and_raises_cancelled(project, runtime):
    project.write()
    runtime.allow("observe", *BUILD)
    runtime.script_build(["Step 1/4 : FROM busybox"], KeyboardInterrupt())

    with pytest.raises(Cancelled) as cancelled:
        project.engine.apply()

    [build] = project.engine.builds("web")
    assert str(cancelled.value) == f"web: create {build.id} cancelled"
    assert build.status is BuildStatus.CANCELLED and build.completed_at
    assert build.error_message == "cancelled: interrupted by Ctrl-C or SIGTERM"
    assert project.history.statuses[build.id] == [BuildStatus.PENDING, BuildStatus.BUILDING, BuildStatus.CANCELLED]
    assert runtime.containers == {}


def _drop_an_interrupt(monkeypatch) -> None:
    dropped = watch_unraisable(monkeypatch)
    drop_an_interrupt()
    assert [type(e) for e in dropped] == [KeyboardInterrupt], "Python did not drop it: the test proves nothing"


@pytest.mark.parametrize("change", ["create", "redeploy", "stop"])
def test_an_interrupt_python_dropped_before_a_step_starts_stops_the_run_there(project, runtime, monkeypatch, change):
    # The daemon cancels a superseded run with one SIGTERM; lost while the run fetched, it built the obsolete commit.
    if change != "create":
        project.deployed()
    before = {c.id: (c.name, c.state) for c in runtime.containers.values()}
    records = len(project.history.list("web"))
    project.write(**{"create": {}, "redeploy": {"start_command": "sleep 1000"}, "stop": {"enabled": False}}[change])
    runtime.allow("observe", *BUILD, *DEPLOY)
    calls = len(runtime.changes())
    _drop_an_interrupt(monkeypatch)

    with pytest.raises(KeyboardInterrupt):
        project.engine.apply()

    assert [m for m, _ in runtime.changes()[calls:] if m != "load_sdk"] == [], "a step ran"
    assert {c.id: (c.name, c.state) for c in runtime.containers.values()} == before
    assert len(project.history.list("web")) == records, "a record was started"


def test_an_interrupt_python_dropped_as_a_step_starts_cancels_it_before_its_work(project, runtime, monkeypatch):
    project.deployed()
    old = runtime.by_name(NAME)
    project.write(start_command="sleep 1000")  # only a runtime field: a redeploy, no build
    runtime.allow("observe", *DEPLOY)
    project.engine.events.subscribe(lambda event: isinstance(event, StepStarted) and _drop_an_interrupt(monkeypatch))

    with pytest.raises(Cancelled):
        project.engine.apply()

    build = project.engine.builds("web")[0]
    assert project.history.statuses[build.id] == [BuildStatus.PENDING, BuildStatus.BUILDING, BuildStatus.CANCELLED]
    assert list(runtime.containers) == [old.id] and (old.name, old.state) == (NAME, "running")
    assert not [m for m, _ in runtime.changes() if m in ("create", "stop", "rename")]


def test_failed_deploy_is_recorded_and_the_old_container_serves_again(project, runtime):
    project.deployed()
    old = runtime.by_name(NAME)
    project.write(start_command="sleep 1000")  # only a runtime field: redeploy the same image
    runtime.allow("observe", *DEPLOY)
    runtime.script_container("exited", 7, f"going down, token {SECRET}\n")

    result = project.engine.apply()

    [outcome] = result.outcomes
    assert outcome.step.action.value == "redeploy" and not outcome.ok
    assert "stopped with exit code 7" in outcome.error and f"going down, token {MASK}" in outcome.error
    # The note on what still runs comes before the container's log lines, not glued to the last of them.
    assert outcome.error.endswith(f" (the running version was left as it was); its last log lines:\n"
                                  f"going down, token {MASK}"), outcome.error
    assert SECRET not in outcome.error and SECRET not in (outcome.build.error_message or "")
    assert outcome.build.status is BuildStatus.FAILED
    assert list(runtime.containers) == [old.id] and (old.name, old.state) == (NAME, "running")
    assert "build" not in methods(runtime)


# -- events ----------------------------------------------------------------------------------------------------

def test_events_of_a_successful_create(project, runtime):
    project.write()
    runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)
    runtime.script_build(["Step 1/1 : done"])

    result = project.engine.apply()

    build_id = result.outcomes[0].build.id
    tag = L.image_tag(INSTANCE, "web", build_id)
    assert project.events == [
        Planned(None, "web create (not deployed yet)", changes=1),
        StepStarted("web", "not deployed yet", action="create"),
        PhaseEntered("web", f"building {tag}", build_id=build_id),
        LogLine("web", "Step 1/1 : done", build_id=build_id),
        PhaseEntered("web", f"deploying {tag} on {URL}", build_id=build_id),
        PhaseEntered("web", f"waiting for health (port {HOST_PORT} accepts connections)", build_id=build_id),
        PhaseEntered("web", f"healthy; serving on {URL}", build_id=build_id),
        StepSucceeded("web", "create", build=project.history.get(build_id).to_dict()),
    ]


# -- reading ---------------------------------------------------------------------------------------------------

def test_builds_of_an_unknown_deployment_lists_the_known_ones(project, runtime):
    project.write("web")
    project.write("api")
    runtime.allow("observe")  # a container could carry the name: the engine looks
    with pytest.raises(UnknownDeployment) as unknown:
        project.engine.builds("nope")
    assert str(unknown.value) == "unknown deployment 'nope'; known deployments: api, web"


def test_logs_of_an_unknown_build(project, runtime):
    project.write()  # a declared name: no runtime call at all
    with pytest.raises(KalpanaError) as missing:
        project.engine.build_logs("web", "nope")
    assert str(missing.value).startswith("no build 'nope' of web")


def test_webhooks_instance_endpoint_first_then_one_per_deployment(project, runtime):
    project.write("web", auto_rebuild=True, webhook_secret="hook-secret")
    project.write("api")
    endpoints = project.engine.webhooks()
    assert [(e.name, e.url) for e in endpoints] == [
        (None, "https://hooks.example.org/webhook"),
        ("api", "https://hooks.example.org/api/deployments/api/webhook"),
        ("web", "https://hooks.example.org/api/deployments/web/webhook"),
    ]
    assert [(e.secret_set, e.auto_rebuild) for e in endpoints[1:]] == [(False, False), (True, True)]
    assert runtime.calls == []


# -- the fake itself -------------------------------------------------------------------------------------------

def test_a_rejected_call_is_kept_even_when_the_engine_swallows_it(project, runtime):
    project.write()
    runtime.allow("observe", "load_sdk", "ensure_image")  # but not build

    result = project.engine.apply()

    # The engine records any exception as FAILED and carries on: only the fake's own list shows the rejection.
    assert result.outcomes[0].build.status is BuildStatus.FAILED
    assert "AssertionError: unexpected runtime call build('kalpana/unit/web:" in result.outcomes[0].error
    assert [v.split("(")[0] for v in runtime.violations] == ["build"]
    with pytest.raises(AssertionError, match=r"unexpected runtime calls:\n  build\("):
        runtime.assert_no_violations()
    runtime.violations.clear()  # seen: the fixture's teardown check must pass


def test_the_fake_has_every_method_of_the_runtime_protocol_with_its_parameters():
    protocol = {name for name in vars(Runtime) if not name.startswith("_")}
    assert METHODS == protocol
    for name in protocol:
        expected = list(inspect.signature(getattr(Runtime, name)).parameters)
        assert list(inspect.signature(getattr(FakeRuntime, name)).parameters) == expected, name


# -- issue 8: a busy port is a file error; a trial left by a killed run is removed ---------------------


def test_a_busy_exposed_port_is_a_file_error_and_nothing_is_built(project, runtime):
    project.write("web")
    project.engine.deployer.port_free = lambda port, address: port != HOST_PORT
    runtime.allow("observe")  # no build, no create: rejected
    result = project.engine.apply()
    assert not result.ok and result.outcomes == []
    [error] = result.load.errors
    assert error.field == "exposed_port" and error.file.endswith("web.yaml")
    assert Path(error.file).read_text().splitlines()[error.line - 1].startswith("exposed_port:"), error.line
    assert error.message == f"port {HOST_PORT} is in use by another process: free it or choose another exposed_port"
    assert result.plan.prune is False
    assert project.engine.builds("web") == []


def test_the_deployments_own_container_does_not_make_its_port_busy(project, runtime):
    project.deployed()
    project.engine.deployer.port_free = lambda port, address: False  # its container holds it
    runtime.allow("observe")
    plan, load = project.engine.plan()
    assert load.ok and [(s.name, s.action.value) for s in plan.steps] == [("web", "noop")]


def test_a_trial_container_left_by_a_killed_run_is_removed_first(project, runtime):
    project.deployed()
    old = runtime.by_name(NAME)
    trial = runtime.add_container(f"{NAME}--candidate", old.image, {**old.labels, L.BUILD_ID: "later"}, port=8080)
    runtime.allow("observe", "remove")
    result = project.engine.apply()
    assert result.ok and result.outcomes == []
    assert runtime.changes() == [("remove", (trial.id,))]
    assert list(runtime.containers) == [old.id] and old.state == "running"
    assert any(e.message == f"removed {NAME}--candidate, the trial container of an interrupted deploy"
               for e in project.events if type(e).__name__ == "Recovered")


@pytest.mark.parametrize(("error", "transient"), [
    pytest.param(BuildFailed("The command '/bin/sh -c exit 3' returned a non-zero code: 3"), False,
                 id="its-own-command-failed"),
    pytest.param(DockerUnavailable("unix:///var/run/docker.sock", "connection refused"), True,
                 id="docker-went-away-mid-build"),
    pytest.param(ImageMissing("busybox:1.36", "registry unreachable"), True, id="the-base-image-could-not-be-pulled"),
])
def test_a_failed_step_says_whether_its_cause_was_outside_the_deployment(project, runtime, error, transient):
    """The daemon retries a transient failure with backoff; a build's own failure waits for a change."""
    project.deployed()
    project.write(build_command="make")
    runtime.allow("observe", *BUILD)
    runtime.script_build(["Step 3/4 : RUN make"], error)
    result = project.engine.apply()
    [outcome] = result.outcomes
    assert outcome.build.status is BuildStatus.FAILED  # recorded either way
    [failed] = [e for e in project.events if isinstance(e, StepFailed)]
    assert failed.transient is transient


# -- issue 12: the docker SDK is loaded up front only for work that builds ------------------------------------

def test_a_redeploy_only_plan_loads_no_sdk_and_a_build_does(project, runtime):
    project.deployed()
    assert runtime.sdk_loads == [True]  # the first apply built
    project.write(env={"COLOR": "red"})
    runtime.allow("observe", *DEPLOY)

    result = project.engine.apply()

    assert [o.step.action.value for o in result.outcomes] == ["redeploy"] and result.ok
    assert runtime.sdk_loads == [True, False]
    project.write(build_command="echo building v2")
    runtime.allow("remove_image", *BUILD)
    assert project.engine.apply().ok
    assert runtime.sdk_loads == [True, False, True]


# -- issue 11 QA: a create the plan would refuse is refused at once, naming the field -------------------------


def test_create_refuses_a_host_port_another_deployment_was_handed(project, runtime):
    # site-a's file declares no exposed_port: its host port was handed out and recorded, and its container holds it.
    project.history.assign_port("site-a", 22545)
    project.write("site-a")
    path = project.settings.deployments_path / "site-a.yaml"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("exposed_port")))
    runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)
    assert project.engine.apply(["site-a"]).ok
    runtime.allowed = {"observe"}
    body = {**WEB, "name": "x8", "exposed_port": 22545}
    with pytest.raises(KalpanaError) as caught:
        project.engine.create_deployment(body)
    assert caught.value.field == "exposed_port"
    assert "22545 is held by deployment site-a" in str(caught.value)
    assert [p.name for p in project.settings.deployments_path.iterdir()] == ["site-a.yaml"]


def test_create_refuses_a_git_source_that_cannot_be_cloned(project, runtime, tmp_path):
    runtime.allow("observe")
    body = {**WEB, "name": "x9", "source": {"repo": f"file://{tmp_path}/no-such-repo"}}
    body.pop("exposed_port")
    with pytest.raises(KalpanaError) as caught:
        project.engine.create_deployment(body)
    assert caught.value.field == "source"
    message = str(caught.value)
    assert "git clone of" in message and "does not appear to be a git repository" in message, message
    assert "repository exists." not in message  # git's trailing advice is not the reason
    assert list(project.settings.deployments_path.iterdir()) == []


def test_what_an_apply_left_alone_says_why_in_status_until_it_is_fixed(project, runtime, tmp_path):
    # The file is fine, its source is not: the apply builds nothing; status must not say "not deployed" and nothing.
    project.write("web", source={"repo": f"file://{tmp_path}/no-such-repo"})
    runtime.allow("observe")
    result = project.engine.apply(["web"])
    assert not result.ok and result.outcomes == []
    [row] = project.engine.status()
    assert row.state.value == "not deployed"
    assert "web.yaml:" in row.detail, row.detail
    assert "source: git clone of" in row.detail and "does not appear to be a git repository" in row.detail
    [view] = project.engine.deployments("web")
    assert view.status.detail == row.detail
    project.write("web")  # fixed: a local source (none) again
    runtime.allow("remove_image", "started_at", *BUILD, *DEPLOY)
    assert project.engine.apply(["web"]).ok
    assert project.history.problems() == {}
    assert project.engine.status()[0].detail == ""


def test_a_rollback_to_an_unknown_build_is_not_found_and_names_the_known_ones(project, runtime):
    from gitops.build_logs import BuildNotFound
    from gitops.server.api import status_of

    build = project.deployed()
    runtime.allow("load_sdk", "observe")  # the rollback looks at what runs, then refuses: nothing changes
    with pytest.raises(BuildNotFound) as missing:
        project.engine.rollback("web", "nope")
    assert status_of(missing.value) == 404  # the API's answer, as for any unknown build id
    assert str(missing.value) == f"no build 'nope' of web (its newest: {build.id}): see `kalpana builds web`"
