"""Steps of one apply on a bounded pool (``parallelism``), against the fake runtime.

What must hold when several deployments are built and started at once: they really run side by
side, one failure leaves the others alone, each record and each event belongs to its own
deployment, host ports stay unique, and Ctrl-C on the main thread cancels every step in flight
(records CANCELLED, nothing half-made). The same run on a real engine: tests/integration/test_parallel_apply.py.
"""

from __future__ import annotations

import signal
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from dropped_interrupt import drop_an_interrupt, watch_unraisable
from fake_runtime import BUILD, DEPLOY, METHODS, FakeRuntime
from test_engine import INSTANCE, Project

from gitops import labels as L
from gitops import routing
from gitops.build import BuildStatus
from gitops.errors import Cancelled
from gitops.events import Event, LogLine, PhaseEntered, StepFailed, StepStarted, StepSucceeded
from gitops.spec import HealthCheck

NAMES = ["alpha", "bravo", "charlie"]
REAL_TIMEOUT = 5.0  # real seconds a barrier waits for the other steps before the test fails


class ThreadSafeRuntime(FakeRuntime):
    """The fake runtime, one call at a time: the engine's workers call it from several threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.RLock()
        super().__init__(*args, **kwargs)
        self.blocked_builds = threading.Semaphore(0)  # released once per build that entered wait_build
        self.release_builds = threading.Event()
        self.silent_builds = False

    def build(self, context, *, tag: str, dockerfile: str = "Dockerfile") -> Iterator[str]:
        with self._lock:
            lines = super().build(context, tag=tag, dockerfile=dockerfile)
        if not self.silent_builds:
            return self._locked(lines)
        return self._silent(lines)

    def _locked(self, lines: Iterator[str]) -> Iterator[str]:
        while True:
            with self._lock:
                line = next(lines, None)
            if line is None:
                return
            yield line

    def _silent(self, lines: Iterator[str]) -> Iterator[str]:
        # A build step that prints nothing until it ends (a long `RUN`): no line gives a checkpoint.
        self.blocked_builds.release()
        self.release_builds.wait(REAL_TIMEOUT)
        with self._lock:
            list(lines)  # the build finishes: its image is stored
        yield from ()

    def add_image(self, *args: Any, **kwargs: Any):
        with self._lock:
            return super().add_image(*args, **kwargs)


def _locked_method(name: str) -> Callable:
    method = getattr(FakeRuntime, name)

    def call(self, *args: Any, **kwargs: Any):
        with self._lock:
            return method(self, *args, **kwargs)
    call.__name__ = name
    return call


for _name in METHODS - {"build"}:
    setattr(ThreadSafeRuntime, _name, _locked_method(_name))


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt here, whatever handler an earlier test in this process left behind:
    the Ctrl-C tests below would otherwise wait for a cancel that never comes."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def runtime() -> Iterator[ThreadSafeRuntime]:
    fake = ThreadSafeRuntime()
    yield fake
    fake.assert_no_violations()


@pytest.fixture
def project(tmp_path: Path, runtime: ThreadSafeRuntime) -> Project:
    project = Project(tmp_path, runtime)
    project.settings.parallelism = 3
    for name in NAMES:
        project.write(name)
    runtime.allow("observe", "remove_image", *BUILD, *DEPLOY)
    return project


def by_deployment(events: list[Event]) -> dict[str, list[Event]]:
    seen: dict[str, list[Event]] = {}
    for event in events:
        if event.deployment:
            seen.setdefault(event.deployment, []).append(event)
    return seen


def test_steps_run_side_by_side(project, runtime):
    # Each health probe waits for the other two deployments' probes: it passes only if all three
    # steps are in flight at once (one after another, the barrier breaks and the deploys fail).
    barrier = threading.Barrier(len(NAMES), timeout=REAL_TIMEOUT)

    def probe(check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        barrier.wait()
        return True, "ok"

    project.engine.deployer._probe = probe

    result = project.engine.apply()

    assert result.ok, result.to_dict()
    assert [o.step.name for o in result.outcomes] == NAMES, "outcomes in plan order, whatever finished first"
    assert {o.build.status for o in result.outcomes} == {BuildStatus.SUCCESS}


def test_parallelism_1_runs_one_step_after_another(project, runtime):
    project.settings.parallelism = 1
    threads: set[str] = set()
    order: list[str] = []

    def listen(event: Event) -> None:
        threads.add(threading.current_thread().name)
        if isinstance(event, (StepStarted, StepSucceeded)):
            order.append(f"{type(event).__name__}:{event.deployment}")

    project.engine.events.subscribe(listen)

    assert project.engine.apply().ok

    assert threads == {threading.main_thread().name}
    assert order == [f"{kind}:{name}" for name in NAMES for kind in ("StepStarted", "StepSucceeded")]


def test_one_failure_does_not_stop_the_others(project, runtime):
    bravo_port = project.ports["bravo"]

    def probe(check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        container = next(c for c in runtime.containers.values() if c.state == "running"
                         and runtime.address_of(c.id) == host)
        if container.labels[L.DEPLOYMENT] == "bravo":
            return False, "connection refused"
        return True, "ok"

    project.engine.deployer._probe = probe

    result = project.engine.apply()

    assert not result.ok
    status = {o.step.name: (o.ok, o.build.status) for o in result.outcomes}
    assert status == {"alpha": (True, BuildStatus.SUCCESS), "bravo": (False, BuildStatus.FAILED),
                      "charlie": (True, BuildStatus.SUCCESS)}
    assert runtime.by_name(L.container_name(INSTANCE, "alpha")).state == "running"
    assert runtime.by_name(L.container_name(INSTANCE, "charlie")).state == "running"
    assert runtime.by_name(L.container_name(INSTANCE, "bravo")) is None
    assert bravo_port not in {c.host_port for c in runtime.containers.values()}
    [failed] = [e for e in project.events if isinstance(e, StepFailed)]
    assert failed.deployment == "bravo" and "connection refused" in failed.message


def test_each_record_and_event_belongs_to_its_deployment(project, runtime):
    for name in NAMES:
        runtime.script_build([f"Step 1/1 : RUN build {name}", f"built {name}"])
    # The fake hands scripted builds out in call order, which threads make arbitrary: the log lines
    # are checked against the image each record names, not against the name.

    result = project.engine.apply()

    assert result.ok, result.to_dict()
    events = by_deployment(project.events)
    assert set(events) == set(NAMES)
    for outcome in result.outcomes:
        name, build = outcome.step.name, outcome.build
        mine = events[name]
        assert isinstance(mine[0], StepStarted) and isinstance(mine[-1], StepSucceeded)
        assert mine[-1].build["id"] == build.id
        # Every phase and log line of this deployment names its own record, and only that one.
        assert {e.build_id for e in mine if isinstance(e, (PhaseEntered, LogLine))} == {build.id}
        log = project.history.logs(build.id)
        assert f"building {L.image_tag(INSTANCE, name, build.id)}" in log
        for other in NAMES:
            if other != name:
                assert f"/{other}:" not in log, f"{name}'s log has {other}'s phases"
        assert build.deployment == name and build.status is BuildStatus.SUCCESS
        assert project.history.statuses[build.id] == [BuildStatus.PENDING, BuildStatus.BUILDING,
                                                      BuildStatus.SUCCESS]
        assert runtime.by_name(L.container_name(INSTANCE, name)).labels[L.BUILD_ID] == build.id


def _same_start(count: int) -> list[str]:
    """Deployment names whose host-port search starts at the same port (see routing.host_port)."""
    low, high = routing.PORT_RANGE
    first: dict[int, list[str]] = {}
    for i in range(100_000):
        name = f"app{i}"
        group = first.setdefault(zlib.crc32(f"{INSTANCE}/{name}".encode()) % (high - low + 1), [])
        group.append(name)
        if len(group) == count:
            return group
    raise AssertionError("no names found")


def test_host_ports_stay_unique_when_steps_choose_them_at_once(project, runtime, tmp_path):
    for path in project.settings.deployments_path.iterdir():
        path.unlink()
    names = _same_start(2)
    for name in names:
        project.write(name, exposed_port=None)  # Kalpana chooses the host port
    history = project.engine.history
    plain = history.assigned_ports
    reads: dict[str, int] = {}
    second = threading.Event()

    def assigned_ports() -> dict[str, int]:
        # routing.host_port reads twice: the remembered port, then the taken ones before its search.
        # A step at that second read waits for another step to get there too: two steps searching
        # before either records its choice would both pick the same first free port. The engine's
        # port lock keeps the second one out until the first has recorded its port.
        seen = plain()
        me = threading.current_thread().name
        if me.startswith("kalpana-step"):
            reads[me] = reads.get(me, 0) + 1
            if reads[me] == 2:
                if sum(1 for n in reads.values() if n >= 2) == 1:
                    second.wait(0.5)
                else:
                    second.set()
        return seen

    history.assigned_ports = assigned_ports

    result = project.engine.apply()

    assert result.ok, result.to_dict()
    ports = [o.build and runtime.by_name(L.container_name(INSTANCE, o.step.name)).host_port
             for o in result.outcomes]
    assert None not in ports and len(set(ports)) == len(names), f"two deployments got one host port: {ports}"
    assert sorted(history.assigned_ports().values()) == sorted(ports)


@pytest.mark.parametrize("interrupt", ["ctrl-c", "dropped"])
def test_ctrl_c_cancels_every_step_in_flight(project, runtime, monkeypatch, interrupt):
    # Three builds block without printing (a silent RUN); Ctrl-C lands on the main thread, which
    # only waits: every record must end CANCELLED, no container may be made, no image left.
    # "dropped": Python dropped the KeyboardInterrupt (it landed in a __del__) and the main thread
    # never saw it; the workers must see the process's mark at their next checkpoint all the same.
    runtime.silent_builds = True
    main = threading.main_thread().ident
    dropped = watch_unraisable(monkeypatch)

    def interrupt_when_all_build() -> None:
        for _ in NAMES:
            assert runtime.blocked_builds.acquire(timeout=REAL_TIMEOUT)
        if interrupt == "ctrl-c":
            signal.pthread_kill(main, signal.SIGINT)
        else:
            drop_an_interrupt()

    helper = threading.Thread(target=interrupt_when_all_build)
    helper.start()
    try:
        with pytest.raises(Cancelled) as raised:
            project.engine.apply()
    finally:
        helper.join()
        runtime.release_builds.set()  # the abandoned builds finish now, as Docker's might
    for thread in threading.enumerate():
        if thread.name == "kalpana-call":
            thread.join(REAL_TIMEOUT)

    assert [type(e) for e in dropped] == ([KeyboardInterrupt] if interrupt == "dropped" else [])
    for name in NAMES:
        assert name in str(raised.value)
        [build] = project.history.list(name)
        assert build.status is BuildStatus.CANCELLED, (name, build.status)
        assert "interrupted by Ctrl-C or SIGTERM" in build.error_message
    assert runtime.created == [], "no container was made"
    assert runtime.images == {}, "an abandoned build's image is removed when it appears"
    assert not any(isinstance(e, StepSucceeded) for e in project.events)


def test_ctrl_c_restores_the_old_container_of_a_step_waiting_for_health(project, runtime):
    project.settings.parallelism = 3
    project.engine.deployer._probe = lambda check, port, host: (True, "ok")
    assert project.engine.apply().ok
    old = {name: runtime.by_name(L.container_name(INSTANCE, name)).id for name in NAMES}
    for name in NAMES:
        project.write(name, build_command=f"echo v2 {name}")
    waiting = threading.Semaphore(0)
    main = threading.main_thread().ident

    def never_healthy(check: HealthCheck, port: int | None, host: str) -> tuple[bool, str]:
        waiting.release()
        return False, "connection refused"

    project.engine.deployer._probe = never_healthy
    # The clock never reaches the health timeout: only the cancel ends the wait.
    project.engine.deployer._monotonic = lambda: 0.0
    project.engine.deployer._sleep = lambda seconds: threading.Event().wait(0.01)

    def interrupt_when_all_wait() -> None:
        for _ in NAMES:
            assert waiting.acquire(timeout=REAL_TIMEOUT)
        signal.pthread_kill(main, signal.SIGINT)

    helper = threading.Thread(target=interrupt_when_all_wait)
    helper.start()
    try:
        with pytest.raises(Cancelled):
            project.engine.apply()
    finally:
        helper.join()

    for name in NAMES:
        container = runtime.by_name(L.container_name(INSTANCE, name))
        assert container is not None and container.id == old[name] and container.state == "running", name
        assert project.history.list(name)[0].status is BuildStatus.CANCELLED
    assert {c.name for c in runtime.containers.values()} == {L.container_name(INSTANCE, n) for n in NAMES}


def test_history_writes_from_many_threads_all_land(tmp_path):
    from gitops.build import Trigger
    from gitops.history import History

    history = History(tmp_path / "state")

    def one(i: int) -> str:
        build = history.new_build(f"d{i}", Trigger.MANUAL, "create")
        history.update(build.id, status=BuildStatus.BUILDING)
        history.append_log(build.id, f"line of d{i}\n")
        history.finish(build.id, BuildStatus.SUCCESS)
        return build.id

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = history.list()
    assert sorted(b.deployment for b in records) == sorted(f"d{i}" for i in range(16))
    assert {b.status for b in records} == {BuildStatus.SUCCESS}
    assert all(history.logs(b.id) == f"line of {b.deployment}\n" for b in records)


def test_events_reach_a_subscriber_one_at_a_time():
    from gitops.events import Events, Info

    bus = Events()
    inside = threading.Lock()
    overlaps: list[str] = []

    def slow(event: Event) -> None:
        if not inside.acquire(blocking=False):
            overlaps.append(event.message)
            return
        try:
            threading.Event().wait(0.002)  # a write that takes a while: another thread's event must wait
        finally:
            inside.release()

    bus.subscribe(slow)
    threads = [threading.Thread(target=lambda i=i: [bus.emit(Info(f"d{i}", str(n))) for n in range(20)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def test_live_spinner_lists_every_step_in_flight_and_stops_after_the_last():
    from gitops.cli.render import Progress

    progress = Progress()
    progress._console = type("Quiet", (), {"print": lambda self, *a, **k: None, "is_terminal": False})()
    progress(StepStarted("alpha", "new", action="create"))
    progress(StepStarted("bravo", "new", action="create"))
    progress(PhaseEntered("alpha", "building kalpana/alpha:1"))
    assert progress.spinner_text() == "2 in flight: alpha: building kalpana/alpha:1; bravo: create"
    progress(StepSucceeded("alpha", "create"))
    assert progress.spinner_text() == "bravo: create"
    progress(StepFailed("bravo", "boom"))
    assert progress._running == {}
