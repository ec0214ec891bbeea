"""Commands about files and plans: validate, schema, plan, apply."""

from __future__ import annotations

import sys
from typing import Callable

import click

from gitops.cli.main import Context, cli, json_option, pass_ctx
from gitops.cli.render import Progress, escape, out_console, plan_table, print_json, write


class Word(click.ParamType):
    """A value that names something (a build id, an image): an empty one is a mistake, not "the default".

    ``--to "$BUILD"`` with the variable unset must not roll back to whatever the default is.
    """

    name = "TEXT"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not text:
            self.fail("is empty: give a value, or leave the option out", param, ctx)
        return text


WORD = Word()


@cli.command()
@json_option
@pass_ctx
def validate(obj: Context, as_json: bool) -> None:
    """Check kalpana.yaml and every deployment file; exit 1 on any error."""
    from gitops.loader import load_configured
    from gitops.routing import missing_base_url
    load = load_configured(obj.settings)
    # What apply would warn about too (never an error: the exit code is the errors' alone).
    warnings = [w for d in load.desired.values() if (w := missing_base_url(d, obj.settings.traefik_base_url))]
    if as_json:
        print_json({"ok": load.ok, "deployments": sorted(load.desired), "files": [str(f) for f in load.files],
                    "errors": [{"file": e.file, "line": e.line, "field": e.field, "message": e.message, "text": str(e)}
                               for e in load.errors], "warnings": warnings})
    else:
        console = out_console()
        for error in load.errors:
            console.print(f"[red]{escape(str(error))}[/red]")
        for warning in warnings:
            console.print(f"[yellow]warning: {escape(warning)}[/yellow]")
        if load.ok:
            console.print(f"[green]ok[/green]: {len(load.desired)} deployment(s) in {len(load.files)} file(s)")
        else:
            console.print(f"{len(load.errors)} error(s); {len(load.desired)} deployment(s) valid")
    sys.exit(0 if load.ok else 1)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of one deployment document (for editors and CI).

    A file may hold several documents (YAML ---): the schema checks each on its own.
    Every spelling and shorthand `validate` accepts passes; what needs the disk
    (paths that must exist) or other files (one host port in two files) is left
    to `kalpana validate`, which has the last word.
    """
    from gitops.schema import dumps_schema
    write(dumps_schema() + "\n")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--no-prune", is_flag=True, help="Keep containers no file declares.")
@click.option("--exit-code", "-e", "exit_code", is_flag=True, help="Exit 2 when changes are pending.")
@json_option
@pass_ctx
def plan(obj: Context, names: tuple[str, ...], no_prune: bool, exit_code: bool, as_json: bool) -> None:
    """Show what `apply` would do, changing nothing."""
    engine = obj.engine()
    result, load = engine.plan(list(names) or None, prune=not no_prune)
    show_plan(result, load, as_json)
    if not load.ok:
        sys.exit(1)
    if exit_code and result.changes:
        sys.exit(2)


def show_plan(result, load, as_json: bool) -> None:
    if as_json:
        print_json({**result.to_dict(), "errors": [str(e) for e in load.errors]})
        return
    console = out_console()
    for error in load.errors:
        console.print(f"[red]{escape(str(error))}[/red]")
    if result.steps:
        console.print(plan_table(result))
    else:
        console.print("no deployments declared")
    if result.prune_note and not result.prune:
        console.print(f"[yellow]{escape(result.prune_note)}[/yellow]")
    console.print(f"{len(result.changes)} change(s) pending")


def run_with_progress(obj: Context, as_json: bool, work: Callable) -> object:
    """Run ``work(engine)`` while its events render live (on stderr with --json); returns what it returns."""
    progress = Progress(to_stderr=as_json)
    try:
        return work(obj.engine(progress))
    finally:
        progress.close()


def summarize(result, as_json: bool) -> None:
    """Print what an apply did and exit 1 when anything failed."""
    if as_json:
        print_json(result.to_dict())
    else:
        if result.load.errors:
            console = out_console()
            for error in result.load.errors:
                console.print(f"[red]{escape(str(error))}[/red]")
        write(summary_line(result))
    sys.exit(0 if result.ok else 1)


def summary_line(result) -> str:
    """The last line of an apply: how many deployments changed, failed and were left as they were."""
    failed = [o for o in result.outcomes if not o.ok]
    changed = [o for o in result.outcomes if o.ok]
    unchanged = len(result.plan.steps) - len(result.outcomes)
    return f"{len(changed)} changed, {len(failed)} failed, {unchanged} unchanged\n"


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--no-prune", is_flag=True, help="Keep containers no file declares.")
@json_option
@pass_ctx
def sync(obj: Context, names: tuple[str, ...], no_prune: bool, as_json: bool) -> None:
    """Fetch the config repository and git sources (hard reset, never merge), then apply."""
    result = run_with_progress(obj, as_json, lambda engine: engine.sync(list(names) or None, prune=not no_prune))
    summarize(result, as_json)
