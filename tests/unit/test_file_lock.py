"""gitops.file_lock: the flock-based lock that replaced the filelock package (issue 12)."""

from __future__ import annotations

import os
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
        FileLock(path, timeout=0.05).acquire()
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


def test_a_waiter_that_timed_out_lets_go_of_the_lock_and_its_descriptor(tmp_path):
    path = str(tmp_path / "x.lock")
    fds_before = len(os.listdir("/proc/self/fd"))
    holder = FileLock(path)
    holder.acquire()
    for _ in range(3):
        with pytest.raises(Timeout):
            FileLock(path).acquire(timeout=0.02)
    holder.release()  # the abandoned waiters get the lock in turn, and drop it at once
    with FileLock(path, timeout=5):
        pass
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > fds_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_two_processes_taking_turns_both_make_progress(tmp_path):
    """A process that takes the lock again at once must not starve a waiting one (history writers do this)."""
    path, log = str(tmp_path / "x.lock"), tmp_path / "log"
    code = ("import sys, time; from gitops.file_lock import FileLock; l = FileLock(sys.argv[1])\n"
            "print('ready', flush=True); sys.stdin.readline()  # start together\n"
            "for i in range(300):\n"
            "    with l:  # held for a while, then taken again at once\n"
            "        open(sys.argv[2], 'a').write(sys.argv[3])\n"
            "        time.sleep(0.001)\n")
    workers = [subprocess.Popen([sys.executable, "-c", code, path, str(log), mark], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for mark in "ab"]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        worker.stdin.close()
        assert worker.wait(60) == 0
    text = log.read_text()
    assert sorted(text) == sorted("a" * 300 + "b" * 300)
    switches = sum(1 for x, y in zip(text, text[1:]) if x != y)
    assert switches > 20, text  # a waiter that polls gets in a handful of times at most
