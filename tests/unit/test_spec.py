"""The deployment model: the guide's examples, aliases, field rules, and hash stability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gitops.loader import load_directory
from gitops.spec import (
    BUILD_FIELDS,
    RUNTIME_FIELDS,
    Deployment,
    Desired,
    HealthCheck,
    HealthKind,
    SourceSpec,
    field_hashes,
    parse_memory,
    spellings,
)

# The four JSON request bodies of GUIDE.md's "Examples" section, verbatim.
GUIDE_EXAMPLES = {
    "node-api": """\
{
  "name": "node-api",
  "buildCommand": "npm install && npm run build",
  "startCommand": "npm start",
  "port": 3000,
  "subdomain": "api"
}
""",
    "nextjs-app": """\
{
  "name": "nextjs-app",
  "buildCommand": "npm install && npm run build",
  "startCommand": "npm start",
  "port": 3000,
  "subdomain": "app"
}
""",
    "flask-api": """\
{
  "name": "flask-api",
  "buildCommand": "pip install -r requirements.txt",
  "startCommand": "python app.py",
  "port": 5000,
  "subdomain": "flask"
}
""",
    "static-site": """\
{
  "name": "static-site",
  "buildCommand": "npm run build",
  "startCommand": "npx serve -s build -l 3000",
  "port": 3000,
  "subdomain": "site"
}
""",
}

# The guide's "Create Deployment" API body: the camelCase fields the examples don't use.
GUIDE_CREATE_BODY = """\
{
  "name": "my-app",
  "description": "My application",
  "buildCommand": "npm run build",
  "startCommand": "npm start",
  "workingDir": "/workspace",
  "port": 3000,
  "subdomain": "my-app",
  "autoRebuild": true
}
"""

# Fields that change neither the image nor the container: they must stay out of every hash.
NOT_HASHED = {"name", "description", "env_file", "auto_rebuild", "webhook_secret", "healthcheck", "enabled"}


def _check_guide_fields(spec: Deployment, body: dict) -> None:
    assert spec.name == body["name"]
    assert spec.build_command == body["buildCommand"]
    assert spec.start_command == body["startCommand"]
    assert spec.port == body["port"]
    assert spec.subdomain == body["subdomain"]
    assert spec.working_dir == "/workspace"
    assert spec.env == {}
    assert spec.enabled is True


@pytest.mark.parametrize("name", sorted(GUIDE_EXAMPLES))
def test_guide_example_validates_as_model(name: str) -> None:
    body = json.loads(GUIDE_EXAMPLES[name])
    _check_guide_fields(Deployment.model_validate(body), body)


@pytest.mark.parametrize("name", sorted(GUIDE_EXAMPLES))
def test_guide_example_loads_as_json_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deployments.d").mkdir()
    (tmp_path / "deployments.d" / f"{name}.json").write_text(GUIDE_EXAMPLES[name])
    result = load_directory(tmp_path / "deployments.d", workspace=tmp_path)
    assert [str(e) for e in result.errors] == []
    assert list(result.desired) == [name]
    desired = result.desired[name]
    assert desired.file == f"deployments.d/{name}.json"
    assert desired.line == 2  # the "name" key's line inside the JSON object
    _check_guide_fields(desired.spec, json.loads(GUIDE_EXAMPLES[name]))


def test_all_guide_examples_load_together(tmp_path: Path) -> None:
    directory = tmp_path / "deployments.d"
    directory.mkdir()
    for name, text in GUIDE_EXAMPLES.items():
        (directory / f"{name}.json").write_text(text)
    result = load_directory(directory, workspace=tmp_path)
    assert result.ok, [str(e) for e in result.errors]
    assert sorted(result.desired) == sorted(GUIDE_EXAMPLES)


def test_guide_create_body_validates() -> None:
    spec = Deployment.model_validate(json.loads(GUIDE_CREATE_BODY))
    assert spec.description == "My application"
    assert spec.working_dir == "/workspace"
    assert spec.auto_rebuild is True
    assert spec.start_command == "npm start"


# --- aliases -------------------------------------------------------------------------------------

BASE = {"name": "app", "start_command": "run", "port": 8000}


@pytest.mark.parametrize(("camel", "field", "value", "expected"), [
    ("buildCommand", "build_command", "make", "make"),
    ("startCommand", "start_command", "serve", "serve"),
    ("workingDir", "working_dir", "/srv/app", "/srv/app"),
    ("autoRebuild", "auto_rebuild", True, True),
    ("envVars", "env", {"A": "1"}, {"A": "1"}),
    ("exposedPort", "exposed_port", 8080, 8080),
    ("webhookSecret", "webhook_secret", "s3cret", "s3cret"),
])
def test_camel_case_alias_maps_to_snake_case_field(camel: str, field: str, value, expected) -> None:
    data = {k: v for k, v in BASE.items() if k != field}
    from_camel = Deployment.model_validate({**data, camel: value})
    from_snake = Deployment.model_validate({**data, field: value})
    assert getattr(from_camel, field) == expected
    assert from_camel == from_snake


@pytest.mark.parametrize("data", [
    {**BASE, "startCommand": "other"},
    {**BASE, "env": {"A": "1"}, "envVars": "B=2"},
    {**BASE, "build_command": "make", "buildCommand": "make all"},
])
def test_alias_and_field_name_together_is_an_error(data: dict) -> None:
    # Otherwise one of the two would be silently ignored.
    with pytest.raises(ValidationError):
        Deployment.model_validate(data)


def test_spellings_name_every_accepted_key_of_a_field() -> None:
    names = spellings(Deployment)
    assert {k for k, v in names.items() if v == "env"} == {"env", "envVars", "env_vars"}
    assert {k for k, v in names.items() if v == "start_command"} == {"start_command", "startCommand"}
    assert names["name"] == "name"
    assert set(names.values()) == set(Deployment.model_fields)
    assert spellings(SourceSpec)["tokenEnv"] == "token_env"
    assert spellings(HealthCheck)["timeout"] == "timeout"


# --- env ---------------------------------------------------------------------------------------------

def test_env_mapping_values_become_strings() -> None:
    spec = Deployment.model_validate({**BASE, "env": {"PORT": 3000, "DEBUG": True, "OFF": False, "EMPTY": None}})
    assert spec.env == {"PORT": "3000", "DEBUG": "true", "OFF": "false", "EMPTY": ""}


def test_env_vars_as_key_value_lines() -> None:
    text = "\n".join([
        "# database",
        "",
        "DATABASE_URL=postgres://u:p@db/app?sslmode=require",
        "export NODE_ENV=production",
        'GREETING="hello world"',
        "SINGLE='quoted'",
        "  SPACED = padded  ",
        "EMPTY=",
    ])
    spec = Deployment.model_validate({**BASE, "envVars": text})
    assert spec.env == {
        "DATABASE_URL": "postgres://u:p@db/app?sslmode=require",
        "NODE_ENV": "production",
        "GREETING": "hello world",
        "SINGLE": "quoted",
        "SPACED": "padded",
        "EMPTY": "",
    }


def test_env_vars_as_json_object_string() -> None:
    spec = Deployment.model_validate({**BASE, "envVars": '{"A": "1", "B": 2, "C": true}'})
    assert spec.env == {"A": "1", "B": "2", "C": "true"}


@pytest.mark.parametrize("value", [
    "NOT A PAIR",
    "1BAD=x",
    {"BAD-KEY": "x"},
    "[1, 2]",
    "{not json",
])
def test_env_vars_invalid(value) -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({**BASE, "envVars": value})


# --- name ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "app-1", "0app", "a" * 63, "a" + "-b" * 31])
def test_name_dns_label_accepted(name: str) -> None:
    assert Deployment.model_validate({**BASE, "name": name}).name == name


@pytest.mark.parametrize("name", ["MyApp", "my_app", "a" * 64, "-app", "app-", "my.app", "", "app 1"])
def test_name_dns_label_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Deployment.model_validate({**BASE, "name": name})
    assert [e["loc"] for e in info.value.errors()] == [("name",)]


def test_name_required() -> None:
    with pytest.raises(ValidationError) as info:
        Deployment.model_validate({"start_command": "run"})
    assert info.value.errors()[0]["loc"] == ("name",)
    assert info.value.errors()[0]["type"] == "missing"


# --- start_command / dockerfile / source -------------------------------------------------------------

def test_start_command_required_without_dockerfile() -> None:
    with pytest.raises(ValidationError, match="field required"):
        Deployment.model_validate({"name": "app"})


def test_dockerfile_makes_start_command_optional() -> None:
    spec = Deployment.model_validate({"name": "app", "dockerfile": "Dockerfile", "source": {"path": "app"}})
    assert spec.start_command is None
    assert spec.source.path == "app"


def test_dockerfile_requires_source() -> None:
    with pytest.raises(ValidationError, match="needs a source"):
        Deployment.model_validate({"name": "app", "dockerfile": "Dockerfile"})


@pytest.mark.parametrize("dockerfile", ["/etc/passwd", "../Dockerfile", "../../etc/passwd", "docker/../../x", ".."])
def test_dockerfile_must_stay_inside_the_source(dockerfile: str) -> None:
    with pytest.raises(ValidationError, match="must be a relative path inside the source"):
        Deployment.model_validate({"name": "app", "source": "app", "dockerfile": dockerfile})


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/Dockerfile.prod", "./Dockerfile", "a/../Dockerfile"])
def test_dockerfile_inside_the_source_is_accepted(dockerfile: str) -> None:
    assert Deployment.model_validate({"name": "app", "source": "app", "dockerfile": dockerfile}).dockerfile == dockerfile


def test_source_shorthand_is_a_path() -> None:
    assert Deployment.model_validate({**BASE, "source": "apps/web"}).source.path == "apps/web"


@pytest.mark.parametrize("source", [{}, {"path": "a", "repo": "https://x/y.git"}, {"path": "a", "branch": "main"}])
def test_source_needs_exactly_one_kind(source: dict) -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({**BASE, "source": source})


def test_exposed_port_needs_port() -> None:
    with pytest.raises(ValidationError, match="needs port"):
        Deployment.model_validate({"name": "app", "start_command": "run", "exposed_port": 8080})


@pytest.mark.parametrize("port", [0, 65536, -1, "http"])
def test_port_range(port) -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({**BASE, "port": port})


# --- healthcheck -----------------------------------------------------------------------------------

def test_healthcheck_default_is_tcp() -> None:
    check = Deployment.model_validate(BASE).healthcheck
    assert (check.type, check.path, check.timeout) == (HealthKind.TCP, None, 30.0)


@pytest.mark.parametrize(("value", "kind", "path"), [
    ("/health", HealthKind.HTTP, "/health"),
    ("tcp", HealthKind.TCP, None),
    ("none", HealthKind.NONE, None),
    ({"path": "/ready", "timeout": 5}, HealthKind.HTTP, "/ready"),
    ({"type": "tcp", "interval": 0.5}, HealthKind.TCP, None),
])
def test_healthcheck_forms(value, kind: HealthKind, path: str | None) -> None:
    check = Deployment.model_validate({**BASE, "healthcheck": value}).healthcheck
    assert (check.type, check.path) == (kind, path)


@pytest.mark.parametrize("value", ["bogus", {"type": "http"}, {"path": "health"}, {"timeout": 0}, {"interval": -1}])
def test_healthcheck_invalid(value) -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({**BASE, "healthcheck": value})


# --- resources -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("256m", 256 * 1024**2),
    ("1g", 1024**3),
    ("1GiB", 1024**3),
    ("512MB", 512 * 1024**2),
    ("0.5g", 512 * 1024**2),
    (64 * 1024**2, 64 * 1024**2),
])
def test_resources_memory_parsing(value, expected: int) -> None:
    resources = Deployment.model_validate({**BASE, "resources": {"memory": value}}).resources
    assert resources.memory_bytes == expected
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["1k", "5m", 1024, "lots", "12x"])
def test_resources_memory_rejected(value) -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({**BASE, "resources": {"memory": value}})


def test_resources_six_megabytes_is_the_floor() -> None:
    assert Deployment.model_validate({**BASE, "resources": {"memory": "6m"}}).resources.memory_bytes == 6 * 1024**2


def test_resources_cpus_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({**BASE, "resources": {"cpus": 0}})


def test_resources_default_is_unlimited() -> None:
    resources = Deployment.model_validate(BASE).resources
    assert (resources.memory_bytes, resources.cpus) == (None, None)


# --- working_dir / unknown keys ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["app", "./app", "workspace/"])
def test_working_dir_must_be_absolute(value: str) -> None:
    with pytest.raises(ValidationError, match="absolute"):
        Deployment.model_validate({**BASE, "working_dir": value})


@pytest.mark.parametrize(("value", "expected"), [("/srv/app/", "/srv/app"), ("/", "/")])
def test_working_dir_trailing_slash_normalised(value: str, expected: str) -> None:
    assert Deployment.model_validate({**BASE, "working_dir": value}).working_dir == expected


@pytest.mark.parametrize("data", [
    {**BASE, "start_comand": "x"},
    {**BASE, "ports": [80]},
    {**BASE, "healthcheck": {"path": "/h", "timeot": 3}},
    {**BASE, "resources": {"cpu": 1}},
    {**BASE, "source": {"path": "a", "dir": "b"}},
])
def test_unknown_keys_rejected(data: dict) -> None:
    with pytest.raises(ValidationError) as info:
        Deployment.model_validate(data)
    assert {e["type"] for e in info.value.errors()} == {"extra_forbidden"}


# --- hashes ----------------------------------------------------------------------------------------

FULL = {
    "name": "flask-api",
    "image": "python:3.12-slim",
    "source": {"path": "apps/flask"},
    "build_command": "pip install -r requirements.txt",
    "start_command": "python app.py",
    "working_dir": "/workspace",
    "port": 5000,
    "subdomain": "flask",
    "env": {"FLASK_ENV": "production"},
    "resources": {"memory": "256m", "cpus": 0.5},
}


def desired(data: dict, *, default_image: str | None = None, env: dict[str, str] | None = None) -> Desired:
    spec = Deployment.model_validate(data)
    return Desired(spec, "deployments.d/x.yaml", 1, image=spec.image or default_image,
                   env=dict(spec.env) if env is None else env)


def test_hash_fields_partition_the_model() -> None:
    # A new field must be classified: a build input, a runtime input, or neither (and then say why).
    assert set(BUILD_FIELDS).isdisjoint(RUNTIME_FIELDS)
    assert set(BUILD_FIELDS) | set(RUNTIME_FIELDS) | NOT_HASHED == set(Deployment.model_fields)
    assert not NOT_HASHED & (set(BUILD_FIELDS) | set(RUNTIME_FIELDS))


def test_field_hashes_equal_across_aliases_and_snake_case() -> None:
    camel = {"name": "flask-api", "image": "python:3.12-slim", "source": "apps/flask",
             "buildCommand": "pip install -r requirements.txt", "startCommand": "python app.py",
             "workingDir": "/workspace/", "port": 5000, "subdomain": "flask",
             "envVars": "FLASK_ENV=production", "resources": {"memory": "256m", "cpus": 0.5}}
    a, b = desired(FULL), desired(camel)
    assert a.hashes == b.hashes
    assert (a.build_hash, a.runtime_hash) == (b.build_hash, b.runtime_hash)


def test_env_order_does_not_change_hashes() -> None:
    a = desired({**FULL, "env": {"A": "1", "B": "2"}})
    b = desired({**FULL, "env": {"B": "2", "A": "1"}})
    assert a.hashes == b.hashes


def test_field_hashes_cover_exactly_build_and_runtime_fields() -> None:
    spec = Deployment.model_validate(FULL)
    assert set(field_hashes(spec, image=spec.image, env=spec.env)) == set(BUILD_FIELDS + RUNTIME_FIELDS)


@pytest.mark.parametrize("change", [
    {"description": "now with a description"},
    {"auto_rebuild": True},
    {"webhook_secret": "s3cret"},
    {"healthcheck": "/health"},
    {"healthcheck": {"timeout": 120}},
    {"enabled": False},
], ids=lambda c: next(iter(c)))
def test_non_result_fields_change_no_hash(change: dict) -> None:
    before, after = desired(FULL), desired({**FULL, **change})
    assert after.hashes == before.hashes
    assert after.build_hash == before.build_hash
    assert after.runtime_hash == before.runtime_hash


@pytest.mark.parametrize(("field", "change"), [
    ("image", {"image": "python:3.13-slim"}),
    ("dockerfile", {"dockerfile": "Dockerfile"}),
    ("source", {"source": {"path": "apps/flask2"}}),
    ("build_command", {"build_command": "pip install ."}),
    ("working_dir", {"working_dir": "/app"}),
])
def test_build_inputs_change_build_hash(field: str, change: dict) -> None:
    before, after = desired(FULL), desired({**FULL, **change})
    assert after.build_hash != before.build_hash
    changed = {f for f in before.hashes if before.hashes[f] != after.hashes[f]}
    assert changed == {field}


@pytest.mark.parametrize(("field", "change"), [
    ("start_command", {"start_command": "gunicorn app:app"}),
    ("env", {"env": {"FLASK_ENV": "development"}}),
    ("port", {"port": 5001}),
    ("exposed_port", {"exposed_port": 18080}),
    ("subdomain", {"subdomain": "flask2"}),
    ("resources", {"resources": {"memory": "512m", "cpus": 0.5}}),
])
def test_runtime_inputs_change_runtime_hash_only(field: str, change: dict) -> None:
    before, after = desired(FULL), desired({**FULL, **change})
    assert after.runtime_hash != before.runtime_hash
    assert after.build_hash == before.build_hash
    changed = {f for f in before.hashes if before.hashes[f] != after.hashes[f]}
    assert changed == {field}


def test_effective_image_not_raw_field_is_hashed() -> None:
    no_image = {k: v for k, v in FULL.items() if k != "image"}
    # Same effective base image -> same hash, whether spelled in the file or defaulted from kalpana.yaml.
    assert desired(no_image, default_image="python:3.12-slim").hashes == desired(FULL).hashes
    # Changing the default image rebuilds deployments that rely on it.
    assert (desired(no_image, default_image="python:3.13-slim").build_hash
            != desired(no_image, default_image="python:3.12-slim").build_hash)


def test_merged_env_not_raw_field_is_hashed() -> None:
    # env_file content arrives through Desired.env: a change there must redeploy.
    before = desired(FULL, env={"FLASK_ENV": "production", "FROM_FILE": "1"})
    after = desired(FULL, env={"FLASK_ENV": "production", "FROM_FILE": "2"})
    assert after.runtime_hash != before.runtime_hash
    assert after.build_hash == before.build_hash


def test_source_credentials_are_not_hashed() -> None:
    # How a repository is fetched doesn't change what is built.
    repo = {"repo": "https://github.com/org/app.git", "branch": "main"}
    plain = desired({**FULL, "source": repo})
    assert desired({**FULL, "source": {**repo, "token_env": "GH_TOKEN"}}).hashes == plain.hashes
    assert desired({**FULL, "source": {**repo, "ssh_key": "/keys/id"}}).hashes == plain.hashes
    assert desired({**FULL, "source": {**repo, "branch": "release"}}).build_hash != plain.build_hash
    assert desired({**FULL, "source": {**repo, "subdir": "web"}}).build_hash != plain.build_hash


# Changing how hashes are computed changes the labels of every running container, and so redeploys
# every user's apps on upgrade. If one of these fails on purpose, plan for that; don't just update it.

def test_hash_golden_values_without_source() -> None:
    d = desired({k: v for k, v in FULL.items() if k != "source"})
    assert d.build_hash == "0026f71616fe"
    assert d.runtime_hash == "25fe7b0dba81"
    assert d.hashes["image"] == "7170b4ba3773"
    assert d.hashes["env"] == "328c3c8ec8c7"
    assert d.hashes["resources"] == "42f4f892913e"


def test_hash_golden_values_with_source() -> None:
    d = desired(FULL)
    assert d.hashes["source"] == "b215dbba950a"
    assert d.build_hash == "ad181b3e3957"
    assert d.runtime_hash == "25fe7b0dba81"
