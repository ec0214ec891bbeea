"""Every option of every command, fed bad values: a usage error or a clear one, never "unexpected error".

The commands run in a temporary workspace whose Docker host does not exist, so nothing here
touches a real engine; a value that gets past click must then end in a KalpanaError (one line).
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gitops.cli.main import cli, register_commands
from gitops.crash import EXIT_CODE

BAD_VALUES = ["-1", "0", "abc", "", str(10**30), "-" + str(10**30), "../x", "ünï©ødé", "1.5", "x" * 300, "\n"]
DEPLOYMENT = "name: web\nimage: busybox\nstart_command: sleep 1000\n"


def walk(group: click.Group, path: tuple[str, ...] = ()):
    """(command path, command) of every registered command, subcommands included."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


register_commands()  # every command the CLI has, as `kalpana --help` lists them
COMMANDS = list(walk(cli))


def placeholders(command: click.Command, skip: click.Parameter | None = None) -> list[str]:
    """One well-formed value per required argument (a declared deployment's name)."""
    return ["web" for p in command.params
            if isinstance(p, click.Argument) and p.required and p is not skip]


def cases():
    for path, command in COMMANDS:
        for param in command.params:
            if isinstance(param, click.Option) and (param.is_flag or param.count):
                continue  # a flag has no value to get wrong
            for value in BAD_VALUES:
                if isinstance(param, click.Option):
                    args = [*path, *placeholders(command), max(param.opts, key=len), value]
                else:
                    args = [*path, value, *placeholders(command, skip=param)]
                yield pytest.param(args, id=f"{' '.join(path)} {param.name}={value[:12]!r}")
    for param in cli.params:  # the group's own options, before a harmless command
        if isinstance(param, click.Option) and not param.is_flag:
            for value in BAD_VALUES:
                yield pytest.param([max(param.opts, key=len), value, "validate"], id=f"kalpana {param.name}={value[:12]!r}")


def test_every_command_is_fuzzed():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"apply", "builds", "logs", "status", "stop", "watch"} <= names, names


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "deployments.d").mkdir()
    (tmp_path / "deployments.d" / "web.yaml").write_text(DEPLOYMENT)
    (tmp_path / "kalpana.yaml").write_text(
        f"instance: t-fuzz\nstate_dir: {tmp_path / 'state'}\ndocker_host: unix://{tmp_path / 'no-docker.sock'}\n")
    monkeypatch.chdir(tmp_path)
    for key in ("KALPANA_CONFIG", "DOCKER_HOST", "TRAEFIK_BASE_URL", "TRAEFIK_EMAIL", "TRAEFIK_NETWORK"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


@pytest.mark.parametrize("args", cases())
def test_bad_option_values_never_reach_unexpected_error(workspace: Path, args: list[str]):
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    text = result.output
    assert result.exit_code != EXIT_CODE and "unexpected error" not in text, f"kalpana {args}: {text}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"kalpana {args} raised {result.exception!r}: {text}")


@pytest.mark.parametrize("args, message", [
    (["builds", "web", "--limit", "-1"], "-1 is not in the range x>=0"),
    (["builds", "web", "--limit", "abc"], "'abc' is not a valid integer"),
    (["logs", "web", "--app", "--tail", "-1"], "-1 lines is out of range"),
    (["logs", "web", "--app", "--tail", "abc"], "'abc' is not a number of lines"),
    (["logs", "web", "--app", "--tail", str(10**30)], "give 0 to 1000000000, or 'all'"),
])
def test_out_of_range_values_are_usage_errors(workspace: Path, args: list[str], message: str):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output


@pytest.mark.parametrize("args", [
    ["builds", "web", "--limit", "0"],
    ["logs", "web", "--app", "--tail", "all"],
    ["logs", "web", "--app", "--tail", "ALL"],
    ["logs", "web", "--app", "--tail", "0"],
])
def test_good_values_pass_click(workspace: Path, args: list[str]):
    result = CliRunner().invoke(cli, args)
    # Past click: builds answers from the history; logs then finds no Docker (one clear line, exit 1).
    assert result.exit_code in (0, 1) and "Usage:" not in result.output, result.output


@pytest.mark.parametrize("args", [
    ["rollback", "web", "--to", ""],
    ["rollback", "web", "--to", "  "],
    ["logs", "web", "--build", ""],
    ["init", "somewhere", "--image", ""],
])
def test_an_empty_value_for_an_option_that_names_something_is_a_usage_error(args, tmp_path: Path):
    # `--to "$BUILD"` with the variable unset must not quietly mean "the default build".
    result = CliRunner().invoke(cli, args, catch_exceptions=False) if args[0] != "init" else \
        CliRunner().invoke(cli, [args[0], str(tmp_path / args[1]), *args[2:]], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "is empty" in result.output, result.output


def test_logs_app_with_a_build_id_is_a_usage_error_not_silently_ignored(workspace: Path):
    result = CliRunner().invoke(cli, ["logs", "web", "--app", "--build", "20250101-000000-abcd"])
    assert result.exit_code == 2 and "give one of them" in result.output, result.output


def test_every_command_module_is_registered_with_the_cli():
    # Commands load on lookup (COMMAND_MODULES): a module left out of that list is a command that vanished.
    import pkgutil

    import gitops.cli
    from gitops.cli.main import COMMAND_MODULES

    modules = {m.name for m in pkgutil.iter_modules(gitops.cli.__path__)} - {"main"}  # main defines the group
    with_commands = {name for name in modules
                     if "@cli.command" in (Path(gitops.cli.__path__[0]) / f"{name}.py").read_text()
                     or "@cli.group" in (Path(gitops.cli.__path__[0]) / f"{name}.py").read_text()}
    assert with_commands <= set(COMMAND_MODULES), with_commands - set(COMMAND_MODULES)
