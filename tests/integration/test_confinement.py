"""Issue 8 through the real CLI and engine: files read nothing of the host, bombs and clashes are refused.

``source: {path: /etc}`` used to build the host's /etc into an image, a deployment
file symlinked to a secret had its lines printed by ``validate``, a ~400-byte alias
bomb took over 20 s and 1.8 GB, and two files claiming one host port both passed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .helpers import containers, get, host_port, image_tags, output, web_spec

UP = "../" * 40  # from any temporary directory up to /


def validate_json(project) -> dict:
    result = project.run("validate", "--json", check=False)
    assert result.returncode == 1, output(result)
    return json.loads(result.stdout)


def test_sources_and_env_files_outside_the_workspace_are_never_built_or_read(kalpana_project):
    p = kalpana_project
    p.write_app("good", {"index.html": "good"})
    p.write_deployment("etc", web_spec("etc", source={"path": "/etc"}))
    p.write_deployment("climb", web_spec("climb", source=f"{UP}etc"))
    p.write_deployment("osrelease", web_spec("osrelease", source="good", env_file="/etc/os-release"))
    p.write_deployment("shadow", web_spec("shadow", source="good", env_file=f"{UP}etc/shadow"))
    p.write_deployment("good", web_spec("good"))

    found = {Path(e["file"]).stem: e for e in validate_json(p)["errors"]}
    assert sorted(found) == ["climb", "etc", "osrelease", "shadow"], found
    assert found["etc"]["text"] == (
        f"deployments.d/etc.yaml:3: source.path: resolves to /etc, outside the workspace {p.root.resolve()}: "
        "keep sources in the workspace, or list the directory in allowed_roots in kalpana.yaml")
    assert (found["climb"]["field"], found["climb"]["line"]) == ("source.path", 2)
    assert found["osrelease"]["field"] == found["shadow"]["field"] == "env_file"
    assert found["shadow"]["message"].startswith("resolves to /etc/shadow, outside the workspace")

    result = p.run("apply", check=False)
    assert result.returncode != 0, output(result)
    assert get(p, host_port(p, "good")) == "good"
    for name in ("etc", "climb", "osrelease", "shadow"):
        assert containers(p, name) == [] and image_tags(p, name) == set(), name


def test_allowed_roots_let_a_source_outside_the_workspace_deploy(kalpana_project, tmp_path_factory):
    p = kalpana_project
    shared = tmp_path_factory.mktemp("shared")
    (shared / "site").mkdir()
    (shared / "site" / "index.html").write_text("from a shared root")
    (shared / "site.env").write_text("GREETING=hello\n")
    # A symlink in the workspace is no way around it either.
    (p.root / "linked").symlink_to(shared / "site")
    p.write_deployment("shared", web_spec("shared", source={"path": str(shared / "site")},
                                          env_file=str(shared / "site.env")))
    p.write_deployment("linked", web_spec("linked", source="linked"))

    errors = validate_json(p)["errors"]
    assert {(Path(e["file"]).stem, e["field"]) for e in errors} == {("shared", "env_file"), ("linked", "source.path")}
    linked = next(e for e in errors if e["field"] == "source.path")
    assert f"resolves to {shared.resolve() / 'site'} through a symlink, outside the workspace" in linked["message"]

    p.write_config(allowed_roots=[str(shared)])
    p.run("apply")
    assert get(p, host_port(p, "shared")) == "from a shared root"
    assert get(p, host_port(p, "linked")) == "from a shared root"


def test_a_deployment_file_symlinked_to_a_secret_is_neither_read_nor_quoted(kalpana_project, tmp_path_factory):
    p = kalpana_project
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.yaml"
    # Valid as a deployment: were it read, it would be deployed and its token shown.
    secret.write_text("name: leaked\nstart_command: httpd -f -p 8080\nport: 8080\n"
                      "env: {TOKEN: s3cr3t-t0ken}\nbad_key: s3cr3t-t0ken\n")
    (p.deployments_dir / "web.yaml").symlink_to(secret)

    for args in (("validate",), ("validate", "--json"), ("plan",), ("apply",)):
        result = p.run(*args, check=False)
        assert result.returncode != 0, output(result)
        assert "s3cr3t" not in output(result) and "leaked" not in output(result), output(result)
    text = p.run("validate", check=False).stdout
    assert ("deployments.d/web.yaml: is a symlink pointing outside the deployments directory deployments.d: "
            "not read; put the file itself in that directory") in text.splitlines(), text
    assert containers(p, "leaked") == []


def test_an_alias_bomb_is_refused_at_once(kalpana_project):
    p = kalpana_project
    lines = ["name: bomb", "start_command: run", "a: &a [" + ",".join(['"lol"'] * 10) + "]"]
    for level, name in enumerate("bcdefghi", 1):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{'abcdefghi'[level - 1]}"] * 10) + "]")
    p.write_deployment("bomb", "\n".join(lines) + "\n")  # nine levels: 10**9 strings once written out

    started = time.monotonic()
    result = p.run("validate", check=False, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, output(result)
    assert ("deployments.d/bomb.yaml:6: YAML aliases expand to more than 10000 nodes (an alias bomb): "
            "a deployment needs far fewer, write the values out or use fewer aliases") in result.stdout.splitlines()
    # The whole CLI run, interpreter start included; the refusal itself takes about a millisecond.
    assert elapsed < 20, elapsed


def test_one_host_port_in_two_files_fails_validate_naming_both_and_deploys_neither(kalpana_project):
    p = kalpana_project
    p.write_app("web", {"index.html": "web"})
    p.write_deployment("a", web_spec("a", source="web", exposed_port=28431))
    p.write_deployment("b", web_spec("b", source="web", exposed_port=28431))

    [error] = validate_json(p)["errors"]
    assert error["text"] == (
        "deployments.d/b.yaml:7: exposed_port: host port 28431 is also declared by deployments.d/a.yaml:7 "
        "(deployment 'a'): one port serves one deployment, give each its own exposed_port "
        "(or remove it from one and a free port is assigned)")
    result = p.run("apply", check=False)
    assert result.returncode != 0, output(result)
    assert containers(p, "a") == [] and containers(p, "b") == []


def test_a_field_under_both_of_its_names_is_reported_as_given_twice(kalpana_project):
    p = kalpana_project
    p.write_deployment("twice", "name: twice\nstart_command: run\nstartCommand: other\n")
    [error] = validate_json(p)["errors"]
    assert error["text"] == ("deployments.d/twice.yaml:3: start_command: given twice, as 'start_command' (line 2) "
                             "and 'startCommand' (line 3): both names are the same field, keep one")
