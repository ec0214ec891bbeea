"""`kalpana schema` accepts exactly what the loader accepts (issue 9.1), checked with a real JSON Schema validator.

Three parts: the example files of the repository, its README and the product guide validate; a
table of documents where `the loader accepts` and `the schema validates` must agree, both ways;
and the few documents where they cannot agree, each with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_plan import BASE_SPEC, CASES as PLAN_CASES

from gitops.loader import load_file
from gitops.schema import schema

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def cli_schema() -> dict:
    """What `kalpana schema` prints, run once as a user would (a real process, this worktree's code)."""
    done = subprocess.run([sys.executable, "-m", "gitops", "schema"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def validator(cli_schema: dict) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(cli_schema)
    return jsonschema.Draft202012Validator(cli_schema)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where the table's host paths exist: apps/web, and deployments.d/.env for env_file."""
    root = tmp_path_factory.mktemp("workspace")
    (root / "apps" / "web").mkdir(parents=True)
    (root / "deployments.d").mkdir()
    (root / "deployments.d" / ".env").write_text("FROM_FILE=1\n")
    return root


def schema_problems(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in validator.iter_errors(document))


def loader_problems(workspace: Path, name: str, text: str) -> list[str]:
    """Load ``text`` as the file deployments.d/<name>.yaml with the real loader."""
    path = workspace / "deployments.d" / f"{re.sub(r'[^a-z0-9-]', '-', name)}.yaml"
    path.write_text(text)
    _, errors = load_file(path, workspace=workspace)
    return [str(e) for e in errors]


def test_the_cli_prints_the_schema_function(cli_schema: dict) -> None:
    assert cli_schema == schema()
    assert cli_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert cli_schema["title"] == "Kalpana deployment"
    assert cli_schema["additionalProperties"] is False


def test_the_help_says_it_describes_one_document() -> None:
    done = subprocess.run([sys.executable, "-m", "gitops", "schema", "--help"], capture_output=True, text=True, check=True)
    assert "one deployment document" in done.stdout
    assert "several documents" in done.stdout


# --- every example the user is shown ------------------------------------------------------------

def _readme_documents() -> list[tuple[str, str]]:
    """The README's fenced YAML/JSON blocks and heredocs (the Quickstart's) that hold a deployment."""
    text = (REPO_ROOT / "README.md").read_text()
    found = []
    for number, (lang, body) in enumerate(re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)):
        candidates = [body] if lang in ("yaml", "yml", "json") else []
        candidates += [doc for _, doc in re.findall(r"<<-?'?(\w+)'?\n(.*?)^\1$", body, re.M | re.S)]
        for candidate in candidates:
            try:
                data = yaml.safe_load(candidate)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and "name" in data:
                found.append((f"README block {number}: {data['name']}", candidate))
    return found


def _examples() -> list[tuple[str, str, Path]]:
    """(id, text, workspace) of every deployment example: the repository's, the README's and the guide's."""
    examples = []
    for path in sorted((REPO_ROOT / "deployments.d").iterdir()):
        examples.append((f"deployments.d/{path.name}", path.read_text(), REPO_ROOT))
    examples += [(name, text, None) for name, text in _readme_documents()]
    guide = (HERE / "guide_examples.yaml").read_text()
    examples += [(f"GUIDE.md: {doc['name']}", json.dumps(doc), None) for doc in yaml.safe_load_all(guide)]
    # plan_cases.yaml's desired deployments: overrides over test_plan's BASE_SPEC.
    for case in PLAN_CASES:
        for name, overrides in (case.get("desired") or {}).items():
            doc = {**BASE_SPEC, "name": name, **(overrides or {})}
            examples.append((f"plan_cases {case['id']}: {name}", json.dumps(doc), None))
    return examples


EXAMPLES = _examples()


def test_the_examples_are_all_found() -> None:
    names = [name for name, _, _ in EXAMPLES]
    # Both files of deployments.d/, the Quickstart's heredoc and the git-source block, the guide's five.
    assert {"deployments.d/hello-python.json", "deployments.d/hello-static.yaml"} <= set(names)
    assert sum(name.startswith("README") for name in names) >= 2, names
    assert any(name.startswith("README") and name.endswith(": hello") for name in names), names
    assert sum(name.startswith("GUIDE.md") for name in names) == 5, names


@pytest.mark.parametrize("name,text,root", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_example_loads_and_validates(validator, tmp_path: Path, name: str, text: str, root: Path | None) -> None:
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert documents
    if root is not None:  # a file of the repository, loaded where it lies
        path = root / name
    else:  # written to a workspace of its own, with the source directory it names
        root = tmp_path
        path = write_example(root, text, documents)
    _, errors = load_file(path, workspace=root)
    assert [str(e) for e in errors] == []
    for doc in documents:
        assert schema_problems(validator, doc) == []


def write_example(root: Path, text: str, documents: list[dict]) -> Path:
    for doc in documents:
        source = doc.get("source")
        directory = source if isinstance(source, str) else (source or {}).get("path")
        if directory:
            (root / directory).mkdir(parents=True, exist_ok=True)
    path = root / "deployments.d" / "example.yaml"
    path.parent.mkdir()
    path.write_text(text)
    return path


@pytest.mark.parametrize("change,where", [
    ({"buildComand": "make"}, "Additional properties are not allowed ('buildComand' was unexpected)"),
    ({"exposed_prot": 8081}, "Additional properties are not allowed ('exposed_prot' was unexpected)"),
    ({"healthcheck": {"paht": "/"}}, "healthcheck"),
    ({"port": "eighty"}, "port"),
    ({"port": [8080]}, "port"),
    ({"enabled": "sometimes"}, "enabled"),
    ({"name": "Hello_Static"}, "name"),
])
def test_a_typo_or_a_wrong_type_fails(validator, change: dict, where: str) -> None:
    doc = {**yaml.safe_load((REPO_ROOT / "deployments.d" / "hello-static.yaml").read_text()), **change}
    problems = schema_problems(validator, doc)
    assert problems and any(where in p for p in problems), problems


# --- the cross-check: loader accepts == schema validates ------------------------------------------

BASE = "name: api\nstart_command: run\n"
HTTP = BASE + "port: 8080\n"

# (id, YAML document, whether it is a valid deployment): the loader and the schema must both agree with it.
TABLE: list[tuple[str, str, bool]] = [
    # every field, under each of its spellings
    ("minimal", BASE, True),
    ("snake-case-all", """\
        name: api
        description: the API
        image: busybox:1.36
        source: {path: apps/web}
        build_command: make
        start_command: run
        working_dir: /srv/app
        port: 8080
        exposed_port: 18080
        subdomain: api
        env: {A: "1"}
        env_file: .env
        auto_rebuild: true
        webhook_secret: s3cret
        healthcheck: {type: tcp, timeout: 5, interval: 0.1}
        resources: {memory: 256m, cpus: 0.5}
        enabled: false
        """, True),
    ("camel-case-all", """\
        name: api
        buildCommand: make
        startCommand: run
        workingDir: /srv
        port: 8080
        exposedPort: 18081
        envVars: "A=1"
        envFile: .env
        autoRebuild: true
        webhookSecret: s3cret
        source: {repo: https://example.com/r.git, tokenEnv: TOKEN, sshKey: /k, branch: main, subdir: web}
        """, True),
    ("env_vars-spelling", BASE + "env_vars: {A: x}\n", True),
    ("env-values-of-any-type", BASE + "env: {A: 1, B: true, C: null, D: [1], E: {x: 1}}\n", True),
    ("env-json-text", BASE + "envVars: '{\"A\": 1, \"B\": \"two\"}'\n", True),
    ("env-lines", BASE + "env: |\n  # comment\n  export A=1\n\n  B = \"two\"\n  C=\n", True),
    ("env-null", BASE + "env: null\n", True),
    ("env-empty-text", BASE + "env: ''\n", True),
    ("source-shorthand", BASE + "source: apps/web\n", True),
    ("source-null", BASE + "source: null\n", True),
    ("source-repo-ssh", BASE + "source: {repo: 'git@example.com:r.git', ssh_key: /k, subdir: ''}\n", True),
    ("healthcheck-path-shorthand", HTTP + "healthcheck: /health\n", True),
    ("healthcheck-none-shorthand", BASE + "healthcheck: none\n", True),
    ("healthcheck-tcp-shorthand", BASE + "healthcheck: tcp\n", True),
    ("healthcheck-path-implies-http", HTTP + "healthcheck: {path: /h, timeout: '5', interval: 0.5}\n", True),
    ("healthcheck-http", HTTP + "healthcheck: {type: http, path: /x}\n", True),
    ("healthcheck-tcp-with-path", BASE + "healthcheck: {type: tcp, path: /x}\n", True),
    ("healthcheck-empty-path", BASE + "healthcheck: {path: ''}\n", True),
    ("memory-units", BASE + "resources: {memory: 1GiB, cpus: '0.5'}\n", True),
    ("memory-bytes", BASE + "resources: {memory: 67108864}\n", True),
    ("memory-quoted-bytes", BASE + "resources: {memory: '6291456'}\n", True),
    ("dockerfile-instead-of-start", "name: api\nsource: apps/web\ndockerfile: docker/Dockerfile\n", True),
    ("dockerfile-dot-slash", "name: api\nsource: apps/web\ndockerfile: ./Dockerfile\n", True),
    ("quoted-numbers-and-booleans", BASE + "port: ' 8080 '\nexposed_port: '18082.0'\nenabled: 'yes'\n"
                                           "auto_rebuild: 'OFF'\n", True),
    ("integral-float-port", BASE + "port: 8080.0\n", True),
    ("number-booleans", BASE + "enabled: 0\nautoRebuild: 1\n", True),
    ("true-as-one", BASE + "port: true\nresources: {cpus: true}\n", True),
    ("infinite-cpus", BASE + "resources: {cpus: .inf}\n", True),
    ("root-working-dir", BASE + "working_dir: /\n", True),
    ("longest-name", f"name: {'a' * 63}\nstart_command: run\n", True),
    # typos and unknown keys
    ("typo-top", BASE + "buildComand: make\n", False),
    ("typo-exposed", HTTP + "exposed_prot: 8081\n", False),
    ("typo-healthcheck", BASE + "healthcheck: {paht: /x}\n", False),
    ("typo-source", BASE + "source: {pth: apps/web}\n", False),
    ("typo-resources", BASE + "resources: {mem: 256m}\n", False),
    ("camel-of-a-one-word-field", BASE + "Name: api\n", False),
    # names
    ("name-missing", "start_command: run\n", False),
    ("name-uppercase", "name: Api\nstart_command: run\n", False),
    ("name-underscore", "name: my_api\nstart_command: run\n", False),
    ("name-double-hyphen", "name: a--b\nstart_command: run\n", False),
    ("name-too-long", f"name: {'a' * 64}\nstart_command: run\n", False),
    ("name-trailing-newline", 'name: "api\\n"\nstart_command: run\n', False),
    ("name-number", "name: 5\nstart_command: run\n", False),
    ("subdomain-uppercase", BASE + "subdomain: Api\n", False),
    # wrong types and values
    ("port-word", BASE + "port: eighty\n", False),
    ("port-too-big", BASE + "port: 70000\n", False),
    ("port-quoted-too-big", BASE + "port: '70000'\n", False),
    ("port-zero", BASE + "port: 0\n", False),
    ("port-fraction", BASE + "port: 8080.5\n", False),
    ("port-false", BASE + "port: false\n", False),
    ("port-hex", BASE + "port: '0x50'\n", False),
    ("enabled-word", BASE + "enabled: maybe\n", False),
    ("enabled-two", BASE + "enabled: 2\n", False),
    ("enabled-null", BASE + "enabled: null\n", False),
    ("enabled-padded", BASE + "enabled: ' true'\n", False),
    ("description-number", BASE + "description: 5\n", False),
    ("working-dir-relative", BASE + "working_dir: app\n", False),
    ("working-dir-null", BASE + "working_dir: null\n", False),
    # cross-field rules
    ("start-command-missing", "name: api\n", False),
    ("start-command-empty", "name: api\nstart_command: ''\n", False),
    ("dockerfile-without-source", "name: api\ndockerfile: Dockerfile\n", False),
    ("dockerfile-absolute", "name: api\nsource: apps/web\ndockerfile: /Dockerfile\n", False),
    ("dockerfile-climbs", "name: api\nsource: apps/web\ndockerfile: ./../Dockerfile\n", False),
    ("exposed-port-without-port", BASE + "exposedPort: 8081\n", False),
    ("http-healthcheck-without-port", BASE + "healthcheck: /health\n", False),
    ("http-healthcheck-mapping-without-port", BASE + "healthcheck: {path: /health}\n", False),
    ("healthcheck-http-shorthand", HTTP + "healthcheck: http\n", False),
    ("healthcheck-http-without-path", HTTP + "healthcheck: {type: http}\n", False),
    ("healthcheck-relative-path", HTTP + "healthcheck: {path: health}\n", False),
    ("healthcheck-kind-uppercase", HTTP + "healthcheck: {type: HTTP, path: /}\n", False),
    ("healthcheck-null", BASE + "healthcheck: null\n", False),
    ("healthcheck-zero-timeout", BASE + "healthcheck: {timeout: 0}\n", False),
    ("healthcheck-negative-interval", BASE + "healthcheck: {interval: '-1'}\n", False),
    ("source-empty", BASE + "source: ''\n", False),
    ("source-empty-mapping", BASE + "source: {}\n", False),
    ("source-path-and-repo", BASE + "source: {path: apps/web, repo: https://example.com/r.git}\n", False),
    ("source-path-with-branch", BASE + "source: {path: apps/web, branch: main}\n", False),
    ("source-path-with-token", BASE + "source: {path: apps/web, tokenEnv: T}\n", False),
    ("source-subdir-up", BASE + "source: {repo: https://example.com/r.git, subdir: a/../../b}\n", False),
    ("source-subdir-absolute", BASE + "source: {repo: https://example.com/r.git, subdir: /b}\n", False),
    ("resources-null", BASE + "resources: null\n", False),
    ("memory-no-unit-word", BASE + "resources: {memory: 12x}\n", False),
    ("memory-small-int", BASE + "resources: {memory: 1024}\n", False),
    ("memory-true", BASE + "resources: {memory: true}\n", False),
    ("cpus-zero", BASE + "resources: {cpus: 0}\n", False),
    ("cpus-negative-text", BASE + "resources: {cpus: '-1'}\n", False),
    ("cpus-nan-text", BASE + "resources: {cpus: nan}\n", False),
    # env
    ("env-bad-key", BASE + "env: {1A: x}\n", False),
    ("env-key-with-space", BASE + "env: {'A B': x}\n", False),
    ("env-list", BASE + "env: [A=1]\n", False),
    ("env-number", BASE + "env: 5\n", False),
    ("env-line-without-equals", BASE + "env: \"A=1\\nB\"\n", False),
    ("env-line-bad-key", BASE + "env: \"A-B=1\"\n", False),
    ("env-export-without-key", BASE + "env: \"export =1\"\n", False),
    ("env-equals-on-next-line", BASE + "env: \"A\\n=1\"\n", False),
    # one field under two names: the loader refuses rather than keep one
    ("twice-start-command", BASE + "startCommand: other\n", False),
    ("twice-env", BASE + "env: {A: x}\nenvVars: B=1\n", False),
    ("twice-env-vars", BASE + "env_vars: {A: x}\nenvVars: B=1\n", False),
    ("twice-token-env", BASE + "source: {repo: https://example.com/r.git, token_env: A, tokenEnv: B}\n", False),
]

# (id, YAML document, loader accepts, schema validates, why JSON Schema cannot agree)
EXCEPTIONS: list[tuple[str, str, bool, bool, str]] = [
    ("memory-below-6m", BASE + "resources: {memory: 5m}\n", False, True,
     "a minimum for a number inside a string with a unit would be a regex over every unit and fraction"),
    ("env-json-bad-key", BASE + "envVars: '{\"1A\": \"x\"}'\n", False, True,
     "JSON inside a string is not looked into by JSON Schema (contentMediaType is an annotation only)"),
    ("env-json-broken", BASE + "envVars: '{oops'\n", False, True,
     "JSON inside a string is not looked into by JSON Schema (contentMediaType is an annotation only)"),
    ("dockerfile-climbs-after-descending", "name: api\nsource: apps/web\ndockerfile: a/../../Dockerfile\n", False, True,
     "normalising a path counts `..` against the segments before it: a regex cannot count"),
    ("quoted-port-with-separator", BASE + "port: '8_080'\n", True, False,
     "a range check that skips digit separators anywhere would make the port regex unreadable"),
    ("timeout-underflows", BASE + "healthcheck: {timeout: '1e-400'}\n", False, True,
     "the text reads as a number above zero, but pydantic's float rounds it to 0.0"),
    ("timeout-nan", BASE + "healthcheck: {timeout: .nan}\n", False, True,
     "NaN is not JSON; jsonschema's exclusiveMinimum compares it as `not NaN <= 0`, which holds"),
    ("source-path-missing", BASE + "source: apps/nowhere\n", False, True,
     "whether a directory exists, and inside the workspace, is a question for the disk"),
    ("env-file-missing", BASE + "env_file: missing.env\n", False, True,
     "whether a file exists is a question for the disk"),
]


def _doc(text: str) -> Any:
    return yaml.safe_load(textwrap.dedent(text))


def test_the_table_covers_every_field_and_spelling() -> None:
    keys: set[str] = set()
    for _, text, _ in TABLE:
        doc = _doc(text)
        keys |= set(doc)
        keys |= {f"{k}.{n}" for k, v in doc.items() if isinstance(v, dict) and k != "env" and not k.startswith("env")
                 for n in v}
    properties = schema()["properties"]
    wanted = set(properties)
    for parent in ("source", "healthcheck", "resources"):
        forms = properties[parent].get("anyOf", [properties[parent]])
        nested = next(f for f in forms if f.get("type") == "object")
        wanted |= {f"{parent}.{name}" for name in nested["properties"]}
    assert wanted - keys == set()


@pytest.mark.parametrize("name,text,valid", TABLE, ids=[row[0] for row in TABLE])
def test_loader_and_schema_agree(validator, workspace: Path, name: str, text: str, valid: bool) -> None:
    text = textwrap.dedent(text)
    loaded = loader_problems(workspace, name, text)
    checked = schema_problems(validator, yaml.safe_load(text))
    assert (not loaded, not checked) == (valid, valid), {"loader": loaded, "schema": checked}


@pytest.mark.parametrize("name,text,loads,validates,reason", EXCEPTIONS, ids=[row[0] for row in EXCEPTIONS])
def test_known_gaps_between_loader_and_schema(validator, workspace: Path, name: str, text: str,
                                              loads: bool, validates: bool, reason: str) -> None:
    # When a gap closes, this fails: move the row to TABLE.
    loaded = loader_problems(workspace, name, text)
    checked = schema_problems(validator, yaml.safe_load(text))
    assert (not loaded, not checked) == (loads, validates), {"loader": loaded, "schema": checked, "reason": reason}


def test_a_field_without_a_known_form_stops_the_build() -> None:
    # A field added to spec.py with a type the schema has no lax form for must not be left out silently.
    from pydantic import BaseModel

    from gitops import schema as module

    class WithTags(BaseModel):
        tags: list[str] = []

    with pytest.raises(ValueError, match=r"WithTags\.tags: no JSON Schema form .*gitops/schema\.py"):
        module._object(WithTags, {}, [])
