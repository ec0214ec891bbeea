"""Build history: records, logs, operator intent, and safety across processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import filelock
import pytest

from gitops.errors import KalpanaError, LockTimeout
from gitops.build import Build, BuildStatus, Trigger, now_iso
from gitops.history import BuildNotFound, History, HistoryCorrupt

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "state")


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A separate interpreter that imports this checkout's gitops."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# -- records --------------------------------------------------------------


def test_new_build_creates_the_state_files(tmp_path: Path):
    state = tmp_path / "deep" / "state"
    history = History(state)
    assert (state / "logs").is_dir()
    history.new_build("web", Trigger.MANUAL, "create")
    assert (state / "history.json").is_file()
    assert (state / "history.lock").exists()


def test_every_field_round_trips(history: History):
    build = history.new_build(
        "web",
        Trigger.WEBHOOK,
        "rebuild",
        reason="source revision changed: abc1234 -> def5678",
        commit_hash="d" * 40,
        commit_message="Fix login\n\nwith a body, ünïcode and \"quotes\"",
        branch="main",
        revision="d" * 40,
        image=None,
    )
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", build.id)
    assert build.status is BuildStatus.PENDING
    assert build.pid == os.getpid()
    assert build.host == socket.gethostname()
    assert build.created_at.endswith("Z")

    started = now_iso()
    history.update(build.id, status=BuildStatus.BUILDING, started_at=started,
                   image=f"kalpana/web:{build.id}", durations={"source": 1.5})
    history.update(build.id, durations={"build": 12.25})
    done = history.finish(build.id, BuildStatus.FAILED, error_message="exit 2",
                          durations={"deploy": 0.5, "gap": 0.125})

    got = history.get(build.id)
    assert got == done
    assert got.to_dict() == {
        "id": build.id,
        "deployment": "web",
        "status": "FAILED",
        "triggered_by": "webhook",
        "action": "rebuild",
        "reason": "source revision changed: abc1234 -> def5678",
        "commit_hash": "d" * 40,
        "commit_message": "Fix login\n\nwith a body, ünïcode and \"quotes\"",
        "branch": "main",
        "revision": "d" * 40,
        "error_message": "exit 2",
        "image": f"kalpana/web:{build.id}",
        "created_at": build.created_at,
        "started_at": started,
        "completed_at": done.completed_at,
        "durations": {"source": 1.5, "build": 12.25, "deploy": 0.5, "gap": 0.125,
                      "total": done.durations["total"]},
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    # JSON-ready as it stands, and the inverse of from_dict.
    assert json.loads(json.dumps(got.to_dict())) == got.to_dict()
    assert Build.from_dict(got.to_dict(logs="x")) == got


def test_to_dict_has_logs_only_when_given(history: History):
    build = history.new_build("web", "manual", "create")
    assert "logs" not in build.to_dict()
    assert build.to_dict(logs="")["logs"] == ""
    assert build.to_dict(logs="hello\n")["logs"] == "hello\n"


def test_strings_are_accepted_for_enums(history: History):
    build = history.new_build("web", "auto", "start", status="BUILDING")
    assert build.triggered_by is Trigger.AUTO
    assert build.status is BuildStatus.BUILDING
    assert history.update(build.id, status="SUCCESS").status is BuildStatus.SUCCESS


def test_list_is_newest_first_with_filter_and_limit(history: History):
    ids = [history.new_build(name, Trigger.AUTO, "deploy").id
           for name in ["a", "b", "a", "c", "a"]]
    assert [b.id for b in history.list()] == ids[::-1]
    assert [b.id for b in history.list("a")] == [ids[4], ids[2], ids[0]]
    assert [b.id for b in history.list(limit=2)] == [ids[4], ids[3]]
    assert [b.id for b in history.list("a", limit=1)] == [ids[4]]
    assert history.list(limit=0) == []
    assert history.list("nobody") == []


def test_empty_history(history: History):
    assert history.list() == []
    assert history.latest("web") is None
    assert history.get("2026") is None


def test_latest_by_status(history: History):
    ok = history.new_build("web", Trigger.MANUAL, "create")
    history.finish(ok.id, BuildStatus.SUCCESS)
    bad = history.new_build("web", Trigger.MANUAL, "rebuild")
    history.finish(bad.id, BuildStatus.FAILED, error_message="boom")
    history.new_build("other", Trigger.MANUAL, "create")

    assert history.latest("web").id == bad.id
    assert history.latest("web", BuildStatus.SUCCESS).id == ok.id
    assert history.latest("web", BuildStatus.CANCELLED) is None
    assert history.latest("nobody") is None


def test_get_by_unique_prefix(history: History):
    builds = [history.new_build("web", Trigger.MANUAL, "create") for _ in range(5)]
    ids = [b.id for b in builds]
    for build_id in ids:
        # The shortest prefix no other id shares.
        k = next(k for k in range(1, len(build_id) + 1)
                 if not any(o.startswith(build_id[:k]) for o in ids if o != build_id))
        assert history.get(build_id[:k]).id == build_id
        assert history.get(build_id).id == build_id
    assert history.get("19990101") is None
    assert history.get("") is None


def test_ambiguous_prefix_is_an_error_naming_the_candidates(history: History):
    a = history.new_build("web", Trigger.MANUAL, "create")
    b = history.new_build("web", Trigger.MANUAL, "create")
    with pytest.raises(BuildNotFound) as err:
        history.get(a.id[:4])  # the year: shared by both
    assert a.id in str(err.value) and b.id in str(err.value)
    assert "more characters" in str(err.value)


def test_ids_are_unique_and_tag_safe(history: History):
    ids = [history.new_build("web", Trigger.AUTO, "deploy").id for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", i) for i in ids)


def test_finish_sets_completed_at_and_total(history: History):
    build = history.new_build("web", Trigger.MANUAL, "create")
    history.update(build.id, status=BuildStatus.BUILDING, started_at="2026-01-01T10:00:00.000Z")
    done = history.finish(build.id, BuildStatus.SUCCESS, completed_at="2026-01-01T10:01:30.500Z",
                          durations={"build": 80.0})
    assert done.status is BuildStatus.SUCCESS
    assert done.completed_at == "2026-01-01T10:01:30.500Z"
    assert done.durations == {"build": 80.0, "total": 90.5}
    assert done.duration == 90.5
    assert done.error_message is None


def test_finish_before_start_measures_from_creation(history: History):
    build = history.new_build("web", Trigger.MANUAL, "create")
    done = history.finish(build.id, BuildStatus.CANCELLED)
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    assert 0 <= done.durations["total"] < 60
    assert done.duration is None  # never started


def test_finish_refuses_unfinished_status(history: History):
    build = history.new_build("web", Trigger.MANUAL, "create")
    with pytest.raises(ValueError):
        history.finish(build.id, BuildStatus.BUILDING)


def test_unknown_build_and_unknown_field(history: History):
    with pytest.raises(BuildNotFound, match="kalpana builds NAME"):
        history.update("20990101-000000-abcd", status=BuildStatus.FAILED)
    build = history.new_build("web", Trigger.MANUAL, "create")
    with pytest.raises(TypeError):
        history.update(build.id, colour="red")
    with pytest.raises(TypeError):
        history.update(build.id, id="other")
    with pytest.raises(TypeError):
        history.new_build("web", Trigger.MANUAL, "create", pid=1)


# -- logs -----------------------------------------------------------------


def test_logs_append_and_read(history: History, tmp_path: Path):
    build = history.new_build("web", Trigger.MANUAL, "create")
    assert history.logs(build.id) == ""
    history.append_log(build.id, "step 1\n")
    history.append_log(build.id, "step 2 ✓\n")
    assert history.logs(build.id) == "step 1\nstep 2 ✓\n"
    assert history.log_path(build.id) == tmp_path / "state" / "logs" / f"{build.id}.log"
    # Logs live beside the database, never in it.
    assert "step 1" not in (tmp_path / "state" / "history.json").read_text()


def test_logs_refuse_ids_that_are_paths(history: History):
    with pytest.raises(BuildNotFound):
        history.logs("../history")
    with pytest.raises(BuildNotFound):
        history.append_log("a/b", "x")


# -- operator intent ------------------------------------------------------


def test_stopped_intent(history: History):
    assert history.stopped() == set()
    history.set_stopped("web", True)
    history.set_stopped("api", True)
    history.set_stopped("web", True)
    assert history.stopped() == {"web", "api"}
    history.set_stopped("web", False)
    assert history.stopped() == {"api"}
    history.set_stopped("never-stopped", False)
    assert history.stopped() == {"api"}


def test_port_intent(history: History):
    assert history.assigned_port("web") is None
    assert history.assigned_ports() == {}
    history.assign_port("web", 8081)
    history.assign_port("api", 8082)
    history.assign_port("web", 8083)
    assert history.assigned_port("web") == 8083
    assert history.assigned_ports() == {"web": 8083, "api": 8082}
    history.assign_port("api", None)
    assert history.assigned_ports() == {"web": 8083}
    with pytest.raises(ValueError):
        history.assign_port("web", 70000)


def test_intents_are_independent_and_survive_reopening(tmp_path: Path):
    history = History(tmp_path)
    history.assign_port("web", 9000)
    history.set_stopped("web", True)
    history.set_stopped("web", False)
    reopened = History(tmp_path)
    assert reopened.assigned_port("web") == 9000
    assert reopened.stopped() == set()
    assert reopened.list() == []  # intents are not builds


# -- interrupted builds ---------------------------------------------------


def test_mark_interrupted_fails_builds_of_dead_processes(history: History):
    child = _python(
        """
        import sys
        from pathlib import Path
        from gitops.build import BuildStatus, Trigger
        from gitops.history import History
        h = History(Path(sys.argv[1]))
        print(h.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING).id)
        """,
        str(history.state_dir),
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    orphan_id = out.strip()

    mine = history.new_build("web", Trigger.MANUAL, "create", status=BuildStatus.BUILDING)
    pending_mine = history.new_build("api", Trigger.MANUAL, "create")
    done = history.new_build("api", Trigger.MANUAL, "create")
    history.finish(done.id, BuildStatus.SUCCESS)
    elsewhere = history.new_build("db", Trigger.MANUAL, "create", status=BuildStatus.BUILDING)
    history.update(elsewhere.id, host="another-host", pid=999_999_999)

    changed = history.mark_interrupted()

    assert [b.id for b in changed] == [orphan_id]
    orphan = history.get(orphan_id)
    assert orphan.status is BuildStatus.FAILED
    assert orphan.error_message.startswith("interrupted")
    assert orphan.completed_at is not None
    assert history.get(mine.id).status is BuildStatus.BUILDING
    assert history.get(pending_mine.id).status is BuildStatus.PENDING
    assert history.get(done.id).status is BuildStatus.SUCCESS
    assert history.get(elsewhere.id).status is BuildStatus.BUILDING
    assert history.mark_interrupted() == []


def test_mark_interrupted_catches_this_pid_from_an_earlier_life(history: History):
    # A restarted container runs Kalpana with the same pid again.
    build = history.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
    history.update(build.id, created_at="2000-01-01T00:00:00.000Z")
    assert [b.id for b in history.mark_interrupted()] == [build.id]


# -- damaged files and contention -----------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"builds": {"1": {"id": "x"',  # cut short
        "[1, 2, 3]",  # valid JSON, not a database
        '{"builds": {"1": "not a record"}}',
        b"\xff\xfe\x00garbage",
    ],
    ids=["truncated", "list", "bad-record", "binary"],
)
def test_corrupt_history_is_a_clear_error(tmp_path: Path, content):
    db = tmp_path / "history.json"
    if isinstance(content, bytes):
        db.write_bytes(content)
    else:
        db.write_text(content)
    history = History(tmp_path)
    with pytest.raises(KalpanaError) as err:
        history.list()
    assert isinstance(err.value, HistoryCorrupt)
    assert str(db) in str(err.value)
    assert "move it aside" in str(err.value)
    with pytest.raises(HistoryCorrupt):
        history.new_build("web", Trigger.MANUAL, "create")
    assert db.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_malformed_record_is_a_clear_error(tmp_path: Path):
    (tmp_path / "history.json").write_text(json.dumps({"builds": {"1": {"id": "x", "status": "WEIRD"}}}))
    with pytest.raises(HistoryCorrupt, match="history.json"):
        History(tmp_path).list()


def test_empty_file_is_an_empty_history(tmp_path: Path):
    (tmp_path / "history.json").write_text("")
    history = History(tmp_path)
    assert history.list() == []
    history.new_build("web", Trigger.MANUAL, "create")
    assert len(history.list()) == 1


def test_lock_timeout_is_a_clear_error(tmp_path: Path):
    history = History(tmp_path, lock_timeout=0.2)
    holder = filelock.FileLock(str(tmp_path / "history.lock"))
    with holder:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as err:
            history.list()
        assert time.monotonic() - started < 10
    assert "history.lock" in str(err.value)
    assert history.list() == []  # free again


def test_two_processes_recording_at_once_lose_nothing(tmp_path: Path):
    go = tmp_path / "go"
    workers = [
        _python(
            """
            import sys, time
            from pathlib import Path
            from gitops.build import BuildStatus, Trigger
            from gitops.history import History
            state, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
            h = History(state, lock_timeout=120)
            h.list()
            print("ready", flush=True)
            while not go.exists():  # start together, so the writes interleave
                time.sleep(0.01)
            for i in range(200):
                b = h.new_build(name, Trigger.AUTO, "deploy", reason=str(i))
                if i % 10 == 0:
                    h.update(b.id, status=BuildStatus.BUILDING)
            """,
            str(tmp_path / "state"),
            str(go),
            name,
        )
        for name in ("first", "second")
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
    go.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err

    builds = History(tmp_path / "state").list()
    assert len(builds) == 400
    assert len({b.id for b in builds}) == 400
    for name in ("first", "second"):
        mine = [b for b in builds if b.deployment == name]
        # Newest first, and each process's own order is kept.
        assert [b.reason for b in mine] == [str(i) for i in reversed(range(200))]
        assert sum(b.status is BuildStatus.BUILDING for b in mine) == 20
    # Both really ran at once: their records interleave.
    names = [b.deployment for b in builds]
    switches = sum(1 for a, b in zip(names, names[1:]) if a != b)
    assert switches > 1
