"""The daemon's work queue: coalescing, one run at a time, newest commit wins, bounded shutdown.

Time is a FakeClock: it moves only by ``clock.advance``, and "nothing happened"
is asserted once ``clock.wait_parked`` has seen the worker look at the queue at
the current fake time and go back to waiting. No test sleeps or measures real
time; real time only bounds how long a test waits for something that must happen.
"""

from __future__ import annotations

import threading

import pytest
from fake_clock import REAL_TIMEOUT, FakeClock

from gitops.clock import SystemClock
from gitops.history import Trigger
from gitops.queue import Backoff, Job, Running, WorkQueue

# Binary fractions, so that sums of fake times are exact.
QUIET = 0.25
MAX_WAIT = 2.0
WORKER = "kalpana-worker"  # the queue's thread
SHA = [f"{i:x}" * 40 for i in range(1, 16)]  # "1111...", "2222...", ...


class FakeRunner:
    """Records every run; with ``block``, a run lasts until released or cancelled (a long build)."""

    def __init__(self, clock: FakeClock, block: bool = False, honour_cancel: bool = True):
        self.clock = clock
        self.block = block
        self.honour_cancel = honour_cancel
        self.runs: list[Running] = []
        self.started_at: list[float] = []  # fake time
        self.finished: list[Running] = []
        self.release = threading.Event()
        self._started = threading.Condition()

    def __call__(self, running: Running) -> None:
        with self._started:
            self.runs.append(running)
            self.started_at.append(self.clock.now())
            self._started.notify_all()
        if self.block:
            while not self.release.wait(0.005):
                if self.honour_cancel and running.cancelled.is_set():
                    break
        self.finished.append(running)

    def wait_for_runs(self, count: int) -> list[Running]:
        with self._started:
            assert self._started.wait_for(lambda: len(self.runs) >= count, REAL_TIMEOUT), (
                f"expected {count} run(s), got {len(self.runs)}: {[r.job.describe() for r in self.runs]}")
        return self.runs

    @property
    def jobs(self) -> list[Job]:
        return [r.job for r in self.runs]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_queue(clock):
    made: list[tuple[WorkQueue, object]] = []

    def make(runner, **kwargs) -> WorkQueue:
        kwargs.setdefault("quiet", QUIET)
        kwargs.setdefault("max_wait", MAX_WAIT)
        queue = WorkQueue(runner, clock=clock, **kwargs)
        queue.start()
        made.append((queue, runner))
        return queue

    yield make
    for queue, runner in made:
        if isinstance(runner, FakeRunner):
            runner.release.set()  # so that close() returns without fake time passing
        closer = closing(queue, cancel_reason="test over", timeout=2)
        finished(closer, "closing the queue after the test")


def closing(queue: WorkQueue, **kwargs) -> threading.Thread:
    """``queue.close(**kwargs)`` on a thread of its own: a close that waits too long fails a test, never hangs it."""
    thread = threading.Thread(target=queue.close, kwargs=kwargs, name="closer", daemon=True)
    thread.start()
    return thread


def finished(thread: threading.Thread, what: str) -> None:
    thread.join(REAL_TIMEOUT)
    assert not thread.is_alive(), f"{what}: still blocked after {REAL_TIMEOUT} s (real), with the fake time standing"


def push(names, commit, trigger=Trigger.WEBHOOK, **kwargs) -> Job:
    return Job(frozenset(names), trigger, fetch=True, commit=commit, reasons=[f"push {commit[:7]}"], **kwargs)


def first_run(queue: WorkQueue, clock: FakeClock, runner: FakeRunner, job: Job) -> Running:
    """Submit ``job``, let its quiet period pass, and return its run (going on while ``runner`` blocks)."""
    queue.submit(job)
    clock.wait_parked(until=clock.now() + QUIET, thread=WORKER)
    clock.advance(QUIET)
    return runner.wait_for_runs(1)[0]


def pass_quiet_period(clock: FakeClock, since: float) -> None:
    """The worker waits out the quiet period that began at ``since``: let it pass."""
    clock.wait_parked(until=since + QUIET, thread=WORKER)
    clock.advance(since + QUIET - clock.now())


def wait_idle(clock: FakeClock, queue: WorkQueue) -> None:
    """The worker waits for new work (no deadline): nothing is pending, nothing runs."""
    clock.wait_parked(until=None, thread=WORKER)
    assert not queue.busy


# -- coalescing ------------------------------------------------------------------


def test_ten_pushes_in_a_burst_give_one_run_of_the_newest_commit(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    burst_at = clock.now()
    for i in range(10):
        queue.submit(push({"web"} if i % 2 else {"api"}, SHA[i]))
    clock.wait_parked(until=burst_at + QUIET, thread=WORKER)
    assert runner.runs == []
    clock.advance(QUIET)
    runner.wait_for_runs(1)
    wait_idle(clock, queue)  # nothing else turns up
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


def test_jobs_arriving_during_a_run_wait_and_run_once_after_it(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first_run(queue, clock, runner, Job(frozenset({"web"}), Trigger.AUTO, reasons=["file change"]))
    for name in ("api", "db", "api", "cache"):
        queue.submit(Job(frozenset({name}), Trigger.AUTO, reasons=["file change"]))
    clock.advance(MAX_WAIT * 2)  # their quiet period and max_wait pass while the first run goes on
    assert len(runner.runs) == 1, "one run at a time"
    runner.release.set()
    runner.wait_for_runs(2)  # at once: their waiting is over
    wait_idle(clock, queue)
    assert len(runner.runs) == 2
    assert runner.jobs[1].names == {"api", "db", "cache"}
    assert not runner.runs[0].cancelled.is_set()


# -- superseding ---------------------------------------------------------------------


def test_a_newer_commit_cancels_the_running_build_and_runs_next(make_queue, clock):
    superseded: list[tuple[Running, Job]] = []
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner, on_supersede=lambda running, job: superseded.append((running, job)))
    first = first_run(queue, clock, runner, push({"web"}, SHA[0]))
    pushed_at = clock.now()
    queue.submit(push({"web"}, SHA[1]))
    assert first.cancelled.is_set()
    assert first.cancel_reason == f"superseded by {SHA[1][:7]}"
    assert superseded and superseded[0][0] is first and superseded[0][1].commit == SHA[1]
    clock.wait_parked(until=pushed_at + QUIET, thread=WORKER)  # the cancelled run has ended
    assert runner.finished == [first]
    clock.advance(QUIET)
    second = runner.wait_for_runs(2)[1]
    assert second.job.commit == SHA[1]
    assert second.job.names == {"web"}
    assert not second.cancelled.is_set()
    runner.release.set()
    wait_idle(clock, queue)
    assert len(runner.runs) == 2


@pytest.mark.parametrize("running_names,new_names", [
    ({"web"}, {"web", "api"}),
    ({"web", "api"}, {"api", "web"}),
    (None, None),
])
def test_a_push_covering_the_running_build_supersedes_it(make_queue, clock, running_names, new_names):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first = first_run(queue, clock, runner, Job(None if running_names is None else frozenset(running_names),
                                                Trigger.WEBHOOK, fetch=True, commit=SHA[0]))
    queue.submit(Job(None if new_names is None else frozenset(new_names), Trigger.WEBHOOK, fetch=True,
                     commit=SHA[1]))
    assert first.cancelled.is_set()
    assert first.cancel_reason == f"superseded by {SHA[1][:7]}"


def test_a_cancelled_build_does_not_lose_the_work_of_the_deployments_the_push_did_not_cover(make_queue, clock):
    # The run builds web and api (say: the daemon's start, or a file change of api merged with a
    # push to web). A push for web alone may cancel it, but api must still be applied afterwards.
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first = first_run(queue, clock, runner, push({"web", "api"}, SHA[0]))
    pushed_at = clock.now()
    queue.submit(push({"web"}, SHA[1]))
    if first.cancelled.is_set():
        pass_quiet_period(clock, pushed_at)
        second = runner.wait_for_runs(2)[1]
        assert second.job.names == {"web", "api"}, (
            f"the run of web+api was cancelled by a push of web alone, and only {sorted(second.job.names)} "
            "runs next: api's pending work is lost")
        assert second.job.commit == SHA[1]
    runner.release.set()


def test_a_cancelled_start_run_of_everything_is_not_lost(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first = first_run(queue, clock, runner, Job(None, Trigger.AUTO, prune=True, reasons=["daemon start"]))
    pushed_at = clock.now()
    queue.submit(push({"web"}, SHA[1]))
    if first.cancelled.is_set():
        pass_quiet_period(clock, pushed_at)
        second = runner.wait_for_runs(2)[1]
        assert second.job.names is None and second.job.prune, (
            "the daemon's start run (every deployment, prune) was cancelled by a push of one deployment "
            f"and never runs again: next run is {second.job.describe()}")
    runner.release.set()


@pytest.mark.parametrize("new_job", [
    pytest.param(push({"api"}, SHA[1]), id="another-deployment"),
    pytest.param(push({"web"}, SHA[0]), id="same-commit"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, reasons=["file change"]), id="file-change"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, commit=SHA[1]), id="commit-without-fetch"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, fetch=True), id="fetch-without-commit"),
])
def test_what_does_not_supersede_queues_behind(make_queue, clock, new_job):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first = first_run(queue, clock, runner, push({"web"}, SHA[0]))
    queue.submit(new_job)
    clock.advance(QUIET * 2)  # its quiet period passes while the first run goes on
    assert not first.cancelled.is_set()
    assert first.cancel_reason is None
    assert len(runner.runs) == 1
    runner.release.set()
    runner.wait_for_runs(2)
    wait_idle(clock, queue)
    assert runner.jobs[1].names == new_job.names
    assert runner.finished[0] is first


def test_a_second_newer_push_does_not_cancel_twice(make_queue, clock):
    superseded = []
    runner = FakeRunner(clock, block=True, honour_cancel=False)  # a build slow to react to its cancellation
    queue = make_queue(runner, on_supersede=lambda running, job: superseded.append(job.commit))
    first = first_run(queue, clock, runner, push({"web"}, SHA[0]))
    pushed_at = clock.now()
    queue.submit(push({"web"}, SHA[1]))
    queue.submit(push({"web"}, SHA[2]))
    assert first.cancel_reason == f"superseded by {SHA[1][:7]}"
    assert superseded == [SHA[1]]
    runner.release.set()
    pass_quiet_period(clock, pushed_at)
    second = runner.wait_for_runs(2)[1]
    assert second.job.commit == SHA[2]
    wait_idle(clock, queue)
    assert len(runner.runs) == 2


# -- timing ----------------------------------------------------------------------


def test_the_worker_waits_for_a_quiet_period(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    first = clock.now()
    queue.submit(push({"web"}, SHA[0]))
    clock.wait_parked(until=first + QUIET, thread=WORKER)
    clock.advance(QUIET / 2)
    clock.wait_parked(until=first + QUIET, thread=WORKER)  # half-way: still waiting
    last = clock.now()
    queue.submit(push({"web"}, SHA[1]))  # restarts the quiet period
    clock.wait_parked(until=last + QUIET, thread=WORKER)
    clock.advance(QUIET / 2)  # the first submit's quiet period is over, the second's is not
    clock.wait_parked(until=last + QUIET, thread=WORKER)
    assert runner.runs == []
    clock.advance(QUIET / 2)
    runner.wait_for_runs(1)
    assert runner.started_at == [last + QUIET]
    assert runner.jobs[0].commit == SHA[1]


def test_max_wait_bounds_the_delay_under_a_steady_stream(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner, max_wait=1.0)
    step = QUIET / 2  # a submit every step: never quiet for QUIET
    first = clock.now()
    for i in range(int(1.0 / step)):
        queue.submit(push({"web"}, SHA[i]))
        clock.wait_parked(until=min(clock.now() + QUIET, first + 1.0), thread=WORKER)
        assert runner.runs == [], f"a run started {clock.now() - first} s after the first submit (max_wait 1.0)"
        clock.advance(step)
    runner.wait_for_runs(1)
    assert runner.started_at == [first + 1.0]
    assert runner.jobs[0].commit == SHA[int(1.0 / step) - 1]


def test_the_default_clock_is_the_system_clock():
    # The daemon builds its queue without a clock: the real one must drive it.
    ran = threading.Event()
    queue = WorkQueue(lambda running: ran.set(), quiet=0.01, max_wait=0.02)
    queue.start()
    try:
        queue.submit(push({"web"}, SHA[0]))
        assert ran.wait(REAL_TIMEOUT)
    finally:
        queue.close(timeout=REAL_TIMEOUT)


def test_system_clock_waits_on_the_condition():
    clock = SystemClock()
    condition = threading.Condition()
    before = clock.now()
    with condition:
        assert clock.wait(condition, 0) is False  # no notification: timed out
    assert clock.now() >= before


# -- shutdown ---------------------------------------------------------------------


def test_close_with_a_reason_cancels_the_running_job_without_waiting_out_the_timeout(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    running = first_run(queue, clock, runner, push({"web"}, SHA[0]))
    queue.submit(push({"api"}, SHA[1]))  # waiting behind: dropped by close
    closed_at = clock.now()
    finished(closing(queue, cancel_reason="the daemon is stopping", timeout=5), "close with a reason")
    assert clock.now() == closed_at  # no fake time passed: close did not wait for its timeout
    assert running.cancelled.is_set()
    assert running.cancel_reason == "the daemon is stopping"
    assert runner.finished == [running]
    assert not queue.busy
    queue.submit(push({"web"}, SHA[2]))  # closed: ignored
    assert not queue.busy
    clock.advance(MAX_WAIT)
    assert len(runner.runs) == 1


def test_close_without_a_reason_lets_the_running_job_finish(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    running = first_run(queue, clock, runner, push({"web"}, SHA[0]))
    closed_at = clock.now()
    closer = closing(queue, timeout=5)
    clock.wait_parked(until=closed_at + 5, thread="closer")  # close waits for the run, up to its timeout
    assert closer.is_alive() and runner.finished == []
    runner.release.set()
    finished(closer, "close after the run finished")
    assert clock.now() == closed_at
    assert not running.cancelled.is_set()
    assert runner.finished == [running]


def test_close_gives_up_on_a_stuck_job_after_its_timeout(make_queue, clock):
    runner = FakeRunner(clock, block=True, honour_cancel=False)
    queue = make_queue(runner)
    running = first_run(queue, clock, runner, push({"web"}, SHA[0]))
    closed_at = clock.now()
    closer = closing(queue, cancel_reason="stopping", timeout=0.5)
    clock.wait_parked(until=closed_at + 0.5, thread="closer")
    assert running.cancelled.is_set()  # asked to stop; this build does not listen
    clock.advance(0.25)
    clock.wait_parked(until=closed_at + 0.5, thread="closer")  # half its timeout: still waiting
    assert closer.is_alive()
    clock.advance(0.25)
    finished(closer, "close of a stuck job after its timeout")
    assert runner.finished == []  # it gave up on the run, which goes on
    runner.release.set()


def test_close_of_an_idle_queue_returns_at_once(make_queue, clock):
    queue = make_queue(FakeRunner(clock))
    wait_idle(clock, queue)
    closed_at = clock.now()
    finished(closing(queue, cancel_reason="stopping", timeout=5), "close of an idle queue")
    assert clock.now() == closed_at


def test_close_drops_work_still_waiting_for_its_quiet_period(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    queue.submit(push({"web"}, SHA[0]))
    clock.wait_parked(until=clock.now() + QUIET, thread=WORKER)
    finished(closing(queue, cancel_reason="stopping", timeout=2), "close while work waits")
    assert not queue.busy
    clock.advance(QUIET * 2)  # the quiet period passes with the worker gone
    assert runner.runs == []


def test_a_runner_that_raises_does_not_kill_the_worker(make_queue, clock):
    calls = []
    errors: list[tuple[Job, Exception]] = []

    def runner(running: Running) -> None:
        calls.append(running.job)
        if len(calls) == 1:
            raise RuntimeError("boom")

    queue = make_queue(runner, on_error=lambda job, exc: errors.append((job, exc)))
    queue.submit(push({"web"}, SHA[0]))
    pass_quiet_period(clock, clock.now())
    wait_idle(clock, queue)
    assert len(calls) == 1
    assert [(job.commit, str(exc)) for job, exc in errors] == [(SHA[0], "boom")]
    queue.submit(push({"web"}, SHA[1]))
    pass_quiet_period(clock, clock.now())
    wait_idle(clock, queue)
    assert len(calls) == 2, "the worker thread died with the first run's exception"
    assert len(errors) == 1


# -- deliveries and retries ------------------------------------------------------------


def test_merge_carries_the_deliveries_of_both():
    a = push({"web"}, SHA[0], deliveries=frozenset({"d1"}))
    b = push({"api"}, SHA[1], deliveries=frozenset({"d2", "d3"}))
    c = Job(None, Trigger.AUTO, reasons=["file change"])
    assert a.merge(b).merge(c).deliveries == {"d1", "d2", "d3"}
    assert c.merge(c).deliveries == frozenset()


def test_a_superseded_run_hands_its_deliveries_to_the_next_run(make_queue, clock):
    # The cancelled run's push was not handled: its delivery must be settled by the run that does its work.
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first_run(queue, clock, runner, push({"web"}, SHA[0], deliveries=frozenset({"d1"})))
    pushed_at = clock.now()
    queue.submit(push({"web"}, SHA[1], deliveries=frozenset({"d2"})))
    pass_quiet_period(clock, pushed_at)
    second = runner.wait_for_runs(2)[1]
    assert second.job.deliveries == {"d1", "d2"}
    runner.release.set()


@pytest.mark.parametrize("failures,delays", [
    (1, [5]),
    (4, [5, 10, 20, 40]),
    (9, [5, 10, 20, 40, 80, 160, 300, 300, 300]),
])
def test_backoff_doubles_from_5_s_to_5_minutes(failures, delays):
    backoff = Backoff()
    assert [backoff.next() for _ in range(failures)] == delays


def test_backoff_starts_over_after_a_reset():
    backoff = Backoff(first=1, cap=8)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 8, 8]
    backoff.reset()
    assert backoff.next() == 1
    for _ in range(200):  # no overflow, however long it fails
        assert backoff.next() <= 8


def test_a_retry_runs_after_its_delay_on_the_queues_clock(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    failed_at = clock.now()
    queue.submit_later(push({"web"}, SHA[0]), 5)
    clock.wait_parked(until=failed_at + 5, thread=WORKER)
    assert not queue.busy, "a retry waiting for its time must not hold up drift checks"
    assert queue.retry_waiting is not None
    clock.advance(4)
    clock.wait_parked(until=failed_at + 5, thread=WORKER)  # not yet
    assert runner.runs == []
    clock.advance(1)
    pass_quiet_period(clock, failed_at + 5)  # then it queues like any job
    runner.wait_for_runs(1)
    assert runner.started_at == [failed_at + 5 + QUIET]
    assert runner.jobs[0].commit == SHA[0]
    assert queue.retry_waiting is None
    wait_idle(clock, queue)
    assert len(runner.runs) == 1


def test_two_retries_merge_and_wait_for_the_later_time(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    start = clock.now()
    queue.submit_later(push({"web"}, SHA[0]), 10)
    queue.submit_later(Job(frozenset({"api"}), Trigger.AUTO, reasons=["file change"]), 5)
    clock.wait_parked(until=start + 10, thread=WORKER)
    clock.advance(10)
    pass_quiet_period(clock, start + 10)
    runner.wait_for_runs(1)
    wait_idle(clock, queue)
    assert len(runner.runs) == 1
    assert runner.jobs[0].names == {"web", "api"}


def test_new_work_does_not_wait_for_a_retry(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    start = clock.now()
    queue.submit_later(push({"web"}, SHA[0]), 60)
    queue.submit(Job(frozenset({"api"}), Trigger.AUTO, reasons=["file change"]))
    clock.wait_parked(until=start + QUIET, thread=WORKER)  # the earlier of the two times
    clock.advance(QUIET)
    runner.wait_for_runs(1)
    assert runner.jobs[0].names == {"api"}
    clock.wait_parked(until=start + 60, thread=WORKER)  # the retry still waits for its own time
    clock.advance(60 - QUIET)
    pass_quiet_period(clock, start + 60)
    runner.wait_for_runs(2)
    assert runner.jobs[1].names == {"web"}


def test_a_retry_due_during_a_run_waits_for_it(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner)
    first_run(queue, clock, runner, Job(frozenset({"api"}), Trigger.AUTO, reasons=["file change"]))
    queue.submit_later(push({"web"}, SHA[0]), 5)
    clock.advance(10)  # due while the first run goes on: one run at a time
    assert len(runner.runs) == 1
    released_at = clock.now()
    runner.release.set()
    pass_quiet_period(clock, released_at)
    runner.wait_for_runs(2)
    assert runner.jobs[1].names == {"web"}


def test_close_drops_a_waiting_retry(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner)
    start = clock.now()
    queue.submit_later(push({"web"}, SHA[0]), 5)
    clock.wait_parked(until=start + 5, thread=WORKER)
    finished(closing(queue, cancel_reason="stopping", timeout=2), "close while a retry waits")
    assert queue.retry_waiting is None
    queue.submit_later(push({"web"}, SHA[1]), 1)  # closed: ignored
    assert queue.retry_waiting is None
    clock.advance(10)
    assert runner.runs == []


# -- at once (the daemon's queue: pushes and API requests) ----------------------------------------

AT_ONCE = frozenset({Trigger.WEBHOOK, Trigger.MANUAL})


def test_a_push_that_finds_no_run_starts_at_once_and_takes_waiting_work_along(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner, at_once=AT_ONCE)
    wait_idle(clock, queue)
    queue.submit(Job(frozenset({"api"}), Trigger.AUTO, reasons=["file change"]))
    clock.wait_parked(until=clock.now() + QUIET, thread=WORKER)  # a file change waits for its quiet period
    assert runner.runs == []
    submitted = clock.now()
    queue.submit(push({"web"}, SHA[0]))
    runner.wait_for_runs(1)
    assert runner.started_at == [submitted], "no quiet period for a push that finds no run in progress"
    assert runner.jobs[0].names == {"api", "web"} and runner.jobs[0].commit == SHA[0]
    wait_idle(clock, queue)
    assert len(runner.runs) == 1


def test_a_file_change_keeps_its_quiet_period_where_pushes_start_at_once(make_queue, clock):
    runner = FakeRunner(clock)
    queue = make_queue(runner, at_once=AT_ONCE)
    saved = clock.now()
    queue.submit(Job(frozenset({"web"}), Trigger.AUTO, reasons=["file change"]))
    pass_quiet_period(clock, saved)
    runner.wait_for_runs(1)
    assert runner.started_at == [saved + QUIET]


def test_what_arrives_during_a_run_still_waits_and_coalesces(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner, at_once=AT_ONCE)
    queue.submit(Job(frozenset({"web"}), Trigger.MANUAL, reasons=["API deploy"]))
    runner.wait_for_runs(1)
    arrived = clock.now()
    for name in ("api", "db", "api"):
        queue.submit(Job(frozenset({name}), Trigger.MANUAL, reasons=["API deploy"]))
    runner.release.set()  # the first run ends; the others wait out their quiet period, as one job
    clock.wait_parked(until=arrived + QUIET, thread=WORKER)
    assert len(runner.runs) == 1
    clock.advance(QUIET)
    runner.wait_for_runs(2)
    wait_idle(clock, queue)
    assert len(runner.runs) == 2
    assert runner.jobs[1].names == {"api", "db"}


def test_a_burst_of_pushes_gives_one_superseded_run_and_one_of_the_newest(make_queue, clock):
    runner = FakeRunner(clock, block=True)
    queue = make_queue(runner, at_once=AT_ONCE)
    burst_at = clock.now()
    for i in range(10):
        queue.submit(push({"web"}, SHA[i]))
        if i == 0:
            runner.wait_for_runs(1)  # at once, before the second push
    first = runner.runs[0]
    assert first.job.commit == SHA[0] and first.cancel_reason == f"superseded by {SHA[1][:7]}"
    pass_quiet_period(clock, burst_at)
    second = runner.wait_for_runs(2)[1]
    assert second.job.commit == SHA[9]
    runner.release.set()
    wait_idle(clock, queue)
    assert len(runner.runs) == 2
