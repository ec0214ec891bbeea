"""`status NAME...`, `status --wide` and `stop --json` through the real CLI, over the fake runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from fake_runtime import FakeRuntime

from gitops import labels as L
from gitops.cli import commands, operate, watch  # noqa: F401 - registers the commands
from gitops.cli.main import Context, cli

INSTANCE = "t-cli"
SPEC = "name: {name}\nimage: busybox\nstart_command: sleep 1000\nport: 8080\n"


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuntime]:
    fake = FakeRuntime(allow=["observe", "started_at", "stop"])
    monkeypatch.setattr(Context, "runtime", property(lambda self: fake))
    yield fake
    fake.assert_no_violations()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime) -> Path:
    (tmp_path / "deployments.d").mkdir()
    for name, port in (("api", 24801), ("web", 24802)):
        (tmp_path / "deployments.d" / f"{name}.yaml").write_text(SPEC.format(name=name))
        runtime.add_container(L.container_name(INSTANCE, name), L.image_tag(INSTANCE, name, "20250614-153012-a1b2"),
                              {**L.base_labels(INSTANCE, name), L.BUILD_ID: "20250614-153012-a1b2",
                               L.HOST_PORT: str(port)}, port=8080, host_port=port)
    (tmp_path / "kalpana.yaml").write_text(f"instance: {INSTANCE}\nstate_dir: {tmp_path / 'state'}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KALPANA_CONFIG", raising=False)
    return tmp_path


def run(*args: str, columns: int = 80):
    return CliRunner(env={"COLUMNS": str(columns), "NO_COLOR": "1"}).invoke(cli, list(args))


def test_status_names_filter_in_the_order_given(workspace: Path):
    result = run("status", "web", "--json")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.output)["deployments"]] == ["web"]
    result = run("status", "web", "api")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["web", "api"], result.output
    assert all(len(line) <= 80 for line in lines), result.output
    assert "http://localhost:24802" in lines[1], result.output


def test_status_unknown_name_lists_the_known_ones(workspace: Path):
    result = run("status", "wbe")
    assert result.exit_code == 1, result.output
    assert "unknown deployment 'wbe'; known deployments: api, web" in result.output, result.output


def test_status_wide_shows_the_image_tag(workspace: Path):
    result = run("status", "--wide", columns=200)
    assert result.exit_code == 0, result.output
    assert "IMAGE" in result.output.splitlines()[0] and f"kalpana/{INSTANCE}" not in result.output, result.output


def test_stop_json(workspace: Path, runtime: FakeRuntime):
    result = run("stop", "web", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"deployment": "web", "stopped": True,
                                         "container": L.container_name(INSTANCE, "web"), "was_running": True}
    assert [m for m, _ in runtime.calls if m == "stop"] == ["stop"]


@pytest.mark.parametrize("words, expected", [
    ("kalpana logs w", ["web"]),
    ("kalpana status ", ["api", "web"]),
    ("kalpana status --w", ["--wide"]),
    ("kalpana watch --log-format ", ["text", "json"]),
])
def test_shell_completion_offers_names_options_and_values(workspace: Path, words: str, expected: list[str]):
    env = {"_KALPANA_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = CliRunner(env=env).invoke(cli, [], prog_name="kalpana")
    assert result.exit_code == 0, result.output
    assert [line.split(",", 1)[1] for line in result.output.splitlines()] == expected, result.output
