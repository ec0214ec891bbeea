"""The HTTP API over real HTTP, against a running `kalpana watch` on loopback with the real engine.

Deployments are created, deployed, stopped, started and deleted through the
API; what counts is what Docker runs, what the history records and what the
SSE streams carry, read to their final event.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from gitops.server.sse import parse

from .daemon_helpers import free_port, start_daemon, wait_until
from .helpers import HTTPD, get

__all__ = ["start_daemon"]

TOKEN = "t0ken-for-tests"
LINES = 6
# Slow enough that a second client connects while the build still runs.
BUILD = f"for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.4; done"


class Api:
    """A client of one daemon's API, with the token."""

    def __init__(self, base: str, token: str | None = TOKEN):
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base, headers=self.headers, timeout=60)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(path)

    def stream(self, method: str, path: str, on_event=None, timeout: float = 180) -> list[tuple[str, Any]]:
        """Read an SSE response to its ``end`` event; ``on_event(kind, data)`` sees each as it comes."""
        events: list[tuple[str, Any]] = []
        buffer = ""
        deadline = time.monotonic() + timeout
        with self.http.stream(method, path, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for chunk in response.iter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    for kind, data in parse(block + "\n\n"):
                        events.append((kind, data))
                        if on_event:
                            on_event(kind, data)
                        if kind == "end":
                            return events
                assert time.monotonic() < deadline, f"no end event within {timeout}s: {events}"
        raise AssertionError(f"the stream closed before its end event: {events}")

    def deployment(self, name: str) -> dict[str, Any]:
        response = self.get(f"/api/deployments/{name}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def api_daemon(kalpana_project, start_daemon):
    """`kalpana watch` serving the API with a token; (daemon, client)."""
    daemon = start_daemon(api_token=TOKEN)
    return daemon, Api(daemon.base_url)


def _site(project, name: str, content: str = "v1") -> dict[str, Any]:
    project.write_app(name, {"index.html": content})
    # The guide's camelCase body, plus the fields of a file (source, healthcheck).
    return {"name": name, "description": "made over the API", "buildCommand": BUILD, "startCommand": HTTPD,
            "port": 8080, "source": name, "healthcheck": {"timeout": 10}}


def test_create_then_deploy_streams_to_the_end_and_a_late_client_misses_nothing(kalpana_project, api_daemon):
    p = kalpana_project
    daemon, api = api_daemon
    created = api.post("/api/deployments", json=_site(p, "made"))
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "made" and created.json()["file"].endswith("made.yaml")
    assert (p.deployments_dir / "made.yaml").is_file()

    # The first build runs from the queue; a client that connects after it printed two lines gets them all.
    first_id = wait_until(lambda: (api.deployment("made")["last_build"] or {}).get("id"), timeout=60,
                          what="the created deployment's first build")
    wait_until(lambda: "line-2" in api.get(f"/api/builds/{first_id}/logs").text, timeout=60, what="line-2 logged")
    late = api.stream("GET", f"/api/builds/{first_id}/logs")
    late_lines = [d["line"] for k, d in late if k == "log"]
    assert [line for line in late_lines if line.startswith("line-")] == [f"line-{i}" for i in range(1, LINES + 1)]
    assert late[-1][0] == "end" and late[-1][1]["status"] == "SUCCESS", late[-1]
    stored = api.get(f"/api/builds/{first_id}/logs").text.splitlines()
    assert late_lines == [line for line in stored if not line.startswith("==> ")]
    first = wait_until(lambda: api.deployment("made")["state"] == "running" and api.deployment("made"),
                       timeout=60, what="the created deployment running")
    assert get(p, int(first["url"].rsplit(":", 1)[1])) == "v1"

    # Deploy: a rebuild of what the files say now, streamed from the request to its final event.
    p.write_app("made", {"index.html": "v2"})
    events = api.stream("POST", "/api/deployments/made/deploy")
    kind, data = events[0]
    assert kind == "build", events[:3]
    build_id = data["build"]
    assert any(k == "phase" for k, _ in events)
    end = events[-1][1]
    assert end["id"] == build_id and end["status"] == "SUCCESS" and end["trigger"] == "manual", end
    lines = [d["line"] for k, d in events if k == "log"]
    shown = api.deployment("made")
    assert shown["current_build"]["id"] == build_id and shown["state"] == "running", shown
    assert get(p, int(shown["url"].rsplit(":", 1)[1])) == "v2"

    # The same build afterwards: the record, its text log, and a replayed stream ending the same way.
    assert api.get(f"/api/builds/{build_id}").json() == end
    text = api.get(f"/api/builds/{build_id}/logs")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    replay = api.stream("GET", f"/api/builds/{build_id}/logs")
    assert [d["line"] for k, d in replay if k == "log"] == lines and replay[-1] == ("end", end)

    # History, newest first, in pages.
    page = api.get("/api/deployments/made/builds", params={"limit": 1}).json()
    assert [b["id"] for b in page["builds"]] == [build_id] and page["next"] == build_id
    older = api.get("/api/deployments/made/builds", params={"limit": 1, "before": page["next"]}).json()
    assert [b["id"] for b in older["builds"]] == [first_id] and older["next"] is None
    listed = api.get("/api/deployments").json()["deployments"]
    assert [d["name"] for d in listed] == ["made"]


def test_stop_start_delete(kalpana_project, api_daemon):
    p = kalpana_project
    daemon, api = api_daemon
    assert api.post("/api/deployments", json=_site(p, "web") | {"buildCommand": None}).status_code == 201
    shown = wait_until(lambda: api.deployment("web")["state"] == "running" and api.deployment("web"),
                       timeout=120, what="web running")
    build_id = shown["current_build"]["id"]

    # A client that leaves a deploy's stream costs nothing: the daemon forgets it, the build goes on.
    with api.http.stream("POST", "/api/deployments/web/deploy", headers={"Accept": "text/event-stream"}) as answer:
        first = next(answer.iter_text())
    left_build = parse(first)[0][1]["build"]
    wait_until(lambda: "kalpana_log_stream_clients 0.0" in httpx.get(f"{api.base}/metrics").text,
               timeout=30, what="the stream's client forgotten")
    wait_until(lambda: api.get(f"/api/builds/{left_build}").json()["status"] == "SUCCESS", timeout=120,
               what="the deploy whose client left finishing")

    stopped = api.post("/api/deployments/web/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["deployment"]["state"] == "stopped"
    assert not p.container("web").attrs["State"]["Running"]

    # A deploy means "run this": it ends the operator's stop, as `kalpana deploy` does.
    queued = api.post("/api/deployments/web/deploy", headers={"Accept": "application/json"})
    assert queued.status_code == 202, queued.text
    wait_until(lambda: api.get(f"/api/builds/{queued.json()['build']}").json()["status"] == "SUCCESS",
               timeout=120, what="the deploy of the stopped deployment")
    assert api.deployment("web")["state"] == "running"
    assert api.post("/api/deployments/web/stop").json()["deployment"]["state"] == "stopped"

    started = api.post("/api/deployments/web/start")
    assert started.status_code == 200, started.text
    assert started.json()["done"] is True
    assert started.json()["deployment"]["state"] == "running", started.json()
    port = int(started.json()["deployment"]["url"].rsplit(":", 1)[1])
    assert get(p, port) == "v1"

    deleted = api.delete("/api/deployments/web")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": "web", "done": True}
    assert not (p.deployments_dir / "web.yaml").exists()
    assert p.container("web") is None
    # Its history stays.
    assert api.get(f"/api/builds/{build_id}").json()["deployment"] == "web"
    missing = api.get("/api/deployments/web")
    assert missing.status_code == 404


def test_refusals_say_what_is_wrong(kalpana_project, api_daemon):
    p = kalpana_project
    daemon, api = api_daemon
    p.write_app("web", {"index.html": "v1"})
    assert api.post("/api/deployments", json=_site(p, "web")).status_code == 201

    for client in (Api(api.base, token=None), Api(api.base, token="wrong")):
        refused = client.get("/api/deployments")
        assert refused.status_code == 401 and "token" in refused.json()["detail"], refused.text
    assert httpx.get(f"{api.base}/healthz").json() == {"ok": True}  # no token needed

    unknown = api.get("/api/deployments/nope")
    assert unknown.status_code == 404 and "known deployments: web" in unknown.json()["detail"], unknown.text
    assert api.post("/api/deployments/nope/deploy").status_code == 404
    assert api.get("/api/builds/nope").status_code == 404

    again = api.post("/api/deployments", json=_site(p, "web"))
    assert again.status_code == 409 and "web.yaml" in again.json()["detail"], again.text

    bad = api.post("/api/deployments", json={"name": "other", "startCommand": HTTPD, "port": "eighty"})
    assert bad.status_code == 422 and bad.json()["field"] == "port", bad.text
    typo = api.post("/api/deployments", json={"name": "other", "startComand": HTTPD})
    assert typo.status_code == 422 and typo.json()["field"] == "start_comand" and "start_command" in typo.json()["detail"], typo.text
    assert not (p.deployments_dir / "other.yaml").exists()
    assert api.get("/api/deployments/web/builds", params={"limit": 0}).status_code == 422

    metrics = httpx.get(f"{api.base}/metrics")
    assert metrics.status_code == 200 and "kalpana_queue_depth" in metrics.text


def test_watch_refuses_a_public_listen_without_a_token(kalpana_project):
    p = kalpana_project
    p.write_config(listen=f"0.0.0.0:{free_port()}")
    done = subprocess.run([sys.executable, "-m", "gitops", "-c", str(p.config_path), "watch"], cwd=p.root,
                          env=p.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "api_token" in done.stderr and "0.0.0.0" in done.stderr, done.stderr
