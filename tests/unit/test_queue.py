"""The daemon's work queue: coalescing, one run at a time, newest commit wins, bounded shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from gitops.history import Trigger
from gitops.queue import Job, Running, WorkQueue

QUIET = 0.05
SHA = [f"{i:x}" * 40 for i in range(1, 16)]  # "1111...", "2222...", ...


class FakeRunner:
    """Records every run; with ``block``, a run lasts until released or cancelled (a long build)."""

    def __init__(self, block: bool = False, honour_cancel: bool = True):
        self.block = block
        self.honour_cancel = honour_cancel
        self.runs: list[Running] = []
        self.started_at: list[float] = []
        self.finished: list[Running] = []
        self.release = threading.Event()
        self._started = threading.Condition()

    def __call__(self, running: Running) -> None:
        with self._started:
            self.runs.append(running)
            self.started_at.append(time.monotonic())
            self._started.notify_all()
        if self.block:
            while not self.release.is_set():
                if self.honour_cancel and running.cancelled.is_set():
                    break
                time.sleep(0.005)
        self.finished.append(running)

    def wait_for_runs(self, count: int, timeout: float = 1.5) -> list[Running]:
        with self._started:
            assert self._started.wait_for(lambda: len(self.runs) >= count, timeout), (
                f"expected {count} run(s), got {len(self.runs)}: {[r.job.describe() for r in self.runs]}")
        return self.runs

    @property
    def jobs(self) -> list[Job]:
        return [r.job for r in self.runs]


def wait_idle(queue: WorkQueue, timeout: float = 1.5) -> None:
    deadline = time.monotonic() + timeout
    while queue.busy:
        assert time.monotonic() < deadline, "the queue never went idle"
        time.sleep(0.005)


def wait_until(predicate, timeout: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def make_queue():
    made: list[WorkQueue] = []

    def make(runner, **kwargs) -> WorkQueue:
        kwargs.setdefault("quiet", QUIET)
        kwargs.setdefault("max_wait", 1.0)
        queue = WorkQueue(runner, **kwargs)
        queue.start()
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close(cancel_reason="test over", timeout=2)


def push(names, commit, trigger=Trigger.WEBHOOK, **kwargs) -> Job:
    return Job(frozenset(names), trigger, fetch=True, commit=commit, reasons=[f"push {commit[:7]}"], **kwargs)


# -- coalescing ------------------------------------------------------------------


def test_ten_pushes_in_a_burst_give_one_run_of_the_newest_commit(make_queue):
    runner = FakeRunner()
    queue = make_queue(runner)
    for i in range(10):
        queue.submit(push({"web"} if i % 2 else {"api"}, SHA[i]))
    runner.wait_for_runs(1)
    wait_idle(queue)
    time.sleep(QUIET * 3)  # nothing else turns up
    assert len(runner.runs) == 1
    job = runner.jobs[0]
    assert job.names == {"web", "api"}
    assert job.commit == SHA[9]
    assert job.fetch is True
    assert job.trigger is Trigger.WEBHOOK
    assert len(job.reasons) == 10


def test_merge_keeps_the_strongest_trigger_and_every_flag():
    a = Job(frozenset({"web"}), Trigger.AUTO, reasons=["file change"])
    b = Job(frozenset({"api"}), Trigger.WEBHOOK, fetch=True, commit=SHA[0], reasons=["push"])
    c = Job(None, Trigger.MANUAL, config=True, prune=True, reasons=["start"])
    ab = a.merge(b)
    assert ab.names == {"web", "api"} and ab.trigger is Trigger.WEBHOOK and ab.fetch and ab.commit == SHA[0]
    abc = ab.merge(c)
    assert abc.names is None  # None means every deployment
    assert abc.trigger is Trigger.WEBHOOK
    assert abc.config and abc.prune and abc.fetch
    assert abc.commit == SHA[0]  # a job without a commit does not erase the pushed one
    assert abc.reasons == ["file change", "push", "start"]


def test_jobs_arriving_during_a_run_wait_and_run_once_after_it(make_queue):
    runner = FakeRunner(block=True)
    queue = make_queue(runner)
    queue.submit(Job(frozenset({"web"}), Trigger.AUTO, reasons=["file change"]))
    runner.wait_for_runs(1)
    for name in ("api", "db", "api", "cache"):
        queue.submit(Job(frozenset({name}), Trigger.AUTO, reasons=["file change"]))
    time.sleep(QUIET * 3)
    assert len(runner.runs) == 1, "one run at a time"
    runner.release.set()
    runner.wait_for_runs(2)
    wait_idle(queue)
    assert len(runner.runs) == 2
    assert runner.jobs[1].names == {"api", "db", "cache"}
    assert not runner.runs[0].cancelled.is_set()


# -- superseding ---------------------------------------------------------------------


def test_a_newer_commit_cancels_the_running_build_and_runs_next(make_queue):
    superseded: list[tuple[Running, Job]] = []
    runner = FakeRunner(block=True)
    queue = make_queue(runner, on_supersede=lambda running, job: superseded.append((running, job)))
    queue.submit(push({"web"}, SHA[0]))
    first = runner.wait_for_runs(1)[0]
    queue.submit(push({"web"}, SHA[1]))
    assert first.cancelled.wait(0.5)
    assert first.cancel_reason == f"superseded by {SHA[1][:7]}"
    assert superseded and superseded[0][0] is first and superseded[0][1].commit == SHA[1]
    second = runner.wait_for_runs(2)[1]
    assert second.job.commit == SHA[1]
    assert second.job.names == {"web"}
    assert not second.cancelled.is_set()
    runner.release.set()
    wait_idle(queue)
    assert len(runner.runs) == 2


@pytest.mark.parametrize("running_names,new_names", [
    ({"web"}, {"web", "api"}),
    ({"web", "api"}, {"api", "web"}),
    (None, None),
])
def test_a_push_covering_the_running_build_supersedes_it(make_queue, running_names, new_names):
    runner = FakeRunner(block=True)
    queue = make_queue(runner)
    queue.submit(Job(None if running_names is None else frozenset(running_names), Trigger.WEBHOOK,
                     fetch=True, commit=SHA[0]))
    first = runner.wait_for_runs(1)[0]
    queue.submit(Job(None if new_names is None else frozenset(new_names), Trigger.WEBHOOK, fetch=True,
                     commit=SHA[1]))
    assert first.cancelled.wait(0.5)
    assert first.cancel_reason == f"superseded by {SHA[1][:7]}"
    runner.release.set()
    wait_idle(queue)


def test_a_cancelled_build_does_not_lose_the_work_of_the_deployments_the_push_did_not_cover(make_queue):
    # The run builds web and api (say: the daemon's start, or a file change of api merged with a
    # push to web). A push for web alone may cancel it, but api must still be applied afterwards.
    runner = FakeRunner(block=True)
    queue = make_queue(runner)
    queue.submit(push({"web", "api"}, SHA[0]))
    first = runner.wait_for_runs(1)[0]
    queue.submit(push({"web"}, SHA[1]))
    if first.cancelled.wait(0.3):
        second = runner.wait_for_runs(2)[1]
        assert second.job.names == {"web", "api"}, (
            f"the run of web+api was cancelled by a push of web alone, and only {sorted(second.job.names)} "
            "runs next: api's pending work is lost")
        assert second.job.commit == SHA[1]
    runner.release.set()
    wait_idle(queue)


def test_a_cancelled_start_run_of_everything_is_not_lost(make_queue):
    runner = FakeRunner(block=True)
    queue = make_queue(runner)
    queue.submit(Job(None, Trigger.AUTO, prune=True, reasons=["daemon start"]))
    first = runner.wait_for_runs(1)[0]
    queue.submit(push({"web"}, SHA[1]))
    if first.cancelled.wait(0.3):
        second = runner.wait_for_runs(2)[1]
        assert second.job.names is None and second.job.prune, (
            "the daemon's start run (every deployment, prune) was cancelled by a push of one deployment "
            f"and never runs again: next run is {second.job.describe()}")
    runner.release.set()
    wait_idle(queue)


@pytest.mark.parametrize("new_job", [
    pytest.param(push({"api"}, SHA[1]), id="another-deployment"),
    pytest.param(push({"web"}, SHA[0]), id="same-commit"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, reasons=["file change"]), id="file-change"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, commit=SHA[1]), id="commit-without-fetch"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, fetch=True), id="fetch-without-commit"),
])
def test_what_does_not_supersede_queues_behind(make_queue, new_job):
    runner = FakeRunner(block=True)
    queue = make_queue(runner)
    queue.submit(push({"web"}, SHA[0]))
    first = runner.wait_for_runs(1)[0]
    queue.submit(new_job)
    time.sleep(QUIET * 3)
    assert not first.cancelled.is_set()
    assert first.cancel_reason is None
    assert len(runner.runs) == 1
    runner.release.set()
    runner.wait_for_runs(2)
    wait_idle(queue)
    assert runner.jobs[1].names == new_job.names
    assert runner.finished[0] is first


def test_a_second_newer_push_does_not_cancel_twice(make_queue):
    superseded = []
    runner = FakeRunner(block=True, honour_cancel=False)  # a build slow to react to its cancellation
    queue = make_queue(runner, on_supersede=lambda running, job: superseded.append(job.commit))
    queue.submit(push({"web"}, SHA[0]))
    first = runner.wait_for_runs(1)[0]
    queue.submit(push({"web"}, SHA[1]))
    queue.submit(push({"web"}, SHA[2]))
    assert first.cancel_reason == f"superseded by {SHA[1][:7]}"
    assert superseded == [SHA[1]]
    runner.release.set()
    second = runner.wait_for_runs(2)[1]
    assert second.job.commit == SHA[2]
    wait_idle(queue)
    assert len(runner.runs) == 2


# -- timing ----------------------------------------------------------------------


def test_the_worker_waits_for_a_quiet_period():
    runner = FakeRunner()
    queue = WorkQueue(runner, quiet=0.2, max_wait=5.0)
    queue.start()
    try:
        first = time.monotonic()
        queue.submit(push({"web"}, SHA[0]))
        time.sleep(0.1)
        last = time.monotonic()
        queue.submit(push({"web"}, SHA[1]))  # restarts the quiet period
        runner.wait_for_runs(1)
        waited = runner.started_at[0] - last
        assert waited >= 0.19, f"started {waited:.3f} s after the last submit, before the quiet period"
        assert runner.started_at[0] - first < 1.0
        assert runner.jobs[0].commit == SHA[1]
    finally:
        queue.close(timeout=2)


def test_max_wait_bounds_the_delay_under_a_steady_stream():
    runner = FakeRunner()
    queue = WorkQueue(runner, quiet=0.2, max_wait=0.4)
    queue.start()
    try:
        first = time.monotonic()
        i = 0
        while time.monotonic() - first < 0.9:  # a submit every 50 ms: never quiet for 200 ms
            queue.submit(push({"web"}, SHA[i % len(SHA)]))
            i += 1
            time.sleep(0.05)
        runner.wait_for_runs(1)
        delay = runner.started_at[0] - first
        assert 0.38 <= delay < 0.75, f"first run started {delay:.3f} s after the first submit (max_wait 0.4)"
    finally:
        queue.close(timeout=2)


# -- shutdown ---------------------------------------------------------------------


def test_close_with_a_reason_cancels_the_running_job_within_bounded_time():
    runner = FakeRunner(block=True)
    queue = WorkQueue(runner, quiet=QUIET)
    queue.start()
    queue.submit(push({"web"}, SHA[0]))
    running = runner.wait_for_runs(1)[0]
    queue.submit(push({"api"}, SHA[1]))  # waiting behind: dropped by close
    started = time.monotonic()
    queue.close(cancel_reason="the daemon is stopping", timeout=5)
    assert time.monotonic() - started < 1.0
    assert running.cancelled.is_set()
    assert running.cancel_reason == "the daemon is stopping"
    assert runner.finished == [running]
    assert not queue.busy
    queue.submit(push({"web"}, SHA[2]))  # closed: ignored
    time.sleep(QUIET * 3)
    assert len(runner.runs) == 1


def test_close_without_a_reason_lets_the_running_job_finish():
    runner = FakeRunner(block=True)
    queue = WorkQueue(runner, quiet=QUIET)
    queue.start()
    queue.submit(push({"web"}, SHA[0]))
    running = runner.wait_for_runs(1)[0]
    threading.Timer(0.2, runner.release.set).start()
    started = time.monotonic()
    queue.close(timeout=5)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.5
    assert not running.cancelled.is_set()
    assert runner.finished == [running]


def test_close_gives_up_on_a_stuck_job_after_its_timeout():
    runner = FakeRunner(block=True, honour_cancel=False)
    queue = WorkQueue(runner, quiet=QUIET)
    queue.start()
    queue.submit(push({"web"}, SHA[0]))
    running = runner.wait_for_runs(1)[0]
    started = time.monotonic()
    queue.close(cancel_reason="stopping", timeout=0.2)
    assert time.monotonic() - started < 0.8
    assert running.cancelled.is_set()
    runner.release.set()


def test_close_of_an_idle_queue_returns_at_once():
    queue = WorkQueue(FakeRunner(), quiet=QUIET)
    queue.start()
    started = time.monotonic()
    queue.close(cancel_reason="stopping", timeout=5)
    assert time.monotonic() - started < 0.5


def test_close_drops_work_still_waiting_for_its_quiet_period():
    runner = FakeRunner()
    queue = WorkQueue(runner, quiet=0.3)
    queue.start()
    queue.submit(push({"web"}, SHA[0]))
    queue.close(cancel_reason="stopping", timeout=2)
    time.sleep(0.4)
    assert runner.runs == []


def test_a_runner_that_raises_does_not_kill_the_worker(make_queue):
    calls = []

    def runner(running: Running) -> None:
        calls.append(running.job)
        if len(calls) == 1:
            raise RuntimeError("boom")

    queue = make_queue(runner)
    queue.submit(push({"web"}, SHA[0]))
    assert wait_until(lambda: len(calls) == 1)
    queue.submit(push({"web"}, SHA[1]))
    assert wait_until(lambda: len(calls) == 2), "the worker thread died with the first run's exception"
