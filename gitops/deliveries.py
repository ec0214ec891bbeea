"""Webhook delivery ids already handled: GitHub's redeliveries must not build twice.

An append-only file beside the history (one id a line) and a set in memory:
a webhook answer cannot wait for a rewrite of the history database.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

KEEP = 10_000


class Deliveries:
    """The last ``KEEP`` delivery ids, remembered across restarts."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines()[-KEEP:]:
                if line.strip():
                    self._seen[line.strip()] = None
            if len(self._seen) >= KEEP:
                self._rewrite()

    def first(self, delivery: str | None) -> bool:
        """Record ``delivery``; False when it was seen before. A missing id is always new."""
        if not delivery:
            return True
        delivery = delivery.strip()[:200]
        with self._lock:
            if delivery in self._seen:
                return False
            self._seen[delivery] = None
            if len(self._seen) > KEEP:
                self._seen.popitem(last=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write(delivery + "\n")
            return True

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{d}\n" for d in self._seen))
        tmp.replace(self.path)
