"""What a fresh `kalpana` process imports (issue 12): every command pays its imports first.

Checked in a clean subprocess each time (this test process has imported everything already).
No timing assertions: the modules a path loads are what can regress silently.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from gitops.cli.render import escape

#: Loaded only by the commands that need them (builds and pulls; tables and live output).
HEAVY = ("docker", "requests", "urllib3", "rich", "dotenv", "filelock", "fastapi", "uvicorn", "starlette", "watchfiles",
         "git")


def _modules_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(packages))


def test_the_apply_path_imports_neither_the_docker_sdk_nor_rich():
    modules = _modules_after("""
        import gitops.cli.main
        gitops.cli.main.register_commands()
        from gitops.config import Settings
        from gitops.engine import Engine
        from gitops.history import History
        from gitops.runtime.docker_runtime import DockerRuntime
        runtime = DockerRuntime.connect("unix:///nonexistent.sock")
        runtime.load_sdk(builds=False)  # what the engine asks before a redeploy-only plan
    """)
    assert "gitops.engine" in modules and "gitops.cli.commands" in modules
    assert _loaded(modules, HEAVY) == []


def test_version_loads_no_command_and_no_pydantic():
    modules = _modules_after("""
        import sys
        from gitops.cli.main import cli
        try:
            cli(["--version"], prog_name="kalpana")
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """)
    assert "gitops.cli.commands" not in modules
    assert _loaded(modules, HEAVY + ("pydantic", "yaml", "tinydb")) == []


def test_the_commands_are_registered_when_one_is_looked_up():
    result = subprocess.run([sys.executable, "-m", "gitops", "--help"], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    for command in ("apply", "plan", "status", "validate", "init", "watch", "webhooks"):
        assert f"\n  {command} " in result.stdout


def test_load_sdk_for_builds_imports_it():
    modules = _modules_after("""
        from gitops.errors import DockerUnavailable
        from gitops.runtime.docker_runtime import DockerRuntime
        try:  # (no engine at that address: the SDK is imported before it finds out)
            DockerRuntime.connect("unix:///nonexistent.sock").load_sdk(builds=True)
        except DockerUnavailable:
            pass
    """)
    assert "docker" in modules


@pytest.mark.parametrize("text", [
    "plain", "[bold]x[/bold]", "[/]", "a [b] c", "[link=http://x]y[/link]", "\\[escaped]", "\\\\[two]",
    "ends with \\", "ends with \\\\", "[#ff0000]red", "[@click]x", "[0]", "[A]", "[]", "list[str]", "[[x]]",
    "C:\\path\\[dir]", "", "\\",
])
def test_escape_agrees_with_rich(text):
    from rich.markup import escape as rich_escape

    assert escape(text) == rich_escape(text)
