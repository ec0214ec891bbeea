"""An exclusive lock on a file, between processes and between threads (``fcntl.flock``).

This replaces the filelock package, whose import (logging, inspect and its own settings
machinery) cost about 25 ms of every `kalpana` command, a tenth of a no-op apply. It keeps
the semantics Kalpana relied on, and the same kernel lock, so the two interoperate:

* re-entrant within a thread (a counter), exclusive between threads (each thread opens its
  own descriptor, and flock locks on two descriptors exclude each other) and processes;
* ``acquire`` waits until its timeout (negative: forever) and raises ``Timeout``. It waits in
  the kernel's queue (a blocking flock in a helper thread), not by polling: a waiter is woken
  the moment the lock is released, so a process that takes the lock again and again cannot
  starve the others, as it could a poll every few milliseconds;
* the file is left in place; the kernel drops the lock of a process that dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading


class Timeout(TimeoutError):
    """The lock was not acquired within the timeout."""

    def __init__(self, lock_file: str):
        self.lock_file = lock_file
        super().__init__(f"the lock {lock_file} could not be acquired")


class FileLock:
    """An exclusive lock held through ``lock_file``; ``timeout`` (s) is the default of ``acquire``."""

    def __init__(self, lock_file: str, timeout: float = -1):
        self.lock_file = lock_file
        self.timeout = timeout
        self._local = threading.local()

    @property
    def is_locked(self) -> bool:
        """True while the calling thread holds the lock."""
        return getattr(self._local, "fd", None) is not None

    def acquire(self, timeout: float | None = None) -> "FileLock":
        """Take the lock (again, if this thread holds it); Timeout after ``timeout`` s (negative: wait forever)."""
        local = self._local
        if getattr(local, "fd", None) is not None:
            local.count += 1
            return self
        timeout = self.timeout if timeout is None else timeout
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            free = _try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not free:
            if timeout == 0:
                os.close(fd)
                raise Timeout(self.lock_file)
            # From here the waiter owns fd until it says the lock is ours.
            if not _Waiter(fd).wait(None if timeout < 0 else timeout):
                raise Timeout(self.lock_file)
        local.fd, local.count = fd, 1
        return self

    def release(self) -> None:
        """Give the lock back (the last release of a re-entrant hold unlocks it); not holding it is fine."""
        local = self._local
        fd = getattr(local, "fd", None)
        if fd is None:
            return
        local.count -= 1
        if local.count == 0:
            local.fd = None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


class _Waiter:
    """A blocking flock on ``fd`` in a daemon thread, which a caller waits for with a timeout.

    (A blocking flock cannot time out, and a signal only reaches the main thread.) If the
    caller gives up (timeout, Ctrl-C), the thread releases and closes ``fd`` once it gets the
    lock, so the abandoned attempt holds it for no longer than that.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._mutex = threading.Lock()
        self._done = threading.Event()
        self._error: OSError | None = None
        self._abandoned = False
        threading.Thread(target=self._run, name="file-lock-wait", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._error = exc
        with self._mutex:
            if self._abandoned:
                os.close(self._fd)  # closing the descriptor also drops its lock
            else:
                self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """True when the lock is held through ``fd``; False (fd then left to the thread) after ``timeout``."""
        interrupted = True
        try:
            self._done.wait(timeout)
            interrupted = False
        finally:
            with self._mutex:
                delivered = self._done.is_set()
                if not delivered:  # timed out or interrupted: the thread closes fd when flock returns
                    self._abandoned = True
                elif interrupted:  # the lock came, but the caller is being interrupted: let it go
                    os.close(self._fd)
        if not delivered:
            return False
        if self._error is not None:
            os.close(self._fd)
            raise self._error
        return True

