"""Deployment files read nothing of the host outside the workspace, the config checkout and allowed_roots.

Issue 8, points 4 and 5: ``source: {path: /etc}`` built the host's /etc into an
image, ``env_file: /etc/os-release`` was read, and a deployment file that was a
symlink to /etc/shadow had its lines quoted by ``validate``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gitops.config import load_settings
from gitops.loader import LoadResult, load_configured, load_configured_file, load_directory

REPO_ROOT = Path(__file__).resolve().parents[2]
# Enough `..` to climb from any temporary directory to /.
UP = "../" * 40
HINT_SOURCE = "keep sources in the workspace, or list the directory in allowed_roots in kalpana.yaml"
HINT_ENV = ("keep env files beside the deployment files or in the workspace, "
            "or list the directory in allowed_roots in kalpana.yaml")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/project as the current directory: deployments.d/ and a workspace ws/; tmp_path/outside beside it."""
    root = tmp_path / "project"
    (root / "deployments.d").mkdir(parents=True)
    (root / "ws").mkdir()
    (tmp_path / "outside").mkdir()
    monkeypatch.chdir(root)
    return root


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(root: Path, **kwargs) -> LoadResult:
    return load_directory(root / "deployments.d", workspace=root / "ws", **kwargs)


def errors(result: LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


def only_error(result: LoadResult) -> str:
    found = errors(result)
    assert len(found) == 1, found
    assert result.desired == {}
    return found[0]


def web(source: str, *extra: str) -> str:
    return "\n".join(["name: web", "start_command: run", "image: busybox", f"source: {source}", *extra]) + "\n"


# --- source.path --------------------------------------------------------------------------------------

def test_absolute_source_path_outside_the_workspace_is_refused(project: Path) -> None:
    write(project, "deployments.d/web.yaml", web("{path: /etc}"))
    assert only_error(load(project)) == (
        f"deployments.d/web.yaml:4: source.path: resolves to /etc, outside the workspace {project / 'ws'}: {HINT_SOURCE}")


def test_source_path_climbing_out_with_dotdot_is_refused(project: Path) -> None:
    write(project, "deployments.d/web.yaml", web(f"{UP}etc"))
    error = load(project).errors[0]
    assert (error.line, error.field) == (4, "source.path")
    assert error.message.startswith(f"resolves to /etc, outside the workspace {project / 'ws'}")


def test_source_path_to_a_missing_directory_outside_says_outside_not_missing(project: Path) -> None:
    # Whether a path outside exists is itself something a file must not learn.
    write(project, "deployments.d/web.yaml", web("{path: /no/such/dir}"))
    assert "resolves to /no/such/dir, outside the workspace" in only_error(load(project))


def test_source_directory_that_is_a_symlink_out_is_refused(project: Path) -> None:
    (project / "ws" / "apps").mkdir()
    (project / "ws" / "apps" / "web").symlink_to(project.parent / "outside")
    write(project, "deployments.d/web.yaml", web("{path: apps/web}"))
    assert only_error(load(project)) == (
        f"deployments.d/web.yaml:4: source.path: resolves to {project.parent / 'outside'} through a symlink, "
        f"outside the workspace {project / 'ws'}: {HINT_SOURCE}")


def test_source_below_a_symlinked_parent_directory_is_refused(project: Path) -> None:
    (project.parent / "outside" / "app").mkdir()
    (project / "ws" / "shared").symlink_to(project.parent / "outside")
    write(project, "deployments.d/web.yaml", web("shared/app"))
    assert "through a symlink, outside the workspace" in only_error(load(project))


def test_symlinks_that_stay_inside_the_workspace_are_fine(project: Path) -> None:
    (project / "ws" / "real").mkdir()
    (project / "ws" / "link").symlink_to(project / "ws" / "real")
    write(project, "deployments.d/web.yaml", web("link"))
    result = load(project)
    assert result.ok, errors(result)


def test_a_workspace_that_is_itself_a_symlink_still_contains_its_sources(project: Path, tmp_path: Path) -> None:
    (tmp_path / "real-ws" / "app").mkdir(parents=True)
    (tmp_path / "ws-link").symlink_to(tmp_path / "real-ws")
    write(project, "deployments.d/web.yaml", web("app"))
    result = load_directory(project / "deployments.d", workspace=tmp_path / "ws-link")
    assert result.ok, errors(result)


def test_allowed_roots_admit_a_source_outside_the_workspace(project: Path) -> None:
    app = project.parent / "outside" / "app"
    app.mkdir()
    write(project, "deployments.d/web.yaml", web(f"{{path: {app}}}"))
    assert "outside the workspace" in only_error(load(project))
    result = load(project, allowed_roots=[project.parent / "outside"])
    assert result.ok, errors(result)
    assert result.desired["web"].spec.source.path == str(app)


def test_the_error_lists_allowed_roots_when_there_are_some(project: Path) -> None:
    write(project, "deployments.d/web.yaml", web("{path: /etc}"))
    shared = project.parent / "outside"
    assert only_error(load(project, allowed_roots=[shared, Path("/srv/none")])) == (
        f"deployments.d/web.yaml:4: source.path: resolves to /etc, outside the workspace {project / 'ws'} "
        f"and allowed_roots ({shared}, /srv/none): {HINT_SOURCE}")


# --- env_file -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_file", ["/etc/os-release", f"{UP}etc/shadow", "../../outside/app.env"])
def test_env_file_outside_is_refused(project: Path, env_file: str) -> None:
    (project.parent / "outside" / "app.env").write_text("SECRET=outside\n")
    write(project, "deployments.d/api.yaml", f"name: api\nstart_command: run\nenv_file: {env_file}\n")
    error = only_error(load(project))
    assert error.startswith("deployments.d/api.yaml:3: env_file: resolves to ")
    assert error.endswith(f", outside the workspace {project / 'ws'} and the deployments directory "
                          f"{project / 'deployments.d'}: {HINT_ENV}")
    assert "SECRET" not in error


def test_env_file_symlink_pointing_out_is_refused(project: Path) -> None:
    (project.parent / "outside" / "app.env").write_text("SECRET=outside\n")
    (project / "deployments.d" / "api.env").symlink_to(project.parent / "outside" / "app.env")
    write(project, "deployments.d/api.yaml", "name: api\nstart_command: run\nenv_file: api.env\n")
    assert only_error(load(project)).startswith(
        f"deployments.d/api.yaml:3: env_file: resolves to {project.parent / 'outside' / 'app.env'} through a symlink")


def test_env_file_beside_the_deployment_file_and_in_the_workspace_are_read(project: Path) -> None:
    # The base stays the deployment file's directory, even when that is outside the workspace.
    write(project, "deployments.d/api.env", "A=beside\n")
    write(project, "ws/shared.env", "B=workspace\n")
    write(project, "deployments.d/api.yaml", "name: api\nstart_command: run\nenv_file: api.env\n")
    write(project, "deployments.d/worker.yaml", "name: worker\nstart_command: run\nenv_file: ../ws/shared.env\n")
    result = load(project)
    assert result.ok, errors(result)
    assert result.desired["api"].env == {"A": "beside"}
    assert result.desired["worker"].env == {"B": "workspace"}


def test_env_file_in_an_allowed_root_is_read(project: Path) -> None:
    (project.parent / "outside" / "app.env").write_text("SHARED=yes\n")
    write(project, "deployments.d/api.yaml", f"name: api\nstart_command: run\nenv_file: {project.parent}/outside/app.env\n")
    result = load(project, allowed_roots=[project.parent / "outside"])
    assert result.ok, errors(result)
    assert result.desired["api"].env == {"SHARED": "yes"}


# --- dockerfile -------------------------------------------------------------------------------------------

def test_dockerfile_climbing_out_of_the_source_is_refused(project: Path) -> None:
    (project / "ws" / "app").mkdir()
    write(project, "deployments.d/web.yaml", "name: web\nsource: app\ndockerfile: ../../etc/passwd\n")
    assert only_error(load(project)) == (
        "deployments.d/web.yaml:3: dockerfile: must be a relative path inside the source "
        "(e.g. Dockerfile or docker/Dockerfile)")


def test_dockerfile_symlink_out_of_the_source_is_refused(project: Path) -> None:
    (project / "ws" / "app").mkdir()
    (project / "ws" / "secret").write_text("not a Dockerfile\n")
    (project / "ws" / "app" / "Dockerfile.prod").symlink_to(project / "ws" / "secret")
    write(project, "deployments.d/web.yaml", "name: web\nsource: app\ndockerfile: Dockerfile.prod\n")
    assert only_error(load(project)) == (
        f"deployments.d/web.yaml:3: dockerfile: Dockerfile.prod resolves to {project / 'ws' / 'secret'}, "
        f"outside the source {project / 'ws' / 'app'}: keep the Dockerfile inside the source")


def test_the_sources_own_dockerfile_symlinked_out_is_refused_when_the_build_would_read_it(project: Path) -> None:
    # No image anywhere: the build would use the source's own Dockerfile.
    (project / "ws" / "app").mkdir()
    (project / "ws" / "app" / "Dockerfile").symlink_to("/etc/passwd")
    write(project, "deployments.d/web.yaml", "name: web\nstart_command: run\nsource: app\n")
    assert only_error(load(project)) == (
        f"deployments.d/web.yaml:3: source.path: Dockerfile resolves to /etc/passwd, outside the source "
        f"{project / 'ws' / 'app'}: keep the Dockerfile inside the source")
    # With a base image that Dockerfile is never read.
    result = load_directory(project / "deployments.d", workspace=project / "ws", default_image="busybox")
    assert result.ok, errors(result)


def test_a_dockerfile_inside_the_source_loads(project: Path) -> None:
    write(project, "ws/app/docker/Dockerfile", "FROM busybox\n")
    write(project, "deployments.d/web.yaml", "name: web\nsource: app\ndockerfile: docker/../docker/Dockerfile\n")
    result = load(project)
    assert result.ok, errors(result)


# --- the config repository's checkout ---------------------------------------------------------------------

def settings_with_repo(root: Path, *, workspace: str | None = None, allowed: list[str] | None = None):
    lines = ["state_dir: state", "repo: {url: https://example.invalid/config.git, path: deployments.d}"]
    if workspace:
        lines.append(f"workspace: {workspace}")
    if allowed:
        lines.append(f"allowed_roots: [{', '.join(allowed)}]")
    write(root, "kalpana.yaml", "\n".join(lines) + "\n")
    settings = load_settings(root / "kalpana.yaml", environ={})
    settings.deployments_path.mkdir(parents=True)
    return settings


def test_with_a_config_repo_sources_resolve_inside_its_checkout(project: Path) -> None:
    settings = settings_with_repo(project)
    checkout = settings.config_checkout
    (checkout / "apps" / "web").mkdir(parents=True)
    write(checkout, "deployments.d/web.yaml", web("apps/web"))
    write(checkout, "deployments.d/api.yaml", web("../../ws").replace("name: web", "name: api"))
    result = load_configured(settings)
    assert sorted(result.desired) == ["web"]
    assert errors(result) == [
        f"{os.path.relpath(checkout / 'deployments.d' / 'api.yaml')}:4: source.path: resolves to {project / 'ws'}, "
        f"outside the workspace {checkout.resolve()}: {HINT_SOURCE}"]


def test_with_a_config_repo_and_an_explicit_workspace_both_are_allowed(project: Path) -> None:
    settings = settings_with_repo(project, workspace="ws")
    checkout = settings.config_checkout
    (checkout / "monorepo-app").mkdir(parents=True)
    (project / "ws" / "app").mkdir()
    write(checkout, "deployments.d/app.env", "FROM=checkout\n")
    write(checkout, "deployments.d/web.yaml", web("app", "env_file: app.env"))
    write(checkout, "deployments.d/mono.yaml", web(f"{checkout}/monorepo-app").replace("name: web", "name: mono"))
    write(checkout, "deployments.d/etc.yaml", web("/etc").replace("name: web", "name: etc"))
    result = load_configured(settings)
    assert sorted(result.desired) == ["mono", "web"], errors(result)
    [error] = result.errors
    assert error.message == (f"resolves to /etc, outside the workspace {project / 'ws'} and the config "
                             f"repository's checkout {checkout.resolve()}: {HINT_SOURCE}")


def test_allowed_roots_from_kalpana_yaml_resolve_against_its_directory(project: Path) -> None:
    settings = settings_with_repo(project, allowed=["../outside"])
    (project.parent / "outside" / "app").mkdir()
    write(settings.deployments_path, "web.yaml", web(f"{project.parent}/outside/app"))
    result = load_configured(settings)
    assert result.ok, errors(result)


# --- deployment files that are symlinks (point 5) ---------------------------------------------------------

SHADOW = "root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def test_a_deployment_file_symlinked_out_of_the_directory_is_not_read(project: Path) -> None:
    secret = project.parent / "outside" / "shadow"
    secret.write_text(SHADOW)
    (project / "deployments.d" / "web.yaml").symlink_to(secret)
    error = only_error(load(project))
    assert error == ("deployments.d/web.yaml: is a symlink pointing outside the deployments directory deployments.d: "
                     "not read; put the file itself in that directory")
    assert "root" not in error and "shadow" not in error


def test_a_symlink_to_a_file_inside_the_deployments_directory_is_read(project: Path) -> None:
    write(project, "deployments.d/shared/web.yaml", "name: web\nstart_command: run\n")
    (project / "deployments.d" / "web.yaml").symlink_to(project / "deployments.d" / "shared" / "web.yaml")
    result = load(project)
    assert result.ok, errors(result)
    assert list(result.desired) == ["web"]


def test_load_configured_file_checks_the_file_against_the_deployments_directory(project: Path) -> None:
    # The daemon passes paths it has resolved: the target itself must still be refused.
    settings = settings_with_repo(project)
    secret = project.parent / "outside" / "web.yaml"
    secret.write_text("name: secret-name\nstart_command: run\n")
    loaded, found = load_configured_file(settings, secret)
    assert loaded == [] and len(found) == 1
    assert "is outside the deployments directory" in str(found[0]) and "secret-name" not in str(found[0])


def test_validate_prints_nothing_of_a_symlinked_secret(project: Path) -> None:
    secret = project.parent / "outside" / "shadow"
    secret.write_text(SHADOW)
    write(project, "kalpana.yaml", "deployments_dir: deployments.d\nworkspace: ws\nstate_dir: state\n")
    (project / "deployments.d" / "web.yaml").symlink_to(secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALPANA_", "TRAEFIK_"))}
    env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "DOCKER_HOST": "tcp://127.0.0.1:9",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))})
    for extra in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-m", "gitops", "-c", "kalpana.yaml", "validate", *extra],
                                cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "is a symlink pointing outside the deployments directory" in result.stdout
        for secret_part in ("saltsalt", "hashhashhash", "daemon", "99999"):
            assert secret_part not in result.stdout + result.stderr
