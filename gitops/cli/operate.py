"""Operating commands: status, builds, logs, deploy, stop, start, rollback."""

from __future__ import annotations

import sys

import click

from gitops.cli.commands import WORD, json_option, pass_ctx, run_with_progress, summarize
from gitops.cli.main import Context, cli
from gitops.cli.render import builds_table, out_console, print_json, status_table, write


class TailLines(click.ParamType):
    """``--tail``: a number of lines (0 or more), or ``all``, as Docker takes it."""

    name = "N|all"
    #: Docker parses the number as a 64-bit integer; more lines than this than any log holds anyway.
    MAX = 10**9

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            lines = value
        elif str(value).strip().lower() == "all":
            return "all"
        else:
            try:
                lines = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number of lines: give 0 or more, or 'all'", param, ctx)
        if not 0 <= lines <= self.MAX:
            self.fail(f"{lines} lines is out of range: give 0 to {self.MAX}, or 'all'", param, ctx)
        return lines


TAIL = TailLines()


def complete_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of deployment names: the ones the files declare (nothing when they can't be read)."""
    from gitops.config import load_settings
    from gitops.loader import load_configured
    try:
        load = load_configured(load_settings(ctx.find_root().params.get("config")))
    except Exception:  # noqa: BLE001 - a completion must never print a traceback into the shell
        return []
    return sorted(name for name in load.desired if name.startswith(incomplete))


wide_option = click.option("--wide", "-w", is_flag=True, help="Every column, whole messages (lines may pass 80 columns).")


@cli.command()
@click.argument("names", nargs=-1, shell_complete=complete_names)
@wide_option
@json_option
@pass_ctx
def status(obj: Context, names: tuple[str, ...], wide: bool, as_json: bool) -> None:
    """Per deployment (or only NAMES): state, URL, current build, uptime, and what needs attention."""
    from gitops.status import select
    rows = select(obj.engine().status(), names)
    if as_json:
        print_json({"deployments": [r.to_dict() for r in rows]})
        return
    console = out_console(wide=wide)
    console.print(status_table(rows, wide=wide, width=console.width) if rows else "no deployments declared")


@cli.command()
@click.argument("name", shell_complete=complete_names)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=0),
              help="How many builds (0 = all).")
@wide_option
@json_option
@pass_ctx
def builds(obj: Context, name: str, limit: int, wide: bool, as_json: bool) -> None:
    """Build history of NAME, newest first."""
    records = obj.engine().builds(name, limit=limit or None)
    if as_json:
        print_json({"deployment": name, "builds": [b.to_dict() for b in records]})
        return
    out_console(wide=wide).print(builds_table(records, wide=wide) if records else f"no builds of {name} yet")


@cli.command()
@click.argument("name", shell_complete=complete_names)
@click.option("--build", "build_id", metavar="ID", type=WORD, help="Logs of this build instead of the latest.")
@click.option("--app", is_flag=True, help="The running container's logs instead of a build's.")
@click.option("-f", "--follow", is_flag=True, help="With --app: keep streaming.")
@click.option("--tail", default=200, show_default=True, type=TAIL,
              help="With --app: lines of history to show first (a number, or all).")
@pass_ctx
def logs(obj: Context, name: str, build_id: str | None, app: bool, follow: bool, tail: int) -> None:
    """Logs of NAME's latest build (or --build ID), or of the running app (--app)."""
    if follow and not app:
        raise click.UsageError("-f/--follow goes with --app (build logs are complete once stored)")
    if app and build_id:
        raise click.UsageError("--build picks a build's log; --app shows the running container's: give one of them")
    engine = obj.engine()
    if app and follow:
        try:
            for chunk in engine.follow_app_logs(name, tail=tail):
                write(chunk)
        except KeyboardInterrupt:
            sys.exit(130)  # Ctrl-C is how a follow ends, not an error to report
    elif app:
        write(engine.app_logs(name, tail=tail))
    else:
        _, text = engine.build_logs(name, build_id)
        write(text)


@cli.command()
@click.argument("name", shell_complete=complete_names)
@json_option
@pass_ctx
def deploy(obj: Context, name: str, as_json: bool) -> None:
    """Rebuild and redeploy NAME now, even if nothing changed."""
    summarize(run_with_progress(obj, as_json, lambda engine: engine.deploy(name)), as_json)


@cli.command()
@click.argument("name", shell_complete=complete_names)
@json_option
@pass_ctx
def stop(obj: Context, name: str, as_json: bool) -> None:
    """Stop NAME; it stays stopped across `apply` until `kalpana start NAME`."""
    container = obj.engine().stop(name)
    if as_json:
        print_json({"deployment": name, "stopped": True, "container": container.name if container else None,
                    "was_running": bool(container and container.running)})
        return
    out_console().print(f"stopped {name}" + ("" if container else " (it had no container)")
                        + f"; `kalpana start {name}` resumes it")


@cli.command()
@click.argument("name", shell_complete=complete_names)
@json_option
@pass_ctx
def start(obj: Context, name: str, as_json: bool) -> None:
    """Resume a stopped deployment (and apply it)."""
    summarize(run_with_progress(obj, as_json, lambda engine: engine.start(name)), as_json)


@cli.command()
@click.argument("name", shell_complete=complete_names)
@click.option("--to", "to", metavar="BUILD", type=WORD, help="Build id to return to (default: the previous successful one).")
@json_option
@pass_ctx
def rollback(obj: Context, name: str, to: str | None, as_json: bool) -> None:
    """Redeploy the image of an earlier successful build, without rebuilding."""
    build = run_with_progress(obj, as_json, lambda engine: engine.rollback(name, to))
    if as_json:
        print_json({"build": build.to_dict()})
    else:
        out_console().print(f"{name} now runs {build.image} (rollback recorded as build {build.id})")
