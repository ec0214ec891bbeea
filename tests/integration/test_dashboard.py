"""The dashboard in a real browser: Debian's headless chromium driven by Playwright.

Against a real `kalpana watch` (with an API token) and the real engine: the
page asks for the token, shows the deployment's card, and a Deploy click
streams the build's log lines into the log view until the build ends with
SUCCESS, all without a reload. Screenshots at laptop and phone widths go to
$KALPANA_TEST_ARTIFACTS (default tests/artifacts/, which ignores itself).

Playwright cannot download its own browser here: scripts/ensure-chromium.sh
installs the system one, which this test launches by path.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from gitops.labels import image_repository

from .daemon_helpers import DEPLOYMENT_SECRET, start_daemon
from .helpers import web_spec

__all__ = ["start_daemon"]  # the fixture, imported so pytest finds it here

TOKEN = "dashboard-test-token"
ARTIFACTS = Path(os.environ.get("KALPANA_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
BUILD_TIMEOUT_MS = 180_000  # two shared cores: a build waits for other tests' builds


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Debian chromium under Playwright; fails (never skips) when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Playwright package is missing: pip install -e '.[test]'", pytrace=False)
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not on PATH: run scripts/ensure-chromium.sh", pytrace=False)
    with sync_playwright() as playwright:
        # --no-sandbox: tests run as root in a container, where chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where this test's screenshots go (kept after the run: they are the proof to look at)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not os.environ.get("KALPANA_TEST_ARTIFACTS") and not ignore.exists():
        ignore.write_text("*\n")  # the default lies in the checkout: keep it out of git
    return ARTIFACTS


def test_deploy_click_streams_the_build_log_to_success(kalpana_project, start_daemon, chromium, artifacts):
    from playwright.sync_api import expect

    p = kalpana_project
    p.write_app("site", {"index.html": "v1", "build.sh": "echo built\n"})
    p.write_deployment("site", web_spec("site", description="The dashboard's test site",
                                        build_command="sh build.sh", auto_rebuild=True,
                                        webhook_secret=DEPLOYMENT_SECRET))
    daemon = start_daemon(api_token=TOKEN)  # its start-up run deploys the site

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=daemon.base_url)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        page.goto(f"{daemon.base_url}/")

        # The page asks for the token; a wrong one is refused and asked again.
        token_box = page.get_by_role("textbox", name="Token", exact=True)
        expect(token_box).to_be_visible()
        token_box.fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-why")).to_contain_text("refused")
        token_box.fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()

        # The card: name, status as words, URL as a link, last build, webhook URL.
        card = page.locator('article.card[data-name="site"]')
        expect(card.get_by_role("heading", name="site")).to_be_visible()
        expect(card.locator(".card-head .badge")).to_have_attribute("data-status", "running")
        expect(card.locator(".card-head .badge")).to_contain_text("running")
        expect(card.get_by_role("link")).to_have_text(re.compile(r"^http://localhost:\d+$"))
        expect(card).to_contain_text("The dashboard's test site")
        last_build = card.locator(".build-line .badge")
        expect(last_build).to_have_attribute("data-status", "SUCCESS")
        webhook = f"{daemon.base_url}/api/deployments/site/webhook"
        expect(card.locator("code.webhook")).to_have_text(webhook)
        card.get_by_role("button", name="Copy the webhook URL of site").click()
        assert page.evaluate("navigator.clipboard.readText()") == webhook

        # Deploy: this build's lines stream into the log view, which ends with SUCCESS. (Docker's layer
        # cache may skip the build command's own output; the tag line names this very build.)
        card.get_by_role("button", name="Deploy site").click()
        title = page.locator("#log-title")
        expect(title).to_have_text(re.compile(r"^Log of site, build \S+$"), timeout=BUILD_TIMEOUT_MS)
        build_id = title.inner_text().rsplit(" ", 1)[1]
        # The card's newest-build box names the new build while it runs (it used to vanish until a refresh).
        newest_box = card.locator("p.current")
        expect(newest_box).to_be_visible()
        expect(newest_box).to_contain_text(f"Build {build_id}")
        log = page.get_by_role("log")
        expect(log).to_contain_text("Step 1/", timeout=BUILD_TIMEOUT_MS)
        expect(log).to_contain_text(f"Successfully tagged {image_repository(p.instance, 'site')}:{build_id}",
                                    timeout=BUILD_TIMEOUT_MS)
        status = page.locator("#log-status")
        expect(status).to_have_attribute("data-status", "SUCCESS", timeout=BUILD_TIMEOUT_MS)
        expect(status).to_contain_text("SUCCESS")
        expect(log).to_contain_text("build SUCCESS")
        lines = log.inner_text().splitlines()
        assert len(lines) >= 5 and lines[-1] == "■ build SUCCESS", lines

        # The box stays, names the new build with its final status and opens its log.
        expect(newest_box).to_be_visible()
        expect(newest_box).to_contain_text(f"Build {build_id}")
        expect(newest_box.locator(".badge")).to_have_attribute("data-status", "SUCCESS")
        expect(newest_box.get_by_role("button", name="Show the log of the newest build of site")).to_be_visible()
        expect(card.locator(".build-line .badge")).to_have_attribute("data-status", "SUCCESS")

        # Without a reload, the card's history shows the new build on top, as a manual SUCCESS.
        card.locator("details.history summary").click()
        newest = card.locator("table tbody tr").first
        expect(newest).to_contain_text(build_id)
        expect(newest.locator(".badge")).to_have_attribute("data-status", "SUCCESS")
        expect(newest).to_contain_text("manual")
        expect(card.locator(".card-head .badge")).to_have_attribute("data-status", "running")
        expect(newest_box).to_contain_text(f"Build {build_id}")  # still, after the list's refresh
        assert_log_panel_has_its_own_row(page)
        page.screenshot(path=str(artifacts / "dashboard-1280.png"), full_page=True)

        # Phone width: the same page, nothing wider than the screen.
        page.set_viewport_size({"width": 375, "height": 800})
        assert_log_panel_has_its_own_row(page)
        page.screenshot(path=str(artifacts / "dashboard-375.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375

        # The token is kept for the tab: a reload goes straight to the cards.
        page.reload()
        expect(card.locator(".card-head .badge")).to_have_attribute("data-status", "running")
        expect(token_box).to_be_hidden()
        assert script_errors == [], script_errors
    finally:
        context.close()


def assert_log_panel_has_its_own_row(page: Any) -> None:
    """With a history open, the log panel spans the cards' full width below every card.

    It used to sit in a side column (sticky), floating mid-page next to a tall open history.
    """
    cards = page.locator("#deployments").bounding_box()
    panel = page.locator("#logpanel").bounding_box()
    assert cards and panel, (cards, panel)
    assert page.locator("details.history[open]").count() >= 1
    for card in page.locator("article.card").all():
        box = card.bounding_box()
        assert box, card
        overlaps_x = box["x"] < panel["x"] + panel["width"] and panel["x"] < box["x"] + box["width"]
        overlaps_y = box["y"] < panel["y"] + panel["height"] and panel["y"] < box["y"] + box["height"]
        assert not (overlaps_x and overlaps_y), (box, panel)
    assert panel["x"] <= cards["x"] + 1 and panel["x"] + panel["width"] >= cards["x"] + cards["width"] - 1, (cards, panel)
    assert panel["y"] >= cards["y"] + cards["height"], (cards, panel)


def test_the_page_and_its_assets_are_served_from_the_package_with_nothing_from_outside():
    """Offline: every asset comes from this app; `/` and `/static` stay out of the API's schema."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from gitops.server import dashboard

    app = FastAPI()
    dashboard.mount(app)
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.headers
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.css", "/static/app.js", "data:,"], assets
    for path, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        answer = client.get(path)
        assert answer.status_code == 200 and kind in answer.headers["content-type"], (path, answer.headers)
        assert answer.headers["cache-control"] == "no-cache", (path, answer.headers)
        # No CDN, font or script from elsewhere: an absolute URL in an asset would be fetched from outside.
        assert not re.search(r"https?://|url\(", answer.text), path
    assert client.get("/static/missing.js").status_code == 404
    assert not [route for route in app.openapi()["paths"] if route == "/" or route.startswith("/static")]
