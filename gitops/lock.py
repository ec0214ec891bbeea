"""One apply at a time per state directory."""

from __future__ import annotations

import os
from pathlib import Path

from gitops.errors import LockTimeout
from gitops.events import Events, LockWait
from gitops.file_lock import FileLock, Timeout


class ApplyLock:
    """Held for a whole apply/deploy/rollback: a second one waits (saying so), then fails clearly."""

    def __init__(self, state_dir: Path, timeout: float, events: Events):
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(state_dir / "apply.lock"))
        self._owner = state_dir / "apply.owner"
        self._timeout = timeout
        self._events = events

    def __enter__(self) -> "ApplyLock":
        try:
            self._lock.acquire(timeout=0.1)
        except Timeout:
            owner = self._owner.read_text().strip() if self._owner.exists() else "another process"
            self._events.emit(LockWait(None, f"waiting for {owner} to finish (up to {self._timeout:g} s)"))
            try:
                self._lock.acquire(timeout=self._timeout)
            except Timeout:
                raise LockTimeout(f"another kalpana ({owner}) still holds {self._lock.lock_file} after "
                                  f"{self._timeout:g} s: wait for it, or raise lock_timeout in kalpana.yaml") from None
        self._owner.write_text(f"kalpana pid {os.getpid()}")
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
