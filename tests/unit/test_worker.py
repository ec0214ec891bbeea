"""The daemon's worker, both ends: relaying a real child's lines, cancelling it, and the child's crash path.

The parent side is driven with real child processes that speak the protocol
(small Python scripts standing in for `python -m gitops.worker`), so pipes,
signals and process groups are the real thing; no Docker is needed.
"""

from __future__ import annotations

import io
import os
import sys
import textwrap
import threading

import pytest

from gitops import worker as worker_module
from gitops import worker_protocol as wire
from gitops.build import BuildStatus, Trigger
from gitops.events import Event, Events, JobFinished, JobStarted, LogLine, PhaseEntered
from gitops.history import History
from gitops.queue import Job, Running

JOB = Job(frozenset({"web"}), Trigger.WEBHOOK, fetch=True, commit="b" * 40, reasons=["push bbbbbbb"])


def child_script(monkeypatch, body: str) -> None:
    """Make the worker start ``python -c body`` instead of the real worker module."""
    monkeypatch.setattr(wire, "child_command", lambda config, python=sys.executable: [python, "-c", body])


def make_worker(tmp_path, *listeners) -> tuple[worker_module.Worker, list[Event], History]:
    history = History(tmp_path / "state")
    events = Events()
    seen: list[Event] = []
    events.subscribe(seen.append)
    for listener in listeners:
        events.subscribe(listener)
    return worker_module.Worker(None, history, events), seen, history


def test_the_child_gets_the_job_and_its_events_are_relayed_in_order(tmp_path, monkeypatch):
    child_script(monkeypatch, textwrap.dedent(f"""
        import sys
        from gitops import worker_protocol as wire
        from gitops.events import LogLine, PhaseEntered
        job = wire.decode_job(sys.stdin.readline())
        print("a stray line that is not protocol")
        sys.stdout.write(wire.encode_event(PhaseEntered("web", "building for " + job.commit[:7], build_id="b1")))
        sys.stdout.write(wire.encode_event(LogLine("web", "step 1", build_id="b1")))
        sys.stdout.write(wire.encode_result({{"ok": True, "errors": [], "results": [{{"name": "web"}}]}}))
    """))
    worker, seen, _ = make_worker(tmp_path)
    worker.run(Running(JOB))
    assert [type(e) for e in seen] == [JobStarted, PhaseEntered, LogLine, JobFinished]
    assert seen[1].message == "building for bbbbbbb"
    done = seen[-1]
    assert done.ok and done.changed == 1 and done.cancelled is None
    assert " done in " in done.message


def test_a_failing_child_reports_its_last_error_line(tmp_path, monkeypatch):
    child_script(monkeypatch, "import sys; sys.stderr.write('warming up\\nerror: cannot reach Docker at x\\n'); "
                              "sys.exit(1)")
    worker, seen, _ = make_worker(tmp_path)
    worker.run(Running(JOB))
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
    thread = threading.Thread(target=lambda: (worker.run(running), finished.set()), daemon=True)
    thread.start()
    assert finished.wait(30), "the cancelled child was not stopped"
    done = seen[-1]
    assert isinstance(done, JobFinished) and done.cancelled == "superseded by ccccccc" and not done.ok
    record = history.get(build.id)
    assert record.status is BuildStatus.CANCELLED
    assert record.error_message == "superseded by ccccccc"


def test_when_relaying_fails_the_child_is_killed_not_left_blocked(tmp_path, monkeypatch):
    """A child nobody reads any more would block on a full pipe holding the apply lock."""
    pid_file = tmp_path / "child.pid"
    child_script(monkeypatch, textwrap.dedent(f"""
        import os, sys
        from gitops import worker_protocol as wire
        from gitops.events import LogLine
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        sys.stdin.readline()
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


def test_an_unexpected_error_in_the_child_is_one_line_with_the_traceback_in_a_file(monkeypatch, capsys):
    def boom(job, config):
        raise TypeError("boom")

    monkeypatch.setattr(worker_module, "_run", boom)
    monkeypatch.setattr(worker_module.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    monkeypatch.setattr(worker_module.atexit, "register", lambda *args: None)
    monkeypatch.setattr(sys, "stdin", io.StringIO(wire.encode_job(JOB)))
    assert worker_module.child_main([]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: unexpected error: TypeError: boom (traceback written to ")
    path = err.split("traceback written to ")[1].split(";")[0]
    with open(path) as handle:
        assert 'raise TypeError("boom")' in handle.read()
