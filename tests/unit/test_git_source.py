"""Git sources with real git: a local bare repository is the remote, commits are pushed to it."""

from __future__ import annotations

import base64
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dropped_interrupt import drop_an_interrupt, watch_unraisable

from gitops.errors import SourceError
import gitops.source
from gitops.source import FetchFailed, GitCheckout, repo_key, resolve
from gitops.spec import SourceSpec

IDENTITY = ["-c", "user.name=Kalpana Test", "-c", "user.email=test@kalpana.invalid", "-c", "commit.gpgsign=false"]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path_factory, monkeypatch):
    """No user or system git configuration leaks into these tests (hooks, templates, default branch)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


class Remote:
    """A bare repository and a working clone that commits and pushes to it."""

    def __init__(self, root: Path, branch: str = "main"):
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.bare.mkdir()
        git(self.bare, "init", "--quiet", "--bare", f"--initial-branch={branch}")
        git(root, "clone", "--quiet", str(self.bare), str(self.work))
        git(self.work, "checkout", "--quiet", "-B", branch)
        self.branch = branch

    def commit(self, files: dict[str, str | None], message: str, *, push: bool = True,
               branch: str | None = None) -> str:
        """Write (or delete, for None) files, commit and push; returns the new commit SHA."""
        if branch:
            git(self.work, "checkout", "--quiet", branch)
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        git(self.work, "add", "--all")
        git(self.work, "commit", "--quiet", "-m", message)
        if push:
            git(self.work, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch or self.current()}")
        return git(self.work, "rev-parse", "HEAD")

    def current(self) -> str:
        return git(self.work, "rev-parse", "--abbrev-ref", "HEAD")

    def branch_off(self, name: str) -> None:
        git(self.work, "checkout", "--quiet", "-b", name)


@pytest.fixture
def remote(tmp_path) -> Remote:
    remote = Remote(tmp_path)
    remote.first = remote.commit({"app/index.html": "v1\n", "README.md": "hello\n"}, "First version\n\nWith a body.")
    return remote


@pytest.fixture
def checkouts(tmp_path) -> Path:
    return tmp_path / "state" / "checkouts"


def only_checkout(checkouts: Path) -> Path:
    entries = sorted(checkouts.iterdir())
    assert len(entries) == 1, f"expected one checkout, found {[e.name for e in entries]}"
    return entries[0]


# -- resolve() of a repo source ------------------------------------------------------


def test_resolve_clones_once_and_returns_the_commit(remote, checkouts, tmp_path):
    spec = SourceSpec(repo=str(remote.bare))
    revision = resolve(spec, tmp_path, checkouts)
    checkout = only_checkout(checkouts)
    assert revision.revision == remote.first
    assert revision.commit_hash == remote.first
    assert revision.commit_message == "First version"
    assert revision.branch == "main"
    assert revision.path == checkout
    assert (checkout / "app" / "index.html").read_text() == "v1\n"

    marker = checkout / ".git" / "kalpana-test-marker"
    marker.write_text("cloned once")
    again = resolve(spec, tmp_path, checkouts)
    assert again == revision
    assert marker.exists(), "the second resolve cloned again"
    assert only_checkout(checkouts) == checkout


def test_resolve_never_fetches(remote, checkouts, tmp_path):
    spec = SourceSpec(repo=str(remote.bare))
    resolve(spec, tmp_path, checkouts)
    remote.commit({"app/index.html": "v2\n"}, "Second version")
    assert resolve(spec, tmp_path, checkouts).commit_hash == remote.first  # a plan never waits on the network


@pytest.mark.parametrize("spelling", ["path", "file-url"])
def test_resolve_accepts_a_local_path_or_file_url(remote, checkouts, tmp_path, spelling):
    url = str(remote.bare) if spelling == "path" else f"file://{remote.bare}"
    assert resolve(SourceSpec(repo=url), tmp_path, checkouts).commit_hash == remote.first


def test_resolve_without_a_state_directory(remote, tmp_path):
    with pytest.raises(SourceError, match="state directory"):
        resolve(SourceSpec(repo=str(remote.bare)), tmp_path, None)


def test_resolve_of_a_missing_subdir_says_so(remote, checkouts, tmp_path):
    with pytest.raises(SourceError, match="nowhere"):
        resolve(SourceSpec(repo=str(remote.bare), subdir="nowhere"), tmp_path, checkouts)


def test_clone_of_a_missing_remote_fails_cleanly(tmp_path, checkouts):
    with pytest.raises(SourceError) as caught:
        resolve(SourceSpec(repo=str(tmp_path / "no-such-repo.git")), tmp_path, checkouts)
    assert "clone" in str(caught.value)
    assert not checkouts.exists() or list(checkouts.iterdir()) == [], "a failed clone left a directory behind"


# -- monorepo: the revision of a subdirectory ------------------------------------------------


def test_subdir_revision_is_the_last_commit_touching_it(remote, checkouts, tmp_path):
    spec = SourceSpec(repo=str(remote.bare), subdir="app")
    checkout = GitCheckout.for_source(spec, checkouts)
    first = resolve(spec, tmp_path, checkouts)
    assert first.revision == remote.first
    assert first.path == checkout.path / "app"

    elsewhere = remote.commit({"README.md": "hello again\n", "api/main.py": "print(1)\n"}, "Touch the api only")
    checkout.sync()
    assert checkout.head() == elsewhere
    unchanged = resolve(spec, tmp_path, checkouts)
    assert unchanged.revision == remote.first, "a commit outside the subdir changed its revision"
    assert unchanged.commit_message == "First version"

    touched = remote.commit({"app/index.html": "v2\n"}, "Change the app")
    checkout.sync()
    changed = resolve(spec, tmp_path, checkouts)
    assert changed.revision == touched
    assert changed.commit_message == "Change the app"
    # The repository's root follows every commit.
    assert resolve(SourceSpec(repo=str(remote.bare)), tmp_path, checkouts).revision == touched


# -- sync(): fetch + hard reset ---------------------------------------------------------------


def make_checkout(remote: Remote, checkouts: Path, branch: str | None = None) -> GitCheckout:
    checkout = GitCheckout.for_source(SourceSpec(repo=str(remote.bare), branch=branch), checkouts)
    checkout.clone()
    return checkout


def test_sync_without_a_checkout_clones(remote, checkouts):
    checkout = GitCheckout.for_source(SourceSpec(repo=str(remote.bare)), checkouts)
    assert not checkout.exists()
    assert checkout.sync() == (remote.first, remote.first)
    assert checkout.exists()


def test_sync_follows_a_push(remote, checkouts):
    checkout = make_checkout(remote, checkouts)
    second = remote.commit({"app/index.html": "v2\n", "app/new.txt": "new\n"}, "Second version")
    assert checkout.sync() == (remote.first, second)
    assert checkout.head() == second
    assert (checkout.path / "app" / "index.html").read_text() == "v2\n"
    assert (checkout.path / "app" / "new.txt").exists()
    assert checkout.sync() == (second, second)


def test_sync_throws_away_local_modifications(remote, checkouts):
    checkout = make_checkout(remote, checkouts)
    (checkout.path / "app" / "index.html").write_text("edited by hand\n")
    (checkout.path / "app" / "stray.log").write_text("untracked\n")
    (checkout.path / "README.md").unlink()
    git(checkout.path, "commit", "--quiet", "-am", "a local commit nobody pushed")
    (checkout.path / "build").mkdir()
    (checkout.path / "build" / "out.bin").write_text("ignored or not, it goes\n")
    second = remote.commit({"app/index.html": "v2\n"}, "Second version")

    checkout.sync()
    assert checkout.head() == second
    assert (checkout.path / "app" / "index.html").read_text() == "v2\n"
    assert (checkout.path / "README.md").read_text() == "hello\n"
    assert not (checkout.path / "app" / "stray.log").exists()
    assert not (checkout.path / "build").exists()
    assert git(checkout.path, "status", "--porcelain") == ""


def test_sync_resets_local_edits_even_without_a_new_commit(remote, checkouts):
    checkout = make_checkout(remote, checkouts)
    (checkout.path / "app" / "index.html").write_text("edited by hand\n")
    assert checkout.sync() == (remote.first, remote.first)
    assert (checkout.path / "app" / "index.html").read_text() == "v1\n"


def test_sync_follows_a_force_pushed_rewrite(remote, checkouts):
    checkout = make_checkout(remote, checkouts)
    second = remote.commit({"app/index.html": "v2\n"}, "Second version")
    checkout.sync()
    assert checkout.head() == second

    git(remote.work, "reset", "--quiet", "--hard", remote.first)
    rewritten = remote.commit({"app/index.html": "v2-rewritten\n"}, "Second version, rewritten", push=False)
    git(remote.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
    git(remote.bare, "gc", "--quiet", "--prune=now")  # the old commit is gone from the remote too

    assert checkout.sync() == (second, rewritten)
    assert checkout.head() == rewritten
    assert (checkout.path / "app" / "index.html").read_text() == "v2-rewritten\n"
    assert git(checkout.path, "status", "--porcelain") == ""


def test_failed_fetch_keeps_the_last_checkout(remote, checkouts, tmp_path):
    checkout = make_checkout(remote, checkouts)
    second = remote.commit({"app/index.html": "v2\n"}, "Second version")
    checkout.sync()
    remote.bare.rename(tmp_path / "moved-away.git")

    with pytest.raises(FetchFailed) as caught:
        checkout.sync()
    assert isinstance(caught.value, SourceError)
    assert "fetch" in str(caught.value)
    assert checkout.head() == second
    assert (checkout.path / "app" / "index.html").read_text() == "v2\n"
    assert (checkout.path / "README.md").read_text() == "hello\n"
    assert git(checkout.path, "status", "--porcelain") == ""

    (tmp_path / "moved-away.git").rename(remote.bare)  # the remote is back: sync works again
    third = remote.commit({"app/index.html": "v3\n"}, "Third version")
    assert checkout.sync() == (second, third)


def test_failed_fetch_keeps_local_state_as_it_was(remote, checkouts, tmp_path):
    # Nothing is reset before a good fetch: not even a hand edit is touched by a failed one.
    checkout = make_checkout(remote, checkouts)
    (checkout.path / "app" / "index.html").write_text("edited by hand\n")
    remote.bare.rename(tmp_path / "moved-away.git")
    with pytest.raises(FetchFailed):
        checkout.sync()
    assert (checkout.path / "app" / "index.html").read_text() == "edited by hand\n"
    assert checkout.head() == remote.first


def test_resolve_after_a_failed_fetch_still_reads_the_last_checkout(remote, checkouts, tmp_path):
    spec = SourceSpec(repo=str(remote.bare))
    checkout = GitCheckout.for_source(spec, checkouts)
    resolve(spec, tmp_path, checkouts)
    remote.bare.rename(tmp_path / "moved-away.git")
    with pytest.raises(FetchFailed):
        checkout.sync()
    assert resolve(spec, tmp_path, checkouts).commit_hash == remote.first


# -- remote_head() ---------------------------------------------------------------------------


def test_remote_head_sees_a_push_without_fetching(remote, checkouts):
    checkout = make_checkout(remote, checkouts)
    assert checkout.remote_head() == remote.first
    second = remote.commit({"app/index.html": "v2\n"}, "Second version")
    assert checkout.remote_head() == second
    assert checkout.head() == remote.first


def test_remote_head_of_a_branch_the_remote_does_not_have(remote, checkouts):
    checkout = make_checkout(remote, checkouts)
    assert GitCheckout(str(remote.bare), checkout.path, "no-such-branch").remote_head() is None


def test_remote_head_of_an_unreachable_remote_fails(remote, checkouts, tmp_path):
    checkout = make_checkout(remote, checkouts)
    remote.bare.rename(tmp_path / "moved-away.git")
    with pytest.raises(FetchFailed):
        checkout.remote_head()


# -- branches ------------------------------------------------------------------------------


def test_explicit_branch(remote, checkouts, tmp_path):
    remote.branch_off("release")
    release = remote.commit({"app/index.html": "release\n"}, "Release candidate")
    git(remote.work, "checkout", "--quiet", "main")
    main_second = remote.commit({"app/index.html": "main v2\n"}, "Main moves on")

    spec = SourceSpec(repo=str(remote.bare), branch="release")
    revision = resolve(spec, tmp_path, checkouts)
    assert revision.commit_hash == release
    assert revision.branch == "release"
    assert (revision.path / "app" / "index.html").read_text() == "release\n"

    main = resolve(SourceSpec(repo=str(remote.bare)), tmp_path, checkouts)
    assert main.commit_hash == main_second and main.branch == "main"
    assert len(list(checkouts.iterdir())) == 2  # one checkout per repository and branch

    checkout = GitCheckout.for_source(spec, checkouts)
    remote.commit({"app/index.html": "main v3\n"}, "Main again")
    assert checkout.sync() == (release, release)  # a push to main is not the release branch's
    newer = remote.commit({"app/index.html": "release 2\n"}, "Release 2", branch="release")
    assert checkout.remote_head() == newer
    assert checkout.sync() == (release, newer)
    assert resolve(spec, tmp_path, checkouts).branch == "release"


def test_missing_branch_fails_to_clone(remote, checkouts, tmp_path):
    with pytest.raises(SourceError, match="clone"):
        resolve(SourceSpec(repo=str(remote.bare), branch="no-such-branch"), tmp_path, checkouts)


def test_default_branch_is_the_remotes_head(remote, checkouts, tmp_path):
    remote.branch_off("trunk")
    trunk = remote.commit({"app/index.html": "trunk\n"}, "Trunk work")
    git(remote.bare, "symbolic-ref", "HEAD", "refs/heads/trunk")

    spec = SourceSpec(repo=str(remote.bare))
    revision = resolve(spec, tmp_path, checkouts)
    assert revision.branch == "trunk"
    assert revision.commit_hash == trunk

    checkout = GitCheckout.for_source(spec, checkouts)
    assert checkout.current_branch() == "trunk"
    assert checkout.remote_head() == trunk
    remote.commit({"README.md": "main moves\n"}, "On main", branch="main")
    assert checkout.sync() == (trunk, trunk)
    newer = remote.commit({"app/index.html": "trunk 2\n"}, "Trunk 2", branch="trunk")
    assert checkout.sync() == (trunk, newer)


# -- credentials ------------------------------------------------------------------------------


UNREACHABLE = "https://user:tok3n@127.0.0.1:1/org/private.git"


def test_token_in_an_https_url_never_appears_in_a_clone_error(tmp_path, checkouts):
    with pytest.raises(SourceError) as caught:
        resolve(SourceSpec(repo=UNREACHABLE), tmp_path, checkouts)
    message = str(caught.value)
    assert "tok3n" not in message
    assert "127.0.0.1" in message  # still says which remote failed
    assert "***" in message


def test_token_in_an_https_url_never_appears_in_fetch_errors(remote, checkouts):
    good = make_checkout(remote, checkouts)
    checkout = GitCheckout(UNREACHABLE, good.path)
    for attempt in (checkout.sync, checkout.remote_head):
        with pytest.raises(FetchFailed) as caught:
            attempt()
        assert "tok3n" not in str(caught.value)
        assert "tok3n" not in repr(caught.value)
    assert good.head() == remote.first


def test_token_from_the_environment_never_appears_in_errors(tmp_path, checkouts, monkeypatch):
    token = "ghp_s3cr3tT0kenValue"
    monkeypatch.setenv("KALPANA_TEST_GIT_TOKEN", token)
    spec = SourceSpec(repo="https://127.0.0.1:1/org/private.git", token_env="KALPANA_TEST_GIT_TOKEN")
    with pytest.raises(SourceError) as caught:
        resolve(spec, tmp_path, checkouts)
    message = str(caught.value)
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert token not in message
    assert basic not in message


@pytest.mark.parametrize("value", [None, ""])
def test_missing_token_env_names_the_variable(tmp_path, checkouts, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("KALPANA_TEST_GIT_TOKEN", raising=False)
    else:
        monkeypatch.setenv("KALPANA_TEST_GIT_TOKEN", value)
    spec = SourceSpec(repo="https://github.com/org/private.git", token_env="KALPANA_TEST_GIT_TOKEN")
    with pytest.raises(SourceError, match="KALPANA_TEST_GIT_TOKEN"):
        resolve(spec, tmp_path, checkouts)
    with pytest.raises(SourceError, match="KALPANA_TEST_GIT_TOKEN"):
        GitCheckout.for_source(spec, checkouts)


def test_checkout_directory_name_has_no_credentials(checkouts):
    spec = SourceSpec(repo="https://user:tok3n@github.com/Org/Private-Repo.git")
    checkout = GitCheckout.for_source(spec, checkouts)
    assert "tok3n" not in str(checkout.path)
    assert checkout.path.parent == checkouts
    # Same repository under another spelling (and without credentials): the same checkout.
    assert GitCheckout.for_source(SourceSpec(repo="git@github.com:org/private-repo.git"), checkouts).path \
        == checkout.path
    assert repo_key(spec.repo) == "github.com/org/private-repo"


TOKEN = "ghp_s3cr3tT0kenValue"
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture
def no_proxy(monkeypatch):
    """Git talks to the test's own server on 127.0.0.1, never through a proxy from the environment."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def forbidding_server(no_proxy):
    """An HTTP remote that records the Authorization header of each request and answers 404."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_token_goes_as_a_header_and_never_into_config_or_errors(remote, checkouts, forbidding_server):
    base, seen = forbidding_server
    good = make_checkout(remote, checkouts)
    checkout = GitCheckout(f"{base}/org/private.git", good.path, "main", token=TOKEN)
    for attempt, command in ((checkout.sync, "fetch"), (checkout.remote_head, "ls-remote")):
        with pytest.raises(FetchFailed) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith(f"git {command} of {base}/org/private.git failed: ")
        assert TOKEN not in message and BASIC not in message
    assert f"Basic {BASIC}" in seen, "the token was not sent as an Authorization header"
    config = (good.path / ".git" / "config").read_text()
    assert TOKEN not in config and BASIC not in config
    assert good.head() == remote.first


def test_a_git_command_past_the_timeout_is_killed_and_says_so(tmp_path, checkouts, no_proxy, monkeypatch):
    # A remote that accepts the connection and never answers: git would wait forever.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(gitops.source, "_GIT_TIMEOUT", 1)
    url = f"http://user:tok3n@127.0.0.1:{silent.getsockname()[1]}/org/private.git"
    checkout = GitCheckout(url, checkouts / "private", "main", token=TOKEN)
    try:
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            checkout.clone()
        assert time.monotonic() - started < 30
        assert str(caught.value) == (f"git clone of http://***@127.0.0.1:{silent.getsockname()[1]}/org/private.git "
                                     "took over 1 s: is the remote reachable?")
        assert not checkouts.exists() or list(checkouts.iterdir()) == [], "a killed clone left a directory behind"
        checkout.path.mkdir(parents=True)
        with pytest.raises(FetchFailed, match="git ls-remote of .* took over 1 s") as caught:
            checkout.remote_head()
        assert "tok3n" not in str(caught.value) and TOKEN not in str(caught.value) and BASIC not in str(caught.value)
    finally:
        silent.close()


def _gone(marker: str, within: float = 5.0) -> dict[int, str]:
    """What still runs naming ``marker`` once ``within`` seconds passed (at once when nothing does).

    A killed orphan is not this process's child: nothing here can wait for it, and on a busy machine
    it may take a moment to die.
    """
    deadline = time.monotonic() + within
    while (left := _running_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _running_with(marker: str) -> dict[int, str]:
    """Every process whose command line holds ``marker`` (a test remote's URL), by pid: the command line.

    Not only this process's children: a helper git left behind is an orphan, adopted by init.
    """
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in line:
                found[int(entry.name)] = line
    return found


@pytest.mark.parametrize("interrupt", ["signal", "dropped"])
def test_an_interrupted_fetch_stops_git_and_its_helpers_and_leaves_no_thread_behind(remote, checkouts, no_proxy,
                                                                                    monkeypatch, interrupt):
    # The daemon cancels a superseded run with SIGTERM, mostly while it fetches. GitPython's timeout
    # watchdog (a plain thread) outlived the KeyboardInterrupt: the cancelled run waited for it at exit
    # until the daemon killed it 30 s later, and git went on fetching for nobody. "dropped": Python
    # lost the KeyboardInterrupt (in a __del__); the process's mark must stop the fetch all the same.
    dropped = watch_unraisable(monkeypatch)
    silent = socket.socket()  # a remote that accepts the connection and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    checkout = make_checkout(remote, checkouts)
    checkout.url = f"http://127.0.0.1:{silent.getsockname()[1]}/org/app.git"
    marker = f"127.0.0.1:{silent.getsockname()[1]}/"
    threads = set(threading.enumerate())
    main = threading.main_thread().ident
    fetching: list[dict[int, str]] = []

    def interrupt_while_git_fetches() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = _running_with(marker)
            # git and the HTTP helper it starts: the fetch is on the network, waiting.
            if any("remote-http" in line for line in running.values()):
                fetching.append(running)
                break
            time.sleep(0.02)
        if interrupt == "signal":
            signal.pthread_kill(main, signal.SIGINT)  # as a SIGTERM does in the worker: KeyboardInterrupt
        else:
            drop_an_interrupt()

    helper = threading.Thread(target=interrupt_while_git_fetches, daemon=True)
    try:
        helper.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            checkout.sync()
        assert time.monotonic() - started < 20, "git was not stopped"
        helper.join()
        assert fetching, "the interrupt came before git was fetching: the test proves nothing"
        assert [type(e) for e in dropped] == ([KeyboardInterrupt] if interrupt == "dropped" else [])
        assert any(" fetch " in line for line in fetching[0].values()), fetching
        left = [t for t in set(threading.enumerate()) - threads if t.is_alive() and not t.daemon]
        assert left == [], f"threads that keep the process from exiting: {left}"
        assert _gone(marker) == {}, "git or one of its helpers still runs"
    finally:
        silent.close()
    assert checkout.head() == remote.first
    assert not list((checkout.path / ".git").rglob("*.lock")), "git left a lock file"


def test_a_git_command_past_the_timeout_leaves_no_helper_running(checkouts, no_proxy, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(gitops.source, "_GIT_TIMEOUT", 1)
    marker = f"127.0.0.1:{silent.getsockname()[1]}/"
    checkout = GitCheckout(f"http://{marker}org/app.git", checkouts / "app", "main")
    try:
        with pytest.raises(SourceError, match="took over 1 s"):
            checkout.clone()
        assert _gone(marker) == {}, "git or one of its helpers still runs"
    finally:
        silent.close()


def test_a_missing_checkout_never_runs_git_in_the_current_directory(remote, tmp_path, monkeypatch):
    # Run from inside another repository: a git command that fell back to the current
    # directory would read (or reset and clean) that repository instead.
    monkeypatch.chdir(remote.work)
    checkout = GitCheckout(str(remote.bare), tmp_path / "gone", "main")
    with pytest.raises(SourceError, match="does not exist"):
        checkout.head()
    with pytest.raises(FetchFailed, match="does not exist"):
        checkout.remote_head()


def test_an_ssh_key_path_cannot_inject_ssh_options_or_commands(tmp_path):
    """git runs GIT_SSH_COMMAND through a shell: a crafted ssh_key must stay one argument."""
    marker = tmp_path / "pwned"
    hostile = f"k -oProxyCommand=touch {marker}; touch {marker}"
    checkout = GitCheckout("git@example.invalid:org/repo.git", tmp_path / "co", "main", ssh_key=hostile)
    command = checkout._env()["GIT_SSH_COMMAND"]
    # The shell git would use splits it into: ssh -i '<the whole hostile text>' -o ... and nothing else.
    split = subprocess.run(["sh", "-c", f'set -- {command}; printf "%s\\n" "$@"'], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert split[:3] == ["ssh", "-i", hostile]
    assert not any(w.startswith("-oProxyCommand") for w in split)
    assert not marker.exists()


def test_a_subdir_that_is_a_committed_symlink_out_of_the_repository_is_refused(remote, checkouts, tmp_path):
    outside = tmp_path / "host-secrets"
    outside.mkdir()
    (outside / "shadow").write_text("root:x:0:0\n")
    (remote.work / "app-link").symlink_to(outside)
    remote.commit({}, "a symlink out of the repository")
    with pytest.raises(SourceError, match="resolves outside the repository") as failure:
        resolve(SourceSpec(repo=str(remote.bare), subdir="app-link"), tmp_path, checkouts)
    assert "root:x" not in str(failure.value)


def test_a_clone_of_something_that_is_no_repository_says_why_and_what_to_check(tmp_path):
    # git ends this failure with advice whose last line ("and the repository exists.") says nothing alone.
    checkout = GitCheckout(f"file://{tmp_path}", tmp_path / "checkouts" / "x", None)
    with pytest.raises(SourceError) as caught:
        checkout.clone()
    message = str(caught.value)
    assert message == (f"git clone of file://{tmp_path} failed: '{tmp_path}' does not appear to be a git repository: "
                       "check the repository URL (source.repo, or repo in kalpana.yaml), its branch and the access "
                       "to it"), message
