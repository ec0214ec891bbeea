"""Deployment files -> specs, and every error located as ``<file>:<line>: <field>: <message>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gitops.loader import LoadResult, load_directory, load_file

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current directory, with an empty deployments.d/ (display paths become relative)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deployments.d").mkdir()
    return tmp_path


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(root: Path, workspace: Path | None = None) -> LoadResult:
    return load_directory(root / "deployments.d", workspace=workspace or root)


def errors(result: LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


def only_error(result: LoadResult) -> str:
    found = errors(result)
    assert len(found) == 1, found
    return found[0]


# --- missing fields -------------------------------------------------------------------------------

def test_missing_start_command_points_at_the_document(project: Path) -> None:
    write(project, "deployments.d/api.yaml", """\
        name: api
        port: 80
        """)
    result = load(project)
    assert errors(result) == ["deployments.d/api.yaml:1: start_command: field required"]
    assert result.desired == {}
    assert not result.ok


def test_missing_field_line_is_the_first_key_after_comments(project: Path) -> None:
    write(project, "deployments.d/api.yaml", """\
        # The API service.
        # It listens on port 80.


        # (no start command yet)
        name: api
        port: 80
        """)
    assert only_error(load(project)) == "deployments.d/api.yaml:6: start_command: field required"


def test_missing_name(project: Path) -> None:
    write(project, "deployments.d/anon.yaml", """\
        start_command: run
        port: 80
        """)
    assert only_error(load(project)) == "deployments.d/anon.yaml:1: name: field required"


def test_error_fields_are_reported_by_file_key(project: Path) -> None:
    write(project, "deployments.d/err.yaml", """\
        name: err
        startCommand: run
        workingDir: relative/dir
        """)
    error = load(project).errors[0]
    assert (error.file, error.line, error.field) == ("deployments.d/err.yaml", 3, "working_dir")
    assert str(error) == ("deployments.d/err.yaml:3: working_dir: "
                          "must be an absolute path inside the container, e.g. /workspace")


# --- unknown keys, wrong types ------------------------------------------------------------------------

def test_unknown_key_with_did_you_mean(project: Path) -> None:
    write(project, "deployments.d/typo.yaml", """\
        name: typo
        start_command: run
        start_comand: run
        """)
    assert only_error(load(project)) == \
        "deployments.d/typo.yaml:3: start_comand: unknown field (did you mean 'start_command'?)"


def test_unknown_camel_case_key_suggests_snake_case(project: Path) -> None:
    write(project, "deployments.d/typo.yaml", """\
        name: typo
        startComand: run
        """)
    found = errors(load(project))
    assert "deployments.d/typo.yaml:2: start_comand: unknown field (did you mean 'start_command'?)" in found


def test_unknown_key_without_a_near_match(project: Path) -> None:
    write(project, "deployments.d/x.yaml", """\
        name: x
        start_command: run
        zzqqxx: 1
        """)
    assert only_error(load(project)) == "deployments.d/x.yaml:3: zzqqxx: unknown field"


def test_unknown_nested_key_has_its_own_line(project: Path) -> None:
    write(project, "deployments.d/hc.yaml", """\
        name: hc
        start_command: run
        healthcheck:
          path: /health
          timeot: 3
        """)
    assert only_error(load(project)).startswith("deployments.d/hc.yaml:5: healthcheck.timeot: unknown field")


def test_unknown_nested_key_suggests_a_key_of_that_mapping(project: Path) -> None:
    # The suggestion must come from the healthcheck's own keys, not the top-level ones.
    write(project, "deployments.d/hc.yaml", """\
        name: hc
        start_command: run
        healthcheck:
          path: /health
          timeot: 3
        """)
    assert only_error(load(project)) == \
        "deployments.d/hc.yaml:5: healthcheck.timeot: unknown field (did you mean 'timeout'?)"


def test_wrong_type_on_nested_field_has_the_nested_line(project: Path) -> None:
    write(project, "deployments.d/hc.yaml", """\
        name: hc
        start_command: run
        port: 8080
        healthcheck:
          path: /health
          timeout: soon
        """)
    assert only_error(load(project)).startswith(
        "deployments.d/hc.yaml:6: healthcheck.timeout: input should be a valid number")


def test_nested_value_error(project: Path) -> None:
    write(project, "deployments.d/mem.yaml", """\
        name: mem
        start_command: run
        resources:
          cpus: 1
          memory: 1k
        """)
    assert only_error(load(project)) == "deployments.d/mem.yaml:5: resources.memory: memory below 6m is refused by Docker"


def test_wrong_type_in_pretty_json_has_the_key_line(project: Path) -> None:
    write(project, "deployments.d/api.json", """\
        {
          "name": "api",
          "startCommand": "npm start",
          "port": "eighty"
        }
        """)
    assert only_error(load(project)).startswith("deployments.d/api.json:4: port: input should be a valid integer")


def test_bad_name_explains_dns_labels(project: Path) -> None:
    write(project, "deployments.d/bad.yaml", """\
        start_command: run
        name: My_App
        """)
    assert only_error(load(project)) == (
        "deployments.d/bad.yaml:2: name: 'My_App' is not a DNS label: use lowercase letters, digits and hyphens "
        "(at most 63, not starting or ending with a hyphen)")


def test_env_vars_error_names_the_env_field(project: Path) -> None:
    # The user wrote envVars; the model field is env. `env_vars` is neither.
    write(project, "deployments.d/env.yaml", """\
        name: env
        startCommand: run
        envVars: "NOT A PAIR"
        """)
    error = load(project).errors[0]
    assert error.line == 3
    assert error.field in ("env", "envVars"), str(error)


# --- YAML-level problems -----------------------------------------------------------------------------

def test_invalid_yaml_syntax_has_its_line(project: Path) -> None:
    write(project, "deployments.d/syn.yaml", """\
        name: syn
        start_command: run
          port: 80
        """)
    assert only_error(load(project)).startswith("deployments.d/syn.yaml:3: not valid YAML: mapping values are not allowed")


def test_duplicate_key_in_one_mapping(project: Path) -> None:
    write(project, "deployments.d/dup.yaml", """\
        name: dup
        start_command: a
        port: 80
        start_command: b
        """)
    assert only_error(load(project)) == "deployments.d/dup.yaml:4: start_command: key appears twice in one mapping: keep one"


def test_duplicate_nested_key(project: Path) -> None:
    write(project, "deployments.d/dup.yaml", """\
        name: dup
        start_command: a
        healthcheck:
          timeout: 1
          timeout: 2
        """)
    assert only_error(load(project)) == \
        "deployments.d/dup.yaml:5: healthcheck.timeout: key appears twice in one mapping: keep one"


@pytest.mark.parametrize(("text", "line"), [
    ("- name: a\n- name: b\n", 1),
    ("---\njust a string\n", 2),
    ("42\n", 1),
])
def test_non_mapping_document(project: Path, text: str, line: int) -> None:
    (project / "deployments.d" / "odd.yaml").write_text(text)
    assert only_error(load(project)) == \
        f"deployments.d/odd.yaml:{line}: a deployment must be a mapping of fields (name, start_command, ...)"


# --- several documents in one file ------------------------------------------------------------------

def test_multi_document_file_loads_each(project: Path) -> None:
    write(project, "deployments.d/stack.yaml", """\
        name: web
        start_command: httpd -f
        ---
        # the worker
        name: worker
        start_command: ./work
        ---
        """)
    result = load(project)
    assert result.ok, errors(result)
    assert {n: (d.file, d.line) for n, d in result.desired.items()} == {
        "web": ("deployments.d/stack.yaml", 1),
        "worker": ("deployments.d/stack.yaml", 5),
    }


def test_multi_document_error_in_second_document_has_its_line(project: Path) -> None:
    write(project, "deployments.d/stack.yaml", """\
        name: web
        start_command: httpd -f
        ---
        name: worker
        port: 80
        """)
    result = load(project)
    assert errors(result) == ["deployments.d/stack.yaml:4: start_command: field required"]
    # A file that fails contributes nothing, its valid documents included.
    assert result.desired == {}


def test_multi_document_wrong_value_in_second_document(project: Path) -> None:
    write(project, "deployments.d/stack.yaml", """\
        name: web
        start_command: httpd -f
        ---
        name: worker
        start_command: ./work
        port: 99999
        """)
    assert only_error(load(project)) == \
        "deployments.d/stack.yaml:6: port: input should be less than or equal to 65535"


# --- across files ------------------------------------------------------------------------------------

def test_duplicate_names_across_files_name_both_and_load_neither(project: Path) -> None:
    write(project, "deployments.d/a.yaml", "name: web\nstart_command: one\n")
    write(project, "deployments.d/b.yaml", "# copy\nname: web\nstart_command: two\n")
    write(project, "deployments.d/c.yaml", "name: other\nstart_command: three\n")
    result = load(project)
    assert errors(result) == [
        "deployments.d/b.yaml:2: name: deployment 'web' is already declared in deployments.d/a.yaml:1: "
        "names must be unique, rename one"]
    assert sorted(result.desired) == ["other"]
    assert not result.ok


def test_broken_file_beside_a_good_one(project: Path) -> None:
    write(project, "deployments.d/good.yaml", "name: good\nstart_command: run\n")
    write(project, "deployments.d/broken.yaml", "name: broken\nport: 80\n")
    result = load(project)
    assert sorted(result.desired) == ["good"]
    assert errors(result) == ["deployments.d/broken.yaml:1: start_command: field required"]
    assert result.ok is False


def test_extensions_read_and_ignored(project: Path) -> None:
    write(project, "deployments.d/a.yaml", "name: a\nstart_command: run\n")
    write(project, "deployments.d/b.yml", "name: b\nstart_command: run\n")
    write(project, "deployments.d/c.json", '{"name": "c", "startCommand": "run"}\n')
    # None of these is a deployment file: their contents would fail if read.
    write(project, "deployments.d/notes.txt", "name: Not Valid\n")
    write(project, "deployments.d/README.md", "# deployments\n: : :\n")
    write(project, "deployments.d/.hidden.yaml", "name: hidden\n")
    write(project, "deployments.d/a.yaml.bak", "oops: [\n")
    write(project, "deployments.d/sub/d.yaml", "name: d\nstart_command: run\n")  # not recursive
    (project / "deployments.d" / "dir.yaml").mkdir()
    result = load(project)
    assert errors(result) == []
    assert sorted(result.desired) == ["a", "b", "c"]
    assert [p.name for p in result.files] == ["a.yaml", "b.yml", "c.json"]


def test_empty_directory_and_empty_file(project: Path) -> None:
    assert load(project).ok and load(project).desired == {}
    write(project, "deployments.d/empty.yaml", "# nothing yet\n")
    result = load(project)
    assert result.ok and result.desired == {}


def test_missing_deployments_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = load_directory(tmp_path / "deployments.d", workspace=tmp_path)
    assert errors(result) == [
        "deployments.d: deployments directory not found: create it or set deployments_dir in kalpana.yaml"]


# --- env_file and source ---------------------------------------------------------------------------

def test_env_file_missing(project: Path) -> None:
    write(project, "deployments.d/api.yaml", """\
        name: api
        start_command: run
        env_file: api.env
        """)
    assert only_error(load(project)) == \
        "deployments.d/api.yaml:3: env_file: deployments.d/api.env not found: create it or remove env_file"


def test_env_file_merged_under_env(project: Path) -> None:
    # env_file is relative to the deployment file, not to the current directory.
    write(project, "deployments.d/api.env", """\
        # shared settings
        FROM_FILE=file
        SHARED=file
        export QUOTED="a b"
        """)
    write(project, "deployments.d/api.yaml", """\
        name: api
        start_command: run
        env_file: api.env
        env:
          SHARED: spec
          ONLY_SPEC: spec
        """)
    result = load(project)
    assert result.ok, errors(result)
    d = result.desired["api"]
    assert d.env == {"FROM_FILE": "file", "SHARED": "spec", "QUOTED": "a b", "ONLY_SPEC": "spec"}
    assert d.spec.env == {"SHARED": "spec", "ONLY_SPEC": "spec"}


def test_env_file_content_change_changes_runtime_hash(project: Path) -> None:
    write(project, "deployments.d/api.yaml", "name: api\nstart_command: run\nenv_file: api.env\n")
    write(project, "deployments.d/api.env", "TOKEN=one\n")
    before = load(project).desired["api"]
    write(project, "deployments.d/api.env", "TOKEN=two\n")
    after = load(project).desired["api"]
    assert after.runtime_hash != before.runtime_hash
    assert after.build_hash == before.build_hash


def test_source_path_missing_shorthand(project: Path) -> None:
    (project / "ws").mkdir()
    write(project, "deployments.d/src.yaml", """\
        name: src
        start_command: run
        source: nope
        """)
    assert only_error(load(project, workspace=project / "ws")) == \
        "deployments.d/src.yaml:3: source.path: directory ws/nope not found (paths are relative to the workspace ws)"


def test_source_path_missing_points_at_the_path_key(project: Path) -> None:
    (project / "ws").mkdir()
    write(project, "deployments.d/src.yaml", """\
        name: src
        start_command: run
        source:
          path: nope
        """)
    assert only_error(load(project, workspace=project / "ws")) == \
        "deployments.d/src.yaml:4: source.path: directory ws/nope not found (paths are relative to the workspace ws)"


def test_source_path_found_relative_to_workspace(project: Path) -> None:
    (project / "ws" / "apps" / "web").mkdir(parents=True)
    write(project, "deployments.d/web.yaml", "name: web\nstart_command: run\nsource: {path: apps/web}\n")
    result = load(project, workspace=project / "ws")
    assert result.ok, errors(result)
    assert result.desired["web"].spec.source.path == "apps/web"


def test_default_image_fills_in_and_spec_image_wins(project: Path) -> None:
    write(project, "deployments.d/a.yaml", "name: a\nstart_command: run\n")
    write(project, "deployments.d/b.yaml", "name: b\nstart_command: run\nimage: busybox:1.36\n")
    result = load_directory(project / "deployments.d", workspace=project, default_image="python:3.12-slim")
    assert result.desired["a"].image == "python:3.12-slim"
    assert result.desired["b"].image == "busybox:1.36"


def test_load_file_reports_unreadable_file(project: Path) -> None:
    path = project / "deployments.d" / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    loaded, found = load_file(path, workspace=project)
    assert loaded == []
    assert len(found) == 1 and str(found[0]).startswith("deployments.d/bin.yaml: cannot read file")


# --- cross-field rules -----------------------------------------------------------------------------

def test_dockerfile_without_source_names_the_dockerfile_line(project: Path) -> None:
    write(project, "deployments.d/df.yaml", """\
        name: df
        port: 80
        dockerfile: Dockerfile
        """)
    error = load(project).errors[0]
    assert (error.line, error.field) == (3, "dockerfile"), str(error)
    assert "needs a source" in error.message


def test_exposed_port_without_port_names_the_exposed_port_line(project: Path) -> None:
    write(project, "deployments.d/ex.yaml", """\
        name: ex
        start_command: run
        exposedPort: 8080
        """)
    error = load(project).errors[0]
    assert (error.line, error.field) == (3, "exposed_port"), str(error)
    assert "needs port" in error.message


# --- `kalpana validate` --------------------------------------------------------------------------------

def run_validate(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALPANA_", "TRAEFIK_"))}
    env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200",
                # validate must not need Docker: point the client at an address where nothing answers.
                "DOCKER_HOST": "tcp://127.0.0.1:9",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))})
    return subprocess.run([sys.executable, "-m", "gitops", "-c", "kalpana.yaml", "validate", *extra],
                          cwd=root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


@pytest.fixture
def cli_project(project: Path) -> Path:
    write(project, "kalpana.yaml", "deployments_dir: deployments.d\nworkspace: .\nstate_dir: state\n")
    write(project, "deployments.d/good.yaml", "name: good\nstart_command: run\n")
    return project


def test_validate_exit_0_on_good_files(cli_project: Path) -> None:
    result = run_validate(cli_project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 deployment(s)" in result.stdout


def test_validate_exit_1_with_the_error_line_on_stdout(cli_project: Path) -> None:
    write(cli_project, "deployments.d/bad.yaml", "name: bad\nport: 80\n")
    write(cli_project, "deployments.d/typo.yaml", "name: typo\nstart_command: run\nstart_comand: run\n")
    result = run_validate(cli_project)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "deployments.d/bad.yaml:1: start_command: field required" in lines
    assert "deployments.d/typo.yaml:3: start_comand: unknown field (did you mean 'start_command'?)" in lines
    assert "2 error(s); 1 deployment(s) valid" in lines


def test_validate_json(cli_project: Path) -> None:
    write(cli_project, "deployments.d/bad.yaml", "name: bad\nport: 80\n")
    result = run_validate(cli_project, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["deployments"] == ["good"]
    assert data["errors"] == [{"file": "deployments.d/bad.yaml", "line": 1, "field": "start_command",
                               "message": "field required",
                               "text": "deployments.d/bad.yaml:1: start_command: field required"}]
