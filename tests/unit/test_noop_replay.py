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
from gitops.errors import DockerUnavailable
from gitops.file_lock import FileLock
from gitops.runtime.docker_runtime import DockerRuntime
from gitops.runtime.socket_api import APIStatus
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
        # Docker's answers, raw: the fingerprint's own code reads them as it reads the engine's.
        monkeypatch.setattr(DockerRuntime, "listings", lambda runtime, instance: (
            [dict(c) for c in self.containers], [dict(i) for i in self.images]))
        self.mp = monkeypatch
        monkeypatch.chdir(root)
        monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        for name in list(os.environ):
            if name.startswith("KALPANA_"):
                monkeypatch.delenv(name)
        (root / "web.env").write_text("GREETING=hi\n")
        settings = SimpleNamespace(deployments_path=root / "deployments.d", state_path=root / ".kalpana",
                                   routes_path=root / ".kalpana" / "traefik-routes", instance="t",
                                   config_dir=root, deployments_dir=Path("deployments.d"), state_dir=Path(".kalpana"),
                                   workspace=Path("."), workspace_path=root)
        spec = SimpleNamespace(env_file="../web.env", source=SimpleNamespace(path="web"))
        load = SimpleNamespace(desired={"web": SimpleNamespace(spec=spec, file="deployments.d/web.yaml")})
        self.base = noop_replay.inputs_of(str(self.config), settings, "unix:///x.sock")
        self.inputs = noop_replay.with_sources(noop_replay.inputs_of(str(self.config), settings, "unix:///x.sock",
                                                                     load),
                                               [Revision("content:1", path=root / "web"), Revision("")])
        # Recording asks inputs to be older than the run's start and SETTLE_SECONDS: the tests set the start.
        monkeypatch.setattr(noop_replay, "SETTLE_SECONDS", 0.0)

    def fingerprint(self) -> str:
        return noop_replay.fingerprint(self.inputs)

    def record(self, text: str = "0 changed, 0 failed, 1 unchanged\n", start: str | None = None,
               started: float | None = None, sources_unchanged=lambda: True) -> bool:
        started = time.time() if started is None else started
        before = noop_replay.settings_part(str(self.config))
        start = start or noop_replay.fingerprint(self.base)
        return noop_replay.record(self.inputs, self.base, before, start, started, text, '{"ok": true}\n',
                                  sources_unchanged)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    return Workspace(tmp_path, monkeypatch)


def _touch_later(path: Path) -> None:
    later = time.time() + 5  # a later mtime, whatever the clock's tick
    os.utime(path, (later, later))


CHANGES = {
    "config bytes": lambda ws: ws.config.write_text("instance: t\nstop_timeout: 3\n"),
    ".env beside the config": lambda ws: (ws.root / ".env").write_text("KALPANA_STOP_TIMEOUT=3\n"),
    "a KALPANA_ variable": lambda ws: ws.mp.setenv("KALPANA_STOP_TIMEOUT", "3"),
    "the settings file reached through another directory": lambda ws: _relink_config(ws),
    "TRAEFIK_BASE_URL": lambda ws: ws.mp.setenv("TRAEFIK_BASE_URL", "example.com"),
    "DOCKER_HOST": lambda ws: ws.mp.setenv("DOCKER_HOST", "unix:///other.sock"),
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
    "the working directory": lambda ws: ws.mp.chdir(ws.root / "web"),
    "an env file outside the deployments directory": lambda ws: (ws.root / "web.env").write_text("GREETING=ho\n"),
    "any other variable (a token_env, ${VAR} in an env file, GIT_*)": lambda ws: ws.mp.setenv("RV_TOKEN", "1"),
    "a build log's name": lambda ws: ((ws.root / ".kalpana" / "logs").mkdir(),
                                      (ws.root / ".kalpana" / "logs" / "orphan.log").write_text("")),
    "where a symlinked source leads": lambda ws: _relink(ws.root / "web", ws.root / "web2"),
    "a file rewritten with its size and mtime put back": lambda ws: _rewrite_keeping_mtime(ws.root / "web" / "index.html"),
}


def _relink_config(ws) -> None:
    # kalpana.yaml is now reached through a symlink to a copy: the same bytes, another directory.
    copy = ws.root / "release"
    copy.mkdir()
    (copy / "kalpana.yaml").write_text(ws.config.read_text())
    ws.config.unlink()
    os.symlink(copy / "kalpana.yaml", ws.config)


def _relink(path: Path, other: Path) -> None:
    # web becomes a symlink to a copy with the same bytes, sizes and mtimes: only where it leads differs.
    os.rename(path, other)
    os.symlink(other.name, path)


def _rewrite_keeping_mtime(path: Path) -> None:
    st = path.stat()
    path.write_text("v9")  # same size as "v1"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what cp -p, rsync -t or touch -r would do
    time.sleep(0.01)  # (the ctime ticks coarsely)


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


def test_shell_and_terminal_variables_are_not_a_change(ws, monkeypatch):
    before = ws.fingerprint()
    monkeypatch.setenv("COLUMNS", "91")
    monkeypatch.setenv("OLDPWD", "/elsewhere")
    assert ws.fingerprint() == before


def test_a_gitignore_above_a_source_that_uncovers_a_file_is_a_change(ws):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(ws.root)]
    (ws.root / ".gitignore").write_text("*.log\n")
    (ws.root / "web" / "debug.log").write_text("x")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    before = ws.fingerprint()
    (ws.root / ".gitignore").write_text("*.tmp\n")  # outside the source, changes what git status says of it
    assert ws.fingerprint() != before


def test_a_file_rewritten_with_the_same_bytes_and_a_later_mtime_is_a_change_in_a_source(ws):
    before = ws.fingerprint()
    _touch_later(ws.root / "web" / "index.html")
    assert ws.fingerprint() != before


def test_a_commit_of_a_source_inside_a_repository_changes_the_fingerprint(ws):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(ws.root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "web"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    unrelated = ws.fingerprint()
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "two"], check=True)
    assert ws.fingerprint() == unrelated, "a commit that does not touch the source leaves its revision alone"
    (ws.root / "web" / "index.html").write_text("v2")
    dirty = ws.fingerprint()
    subprocess.run([*git, "commit", "-qam", "three"], check=True)  # no file of the source changes now
    assert ws.fingerprint() != dirty


def test_a_settled_noop_is_replayed_as_recorded(ws):
    assert ws.record()
    assert noop_replay.replay(str(ws.config), as_json=False) == "0 changed, 0 failed, 1 unchanged\n"
    assert noop_replay.replay(str(ws.config), as_json=True) == '{"ok": true}\n'
    ws.containers[0]["State"] = "exited"
    assert noop_replay.replay(str(ws.config), as_json=False) is None


@pytest.mark.parametrize("young", ["web/index.html", ".kalpana/history.json", "web.env"])
def test_nothing_is_recorded_while_a_file_is_younger_than_the_settle_time(ws, monkeypatch, young):
    monkeypatch.setattr(noop_replay, "SETTLE_SECONDS", 60.0)
    (ws.root / young).write_text((ws.root / young).read_text())  # written now
    assert not ws.record()
    assert noop_replay.replay(str(ws.config), as_json=False) is None


@pytest.mark.parametrize("changed", ["web/index.html", "web.env"])
def test_nothing_is_recorded_when_a_file_changed_after_the_run_began(ws, changed):
    started = time.time()
    time.sleep(0.02)  # (ctime ticks coarsely)
    (ws.root / changed).write_text("changed")
    assert not ws.record(started=started)


def test_nothing_is_recorded_when_something_changed_during_the_run(ws):
    start = noop_replay.fingerprint(ws.base)
    ws.containers[0]["State"] = "restarting"
    assert not ws.record(start=start)


def test_nothing_is_recorded_when_the_settings_changed_before_they_were_loaded(ws):
    before = noop_replay.settings_part(str(ws.config))
    ws.config.write_text("instance: t2\n")  # what the run loaded is not what "before" saw
    start = noop_replay.fingerprint(ws.base)
    assert not noop_replay.record(ws.inputs, ws.base, before, start, time.time(), "x", "{}", lambda: True)


def test_nothing_is_recorded_when_a_source_resolves_otherwise_after_the_walk(ws):
    assert not ws.record(sources_unchanged=lambda: False)


def test_no_replay_while_another_apply_holds_the_lock(ws):
    assert ws.record()
    lock = FileLock(str(ws.root / ".kalpana" / "apply.lock")).acquire()
    try:
        assert noop_replay.replay(str(ws.config), as_json=False) is None
    finally:
        lock.release()
    assert noop_replay.replay(str(ws.config), as_json=False) is not None


def test_no_replay_when_turned_off_or_the_record_is_unreadable(ws, monkeypatch):
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
    assert ws.record()
    other = tmp_path / "other.yaml"
    other.write_text("instance: t\n")
    assert noop_replay.replay(str(other), as_json=False) is None
    ws.mp.chdir(ws.root / "web")  # the same file, from elsewhere: the output's relative paths would differ
    assert noop_replay.replay(str(ws.config), as_json=False) is None


def test_a_source_too_large_to_walk_is_never_recorded(ws, monkeypatch):
    monkeypatch.setattr(noop_replay, "MAX_ENTRIES", 1)
    assert not ws.record()


@pytest.mark.parametrize("failure", [ConnectionRefusedError(111, "Connection refused"),
                                     DockerUnavailable("Docker is not running"),
                                     APIStatus(500, "server error")])
def test_no_replay_when_docker_does_not_answer(ws, monkeypatch, failure):
    assert ws.record()

    def down(runtime, instance):
        raise failure

    monkeypatch.setattr(DockerRuntime, "listings", down)
    assert noop_replay.replay(str(ws.config), as_json=False) is None  # the full apply then says what is wrong


@pytest.mark.parametrize("value, off", [("1", True), ("true", True), ("0", False), ("", False), ("no", False)])
def test_replays_are_turned_off_by_a_true_value(value, off):
    assert noop_replay.disabled({noop_replay.DISABLE_ENV: value}) is off


def test_a_record_that_is_not_an_object_is_no_replay(ws):
    assert ws.record()
    noop_replay.record_path(noop_replay.config_path(str(ws.config))).write_text("null")
    assert noop_replay.replay(str(ws.config), as_json=False) is None
