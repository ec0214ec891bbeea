"""`kalpana init`: scaffold a workspace (the files come from gitops.scaffold)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from gitops.cli.commands import WORD, json_option
from gitops.cli.main import cli
from gitops.cli.render import escape, out_console, print_json
from gitops.scaffold import DEFAULT_IMAGE, DEFAULT_NAME, Outcome, Scaffolded, name_problem, scaffold


def _deployment_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=DEFAULT_NAME, show_default=True, callback=_deployment_name,
              help="Name of the first deployment (deployments.d/NAME.yaml, apps/NAME/).")
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, type=WORD, help="Base image of the first deployment.")
@click.option("--force", is_flag=True, help="Overwrite files that exist (default: keep them).")
@json_option
def init(directory: Path, name: str, image: str, force: bool, as_json: bool) -> None:
    """Create kalpana.yaml, a first deployment (a static site) and a .gitignore in DIRECTORY."""
    result = scaffold(directory, name=name, image=image, force=force)
    if as_json:
        print_json({"directory": str(directory), "files": [{"path": str(path), "outcome": outcome.value}
                                                           for path, outcome in result.files.items()],
                    "missing_ignores": result.missing_ignores})
        return
    _render(result)


def _render(result: Scaffolded) -> None:
    console = out_console()
    style = {Outcome.CREATED: "green", Outcome.OVERWRITTEN: "yellow", Outcome.KEPT: "dim"}
    for path, outcome in result.files.items():
        note = " (exists; --force overwrites)" if outcome is Outcome.KEPT else ""
        console.print(f"[{style[outcome]}]{outcome.value:>11}[/]  {escape(str(result.root / path))}{note}")
    if result.missing_ignores:
        console.print(f"[yellow]note:[/] add {', '.join(result.missing_ignores)} to your .gitignore "
                      "(the state directory and secrets stay out of git)")
    if not result.having(Outcome.CREATED) and not result.having(Outcome.OVERWRITTEN):
        console.print("nothing written: every file exists (--force overwrites them)")
    console.print("next:")
    if os.path.abspath(result.root) != os.getcwd():
        console.print(f"  cd {escape(shlex.quote(str(result.root)))}")
    console.print("  kalpana plan      # what would change, and why")
    console.print("  kalpana apply     # build, start, wait until healthy")
    console.print("  kalpana status    # the URL it serves on")
