"""Routing commands: `kalpana routes` and `kalpana traefik up|down|status`."""

from __future__ import annotations


from gitops.cli.commands import json_option, pass_ctx
from gitops.cli.main import Context, cli
from gitops.cli.render import escape, out_console, print_json, write


@cli.command()
@json_option
@pass_ctx
def routes(obj: Context, as_json: bool) -> None:
    """Every host Kalpana routes through Traefik: to which container and port, and whether it is ready now."""
    result = obj.engine().routes_report()
    rows = result.rows
    if as_json:
        print_json(result.to_dict())
        return
    if not rows:
        write("no routes (subdomain mode needs traefik_base_url and a deployment with a subdomain)\n")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("HOST", "CONTAINER", "PORT", "READY", "VIA"):
        table.add_column(column)
    for r in rows:
        ready = "[green]yes[/green]" if r.ready else f"[red]no[/red] ({escape(r.detail)})"
        table.add_row(escape(f"https://{r.host}"), escape(r.container or "-"), str(r.port or "-"), ready, r.via)
    out_console().print(table)
    note = result.unserved_reason()
    if note:
        write(note + "\n")


@cli.group()
def traefik() -> None:
    """Kalpana's Traefik (kalpana-traefik): start, stop, show. `down` keeps the certificate volume."""


def _state_lines(state) -> str:
    running = "running" if state.running else "not running"
    who = f"{state.container} ({state.image}), {running}" if state.container else "no Traefik on the network"
    return (f"traefik: {who}\nmode: {state.mode.value}\nnetwork: {state.network}\nroutes: {state.routes_dir}")


@traefik.command("up")
@json_option
@pass_ctx
def traefik_up(obj: Context, as_json: bool) -> None:
    """Create the network and start kalpana-traefik, unless a Traefik already serves the network."""
    state, started = obj.engine().traefik_up()
    if as_json:
        print_json({**state.to_dict(), "started": started})
        return
    write(("started " if started else "already there: ") + _state_lines(state) + "\n")


@traefik.command("down")
@json_option
@pass_ctx
def traefik_down(obj: Context, as_json: bool) -> None:
    """Stop and remove kalpana-traefik; the acme.json volume (certificates) is kept."""
    removed = obj.engine().traefik_down()
    if as_json:
        print_json({"removed": removed.name if removed else None})
        return
    write((f"removed {removed.name}; certificates kept in its volume" if removed else "kalpana-traefik is not there")
          + "\n")


@traefik.command("status")
@json_option
@pass_ctx
def traefik_status(obj: Context, as_json: bool) -> None:
    """Which Traefik serves the routes (Kalpana's or yours), and whether it runs."""
    state = obj.engine().traefik_state()
    if as_json:
        print_json(state.to_dict())
        return
    write(_state_lines(state) + "\n")
