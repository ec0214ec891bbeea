"""The API's pure parts: the token check, SSE framing, build streams, pagination, file declarations."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gitops.build import Build, BuildStatus, Trigger
from gitops.config import RepoSettings, Settings
from gitops.deployment_files import FileConflict, InvalidDeployment, create, delete
from gitops.errors import ConfigError, UnknownDeployment
from gitops.events import LogLine, PhaseEntered
from gitops.server import auth, sse
from gitops.server.api import ApiError, page
from gitops.server.broadcast import BuildStreams, Message


# -- auth ------------------------------------------------------------------------------

@pytest.mark.parametrize("token, header, client, expected", [
    ("s3", "Bearer s3", "10.0.0.5", None),
    ("s3", "bearer s3", "127.0.0.1", None),
    ("s3", None, "127.0.0.1", auth.Denied.MISSING),
    ("s3", "Basic s3", "127.0.0.1", auth.Denied.MISSING),
    ("s3", "Bearer ", "127.0.0.1", auth.Denied.MISSING),
    ("s3", "Bearer s4", "127.0.0.1", auth.Denied.WRONG),
    ("s3", "Bearer s33", "127.0.0.1", auth.Denied.WRONG),
    (None, None, "127.0.0.1", None),
    (None, None, "::1", None),
    (None, None, "::ffff:127.0.0.1", None),
    (None, "Bearer anything", "10.0.0.5", auth.Denied.NOT_LOOPBACK),
    ("", None, "192.168.1.2", auth.Denied.NOT_LOOPBACK),
    (None, None, None, auth.Denied.NOT_LOOPBACK),
])
def test_token_check(token, header, client, expected) -> None:
    assert auth.check(token, header, client) is expected


def test_a_proxied_request_is_not_a_loopback_one() -> None:
    assert auth.check(None, None, "127.0.0.1", forwarded=True) is auth.Denied.NOT_LOOPBACK
    assert auth.check("s3", "Bearer s3", "127.0.0.1", forwarded=True) is None


@pytest.mark.parametrize("listen", ["0.0.0.0:9000", "[::]:9000", ":9000", "192.168.1.2:80", "example.com:9000"])
def test_a_public_listen_needs_a_token(listen: str) -> None:
    with pytest.raises(ConfigError, match="api_token"):
        auth.check_listen(listen, None)
    auth.check_listen(listen, "t")


@pytest.mark.parametrize("listen", ["127.0.0.1:9000", "localhost:9000", "[::1]:9000", "127.0.0.2:1"])
def test_loopback_listen_needs_no_token(listen: str) -> None:
    auth.check_listen(listen, None)


def test_every_refusal_says_what_to_do() -> None:
    for denied in auth.Denied:
        assert "api_token" in denied.message() and "\n" not in denied.message()


# -- SSE --------------------------------------------------------------------------------

def test_frames_are_one_json_line_whatever_the_payload() -> None:
    nasty = "a\nb\r\n\ndata: fake\n\nevent: end"
    raw = sse.frame("log", {"line": nasty, "build": "b1"})
    assert raw.endswith(b"\n\n") and raw.count(b"\n") == 3
    assert raw.startswith(b"event: log\ndata: {")
    assert sse.parse(raw.decode()) == [("log", {"line": nasty, "build": "b1"})]


def test_parse_reads_several_frames_and_skips_comments() -> None:
    text = (sse.frame("build", {"build": "x"}) + sse.KEEPALIVE + sse.frame("end", {"id": "x"})).decode()
    assert sse.parse(text) == [("build", {"build": "x"}), ("end", {"id": "x"})]


@pytest.mark.parametrize("accept, expected", [
    ("text/event-stream", True), ("text/plain, text/event-stream;q=0.9", True),
    ("application/json", False), (None, False), ("*/*", False)])
def test_wants_stream(accept, expected) -> None:
    assert sse.wants_stream(accept) is expected


# -- build streams ------------------------------------------------------------------

def _collect(streams: BuildStreams, build_id: str) -> list[Message]:
    async def run() -> list[Message]:
        return [m async for m in streams.follow(build_id, keepalive=5) if m is not None]

    return asyncio.run(run())


def test_a_late_follower_gets_the_replay_then_the_rest() -> None:
    streams = BuildStreams()
    streams.publish(PhaseEntered("web", "building", build_id="b1"))
    streams.publish(LogLine("web", "one", build_id="b1"))
    streams.publish(LogLine("web", "ignored: no build"))

    def later() -> None:
        streams.publish(LogLine("web", "two", build_id="b1"))
        streams.finish("b1", {"id": "b1", "status": "SUCCESS"})

    timer = threading.Timer(0.2, later)
    timer.start()
    got = _collect(streams, "b1")
    timer.join()
    assert [(m.kind, m.data.get("line") or m.data.get("phase") or m.data.get("status")) for m in got] == [
        ("phase", "building"), ("log", "one"), ("log", "two"), ("end", "SUCCESS")]
    # After the end: the same, at once; later events for it are dropped.
    streams.publish(LogLine("web", "after", build_id="b1"))
    assert [m.kind for m in _collect(streams, "b1")] == ["phase", "log", "log", "end"]
    assert streams.subscribers("b1") == 0 and streams.open_builds() == []


def test_a_follower_that_leaves_is_unregistered() -> None:
    streams = BuildStreams()
    streams.open("b1", "web")

    async def leave_after_first() -> None:
        async for _ in streams.follow("b1", keepalive=0.05):
            assert streams.subscribers("b1") == 1
            break

    asyncio.run(leave_after_first())
    assert streams.subscribers("b1") == 0
    streams.publish(LogLine("web", "x", build_id="b1"))  # nobody waits: nothing blocks


def test_the_buffer_keeps_its_tail_and_says_what_it_cut() -> None:
    streams = BuildStreams(max_buffer_bytes=200)
    for i in range(50):
        streams.publish(LogLine("web", f"line {i}", build_id="b1"))
    streams.finish("b1", {"id": "b1"})
    got = _collect(streams, "b1")
    assert "earlier lines are in the stored log" in got[0].data["line"]
    assert got[-2].data["line"] == "line 49" and got[-1].kind == "end"


def test_a_trimmed_buffer_gets_its_head_from_the_stored_log() -> None:
    from gitops.server.broadcast import stored_head

    streams = BuildStreams(max_buffer_bytes=200)
    stored = ["==> building"] + [f"line {i}" for i in range(50)]
    streams.publish(PhaseEntered("web", "building", build_id="b1"))
    for i in range(50):
        streams.publish(LogLine("web", f"line {i}", build_id="b1"))
    streams.finish("b1", {"id": "b1"})

    async def run() -> list[Message]:
        head = lambda n: stored_head("\n".join(stored) + "\n", n, "b1")  # noqa: E731
        return [m async for m in streams.follow("b1", head=head) if m is not None]

    got = asyncio.run(run())
    assert [m.data.get("line") or m.data.get("phase") for m in got[:-1]] == ["building"] + stored[1:]
    assert got[-1].kind == "end"


def test_a_stored_head_cut_by_the_cap_is_not_used() -> None:
    from gitops.server.broadcast import stored_head

    text = "one\n[... kalpana: 10 bytes of output cut here ...]\nlast\n"
    assert stored_head(text, 1, "b") is not None
    assert stored_head(text, 2, "b") is None and stored_head(text, 9, "b") is None


def test_finished_channels_are_forgotten_beyond_the_limit() -> None:
    streams = BuildStreams(keep_finished=2)
    for i in range(3):
        streams.open(f"b{i}", "web")
        streams.finish(f"b{i}", {"id": f"b{i}"})
    assert not streams.known("b0") and streams.known("b1") and streams.known("b2")


# -- pagination -------------------------------------------------------------------------

def _builds(n: int) -> list[Build]:
    return [Build(id=f"b{i:02d}", deployment="web", status=BuildStatus.SUCCESS, triggered_by=Trigger.MANUAL,
                  action="deploy") for i in range(n, 0, -1)]  # newest first


def test_pages_walk_the_history_without_gaps_or_repeats() -> None:
    records = _builds(7)
    seen, before = [], None
    while True:
        result = page(records, 3, before, "web")
        seen += [b.id for b in result.builds]
        if result.next is None:
            break
        before = result.next
    assert seen == [b.id for b in records]


def test_the_last_full_page_has_no_next() -> None:
    assert page(_builds(3), 3, None, "web").next is None
    assert page(_builds(0), 3, None, "web").builds == []


def test_an_unknown_before_is_a_404_naming_it() -> None:
    with pytest.raises(ApiError) as caught:
        page(_builds(3), 3, "zz", "web")
    assert caught.value.status == 404 and "zz" in caught.value.detail


# -- declaring files --------------------------------------------------------------------

def _settings(tmp_path: Path, **extra) -> Settings:
    (tmp_path / "deployments.d").mkdir(exist_ok=True)
    return Settings(config_dir=tmp_path, default_image="img", **extra)


def test_create_writes_the_file_and_refuses_a_taken_name(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = create(settings, {"name": "web", "startCommand": "httpd", "port": 8080})
    assert path == tmp_path / "deployments.d" / "web.yaml" and "startCommand: httpd" in path.read_text()
    with pytest.raises(FileConflict, match="web.yaml"):
        create(settings, {"name": "web", "startCommand": "httpd"})
    assert sorted(p.name for p in (tmp_path / "deployments.d").iterdir()) == ["web.yaml"]


@pytest.mark.parametrize("body, field", [
    ({"name": "../etc/x", "startCommand": "x"}, "name"),
    ({"startCommand": "x"}, "name"),
    ({"name": "web", "port": 99999, "startCommand": "x"}, "port"),
    ({"name": "web", "startCommand": "x", "colour": "red"}, "colour"),
    ([1, 2], None),
])
def test_a_refused_body_names_its_field_and_leaves_no_file(tmp_path: Path, body, field) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(InvalidDeployment) as caught:
        create(settings, body)
    assert caught.value.field == field
    assert list((tmp_path / "deployments.d").iterdir()) == []


def test_a_port_another_file_declares_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    create(settings, {"name": "one", "startCommand": "x", "port": 80, "exposed_port": 8081})
    with pytest.raises(InvalidDeployment) as caught:
        create(settings, {"name": "two", "startCommand": "x", "port": 80, "exposed_port": 8081})
    assert caught.value.field == "exposed_port"
    assert not (tmp_path / "deployments.d" / "two.yaml").exists()


def test_git_sourced_files_are_not_written_nor_deleted(tmp_path: Path) -> None:
    settings = _settings(tmp_path, repo=RepoSettings(url="https://example.com/conf.git"))
    with pytest.raises(FileConflict, match="commit deployments.d/web.yaml"):
        create(settings, {"name": "web", "startCommand": "x"})


def test_delete_removes_the_file_and_knows_the_names(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = create(settings, {"name": "web", "startCommand": "x"})
    with pytest.raises(UnknownDeployment, match="known deployments: web"):
        delete(settings, "nope")
    assert delete(settings, "web") == path.resolve() and not path.exists()


def test_a_build_run_elsewhere_is_followed_through_its_stored_log() -> None:
    from gitops.server.broadcast import poll_stored

    reads = iter([("==> building\none\ntw", None), ("==> building\none\ntwo\n", None),
                  ("==> building\none\ntwo\nthree\n", {"id": "b1", "status": "SUCCESS"})])

    async def run() -> list[tuple[str, str]]:
        got = []
        async for m in poll_stored(lambda: next(reads), "b1", interval=0):
            if m is not None:
                got.append((m.kind, m.data.get("line") or m.data.get("phase") or m.data.get("status")))
        return got

    # A line still being written ("tw") is sent once whole, and only once.
    assert asyncio.run(run()) == [("phase", "building"), ("log", "one"), ("log", "two"), ("log", "three"),
                                  ("end", "SUCCESS")]


def test_a_history_snapshot_answers_as_the_history_does(tmp_path: Path) -> None:
    from gitops.history import History

    history = History(tmp_path)
    ids = [history.new_build(name, Trigger.MANUAL, "deploy").id for name in ("a", "b", "a")]
    history.set_stopped("b", True)
    history.assign_port("a", 8081)
    snapshot = history.snapshot()
    assert {n: b.id for n, b in snapshot.latest_per_deployment().items()} == \
        {n: b.id for n, b in history.latest_per_deployment().items()} == {"a": ids[2], "b": ids[1]}
    assert snapshot.stopped() == history.stopped() == {"b"}
    assert snapshot.assigned_ports() == history.assigned_ports() == {"a": 8081}
    assert set(snapshot.by_ids([ids[0], "nope"])) == set(history.by_ids([ids[0], "nope"])) == {ids[0]}


def test_a_deployments_directory_that_cannot_be_written_is_a_clear_conflict_not_a_500(tmp_path, monkeypatch):
    from gitops.config import load_settings

    (tmp_path / "deployments.d").mkdir()
    (tmp_path / "kalpana.yaml").write_text(f"instance: t-ro\nstate_dir: {tmp_path / 'state'}\n")
    settings = load_settings(str(tmp_path / "kalpana.yaml"), environ={})

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(FileConflict, match=r"cannot write \S*deployments.d/web.yaml: Permission denied"):
        create(settings, {"name": "web", "startCommand": "x"})
