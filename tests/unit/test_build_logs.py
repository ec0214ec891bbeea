"""Stored build logs: capped at head + marker + tail, a side file while a build runs, safe ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gitops import build_logs as module
from gitops.build_logs import BuildLogs, BuildNotFound, HistoryError

CAP = 20_000
BUILD = "20260101-000000-beef"


@pytest.fixture
def logs(tmp_path: Path) -> BuildLogs:
    return BuildLogs(tmp_path, max_bytes=CAP)


def numbered_lines(n: int, width: int = 60) -> list[str]:
    """``n`` distinct lines of ``width`` bytes each, newline included."""
    return [f"line {i:07d} ".ljust(width - 1, "x") + "\n" for i in range(n)]


def split_at_marker(log: str) -> tuple[str, int, str]:
    """(head, bytes cut, tail) of a log with a cut marker."""
    match = re.search(r"\[\.\.\. kalpana: ([\d,]+) bytes of output cut here[^\n]*\]\n", log)
    assert match, log[:200]
    return log[:match.start()], int(match[1].replace(",", "")), log[match.end():]


def assert_cut_from(log: str, written: str) -> None:
    """``log`` is the start of ``written``, a marker counting exactly the characters cut, and its end."""
    head, cut, tail = split_at_marker(log)
    assert written.startswith(head) and written.endswith(tail)
    assert len(head) + cut + len(tail) == len(written)


def test_append_read_and_path(logs: BuildLogs, tmp_path: Path):
    assert logs.read(BUILD) == ""
    logs.append(BUILD, "step 1\n")
    logs.append(BUILD, "step 2 ✓\n")
    assert logs.read(BUILD) == "step 1\nstep 2 ✓\n"
    assert logs.path(BUILD) == tmp_path / f"{BUILD}.log"
    logs.seal(BUILD)  # nothing to splice under the cap
    assert [p.name for p in tmp_path.iterdir()] == [f"{BUILD}.log"]


@pytest.mark.parametrize("build_id", ["../history", "a/b", "", ".hidden", "x" * 200])
def test_every_call_refuses_ids_that_are_not_file_names(logs: BuildLogs, build_id: str):
    for call in (logs.path, logs.read, logs.seal, lambda b: logs.append(b, "x")):
        with pytest.raises(BuildNotFound, match="kalpana builds NAME"):
            call(build_id)


def test_max_bytes_must_leave_room_for_head_and_tail(tmp_path: Path):
    with pytest.raises(ValueError, match="max_log_bytes must be at least 1024"):
        BuildLogs(tmp_path, max_bytes=100)


def test_appending_never_rereads_the_log(logs: BuildLogs, monkeypatch):
    read: list[int] = []  # bytes, per read() call on a log file opened for reading
    real_open = open

    class Counting:
        def __init__(self, handle):
            self._handle = handle

        def read(self, *args):
            data = self._handle.read(*args)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

    def counting_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return Counting(handle) if "r" in mode else handle

    monkeypatch.setattr(module, "open", counting_open, raising=False)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self} whole while appending"))
    total = 0
    for line in numbered_lines(50_000, width=100):  # 5 MB, 250 times the cap
        logs.append(BUILD, line)
        total += len(line)
    bytes_read = sum(read)
    assert bytes_read > 0, "the side file was trimmed"
    # Trimming the side file reads what it keeps once per as much written: about as much as was written,
    # where re-reading the log on every line would read the cap 50,000 times (1 GB).
    assert bytes_read <= total
    assert len(read) <= total // (CAP // 3), "one trim per (almost) half the cap written, not one read per line"
    assert len(list(logs.dir.iterdir())) == 2  # the head, and one side file
    disk = sum(p.stat().st_size for p in logs.dir.iterdir())
    assert disk <= 2 * CAP, "the side file is trimmed as the build runs"


def test_a_running_noisy_build_reads_as_head_marker_tail(logs: BuildLogs):
    lines = numbered_lines(2000)
    for line in lines:
        logs.append(BUILD, line)
    assert_cut_from(logs.read(BUILD), "".join(lines))


def test_one_huge_line_is_cut_too(logs: BuildLogs):
    logs.append(BUILD, "start\n")
    logs.append(BUILD, "é" * 1_000_000 + "\n")  # 2 MB, no newline inside
    logs.seal(BUILD)
    stored = logs.path(BUILD).read_bytes()
    assert len(stored) <= CAP
    head, cut, tail = split_at_marker(stored.decode("utf-8"))  # decodes cleanly: never cut inside a character
    assert head == "start\n"
    assert tail.endswith("é\n") and set(tail[:-1]) == {"é"}
    assert len(head.encode()) + cut + len(tail.encode()) == 6 + 2_000_001


def test_a_second_writer_resumes_where_the_log_stands(tmp_path: Path):
    first = BuildLogs(tmp_path, max_bytes=CAP)
    lines = numbered_lines(1000)
    for line in lines[:500]:
        first.append(BUILD, line)
    second = BuildLogs(tmp_path, max_bytes=CAP)
    for line in lines[500:]:
        second.append(BUILD, line)
    second.seal(BUILD)
    assert_cut_from(second.read(BUILD), "".join(lines))


def test_a_side_file_cut_short_before_its_first_line_still_reads(logs: BuildLogs):
    # Killed between creating the side file and writing its count: all it holds is output.
    logs.append(BUILD, "head\n")
    Path(f"{logs.path(BUILD)}.tail").write_bytes(b"partial tail")
    assert logs.read(BUILD) == "head\npartial tail"
    logs.seal(BUILD)
    assert logs.read(BUILD) == "head\npartial tail"
    assert [p.name for p in logs.dir.iterdir()] == [f"{BUILD}.log"]


def test_appending_after_a_splice_keeps_both(logs: BuildLogs):
    for line in numbered_lines(2000):
        logs.append(BUILD, line)
    logs.seal(BUILD)
    spliced = logs.read(BUILD)
    logs.append(BUILD, "a late line\n")
    assert logs.read(BUILD) == spliced + "a late line\n"


def test_files_except_lists_every_file_of_other_builds_and_nothing_else(logs: BuildLogs):
    mine = ["keep.log", "keep.log.tail", "keep.log.tail.77.tmp"]
    others = ["20250101-000000-dead.log", "20250101-000000-dead.log.tail",
              "20250101-000000-dead.log.tail.77.tmp", "20250101-000001-feed.log.4242.tmp"]
    for name in [*mine, *others, "README", "notes.txt"]:
        (logs.dir / name).write_text("x")

    doomed = logs.files_except({"keep"})

    assert sorted(p.name for p in doomed) == sorted(others)
    logs.delete(doomed)
    assert sorted(p.name for p in logs.dir.iterdir()) == sorted([*mine, "README", "notes.txt"])
    logs.delete(doomed)  # gone already: not an error
    assert BuildLogs(logs.dir / "missing").files_except(set()) == []


def test_delete_tries_every_file_and_names_one_that_failed(logs: BuildLogs, monkeypatch):
    paths = [logs.dir / f"2025010{i}-000000-dead.log" for i in range(3)]
    for path in paths:
        path.write_text("x")
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name.startswith("20250100"):
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(HistoryError, match=r"cannot delete 1 build log file\(s\), e\.g\. .*20250100"):
        logs.delete(paths)
    assert [p.exists() for p in paths] == [True, False, False]
