"""The fingerprint behind a replayed no-op apply (gitops.noop_replay): every input it must see.

Docker is faked here (its listing is one function); tests/integration/test_noop_replay.py runs
the whole thing against the real engine and CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gitops import noop_replay
from gitops.file_lock import FileLock
from gitops.source import Revision


class Workspace:
    """kalpana.yaml, deployments.d/ with one file, a source directory, a state directory and a fake Docker."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.config = root / "kalpana.yaml"
        self.config.write_text("instance: t\n")
        (root / "deployments.d").mkdir()
        (root / "deployments.d" / "web.yaml").write_text("name: web\nsource: web\n")
        (root / "web").mkdir()
        (root / "web" / "index.html").write_text("v1")
        (root / ".kalpana").mkdir()
        (root / ".kalpana" / "history.json").write_text("{}")
        self.containers = [{"Id": "c1", "Names": ["/t_web"], "State": "running", "Status": "Up 5 seconds",
                            "Labels": {"dev.kalpana.instance": "t"}}]
        self.images = [{"Id": "sha256:1", "RepoTags": ["kalpana/t/web:1"], "Labels": {}, "Created": 1}]
        monkeypatch.setattr(noop_replay, "_docker", lambda address, instance: [
            sorted(({k: v for k, v in c.items() if k != "Status"} for c in self.containers), key=lambda c: c["Id"]),
            [[i["Id"], i["RepoTags"], i["Labels"], i["Created"]] for i in self.images]])
        monkeypatch.chdir(root)
        monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        for name in list(os.environ):
            if name.startswith("KALPANA_"):
                monkeypatch.delenv(name)
        settings = SimpleNamespace(deployments_path=root / "deployments.d", state_path=root / ".kalpana",
                                   routes_path=root / ".kalpana" / "traefik-routes", instance="t")
        self.inputs = noop_replay.with_sources(noop_replay.inputs_of(str(self.config), settings, "unix:///x.sock"),
                                               [Revision("content:1", path=root / "web"), Revision("")])

    def settle(self) -> None:
        past = time.time() - 10
        for path in [self.root, *self.root.rglob("*")]:
            os.utime(path, (past, past), follow_symlinks=False)

    def fingerprint(self) -> str:
        return noop_replay.fingerprint(self.inputs)

    def record(self, text: str = "0 changed, 0 failed, 1 unchanged\n", start: str | None = None,
               sources_unchanged=lambda: True) -> bool:
        start = start or noop_replay.fingerprint({**self.inputs, "sources": []})
        return noop_replay.record(self.inputs, start, text, '{"ok": true}\n', sources_unchanged)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    return Workspace(tmp_path, monkeypatch)


def _touch_later(path: Path) -> None:
    later = time.time() + 5  # a later mtime, whatever the clock's tick
    os.utime(path, (later, later))


CHANGES = {
    "config bytes": lambda ws: ws.config.write_text("instance: t\nstop_timeout: 3\n"),
    ".env beside the config": lambda ws: (ws.root / ".env").write_text("KALPANA_STOP_TIMEOUT=3\n"),
    "a KALPANA_ variable": lambda ws: os.environ.__setitem__("KALPANA_STOP_TIMEOUT", "3"),
    "TRAEFIK_BASE_URL": lambda ws: os.environ.__setitem__("TRAEFIK_BASE_URL", "example.com"),
    "DOCKER_HOST": lambda ws: os.environ.__setitem__("DOCKER_HOST", "unix:///other.sock"),
    "a deployment file's bytes": lambda ws: (ws.root / "deployments.d" / "web.yaml").write_text(
        "name: web\nsource: web\nport: 81\n"),
    "a new deployment file": lambda ws: (ws.root / "deployments.d" / "api.yaml").write_text("name: api\n"),
    "a removed deployment file": lambda ws: (ws.root / "deployments.d" / "web.yaml").unlink(),
    "a file in a source": lambda ws: (ws.root / "web" / "index.html").write_text("v2"),
    "a new file in a source": lambda ws: (ws.root / "web" / "app.js").write_text(""),
    "a file's mode in a source": lambda ws: (ws.root / "web" / "index.html").chmod(0o755),
    "the history": lambda ws: (ws.root / ".kalpana" / "history.json").write_text('{"intents": {}}'),
    "a route file": lambda ws: ((ws.root / ".kalpana" / "traefik-routes").mkdir(),
                                (ws.root / ".kalpana" / "traefik-routes" / "web.yml").write_text("")),
    "a container's state": lambda ws: ws.containers[0].update(State="exited"),
    "a container's labels": lambda ws: ws.containers[0].update(Labels={"dev.kalpana.instance": "t", "x": "1"}),
    "a new container": lambda ws: ws.containers.append({"Id": "c2", "State": "created"}),
    "a removed container": lambda ws: ws.containers.clear(),
    "an image": lambda ws: ws.images.clear(),
    "the working directory": lambda ws: os.chdir(ws.root / "web"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_every_input_changes_the_fingerprint(ws, change):
    before = ws.fingerprint()
    assert ws.fingerprint() == before  # nothing changed: the same
    CHANGES[change](ws)
    assert ws.fingerprint() != before


def test_what_docker_says_of_uptime_is_not_a_change(ws):
    before = ws.fingerprint()
    ws.containers[0]["Status"] = "Up 5 minutes"
    assert ws.fingerprint() == before


def test_a_file_rewritten_with_the_same_bytes_and_a_later_mtime_is_a_change_in_a_source(ws):
    before = ws.fingerprint()
    _touch_later(ws.root / "web" / "index.html")
    assert ws.fingerprint() != before


def test_a_git_commit_changes_the_fingerprint_of_a_source_inside_the_repository(ws):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(ws.root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "web"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    before = ws.fingerprint()
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "two"], check=True)  # no file changed
    assert ws.fingerprint() != before


def test_a_settled_noop_is_replayed_as_recorded(ws):
    ws.settle()
    assert ws.record()
    assert noop_replay.replay(str(ws.config), as_json=False) == "0 changed, 0 failed, 1 unchanged\n"
    assert noop_replay.replay(str(ws.config), as_json=True) == '{"ok": true}\n'
    ws.containers[0]["State"] = "exited"
    assert noop_replay.replay(str(ws.config), as_json=False) is None


@pytest.mark.parametrize("young", ["web/index.html", ".kalpana/history.json"])
def test_nothing_is_recorded_while_a_file_is_younger_than_the_settle_time(ws, young):
    ws.settle()
    (ws.root / young).write_text((ws.root / young).read_text())  # written now: mtime is now
    assert not ws.record()
    assert noop_replay.replay(str(ws.config), as_json=False) is None


def test_nothing_is_recorded_when_something_changed_during_the_run(ws):
    ws.settle()
    start = noop_replay.fingerprint({**ws.inputs, "sources": []})
    ws.containers[0]["State"] = "restarting"
    assert not ws.record(start=start)


def test_nothing_is_recorded_when_a_source_resolves_otherwise_after_the_walk(ws):
    ws.settle()
    assert not ws.record(sources_unchanged=lambda: False)


def test_no_replay_while_another_apply_holds_the_lock(ws):
    ws.settle()
    assert ws.record()
    lock = FileLock(str(ws.root / ".kalpana" / "apply.lock")).acquire()
    try:
        assert noop_replay.replay(str(ws.config), as_json=False) is None
    finally:
        lock.release()
    assert noop_replay.replay(str(ws.config), as_json=False) is not None


def test_no_replay_when_turned_off_or_the_record_is_unreadable(ws, monkeypatch):
    ws.settle()
    assert ws.record()
    monkeypatch.setenv(noop_replay.DISABLE_ENV, "1")
    assert noop_replay.replay(str(ws.config), as_json=False) is None
    monkeypatch.delenv(noop_replay.DISABLE_ENV)
    path = noop_replay.record_path(noop_replay.config_path(str(ws.config)))
    path.write_text("{not json")
    assert noop_replay.replay(str(ws.config), as_json=False) is None
    path.write_text(json.dumps({"format": 1}))
    assert noop_replay.replay(str(ws.config), as_json=False) is None


def test_a_record_belongs_to_one_config_file_and_directory(ws, tmp_path):
    ws.settle()
    assert ws.record()
    other = tmp_path / "other.yaml"
    other.write_text("instance: t\n")
    assert noop_replay.replay(str(other), as_json=False) is None
    os.chdir(ws.root / "web")  # the same file, from elsewhere: the output's relative paths would differ
    assert noop_replay.replay(str(ws.config), as_json=False) is None


def test_a_source_too_large_to_walk_is_never_recorded(ws, monkeypatch):
    ws.settle()
    monkeypatch.setattr(noop_replay, "MAX_ENTRIES", 1)
    assert not ws.record()
