"""The daemon's worker protocol: job lines in, event lines and a result line out, and the child itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gitops import worker_protocol as wire
from gitops.build import Trigger
from gitops.events import (EVENT_TYPES, DaemonError, Info, JobFinished, JobStarted, LockWait, LogLine,
                           PhaseEntered, Planned, Recovered, StepFailed, StepStarted, StepSucceeded, Triggered,
                           Warned, event_from_dict)
from gitops.queue import Job

JOBS = [
    Job(None, Trigger.AUTO, config=True, prune=True, reasons=["daemon start"]),
    Job(frozenset({"web", "api"}), Trigger.WEBHOOK, fetch=True, commit="a" * 40, reasons=["push aaaaaaa"]),
    Job(frozenset({"web"}), Trigger.AUTO, reasons=["drift"], heal=True),
    Job(None, Trigger.MANUAL),
]

EVENTS = [
    LockWait(None, "waiting for kalpana pid 1"),
    Recovered("web", "restored web--retiring"),
    Planned(None, "web create (new)", changes=1),
    StepStarted("web", "new deployment", action="create"),
    PhaseEntered("web", "building kalpana/web:b1", build_id="b1"),
    LogLine("web", "Step 1/4 : FROM busybox", build_id="b1"),
    StepSucceeded("web", "create", build={"id": "b1", "status": "SUCCESS"}),
    StepFailed("web", "the new container stopped with exit code 3"),
    Warned(None, "pruning skipped"),
    Triggered(None, "file change: web"),
    JobStarted(None, "web (auto)", reasons=["file change"], commit=None),
    JobFinished(None, "web (auto) done in 1.0 s", ok=True, cancelled=None, changed=1),
    Info(None, "stopped"),
    DaemonError(None, "poll failed"),
]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.describe())
def test_a_job_survives_the_line_that_carries_it(job):
    line = wire.encode_job(job)
    assert line.endswith("\n") and line.count("\n") == 1
    assert wire.decode_job(line) == job


def _job_with(**changes) -> str:
    return json.dumps({**json.loads(wire.encode_job(JOBS[1])), **changes})


@pytest.mark.parametrize("line", ["", "{}", "not json", '{"names": 3, "trigger": "auto"}', _job_with(trigger="cron"),
                                  _job_with(names="web"), _job_with(names=[]), _job_with(fetch="false"),
                                  _job_with(reasons="push"), _job_with(commit=7)])
def test_a_line_that_is_not_a_job_is_refused_clearly(line):
    with pytest.raises(wire.ProtocolError, match="not a job line"):
        wire.decode_job(line)


def test_every_event_kind_is_covered_here():
    assert {type(e) for e in EVENTS} == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_an_event_survives_its_line(event):
    line = wire.encode_event(event)
    assert line.count("\n") == 1
    assert json.loads(line)["event"] == event.kind
    assert wire.decode_line(line) == event


def test_the_result_line_says_ok_and_how_much_ran():
    line = wire.encode_result({"ok": False, "plan": {}, "errors": ["web.yaml:3: port: bad"],
                               "results": [{"name": "web"}, {"name": "api"}]})
    result = wire.decode_line(line)
    assert isinstance(result, wire.RunResult)
    assert (result.ok, result.changed, result.errors) == (False, 2, ["web.yaml:3: port: bad"])
    assert result.unfetched == []
    fetched_badly = wire.decode_line(wire.encode_result({"ok": True, "results": [], "unfetched": ["web"]}))
    assert fetched_badly.unfetched == ["web"]


@pytest.mark.parametrize("line", ["", "hello from a stray print\n", "[1, 2]\n", '{"no": "event"}\n'])
def test_stray_output_is_not_protocol(line):
    assert wire.decode_line(line) is None


def test_an_unknown_event_kind_is_read_as_info_and_unknown_fields_dropped():
    event = event_from_dict({"event": "from_the_future", "deployment": "web", "message": "hi", "extra": 1})
    assert event == Info("web", "hi")


def test_child_arguments_round_trip():
    command = wire.child_command(Path("/etc/kalpana.yaml"), python="py")
    assert command == ["py", "-m", "gitops.worker", "-c", "/etc/kalpana.yaml"]
    assert wire.parse_child_args(command[3:]) == Path("/etc/kalpana.yaml")
    assert wire.parse_child_args(wire.child_command(None)[3:]) is None
    with pytest.raises(wire.ProtocolError):
        wire.parse_child_args(["--events-json"])


def test_the_child_refuses_a_bad_job_line_with_one_error_line_and_exit_2(tmp_path):
    """The real child process, started as the daemon starts it (no Docker is reached before the job is read)."""
    child = subprocess.run(wire.child_command(None), input="this is not a job\n", capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
    assert child.returncode == 2
    assert child.stdout == ""
    assert child.stderr.startswith("error: not a job line") and child.stderr.count("\n") == 1


def test_a_child_let_go_before_any_job_came_exits_quietly(tmp_path):
    """A warm child whose daemon closed its stdin (stopping, or settings changed) ends with 0 and says nothing."""
    child = subprocess.run(wire.child_command(None), input="", capture_output=True, text=True, cwd=tmp_path,
                           timeout=60)
    assert (child.returncode, child.stdout, child.stderr) == (0, "", "")


def test_the_child_ends_with_one_error_line_when_docker_is_down(tmp_path):
    """The job is read, the engine starts, Docker does not answer: exit 1, the last stderr line says why."""
    (tmp_path / "deployments.d").mkdir()
    (tmp_path / "deployments.d" / "web.yaml").write_text("name: web\nport: [\n")
    settings = tmp_path / "kalpana.yaml"
    # An address where no engine answers: the run must fail on Docker with one clear line, not hang.
    settings.write_text(f"state_dir: {tmp_path / 'state'}\ndocker_host: unix://{tmp_path / 'no.sock'}\n")
    child = subprocess.run(wire.child_command(settings), input=wire.encode_job(JOBS[3]), capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    assert child.returncode == 1, child.stderr
    assert "cannot reach Docker" in child.stderr.splitlines()[-1]
    assert all(wire.decode_line(line) is not None for line in child.stdout.splitlines())
