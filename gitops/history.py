"""Build history and operator intent, kept in one TinyDB file.

This is the only module that imports ``tinydb``. Several Kalpana processes
(the CLI, ``kalpana watch``, the webhook server) share one state directory,
so every operation takes ``history.lock`` and opens the database afresh:
nothing read before the lock was taken is trusted after it.

Logs live in one plain file per build (``logs/<id>.log``), never in the
database: the database is rewritten whole on every change, and listing
builds must not drag megabytes of build output along.

Docker is the truth for what runs; this file holds only what Docker cannot
tell: past builds, deployments the operator stopped, host ports handed out.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import filelock
from tinydb import Query, TinyDB
from tinydb.table import Document
from tinydb.storages import Storage

from gitops.build import FIELDS, Build, BuildStatus, Trigger, iso, now_iso, parse_iso
from gitops.errors import KalpanaError, LockTimeout

_BUILDS = "builds"
_INTENTS = "intents"

INTERRUPTED_MESSAGE = (
    "interrupted: the process running this build stopped (killed?) before it finished"
)

# Characters Docker accepts in an image tag; an id is used both as a tag and
# as a file name, so anything else (``/``, ``..``) is refused before it can
# reach the file system.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class HistoryError(KalpanaError):
    """The state directory or history file cannot be read or written."""


class HistoryCorrupt(HistoryError):
    """The history file is not what Kalpana wrote; the message names it and the fix."""


class BuildNotFound(KalpanaError):
    """No build (or more than one, for a prefix) matches the id given."""


# new_build() sets these itself; pid/host can be changed later with update()
# when another process (a worker) takes the build over.
_NEW_BUILD_RESERVED = {"id", "deployment", "status", "triggered_by", "action", "reason",
                       "created_at", "pid", "host"}


class _AtomicJSONStorage(Storage):
    """TinyDB storage that reads the file once per operation and replaces it atomically.

    TinyDB's own JSONStorage rewrites the file in place, so a process killed
    mid-write leaves half a file. Writing a temporary file and renaming it over
    the old one means the file is always either the old or the new version.
    The parsed data is kept only for the life of this instance, which is one
    locked operation.
    """

    def __init__(self, path: Path):
        self._path = path
        self._data: dict[str, dict[str, Any]] | None = None
        self._loaded = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._loaded:
            self._data = self._load()
            self._loaded = True
        return self._data

    def _load(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except ValueError as err:  # not UTF-8
            raise _corrupt(self._path, f"not UTF-8 text ({err})") from None
        except OSError as err:
            raise HistoryError(
                f"cannot read the build history {self._path}: {err.strerror}; "
                "check the permissions of the state directory"
            ) from None
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError as err:
            raise _corrupt(self._path, f"invalid JSON ({err})") from None
        if not isinstance(data, dict) or not all(
            isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
            for table in data.values()
        ):
            raise _corrupt(self._path, "not a TinyDB document (expected tables of records)")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                # dumps, not dump: dump streams through the pure-Python encoder, 10x slower.
                out.write(json.dumps(data, separators=(",", ":")))
                out.flush()
                # Without this, a power cut after the rename can leave an empty file.
                os.fsync(out.fileno())
            os.replace(tmp, self._path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise HistoryError(
                f"cannot write the build history {self._path}: {err.strerror}; "
                "check free disk space and the permissions of the state directory"
            ) from None
        self._data = data
        self._loaded = True


def _corrupt(path: Path, what: str) -> HistoryCorrupt:
    return HistoryCorrupt(
        f"the build history {path} is corrupt: {what}; "
        f"move it aside (`mv {path} {path}.broken`) and Kalpana starts a new, empty history"
    )


class History:
    """Build records and operator intent in ``state_dir``, safe across processes.

    Files: ``history.json`` (TinyDB), ``history.lock`` (the lock every operation
    takes), ``logs/<build id>.log`` (one log file per build).
    """

    def __init__(self, state_dir: Path, lock_timeout: float = 30.0):
        self.state_dir = Path(state_dir)
        self.db_path = self.state_dir / "history.json"
        self.lock_path = self.state_dir / "history.lock"
        self.logs_dir = self.state_dir / "logs"
        self.lock_timeout = lock_timeout
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HistoryError(
                f"cannot create the state directory {self.logs_dir}: {err.strerror}; "
                "create it yourself or point state_dir in kalpana.yaml somewhere writable"
            ) from None
        self._lock = filelock.FileLock(str(self.lock_path), timeout=lock_timeout)

    # -- plumbing ---------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[TinyDB]:
        """The lock held and a freshly opened database: one per operation."""
        try:
            # filelock polls; its 50 ms default lets a busy writer starve the others.
            self._lock.acquire(poll_interval=0.005)
        except filelock.Timeout:
            raise LockTimeout(
                f"another Kalpana process held {self.lock_path} for more than "
                f"{self.lock_timeout:g}s: wait for it to finish and retry "
                "(a lock held by a dead process is released automatically)"
            ) from None
        try:
            db = TinyDB(self.db_path, storage=_AtomicJSONStorage)
            try:
                yield db
            finally:
                db.close()
        finally:
            self._lock.release()

    def _records(self, db: TinyDB) -> list[Document]:
        """Raw build records, newest first.

        TinyDB numbers documents in insertion order, and inserts happen under
        the lock, so the document id is the true creation order even for two
        builds created in the same millisecond by two processes.
        """
        docs = db.table(_BUILDS, cache_size=0).all()
        docs.sort(key=lambda doc: doc.doc_id, reverse=True)
        return docs

    def _build(self, record: dict[str, Any]) -> Build:
        try:
            return Build.from_dict(record)
        except (KeyError, TypeError, ValueError) as err:
            raise _corrupt(self.db_path, f"a build record is malformed ({err!r}): {record!r}")

    def _find(self, db: TinyDB, build_id: str) -> tuple[int, Document]:
        for doc in db.table(_BUILDS, cache_size=0):
            if doc.get("id") == build_id:
                return doc.doc_id, doc
        raise BuildNotFound(f"no build {build_id!r} in {self.db_path}; `kalpana builds NAME` lists them")

    def _log_path(self, build_id: str) -> Path:
        if not _SAFE_ID.fullmatch(build_id):
            raise BuildNotFound(
                f"{build_id!r} is not a build id (letters, digits, '-', '_' and '.' only); "
                "`kalpana builds NAME` lists them"
            )
        return self.logs_dir / f"{build_id}.log"

    # -- builds -----------------------------------------------------------

    def new_build(
        self,
        deployment: str,
        triggered_by: Trigger | str,
        action: str,
        *,
        reason: str | None = None,
        status: BuildStatus | str = BuildStatus.PENDING,
        **fields: Any,
    ) -> Build:
        """Record a new build run by this process, created now, and return it.

        ``fields`` may set any other :class:`Build` field (commit_hash, branch, ...).
        """
        bad = set(fields) - (FIELDS - _NEW_BUILD_RESERVED)
        if bad:
            raise TypeError(f"new_build() cannot set {sorted(bad)}")
        moment = datetime.now(timezone.utc)
        with self._db() as db:
            table = db.table(_BUILDS, cache_size=0)
            taken = {doc.get("id") for doc in table}
            build_id = _new_id(moment, taken)
            build = Build(
                id=build_id,
                deployment=deployment,
                status=BuildStatus(status),
                triggered_by=Trigger(triggered_by),
                action=action,
                reason=reason,
                created_at=iso(moment),
                pid=os.getpid(),
                host=socket.gethostname(),
                **fields,
            )
            table.insert(build.to_dict())
        return build

    def update(self, build_id: str, **fields: Any) -> Build:
        """Change fields of a build and return it.

        ``durations`` is merged into the recorded ones, so each phase can add
        its own figure.
        """
        bad = set(fields) - (FIELDS - {"id"})
        if bad:
            raise TypeError(f"update() cannot set {sorted(bad)}")
        with self._db() as db:
            doc_id, record = self._find(db, build_id)
            build = self._build(record)
            for name, value in fields.items():
                if name == "status":
                    value = BuildStatus(value)
                elif name == "triggered_by":
                    value = Trigger(value)
                elif name == "durations":
                    value = {**build.durations, **value}
                setattr(build, name, value)
            db.table(_BUILDS, cache_size=0).update(build.to_dict(), doc_ids=[doc_id])
        return build

    def finish(
        self,
        build_id: str,
        status: BuildStatus | str,
        error_message: str | None = None,
        **fields: Any,
    ) -> Build:
        """End a build: set status, completed_at (now) and ``durations["total"]``.

        The total runs from started_at (or created_at, for a build cancelled
        before it started) to completion, unless the caller gives one.
        """
        status = BuildStatus(status)
        if not status.finished:
            raise ValueError(f"finish() needs SUCCESS, FAILED or CANCELLED, not {status.value}")
        bad = set(fields) - (FIELDS - {"id"})
        if bad:
            raise TypeError(f"finish() cannot set {sorted(bad)}")
        completed_at = fields.pop("completed_at", None) or now_iso()
        with self._db() as db:
            doc_id, record = self._find(db, build_id)
            build = self._build(record)
            for name, value in fields.items():
                if name == "durations":
                    value = {**build.durations, **value}
                setattr(build, name, value)
            build.status = status
            build.error_message = error_message
            build.completed_at = completed_at
            begin = build.started_at or build.created_at
            build.durations.setdefault(
                "total",
                round((parse_iso(completed_at) - parse_iso(begin)).total_seconds(), 3),
            )
            db.table(_BUILDS, cache_size=0).update(build.to_dict(), doc_ids=[doc_id])
        return build

    def get(self, build_id: str) -> Build | None:
        """The build with this id, or with this unique id prefix; None when none matches.

        A prefix shared by several builds raises :class:`BuildNotFound` listing
        them, rather than silently picking one.
        """
        if not build_id:
            return None
        with self._db() as db:
            records = self._records(db)
        matches = []
        for record in records:
            rid = record.get("id", "")
            if rid == build_id:
                return self._build(record)
            if rid.startswith(build_id):
                matches.append(record)
        if len(matches) > 1:
            shown = ", ".join(r["id"] for r in matches[:5])
            more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
            raise BuildNotFound(
                f"build id prefix {build_id!r} matches {len(matches)} builds ({shown}{more}); "
                "give more characters"
            )
        return self._build(matches[0]) if matches else None

    def list(self, deployment: str | None = None, limit: int | None = None) -> list[Build]:
        """Builds, newest first, of one deployment or all; at most ``limit`` of them."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        with self._db() as db:
            records = self._records(db)
        if deployment is not None:
            records = [r for r in records if r.get("deployment") == deployment]
        if limit is not None:
            records = records[:limit]
        return [self._build(r) for r in records]

    def latest(self, deployment: str, status: BuildStatus | str | None = None) -> Build | None:
        """The newest build of ``deployment`` (with ``status``, when given)."""
        wanted = BuildStatus(status).value if status is not None else None
        with self._db() as db:
            records = self._records(db)
        for record in records:
            if record.get("deployment") == deployment and (
                wanted is None or record.get("status") == wanted
            ):
                return self._build(record)
        return None

    def mark_interrupted(self) -> list[Build]:
        """Fail every PENDING/BUILDING build whose process on this host is gone.

        Builds of other hosts are left alone (their processes cannot be seen
        from here), and so are builds of this very process, unless they were
        created before it started: a container restart gives Kalpana the same
        pid (often 1) again, and those records are from the previous life.
        Returns the builds it changed.
        """
        host = socket.gethostname()
        me = os.getpid()
        changed: list[Build] = []
        with self._db() as db:
            table = db.table(_BUILDS, cache_size=0)
            now = now_iso()
            for record in table:
                if record.get("status") not in (BuildStatus.PENDING.value, BuildStatus.BUILDING.value):
                    continue
                pid = record.get("pid")
                if record.get("host") != host or not isinstance(pid, int):
                    continue
                if pid == me:
                    if record.get("created_at", "") >= _PROCESS_STARTED:
                        continue
                elif _pid_alive(pid):
                    continue
                build = self._build(record)
                build.status = BuildStatus.FAILED
                build.error_message = INTERRUPTED_MESSAGE
                build.completed_at = now
                changed.append(build)
            if changed:
                by_id = {b.id: b.to_dict() for b in changed}
                # One callable update: a single rewrite of the file for all of them.
                table.update(
                    lambda doc: doc.update(by_id[doc["id"]]),
                    Query().id.one_of(list(by_id)),
                )
        return changed

    # -- logs -------------------------------------------------------------

    def append_log(self, build_id: str, text: str) -> None:
        """Append already-masked ``text`` to the build's log file (no lock, no database)."""
        # One writer per build, and O_APPEND keeps concurrent readers sane,
        # so the history lock is not needed here.
        with open(self._log_path(build_id), "a", encoding="utf-8", errors="replace") as out:
            out.write(text)

    def logs(self, build_id: str) -> str:
        """The build's whole log; "" when it has none."""
        try:
            return self._log_path(build_id).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_path(self, build_id: str) -> Path:
        """Where the build's log file is (for tailing it live)."""
        return self._log_path(build_id)

    # -- operator intent --------------------------------------------------

    def stopped(self) -> set[str]:
        """Deployments the operator stopped; they stay stopped until started again."""
        with self._db() as db:
            return {
                doc["deployment"]
                for doc in db.table(_INTENTS, cache_size=0)
                if doc.get("stopped")
            }

    def set_stopped(self, deployment: str, stopped: bool) -> None:
        """Remember (or forget) that the operator stopped ``deployment``."""
        self._set_intent(deployment, "stopped", bool(stopped))

    def assigned_port(self, deployment: str) -> int | None:
        """The host port handed to ``deployment`` earlier, if any."""
        return self.assigned_ports().get(deployment)

    def assign_port(self, deployment: str, port: int | None) -> None:
        """Remember ``deployment``'s host port; ``None`` releases it.

        No uniqueness check here: choosing a free port is routing's job.
        """
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ValueError(f"port must be 1-65535, not {port!r}")
        self._set_intent(deployment, "port", port)

    def assigned_ports(self) -> dict[str, int]:
        """Every deployment's assigned host port."""
        with self._db() as db:
            return {
                doc["deployment"]: doc["port"]
                for doc in db.table(_INTENTS, cache_size=0)
                if doc.get("port") is not None
            }

    def _set_intent(self, deployment: str, key: str, value: Any) -> None:
        with self._db() as db:
            table = db.table(_INTENTS, cache_size=0)
            q = Query().deployment == deployment
            doc = table.get(q)
            merged = {"deployment": deployment, "stopped": False, "port": None}
            if doc is not None:
                merged.update(doc)
            merged[key] = value
            if not merged["stopped"] and merged["port"] is None:
                table.remove(q)  # nothing left to remember
            elif doc is None:
                table.insert(merged)
            else:
                table.update(merged, q)


def _new_id(moment: datetime, taken: set[str]) -> str:
    """``YYYYmmdd-HHMMSS-xxxx``: sorts by time to the second, safe as an image tag.

    Four hex digits give 65,536 ids per second; the check against ``taken``
    (made under the lock) turns "very unlikely" into "never" for a burst.
    """
    stamp = moment.strftime("%Y%m%d-%H%M%S")
    while True:
        candidate = f"{stamp}-{secrets.token_hex(2)}"
        if candidate not in taken:
            return candidate


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    # A zombie has exited but not been reaped: it runs nothing any more.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# Records this pid made before this moment belong to an earlier process with the same pid.
_PROCESS_STARTED = now_iso()
