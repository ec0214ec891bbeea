"""`kalpana init`: the scaffolded workspace validates, existing files are kept unless --force."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import gitops.cli.commands  # noqa: F401 - registers validate
import gitops.cli.init  # noqa: F401 - registers init
from gitops.cli.main import cli
from gitops.config import load_settings
from gitops.loader import load_configured
from gitops.scaffold import instance_for

FILES = ["kalpana.yaml", "deployments.d/hello.yaml", "apps/hello/index.html", ".gitignore"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No settings override from the developer's shell; paths in messages relative to tmp_path."""
    for key in list(os.environ):
        if key.startswith("KALPANA_") or key.startswith("TRAEFIK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def kalpana(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def validate(directory: Path):
    return kalpana("-c", str(directory / "kalpana.yaml"), "validate")


def test_init_writes_a_workspace_that_validates_and_says_what_next(tmp_path):
    result = kalpana("init", "site")
    assert result.exit_code == 0, result.output
    root = tmp_path / "site"
    for rel in FILES:
        assert (root / rel).is_file(), rel
        assert f"created  site/{rel}" in result.output
    assert "kalpana plan" in result.output and "kalpana apply" in result.output
    assert "cd site" in result.output

    checked = validate(root)
    assert checked.exit_code == 0, checked.output
    assert "ok: 1 deployment(s) in 1 file(s)" in checked.output

    settings = load_settings(root / "kalpana.yaml")
    assert settings.instance == "site"
    assert settings.state_path == root / ".kalpana"
    hello = load_configured(settings).desired["hello"]
    assert hello.image == "busybox:1.36"
    assert hello.spec.port == 8080 and hello.spec.start_command == "httpd -f -p 8080 -h /workspace"
    assert "Hello from hello" in (root / "apps/hello/index.html").read_text()
    assert (root / ".gitignore").read_text().splitlines() == [".kalpana/", ".env"]


def test_init_in_the_current_directory_names_no_cd(tmp_path):
    result = kalpana("init")
    assert result.exit_code == 0, result.output
    assert "cd " not in result.output
    assert validate(tmp_path).exit_code == 0


def test_name_and_image_options_shape_the_first_deployment(tmp_path):
    result = kalpana("init", "--name", "web", "--image", "kalpana-local/busybox")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "apps/web/index.html").is_file()
    desired = load_configured(load_settings(tmp_path / "kalpana.yaml")).desired
    assert list(desired) == ["web"]
    assert desired["web"].image == "kalpana-local/busybox"
    assert desired["web"].spec.source.path == "apps/web"


def test_existing_files_are_kept_and_reported(tmp_path):
    (tmp_path / "kalpana.yaml").write_text("instance: mine\n")
    (tmp_path / ".gitignore").write_text("node_modules\n.env\n")

    result = kalpana("init")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kalpana.yaml").read_text() == "instance: mine\n"
    assert (tmp_path / ".gitignore").read_text() == "node_modules\n.env\n"
    assert "kept  kalpana.yaml (exists; --force overwrites)" in result.output
    assert "kept  .gitignore (exists; --force overwrites)" in result.output
    assert "created  deployments.d/hello.yaml" in result.output
    # The kept .gitignore lacks the state directory: said, not silently edited.
    assert "add .kalpana/ to your .gitignore" in result.output
    assert validate(tmp_path).exit_code == 0

    again = kalpana("init")
    assert again.exit_code == 0, again.output
    assert "created" not in again.output
    assert "nothing written: every file exists" in again.output


def test_force_overwrites(tmp_path):
    (tmp_path / "kalpana.yaml").write_text("instance: mine\n")
    (tmp_path / "deployments.d").mkdir()
    (tmp_path / "deployments.d/hello.yaml").write_text("name: [broken\n")

    result = kalpana("init", "--force")
    assert result.exit_code == 0, result.output
    assert "overwritten  kalpana.yaml" in result.output
    assert "overwritten  deployments.d/hello.yaml" in result.output
    assert "created  .gitignore" in result.output
    assert "instance: mine" not in (tmp_path / "kalpana.yaml").read_text()
    assert validate(tmp_path).exit_code == 0


def test_json_lists_each_file_with_what_happened(tmp_path):
    (tmp_path / ".gitignore").write_text(".kalpana\n")
    data = json.loads(kalpana("init", "--json").output)
    outcomes = {f["path"]: f["outcome"] for f in data["files"]}
    assert outcomes == {"kalpana.yaml": "created", "deployments.d/hello.yaml": "created",
                        "apps/hello/index.html": "created", ".gitignore": "kept"}
    assert data["missing_ignores"] == [".env"]


@pytest.mark.parametrize("name", ["Hello", "-web", "web_app", "a" * 64, ""])
def test_a_name_that_is_no_dns_label_is_a_usage_error(tmp_path, name):
    result = kalpana("init", "--name", name)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--name': must be a DNS label" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_place_of_the_directory_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("")
    result = CliRunner().invoke(cli, ["init", "taken"])
    assert result.exit_code == 2, result.output
    assert "is a file" in result.output


@pytest.mark.parametrize("directory, instance", [
    ("site", "site"),
    ("My Site", "my-site"),
    ("api_v2.prod", "api-v2-prod"),
    ("---", "default"),
    ("x" * 40, "x" * 32),
    ("a" * 31 + "-b", "a" * 31),
])
def test_the_instance_comes_from_the_directory_name(tmp_path, directory, instance):
    assert instance_for(tmp_path / directory) == instance
