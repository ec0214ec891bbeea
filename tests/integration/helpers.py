"""Small helpers the integration tests share: deployment specs and reading back what Kalpana did.

Everything here reads the truth from where it lives: the CLI's ``--json``
output (plan, status, build history), Docker itself (containers, images) and
HTTP answers of the deployed apps. Nothing is mocked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from gitops.labels import DEPLOYMENT, INSTANCE, image_repository, is_candidate_name

HTTPD = "httpd -f -p 8080 -h /workspace"


def web_spec(name: str, **overrides: Any) -> dict[str, Any]:
    """A busybox httpd deployment serving the source directory ``name`` (written with ``write_app``)."""
    spec: dict[str, Any] = {
        "name": name,
        "source": name,
        "start_command": HTTPD,
        "port": 8080,
        "healthcheck": {"timeout": 5},
    }
    spec.update(overrides)
    return spec


def deploy_web(project, name: str, content: str = "v1", **overrides: Any) -> int:
    """Write an app serving ``content`` and its deployment file, apply, check it serves; return its host port."""
    project.write_app(name, {"index.html": content})
    project.write_deployment(name, web_spec(name, **overrides))
    project.run("apply")
    port = host_port(project, name)
    assert get(project, port) == content
    return port


def deploy_two_versions(project, name: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Deploy ``name`` serving v1, then v2 (a source change): its host port and both build records."""
    port = deploy_web(project, name, "v1")
    v1 = builds(project, name)[0]
    project.write_app(name, {"index.html": "v2"})
    project.run("apply")
    assert get(project, port) == "v2"
    return port, v1, builds(project, name)[0]


def status_row(project, name: str) -> dict[str, Any]:
    """The row of ``kalpana status --json`` for ``name``."""
    rows = project.run_json("status")["deployments"]
    for row in rows:
        if row["name"] == name:
            return row
    raise AssertionError(f"status has no row for {name!r}: {rows}")


def host_port(project, name: str, row: dict[str, Any] | None = None) -> int:
    """The host port of a running deployment, read from the URL `kalpana status` shows (or ``row`` of it)."""
    row = row or status_row(project, name)
    assert row["state"] == "running", row
    url = row["url"]
    assert url and url.startswith("http://localhost:"), row
    return int(url.rsplit(":", 1)[1])


def get(project, port: int, path: str = "/") -> str:
    """The body of a 200 answer to GET ``path`` on ``port``."""
    status, body = project.http_get(port, path)
    assert status == 200, f"GET :{port}{path} -> {status}: {body[:200]}"
    return body


def builds(project, name: str) -> list[dict[str, Any]]:
    """``kalpana builds NAME --json``: the records, newest first."""
    data = project.run_json("builds", name, "--limit", "0")
    assert data["deployment"] == name
    return data["builds"]


def plan_steps(project, *names: str) -> dict[str, dict[str, Any]]:
    """``kalpana plan --json``: the steps by deployment name."""
    data = project.run_json("plan", *names)
    return {step["name"]: step for step in data["steps"]}


def _filters(project, name: str) -> dict[str, list[str]]:
    return {"label": [f"{INSTANCE}={project.instance}", f"{DEPLOYMENT}={name}"]}


def containers(project, name: str) -> list[Any]:
    """Every Docker container of deployment ``name`` in this instance (whatever it is called, running or not)."""
    # ignore_removed: one removed between the listing and its inspection is simply gone.
    return project.client.containers.list(all=True, filters=_filters(project, name), ignore_removed=True)


def running_count(project, name: str) -> int:
    """How many containers of ``name`` run right now, trial containers (``--candidate``) left out: one listing."""
    listed = project.client.api.containers(filters=_filters(project, name))
    return sum(1 for c in listed if not is_candidate_name(c["Names"][0].lstrip("/")))


def only_container(project, name: str) -> Any:
    """The one container of ``name``; fails when there are none or several."""
    found = containers(project, name)
    assert len(found) == 1, f"{name}: expected exactly one container, found {[c.name for c in found]}"
    return found[0]


def image_tags(project, name: str) -> set[str]:
    """Tags of every image in ``kalpana/<instance>-<name>``."""
    repo = image_repository(project.instance, name)
    return {tag for image in project.client.images.list(name=repo) for tag in image.tags}


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def spawn(project, *args: str) -> subprocess.Popen[str]:
    """Start ``kalpana *args`` in the background, as ``project.run`` would run it.

    SIGINT is reset to its default in the child: a pytest-xdist worker may ignore
    it, and an ignored SIGINT would be inherited, unlike a terminal's Ctrl-C.
    """
    cmd = [sys.executable, "-m", "gitops", "-c", str(project.config_path), *args]
    return subprocess.Popen(cmd, cwd=project.root, env=project.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    """Wait for a spawned process; (exit code, stdout + stderr)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"still running after {timeout}s:\n{out}{err}")
    return process.returncode, out + err


def wait_for_status(project, name: str, status: str, process: subprocess.Popen[str] | None = None,
                    timeout: float = 60) -> dict[str, Any]:
    """Poll the build history until the newest build of ``name`` has ``status``; return it."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        records = builds(project, name)
        if records:
            seen = records[0]
            if seen["status"] == status:
                return seen
        if process is not None and process.poll() is not None:
            code, text = finish(process)
            raise AssertionError(f"kalpana exited ({code}) before {name} was {status}:\n{text}")
        time.sleep(0.2)
    raise AssertionError(f"newest build of {name} never became {status} within {timeout}s; last seen: {seen}")
