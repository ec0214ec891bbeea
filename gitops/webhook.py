"""GitHub push webhooks: signatures, payloads, which work a push asks for, and the endpoints' URLs.

Pure functions (no HTTP framework, no I/O) so that every rule is unit-tested:
the server only reads the request and hands the bytes here. The endpoint
paths are declared here once: the server routes them, ``kalpana webhooks``
prints them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from gitops.masking import mask_url
from gitops.source import repo_key

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
ZERO_SHA = "0" * 40

INSTANCE_PATH = "/webhook"  #: the instance-wide endpoint (the config repository, or any deployment's repo)
DEPLOYMENT_PATH = "/api/deployments/{name}/webhook"  #: the guide's per-deployment endpoint


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of a delivery's signature header."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


class BadPayload(ValueError):
    """The body is not a GitHub payload we can read."""


def decode(body: bytes, content_type: str | None) -> dict:
    """The JSON payload of a delivery sent as application/json or form-encoded (``payload=``)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
            if "payload" not in fields:
                raise BadPayload("form-encoded delivery without a payload field")
            data = json.loads(fields["payload"][0])
        else:
            data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload("payload is not a JSON object")
    return data


@dataclass(frozen=True)
class Push:
    """The parts of a push event Kalpana acts on."""

    ref: str
    after: str
    deleted: bool
    repo_keys: frozenset[str]
    default_branch: str | None
    head_message: str | None

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def ignored_because(self) -> str | None:
        """Why this push asks for nothing (tags, deleted branches), or None."""
        if self.ref.startswith("refs/tags/"):
            return f"tag push ({self.ref.removeprefix('refs/tags/')}): only branch pushes deploy"
        if self.deleted or self.after == ZERO_SHA:
            return f"branch {self.branch or self.ref} was deleted"
        if self.branch is None:
            return f"ref {self.ref!r} is not a branch"
        return None

    @classmethod
    def from_payload(cls, data: dict) -> "Push":
        """Read a push payload; BadPayload when its essentials are missing."""
        ref = data.get("ref")
        if not isinstance(ref, str):
            raise BadPayload("push payload without a ref")
        repository = data.get("repository") or {}
        urls = [repository.get(k) for k in ("clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url")]
        if repository.get("full_name"):
            urls.append(f"https://github.com/{repository['full_name']}")
        head = data.get("head_commit") or {}
        return cls(ref=ref, after=str(data.get("after") or ZERO_SHA), deleted=bool(data.get("deleted")),
                   repo_keys=frozenset(repo_key(u) for u in urls if isinstance(u, str) and u),
                   default_branch=repository.get("default_branch"),
                   head_message=(head.get("message") or "").splitlines()[0] if head.get("message") else None)


@dataclass
class Target:
    """Something a push may rebuild: the config repository, or one deployment's git source."""

    name: str | None  # deployment name, None for the config repository
    repo: str
    branch: str | None  # None: the remote's default branch
    auto_rebuild: bool = True
    config: bool = False  # a deployment whose files live in the config repository (sync that first)

    def matches(self, push: Push) -> str | None:
        """None when ``push`` is for this target, else why not."""
        if repo_key(self.repo) not in push.repo_keys:
            return "another repository"
        wanted = self.branch or push.default_branch
        if wanted and push.branch != wanted:
            return f"push to {push.branch}, but {self.name or 'the config repository'} follows {wanted}"
        if not self.auto_rebuild:
            return f"{self.name} has auto_rebuild: false"
        return None


@dataclass
class PushWork:
    """What one push rebuilds and what it leaves alone, each with a reason."""

    config: bool = False
    deployments: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    via_config: bool = False  # the deployments live in the config repository: sync it first

    @property
    def anything(self) -> bool:
        """Does the push rebuild anything at all?"""
        return self.config or bool(self.deployments)


def work_for(push: Push, targets: list[Target]) -> PushWork:
    """Which of ``targets`` a push rebuilds."""
    work = PushWork()
    for target in targets:
        why_not = target.matches(push)
        label = target.name or "config repository"
        if why_not is None:
            if target.name is None:
                work.config = True
            else:
                work.deployments.append(target.name)
                work.via_config = work.via_config or target.config
        elif why_not != "another repository":
            work.ignored[label] = why_not
    return work


@dataclass(frozen=True)
class Endpoint:
    """One webhook URL to paste into GitHub, and what stands behind it."""

    name: str | None  # the deployment, or None for the instance-wide endpoint
    url: str
    secret_set: bool
    auto_rebuild: bool
    repo: str | None  # the repository it follows (credentials masked)

    def to_dict(self) -> dict:
        """JSON form (`kalpana webhooks --json`)."""
        return {"name": self.name, "url": self.url, "secret_set": self.secret_set,
                "auto_rebuild": self.auto_rebuild, "repo": self.repo}


def endpoints(base_url: str, instance_secret: str | None, config_repo: str | None,
              deployments: list[tuple[str, str | None, bool, str | None]]) -> list[Endpoint]:
    """The instance-wide endpoint, then one per deployment ``(name, secret, auto_rebuild, repo)``, by name."""
    base = base_url.rstrip("/")
    rows = [Endpoint(None, base + INSTANCE_PATH, bool(instance_secret), True,
                     mask_url(config_repo) if config_repo else None)]
    for name, secret, auto_rebuild, repo in sorted(deployments, key=lambda d: d[0]):
        rows.append(Endpoint(name, base + DEPLOYMENT_PATH.format(name=name), bool(secret), auto_rebuild,
                             mask_url(repo) if repo else None))
    return rows
