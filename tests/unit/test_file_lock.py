"""gitops.file_lock: the flock-based lock that replaced the filelock package (issue 12)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import filelock
import pytest

from gitops.file_lock import FileLock, Timeout


def test_reentrant_in_one_thread_and_released_by_the_last_release(tmp_path):
    path = str(tmp_path / "x.lock")
    lock, other = FileLock(path), FileLock(path)
    with lock:
        with lock:
            assert lock.is_locked
        assert lock.is_locked
        with pytest.raises(Timeout):
            other.acquire(timeout=0)
    assert not lock.is_locked
    other.acquire(timeout=0)
    other.release()
    lock.release()  # not held: fine


def test_threads_exclude_each_other(tmp_path):
    lock = FileLock(str(tmp_path / "x.lock"))
    inside, overlaps = [], []

    def work() -> None:
        for _ in range(20):
            with lock:
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []


def test_timeout_raises_and_a_waiter_gets_the_lock_once_it_is_released(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = FileLock(path)
    holder.acquire()
    with pytest.raises(Timeout) as info:
        FileLock(path, timeout=0.05).acquire(poll_interval=0.01)
    assert info.value.lock_file == path
    got = threading.Event()

    def wait() -> None:
        with FileLock(path):
            got.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not got.wait(0.1)
    holder.release()
    waiter.join(10)
    assert got.is_set()


def test_another_process_and_the_filelock_package_see_the_same_lock(tmp_path):
    path = str(tmp_path / "x.lock")
    code = ("import sys, time; from gitops.file_lock import FileLock; "
            "l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); sys.stdin.readline()")
    child = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            FileLock(path).acquire(timeout=0.05)
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(path).acquire(timeout=0.05)
    finally:
        child.stdin.close()  # the child exits: the kernel drops its lock
        child.wait(10)
    with FileLock(path, timeout=1):
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(path).acquire(timeout=0.05)
