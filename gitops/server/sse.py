"""Server-Sent Events framing: what goes on the wire for one message, and the stream's headers.

The format (https://html.spec.whatwg.org/multipage/server-sent-events.html): an
``event:`` line, one ``data:`` line per line of the payload, a blank line.
Payloads here are one-line JSON, so a log line holding newlines or a stray
``data:`` cannot break a frame.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from gitops.server.broadcast import Message

MEDIA_TYPE = "text/event-stream"
# No proxy buffering (nginx honours X-Accel-Buffering), no caching: a stream is live or useless.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"


def frame(kind: str, data: Any) -> bytes:
    """One SSE event: ``event: kind`` and ``data:`` its JSON on one line."""
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {kind}\ndata: {payload}\n\n".encode()


def wants_stream(accept: str | None) -> bool:
    """Does an Accept header ask for an event stream (over JSON or text)?"""
    return MEDIA_TYPE in (accept or "").lower()


def parse(text: str) -> list[tuple[str, Any]]:
    """(event, decoded data) of every complete frame in ``text``: the inverse of ``frame`` (tests, benchmark)."""
    events = []
    for block in text.split("\n\n"):
        kind, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            events.append((kind, json.loads("\n".join(data))))
    return events


async def encode(messages: AsyncIterator[Message | None], first: Iterable[tuple[str, Any]] = ()) -> AsyncIterator[bytes]:
    """The byte stream of ``first`` frames, then ``messages`` (None: a keep-alive comment)."""
    for kind, data in first:
        yield frame(kind, data)
    async for message in messages:
        yield KEEPALIVE if message is None else frame(message.kind, message.data)
