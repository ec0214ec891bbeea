"""Losing an interrupt the way Python loses one: its KeyboardInterrupt raised inside a ``__del__``.

Python reports an exception raised in a ``__del__`` (or a weakref callback) as
"unraisable" and goes on; a signal handler's KeyboardInterrupt that lands there
is gone. ``gitops.interrupt`` keeps the mark that the engine then acts on.
"""

from __future__ import annotations

import sys

import pytest

from gitops import interrupt


class _Collected:
    def __del__(self) -> None:
        interrupt.request()  # what the SIGTERM and Ctrl-C handlers call


def watch_unraisable(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """The exceptions Python drops from now on (instead of printing them)."""
    dropped: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_value))
    return dropped


def drop_an_interrupt() -> None:
    """Request an interrupt inside a ``__del__``: the process is marked, no KeyboardInterrupt reaches the caller."""
    _Collected()
