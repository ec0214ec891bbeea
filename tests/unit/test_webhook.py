"""GitHub push webhooks: signatures, payload decoding, push reading and which work a push asks for (no HTTP here)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from gitops import webhook as wh
from gitops.source import repo_key

# GitHub's documented example ("Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
AFTER = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"


def push_payload(ref: str = "refs/heads/main", **overrides) -> dict:
    """A push event shaped like the one GitHub sends (trimmed to the fields it always carries)."""
    payload = {
        "ref": ref,
        "before": BEFORE,
        "after": AFTER,
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/Octo-Org/Hello-World/compare/{BEFORE[:12]}...{AFTER[:12]}",
        "commits": [{
            "id": AFTER,
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": True,
            "message": "Fix the greeting\n\nIt said hello twice.",
            "timestamp": "2024-05-01T12:00:00+02:00",
            "url": f"https://github.com/Octo-Org/Hello-World/commit/{AFTER}",
            "author": {"name": "Mona Octocat", "email": "mona@example.com", "username": "octocat"},
            "committer": {"name": "Mona Octocat", "email": "mona@example.com", "username": "octocat"},
            "added": [], "removed": [], "modified": ["README.md"],
        }],
        "head_commit": {
            "id": AFTER,
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": True,
            "message": "Fix the greeting\n\nIt said hello twice.",
            "timestamp": "2024-05-01T12:00:00+02:00",
            "url": f"https://github.com/Octo-Org/Hello-World/commit/{AFTER}",
            "author": {"name": "Mona Octocat", "email": "mona@example.com", "username": "octocat"},
            "committer": {"name": "Mona Octocat", "email": "mona@example.com", "username": "octocat"},
            "added": [], "removed": [], "modified": ["README.md"],
        },
        "repository": {
            "id": 1296269,
            "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
            "name": "Hello-World",
            "full_name": "Octo-Org/Hello-World",
            "private": False,
            "owner": {"name": "Octo-Org", "login": "Octo-Org", "id": 1},
            "html_url": "https://github.com/Octo-Org/Hello-World",
            "url": "https://github.com/Octo-Org/Hello-World",
            "git_url": "git://github.com/Octo-Org/Hello-World.git",
            "ssh_url": "git@github.com:Octo-Org/Hello-World.git",
            "clone_url": "https://github.com/Octo-Org/Hello-World.git",
            "svn_url": "https://github.com/Octo-Org/Hello-World",
            "default_branch": "main",
            "master_branch": "main",
        },
        "pusher": {"name": "octocat", "email": "mona@example.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
    }
    payload.update(overrides)
    return payload


def deleted_payload(ref: str = "refs/heads/feature") -> dict:
    """What GitHub sends when a branch is deleted."""
    return push_payload(ref, before=AFTER, after=wh.ZERO_SHA, deleted=True, commits=[], head_commit=None,
                        compare=f"https://github.com/Octo-Org/Hello-World/compare/{AFTER[:12]}...000000000000")


# -- signatures -------------------------------------------------------------


def test_githubs_documented_test_vector():
    assert wh.sign(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE
    assert wh.verify(GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE) is True


@pytest.mark.parametrize("header", [
    None,
    "",
    "sha256=",
    GITHUB_SIGNATURE.removeprefix("sha256="),  # the digest without its prefix
    "sha1=" + GITHUB_SIGNATURE.removeprefix("sha256="),  # the legacy header's prefix
    "SHA256=" + GITHUB_SIGNATURE.removeprefix("sha256="),
    GITHUB_SIGNATURE[:-1] + "f",  # one hex digit off
    GITHUB_SIGNATURE[:-2],  # truncated
    GITHUB_SIGNATURE + "00",
])
def test_verify_rejects_missing_and_wrong_headers(header):
    assert wh.verify(GITHUB_SECRET, GITHUB_BODY, header) is False


def test_verify_rejects_a_tampered_body_and_another_secret():
    assert wh.verify(GITHUB_SECRET, b"Hello, World?", GITHUB_SIGNATURE) is False
    assert wh.verify(GITHUB_SECRET, GITHUB_BODY + b"\n", GITHUB_SIGNATURE) is False
    assert wh.verify("It's a Secret to Everybody ", GITHUB_BODY, GITHUB_SIGNATURE) is False


def test_signature_covers_the_raw_bytes_of_a_real_payload():
    body = json.dumps(push_payload()).encode()
    signature = wh.sign("s3cret", body)
    assert wh.verify("s3cret", body, signature)
    # Same JSON, different bytes: GitHub signs bytes, not the parsed object.
    respaced = json.dumps(push_payload(), indent=2).encode()
    assert not wh.verify("s3cret", respaced, signature)


# -- decoding -----------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", None, ""])
def test_decode_json(content_type):
    payload = push_payload()
    assert wh.decode(json.dumps(payload).encode(), content_type) == payload


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "application/x-www-form-urlencoded; charset=utf-8"])
def test_decode_form_encoded_payload(content_type):
    payload = push_payload()
    payload["head_commit"]["message"] = "Ünïcode & spaces + plus = equals?"
    body = urlencode({"payload": json.dumps(payload)}).encode()
    assert b"%7B" in body  # really url-encoded, as GitHub sends it
    assert wh.decode(body, content_type) == payload


@pytest.mark.parametrize("body,content_type", [
    (b"{not json", "application/json"),
    (b"", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b"[1, 2, 3]", "application/json"),  # JSON, but not an object
    (b'"a string"', "application/json"),
    (urlencode({"payload": "{broken"}).encode(), "application/x-www-form-urlencoded"),
    (urlencode({"other": "{}"}).encode(), "application/x-www-form-urlencoded"),
    (b"", "application/x-www-form-urlencoded"),
])
def test_decode_bad_payloads(body, content_type):
    with pytest.raises(wh.BadPayload):
        wh.decode(body, content_type)


def test_bad_payload_is_a_value_error_with_a_message():
    with pytest.raises(ValueError, match="JSON"):
        wh.decode(b"{", "application/json")


# -- reading a push -------------------------------------------------------------


def test_push_from_a_realistic_payload():
    push = wh.Push.from_payload(push_payload())
    assert push.ref == "refs/heads/main"
    assert push.branch == "main"
    assert push.after == AFTER
    assert push.deleted is False
    assert push.default_branch == "main"
    assert push.head_message == "Fix the greeting"  # first line only
    assert push.ignored_because is None
    assert "github.com/octo-org/hello-world" in push.repo_keys


def test_push_survives_a_json_round_trip_through_decode():
    body = urlencode({"payload": json.dumps(push_payload("refs/heads/release/1.x"))}).encode()
    push = wh.Push.from_payload(wh.decode(body, "application/x-www-form-urlencoded"))
    assert push.branch == "release/1.x"
    assert push.ignored_because is None


def test_push_of_a_new_branch_is_not_ignored():
    push = wh.Push.from_payload(push_payload("refs/heads/feature", before=wh.ZERO_SHA, created=True))
    assert push.branch == "feature"
    assert push.ignored_because is None


def test_every_url_of_the_repository_gives_the_same_key():
    push = wh.Push.from_payload(push_payload())
    assert push.repo_keys == {"github.com/octo-org/hello-world"}


def test_tag_push_is_ignored():
    push = wh.Push.from_payload(push_payload("refs/tags/v1", base_ref="refs/heads/main"))
    assert push.branch is None
    assert "tag" in push.ignored_because
    assert "v1" in push.ignored_because


def test_deleted_tag_is_ignored_as_a_tag():
    push = wh.Push.from_payload(deleted_payload("refs/tags/v1"))
    assert "tag" in push.ignored_because


@pytest.mark.parametrize("payload", [
    pytest.param(deleted_payload(), id="as-github-sends-it"),
    pytest.param(push_payload("refs/heads/feature", deleted=True), id="deleted-true"),
    pytest.param(push_payload("refs/heads/feature", after=wh.ZERO_SHA), id="after-all-zeros"),
    pytest.param(push_payload("refs/heads/feature", deleted=True, head_commit=None), id="head-commit-null"),
])
def test_deleted_branch_is_ignored(payload):
    push = wh.Push.from_payload(payload)
    assert push.ignored_because is not None
    assert "deleted" in push.ignored_because
    assert "feature" in push.ignored_because


def test_deleted_branch_has_no_head_message():
    push = wh.Push.from_payload(deleted_payload())
    assert push.head_message is None
    assert push.after == wh.ZERO_SHA


def test_a_ref_that_is_neither_branch_nor_tag_is_ignored():
    push = wh.Push.from_payload(push_payload("refs/pull/7/head"))
    assert push.ignored_because is not None


@pytest.mark.parametrize("payload", [{}, {"ref": None}, {"ref": 7}, {"zen": "Design for failure."}])
def test_push_without_a_ref_is_a_bad_payload(payload):
    with pytest.raises(wh.BadPayload):
        wh.Push.from_payload(payload)


def test_push_with_a_sparse_payload_does_not_crash():
    push = wh.Push.from_payload({"ref": "refs/heads/main", "after": AFTER})
    assert push.branch == "main"
    assert push.repo_keys == frozenset()
    assert push.default_branch is None
    assert push.head_message is None
    # A missing "after" is no commit at all: nothing to deploy.
    assert wh.Push.from_payload({"ref": "refs/heads/main"}).ignored_because is not None


# -- repository keys ---------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://github.com/Octo-Org/Hello-World",
    "https://github.com/octo-org/hello-world.git",
    "https://github.com/Octo-Org/Hello-World/",
    "http://github.com/Octo-Org/Hello-World.git",
    "HTTPS://GitHub.com/Octo-Org/Hello-World.git",
    "  https://github.com/Octo-Org/Hello-World.git  ",
    "https://x-access-token:ghp_abc123@github.com/Octo-Org/Hello-World.git",
    "https://user:p%40ss@github.com/Octo-Org/Hello-World",
    "https://oauth2@github.com/Octo-Org/Hello-World",
    "git@github.com:Octo-Org/Hello-World.git",
    "git@github.com:Octo-Org/Hello-World",
    "ssh://git@github.com/Octo-Org/Hello-World.git",
    "git://github.com/Octo-Org/Hello-World.git",
])
def test_repo_key_spellings_of_one_github_repository(url):
    assert repo_key(url) == "github.com/octo-org/hello-world"


@pytest.mark.parametrize("other", [
    "https://github.com/Octo-Org/Hello-World-2",
    "https://github.com/Other-Org/Hello-World",
    "https://gitlab.com/Octo-Org/Hello-World",
    "git@gitlab.com:Octo-Org/Hello-World.git",
])
def test_repo_key_tells_repositories_apart(other):
    assert repo_key(other) != repo_key("https://github.com/Octo-Org/Hello-World")


def test_repo_key_never_contains_credentials():
    key = repo_key("https://x-access-token:ghp_abc123@github.com/org/repo.git")
    assert "ghp_abc123" not in key
    assert "x-access-token" not in key


def test_repo_key_of_local_paths(tmp_path, monkeypatch):
    remote = tmp_path / "remote.git"
    remote.mkdir()
    expected = repo_key(str(remote))
    monkeypatch.chdir(tmp_path)
    spellings = [
        str(remote),
        str(remote) + "/",
        f"file://{remote}",
        f"file://{remote}/",
        str(tmp_path / "sub" / ".." / "remote.git"),
        "remote.git",  # relative to the working directory
        "./remote.git",
        str(tmp_path / "remote"),  # the same name without .git
    ]
    for spelling in spellings:
        assert repo_key(spelling) == expected, spelling
    assert Path(expected).is_absolute()
    assert repo_key(str(tmp_path / "elsewhere.git")) != expected


def test_repo_key_keeps_the_case_of_local_paths(tmp_path):
    # Paths are case-sensitive on Linux: two directories, two repositories.
    assert repo_key(str(tmp_path / "Repo")) != repo_key(str(tmp_path / "repo"))


def test_local_repository_push_matches_its_local_target(tmp_path):
    # A test harness (or a self-hosted forge) can send a push whose clone_url is a path.
    remote = tmp_path / "remote.git"
    payload = push_payload()
    payload["repository"] = {"clone_url": f"file://{remote}", "default_branch": "main"}
    push = wh.Push.from_payload(payload)
    work = wh.work_for(push, [wh.Target("web", str(remote), None)])
    assert work.deployments == ["web"]


# -- which work a push asks for ----------------------------------------------------------------


REPO = "https://github.com/Octo-Org/Hello-World.git"


def test_route_matches_the_followed_branch():
    push = wh.Push.from_payload(push_payload("refs/heads/release"))
    work = wh.work_for(push, [wh.Target("web", REPO, "release")])
    assert work.deployments == ["web"]
    assert work.config is False
    assert work.ignored == {}
    assert work.anything


def test_route_matches_through_any_spelling_of_the_repository():
    push = wh.Push.from_payload(push_payload())
    targets = [wh.Target("a", "git@github.com:octo-org/hello-world.git", "main"),
               wh.Target("b", "https://token:x@github.com/Octo-Org/Hello-World", "main"),
               wh.Target("c", "ssh://git@github.com/Octo-Org/Hello-World.git", None)]
    assert wh.work_for(push, targets).deployments == ["a", "b", "c"]


def test_route_follows_the_default_branch_when_target_has_none():
    targets = [wh.Target("web", REPO, None)]
    on_default = wh.Push.from_payload(push_payload("refs/heads/main"))
    assert wh.work_for(on_default, targets).deployments == ["web"]

    payload = push_payload("refs/heads/trunk")
    payload["repository"]["default_branch"] = "trunk"
    assert wh.work_for(wh.Push.from_payload(payload), targets).deployments == ["web"]


def test_route_ignores_another_branch_with_a_reason():
    push = wh.Push.from_payload(push_payload("refs/heads/feature"))
    work = wh.work_for(push, [wh.Target("web", REPO, "main"), wh.Target("api", REPO, None)])
    assert work.deployments == []
    assert not work.anything
    assert set(work.ignored) == {"web", "api"}
    assert "feature" in work.ignored["web"] and "main" in work.ignored["web"]
    assert "feature" in work.ignored["api"] and "main" in work.ignored["api"]


def test_route_ignores_auto_rebuild_false_with_a_reason():
    push = wh.Push.from_payload(push_payload())
    work = wh.work_for(push, [wh.Target("web", REPO, "main", auto_rebuild=False),
                              wh.Target("api", REPO, "main")])
    assert work.deployments == ["api"]
    assert "auto_rebuild" in work.ignored["web"]


def test_route_does_not_mention_other_repositories():
    push = wh.Push.from_payload(push_payload())
    work = wh.work_for(push, [wh.Target("other", "https://github.com/Octo-Org/Other.git", "main"),
                              wh.Target("web", REPO, "main")])
    assert work.deployments == ["web"]
    assert "other" not in work.ignored
    assert work.ignored == {}

    only_other = wh.work_for(push, [wh.Target("other", "https://github.com/Octo-Org/Other.git", "main")])
    assert not only_other.anything
    assert only_other.ignored == {}


def test_route_to_the_config_repository():
    push = wh.Push.from_payload(push_payload())
    work = wh.work_for(push, [wh.Target(None, REPO, "main"), wh.Target("web", REPO, "main")])
    assert work.config is True
    assert work.deployments == ["web"]
    assert work.anything

    elsewhere = wh.Push.from_payload(push_payload("refs/heads/feature"))
    ignored = wh.work_for(elsewhere, [wh.Target(None, REPO, "main")])
    assert ignored.config is False
    assert "config repository" in ignored.ignored
    assert "feature" in ignored.ignored["config repository"]


def test_route_with_no_targets():
    work = wh.work_for(wh.Push.from_payload(push_payload()), [])
    assert not work.anything
    assert work.ignored == {}

