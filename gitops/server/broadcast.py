"""Live build output for many HTTP clients: one channel per build, with a replay buffer.

The daemon's worker relays each child's events on the daemon's bus (threads);
``BuildStreams.publish`` files the ones that belong to a build (log lines,
phases) into that build's channel, and ``follow`` (asyncio, one per client)
replays the channel from its first message and then waits for more. So a
client that connects late misses nothing, and one that goes away only drops
its waiter: nothing upstream waits for a slow or gone reader.

A channel ends with the build's final record (``finish``). Finished channels
stay a while for late readers, then go: the history's stored log serves them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gitops.events import Event, LogLine, PhaseEntered

PHASE_PREFIX = "==> "
CUT_PREFIX = "[... kalpana: "  # build_logs' marker where a capped log was cut
KEEP_FINISHED = 10  # finished channels kept for late readers (older ones replay from the stored log)
MAX_BUFFER_BYTES = 1_000_000  # one channel's replay buffer; beyond it the oldest lines go (the stored log has them)


@dataclass(frozen=True)
class Message:
    """One thing a build's stream says: ``kind`` is log, phase or end; ``data`` its JSON payload."""

    kind: str
    data: dict[str, Any]


@dataclass
class _Channel:
    deployment: str | None
    messages: list[Message] = field(default_factory=list)
    dropped: int = 0  # messages cut from the head of the buffer
    size: int = 0
    finished: bool = False
    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)


class BuildStreams:
    """Per-build broadcaster: threads publish, asyncio clients follow (replay, then live)."""

    def __init__(self, keep_finished: int = KEEP_FINISHED, max_buffer_bytes: int = MAX_BUFFER_BYTES):
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._keep = keep_finished
        self._max_bytes = max_buffer_bytes

    # -- the daemon's side (any thread) ------------------------------------

    def open(self, build_id: str, deployment: str | None) -> None:
        """Start buffering ``build_id`` (before its first event, so that nothing is missed)."""
        with self._lock:
            self._channels.setdefault(build_id, _Channel(deployment))

    def publish(self, event: Event) -> None:
        """An event listener: file log lines and phases of builds into their channels."""
        if isinstance(event, LogLine) and event.build_id:
            self._add(event.build_id, event.deployment, Message("log", {"line": event.message, "build": event.build_id}))
        elif isinstance(event, PhaseEntered) and event.build_id:
            self._add(event.build_id, event.deployment,
                      Message("phase", {"phase": event.message, "build": event.build_id}))

    def finish(self, build_id: str, record: dict[str, Any]) -> None:
        """The build ended: ``record`` (its final JSON) is the last message; every follower stops after it."""
        with self._lock:
            channel = self._channels.get(build_id)
            if channel is None or channel.finished:
                return
            channel.messages.append(Message("end", record))
            channel.finished = True
            self._finished[build_id] = None
            while len(self._finished) > self._keep:
                old, _ = self._finished.popitem(last=False)
                self._channels.pop(old, None)
            self._wake(channel)

    def open_builds(self, deployment: str | None = None) -> list[str]:
        """Builds whose channel has not ended (of ``deployment``, when given)."""
        with self._lock:
            return [bid for bid, c in self._channels.items()
                    if not c.finished and (deployment is None or c.deployment == deployment)]

    def known(self, build_id: str) -> bool:
        """Does a channel (live or recently finished) exist for ``build_id``?"""
        with self._lock:
            return build_id in self._channels

    def subscribers(self, build_id: str) -> int:
        """How many clients follow ``build_id`` now."""
        with self._lock:
            channel = self._channels.get(build_id)
            return len(channel.waiters) if channel else 0

    def followers(self) -> int:
        """How many clients follow any build now."""
        with self._lock:
            return sum(len(channel.waiters) for channel in self._channels.values())

    def _add(self, build_id: str, deployment: str | None, message: Message) -> None:
        with self._lock:
            channel = self._channels.get(build_id)
            if channel is None:
                channel = self._channels[build_id] = _Channel(deployment)
            if channel.finished:
                return
            channel.messages.append(message)
            channel.size += len(str(message.data))
            while channel.size > self._max_bytes and len(channel.messages) > 1:
                head = channel.messages.pop(0)
                channel.size -= len(str(head.data))
                channel.dropped += 1
            self._wake(channel)

    @staticmethod
    def _wake(channel: _Channel) -> None:
        for loop, ready in list(channel.waiters):
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # that client's loop is closed: it is gone
                channel.waiters.discard((loop, ready))

    # -- a client's side (asyncio) ---------------------------------------

    async def follow(self, build_id: str, keepalive: float = 15.0,
                     head: Callable[[int], list[Message] | None] | None = None) -> AsyncIterator[Message | None]:
        """Every message of ``build_id`` from the first, then live ones, until its end; None is a keep-alive.

        The channel must exist (``known``). When its buffer has dropped its first messages, ``head(n)``
        (called on a thread) gives the first ``n`` from elsewhere (the stored log), or None when it
        cannot (a line then says where they are). A cancelled iteration (the client left) unregisters at once.
        """
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        waiter = (loop, ready)
        position = 0  # counted in messages ever added, so that a trimmed head does not shift it
        with self._lock:
            channel = self._channels.get(build_id)
            if channel is None:
                return
            channel.waiters.add(waiter)
        try:
            while True:
                with self._lock:
                    ready.clear()
                    start = max(position - channel.dropped, 0)
                    skipped = channel.dropped - position if position < channel.dropped else 0
                    batch = channel.messages[start:]
                    position = channel.dropped + len(channel.messages)
                    done = channel.finished
                if skipped:
                    earlier = await asyncio.to_thread(head, skipped) if head is not None else None
                    for message in earlier or [Message("log", {
                            "line": f"[... {skipped} earlier lines are in the stored log ...]", "build": build_id})]:
                        yield message
                for message in batch:
                    yield message
                if done:
                    return
                try:
                    await asyncio.wait_for(ready.wait(), keepalive)
                except asyncio.TimeoutError:
                    yield None
        finally:
            with self._lock:
                channel.waiters.discard(waiter)


async def poll_stored(read: Callable[[], tuple[str, dict[str, Any] | None]], build_id: str,
                      interval: float = 0.5, keepalive: float = 15.0) -> AsyncIterator[Message | None]:
    """A build this daemon does not run (another process does): its stored log, followed by polling.

    ``read`` returns (the stored log, the final record or None while it runs); it is called on a thread.
    """
    sent = 0
    quiet_since = time.monotonic()
    while True:
        text, final = await asyncio.to_thread(read)
        lines = text.splitlines()
        if final is None and text and not text.endswith("\n"):
            lines = lines[:-1]  # a line still being written: sent once it is whole
        for line in lines[sent:]:
            yield stored_message(line, build_id)
        if len(lines) > sent:
            quiet_since = time.monotonic()
        sent = max(sent, len(lines))
        if final is not None:
            yield Message("end", final)
            return
        if time.monotonic() - quiet_since >= keepalive:
            quiet_since = time.monotonic()
            yield None
        await asyncio.sleep(interval)


def stored_message(line: str, build_id: str) -> Message:
    """The stream message of one stored log line (the engine stores a phase as ``==> <phase>``)."""
    if line.startswith(PHASE_PREFIX):
        return Message("phase", {"phase": line[len(PHASE_PREFIX):], "build": build_id})
    return Message("log", {"line": line, "build": build_id})


def stored_head(text: str, count: int, build_id: str) -> list[Message] | None:
    """The first ``count`` messages of a stored log, or None when it does not hold them all uncut.

    The engine stores each line before it emits it, in the same order, so the stored log's first
    lines are the stream's first messages, up to the marker where a capped log was cut.
    """
    lines = text.splitlines()[:count]
    if len(lines) < count or any(line.startswith(CUT_PREFIX) for line in lines):
        return None
    return [stored_message(line, build_id) for line in lines]
