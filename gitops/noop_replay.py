"""A repeated no-op `kalpana apply`, answered without loading the deployment models (issue 12).

A no-op apply does little work (two Docker listings, reading the files) but pays for its
imports: pydantic and the model classes are about half of its run. So when a plain `kalpana
apply` changes nothing, the CLI records what it printed together with a *fingerprint* of
everything its plan read; the next plain `kalpana apply` computes that fingerprint again with the
standard library alone and, if it is identical, prints the recorded output and exits 0. Any
difference, a missing or unreadable record, a held apply lock: the full apply runs, as always.

The fingerprint covers everything a plan reads:

- the code: Kalpana's modules (size, mtime, ctime) and those of the libraries that read the files
  (pydantic, PyYAML, python-dotenv, GitPython), and the working directory (paths in the output
  are relative to it);
- the environment: every variable but those of the shell and terminal (``IGNORED_ENV``): the
  settings' ``KALPANA_*``/``TRAEFIK_*``/``DOCKER_HOST``, a ``source.token_env``, what ``${VAR}``
  in an env file expands to, ``GIT_*``, ``HOME``;
- the settings file and the ``.env`` beside it (bytes), and where every configured path leads now
  (a symlinked release directory that is switched is another input);
- the deployment files (the directory's listing and every entry's bytes) and their env files;
- every source the plan resolved: each entry's path, type, size, mtime and ctime, and for one in a
  git work tree what git says of it (the commit that last touched it, ``git status``);
- the state: the history file (operator stops, problems, builds), the build logs' names, the route
  directory;
- Docker: this instance's containers (all but the "Up 5 minutes" text) and images, listed now.
  A container that died, was removed or replaced, or an image that went, is a difference.

A record is written only after a full run that was a plain ``apply`` (``--json`` or not),
changed nothing, warned about nothing, found no error, left no unfinished build in the history
and saw the same fingerprint at its start and its end; and never while a file it stats was
changed less than ``SETTLE_SECONDS`` ago: two writes within one tick of the file system's clock
can leave size and mtime alike, so a young file is looked at again by the next full run. (The
ctime is in the fingerprint too: a file rewritten with its old size and mtime put back, as
``cp -p`` or ``rsync -t`` do, still has a new ctime.) ``KALPANA_NO_REPLAY=1`` turns replays off.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from gitops import __version__

#: Variables of the shell and the terminal: they change between two shells, not what a plan reads.
IGNORED_ENV = frozenset({
    "_", "OLDPWD", "PWD", "SHLVL", "COLUMNS", "LINES", "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION",
    "TERM_SESSION_ID", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "CLICOLOR", "DISPLAY", "WINDOWID", "PS1", "PS2",
    "PS4", "PROMPT_COMMAND", "HISTFILE", "HISTSIZE", "HISTFILESIZE", "HISTCONTROL", "LS_COLORS", "LESS",
    "LESSOPEN", "LESSCLOSE", "MAIL", "SSH_TTY", "SSH_CLIENT", "SSH_CONNECTION", "TMUX", "TMUX_PANE", "STY",
    "WINDOW", "VTE_VERSION", "PYTHONPROFILEIMPORTTIME",
})
#: Libraries whose version changes what a file loads into (a new pydantic may read a field otherwise).
LIBRARIES = ("pydantic", "pydantic_core", "yaml", "dotenv", "git")
SETTLE_SECONDS = 2.0
#: A source tree with more entries than this is not fingerprinted (its walk would cost what it saves).
MAX_ENTRIES = 5000
DISABLE_ENV = "KALPANA_NO_REPLAY"
_FORMAT = 2
_CODE = Path(__file__).resolve().parent


class Unsettled(Exception):
    """An input changed too recently (or is too large) to be fingerprinted safely: record nothing."""


def disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """``KALPANA_NO_REPLAY`` set to anything but empty, 0, false or no."""
    return environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def config_path(config: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The settings file `load_settings` reads (its default when none is given), made absolute."""
    return Path(os.path.abspath(config or environ.get("KALPANA_CONFIG") or "kalpana.yaml"))


def record_path(config: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the record for this settings file and working directory is kept (the user's cache directory)."""
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(f"{os.getcwd()}\0{config}".encode()).hexdigest()[:24]
    return Path(cache) / "kalpana" / "noop-apply" / f"{key}.json"


def replay(config: str | None, as_json: bool, environ: Mapping[str, str] = os.environ) -> str | None:
    """The recorded output of the last no-op apply if nothing it read has changed since; else None.

    Holds the apply lock (without waiting) while it looks, as a full apply would.
    """
    if disabled(environ):
        return None
    path = config_path(config, environ)
    try:
        record = json.loads(record_path(path, environ).read_text())
        if record.get("format") != _FORMAT or record["inputs"]["config"] != str(path):
            return None
        inputs = record["inputs"]
        from gitops.file_lock import FileLock, Timeout

        lock = FileLock(os.path.join(inputs["state"], "apply.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None  # another apply runs: the full apply says so and waits
        try:
            same = fingerprint(inputs, environ) == record["fingerprint"]
        finally:
            lock.release()
    except Exception:  # noqa: BLE001 - a replay is a shortcut: whatever stops it, the full apply runs and says why
        return None
    if not same:
        return None
    return record["json" if as_json else "text"]


def inputs_of(config: str | None, settings: Any, docker_address: str, load: Any = None) -> dict:
    """What a fingerprint reads, from a full run's settings and file load (sources come later: ``with_sources``)."""
    configured = [settings.config_dir / settings.deployments_dir, settings.config_dir / settings.state_dir,
                  settings.config_dir / settings.workspace]
    env_files = []
    for desired in (load.desired.values() if load is not None else ()):
        if desired.spec.env_file:
            env_files.append(str(Path(desired.file).parent / desired.spec.env_file))
        if desired.spec.source and desired.spec.source.path:
            configured.append(settings.workspace_path / desired.spec.source.path)
    return {"config": str(config_path(config)), "deployments": str(settings.deployments_path),
            "state": str(settings.state_path), "routes": str(settings.routes_path), "instance": settings.instance,
            "docker": docker_address, "links": sorted({str(p) for p in configured}),
            "files": sorted({os.path.abspath(f) for f in env_files}), "sources": []}


def with_sources(inputs: Mapping[str, Any], revisions: Iterable[Any]) -> dict:
    """``inputs`` plus the directories of the sources a plan resolved (``source.Revision``s)."""
    sources = {(str(r.path), tuple(r.exclude)) for r in revisions if r.path is not None}
    return {**inputs, "sources": [[path, list(exclude)] for path, exclude in sorted(sources)]}


def settings_part(config: str | None, environ: Mapping[str, str] = os.environ) -> list:
    """What the settings are read from: the file and the ``.env`` beside it (bytes), where the file's path
    leads, and the environment. Taken before a full run loads them, so that a change in between is seen."""
    path = config_path(config, environ)
    return [str(path), os.path.realpath(path), _content(path), _content(path.parent / ".env"),
            sorted((k, v) for k, v in environ.items() if k not in IGNORED_ENV)]


def fingerprint(inputs: Mapping[str, Any], environ: Mapping[str, str] = os.environ, *,
                settled_before: float | None = None) -> str:
    """One digest of everything listed in the module docstring; ``settled_before``: raise Unsettled
    when a stat-fingerprinted file changed after that time (recording only)."""
    parts: dict[str, Any] = {"format": _FORMAT, "version": __version__, "cwd": os.getcwd()}
    parts["code"] = [_tree(_CODE, (), None, exclude_names=("__pycache__",), bounded=False), _libraries()]
    parts["settings"] = settings_part(inputs["config"], environ)
    parts["links"] = [[link, os.path.realpath(link)] for link in inputs["links"]]
    parts["files"] = [[name, _content(Path(name)), _stat(Path(name), settled_before)] for name in inputs["files"]]
    parts["deployments"] = _listing(Path(inputs["deployments"]))
    state = Path(inputs["state"])
    parts["history"] = _stat(state / "history.json", settled_before)
    parts["logs"] = sorted(os.listdir(state / "logs")) if (state / "logs").is_dir() else None
    parts["routes"] = _tree(Path(inputs["routes"]), (), settled_before)
    parts["sources"] = [[path, exclude, _tree(Path(path), tuple(exclude), settled_before, exclude_names=(".git",)),
                         _git(Path(path), tuple(exclude), environ)] for path, exclude in inputs["sources"]]
    parts["docker"] = _docker(inputs["docker"], inputs["instance"])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _content(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return "directory"


def _libraries() -> list:
    found = []
    for name in LIBRARIES:
        spec = find_spec(name)  # finds without importing
        found.append([name, _stat(Path(spec.origin), None) if spec and spec.origin else None])
    return found


def _listing(directory: Path) -> list:
    """Every entry of the deployments directory with its bytes (a symlink: its target too)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return ["missing"]
    entries = []
    for name in names:
        full = directory / name
        link = os.readlink(full) if full.is_symlink() else None
        entries.append([name, link, _content(full) if full.is_file() else "other"])
    return entries


def _stat(path: Path, settled_before: float | None) -> list | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if settled_before is not None and max(st.st_mtime, st.st_ctime) > settled_before:
        raise Unsettled(f"{path} changed less than {SETTLE_SECONDS:g} s ago")
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _tree(root: Path, exclude: tuple[str, ...], settled_before: float | None,
          exclude_names: tuple[str, ...] = (), bounded: bool = True) -> list | None:
    """Path, mode, size, mtime, ctime and inode of every entry under ``root`` (``exclude``: relative directories)."""
    if not root.is_dir():
        return None
    entries = [["", *_stat(root, settled_before)]]
    for here, dirs, files in os.walk(root):
        rel = os.path.relpath(here, root)
        rel = "" if rel == "." else rel
        dirs[:] = sorted(d for d in dirs if d not in exclude_names
                         and os.path.join(rel, d).replace(os.sep, "/") not in exclude)
        for name in dirs + sorted(files):
            entries.append([os.path.join(rel, name), *(_stat(Path(here, name), settled_before) or ["gone"])])
        if bounded and len(entries) > MAX_ENTRIES:
            raise Unsettled(f"{root} holds more than {MAX_ENTRIES} entries")
    return entries


def _git(path: Path, exclude: tuple[str, ...], environ: Mapping[str, str]) -> list | None:
    """What git says of a source in a work tree, as ``source._git_revision`` asks it: the last commit that
    touched it and ``git status`` (ignore files anywhere, git's configuration and index included).

    git itself, not gitops.source: that module loads the models (pydantic), which a replay is there to avoid.
    """
    if not any((parent / ".git").exists() for parent in (path, *path.parents)):
        return None
    git = ["git", "-C", str(path)]
    excluded = [f":(exclude){e}" for e in exclude]
    run = dict(capture_output=True, text=True, timeout=30, env=dict(environ), stdin=subprocess.DEVNULL)
    head = subprocess.run([*git, "rev-list", "-1", "HEAD", "--", "."], **run)
    status = subprocess.run([*git, "status", "--porcelain", "--", ".", *excluded], **run)
    return [head.returncode, head.stdout, status.returncode, status.stdout]


def _docker(address: str, instance: str) -> list:
    from gitops.runtime.docker_runtime import DockerRuntime

    runtime = DockerRuntime(address, timeout=10)
    if not runtime.speaks_socket:
        raise Unsettled(f"{address} needs the docker SDK")
    containers, images = runtime.listings(instance)  # what the plan's observe() reads, raw
    # "Status" says "Up 5 minutes": it changes while nothing else does (State says running or not).
    return [sorted(({k: v for k, v in c.items() if k != "Status"} for c in containers), key=lambda c: c["Id"]),
            sorted(([i["Id"], i.get("RepoTags"), i.get("Labels"), i.get("Created")] for i in images))]


def start(base: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str | None:
    """The fingerprint of ``base`` before a full run's plan (None when it cannot be taken: nothing is kept)."""
    if disabled(environ):
        return None
    try:
        return fingerprint(base, environ)
    except Exception:  # noqa: BLE001 - the apply goes on; only its record is given up
        return None


def keep_if_noop(engine: Any, config: str | None, result: Any, events: list, *, base: Mapping[str, Any],
                 before: list, start: str | None, started: float, outputs: Callable[[], tuple[str, str]]) -> bool:
    """After a full plain apply: keep its output (``outputs()``: text, JSON) for replay if it was a quiet no-op.

    Quiet: it succeeded, changed nothing, emitted nothing but its plan (no warning, no recovery), and
    left no build unfinished. Its sources are resolved again after their walk (``record``).
    """
    from gitops.errors import KalpanaError
    from gitops.events import Planned

    if start is None or not result.ok or result.outcomes or result.plan.changes \
            or not all(isinstance(e, Planned) for e in events) or engine.history.unfinished():
        return False
    declared = [step.desired for step in result.plan.steps if step.desired is not None]
    planned = [step.revision for step in result.plan.steps if step.desired is not None]
    try:
        revisions = [engine.revision_of(d) for d in declared]
    except KalpanaError:
        return False

    def sources_unchanged() -> bool:
        try:
            return [engine.revision_of(d).revision for d in declared] == [r.revision for r in revisions] == planned
        except KalpanaError:
            return False

    inputs = with_sources(inputs_of(config, engine.settings, engine.runtime.address, result.load), revisions)
    text, document = outputs()
    return record(inputs, base, before, start, started, text, document, sources_unchanged)


def record(inputs: Mapping[str, Any], base: Mapping[str, Any], before: list, start: str, started: float,
           text: str, document: str, sources_unchanged: Callable[[], bool],
           environ: Mapping[str, str] = os.environ) -> bool:
    """Keep a full no-op run's output (``text``, and ``document`` for --json); True if kept.

    ``inputs``: what the run read (``base``, the part known before its plan, plus its env files and
    sources); ``before``: ``settings_part`` taken before it loaded its settings; ``start``: the
    fingerprint of ``base`` taken before its plan; ``started``: when it began (time.time()). Kept only
    if nothing stat-fingerprinted changed since it began or in the last ``SETTLE_SECONDS``,
    ``sources_unchanged()`` (resolved again, after the walk) still gives the revisions the plan used,
    and the settings and ``base`` are as they were.
    """
    if disabled(environ):
        return False
    try:
        full = fingerprint(inputs, environ, settled_before=min(started, time.time() - SETTLE_SECONDS))
        if not sources_unchanged() or settings_part(inputs["config"], environ) != before \
                or fingerprint(base, environ) != start:
            return False
    except Exception:  # noqa: BLE001 - recording is best effort: the apply itself succeeded
        return False
    path = record_path(Path(inputs["config"]), environ)
    data = {"format": _FORMAT, "inputs": dict(inputs), "fingerprint": full, "text": text, "json": document}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps(data))
        os.replace(temp, path)
    except OSError:
        return False
    return True
