"""Keep secrets out of every log Kalpana stores or prints.

Build output echoes whatever the build command prints, and git error
messages repeat the remote URL, token included. Everything that goes to the
history or to a screen passes through a :class:`Masker` first.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

MASK = "***"

# Shorter values ("1", "true", "dev") occur everywhere: masking them would
# shred the log and, by showing where they were, reveal them anyway.
MIN_SECRET_LENGTH = 4

# scheme://userinfo@ — userinfo runs to the last "@" before the host, so an
# unencoded "@" inside a password is still covered. It cannot contain "/",
# "?" or "#" (RFC 3986), which keeps "https://host/?mail=a@b" intact; quotes
# and brackets end it so a URL quoted in a message is matched alone.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@'\"<>\[\]]+(?:@[^\s/?#@'\"<>\[\]]+)*@")


def mask_url(url: str) -> str:
    """Replace the credentials of every ``scheme://user:token@host`` in ``url`` with ``***``.

    ``git@github.com:org/repo`` (scp-like SSH syntax) names a user, not a
    secret, and is left as it is.
    """
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", url)


class Masker:
    """Replaces known secret values, and credentials in URLs, with ``***``.

    Mask whole lines rather than arbitrary chunks of a stream: a secret cut
    in two by a chunk boundary cannot be recognised.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Also mask these values from now on (short and empty ones are ignored)."""
        known = set(self._secrets)
        for secret in secrets:
            if not isinstance(secret, str):
                continue
            # A multi-line value (a PEM key) is often printed one line at a
            # time, so each line of it is a secret of its own as well.
            for value in (secret, *secret.splitlines()):
                if len(value.strip()) >= MIN_SECRET_LENGTH:
                    known.add(value)
        # Swapped in as a whole so a thread masking meanwhile sees old or new, never half.
        self._secrets = tuple(sorted(known, key=len, reverse=True))

    def mask(self, text: str) -> str:
        """``text`` with every secret value and every URL credential replaced by ``***``."""
        text = mask_url(text)
        if not self._secrets or not text:
            return text
        # Collect every occurrence of every secret, then merge overlaps: replacing
        # one secret at a time could cut another that overlaps it and leave its
        # tail readable.
        spans: list[tuple[int, int]] = []
        for secret in self._secrets:
            start = text.find(secret)
            while start != -1:
                spans.append((start, start + len(secret)))
                start = text.find(secret, start + 1)
        if not spans:
            return text
        spans.sort()
        out: list[str] = []
        pos = 0
        cur_start, cur_end = spans[0]
        for start, end in spans[1:]:
            if start <= cur_end:
                cur_end = max(cur_end, end)
                continue
            out += (text[pos:cur_start], MASK)
            pos = cur_end
            cur_start, cur_end = start, end
        out += (text[pos:cur_start], MASK, text[cur_end:])
        return "".join(out)

    def mask_stream(self, chunks: Iterable[str], flush_at: int = 65536) -> Iterator[str]:
        """Mask a stream whole lines at a time: a secret split across two chunks is still one line.

        A line that never ends (a progress bar) is let through once ``flush_at`` characters wait.
        """
        pending = ""
        for chunk in chunks:
            pending += chunk
            cut = pending.rfind("\n") + 1
            if cut == 0 and len(pending) < flush_at:
                continue
            if cut == 0:
                cut = len(pending)
            yield self.mask(pending[:cut])
            pending = pending[cut:]
        if pending:
            yield self.mask(pending)

    def __len__(self) -> int:
        return len(self._secrets)
