"""Who may use the HTTP API: a bearer token, or, when none is configured, loopback callers only.

The webhooks are not guarded here: GitHub signs its deliveries instead (``app.py``).
With no ``api_token`` the API is as open as the CLI on the same host, and no more:
``check_listen`` makes ``kalpana watch`` refuse an address others can reach.
"""

from __future__ import annotations

import ipaddress
import secrets
from enum import Enum

from gitops.errors import ConfigError

SCHEME = "Bearer"
LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")  # what reverse proxies add


class Denied(str, Enum):
    """Why a request is refused (None from ``check`` means it may pass)."""

    MISSING = "missing"
    """A token is configured and the request carries none."""
    WRONG = "wrong"
    """The request's token is not the configured one."""
    NOT_LOOPBACK = "not loopback"
    """No token is configured and the caller is not on this host."""

    def message(self) -> str:
        """The one line a refused caller reads: what is wrong and what to do."""
        if self is Denied.MISSING:
            return "missing API token: send `Authorization: Bearer <api_token>` (the api_token setting)"
        if self is Denied.WRONG:
            return "wrong API token: send the api_token of kalpana.yaml (or KALPANA_API_TOKEN) as a Bearer token"
        return ("no api_token is configured, so the API answers on loopback only: set api_token "
                "(or KALPANA_API_TOKEN) to use it from another host")


def is_loopback(host: str | None) -> bool:
    """Is ``host`` (an address or a name) this machine's loopback?"""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def check(token: str | None, authorization: str | None, client_host: str | None,
          forwarded: bool = False) -> Denied | None:
    """Why a request with this Authorization header from ``client_host`` is refused; None to let it pass.

    ``forwarded``: the request names another client (X-Forwarded-For, Forwarded): a proxy on this
    host relayed it, so loopback says nothing about who sent it.
    """
    if not token:
        return None if is_loopback(client_host) and not forwarded else Denied.NOT_LOOPBACK
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != SCHEME.lower() or not given.strip():
        return Denied.MISSING
    # Constant time: how long a refusal takes says nothing about how much of the token was right.
    if not secrets.compare_digest(given.strip().encode(), token.encode()):
        return Denied.WRONG
    return None


def check_listen(listen: str, token: str | None) -> None:
    """ConfigError when ``watch`` would serve the API beyond this host without a token."""
    host = listen.rpartition(":")[0]
    if not token and not is_loopback(host):
        raise ConfigError(f"listen: {listen} is reachable from other hosts and no api_token is set: set api_token "
                          "(or KALPANA_API_TOKEN) in kalpana.yaml or .env, or listen on 127.0.0.1")
