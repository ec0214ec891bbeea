"""Shared fixtures for the integration tests (a real Docker engine, no mocks).

Every test that touches Docker gets its own Kalpana instance name; whatever
carries that instance's label is removed after the test (STYLE 12), and once
more at the end of the session as a safety net. Unit tests use none of this
and never need an engine.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import docker
import docker.errors
import pytest
import yaml

from gitops.labels import INSTANCE, container_name, image_repository

REPO_ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_DIR = REPO_ROOT / "tests" / "integration"
BASE_IMAGE = "kalpana-test-base:latest"
BUILD_TEST_IMAGE = REPO_ROOT / "scripts" / "build-test-image.sh"

# Guide-named settings overrides (gitops/config.py) that must not leak from the
# developer's shell into a test's CLI run; DOCKER_HOST is kept on purpose.
_SETTINGS_ENV = ("TRAEFIK_BASE_URL", "TRAEFIK_EMAIL", "TRAEFIK_NETWORK")


def pytest_configure(config: pytest.Config) -> None:
    # A background job of a non-interactive shell (how a CI runner may start us) begins with SIGINT
    # ignored, and Python then leaves it ignored; every child inherits that. The Ctrl-C tests (and the
    # `kalpana` processes they interrupt) need the terminal's behaviour: KeyboardInterrupt.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_interrupt_left() -> Iterator[None]:
    """A test that interrupts this process (a signal, or ``interrupt.request`` itself) marks it: not the next test."""
    from gitops import interrupt

    yield
    interrupt.clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with ``docker``."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the engine from the environment; a test needing it fails (never skips) without one."""
    problem = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # DockerException, requests' connection errors, a bad DOCKER_HOST
        problem = exc
    if problem is not None:  # outside the except: the report shows one line, not a chain
        pytest.fail(f"Docker engine not reachable: run scripts/ensure-docker.sh ({problem})", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    """Tag of the local busybox base image, built by scripts/build-test-image.sh when missing."""
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        # The script holds a file lock, so parallel workers build it once.
        result = subprocess.run(["bash", str(BUILD_TEST_IMAGE)], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"{BUILD_TEST_IMAGE.name} failed ({result.returncode}):\n{result.stdout}{result.stderr}",
                        pytrace=False)
    return BASE_IMAGE


def _gone(exc: docker.errors.APIError) -> bool:
    """Already removed, or being removed by someone else: either way, not a leftover."""
    return isinstance(exc, docker.errors.NotFound) or (
        exc.status_code == 409 and "in progress" in str(exc.explanation or ""))


def remove_instance_objects(client: docker.DockerClient, instance: str) -> list[str]:
    """Remove the containers, networks and images of one instance; return what could not be removed."""
    label = {"label": f"{INSTANCE}={instance}"}
    failures: list[str] = []
    for container in client.containers.list(all=True, filters=label, ignore_removed=True):
        try:
            container.remove(force=True, v=True)
        except docker.errors.APIError as exc:
            if not _gone(exc):
                failures.append(f"container {container.name}: {exc}")
    for network in client.networks.list(filters=label):
        try:
            network.remove()
        except docker.errors.APIError as exc:
            if not _gone(exc):
                failures.append(f"network {network.name}: {exc}")

    # image_repository(instance, "") is the "kalpana/<instance>/" prefix every image repository of the instance has.
    prefix = image_repository(instance, "")
    # The low-level listing: images.list() looks each image up again, and the other xdist
    # worker may remove one in between (404 in our teardown).
    raw = {i["Id"]: i for i in client.api.images(filters=label)}
    raw.update({i["Id"]: i for i in client.api.images()
                if any(tag.startswith(prefix) for tag in i.get("RepoTags") or [])})
    images = {image_id: _ListedImage(image_id, i.get("RepoTags") or [], i.get("Created", 0))
              for image_id, i in raw.items()}
    # Newest first, so a child goes before the image it was built on; retry once for the order we got wrong.
    pending = sorted(images.values(), key=lambda image: image.created, reverse=True)
    for _ in range(2):
        left = []
        for image in pending:
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.APIError as exc:
                if not _gone(exc):
                    left.append((image, exc))
        pending = [image for image, _ in left]
        if not pending:
            break
    failures += [f"image {image.tags or image.id[:19]}: {exc}" for image, exc in left]
    return failures


class _ListedImage(NamedTuple):
    id: str
    tags: list[str]
    created: int


@pytest.fixture(scope="session")
def _session_instances(docker_client: docker.DockerClient) -> Iterator[set[str]]:
    """Instances made in this session (this xdist worker); swept again when the session ends."""
    made: set[str] = set()
    yield made
    for name in sorted(made):
        remove_instance_objects(docker_client, name)


@pytest.fixture
def instance(docker_client: docker.DockerClient, _session_instances: set[str]) -> Iterator[str]:
    """A fresh Kalpana instance name (``t-<8 hex>``); everything labelled with it is removed afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    _session_instances.add(name)
    yield name
    failures = remove_instance_objects(docker_client, name)
    if failures:
        pytest.fail(f"cleanup of instance {name} left:\n" + "\n".join(failures), pytrace=False)


class KalpanaProject:
    """A Kalpana checkout in a temporary directory, driven through the real CLI (``python -m gitops``)."""

    def __init__(self, root: Path, instance: str, client: docker.DockerClient, image: str) -> None:
        self.root = root
        self.instance = instance
        self.client = client
        self.image = image
        self.config_path = root / "kalpana.yaml"
        self.deployments_dir = root / "deployments.d"
        self.state_dir = root / "state"
        self.deployments_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()

    def write_config(self, **overrides: Any) -> Path:
        """(Re)write kalpana.yaml: the test defaults, updated with ``overrides``."""
        settings = {
            "instance": self.instance,
            "default_image": self.image,
            "state_dir": str(self.state_dir),
            "deployments_dir": "deployments.d",
            "workspace": ".",
            "stop_timeout": 0,
            "lock_timeout": 30,
            **overrides,
        }
        self.config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
        return self.config_path

    def write_deployment(self, name: str, spec: str | Mapping[str, Any]) -> Path:
        """Write deployments.d/<name>.yaml from YAML text (dedented) or a mapping."""
        text = textwrap.dedent(spec) if isinstance(spec, str) else yaml.safe_dump(dict(spec), sort_keys=False)
        path = self.deployments_dir / f"{name}.yaml"
        path.write_text(text)
        return path

    def remove_deployment(self, name: str) -> None:
        """Delete deployments.d/<name>.yaml (or .yml)."""
        removed = False
        for suffix in (".yaml", ".yml"):
            path = self.deployments_dir / f"{name}{suffix}"
            if path.exists():
                path.unlink()
                removed = True
        assert removed, f"no deployment file for {name!r} in {self.deployments_dir}"

    def write_app(self, dirname: str, files: Mapping[str, str | bytes]) -> Path:
        """Create a source directory under the workspace: ``{relative path: content}``."""
        app = self.root / dirname
        for rel, content in files.items():
            path = app / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        app.mkdir(parents=True, exist_ok=True)
        return app

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The CLI's environment: ours without settings overrides (kalpana.yaml must win), plus ``extra``."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("KALPANA_") and key not in _SETTINGS_ENV}
        # Plain, wide output: tests read it.
        env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
                    # A no-op apply's record (gitops/noop_replay.py) stays with the test, not in ~/.cache;
                    # beside the project, not in it (a `source: .` would count it as content).
                    "XDG_CACHE_HOME": str(self.root.with_name(self.root.name + "-cache"))})
        env.update(extra or {})
        return env

    def run(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``python -m gitops -c kalpana.yaml *args``; with ``check``, a non-zero exit fails the test."""
        cmd = [sys.executable, "-m", "gitops", "-c", str(self.config_path), *map(str, args)]
        try:
            result = subprocess.run(cmd, cwd=self.root, env=self.env(env), capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"kalpana {' '.join(map(str, args))} still running after {timeout}s\n"
                        f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}", pytrace=False)
        if check and result.returncode != 0:
            pytest.fail(f"kalpana {' '.join(map(str, args))} exited {result.returncode}\n"
                        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}", pytrace=False)
        return result

    def run_json(self, *args: str, **kwargs: Any) -> Any:
        """``run(*args, "--json")`` and the parsed JSON of its stdout."""
        result = self.run(*args, "--json", **kwargs)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            pytest.fail(f"kalpana {' '.join(map(str, args))} --json printed no JSON ({exc})\n"
                        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}", pytrace=False)

    def http_get(self, port: int, path: str = "/", timeout: float = 5) -> tuple[int, str]:
        """GET http://127.0.0.1:<port><path>, retrying until ``timeout``; an HTTP error status is an answer."""
        url = f"http://127.0.0.1:{port}{path}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=max(0.5, deadline - time.monotonic())) as response:
                    return response.status, response.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode("utf-8", "replace")
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        pytest.fail(f"GET {url} got no answer within {timeout}s: {last_error}", pytrace=False)

    def container(self, name: str) -> Any:
        """The container of deployment ``name`` in this instance, or None when there is none."""
        try:
            return self.client.containers.get(container_name(self.instance, name))
        except docker.errors.NotFound:
            return None


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


@pytest.fixture
def kalpana_project(tmp_path: Path, instance: str, docker_client: docker.DockerClient,
                    base_image: str) -> KalpanaProject:
    """A kalpana.yaml for this test's instance in tmp_path, plus helpers to write files and run the CLI."""
    return KalpanaProject(tmp_path, instance, docker_client, base_image)
