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
from test_build_logs import CAP, numbered_lines, split_at_marker

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



def test_an_interrupted_build_ends_at_its_last_log_line_not_when_it_was_noticed(history: History):
    build = history.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
    history.update(build.id, created_at="2000-01-01T00:00:00.000Z", started_at="2000-01-01T00:00:01.000Z")
    history.append_log(build.id, "step 1\n")
    log = history.build_logs.path(build.id)
    os.utime(log, (946_684_805, 946_684_805))  # its last line: 2000-01-01T00:00:05Z

    [failed] = history.mark_interrupted()

    assert failed.completed_at == "2000-01-01T00:00:05.000Z"
    assert failed.duration == 4.0


def test_an_interrupted_build_with_no_log_ends_at_its_start(history: History):
    build = history.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
    history.update(build.id, created_at="2000-01-01T00:00:00.000Z", started_at="2000-01-01T00:00:01.000Z")
    [failed] = history.mark_interrupted()
    assert failed.completed_at == "2000-01-01T00:00:01.000Z"


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


# -- retention (issue 8, point 10) ---------------------------------------------


def _finished(history: History, deployment: str, status: BuildStatus = BuildStatus.SUCCESS, log: str = "") -> Build:
    build = history.new_build(deployment, Trigger.AUTO, "rebuild")
    if log:
        history.append_log(build.id, log)
    return history.finish(build.id, status)


def _imported(n: int, deployments: int, status: BuildStatus = BuildStatus.SUCCESS) -> list[Build]:
    return [Build(id=f"20260101-{i:06d}-beef", deployment=f"app{i % deployments}", status=status,
                  triggered_by=Trigger.AUTO, action="rebuild", created_at="2026-01-01T00:00:00.000Z")
            for i in range(n)]


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from gitops import history as module
    writes: list[int] = []
    original = module._AtomicJSONStorage.write

    def counting(self, data):
        writes.append(1)
        return original(self, data)

    monkeypatch.setattr(module._AtomicJSONStorage, "write", counting)
    return writes


def test_prune_keeps_the_newest_per_deployment_and_deletes_the_logs_of_the_rest(history: History):
    web = [_finished(history, "web", log=f"web {i}\n") for i in range(5)]
    api = [_finished(history, "api", log=f"api {i}\n") for i in range(2)]

    dropped = history.prune(keep=3)

    assert dropped == [web[1].id, web[0].id]  # newest first
    assert [b.id for b in history.list("web")] == [b.id for b in reversed(web[2:])]
    assert [b.id for b in history.list("api")] == [b.id for b in reversed(api)]
    for build in web[:2]:
        assert not history.log_path(build.id).exists()
        assert history.logs(build.id) == ""
    for build in web[2:] + api:
        assert history.logs(build.id) == f"{build.deployment} {(web + api).index(build) % 5 if build.deployment == 'web' else api.index(build)}\n"
    assert history.prune(keep=3) == []


def test_prune_never_drops_protected_or_unfinished_builds(history: History):
    serving = _finished(history, "web", log="serving\n")  # the image the container runs
    rollback = _finished(history, "web")  # an image kept for rollback
    running = history.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
    history.append_log(running.id, "still building\n")
    pending = history.new_build("web", Trigger.WEBHOOK, "rebuild")
    old = _finished(history, "web", BuildStatus.FAILED)
    newest = [_finished(history, "web") for _ in range(2)]

    dropped = history.prune(keep=2, protect={serving.id, rollback.id, "some-other-id"})

    assert dropped == [old.id]
    assert {b.id for b in history.list("web")} == {serving.id, rollback.id, running.id, pending.id,
                                                  *(b.id for b in newest)}
    assert history.logs(serving.id) == "serving\n"
    assert history.logs(running.id) == "still building\n"


def test_prune_removes_orphan_logs_and_leaves_other_files(history: History):
    kept = _finished(history, "web", log="mine\n")
    logs = history.logs_dir
    orphans = ["20250101-000000-dead.log", "20250101-000000-dead.log.tail",
               "20250101-000000-dead.log.tail.77.tmp", "20250101-000001-feed.log.4242.tmp"]
    for name in orphans:
        (logs / name).write_text("left by a crash\n")
    (logs / "README").write_text("not a log\n")

    assert history.prune(keep=5) == []

    assert sorted(p.name for p in logs.iterdir()) == sorted(["README", f"{kept.id}.log"])
    assert history.logs(kept.id) == "mine\n"


def test_prune_is_one_rewrite_and_none_when_nothing_goes(history: History, monkeypatch):
    history.import_builds(_imported(300, deployments=3))
    writes = _count_writes(monkeypatch)
    assert len(history.prune(keep=10)) == 270
    assert len(writes) == 1
    assert history.prune(keep=10) == []
    assert len(writes) == 1
    assert sorted(len(history.list(f"app{i}")) for i in range(3)) == [10, 10, 10]


def test_prune_refuses_keep_below_one(history: History):
    with pytest.raises(ValueError):
        history.prune(keep=0)


def test_import_builds_writes_once_and_refuses_duplicates(history: History, monkeypatch):
    writes = _count_writes(monkeypatch)
    builds = _imported(50, deployments=2)
    history.import_builds(builds)
    assert len(writes) == 1
    assert [b.id for b in history.list()] == [b.id for b in reversed(builds)]
    with pytest.raises(ValueError, match="already recorded"):
        history.import_builds(builds[:1])
    with pytest.raises(BuildNotFound):
        history.import_builds([Build(id="../x", deployment="a", status=BuildStatus.SUCCESS,
                                     triggered_by=Trigger.AUTO, action="create")])
    # A new build after an import still sorts newest.
    newest = history.new_build("app0", Trigger.MANUAL, "deploy")
    assert history.list(limit=1)[0].id == newest.id


# -- reads that stay cheap as the history grows ---------------------------------


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    original = History._build

    def counting(self, record):
        made.append(record["id"])
        return original(self, record)

    monkeypatch.setattr(History, "_build", counting)
    return made


def test_latest_per_deployment_makes_one_build_per_deployment(history: History, monkeypatch):
    history.import_builds(_imported(1000, deployments=4))
    web_old = _finished(history, "web")
    web_new = history.new_build("web", Trigger.MANUAL, "rebuild", status=BuildStatus.BUILDING)
    made = _count_builds(monkeypatch)

    latest = history.latest_per_deployment()

    assert latest["web"].id == web_new.id and latest["web"].status is BuildStatus.BUILDING
    assert web_old.id not in made
    assert {name: b.id for name, b in latest.items() if name != "web"} == {
        f"app{i}": f"20260101-{996 + i:06d}-beef" for i in range(4)}
    assert len(made) == 5
    assert History(history.state_dir).latest_per_deployment().keys() == latest.keys()
    assert History(history.state_dir / "empty").latest_per_deployment() == {}


def test_latest_matches_list(history: History):
    history.import_builds(_imported(30, deployments=3))
    for name in ("app0", "app1", "app2", "nobody"):
        newest = history.list(name, limit=1)
        assert (history.latest(name).id if newest else history.latest(name)) == (newest[0].id if newest else None)


def test_mark_interrupted_reads_only_unfinished_records_and_writes_only_on_change(history: History, monkeypatch):
    history.import_builds(_imported(2000, deployments=5))
    dead = history.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
    history.update(dead.id, pid=_dead_pid())
    writes = _count_writes(monkeypatch)
    made = _count_builds(monkeypatch)

    assert [b.id for b in history.mark_interrupted()] == [dead.id]
    assert made == [dead.id]
    assert len(writes) == 1

    assert history.mark_interrupted() == []
    assert len(writes) == 1, "nothing changed: the file must not be rewritten"
    assert made == [dead.id]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- capped logs (issue 8, point 11); the log code itself: test_build_logs.py --


@pytest.fixture
def capped(tmp_path: Path) -> History:
    return History(tmp_path / "state", max_log_bytes=CAP)


def test_a_log_under_the_cap_is_stored_as_written(capped: History):
    build = capped.new_build("web", Trigger.MANUAL, "create")
    lines = numbered_lines(100)
    for line in lines:
        capped.append_log(build.id, line)
    capped.finish(build.id, BuildStatus.SUCCESS)
    assert capped.logs(build.id) == "".join(lines)
    assert [p.name for p in capped.logs_dir.iterdir()] == [f"{build.id}.log"]


def test_a_noisy_log_keeps_head_marker_and_tail_within_the_cap(capped: History):
    build = capped.new_build("web", Trigger.MANUAL, "create")
    lines = numbered_lines(20_000)  # 1.2 MB
    for line in lines:
        capped.append_log(build.id, line)
    capped.append_log(build.id, "ERROR: the last words\n")
    capped.finish(build.id, BuildStatus.FAILED, "boom")

    stored = capped.log_path(build.id).read_bytes()
    assert len(stored) <= CAP
    assert [p.name for p in capped.logs_dir.iterdir()] == [f"{build.id}.log"], "side files are spliced in"
    log = capped.logs(build.id)
    assert log == stored.decode()
    head, cut, tail = split_at_marker(log)
    written = "".join(lines) + "ERROR: the last words\n"
    assert written.startswith(head) and written.endswith(tail)
    assert len(head) + cut + len(tail) == len(written), "the marker counts exactly the bytes cut"
    assert CAP // 2 - 60 < len(head) <= CAP // 2
    assert len(tail) > CAP // 3
    # Whole lines on both sides of the cut.
    assert head.endswith("\n") and tail.startswith("line ")
    assert tail.endswith("ERROR: the last words\n")


def test_a_killed_build_leaves_a_readable_log_that_mark_interrupted_splices(capped: History):
    child = _python(
        """
        import os, sys
        from pathlib import Path
        from gitops.build import BuildStatus, Trigger
        from gitops.history import History
        h = History(Path(sys.argv[1]), max_log_bytes=20_000)
        b = h.new_build("web", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
        for i in range(5000):
            h.append_log(b.id, f"line {i:07d}\\n")
        h.append_log(b.id, "the last line before the kill\\n")
        print(b.id, flush=True)
        os._exit(9)  # no finish: as if killed
        """,
        str(capped.state_dir),
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 9, err
    build_id = out.strip()
    written = "".join(f"line {i:07d}\n" for i in range(5000)) + "the last line before the kill\n"

    assert sorted(p.name for p in capped.logs_dir.iterdir()) == [f"{build_id}.log", f"{build_id}.log.tail"]
    before = capped.logs(build_id)
    head, cut, tail = split_at_marker(before)
    assert written.startswith(head) and tail.endswith("the last line before the kill\n")
    assert len(head) + cut + len(tail) == len(written)

    assert [b.id for b in capped.mark_interrupted()] == [build_id]
    assert [p.name for p in capped.logs_dir.iterdir()] == [f"{build_id}.log"]
    assert capped.logs(build_id) == before


def test_max_log_bytes_must_leave_room_for_head_and_tail(tmp_path: Path):
    with pytest.raises(ValueError):
        History(tmp_path, max_log_bytes=100)


def test_a_splice_cut_short_before_the_side_file_went_is_not_spliced_twice(capped: History):
    build = capped.new_build("web", Trigger.MANUAL, "create", status=BuildStatus.BUILDING)
    for line in numbered_lines(2000):
        capped.append_log(build.id, line)
    side = Path(f"{capped.log_path(build.id)}.tail")
    leftover = side.read_bytes()
    capped.finish(build.id, BuildStatus.SUCCESS)
    spliced = capped.logs(build.id)
    side.write_bytes(leftover)  # as if killed between replacing the log and deleting the side file

    assert capped.logs(build.id) == spliced
    assert [b.id for b in capped.mark_interrupted()] == []
    capped.build_logs.seal(build.id)
    assert capped.logs(build.id) == spliced
    assert not side.exists()


def test_a_log_that_cannot_be_spliced_does_not_keep_a_build_from_ending(capped: History, monkeypatch):
    build = capped.new_build("web", Trigger.MANUAL, "create", status=BuildStatus.BUILDING)
    for line in numbered_lines(2000):
        capped.append_log(build.id, line)
    running = capped.logs(build.id)

    def full_disk(build_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(capped.build_logs, "seal", full_disk)
    assert capped.finish(build.id, BuildStatus.SUCCESS).status is BuildStatus.SUCCESS
    assert Path(f"{capped.log_path(build.id)}.tail").exists()
    assert capped.logs(build.id) == running, "the side file stays, and reads join it in"
