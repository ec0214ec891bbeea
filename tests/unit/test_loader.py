"""Deployment files -> specs, and every error located as ``<file>:<line>: <field>: <message>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from gitops import loader
from gitops.loader import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, LoadResult, load_directory, load_file

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


@pytest.mark.parametrize(("first", "second", "field"), [
    ("start_command: a", "startCommand: b", "start_command"),
    ("buildCommand: make", "build_command: make all", "build_command"),
    ("env: {A: '1'}", "envVars: B=2", "env"),
    ("envVars: B=2", "env_vars: {C: '3'}", "env"),
    ("workingDir: /srv", "working_dir: /app", "working_dir"),
    ("autoRebuild: true", "auto_rebuild: false", "auto_rebuild"),
    ("exposed_port: 8080", "exposedPort: 8081", "exposed_port"),
    ("webhookSecret: x", "webhook_secret: y", "webhook_secret"),
    ("envFile: a.env", "env_file: b.env", "env_file"),
])
def test_a_field_under_two_of_its_names_is_one_field_given_twice(project: Path, first: str, second: str,
                                                                 field: str) -> None:
    write(project, "deployments.d/two.yaml", f"name: two\nstart_command: run\nport: 80\n{first}\n{second}\n"
          .replace("start_command: run\n", "", 1 if field == "start_command" else 0))
    error = only_error(load(project))
    first_key, second_key = first.split(":")[0], second.split(":")[0]
    line = 4 if field == "start_command" else 5
    assert error == (f"deployments.d/two.yaml:{line}: {field}: given twice, as {first_key!r} (line {line - 1}) and "
                     f"{second_key!r} (line {line}): both names are the same field, keep one")


def test_a_nested_field_under_two_names_is_given_twice(project: Path) -> None:
    write(project, "deployments.d/two.yaml", """\
        name: two
        start_command: run
        source:
          repo: https://example.com/app.git
          token_env: A
          tokenEnv: B
        """)
    assert only_error(load(project)) == ("deployments.d/two.yaml:6: source.token_env: given twice, as 'token_env' "
                                         "(line 5) and 'tokenEnv' (line 6): both names are the same field, keep one")


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


def test_yaml_error_gives_the_parsers_problem_not_the_files_lines(project: Path) -> None:
    write(project, "deployments.d/syn.yaml", """\
        name: syn
        start_command: run
          password: hunter2-secret
        """)
    error = only_error(load(project))
    assert error == ("deployments.d/syn.yaml:3: not valid YAML: mapping values are not allowed in this context: "
                     "fix that line")


def test_yaml_error_without_libyaml_quotes_no_content() -> None:
    # PyYAML's pure-Python parser puts the offending lines (a "snippet") in str(error): none may show.
    text = "name: syn\nstart_command: run\n  password: hunter2-secret\n"
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.load(text, Loader=yaml.SafeLoader)
    assert "hunter2" in str(caught.value)
    line, problem = loader._yaml_problem(caught.value, text)
    assert (line, problem) == (3, "mapping values are not allowed here")


def test_control_character_is_located_without_quoting_it(project: Path) -> None:
    (project / "deployments.d" / "ctl.yaml").write_text("name: ctl\nstart_command: run\ntoken: sec\x00ret\n")
    assert only_error(load(project)) == \
        "deployments.d/ctl.yaml:3: not valid YAML: character #x0000 is not allowed in YAML: fix that line"


@pytest.mark.parametrize(("value", "kind"), [("2001-13-01", "timestamp"), ("!!float hunter2", "float"),
                                             ("!!int 0xhunter2", "int")])
def test_value_that_python_cannot_read_is_a_located_yaml_error(project: Path, value: str, kind: str) -> None:
    # These used to escape as a raw ValueError (a crash) quoting the value.
    write(project, "deployments.d/val.yaml", f"name: val\nstart_command: run\nwhen: {value}\n")
    assert only_error(load(project)) == \
        f"deployments.d/val.yaml:3: not valid YAML: the value cannot be read as a {kind}: fix that line"


def test_a_key_that_is_a_list_is_refused_without_quoting_it(project: Path) -> None:
    write(project, "deployments.d/key.yaml", "name: key\nstart_command: run\n? [hunter2, x]\n: 1\n")
    assert only_error(load(project)) == "deployments.d/key.yaml:3: a key must be a name, not a list or a mapping"


# --- size, depth and alias bombs (issue 8, point 6) ---------------------------------------------------------

def alias_bomb(levels: int) -> str:
    """The "billion laughs": each level is ten aliases of the one before (10**levels strings)."""
    lines = ["name: bomb", "start_command: run", "a: &a [" + ",".join(['"x"'] * 10) + "]"]
    names = "abcdefghijklm"
    for level in range(1, levels):
        lines.append(f"{names[level]}: &{names[level]} [" + ",".join([f"*{names[level - 1]}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [5, 7, 9])
def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_budget(project: Path, levels: int) -> None:
    (project / "deployments.d" / "bomb.yaml").write_text(alias_bomb(levels))
    started = time.monotonic()
    error = only_error(load(project))
    # Measured at about 1 ms; before the guard 7 levels took over 20 s and 1.8 GB. Generous, not a benchmark.
    assert time.monotonic() - started < 5
    assert error == (f"deployments.d/bomb.yaml:6: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes "
                     "(an alias bomb): a deployment needs far fewer, write the values out or use fewer aliases")


def test_alias_budget_counts_the_whole_file_not_each_document(project: Path) -> None:
    # Each document stays under the budget; together they do not.
    document = "name: d{n}\nstart_command: run\nx: &x [" + ",".join(['"y"'] * 999) + "]\nz: [*x, *x, *x, *x]\n"
    (project / "deployments.d" / "many.yaml").write_text("---\n".join(document.format(n=n) for n in range(3)))
    assert "YAML aliases expand to more than" in only_error(load(project))


def test_recursive_alias_is_refused(project: Path) -> None:
    write(project, "deployments.d/loop.yaml", "name: loop\nstart_command: run\nenv: &e {A: *e}\n")
    assert only_error(load(project)) == ("deployments.d/loop.yaml:3: alias *e is used inside the node it names: "
                                         "recursive YAML cannot be a deployment, write the value out")


def test_deep_nesting_is_refused_where_it_gets_too_deep(project: Path) -> None:
    # 200,000 levels crashed the process (libyaml's composer recursion); far fewer are refused.
    depth = 200_000
    (project / "deployments.d" / "deep.yaml").write_text(
        "name: deep\nstart_command: run\nx: " + "[" * depth + "]" * depth + "\n")
    assert only_error(load(project)) == \
        f"deployments.d/deep.yaml:3: nested more than {MAX_DEPTH} levels deep: a deployment needs a few, flatten it"


def test_depth_counts_what_aliases_stand_for(project: Path) -> None:
    # Each half is shallow enough; the alias puts one inside the other.
    half = MAX_DEPTH // 2 + 1
    (project / "deployments.d" / "deep.yaml").write_text(
        "name: deep\nstart_command: run\n"
        f"a: &a {'[' * half}x{']' * half}\n"
        f"b: {'[' * half}*a{']' * half}\n")
    assert only_error(load(project)) == (f"deployments.d/deep.yaml:4: nested more than {MAX_DEPTH} levels deep "
                                         "once aliases are written out: a deployment needs a few, flatten it")


def test_a_file_over_the_size_cap_is_refused_unparsed(project: Path) -> None:
    path = project / "deployments.d" / "big.yaml"
    path.write_text("name: big\nstart_command: run\n# " + "x" * MAX_FILE_BYTES + "\n")
    size = path.stat().st_size
    assert only_error(load(project)) == (
        f"deployments.d/big.yaml: file is {size} bytes, over the 1048576 bytes (1 MiB) a deployment file may have: "
        "split it into several files")


def test_legitimate_anchors_aliases_and_merge_keys_still_load(project: Path) -> None:
    write(project, "deployments.d/stack.yaml", """\
        name: web
        start_command: &cmd httpd -f
        build_command: *cmd
        <<: {port: 8080, working_dir: /srv}
        env:
          <<: &env {LOG: debug, REGION: eu}
          ROLE: web
        healthcheck: &hc {path: /health, timeout: 5}
        resources:
          <<: &res {memory: 256m}
          cpus: 0.5
        ---
        name: worker
        start_command: &work ./work
        build_command: *work
        env: {<<: [{LOG: info}, {REGION: us}], ROLE: worker}
        """)
    result = load(project)
    assert result.ok, errors(result)
    web = result.desired["web"].spec
    assert (web.start_command, web.build_command, web.port, web.working_dir) == ("httpd -f", "httpd -f", 8080, "/srv")
    assert web.env == {"LOG": "debug", "REGION": "eu", "ROLE": "web"}
    assert web.healthcheck.path == "/health"
    assert (web.resources.memory, web.resources.cpus) == ("256m", 0.5)
    assert result.desired["worker"].env == {"LOG": "info", "REGION": "us", "ROLE": "worker"}


def test_a_merged_key_under_another_spelling_is_given_twice(project: Path) -> None:
    write(project, "deployments.d/merge.yaml", "name: merge\n<<: {startCommand: a}\nstart_command: b\n")
    assert only_error(load(project)) == (
        "deployments.d/merge.yaml:3: start_command: given twice, as 'startCommand' (line 2) and 'start_command' "
        "(line 3): both names are the same field, keep one")


def test_an_undefined_alias_is_a_located_yaml_error(project: Path) -> None:
    write(project, "deployments.d/alias.yaml", "name: alias\nstart_command: *nope\n")
    assert only_error(load(project)) == \
        "deployments.d/alias.yaml:2: not valid YAML: found undefined alias 'nope': fix that line"


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


def test_one_host_port_in_two_files_names_both_and_loads_neither(project: Path) -> None:
    write(project, "deployments.d/a.yaml", "name: a\nstart_command: run\nport: 80\nexposed_port: 8080\n")
    write(project, "deployments.d/b.yaml", "# b\nname: b\nstart_command: run\nport: 80\nexposedPort: 8080\n")
    write(project, "deployments.d/c.yaml", "name: c\nstart_command: run\nport: 80\nexposed_port: 8081\n")
    result = load(project)
    assert errors(result) == [
        "deployments.d/b.yaml:5: exposed_port: host port 8080 is also declared by deployments.d/a.yaml:4 "
        "(deployment 'a'): one port serves one deployment, give each its own exposed_port "
        "(or remove it from one and a free port is assigned)"]
    assert sorted(result.desired) == ["c"]


def test_one_host_port_twice_in_one_file_names_both_lines(project: Path) -> None:
    write(project, "deployments.d/stack.yaml", """\
        name: a
        start_command: run
        port: 80
        exposed_port: 9000
        ---
        name: b
        start_command: run
        port: 80
        exposed_port: 9000
        """)
    error = only_error(load(project))
    assert error.startswith("deployments.d/stack.yaml:9: exposed_port: host port 9000 is also declared by "
                            "deployments.d/stack.yaml:4 (deployment 'a')")


def test_a_disabled_deployment_does_not_hold_its_host_port(project: Path) -> None:
    write(project, "deployments.d/a.yaml", "name: a\nstart_command: run\nport: 80\nexposed_port: 8080\nenabled: false\n")
    write(project, "deployments.d/b.yaml", "name: b\nstart_command: run\nport: 80\nexposed_port: 8080\n")
    result = load(project)
    assert result.ok, errors(result)


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
