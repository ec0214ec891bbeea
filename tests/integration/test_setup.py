"""scripts/setup_examples.py (the last step of setup.sh) against the real engine.

No registry answers on these machines, so the fallback path is the real one:
the repository's own examples, copied to a temporary workspace with their fixed
host ports removed (the examples deployed by a real setup.sh may hold them), and
the workspace's kalpana.yaml (never the repository's) gets image_fallbacks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import docker.errors
import pytest
import yaml

from tests.conftest import REPO_ROOT, remove_instance_objects

from .helpers import output, status_row

SCRIPT = REPO_ROOT / "scripts" / "setup_examples.py"
URL_LINE = re.compile(r"^setup: (\S+) serves at http://localhost:(\d+)$", re.MULTILINE)


@pytest.fixture
def examples(kalpana_project):
    """The repository's example deployments and apps in the test's workspace, without fixed host ports."""
    p = kalpana_project
    shutil.copytree(REPO_ROOT / "apps", p.root / "apps")
    for path in (REPO_ROOT / "deployments.d").iterdir():
        text = "".join(line for line in path.read_text().splitlines(keepends=True)
                       if "exposed_port" not in line and "exposedPort" not in line)
        (p.deployments_dir / path.name).write_text(text)
    return p


@pytest.fixture
def stand_in(kalpana_project, docker_client):
    """A tag for the busybox stand-in that only this test uses; removed after the test's containers."""
    tag = f"kalpana-local/busybox-{kalpana_project.instance}:test"
    yield tag
    # The instance's images are built on the stand-in: they go first.
    remove_instance_objects(docker_client, kalpana_project.instance)
    try:
        docker_client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def run_setup(project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "-c", str(project.config_path), *args],
                          cwd=project.root, env=project.env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)


def _local(client, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def test_without_a_registry_the_static_example_serves_on_a_local_busybox_and_python_is_skipped(
        examples, stand_in, docker_client):
    p = examples
    local = [image for image in ("busybox:1.36", "python:3.12-slim") if _local(docker_client, image)]
    assert not local, f"{local} on this host: this test proves the fallback and needs them absent"
    declared = (p.deployments_dir / "hello-static.yaml").read_text()
    settings_before = p.config_path.read_text()

    result = run_setup(p, "--fallback-tag", stand_in)
    text = output(result)
    assert result.returncode == 0, text

    said = [line for line in text.splitlines() if "cannot be pulled here" in line and stand_in in line]
    assert len(said) == 1, text
    assert said[0].startswith("setup: busybox:1.36 cannot be pulled here: hello-static runs on "), said
    assert "busybox-static" in said[0] and f"added to image_fallbacks in {p.config_path}" in said[0], said

    urls = dict(URL_LINE.findall(text))
    assert list(urls) == ["hello-static"], text
    status, body = p.http_get(int(urls["hello-static"]))
    assert (status, body) == (200, (REPO_ROOT / "apps" / "hello-static" / "index.html").read_text())

    skipped = [line for line in text.splitlines() if line.startswith("setup: skipped hello-python: ")]
    assert len(skipped) == 1 and "python:3.12-slim" in skipped[0], text
    assert status_row(p, "hello-python")["state"] == "not deployed"

    # The workspace's settings name the stand-in; what the user wrote there and in deployments.d stays.
    settings = p.config_path.read_text()
    assert settings.startswith(settings_before), settings
    assert yaml.safe_load(settings)["image_fallbacks"] == {"busybox:1.36": stand_in}
    assert (p.deployments_dir / "hello-static.yaml").read_text() == declared
    assert not (p.state_dir / "setup").exists()

    # The stand-in is what the container was built on, and the build log says so in one line.
    assert docker_client.images.get(stand_in).labels.get("dev.kalpana.local-base") == "1"
    built = p.run_json("builds", "hello-static")["builds"][0]
    layers = [layer["Id"] for layer in docker_client.images.get(built["image"]).history()]
    assert docker_client.images.get(stand_in).id in layers, layers
    log = p.run("logs", "hello-static").stdout
    assert sum("busybox:1.36 cannot be had here (" in line and f"): building on {stand_in} "
               "(image_fallbacks in kalpana.yaml)" in line for line in log.splitlines()) == 1, log

    # The user's next commands, from the same workspace: up to date, not foreign, not a rebuild.
    step = {s["name"]: s for s in p.run_json("plan")["steps"]}["hello-static"]
    assert step["action"] == "noop", step
    plain = p.run("plan").stdout
    assert "foreign" not in plain and "rebuild" not in plain, plain
    row = status_row(p, "hello-static")
    assert row["state"] == "running" and row["url"] == f"http://localhost:{urls['hello-static']}", row

    # A second setup finds everything in place: the same file, nothing rebuilt, the same URL.
    again = run_setup(p, "--fallback-tag", stand_in)
    assert again.returncode == 0, output(again)
    assert f"image_fallbacks in {p.config_path} names it" in output(again), output(again)
    assert p.config_path.read_text() == settings
    assert dict(URL_LINE.findall(output(again))) == urls
    assert p.run_json("builds", "hello-static")["builds"][0]["id"] == built["id"]


def test_when_every_image_is_here_it_is_a_plain_apply(examples, stand_in):
    p = examples
    (p.deployments_dir / "hello-python.json").unlink()
    spec = p.deployments_dir / "hello-static.yaml"
    spec.write_text(spec.read_text().replace("image: busybox:1.36", f"image: {p.image}"))

    result = run_setup(p, "--fallback-tag", stand_in)
    text = output(result)
    assert result.returncode == 0, text
    assert "cannot be pulled" not in text and "skipped" not in text, text
    urls = dict(URL_LINE.findall(text))
    status, _ = p.http_get(int(urls["hello-static"]))
    assert status == 200
    assert p.run_json("plan")["steps"][0]["action"] == "noop"


def test_nothing_deployable_is_a_failure_that_says_so(examples, stand_in):
    p = examples
    (p.deployments_dir / "hello-static.yaml").unlink()

    result = run_setup(p, "--fallback-tag", stand_in)
    text = output(result)
    assert result.returncode == 1, text
    assert "setup: skipped hello-python: " in text
    assert "setup: nothing could be deployed here" in text


def test_a_deployment_an_earlier_setup_applied_from_its_copies_is_taken_over(examples, stand_in):
    # What setup did before image_fallbacks: a copy naming the stand-in, applied from the state dir.
    p = examples
    (p.deployments_dir / "hello-python.json").unlink()
    build = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-test-image.sh"), stand_in],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert build.returncode == 0, output(build)
    overlay = p.state_dir / "setup" / "deployments.d"
    overlay.mkdir(parents=True)
    spec = (p.deployments_dir / "hello-static.yaml").read_text()
    (overlay / "hello-static.yaml").write_text(spec.replace("image: busybox:1.36", f"image: {stand_in}"))
    p.run("apply", env={"KALPANA_DEPLOYMENTS_DIR": str(overlay)})
    assert "foreign" in p.run("plan").stdout  # the trap the old mechanism left

    result = run_setup(p, "--fallback-tag", stand_in)
    text = output(result)
    assert result.returncode == 0, text
    assert "setup: hello-static was deployed by an earlier setup from copies under " in text, text
    assert not overlay.exists()
    step = p.run_json("plan")["steps"][0]
    assert (step["name"], step["action"]) == ("hello-static", "noop"), step
    status, _ = p.http_get(int(dict(URL_LINE.findall(text))["hello-static"]))
    assert status == 200
