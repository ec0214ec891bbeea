"""A clock for tests (``gitops.clock.Clock``): time moves only when the test calls ``advance``.

With it, "nothing ran during the quiet period" is proved by the worker's own
state instead of by a real sleep: the test waits (bounded in real time) until
the worker has looked at the queue at the current fake time and gone back to
waiting, then asserts. ``advance`` wakes every waiter, and bumps a generation
counter, so a wait registered before the advance never passes for one after it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

REAL_TIMEOUT = 2.0  # real seconds a test waits for a thread to park before failing


@dataclass(frozen=True)
class Parked:
    """A thread inside ``FakeClock.wait``: until when (None: until notified), since which generation."""

    thread: str
    until: float | None
    generation: int
    condition: threading.Condition


class FakeClock:
    """A ``Clock`` whose ``now()`` changes only by ``advance(seconds)``."""

    def __init__(self, start: float = 100.0) -> None:
        self._now = start
        self._generation = 0
        self._parked: dict[object, Parked] = {}
        self._read_at: dict[int, float] = {}  # thread id -> its last now()
        # Guards the fields above. Never held while taking a waiter's condition: wait() is entered
        # with that condition held and then takes this one, so the other order could deadlock.
        self._state = threading.Condition()

    # -- the Clock protocol --

    def now(self) -> float:
        """The fake time (seconds)."""
        with self._state:
            self._read_at[threading.get_ident()] = self._now
            return self._now

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        """Block on ``condition`` until it is notified; every ``advance`` notifies it too.

        Returns False when the deadline has passed. The deadline counts from this
        thread's last ``now()``: the caller computed ``timeout`` from that reading,
        and an ``advance`` in between must not stretch the wait. A deadline
        already reached returns at once.
        """
        token = object()
        with self._state:
            start = self._read_at.pop(threading.get_ident(), self._now)
            until = None if timeout is None else start + timeout
            if until is not None and self._now >= until:
                return False
            self._parked[token] = Parked(threading.current_thread().name, until, self._generation, condition)
            self._state.notify_all()
        try:
            # No real timeout: only a notification (a submit, a close, an advance) ends the wait.
            condition.wait()
        finally:
            with self._state:
                del self._parked[token]
                self._state.notify_all()
        with self._state:
            return until is None or self._now < until

    # -- for the test --

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every waiter, which then looks again (at the new time)."""
        assert seconds >= 0, f"time only moves forward (advance({seconds}))"
        with self._state:
            self._now += seconds
            self._generation += 1
            conditions = {id(p.condition): p.condition for p in self._parked.values()}
        for condition in conditions.values():  # each under its own lock: a waiter is inside wait() or not yet in it
            with condition:
                condition.notify_all()

    def wait_parked(self, until: float | None, *, thread: str | None = None,
                    timeout: float = REAL_TIMEOUT) -> Parked:
        """Wait until a thread (named ``thread``, if given) waits in ``wait`` until ``until`` (None: no deadline).

        Only a wait entered since the last ``advance`` counts, so the thread has
        looked at the time as it is now. Fails after ``timeout`` real seconds,
        naming what does wait.
        """
        def match() -> Parked | None:
            return next((p for p in self._parked.values()
                         if p.generation == self._generation and (thread is None or p.thread == thread)
                         and _same_time(p.until, until)), None)

        with self._state:
            if not self._state.wait_for(lambda: match() is not None, timeout):
                raise AssertionError(f"no thread{f' {thread!r}' if thread else ''} waiting "
                                     f"{'for a notification' if until is None else f'until {until}'} "
                                     f"within {timeout} s (real); {self._describe()}")
            found = match()
            assert found is not None
            return found

    def _describe(self) -> str:
        waits = ", ".join(f"{p.thread} until {p.until} (generation {p.generation})" for p in self._parked.values())
        return f"now {self._now}, generation {self._generation}; waiting: {waits or 'nobody'}"


def _same_time(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)
