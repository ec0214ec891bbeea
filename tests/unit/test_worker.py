"""The daemon's worker, both ends: relaying a real child's lines, cancelling it, the child's crash path,
how a run is judged and what follows it, and a child whose daemon died.

The parent side is driven with real child processes that speak the protocol
(small Python scripts standing in for `python -m gitops.worker`), so pipes,
signals and process groups are the real thing; no Docker is needed.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gitops import worker as worker_module
from gitops import worker_protocol as wire
from gitops.build import BuildStatus, Trigger
from gitops.events import DaemonError, Event, Events, JobFinished, JobStarted, LogLine, PhaseEntered
from gitops.build_logs import HistoryError
from gitops.history import History
from gitops.queue import Job, Running
from gitops.worker import FollowUp, Outcome, RunReport, Verdict, follow_up, judge

REPO_ROOT = Path(__file__).resolve().parents[2]

JOB = Job(frozenset({"web"}), Trigger.WEBHOOK, fetch=True, commit="b" * 40, reasons=["push bbbbbbb"])


def child_script(monkeypatch, body: str) -> None:
    """Make the worker start ``python -c body`` instead of the real worker module."""
    monkeypatch.setattr(wire, "child_command", lambda config, python=sys.executable: [python, "-c", body])


_workers: list[worker_module.Worker] = []


@pytest.fixture(autouse=True)
def _close_workers():
    """Each run leaves a child waiting for the next job: kill it after the test."""
    yield
    while _workers:
        _workers.pop().close()


def make_worker(tmp_path, *listeners, config: Path | None = None) -> tuple[worker_module.Worker, list[Event], History]:
    history = History(tmp_path / "state")
    events = Events()
    seen: list[Event] = []
    events.subscribe(seen.append)
    for listener in listeners:
        events.subscribe(listener)
    worker = worker_module.Worker(config, history, events)
    _workers.append(worker)
    return worker, seen, history


def test_the_child_gets_the_job_and_its_events_are_relayed_in_order(tmp_path, monkeypatch):
    child_script(monkeypatch, textwrap.dedent("""
        import sys
        from gitops import worker_protocol as wire
        from gitops.events import LogLine, PhaseEntered
        job = wire.decode_job(sys.stdin.readline())
        print("a stray line that is not protocol")
        sys.stdout.write(wire.encode_event(PhaseEntered("web", "building for " + job.commit[:7], build_id="b1")))
        sys.stdout.write(wire.encode_event(LogLine("web", "step 1", build_id="b1")))
        sys.stdout.write(wire.encode_result({"ok": True, "errors": [], "results": [{"name": "web"}]}))
    """))
    worker, seen, _ = make_worker(tmp_path)
    assert worker.run(Running(JOB)) == Verdict(Outcome.DONE)
    assert [type(e) for e in seen] == [JobStarted, PhaseEntered, LogLine, JobFinished]
    assert seen[1].message == "building for bbbbbbb"
    done = seen[-1]
    assert done.ok and done.changed == 1 and done.cancelled is None
    assert " done in " in done.message


def test_a_failing_child_reports_its_last_error_line(tmp_path, monkeypatch):
    child_script(monkeypatch, "import sys; sys.stderr.write('warming up\\nerror: cannot reach Docker at x\\n'); "
                              "sys.exit(1)")
    worker, seen, _ = make_worker(tmp_path)
    assert worker.run(Running(JOB)) == Verdict(Outcome.RETRY)  # no result line: it failed outside any build
    done = seen[-1]
    assert isinstance(done, JobFinished) and not done.ok
    assert " failed in " in done.message and done.message.endswith(": error: cannot reach Docker at x")


def test_a_cancel_sends_sigterm_and_the_cancelled_builds_say_why(tmp_path, monkeypatch):
    worker, seen, history = make_worker(tmp_path)
    build = history.new_build("web", Trigger.WEBHOOK, "rebuild", status=BuildStatus.BUILDING)
    # The child records the build CANCELLED on SIGTERM, as the engine does on an interrupt.
    child_script(monkeypatch, textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        from gitops import worker_protocol as wire
        from gitops.build import BuildStatus
        from gitops.events import PhaseEntered
        from gitops.history import History
        def stop(signum, frame):
            History(Path({str(history.state_dir)!r})).finish({build.id!r}, BuildStatus.CANCELLED,
                                                             error_message="cancelled: interrupted")
            sys.exit(130)
        signal.signal(signal.SIGTERM, stop)
        sys.stdin.readline()
        sys.stdout.write(wire.encode_event(PhaseEntered("web", "building", build_id={build.id!r})))
        sys.stdout.flush()
        time.sleep(60)
    """))
    running = Running(JOB)

    def cancel_once_building(event: Event) -> None:
        if isinstance(event, PhaseEntered):
            running.cancel("superseded by ccccccc")

    worker.events.subscribe(cancel_once_building)
    finished = threading.Event()
    verdicts = []
    thread = threading.Thread(target=lambda: (verdicts.append(worker.run(running)), finished.set()), daemon=True)
    thread.start()
    assert finished.wait(30), "the cancelled child was not stopped"
    assert verdicts == [Verdict(Outcome.CANCELLED)]
    done = seen[-1]
    assert isinstance(done, JobFinished) and done.cancelled == "superseded by ccccccc" and not done.ok
    record = history.get(build.id)
    assert record.status is BuildStatus.CANCELLED
    assert record.error_message == "superseded by ccccccc"


def test_a_cancel_right_after_the_child_made_a_record_still_says_why_on_it(tmp_path, monkeypatch):
    # The child makes its record and is cancelled before any event names it: the daemon finds it by pid.
    worker, seen, history = make_worker(tmp_path)
    older = history.new_build("web", Trigger.WEBHOOK, "rebuild", status=BuildStatus.CANCELLED,
                              error_message="cancelled: interrupted by Ctrl-C or SIGTERM")
    child_script(monkeypatch, textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        from gitops.build import BuildStatus, Trigger
        from gitops.history import History
        history = History(Path({str(history.state_dir)!r}))
        sys.stdin.readline()
        build = history.new_build("web", Trigger.WEBHOOK, "rebuild", status=BuildStatus.BUILDING)
        def stop(signum, frame):
            history.finish(build.id, BuildStatus.CANCELLED, error_message="cancelled: interrupted by Ctrl-C or SIGTERM")
            sys.exit(130)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
    """))
    running = Running(JOB)
    finished = threading.Event()
    threading.Thread(target=lambda: (worker.run(running), finished.set()), daemon=True).start()
    deadline = time.monotonic() + 30
    while len(history.list("web")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # its SIGTERM handler is in place
    running.cancel("superseded by ccccccc")
    assert finished.wait(30), "the cancelled child was not stopped"

    made = history.list("web")[0]
    assert made.id != older.id and made.pid == worker.last_pid
    assert (made.status, made.error_message) == (BuildStatus.CANCELLED, "superseded by ccccccc")
    assert history.get(older.id).error_message == "cancelled: interrupted by Ctrl-C or SIGTERM", "not another run's"


def test_a_history_that_fails_while_a_cancel_is_recorded_is_reported_not_raised(tmp_path, monkeypatch):
    worker, seen, history = make_worker(tmp_path)
    child_script(monkeypatch, textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gitops.build import BuildStatus, Trigger
        from gitops.history import History
        sys.stdin.readline()
        History(Path({str(history.state_dir)!r})).new_build("web", Trigger.WEBHOOK, "rebuild",
                                                             status=BuildStatus.BUILDING)
        time.sleep(60)
    """))

    def locked(*args, **kwargs):
        raise HistoryError("the history is locked by another process")

    running = Running(JOB)
    verdicts = []
    thread = threading.Thread(target=lambda: verdicts.append(worker.run(running)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not history.list("web") and time.monotonic() < deadline:
        time.sleep(0.02)
    monkeypatch.setattr(history, "list", locked)
    running.cancel("superseded by ccccccc")
    thread.join(30)
    assert verdicts == [Verdict(Outcome.CANCELLED)], "the worker thread must not die on it"
    [error] = [e for e in seen if isinstance(e, DaemonError)]
    assert error.message == ("could not record why the cancelled run's builds ended: "
                             "the history is locked by another process")
    assert seen[-1].cancelled == "superseded by ccccccc"


def test_a_cancelled_child_that_does_not_stop_is_killed_after_the_grace_and_the_daemon_says_so(tmp_path,
                                                                                                 monkeypatch):
    worker, seen, history = make_worker(tmp_path)
    child_script(monkeypatch, textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        from gitops import worker_protocol as wire
        from gitops.build import BuildStatus, Trigger
        from gitops.events import PhaseEntered
        from gitops.history import History
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a run stuck on its way out
        sys.stdin.readline()
        History(Path({str(history.state_dir)!r})).new_build("web", Trigger.WEBHOOK, "rebuild",
                                                             status=BuildStatus.BUILDING)
        sys.stdout.write(wire.encode_event(PhaseEntered("web", "fetching")))
        sys.stdout.flush()
        time.sleep(60)
    """))
    monkeypatch.setattr(worker_module, "CANCEL_GRACE", 0.5)
    running = Running(JOB)
    worker.events.subscribe(lambda event: isinstance(event, PhaseEntered) and running.cancel("superseded by c"))
    finished = threading.Event()
    threading.Thread(target=lambda: (worker.run(running), finished.set()), daemon=True).start()
    assert finished.wait(30), "the stuck child was not killed"
    [error] = [e for e in seen if isinstance(e, DaemonError)]
    assert error.message.startswith(f"the cancelled run (pid {worker.last_pid}) did not stop within 0.5 s: killed")
    assert seen[-1].cancelled == "superseded by c"
    # Nothing else would finish the record it left BUILDING before the next run: the daemon does, saying why.
    [left] = history.list("web")
    assert (left.status, left.error_message) == (BuildStatus.CANCELLED, "superseded by c")


def test_when_relaying_fails_the_child_is_killed_not_left_blocked(tmp_path, monkeypatch):
    """A child nobody reads any more would block on a full pipe holding the apply lock."""
    pid_file = tmp_path / "child.pid"
    child_script(monkeypatch, textwrap.dedent(f"""
        import os, sys
        from gitops import worker_protocol as wire
        from gitops.events import LogLine
        if not sys.stdin.readline():
            sys.exit(0)  # the child started for a next job that never came
        open({str(pid_file)!r}, "w").write(str(os.getpid()))  # the one that runs the job
        while True:
            sys.stdout.write(wire.encode_event(LogLine("web", "x" * 200)))
    """))

    def broken_listener(event: Event) -> None:
        if isinstance(event, LogLine):
            raise RuntimeError("the log sink is gone")

    worker, _, _ = make_worker(tmp_path, broken_listener)
    with pytest.raises(RuntimeError, match="the log sink is gone"):
        worker.run(Running(JOB))
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


# -- the warm child: started before its job, one job each, still killed on cancel ------------------

# A stand-in worker that says when it started and when its job arrived; a job with the reason "sleep"
# runs until it is killed (it has no SIGTERM handler: the signal ends it).
WARM_CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from gitops import worker_protocol as wire
    from gitops.events import LogLine
    started = time.time()
    Path({ready!r}, str(os.getpid())).write_text(str(started))  # done "importing": waiting for a job
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    job = wire.decode_job(line)
    told = dict(pid=os.getpid(), started=started, job_at=time.time())
    sys.stdout.write(wire.encode_event(LogLine("web", json.dumps(told))))
    sys.stdout.flush()
    if "sleep" in job.reasons:
        time.sleep(60)
    sys.stdout.write(wire.encode_result({{"ok": True, "errors": [], "results": []}}))
""")


def warm_child(monkeypatch, tmp_path) -> Path:
    ready = tmp_path / "ready"
    ready.mkdir()
    child_script(monkeypatch, WARM_CHILD.format(ready=str(ready)))
    return ready


def told(seen: list[Event]) -> dict:
    import json

    return json.loads([e for e in seen if isinstance(e, LogLine)][-1].message)


def waiting_child(worker: worker_module.Worker, ready: Path) -> int:
    """The pid of the child started for the next job, once it is ready for it."""
    pid = worker.warm_pid
    assert pid is not None, "no child was started for the next job"
    deadline = time.monotonic() + 30
    while not (ready / str(pid)).exists():
        assert time.monotonic() < deadline, "the next job's child never got ready"
        time.sleep(0.02)
    return pid


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True  # exited and reaped
    return False


def test_a_job_runs_in_a_child_started_before_it_came_and_each_child_runs_one_job(tmp_path, monkeypatch):
    ready = warm_child(monkeypatch, tmp_path)
    worker, seen, _ = make_worker(tmp_path)
    assert worker.run(Running(JOB)) == Verdict(Outcome.DONE)  # the very first one starts with its job
    first = told(seen)
    spare = waiting_child(worker, ready)
    assert spare != first["pid"] and gone(first["pid"]), "a child runs one job, then exits"
    submitted = time.time()
    assert worker.run(Running(JOB)) == Verdict(Outcome.DONE)
    second = told(seen)
    assert second["pid"] == spare == worker.last_pid
    assert second["started"] < submitted <= second["job_at"], "the child was started before the job arrived"
    assert gone(spare)
    assert worker.warm_pid not in (None, spare), "the next job's child is started right after the handout"


def test_a_cancel_still_kills_the_warm_child_that_runs_the_job(tmp_path, monkeypatch):
    ready = warm_child(monkeypatch, tmp_path)
    worker, seen, _ = make_worker(tmp_path)
    worker.run(Running(JOB))
    spare = waiting_child(worker, ready)
    running = Running(Job(frozenset({"web"}), Trigger.AUTO, reasons=["sleep"]))

    def cancel_once_it_runs(event: Event) -> None:
        if isinstance(event, LogLine):
            running.cancel("superseded by ccccccc")

    worker.events.subscribe(cancel_once_it_runs)
    finished = threading.Event()
    verdicts = []
    threading.Thread(target=lambda: (verdicts.append(worker.run(running)), finished.set()), daemon=True).start()
    assert finished.wait(30), "the cancelled child was not stopped"
    assert told(seen)["pid"] == spare
    assert verdicts == [Verdict(Outcome.CANCELLED)]
    assert gone(spare)
    assert seen[-1].cancelled == "superseded by ccccccc"


def test_a_warm_child_that_died_while_waiting_is_replaced(tmp_path, monkeypatch):
    ready = warm_child(monkeypatch, tmp_path)
    worker, seen, _ = make_worker(tmp_path)
    worker.run(Running(JOB))
    spare = waiting_child(worker, ready)
    os.kill(spare, signal.SIGKILL)
    _wait_gone(spare)  # dead (a zombie until the worker reaps it)
    assert worker.run(Running(JOB)) == Verdict(Outcome.DONE)
    assert told(seen)["pid"] not in (spare, None)
    assert gone(spare)


def test_a_warm_child_that_read_settings_since_changed_is_replaced(tmp_path, monkeypatch):
    ready = warm_child(monkeypatch, tmp_path)
    config = tmp_path / "kalpana.yaml"
    config.write_text("debounce: 0.2\n")
    worker, seen, _ = make_worker(tmp_path, config=config)
    worker.run(Running(JOB))
    unchanged = waiting_child(worker, ready)
    worker.run(Running(JOB))
    assert told(seen)["pid"] == unchanged, "settings that did not change keep the warm child"
    stale = waiting_child(worker, ready)
    config.write_text("debounce: 0.5\n")
    submitted = time.time()
    assert worker.run(Running(JOB)) == Verdict(Outcome.DONE)
    fresh = told(seen)
    assert fresh["pid"] != stale and fresh["started"] >= submitted
    assert gone(stale)
    (tmp_path / ".env").write_text("KALPANA_DEBOUNCE=0.3\n")  # the .env beside kalpana.yaml counts too
    stale = waiting_child(worker, ready)
    worker.run(Running(JOB))
    assert told(seen)["pid"] != stale and gone(stale)


def test_close_kills_the_waiting_child_and_starts_no_other(tmp_path, monkeypatch):
    ready = warm_child(monkeypatch, tmp_path)
    worker, _, _ = make_worker(tmp_path)
    worker.run(Running(JOB))
    spare = waiting_child(worker, ready)
    worker.close()
    assert gone(spare) and worker.warm_pid is None
    worker._warm.prepare()  # as a run would after its handout
    assert worker.warm_pid is None


def test_an_unexpected_error_in_the_child_is_one_line_with_the_traceback_in_a_file(monkeypatch, capsys):
    def boom(job, config):
        raise TypeError("boom")

    monkeypatch.setattr(worker_module, "_run", boom)
    monkeypatch.setattr(worker_module.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    monkeypatch.setattr(worker_module.atexit, "register", lambda *args: None)
    monkeypatch.setattr(worker_module, "_die_with_parent", lambda: True)  # no prctl on pytest itself
    monkeypatch.setattr(sys, "stdin", io.StringIO(wire.encode_job(JOB)))
    assert worker_module.child_main([]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: unexpected error: TypeError: boom (traceback written to ")
    path = err.split("traceback written to ")[1].split(";")[0]
    with open(path) as handle:
        assert 'raise TypeError("boom")' in handle.read()


# -- how a run is judged (a pure function: one row per case) --------------------------------


@pytest.mark.parametrize("report,verdict", [
    pytest.param(RunReport(0, finished=True), Verdict(Outcome.DONE), id="success"),
    pytest.param(RunReport(130, cancelled=True), Verdict(Outcome.CANCELLED), id="cancelled-by-the-daemon"),
    pytest.param(RunReport(-9, cancelled=True), Verdict(Outcome.CANCELLED), id="cancel-escalated-to-sigkill"),
    pytest.param(RunReport(0, cancelled=True, finished=True), Verdict(Outcome.CANCELLED), id="cancel-came-late"),
    pytest.param(RunReport(-9), Verdict(Outcome.KILLED, signal=9), id="sigkill-from-outside"),
    pytest.param(RunReport(-15), Verdict(Outcome.KILLED, signal=15), id="sigterm-before-its-handler"),
    pytest.param(RunReport(130), Verdict(Outcome.FAILED), id="an-operator-stopped-it-cleanly"),
    pytest.param(RunReport(1), Verdict(Outcome.RETRY), id="docker-unreachable-before-the-plan"),
    pytest.param(RunReport(1), Verdict(Outcome.RETRY), id="lock-timeout"),
    pytest.param(RunReport(70), Verdict(Outcome.RETRY), id="crash"),
    pytest.param(RunReport(None), Verdict(Outcome.RETRY), id="child-never-started"),
    pytest.param(RunReport(1, finished=True), Verdict(Outcome.FAILED), id="file-errors-only"),
    pytest.param(RunReport(1, finished=True, failed_steps=frozenset({"web"}), failed_builds=frozenset({"web"})),
                 Verdict(Outcome.FAILED), id="its-own-build-failed"),
    pytest.param(RunReport(1, finished=True, failed_steps=frozenset({"web"})),
                 Verdict(Outcome.RETRY, retry=frozenset({"web"})), id="step-failed-without-a-build-record"),
    pytest.param(RunReport(1, finished=True, failed_steps=frozenset({"web", "api"}), failed_builds=frozenset({"web"})),
                 Verdict(Outcome.RETRY, retry=frozenset({"api"})), id="retry-only-what-failed-outside-its-build"),
    pytest.param(RunReport(1, finished=True, failed_steps=frozenset({"web"}), failed_builds=frozenset({"web"}),
                           transient_steps=frozenset({"web"})),
                 Verdict(Outcome.RETRY, retry=frozenset({"web"})), id="its-build-failed-because-docker-went-away"),
    pytest.param(RunReport(1, finished=True, unfetched=frozenset({"web"})),
                 Verdict(Outcome.RETRY, retry=frozenset({"web"})), id="its-git-fetch-failed"),
    pytest.param(RunReport(1, finished=True, failed_steps=frozenset({"api"}), failed_builds=frozenset({"api"}),
                           unfetched=frozenset({"web"})),
                 Verdict(Outcome.RETRY, retry=frozenset({"web"})), id="fetch-failed-beside-a-failed-build"),
    pytest.param(RunReport(1, finished=True, unfetched=frozenset({"config repository"})),
                 Verdict(Outcome.RETRY), id="the-config-repository-fetch-failed"),
])
def test_judge(report, verdict):
    assert judge(report) == verdict


PUSH = Job(frozenset({"web", "api"}), Trigger.WEBHOOK, fetch=True, commit="c" * 40, reasons=["push ccccccc"],
           deliveries=frozenset({"d1"}))
START = Job(None, Trigger.AUTO, config=True, prune=True, reasons=["daemon start"])
HEAL = Job(frozenset({"web"}), Trigger.AUTO, reasons=["drift"], heal=True)


@pytest.mark.parametrize("job,verdict,expected", [
    pytest.param(PUSH, Verdict(Outcome.DONE), FollowUp(reset_backoff=True), id="done"),
    pytest.param(HEAL, Verdict(Outcome.DONE), FollowUp(), id="a-heal-proves-nothing-about-what-fails"),
    pytest.param(PUSH, Verdict(Outcome.CANCELLED), FollowUp(), id="cancelled"),
    pytest.param(PUSH, Verdict(Outcome.FAILED), FollowUp(), id="failed-on-its-own-build"),
    pytest.param(PUSH, Verdict(Outcome.RETRY), FollowUp(later=Job(
        frozenset({"web", "api"}), Trigger.WEBHOOK, fetch=True, commit="c" * 40, reasons=["retry", "push ccccccc"],
        deliveries=frozenset({"d1"}))), id="retry-the-whole-job"),
    pytest.param(START, Verdict(Outcome.RETRY), FollowUp(later=Job(
        None, Trigger.AUTO, config=True, prune=True, reasons=["retry", "daemon start"])), id="retry-the-start-run"),
    pytest.param(START, Verdict(Outcome.RETRY, retry=frozenset({"api"})), FollowUp(later=Job(
        frozenset({"api"}), Trigger.AUTO, reasons=["retry", "daemon start"])), id="retry-one-deployment"),
    pytest.param(Job(frozenset({"web"}), Trigger.AUTO, reasons=["retry", "file change"]), Verdict(Outcome.RETRY),
                 FollowUp(later=Job(frozenset({"web"}), Trigger.AUTO, reasons=["retry", "file change"])),
                 id="a-retry-of-a-retry-says-so-once"),
    pytest.param(HEAL, Verdict(Outcome.RETRY), FollowUp(later=Job(
        frozenset({"web"}), Trigger.AUTO, reasons=["retry", "drift"], heal=True)), id="retry-a-heal-as-a-heal"),
    pytest.param(PUSH, Verdict(Outcome.KILLED, signal=9), FollowUp(
        now=Job(frozenset({"web", "api"}), Trigger.AUTO, reasons=["recovery: the run was killed by SIGKILL"],
                heal=True),
        later=Job(frozenset({"web", "api"}), Trigger.WEBHOOK, fetch=True, commit="c" * 40,
                  reasons=["retry", "push ccccccc"], deliveries=frozenset({"d1"}))), id="killed"),
    pytest.param(HEAL, Verdict(Outcome.KILLED, signal=9), FollowUp(
        now=Job(frozenset({"web"}), Trigger.AUTO, reasons=["recovery: the run was killed by SIGKILL"], heal=True)),
        id="killed-heal-is-recovered-once"),
])
def test_follow_up(job, verdict, expected):
    assert follow_up(job, verdict) == expected


# -- verdicts of real children ------------------------------------------------------------


def test_a_child_killed_by_a_signal_is_judged_killed(tmp_path, monkeypatch):
    child_script(monkeypatch, "import os, signal, sys; sys.stdin.readline(); os.kill(os.getpid(), signal.SIGKILL)")
    worker, seen, _ = make_worker(tmp_path)
    assert worker.run(Running(JOB)) == Verdict(Outcome.KILLED, signal=signal.SIGKILL)
    assert seen[-1].message.endswith(": killed by SIGKILL")


@pytest.mark.parametrize("own_build,verdict", [
    (True, Verdict(Outcome.FAILED)),
    (False, Verdict(Outcome.RETRY, retry=frozenset({"web"}))),
])
def test_a_failed_step_is_retried_only_without_a_failed_build_of_its_own(tmp_path, monkeypatch, own_build, verdict):
    worker, _, history = make_worker(tmp_path)
    build = history.new_build("web", Trigger.WEBHOOK, "rebuild", status=BuildStatus.BUILDING)
    if own_build:  # the build command failed: recorded FAILED by the engine
        history.finish(build.id, BuildStatus.FAILED, error_message="build command exited 1")
    child_script(monkeypatch, textwrap.dedent(f"""
        import sys
        from gitops import worker_protocol as wire
        from gitops.events import PhaseEntered, StepFailed
        sys.stdin.readline()
        if {own_build!r}:
            sys.stdout.write(wire.encode_event(PhaseEntered("web", "building", build_id={build.id!r})))
        sys.stdout.write(wire.encode_event(StepFailed("web", "it failed")))
        sys.stdout.write(wire.encode_result({{"ok": False, "errors": [], "results": [{{"name": "web"}}]}}))
        sys.exit(1)
    """))
    assert worker.run(Running(JOB)) == verdict


def test_a_child_that_cannot_start_is_reported_and_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "child_command", lambda config, python=sys.executable: [str(tmp_path / "missing")])
    worker, seen, _ = make_worker(tmp_path)
    assert worker.run(Running(JOB)) == Verdict(Outcome.RETRY)
    assert isinstance(seen[-1], JobFinished) and not seen[-1].ok  # every JobStarted gets its JobFinished


# -- the child when its daemon dies ------------------------------------------------------------

# A stand-in for the daemon: starts the child as Worker.run does (the parent's pid in its environment),
# hands it a job, reads one event line, then waits to be killed.
DAEMON = textwrap.dedent("""
    import os, subprocess, sys, time
    from gitops import worker, worker_protocol as wire
    from gitops.build import Trigger
    from gitops.queue import Job
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, worker.PARENT_ENV: str(os.getpid())})
    child.stdin.write(wire.encode_job(Job(frozenset({"web"}), Trigger.AUTO)))
    child.stdin.close()
    child.stdout.readline()
    open(sys.argv[2], "w").write("ready")
    time.sleep(120)
""")

# The child: child_main with a stand-in for the engine that writes events for as long as it runs and,
# as the engine does, records its build CANCELLED on an interrupt.
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gitops import worker
    from gitops.build import BuildStatus, Trigger
    from gitops.events import LogLine
    from gitops.history import History
    STATE, OUT, PDEATHSIG = sys.argv[1:4] if len(sys.argv) > 3 else ({state!r}, {out!r}, {pdeathsig!r})
    if PDEATHSIG == "off":
        worker._die_with_parent = lambda: True  # as where prctl does not exist
    class Result:
        ok = True
        unfetched = []
        def to_dict(self):
            return {{"ok": True, "errors": [], "results": []}}
    def run(job, config):
        history = History(Path(STATE))
        build = history.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
        parent = os.getppid()
        try:
            for _ in range(3000):  # 30 s at most
                worker._write_event(LogLine("web", "x" * 200, build_id=build.id))
                if os.getppid() != parent:
                    break  # orphaned (and not stopped): finish, writing on to nobody
                time.sleep(0.01)
            for _ in range(100):
                worker._write_event(LogLine("web", "after the daemon died", build_id=build.id))
        except KeyboardInterrupt:
            history.finish(build.id, BuildStatus.CANCELLED, error_message="cancelled: interrupted")
            raise
        except BaseException as exc:
            history.finish(build.id, BuildStatus.FAILED, error_message=f"{{type(exc).__name__}}: {{exc}}")
            raise
        history.finish(build.id, BuildStatus.SUCCESS)
        return Result()
    worker._run = run
    code = worker.child_main([])
    Path(OUT).write_text(str(code))
    sys.exit(code)
""")


def _wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if stat and stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"process {pid} still runs {timeout} s after its daemon died"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("pdeathsig,status,code", [
    ("on", BuildStatus.CANCELLED, "130"),  # the kernel's SIGTERM: cancelled as a daemon's cancel would
    ("off", BuildStatus.SUCCESS, "0"),  # no prctl: the orphan finishes, its writes to nobody fail nothing
])
def test_a_child_whose_daemon_is_killed_stops_or_finishes_cleanly(tmp_path, pdeathsig, status, code):
    state, out, ready = tmp_path / "state", tmp_path / "code", tmp_path / "ready"
    child = CHILD.format(state=str(state), out=str(out), pdeathsig=pdeathsig)
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, child, str(ready)], cwd=REPO_ROOT,
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert daemon.poll() is None, "the stand-in daemon died"
            assert time.monotonic() < deadline, "the child never wrote an event"
            time.sleep(0.05)
        [child_pid] = [int(p) for p in Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()]
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        _wait_gone(child_pid)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert out.read_text() == code
    [build] = History(state).list("web")
    assert build.status is status, (build.status, build.error_message)


def test_a_child_whose_daemon_is_already_gone_does_nothing(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that is nobody's parent any more
    done = subprocess.run([sys.executable, "-m", "gitops.worker"], cwd=REPO_ROOT, input=wire.encode_job(JOB),
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, worker_module.PARENT_ENV: str(gone.pid)})
    assert done.returncode == worker_module.CANCELLED_EXIT
    assert done.stdout == ""


def test_writing_to_a_daemon_that_stopped_reading_never_fails(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from gitops import worker
        from gitops.events import LogLine
        read, write = os.pipe()
        os.close(read)  # nobody reads stdout nor stderr any more
        os.dup2(write, 1)
        os.dup2(write, 2)
        for _ in range(1000):
            worker._write_event(LogLine("web", "x" * 1000))
        worker._write(sys.stderr, "error: something\\n")
        worker._write(sys.stdout, "result\\n")
        print("a stray print")
        open({str(tmp_path / "ok")!r}, "w").write("finished")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=30)
    assert (tmp_path / "ok").read_text() == "finished"
    assert done.returncode == 0  # an error while flushing at exit would make it 120


def test_a_second_sigterm_cannot_cut_short_the_recording_of_the_first():
    """The first SIGTERM cancels; any later one is ignored until the cancel is recorded."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, worker_module._interrupt)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here at the latest
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # must not raise again
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, before)
