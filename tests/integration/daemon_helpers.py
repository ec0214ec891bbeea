"""Helpers for the `kalpana watch` tests: a real git remote, the real daemon, real HTTP deliveries.

The daemon runs as a subprocess (``python -m gitops watch --log-format json``)
and its JSON log lines are the tests' view of what it did; GitHub is played by
``post_webhook``, which signs and sends a delivery shaped as GitHub sends it.
Nothing is mocked.

benchmarks/watch_daemon.py drives the daemon with these same pieces; they need
pytest importable, not a pytest run (``pytest.fail`` outside one is an exception).
"""

from __future__ import annotations

import hashlib
import http.client
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

INSTANCE_SECRET = "inst-secret"
DEPLOYMENT_SECRET = "s3cret"
HTTPD = "httpd -f -p 8080 -h /workspace"


def free_port() -> int:
    """A TCP port nobody listens on right now (the daemon binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- git ---------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    """Run git in ``cwd``; a failure fails the test with git's own words."""
    # No commit signing: a developer's global config must not make commits ask for a key.
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
                           "-c", "commit.gpgsign=false", *args],
                          cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}", pytrace=False)
    return done.stdout.strip()


class GitRemote:
    """A bare repository standing in for GitHub, and a work clone that commits and pushes to it."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.branch = branch
        root.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", "-b", branch, str(self.bare), cwd=root)
        git("init", "--quiet", "-b", branch, str(self.work), cwd=root)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        """What a deployment's ``source.repo`` names (a local path works as a URL)."""
        return str(self.bare)

    def commit(self, files: Mapping[str, str], message: str) -> str:
        """Write ``{relative path: content}``, commit everything; return the new SHA (not pushed)."""
        for rel, content in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, branch: str | None = None, rev: str = "HEAD") -> None:
        """Push ``rev`` to ``branch`` (default: the followed one) of the bare remote."""
        git("push", "--quiet", "origin", f"{rev}:refs/heads/{branch or self.branch}", cwd=self.work)

    def commit_and_push(self, files: Mapping[str, str], message: str, branch: str | None = None) -> str:
        sha = self.commit(files, message)
        self.push(branch)
        return sha

    def switch(self, branch: str, create: bool = False) -> None:
        git("checkout", "--quiet", *(["-b"] if create else []), branch, cwd=self.work)


def push_payload(remote: GitRemote | str, sha: str, message: str, branch: str | None = None, *,
                 full_name: str = "t/remote") -> dict[str, Any]:
    """A push event body with the fields GitHub sends (and Kalpana reads), for a push of ``sha``.

    ``remote`` may be a bare clone URL, for a repository no GitRemote stands for
    (its default branch is then main); ``full_name`` is the repository's owner/name.
    """
    url, default_branch = (remote.url, remote.branch) if isinstance(remote, GitRemote) else (remote, "main")
    branch = branch or default_branch
    return {
        "ref": f"refs/heads/{branch}",
        "before": "1" * 40,
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        "compare": f"https://github.com/{full_name}/compare/{sha[:12]}",
        "repository": {
            "id": 1,
            "name": full_name.rsplit("/", 1)[-1],
            "full_name": full_name,
            "private": False,
            "clone_url": url,
            "default_branch": default_branch,
        },
        "pusher": {"name": "t", "email": "t@t"},
        "head_commit": {"id": sha, "tree_id": "2" * 40, "distinct": True, "message": message,
                        "timestamp": "2024-01-01T00:00:00Z", "author": {"name": "t", "email": "t@t"}},
        "commits": [{"id": sha, "message": message}],
    }


# -- webhooks ----------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` signed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(body: bytes, secret: str | None, *, event: str = "push", delivery: str | None = None,
                     sign_with: str | None = None, signed_body: bytes | None = None) -> dict[str, str]:
    """The headers of a delivery of ``body``, as GitHub sends them; unsigned when there is no secret.

    ``sign_with`` signs with another secret; ``signed_body`` signs other bytes
    than those sent (a body changed in transit).
    """
    headers = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/test",
               "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-GitHub-Hook-ID": "1"}
    key = sign_with if sign_with is not None else secret
    if key is not None:
        headers["X-Hub-Signature-256"] = signature(key, body if signed_body is None else signed_body)
    return headers


def post_webhook(url: str, payload: Mapping[str, Any] | bytes, *, secret: str | None,
                 event: str = "push", delivery: str | None = None, sign_with: str | None = None,
                 signed_body: bytes | None = None, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """POST a delivery as GitHub does (headers as ``delivery_headers``); (status, JSON answer)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = delivery_headers(body, secret, event=event, delivery=delivery, sign_with=sign_with,
                               signed_body=signed_body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        answer = {"raw": raw.decode("utf-8", "replace")}
    return status, answer


# -- the daemon ----------------------------------------------------------------


class Daemon:
    """`kalpana watch --log-format json` as a subprocess; its stderr events are read in a thread.

    ``project`` has ``root``, ``config_path`` and ``env()`` (the tests' and the
    benchmarks' KalpanaProject both do). With ``timestamps`` each event also
    gets ``_seen`` (epoch seconds when read here) and ``_t`` (its own ``time``
    as epoch seconds); with ``new_session`` the daemon leads a process group of
    its own, which ``terminate`` kills whole when it has to.
    """

    def __init__(self, project, listen: str | None, *, timestamps: bool = False, new_session: bool = False) -> None:
        self.project = project
        self.listen = listen
        self.base_url = f"http://{listen}" if listen else None
        self.base_port = int(listen.rsplit(":", 1)[1]) if listen else None
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []  # every stderr line, JSON or not (a traceback is not)
        self._timestamps = timestamps
        self._new_session = new_session
        self._cond = threading.Condition()
        self._last_at = time.monotonic()
        args = ["watch", "--log-format", "json"] + ([] if listen else ["--no-server"])
        cmd = [sys.executable, "-m", "gitops", "-c", str(project.config_path), *args]
        self.process = subprocess.Popen(cmd, cwd=project.root, env=project.env(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=new_session,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.pid = self.process.pid
        self._reader = threading.Thread(target=self._read, name="daemon-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            seen = time.time()
            line = line.rstrip("\n")
            with self._cond:
                self.raw.append(line)
                self._last_at = time.monotonic()
                try:
                    data = json.loads(line)
                except ValueError:
                    data = None
                if isinstance(data, dict) and "event" in data:
                    if self._timestamps:
                        data["_seen"] = seen
                        try:
                            data["_t"] = _epoch(data["time"])
                        except (KeyError, ValueError, TypeError):
                            data["_t"] = seen
                    self.events.append(data)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # -- reading the log --

    def mark(self) -> int:
        """A position in the event list: ``since(mark)`` is what happened after it."""
        with self._cond:
            return len(self.events)

    def since(self, mark: int = 0, event: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            found = self.events[mark:]
        return [e for e in found if event is None or e.get("event") == event]

    def log_tail(self, lines: int = 60) -> str:
        with self._cond:
            return "\n".join(self.raw[-lines:])

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 90,
                 what: str = "an event") -> dict[str, Any]:
        """The first event after ``after`` that satisfies ``predicate``; fails (with the log) at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                if self.process.poll() is not None and not self._reader.is_alive():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        state = "still running" if self.process.poll() is None else f"exited {self.process.returncode}"
        raise AssertionError(f"daemon ({state}): no {what} within {timeout}s; its log:\n{self.log_tail()}")

    def wait_event(self, name: str, *, after: int = 0, timeout: float = 90, **fields: Any) -> dict[str, Any]:
        """The first ``name`` event after ``after`` whose fields equal ``fields``."""
        return self.wait_for(lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items()),
                             after=after, timeout=timeout, what=f"{name!r} event {fields or ''}")

    def wait_ready(self, timeout: float = 90) -> None:
        """Listening (when serving) and the start-up run finished."""
        if self.listen:
            self.wait_for(lambda e: e.get("event") == "info" and "webhooks on http://" in e.get("message", ""),
                          timeout=timeout, what="'webhooks on http://...' line")
        self.wait_event("job_done", timeout=timeout)
        self.wait_idle(timeout=timeout)

    def wait_idle(self, quiet: float = 2.5, timeout: float = 120, interval: float = 0.2) -> None:
        """Every run the daemon started has ended and nothing was logged for ``quiet`` seconds.

        ``quiet`` exceeds the queue's longest coalescing wait (2 s), so work
        that was accepted but not started yet shows up before we call it idle.
        A daemon that exits before that fails at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                starts = sum(1 for e in self.events if e.get("event") == "job_start")
                dones = sum(1 for e in self.events if e.get("event") == "job_done")
                silent = time.monotonic() - self._last_at
            if starts == dones and silent >= quiet:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode} with {starts} runs started, "
                                     f"{dones} ended; its log:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"daemon not idle within {timeout}s ({starts} runs started, {dones} ended, "
                                     f"last line {silent:.1f}s ago); its log:\n{self.log_tail()}")
            time.sleep(interval)

    # -- talking to it --

    def webhook_url(self, name: str | None = None) -> str:
        assert self.base_url, "this daemon runs with --no-server"
        return f"{self.base_url}/webhook" if name is None else f"{self.base_url}/api/deployments/{name}/webhook"

    def post(self, name: str | None, payload: Mapping[str, Any] | bytes, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """POST a delivery to a deployment's webhook (or the instance's when ``name`` is None)."""
        return post_webhook(self.webhook_url(name), payload, **kwargs)

    # -- stopping --

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:  # it ended meanwhile
                pass

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, on_kill: Callable[[], None] | None = None) -> int | None:
        """SIGTERM, wait, then SIGKILL: never leave a daemon behind that would heal what cleanup removes.

        With ``new_session`` the SIGKILL goes to its whole process group (a
        child `kalpana apply` too). ``on_kill`` is called before a SIGKILL.
        Returns the exit code.
        """
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait_exit(60) is None:
                if on_kill is not None:
                    on_kill()
                if self._new_session:
                    os.killpg(self.pid, signal.SIGKILL)
                else:
                    self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        return self.process.returncode


def _epoch(text: str) -> float:
    """An ISO 8601 time of the daemon's log (``Z`` or an offset) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def start_daemon(kalpana_project) -> Iterator[Callable[..., Daemon]]:
    """Start `kalpana watch` for the project (``serve=False`` for --no-server); stopped after the test.

    Depends on ``kalpana_project`` so that it is torn down first: the daemon is
    gone before the instance's containers are removed.
    """
    started: list[Daemon] = []

    def start(serve: bool = True, wait: bool = True, **settings: Any) -> Daemon:
        listen = f"127.0.0.1:{free_port()}" if serve else None
        config = {"drift_interval": 1, "poll_interval": 3600, "debounce": 0.1, **settings}
        if listen:
            config["listen"] = listen
        kalpana_project.write_config(**config)
        daemon = Daemon(kalpana_project, listen)
        started.append(daemon)
        if wait:
            daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.terminate()


# -- deployments -----------------------------------------------------------------


def git_site_spec(name: str, remote: GitRemote, **overrides: Any) -> dict[str, Any]:
    """A busybox httpd deployment serving ``app/`` of ``remote``, rebuilt by signed pushes."""
    spec: dict[str, Any] = {
        "name": name,
        "source": {"repo": remote.url, "subdir": "app"},
        "start_command": HTTPD,
        "port": 8080,
        "auto_rebuild": True,
        "webhook_secret": DEPLOYMENT_SECRET,
        "healthcheck": {"timeout": 5},
    }
    spec.update(overrides)
    return spec


def fetch(port: int, path: str = "/", timeout: float = 3) -> tuple[int, str] | None:
    """One GET of http://127.0.0.1:<port><path>: (status, body), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return None


def wait_serving(port: int, content: str, timeout: float = 60) -> None:
    """Poll until GET / on ``port`` answers 200 with exactly ``content``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = fetch(port)
        if answer == (200, content):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"port {port} not serving {content!r} within {timeout}s; last answer: {answer!r}")
        time.sleep(0.3)


def process_alive(pid: int | None) -> bool:
    """Is process ``pid`` running (a zombie waiting to be reaped counts as ended)?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(check: Callable[[], Any], *, timeout: float = 60, interval: float = 0.3, what: str = "it") -> Any:
    """Poll ``check`` until it returns something truthy; its last exception or value is in the failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (AssertionError, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s; last: {last!r}")
        time.sleep(interval)


@dataclass
class Site:
    """A deployment ``site`` built from ``app/`` of a git remote, applied and serving ``v1``."""

    remote: GitRemote
    port: int
    first: str  # the deployed commit


@pytest.fixture
def site(kalpana_project, tmp_path) -> Site:
    """The ``site`` deployment, applied from a fresh git remote (a bare repository on disk)."""
    from .helpers import get, host_port

    p = kalpana_project
    remote = GitRemote(tmp_path / "git")
    first = remote.commit_and_push({"app/index.html": "v1", "app/build.sh": "echo built\n"}, "first version")
    p.write_deployment("site", git_site_spec("site", remote, build_command="sh build.sh"))
    p.run("apply")
    port = host_port(p, "site")
    assert get(p, port) == "v1"
    return Site(remote, port, first)
