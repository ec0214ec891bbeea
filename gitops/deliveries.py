"""Webhook delivery ids: a redelivery of a push that was built must not build twice; one that failed must.

GitHub's "Redeliver" button is how users retry a push, so an id counts as
handled only once the job that carried it succeeded (``done``). Until then it
is *in flight* (``claim`` answers QUEUED: a redelivery of a push still waiting
or running adds nothing), and a job that failed, or never ran, gives its ids
back (``release``) so that their redelivery runs again.

Handled ids go to an append-only file beside the history (one id a line) and
a set in memory: a webhook answer cannot wait for a rewrite of the history
database. Ids in flight live in memory only: a daemon that stops before
their job succeeded has not handled them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from enum import Enum
from pathlib import Path

KEEP = 10_000


class Claim(str, Enum):
    """What a delivery id is, as a new delivery of it arrives."""

    NEW = "new"
    """Never seen, or its job failed or never ran: queue its work (it is in flight from now on)."""
    QUEUED = "queued"
    """Its job waits or runs: the redelivery adds nothing."""
    HANDLED = "handled"
    """Its job succeeded: the redelivery builds nothing."""


class Deliveries:
    """The last ``KEEP`` handled delivery ids (remembered across restarts), and those in flight."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines()[-KEEP:]:
                if line.strip():
                    self._done[line.strip()] = None
            if len(self._done) >= KEEP:
                self._rewrite()

    def claim(self, delivery: str | None) -> Claim:
        """NEW (and in flight from now on), QUEUED or HANDLED. A missing id is always NEW and never tracked."""
        if not delivery:
            return Claim.NEW
        delivery = _clean(delivery)
        with self._lock:
            if delivery in self._done:
                return Claim.HANDLED
            if delivery in self._in_flight:
                return Claim.QUEUED
            self._in_flight.add(delivery)
            return Claim.NEW

    def done(self, deliveries: Iterable[str]) -> None:
        """The job carrying ``deliveries`` succeeded: they are handled, for good."""
        new = [d for d in (_clean(d) for d in deliveries if d) if d]
        if not new:
            return
        with self._lock:
            self._in_flight.difference_update(new)
            fresh = [d for d in dict.fromkeys(new) if d not in self._done]
            if not fresh:
                return
            for delivery in fresh:
                self._done[delivery] = None
            while len(self._done) > KEEP:
                self._done.popitem(last=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write("".join(f"{d}\n" for d in fresh))

    def release(self, deliveries: Iterable[str]) -> None:
        """The job carrying ``deliveries`` failed or was dropped: a redelivery of them runs again."""
        with self._lock:
            self._in_flight.difference_update(_clean(d) for d in deliveries if d)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{d}\n" for d in self._done))
        tmp.replace(self.path)


def _clean(delivery: str) -> str:
    return delivery.strip()[:200]
