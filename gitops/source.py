"""Where an application's files come from, and which revision they are at.

The only module that imports ``git`` (GitPython), and the one git client:
checkouts run GitPython's git executable too, with their own process
handling (``_run_git``: a cancelled fetch must stop git cleanly). For a local directory
inside a git repository the revision is the last commit that touched that
directory (so a monorepo rebuilds only what changed), with a marker and a
content digest when the directory has uncommitted changes; outside git it
is a content hash.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gitops import interrupt
from gitops.errors import SourceError
from gitops.masking import mask_url
from gitops.spec import SourceSpec

#: Version-control metadata and caches: never part of a source's content hash, and `kalpana watch`
#: ignores them too, so `plan` and `watch` agree on what counts as an edit.
_SKIP_DIRS = frozenset({".git", ".hg", ".svn"})
CACHE_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".idea",
                        ".vscode", ".parcel-cache"})
#: Files editors and tools leave beside real ones (vim's swap and probe files, emacs' locks and backups,
#: bytecode): not content either.
JUNK_FILE = re.compile(r"(\.sw[a-px]|~|\.py[cod]|\.tmp)$|^\.#|^4913$|^\.DS_Store$|^flycheck_")
CONFIG_REPOSITORY = "config repository"  #: how the config repository is named beside deployments (e.g. unfetched)

_GIT_TIMEOUT = 300  # seconds: past this a clone or fetch is stuck, not slow
_GIT_STOP_GRACE = 5  # seconds git gets to stop (and remove its lock files) once asked to
_GIT_LOOK = 0.5  # seconds between looks at the process's interrupt mark while git runs


@dataclass(frozen=True)
class Revision:
    """The resolved state of a source: what the build will copy and where it came from."""

    revision: str  # commit SHA (+ "+dirty.<digest>") or "content:<digest>"
    path: Path | None = None  # directory to copy into the image
    commit_hash: str | None = None
    commit_message: str | None = None
    branch: str | None = None
    exclude: tuple[str, ...] = ()  # paths inside ``path`` that are Kalpana's own (its state dir), never copied

    @property
    def short(self) -> str:
        """Seven characters are what people quote (``a1b2c3d``); a content hash keeps its prefix
        (``content:d9b193f``) so that nobody takes it for a commit."""
        if self.revision.startswith("content:"):
            return self.revision[: len("content:") + 7]
        head, _, dirty = self.revision.partition("+")
        return head[:7] + ("+dirty" if dirty else "")


NO_SOURCE = Revision(revision="")


def short_revision(revision: str) -> str:
    """Display form of a stored revision string."""
    return Revision(revision).short if revision else "none"


def resolve(spec: SourceSpec | None, workspace: Path, checkouts: Path | None = None, owner: str = "",
            state: Path | None = None) -> Revision:
    """Resolve a source to a revision; SourceError when it cannot be read.

    A git source is cloned into ``checkouts`` on first use and otherwise read
    as it is: fetching is a separate step (``GitCheckout.sync``), so a plan
    never waits on the network.
    """
    if spec is None:
        return NO_SOURCE
    if spec.repo:
        if checkouts is None:
            raise SourceError("git sources need a state directory for their checkouts")
        checkout = GitCheckout.for_source(spec, checkouts, owner)
        if not checkout.exists():
            checkout.clone()
        path = checkout.path / (spec.subdir or "")
        # A committed symlink as subdir would build whatever it points at on this host.
        if not path.resolve().is_relative_to(checkout.path.resolve()):
            raise SourceError(f"subdir {spec.subdir!r} of {mask_url(spec.repo)} resolves outside the repository "
                              "(a symlink?): point source.subdir at a real directory of the repository")
        if not path.is_dir():
            raise SourceError(f"subdir {spec.subdir!r} not found in {mask_url(spec.repo)} at "
                              f"{checkout.head()[:7]}: fix source.subdir or push it")
        revision = _git_revision(path)
        if revision is None:
            raise SourceError(f"{mask_url(spec.repo)} has no commit under {spec.subdir or '/'}")
        return revision
    path = (workspace / spec.path).resolve()
    if not path.is_dir():
        raise SourceError(f"source directory {path} not found: create it or fix source.path")
    # A source that contains the state directory (`source: .`) must not hash or ship the
    # history and build logs: they change with every build, so every apply would rebuild.
    exclude = ()
    if state is not None and state.resolve().is_relative_to(path) and state.resolve() != path:
        exclude = (state.resolve().relative_to(path).as_posix(),)
    git = _git_revision(path, exclude)
    if git:
        return git
    return Revision(revision=f"content:{content_hash(path, exclude)}", path=path, exclude=exclude)


def content_hash(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """Digest of every file's relative path, mode bit and content under ``path`` (``exclude``: relative dirs)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        here = Path(root).relative_to(path)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and d not in CACHE_DIRS
                         and (here / d).as_posix() not in exclude)
        for name in sorted(files):
            if JUNK_FILE.search(name):
                continue
            full = Path(root, name)
            rel = full.relative_to(path).as_posix()
            digest.update(rel.encode() + b"\0")
            try:
                if full.is_symlink():
                    digest.update(b"L" + os.readlink(full).encode())
                else:
                    digest.update(b"X" if os.access(full, os.X_OK) else b"F")
                    with open(full, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 16), b""):
                            digest.update(block)
            except OSError as exc:
                raise SourceError(f"cannot read {full}: {exc.strerror}: fix its permissions or remove it") from None
            digest.update(b"\0")
    return digest.hexdigest()[:16]




def _inside_git(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in (path, *path.parents))


def _git_revision(path: Path, exclude: tuple[str, ...] = ()) -> Revision | None:
    if not _inside_git(path):
        return None
    # Imported here: GitPython costs ~0.1 s to import and plain directories need none of it.
    try:
        import git
    except ImportError:  # pragma: no cover - git binary missing
        return None
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    except git.GitCommandError:
        return None
    root = Path(repo.working_tree_dir).resolve()
    rel = path.relative_to(root).as_posix() or "."
    try:
        sha = repo.git.rev_list("-1", "HEAD", "--", rel).strip()
    except git.GitCommandError:
        return None  # a repository without commits: treat as plain files
    if not sha:
        return None  # nothing committed under this path yet
    commit = repo.commit(sha)
    excluded = [f":(exclude){(Path(rel) / e).as_posix()}" for e in exclude]
    dirty = repo.git.status("--porcelain", "--", rel, *excluded).strip()
    revision = sha if not dirty else f"{sha}+dirty.{content_hash(path, exclude)[:10]}"
    try:
        branch = repo.active_branch.name
    except TypeError:  # detached HEAD
        branch = None
    message = commit.message.strip().splitlines()[0] if commit.message.strip() else ""
    return Revision(revision=revision, path=path, commit_hash=sha, commit_message=message, branch=branch,
                    exclude=exclude)


class FetchFailed(SourceError):
    """A fetch failed; the last good checkout stays as it was."""


def repo_key(url: str) -> str:
    """One spelling per repository: ``github.com/org/repo`` for its https, ssh and scp-like URLs."""
    text = mask_url(url.strip()).replace("***@", "")
    if text.startswith("file://"):
        return str(Path(text[len("file://"):]).resolve()).removesuffix(".git")
    if "://" not in text and re.match(r"^[\w.-]+@[\w.-]+:", text):  # git@github.com:org/repo
        user_host, _, path = text.partition(":")
        text = user_host.split("@", 1)[1] + "/" + path
    elif "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("@", 1)[-1]
    else:
        return str(Path(text).resolve()).removesuffix(".git")
    return text.rstrip("/").removesuffix(".git").lower()


class GitCheckout:
    """A clone Kalpana owns under the state directory: fetched and hard-reset, never merged."""

    def __init__(self, url: str, path: Path, branch: str | None = None, *,
                 token: str | None = None, ssh_key: str | None = None):
        self.url = url
        self.path = path
        self.branch = branch
        self._token = token
        self._ssh_key = ssh_key

    @classmethod
    def for_source(cls, spec: SourceSpec, checkouts: Path, owner: str = "") -> "GitCheckout":
        """The checkout of a deployment's git source: one per deployment (``owner``), repository and branch.

        Deployments never share a clone: a push that rebuilds one must not move another
        (say one with auto_rebuild: false) to a commit it was never deployed at.
        """
        token = None
        if spec.token_env:
            token = os.environ.get(spec.token_env)
            if not token:
                raise SourceError(f"source.token_env names {spec.token_env}, which is not set: "
                                  "export it in the environment kalpana runs in")
        slug = hashlib.sha256(f"{owner}@{repo_key(spec.repo)}#{spec.branch or ''}".encode()).hexdigest()[:16]
        name = re.sub(r"[^a-z0-9]+", "-", (f"{owner}-" if owner else "") + repo_key(spec.repo).rsplit("/", 1)[-1].lower())[:60]
        return cls(spec.repo, checkouts / f"{name}-{slug}", spec.branch, token=token, ssh_key=spec.ssh_key)

    @classmethod
    def for_config(cls, repo, path: Path) -> "GitCheckout":
        """The checkout of the config repository (``repo``: kalpana.yaml's ``repo`` settings) at ``path``."""
        token = os.environ.get(repo.token_env) if repo.token_env else None
        return cls(repo.url, path, repo.branch, token=token, ssh_key=repo.ssh_key)

    def exists(self) -> bool:
        return (self.path / ".git").is_dir()

    def clone(self) -> None:
        """Clone into a temporary directory, then move it in place: never a half-made checkout."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(self.path.name + ".cloning")
        shutil.rmtree(staging, ignore_errors=True)
        args = ["clone", "--quiet", "--no-tags"]
        if self.branch:
            args += ["--branch", self.branch, "--single-branch"]
        try:
            self._git(*args, "--", self._remote(), str(staging), cwd=self.path.parent, error=SourceError)
        except SourceError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.rename(self.path)

    def sync(self) -> tuple[str, str]:
        """Fetch the branch and hard-reset to it; returns (old head, new head)."""
        if not self.exists():
            self.clone()
            head = self.head()
            return head, head
        before = self.head()
        branch = self.branch or self.current_branch()
        self._git("fetch", "--quiet", "--no-tags", "--force", self._remote(),
                  f"+refs/heads/{branch}:refs/remotes/origin/{branch}", error=FetchFailed)
        # Only after a good fetch: reset and clean are local and cannot half-fail on the network.
        self._git("reset", "--quiet", "--hard", f"refs/remotes/origin/{branch}", error=SourceError)
        self._git("clean", "-qfdx", error=SourceError)
        return before, self.head()

    def remote_head(self) -> str | None:
        """The newest commit of the followed branch on the remote (no fetch), or None if it has none."""
        branch = self.branch or self.current_branch()
        out = self._git("ls-remote", self._remote(), f"refs/heads/{branch}", error=FetchFailed)
        return out.split()[0] if out.strip() else None

    def head(self) -> str:
        return self._git("rev-parse", "HEAD", error=SourceError).strip()

    def current_branch(self) -> str:
        name = self._git("rev-parse", "--abbrev-ref", "HEAD", error=SourceError).strip()
        if name == "HEAD":
            raise SourceError(f"checkout {self.path} is on a detached HEAD: set source.branch")
        return name

    def _remote(self) -> str:
        url = self.url
        if "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url):
            return str(Path(url).resolve())  # a local path
        return url

    def _env(self) -> dict[str, str]:
        # Only what Kalpana changes: ``_git`` starts from os.environ and adds these on top.
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
        if self._ssh_key:
            # git runs this through a shell: quoted, a key path can't smuggle in options or commands.
            key = shlex.quote(str(Path(self._ssh_key).expanduser()))
            env["GIT_SSH_COMMAND"] = (f"ssh -i {key} -o IdentitiesOnly=yes "
                                      "-o BatchMode=yes -o StrictHostKeyChecking=accept-new")
        return env

    def _git(self, *args: str, cwd: Path | None = None, error: type[SourceError] = SourceError) -> str:
        failed = f"git {args[0]} of {mask_url(self.url)}"
        try:
            import git  # on first use, as in _git_revision
        except ImportError:  # GitPython refuses to import without a working git binary
            raise error(f"{failed} failed: git is not installed or not on PATH: install git") from None
        workdir = cwd or self.path
        # Said before git runs: started there, a missing directory would read as a missing git.
        missing = f"{failed} failed: {workdir} does not exist or cannot be entered: check the state directory"
        if not (workdir.is_dir() and os.access(workdir, os.X_OK)):
            raise error(missing)
        command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE]
        secrets = [self._token] if self._token else []
        if self._token:
            # A header for this one command: the token never lands in .git/config, a URL or a log.
            basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
            command += ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
            secrets.append(basic)
        command += list(args)
        not_found = timed_out = False
        try:
            status, out, err = _run_git(command, workdir, {**os.environ, **_PLAIN_GIT, **self._env()})
        except FileNotFoundError:
            not_found = True
        except subprocess.TimeoutExpired:
            timed_out = True
        # Raised out here: an exception raised while handling TimeoutExpired would carry the command
        # line, and with it the token's header, as its context.
        if not_found:
            raise error(missing if not workdir.is_dir() else  # removed meanwhile
                        f"{failed} failed: git is not installed or not on PATH: install git")
        if timed_out:
            raise error(f"{failed} took over {_GIT_TIMEOUT} s: is the remote reachable?")
        if status != 0:
            detail = mask_url(_git_reason((err or out).strip()) or f"exit {status}")
            for secret in secrets:
                detail = detail.replace(secret, "***")
            advice = _GIT_ADVICE if args[0] in ("clone", "fetch", "ls-remote") else ""
            raise error(f"{failed} failed: {detail}{advice}")
        return out


#: git's messages in plain English, which ``_git_reason`` reads (as GitPython sets them too).
_PLAIN_GIT = {"LANGUAGE": "C", "LC_ALL": "C"}


def _run_git(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run one git command: (exit status, stdout, stderr); TimeoutExpired past ``_GIT_TIMEOUT``.

    Not GitPython's ``execute``: its timeout is a watchdog thread that outlives a KeyboardInterrupt
    (a cancelled run then waited for it at exit, and the daemon had to kill it), and it leaves git
    running on. Here an interrupt (also one Python dropped: ``gitops.interrupt``, looked at twice a
    second) or the timeout stops git and what it started (``git-remote-http``, ssh) with SIGTERM,
    on which git removes its lock files (a killed ``reset`` would leave ``index.lock`` and fail
    every later one); what has not stopped after a few seconds gets SIGKILL. git stays in the
    caller's process group: a terminal's Ctrl-C reaches it, ssh may still ask on the terminal,
    and the daemon's kill of a run's process group takes git with it.
    """
    with subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        deadline = time.monotonic() + _GIT_TIMEOUT
        try:
            while True:
                try:
                    out, err = process.communicate(timeout=max(0.0, min(_GIT_LOOK, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:  # retrying loses no output
                    if time.monotonic() >= deadline:
                        raise
                    interrupt.check()
        except BaseException:  # TimeoutExpired, or KeyboardInterrupt: a cancelled run
            _stop(process)
            raise
    return process.returncode, _text(out), _text(err)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to ``process`` and its descendants, SIGKILL to those still there after the grace; reaped."""
    descendants = _process_tree(process.pid)[1:]
    process.terminate()  # git itself through Popen: never a reused pid once it was reaped
    for pid, _ in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(_GIT_STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass
    finally:  # also when a second Ctrl-C cuts the grace short
        process.kill()
        for pid, started in descendants:
            # Still that process (an orphan now, perhaps), not a new one that was given its pid.
            if started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        process.wait()


def _process_tree(root: int) -> list[tuple[int, str | None]]:
    """``root`` and its descendants with their start times (Linux's /proc; elsewhere ``root`` alone)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                parent = _stat_field(int(name), 1)
                if parent is not None:
                    children.setdefault(int(parent), []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append((pid, _start_time(pid)))
        todo.extend(children.get(pid, ()))
    return tree


def _start_time(pid: int) -> str | None:
    return _stat_field(pid, 19)


def _stat_field(pid: int, index: int) -> str | None:
    """Field ``index`` of /proc/PID/stat counted after the command name (1: parent pid, 19: start time)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[index].decode()
    except (OSError, IndexError):
        return None


def _text(output: bytes) -> str:
    """A command's output as text, its final newline cut (as GitPython returns it)."""
    return output.decode("utf-8", errors="replace").removesuffix("\n")


#: What to do when a remote refused: the reason before it says which of these applies.
_GIT_ADVICE = ": check the repository URL (source.repo, or repo in kalpana.yaml), its branch and the access to it"


def _git_reason(text: str) -> str:
    """The line of git's stderr that says what failed: its first ``fatal:``/``error:`` line, without the prefix.

    git ends many failures with advice ("Please make sure you have the correct access rights / and the
    repository exists."): its last line alone reads as nonsense.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        for prefix in ("fatal:", "error:"):
            if line.lower().startswith(prefix):
                return line[len(prefix):].strip()
    return lines[-1] if lines else ""
