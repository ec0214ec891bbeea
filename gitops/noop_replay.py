"""A repeated no-op `kalpana apply`, answered without loading the deployment models (issue 12).

A no-op apply does little work (two Docker listings, reading the files) but pays for its
imports: pydantic and the model classes are about half of its run. So when a plain `kalpana
apply` changes nothing, the CLI records what it printed together with a *fingerprint* of
everything its plan read; the next plain `kalpana apply` computes that fingerprint again with the
standard library alone and, if it is identical, prints the recorded output and exits 0. Any
difference, a missing or unreadable record, a held apply lock: the full apply runs, as always.

The fingerprint covers everything a plan reads:

- the code (version, and size and mtime of every module: an edited checkout is other code),
  and the working directory (paths in the output are relative to it);
- the settings: the config file's path and bytes, the ``.env`` beside it, every ``KALPANA_*``
  variable, ``TRAEFIK_BASE_URL``/``_EMAIL``/``_NETWORK`` and ``DOCKER_HOST``;
- the deployment files: the directory's listing and every entry's bytes;
- every source the plan resolved (a local directory, a git checkout): each entry's path, type,
  size and mtime, and for one inside git its ``HEAD``, index, refs and excludes;
- the state: the history file (operator stops, problems, builds) and the route directory;
- Docker: this instance's containers (all but the "Up 5 minutes" text) and images, listed now.
  A container that died, was removed or replaced, or an image that went, is a difference.

A record is written only after a full run that was a plain ``apply`` (``--json`` or not),
changed nothing, warned about nothing, found no error, left no unfinished build in the history
and saw the same fingerprint at its start and its end; and never while a file it stats was
changed less than ``SETTLE_SECONDS`` ago: two writes within one tick of the file system's clock
can leave size and mtime alike, so a young file is looked at again by the next full run.
``KALPANA_NO_REPLAY=1`` turns replays off.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from gitops import __version__

#: Variables the settings read besides the KALPANA_* ones (config.GUIDE_ENV; config.py is not imported here).
SETTINGS_ENV = ("TRAEFIK_BASE_URL", "TRAEFIK_EMAIL", "TRAEFIK_NETWORK", "DOCKER_HOST")
SETTLE_SECONDS = 2.0
#: A source tree with more entries than this is not fingerprinted (its walk would cost what it saves).
MAX_ENTRIES = 5000
DISABLE_ENV = "KALPANA_NO_REPLAY"
_FORMAT = 1
_CODE = Path(__file__).resolve().parent


class Unsettled(Exception):
    """An input changed too recently (or is too large) to be fingerprinted safely: record nothing."""


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
    if environ.get(DISABLE_ENV):
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
    except (OSError, ValueError, KeyError, TypeError, Unsettled):
        return None
    if not same:
        return None
    return record["json" if as_json else "text"]


def inputs_of(config: str | None, settings: Any, docker_address: str) -> dict:
    """What a fingerprint reads, from a full run's settings (its sources come later: ``with_sources``)."""
    return {"config": str(config_path(config)), "deployments": str(settings.deployments_path),
            "state": str(settings.state_path), "routes": str(settings.routes_path), "instance": settings.instance,
            "docker": docker_address, "sources": []}


def with_sources(inputs: Mapping[str, Any], revisions: Iterable[Any]) -> dict:
    """``inputs`` plus the directories of the sources a plan resolved (``source.Revision``s)."""
    sources = {(str(r.path), tuple(r.exclude)) for r in revisions if r.path is not None}
    return {**inputs, "sources": [[path, list(exclude)] for path, exclude in sorted(sources)]}


def fingerprint(inputs: Mapping[str, Any], environ: Mapping[str, str] = os.environ, *,
                settled_before: float | None = None) -> str:
    """One digest of everything listed in the module docstring; ``settled_before``: raise Unsettled
    when a stat-fingerprinted file changed after that time (recording only)."""
    parts: dict[str, Any] = {"format": _FORMAT, "version": __version__, "cwd": os.getcwd()}
    parts["code"] = _tree(_CODE, (), None, exclude_names=("__pycache__",), bounded=False)
    config = Path(inputs["config"])
    parts["config"] = [inputs["config"], _content(config), _content(config.parent / ".env")]
    parts["env"] = sorted((k, v) for k, v in environ.items() if k.startswith("KALPANA_") or k in SETTINGS_ENV)
    parts["deployments"] = _listing(Path(inputs["deployments"]))
    state = Path(inputs["state"])
    parts["history"] = _stat(state / "history.json", settled_before)
    parts["routes"] = _tree(Path(inputs["routes"]), (), settled_before)
    parts["sources"] = [[path, exclude, _tree(Path(path), tuple(exclude), settled_before, exclude_names=(".git",)),
                         _git(Path(path), settled_before)] for path, exclude in inputs["sources"]]
    parts["docker"] = _docker(inputs["docker"], inputs["instance"])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _content(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return "directory"


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
    if settled_before is not None and st.st_mtime > settled_before:
        raise Unsettled(f"{path} changed less than {SETTLE_SECONDS:g} s ago")
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino]


def _tree(root: Path, exclude: tuple[str, ...], settled_before: float | None,
          exclude_names: tuple[str, ...] = (), bounded: bool = True) -> list | None:
    """Path, mode, size, mtime and inode of every entry under ``root`` (``exclude``: relative directories)."""
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


def _git(path: Path, settled_before: float | None) -> list | None:
    """What decides a path's git revision besides its files: HEAD, the index, refs, excludes."""
    for parent in (path, *path.parents):
        dot_git = parent / ".git"
        if dot_git.exists():
            break
    else:
        return None
    if not dot_git.is_dir():  # a worktree or submodule: its metadata lives elsewhere
        raise Unsettled(f"{dot_git} is not a directory")
    return [str(parent), _content(dot_git / "HEAD"), _stat(dot_git / "index", settled_before),
            _stat(dot_git / "packed-refs", settled_before), _content(dot_git / "info" / "exclude"),
            _content(dot_git / "config"), _tree(dot_git / "refs", (), settled_before)]


def _docker(address: str, instance: str) -> list:
    from gitops import labels as L
    from gitops.runtime.socket_api import SocketAPI

    if not SocketAPI.supports(address):
        raise Unsettled(f"{address} needs the docker SDK")
    api = SocketAPI(address, timeout=10)
    filters = json.dumps({"label": L.instance_filter(instance)})
    containers = api.get("/containers/json", all="1", filters=filters)
    images = api.get("/images/json", filters=filters)
    # "Status" says "Up 5 minutes": it changes while nothing else does (State says running or not).
    return [sorted(({k: v for k, v in c.items() if k != "Status"} for c in containers), key=lambda c: c["Id"]),
            sorted(([i["Id"], i.get("RepoTags"), i.get("Labels"), i.get("Created")] for i in images))]


def record(inputs: Mapping[str, Any], start: str, text: str, document: str,
           sources_unchanged: Callable[[], bool], environ: Mapping[str, str] = os.environ) -> bool:
    """Keep a full no-op run's output (``text``, and ``document`` for --json); True if kept.

    ``inputs`` name the sources the run resolved; ``start`` is the fingerprint of the rest, taken
    before the run. Kept only if every input is settled, ``sources_unchanged()`` (resolved again,
    after the walk) still gives the revisions the plan used, and the rest is as it was at the start.
    """
    if environ.get(DISABLE_ENV):
        return False
    try:
        full = fingerprint(inputs, environ, settled_before=time.time() - SETTLE_SECONDS)
        if not sources_unchanged() or fingerprint({**inputs, "sources": []}, environ) != start:
            return False
    except (OSError, ValueError, Unsettled):
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


def forget(config: str | None, environ: Mapping[str, str] = os.environ) -> None:
    """Drop the record for ``config`` (a full run that found something to do)."""
    try:
        record_path(config_path(config, environ), environ).unlink()
    except OSError:
        pass
