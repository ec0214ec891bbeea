"""Secrets never reach stored or printed logs."""

from __future__ import annotations

import pytest

from gitops.masking import Masker, mask_url


def test_env_values_are_masked_everywhere():
    env = {"DATABASE_PASSWORD": "s3cr3t-pass", "API_TOKEN": "tok_abcdef123456", "DEBUG": "1"}
    masker = Masker(env.values())
    line = "connecting with s3cr3t-pass; token=tok_abcdef123456 (again: s3cr3t-pass) debug=1"
    assert masker.mask(line) == "connecting with ***; token=*** (again: ***) debug=1"


@pytest.mark.parametrize("short", ["", "1", "ab", "dev", "   x"])
def test_short_values_are_ignored(short):
    masker = Masker([short])
    text = f"x {short} dev abc 1 {short}"
    assert masker.mask(text) == text
    assert len(masker) == 0


def test_four_characters_is_enough():
    assert Masker(["abcd"]).mask("xabcdx") == "x***x"


def test_longest_secret_first():
    # "secret" alone would leave the "-extended" tail of the longer value readable.
    masker = Masker(["secret", "secret-extended"])
    assert masker.mask("a secret-extended b secret c") == "a *** b *** c"


def test_overlapping_secrets_leave_no_tail():
    masker = Masker(["abcdef", "defghi"])
    assert masker.mask("xxabcdefghixx") == "xx***xx"


def test_add_more_secrets_later():
    masker = Masker()
    assert masker.mask("hunter22") == "hunter22"
    masker.add("hunter22", "ok")
    assert masker.mask("pw=hunter22") == "pw=***"
    assert masker.mask("ok") == "ok"


def test_multi_line_secret_is_masked_line_by_line_too():
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    masker = Masker([key])
    assert masker.mask(f"key={key}") == "key=***"
    # A build that prints the key one line at a time.
    assert "MIIEvQ" not in masker.mask("line: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")


def test_masking_is_idempotent():
    masker = Masker(["s3cr3t-pass"])
    once = masker.mask("pw s3cr3t-pass https://u:p4ss@host/x")
    assert masker.mask(once) == once


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://user:token123@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        ("https://ghp_abcdef0123456789@github.com/org/repo", "https://***@github.com/org/repo"),
        ("http://x-access-token:abc@example.com:8080/", "http://***@example.com:8080/"),
        ("ssh://git@github.com/org/repo.git", "ssh://***@github.com/org/repo.git"),
        ("git+https://u:p@host/r", "git+https://***@host/r"),
        # An unencoded "@" in the password is still all masked.
        ("https://user:p@ss@host/r", "https://***@host/r"),
        (
            "fatal: unable to access 'https://bot:glpat-XYZ@gitlab.com/a.git/': 403",
            "fatal: unable to access 'https://***@gitlab.com/a.git/': 403",
        ),
        (
            "from https://a:b@one.com and https://c@two.com",
            "from https://***@one.com and https://***@two.com",
        ),
    ],
)
def test_url_credentials_are_masked(text, expected):
    assert mask_url(text) == expected
    assert Masker().mask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "git@github.com:org/repo.git",  # scp-like SSH: a user name, no secret
        "Cloning into 'repo'... from git@github.com:org/repo.git",
        "https://github.com/org/repo.git",
        "https://example.com/?email=someone@example.org",
        "https://example.com/path/user@host",
        "mail me: dev@example.com",
        "",
    ],
)
def test_text_without_url_credentials_is_unchanged(text):
    assert mask_url(text) == text
    assert Masker(["unrelated-secret"]).mask(text) == text


def test_a_stream_is_masked_whole_lines_at_a_time():
    masker = Masker(["hunter2-secret"])
    chunks = ["token hun", "ter2-secret\nnext ", "line\n", "tail without newline hunter2-secret"]
    out = list(masker.mask_stream(iter(chunks)))
    assert "".join(out) == "token ***\nnext line\ntail without newline ***"
    assert all("hunter2" not in piece for piece in out)


def test_a_line_that_never_ends_is_still_let_through_masked():
    masker = Masker(["hunter2-secret"])
    out = list(masker.mask_stream(iter(["x" * 10, "hunter2-secret", "y" * 10]), flush_at=20))
    assert out[0] == "x" * 10 + "***" and "".join(out).endswith("y" * 10)
