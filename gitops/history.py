"""Build history and operator intent, kept in one TinyDB file.

This is the only module that imports ``tinydb``. Several Kalpana processes
(the CLI, ``kalpana watch``, the webhook server) share one state directory,
so every operation takes ``history.lock`` and opens the database afresh:
nothing read before the lock was taken is trusted after it.

Logs live in one plain file per build (``logs/<id>.log``), never in the
database; :mod:`gitops.build_logs` stores them, and a History owns one
:class:`~gitops.build_logs.BuildLogs`.

Both stay bounded. ``prune`` keeps the newest records of each deployment
(and their logs) and deletes the rest in one locked rewrite, so the cost of
every operation, which reads and rewrites the whole file, stops growing with
the age of the installation. A log keeps its first and last part within
``max_log_bytes``, with a marker line saying how much was cut between them.

Docker is the truth for what runs; this file holds only what Docker cannot
tell: past builds, deployments the operator stopped, host ports handed out.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Collection, Iterable, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from gitops.build import FIELDS, Build, BuildStatus, Trigger, iso, now_iso, parse_iso, process_alive
from gitops.build_logs import DEFAULT_MAX_LOG_BYTES, BuildLogs, BuildNotFound, HistoryError
from gitops import file_lock
from gitops.errors import LockTimeout

_BUILDS = "builds"
_INTENTS = "intents"

INTERRUPTED_MESSAGE = (
    "interrupted: the process running this build stopped (killed?) before it finished"
)

_UNFINISHED = frozenset({BuildStatus.PENDING.value, BuildStatus.BUILDING.value})


class HistoryCorrupt(HistoryError):
    """The history file is not what Kalpana wrote; the message names it and the fix."""


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
    takes), ``logs/<build id>.log`` (one log file per build; while a build whose
    log passed ``max_log_bytes`` runs, its newest output waits in a side file,
    ``logs/<build id>.log.tail``, until ``finish`` splices it in).
    """

    def __init__(self, state_dir: Path, lock_timeout: float = 30.0,
                 max_log_bytes: int = DEFAULT_MAX_LOG_BYTES):
        self.state_dir = Path(state_dir)
        self.db_path = self.state_dir / "history.json"
        self.lock_path = self.state_dir / "history.lock"
        self.logs_dir = self.state_dir / "logs"
        self.lock_timeout = lock_timeout
        self.max_log_bytes = max_log_bytes
        self.build_logs = BuildLogs(self.logs_dir, max_log_bytes)
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HistoryError(
                f"cannot create the state directory {self.logs_dir}: {err.strerror}; "
                "create it yourself or point state_dir in kalpana.yaml somewhere writable"
            ) from None
        self._lock = file_lock.FileLock(str(self.lock_path), timeout=lock_timeout)
        # The steps of one apply run on several threads: they queue here, in order, rather than
        # poll the file lock against each other (and share one temporary file name, by pid).
        self._threads = threading.RLock()

    # -- plumbing ---------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[TinyDB]:
        """The lock held and a freshly opened database: one per operation."""
        with self._threads:
            with self._locked_db() as db:
                yield db

    @contextmanager
    def _locked_db(self) -> Iterator[TinyDB]:
        try:
            # A waiter waits in the kernel's queue (see file_lock): a busy writer cannot starve the others.
            self._lock.acquire()
        except file_lock.Timeout:
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

    def _raw(self, db: TinyDB) -> dict[str, dict[str, Any]]:
        """The build records as stored, by document id (a decimal string).

        Scans read these plain dicts: wrapping every record in a TinyDB Document
        or a Build first would cost more than the parse of the whole file.
        TinyDB numbers documents in insertion order, and inserts happen under
        the lock, so the document id is the true creation order even for two
        builds created in the same millisecond by two processes.
        """
        return (db.storage.read() or {}).get(_BUILDS, {})

    def _records(self, db: TinyDB) -> list[dict[str, Any]]:
        """Raw build records, newest first."""
        raw = self._raw(db)
        return [raw[key] for key in sorted(raw, key=int, reverse=True)]

    def _build(self, record: dict[str, Any]) -> Build:
        try:
            return Build.from_dict(record)
        except (KeyError, TypeError, ValueError) as err:
            raise _corrupt(self.db_path, f"a build record is malformed ({err!r}): {record!r}")

    def _find(self, db: TinyDB, build_id: str) -> tuple[int, dict[str, Any]]:
        for key, record in self._raw(db).items():
            if record.get("id") == build_id:
                return int(key), record
        raise BuildNotFound(f"no build {build_id!r} in {self.db_path}; `kalpana builds NAME` lists them")

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
            taken = {record.get("id") for record in self._raw(db).values()}
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
            db.table(_BUILDS, cache_size=0).insert(build.to_dict())
        return build

    def import_builds(self, builds: Iterable[Build]) -> None:
        """Record builds made elsewhere (another state directory, a test, a benchmark), oldest first.

        One locked write for all of them, where ``new_build`` would rewrite the
        file once per build. Their ids must be build ids no record has yet.
        """
        records = [build.to_dict() for build in builds]
        ids = [record["id"] for record in records]
        for build_id in ids:
            self.build_logs.path(build_id)  # refuses an id that is not safe as a tag and a file name
        if len(set(ids)) != len(ids):
            raise ValueError("import_builds() got the same build id twice")
        with self._db() as db:
            taken = {record.get("id") for record in self._raw(db).values()}.intersection(ids)
            if taken:
                raise ValueError(f"import_builds(): builds {sorted(taken)[:5]} are already recorded")
            db.table(_BUILDS, cache_size=0).insert_multiple(records)

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
        before it started) to completion, unless the caller gives one. A log
        that passed ``max_log_bytes`` gets its head, the cut marker and its
        tail spliced into one file first, while the record still says the
        build runs (so no ``prune`` can take the record away meanwhile).
        """
        status = BuildStatus(status)
        if not status.finished:
            raise ValueError(f"finish() needs SUCCESS, FAILED or CANCELLED, not {status.value}")
        bad = set(fields) - (FIELDS - {"id"})
        if bad:
            raise TypeError(f"finish() cannot set {sorted(bad)}")
        completed_at = fields.pop("completed_at", None) or now_iso()
        self._seal_log_quietly(build_id)
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
            raw = self._raw(db)
        best: tuple[int, dict[str, Any]] | None = None
        for key, record in raw.items():
            if record.get("deployment") == deployment and (wanted is None or record.get("status") == wanted):
                doc_id = int(key)
                if best is None or doc_id > best[0]:
                    best = (doc_id, record)
        return self._build(best[1]) if best else None

    def snapshot(self) -> Snapshot:
        """One read of everything (builds and intents), for a reader that asks several questions at once."""
        with self._db() as db:
            data = db.storage.read() or {}
        return Snapshot(self, data.get(_BUILDS, {}), data.get(_INTENTS, {}))

    def by_ids(self, build_ids: Collection[str]) -> dict[str, Build]:
        """The builds with these exact ids (those recorded), in one read of the database."""
        return self.snapshot().by_ids(build_ids) if build_ids else {}

    def latest_per_deployment(self) -> dict[str, Build]:
        """The newest build of every deployment that has one: what ``status`` shows.

        One read, and one Build made per deployment however long the history is.
        """
        with self._db() as db:
            raw = self._raw(db)
        return Snapshot(self, raw, {}).latest_per_deployment()

    def unfinished(self) -> bool:
        """True while any build is PENDING or BUILDING (here or, for a shared state directory, elsewhere)."""
        with self._db() as db:
            return any(record.get("status") in _UNFINISHED for record in self._raw(db).values())

    def mark_interrupted(self) -> list[Build]:
        """Fail every PENDING/BUILDING build whose process on this host is gone.

        Builds of other hosts are left alone (their processes cannot be seen
        from here), and so are builds of this very process, unless they were
        created before it started: a container restart gives Kalpana the same
        pid (often 1) again, and those records are from the previous life.
        Only unfinished records are turned into Builds, and the file is
        rewritten only when one changes. The log of a build it fails gets its
        side file spliced in, as ``finish`` would have done. Returns the builds
        it changed.
        """
        host = socket.gethostname()
        me = os.getpid()
        changed: list[tuple[int, Build]] = []
        with self._db() as db:
            unfinished = [(int(key), record) for key, record in self._raw(db).items()
                          if record.get("status") in _UNFINISHED]
            if not unfinished:
                return []
            now = now_iso()
            for doc_id, record in sorted(unfinished, key=lambda item: item[0]):
                pid = record.get("pid")
                if record.get("host") != host or not isinstance(pid, int):
                    continue
                if pid == me:
                    if record.get("created_at", "") >= _PROCESS_STARTED:
                        continue
                elif process_alive(pid):
                    continue
                build = self._build(record)
                build.status = BuildStatus.FAILED
                build.error_message = INTERRUPTED_MESSAGE
                build.completed_at = self._last_sign_of_life(build) or now
                changed.append((doc_id, build))
            if changed:
                for _, build in changed:
                    # Under the lock: once FAILED, a prune elsewhere may take the record and its log.
                    self._seal_log_quietly(build.id)
                by_id = {build.id: build.to_dict() for _, build in changed}
                # One callable update: a single rewrite of the file for all of them.
                db.table(_BUILDS, cache_size=0).update(
                    lambda doc: doc.update(by_id[doc["id"]]), doc_ids=[doc_id for doc_id, _ in changed]
                )
        return [build for _, build in changed]

    def _last_sign_of_life(self, build: Build) -> str | None:
        """When an interrupted build last did something: its log's last write (else its start).

        Its duration then ends near where the process died, not when a later run noticed.
        """
        moments = []
        for path in (self.build_logs.path(build.id), self.build_logs.path(build.id).with_name(f"{build.id}.log.tail")):
            try:
                moments.append(iso(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)))
            except OSError:
                pass
        moments += [m for m in (build.started_at, build.created_at) if m]
        return max(moments) if moments else None

    # -- retention --------------------------------------------------------

    def prune(self, keep: int, protect: Collection[str] = frozenset()) -> list[str]:
        """Keep the newest ``keep`` records of each deployment; delete older ones and their logs.

        Never deleted, however old: a build whose id is in ``protect`` (the
        engine passes those of the containers that serve and of the images
        kept for rollback) and an unfinished (PENDING/BUILDING) build. Log
        files without a record (left by an earlier crash, or by records
        removed by hand) go too. One locked rewrite, and none when nothing is
        dropped. Returns the ids of the records it deleted, newest first.
        """
        if keep < 1:
            raise ValueError(f"keep must be >= 1, not {keep}")
        protect = frozenset(protect)
        with self._db() as db:
            raw = self._raw(db)
            seen: dict[Any, int] = {}
            drop: list[int] = []
            dropped: list[str] = []
            kept: set[str] = set()
            for key in sorted(raw, key=int, reverse=True):
                record = raw[key]
                name = record.get("deployment")
                rank = seen[name] = seen.get(name, 0) + 1
                build_id = record.get("id")
                if rank <= keep or build_id in protect or record.get("status") in _UNFINISHED:
                    kept.add(build_id)
                else:
                    drop.append(int(key))
                    dropped.append(build_id)
            if drop:
                db.table(_BUILDS, cache_size=0).remove(doc_ids=drop)
            # Listed under the lock: a log file appears only after its record exists, and no
            # record can be added meanwhile, so a log without a record here is truly an orphan.
            # Deleted after it: no one writes to the log of a finished or vanished build, and a
            # first prune of a long history deletes thousands of files.
            doomed = self.build_logs.files_except(kept)
        self.build_logs.delete(doomed)
        return dropped

    # -- logs -------------------------------------------------------------

    def append_log(self, build_id: str, text: str) -> None:
        """Append already-masked ``text`` to the build's log (no lock, no database).

        See :meth:`BuildLogs.append <gitops.build_logs.BuildLogs.append>`:
        past ``max_log_bytes`` the newest output waits in a side file that
        ``finish`` (or ``mark_interrupted``) splices in.
        """
        self.build_logs.append(build_id, text)

    def logs(self, build_id: str) -> str:
        """The build's whole log (head, cut marker, tail while it runs); "" when it has none."""
        return self.build_logs.read(build_id)

    def log_path(self, build_id: str) -> Path:
        """Where the build's log file is (its head only, while a build past ``max_log_bytes`` runs)."""
        return self.build_logs.path(build_id)

    def _seal_log_quietly(self, build_id: str) -> None:
        # A log that cannot be spliced must not keep a build from being recorded as ended:
        # its side file stays, and ``logs`` joins the two on every read instead.
        try:
            self.build_logs.seal(build_id)
        except OSError:
            pass

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

    def problems(self) -> dict[str, str]:
        """Why the last apply left deployments alone before building (their source, their host port)."""
        with self._db() as db:
            return _problems(db.table(_INTENTS, cache_size=0))

    def set_problems(self, problems: Mapping[str, str | None]) -> None:
        """Remember each deployment's problem (``None``: it has none any more); writes only what changed."""
        known = self.problems()
        for deployment, problem in problems.items():
            if known.get(deployment) != problem:
                self._set_intent(deployment, "problem", problem)

    def _set_intent(self, deployment: str, key: str, value: Any) -> None:
        with self._db() as db:
            table = db.table(_INTENTS, cache_size=0)
            q = Query().deployment == deployment
            doc = table.get(q)
            merged = {"deployment": deployment, "stopped": False, "port": None}
            if doc is not None:
                merged.update(doc)
            merged[key] = value
            if not merged["stopped"] and merged["port"] is None and not merged.get("problem"):
                table.remove(q)  # nothing left to remember
            elif doc is None:
                table.insert(merged)
            else:
                table.update(merged, q)


class Snapshot:
    """The history as one read found it: the reads of ``History`` without reading again.

    The API's list of deployments asks for the newest builds, the running builds, the stopped
    deployments and the assigned ports; with thousands of records each read costs a parse of the file.
    """

    def __init__(self, history: History, builds: dict[str, dict[str, Any]], intents: dict[str, dict[str, Any]]):
        self._history = history
        self._builds = builds
        self._intents = intents

    def latest_per_deployment(self) -> dict[str, Build]:
        """As ``History.latest_per_deployment``."""
        newest: dict[Any, tuple[int, dict[str, Any]]] = {}
        for key, record in self._builds.items():
            doc_id = int(key)
            name = record.get("deployment")
            seen = newest.get(name)
            if seen is None or doc_id > seen[0]:
                newest[name] = (doc_id, record)
        return {name: self._history._build(record) for name, (_, record) in newest.items()}

    def by_ids(self, build_ids: Collection[str]) -> dict[str, Build]:
        """As ``History.by_ids``."""
        wanted = set(build_ids)
        return {record["id"]: self._history._build(record) for record in self._builds.values()
                if record.get("id") in wanted}

    def stopped(self) -> set[str]:
        """As ``History.stopped``."""
        return {doc["deployment"] for doc in self._intents.values() if doc.get("stopped")}

    def assigned_ports(self) -> dict[str, int]:
        """As ``History.assigned_ports``."""
        return {doc["deployment"]: doc["port"] for doc in self._intents.values() if doc.get("port") is not None}

    def problems(self) -> dict[str, str]:
        """As ``History.problems``."""
        return _problems(self._intents.values())


def _problems(docs: Iterable[dict[str, Any]]) -> dict[str, str]:
    return {doc["deployment"]: doc["problem"] for doc in docs if doc.get("problem")}


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


# Records this pid made before this moment belong to an earlier process with the same pid.
_PROCESS_STARTED = now_iso()
