"""`status` and `builds` at 80 columns: no line wider, URLs and ids whole, the remedy of an error visible."""

from __future__ import annotations

import io

import pytest

from gitops.build import Build, BuildStatus, Trigger
from gitops.cli import render as render_module
from gitops.cli.render import builds_table, short_image, status_table, summary
from gitops.errors import ImageMissing
from gitops.status import DeploymentStatus, State

WIDTH = 80
BUILD_ID = "20250614-153012-a1b2"
PULL_ERROR = str(ImageMissing("python:3.12-slim", "Get https://registry-1.docker.io/v2/: dial tcp: lookup failed"))
UNHEALTHY = ("the new container was not healthy within 5 s (last probe: connection refused); its last log lines:\n"
             "Traceback (most recent call last):\n  File \"/app/app.py\", line 3, in <module>\n"
             "ModuleNotFoundError: No module named 'flask'\n"
             "hint: run `pip install flask` in the build command")


def render(renderable, width: int = WIDTH) -> list[str]:
    """Printed as `kalpana` prints it (the same console settings, soft_wrap included), at ``width`` columns."""
    out = io.StringIO()
    console = render_module._console(stderr=False, width=width)
    console.file = out
    console.print(renderable)
    return out.getvalue().splitlines()


def row(name: str, url: str | None, detail: str = "", state: State = State.RUNNING) -> DeploymentStatus:
    return DeploymentStatus(name=name, state=state, url=url, build_id=BUILD_ID,
                            image=f"kalpana/default-long-instance/{name}:{BUILD_ID}", uptime_seconds=3 * 86400 + 7,
                            container=name, last_build_status="SUCCESS", detail=detail)


ROWS = [
    row("hello-static", "http://localhost:24899"),
    row("a-rather-long-deployment-name", "http://localhost:65535", detail="last build 20250614-150000-ffff failed; "
        "the previous version serves"),
    row("flask-api", None, detail=UNHEALTHY, state=State.FAILED),
    row("node", "http://192.168.100.200:8080"),
]


def assert_fits(lines: list[str]) -> None:
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, "\n".join(lines)


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], [row("x", "https://a-long-subdomain.apps.example.org")]])
def test_status_fits_80_columns_with_urls_whole(rows):
    lines = render(status_table(rows, width=WIDTH))
    assert_fits(lines)
    text = "\n".join(lines)
    for r in rows:
        if r.url:
            assert sum(line.count(r.url) for line in lines) == 1, text
    assert "IMAGE" not in lines[0], "the image is --wide detail"


def test_status_shows_build_ids_whole_when_they_fit():
    short = [r for r in ROWS if len(r.name) <= 12]
    lines = render(status_table(short, width=WIDTH))
    assert sum(BUILD_ID in line for line in lines) == len(short), "\n".join(lines)


def test_status_keeps_a_long_name_whole_and_drops_the_build_column_instead():
    lines = render(status_table(ROWS, width=WIDTH))
    assert_fits(lines)
    assert any("a-rather-long-deployment-name" in line for line in lines), "\n".join(lines)
    assert "BUILD" not in lines[0] and BUILD_ID not in lines[1], "the build id is --wide detail when space is short"


def test_status_notes_keep_the_remedy_readable():
    lines = render(status_table(ROWS, width=WIDTH))
    assert_fits(lines)
    text = " ".join(line.strip() for line in lines)
    assert "flask-api: the new container was not healthy within 5 s" in text, text
    assert "hint: run `pip install flask` in the build command" in text, text
    assert "No module named" not in text, "only the first line and the remedy; the rest is --wide"
    assert "(+3 more lines: --wide)" in text, text


def test_status_wide_has_image_tag_and_whole_note():
    lines = render(status_table(ROWS, wide=True, width=300), width=300)
    text = "\n".join(lines)
    assert "IMAGE" in lines[0] and "No module named 'flask'" not in text.splitlines()[0]
    assert "kalpana/default-long-instance" not in text, "the repository is implied: the tag alone"
    assert "ModuleNotFoundError" in text


def test_builds_fit_80_columns_and_show_the_pull_remedy():
    builds = [
        Build(id=BUILD_ID, deployment="hello-python", status=BuildStatus.FAILED, triggered_by=Trigger.WEBHOOK,
              action="rebuild", commit_hash="0123456789abcdef", commit_message="a long commit message " * 5,
              error_message=PULL_ERROR, started_at="2025-06-14T15:30:12.123456+00:00",
              completed_at="2025-06-14T15:30:14.223456+00:00"),
        Build(id="20250614-152000-beef", deployment="hello-python", status=BuildStatus.SUCCESS,
              triggered_by=Trigger.MANUAL, action="create", image=f"kalpana/hello-python:{BUILD_ID}",
              started_at="2025-06-14T15:20:00+00:00", completed_at="2025-06-14T15:23:07+00:00"),
    ]
    lines = render(builds_table(builds))
    assert_fits(lines)
    text = " ".join(line.strip() for line in lines)
    assert sum(BUILD_ID in line for line in lines) >= 1 and "20250614-152000-beef" in text
    assert "run `docker pull python:3.12-slim` where a registry is reachable" in text, text
    assert "…" not in text and "..." not in text


def test_summary_takes_the_first_line_and_the_remedy():
    assert summary("one line: fix it") == "one line: fix it"
    assert summary("") == ""
    assert summary("broke:\nlog a\nlog b") == "broke: (+2 more lines: --wide)"
    assert summary("broke:\nnoise\nset `image` to one you have") == (
        "broke: / set `image` to one you have (+1 more line: --wide)")


def test_short_image_keeps_foreign_images_whole():
    assert short_image(f"kalpana/web:{BUILD_ID}", "web") == BUILD_ID
    assert short_image(f"kalpana/t-1/web:{BUILD_ID}", "web") == BUILD_ID
    assert short_image("nginx:1.25", "web") == "nginx:1.25"
    assert short_image(f"kalpana/other:{BUILD_ID}", "web") == f"kalpana/other:{BUILD_ID}"
    assert short_image(None, "web") == "-"
