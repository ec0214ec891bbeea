"""Operating commands: status, builds, logs, deploy, stop, start, rollback."""

from __future__ import annotations

import sys

import click

from gitops.cli.commands import json_option, pass_ctx, summarize
from gitops.cli.main import Context, cli
from gitops.cli.render import escape, Progress, duration, out_console, print_json, styled


@cli.command()
@json_option
@pass_ctx
def status(obj: Context, as_json: bool) -> None:
    """Per deployment: state, URL, current build, image, uptime."""
    from gitops.status import report
    engine = obj.engine()
    rows = report(engine.load(), obj.runtime, obj.history, obj.settings.instance)
    if as_json:
        print_json({"deployments": [r.to_dict() for r in rows]})
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("DEPLOYMENT", "STATE", "URL", "BUILD", "IMAGE", "UPTIME", "NOTE"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(f"[bold]{escape(r.name)}[/bold]", styled(r.state.value), escape(r.url or "-"),
                      escape(r.build_id or "-"), escape(r.image or "-"), duration(r.uptime_seconds), escape(_first_line(r.detail, 90)))
    console = out_console()
    console.print(table if rows else "no deployments declared")


@cli.command()
@click.argument("name")
@click.option("--limit", "-n", default=20, show_default=True, help="How many builds (0 = all).")
@json_option
@pass_ctx
def builds(obj: Context, name: str, limit: int, as_json: bool) -> None:
    """Build history of NAME, newest first."""
    _known(obj, name)
    records = obj.history.list(name, limit=limit or None)
    if as_json:
        print_json({"deployment": name, "builds": [b.to_dict() for b in records]})
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("BUILD", "STATUS", "ACTION", "TRIGGER", "COMMIT", "STARTED", "DURATION", "ERROR"):
        table.add_column(column, overflow="fold")
    for b in records:
        commit = (b.commit_hash or "")[:7] + (f" {b.commit_message[:40]}" if b.commit_message else "")
        table.add_row(b.id, styled(b.status.value), b.action, b.triggered_by.value, escape(commit or "-"),
                      escape(b.started_at or b.created_at), duration(b.duration),
                      escape(_first_line(b.error_message, 80)))
    out_console().print(table if records else f"no builds of {name} yet")


@cli.command()
@click.argument("name")
@click.option("--build", "build_id", metavar="ID", help="Logs of this build instead of the latest.")
@click.option("--app", is_flag=True, help="The running container's logs instead of a build's.")
@click.option("-f", "--follow", is_flag=True, help="With --app: keep streaming.")
@click.option("--tail", default=200, show_default=True, help="With --app: lines of history to show first.")
@pass_ctx
def logs(obj: Context, name: str, build_id: str | None, app: bool, follow: bool, tail: int) -> None:
    """Logs of NAME's latest build (or --build ID), or of the running app (--app)."""
    if follow and not app:
        raise click.UsageError("-f/--follow goes with --app (build logs are complete once stored)")
    _known(obj, name)
    if app:
        from gitops.errors import KalpanaError
        container = obj.runtime.observe(obj.settings.instance).containers.get(name)
        if container is None:
            raise KalpanaError(f"{name} has no container: `kalpana apply` deploys it")
        if follow:
            for chunk in obj.runtime.follow_logs(container.id, tail=tail):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(obj.runtime.logs(container.id, tail=tail))
        return
    from gitops.errors import KalpanaError
    build = obj.history.get(build_id) if build_id else obj.history.latest(name)
    if build is None or build.deployment != name:
        raise KalpanaError(f"no build {build_id!r} of {name}: see `kalpana builds {name}`" if build_id
                           else f"{name} has no builds yet: `kalpana apply` or `kalpana deploy {name}` makes one")
    sys.stdout.write(obj.history.logs(build.id))


@cli.command()
@click.argument("name")
@json_option
@pass_ctx
def deploy(obj: Context, name: str, as_json: bool) -> None:
    """Rebuild and redeploy NAME now, even if nothing changed."""
    progress = Progress(to_stderr=as_json)
    try:
        result = obj.engine(progress).deploy(name)
    finally:
        progress.close()
    summarize(result, as_json)


@cli.command()
@click.argument("name")
@pass_ctx
def stop(obj: Context, name: str) -> None:
    """Stop NAME; it stays stopped across `apply` until `kalpana start NAME`."""
    container = obj.engine().stop(name)
    out_console().print(f"stopped {name}" + ("" if container else " (it had no container)")
                        + f"; `kalpana start {name}` resumes it")


@cli.command()
@click.argument("name")
@json_option
@pass_ctx
def start(obj: Context, name: str, as_json: bool) -> None:
    """Resume a stopped deployment (and apply it)."""
    progress = Progress(to_stderr=as_json)
    try:
        result = obj.engine(progress).start(name)
    finally:
        progress.close()
    summarize(result, as_json)


@cli.command()
@click.argument("name")
@click.option("--to", "to", metavar="BUILD", help="Build id to return to (default: the previous successful one).")
@json_option
@pass_ctx
def rollback(obj: Context, name: str, to: str | None, as_json: bool) -> None:
    """Redeploy the image of an earlier successful build, without rebuilding."""
    progress = Progress(to_stderr=as_json)
    try:
        build = obj.engine(progress).rollback(name, to)
    finally:
        progress.close()
    if as_json:
        print_json({"build": build.to_dict()})
    else:
        out_console().print(f"{name} now runs {build.image} (rollback recorded as build {build.id})")


def _first_line(text: str | None, width: int) -> str:
    """Tables show the start of long messages; --json and `logs` have them whole."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _known(obj: Context, name: str) -> None:
    from gitops.errors import UnknownDeployment
    engine = obj.engine()
    load = engine.load()
    if name in load.desired or obj.history.latest(name) is not None:
        return
    raise UnknownDeployment(name, sorted(load.desired))
