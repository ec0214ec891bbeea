"""Stored build logs: one plain file per build, capped in size.

A log lives in ``<logs_dir>/<build id>.log``, never in the history database:
the database is rewritten whole on every change, and listing builds must not
drag megabytes of build output along.

A log keeps its first and last part within ``max_bytes``, with a marker line
saying how much was cut between them. While a build whose log passed the cap
runs, its newest output waits in a side file, ``<build id>.log.tail``, until
``seal`` splices it in; ``read`` joins the two meanwhile.

The exceptions of the state directory are defined here, not in
``gitops.history``, because history imports this module and never the
reverse; ``gitops.history`` re-exports them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path

from gitops.errors import KalpanaError

# The default of Settings.max_log_bytes, so that a History made without settings still caps its logs.
DEFAULT_MAX_LOG_BYTES = 5_000_000

# Characters Docker accepts in an image tag; an id is used both as a tag and
# as a file name, so anything else (``/``, ``..``) is refused before it can
# reach the file system.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# Room kept for the marker line between head and tail, so a stored log never exceeds the cap.
_MARKER_ROOM = 256
# Every file a build's log may consist of: ``<id>.log``, its side file ``<id>.log.tail``, their ``.tmp``s.
_LOG_FILE = re.compile(r"(?P<id>.+?)\.log(?:\..*)?")


class HistoryError(KalpanaError):
    """The state directory or history file cannot be read or written."""


class BuildNotFound(KalpanaError):
    """No build (or more than one, for a prefix) matches the id given."""


class BuildLogs:
    """The logs of builds in ``logs_dir``, each capped at ``max_bytes``.

    No lock: one process writes a build's log, and appends keep concurrent
    readers sane. Every method that takes a build id raises
    :class:`BuildNotFound` for one that is not safe as a file name. The
    directory must exist (``History`` creates it).
    """

    def __init__(self, logs_dir: Path, max_bytes: int = DEFAULT_MAX_LOG_BYTES):
        if max_bytes < 4 * _MARKER_ROOM:
            raise ValueError(f"max_log_bytes must be at least {4 * _MARKER_ROOM}, not {max_bytes}")
        self.dir = Path(logs_dir)
        self.max_bytes = max_bytes
        # The first half goes to the log file as it comes; the last part is kept in the side file.
        self._head_cap = max_bytes // 2
        self._tail_cap = max_bytes - self._head_cap - _MARKER_ROOM
        self._writers: dict[str, _LogWriter] = {}

    def path(self, build_id: str) -> Path:
        """Where the build's log file is (its head only, while a build past ``max_bytes`` runs)."""
        if not _SAFE_ID.fullmatch(build_id):
            raise BuildNotFound(
                f"{build_id!r} is not a build id (letters, digits, '-', '_' and '.' only); "
                "`kalpana builds NAME` lists them"
            )
        return self.dir / f"{build_id}.log"

    def append(self, build_id: str, text: str) -> None:
        """Append already-masked ``text`` to the build's log.

        Called once per output line, so it never re-reads the log: the first
        half of ``max_bytes`` goes to the log file, and once that is full the
        rest goes to a side file (``<id>.log.tail``) that is trimmed to its
        last part now and then (one read of the part it keeps per as much
        written). ``seal`` joins the two with a marker saying how much was
        cut. A process killed meanwhile leaves both files, each readable;
        ``read`` joins them on reading, and ``seal`` for good.
        """
        path = self.path(build_id)
        data = text.encode("utf-8", errors="replace")
        writer = self._writers.get(build_id)
        if writer is None:
            writer = self._writers[build_id] = self._resume_writer(path)
        if writer.tail is None:
            if writer.head + len(data) <= self._head_cap:
                _append(path, data)
                writer.head += len(data)
                return
            with open(_side(path), "wb") as out:
                out.write(_side_header(0, writer.head))
            writer.tail = 0
        _append(_side(path), data)
        writer.tail += len(data)
        if writer.tail >= 2 * self._tail_cap:
            self._trim_tail(_side(path), writer)

    def read(self, build_id: str) -> str:
        """The build's whole log (head, cut marker, tail while it runs); "" when it has none."""
        path = self.path(build_id)
        joined = self._join(path)
        if joined is not None:
            return joined.decode("utf-8", errors="replace")
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def seal(self, build_id: str) -> None:
        """Splice the side file into the log file, atomically; the side file goes.

        Raises ``OSError`` when the files cannot be read or written; the side
        file then stays, and ``read`` keeps joining the two.
        """
        self._writers.pop(build_id, None)
        path = self.path(build_id)
        joined = self._join(path)
        if joined is None:
            return
        _write_atomic(path, joined)
        _side(path).unlink(missing_ok=True)

    def files_except(self, build_ids: Collection[str]) -> list[Path]:
        """Every log file (log, side file, their temporary files) of a build not in ``build_ids``.

        Files whose names are not those of a log are left out: they are not ours to delete.
        """
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise HistoryError(f"cannot list the build logs in {self.dir}: {err.strerror}") from None
        doomed = []
        for name in names:
            match = _LOG_FILE.fullmatch(name)
            if match is not None and match["id"] not in build_ids:
                doomed.append(self.dir / name)
        return doomed

    def delete(self, paths: list[Path]) -> None:
        """Delete these log files, all that can be; one :class:`HistoryError` for those that cannot."""
        failed: list[tuple[Path, OSError]] = []
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                failed.append((path, err))
        if failed:
            path, err = failed[0]
            raise HistoryError(
                f"cannot delete {len(failed)} build log file(s), e.g. {path}: {err.strerror}; "
                "check the permissions of the state directory"
            )

    def _resume_writer(self, path: Path) -> _LogWriter:
        """Where a log stands on disk, for a build this instance has not written to yet."""
        try:
            head = path.stat().st_size
        except FileNotFoundError:
            head = 0
        try:
            with open(_side(path), "rb") as side:
                header = side.readline()
                size = os.fstat(side.fileno()).st_size
        except FileNotFoundError:
            return _LogWriter(head)
        return _LogWriter(head, size - len(header))

    def _trim_tail(self, side: Path, writer: _LogWriter) -> None:
        """Keep the last ``_tail_cap`` bytes of the side file, and count the bytes cut in its first line."""
        with open(side, "rb") as f:
            header = f.readline()
            size = os.fstat(f.fileno()).st_size
            f.seek(max(len(header), size - self._tail_cap))
            kept = f.read()
        cut, head = _parse_side_header(header) or (0, writer.head)
        cut += size - len(header) - len(kept)
        _write_atomic(side, _side_header(cut, head) + kept, durable=False)
        writer.tail = len(kept)

    def _join(self, path: Path) -> bytes | None:
        """Head + marker + tail of a log that has a side file; None when it has none."""
        # The side file first: if the writer splices it in meanwhile, the head read next is the
        # spliced log, never the head alone.
        try:
            raw = _side(path).read_bytes()
        except FileNotFoundError:
            return None
        try:
            head = path.read_bytes()
        except FileNotFoundError:
            head = b""
        header, newline, tail = raw.partition(b"\n")
        parsed = _parse_side_header(header + newline)
        if parsed is None:
            cut, tail = 0, raw  # killed while creating it: all of it is output
        else:
            cut, head_size = parsed
            if len(head) != head_size:
                # Spliced already (the side file is about to go, or a crash kept it from going):
                # the head never changes once the side file exists, except by being spliced.
                return head
        if len(tail) > self._tail_cap:
            cut += len(tail) - self._tail_cap
            tail = tail[-self._tail_cap:]
        if not cut:
            return head + tail
        skipped = _line_start(tail)
        cut += skipped
        gap = b"" if not head or head.endswith(b"\n") else b"\n"
        marker = (f"[... kalpana: {cut:,} bytes of output cut here to keep this log under "
                  f"max_log_bytes ({self.max_bytes:,}); the first and the last part are kept ...]\n")
        return head + gap + marker.encode("ascii") + tail[skipped:]


class _LogWriter:
    """Where one build's log stands in the process writing it."""

    __slots__ = ("head", "tail")

    def __init__(self, head: int, tail: int | None = None):
        self.head = head  # bytes in the log file itself
        self.tail = tail  # bytes of output in the side file; None until the head is full


def _side(log: Path) -> Path:
    return log.with_name(f"{log.name}.tail")


def _side_header(cut: int, head: int) -> bytes:
    """The side file's first line: bytes cut before its data, and the size of the head it follows."""
    return b"%d %d\n" % (cut, head)


def _parse_side_header(line: bytes) -> tuple[int, int] | None:
    fields = line.split()
    if not line.endswith(b"\n") or len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1])


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)


def _write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` whole: a reader, or a crash, sees the old file or the new one.

    ``durable`` also survives a power cut (fsync); a side file trimmed many
    times per build skips that, as appending to it does.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _line_start(tail: bytes) -> int:
    """How many bytes to skip so a cut tail starts on a line (or at least on a character)."""
    newline = tail.find(b"\n", 0, 64 * 1024)
    if 0 <= newline < len(tail) - 1:
        return newline + 1
    skip = 0
    while skip < min(len(tail), 3) and tail[skip] & 0xC0 == 0x80:  # UTF-8 continuation bytes
        skip += 1
    return skip
