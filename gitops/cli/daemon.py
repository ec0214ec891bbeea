"""`kalpana watch` (the daemon) and `kalpana webhooks` (its URLs)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import click

from gitops.cli.commands import json_option, pass_ctx
from gitops.cli.main import Context, cli
from gitops.cli.render import escape, out_console, print_json
from gitops.events import Event, EventKind
from gitops.masking import mask_url


class LogLines:
    """One line per event on stderr: human-readable, or JSON for log shippers."""

    def __init__(self, fmt: str):
        self.json = fmt == "json"
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.LOG:
            return  # build output stays in the build's log (`kalpana logs NAME`), not in the daemon log
        now = datetime.now(timezone.utc)
        if self.json:
            line = json.dumps({"time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                               "event": event.kind.value, "deployment": event.deployment,
                               "message": event.message, **{k: v for k, v in event.data.items() if k != "build"}},
                              default=str)
        else:
            who = f"{event.deployment}: " if event.deployment else ""
            line = f"{now:%Y-%m-%d %H:%M:%S} {event.kind.value:<11} {who}{event.message}"
        with self._lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


@cli.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="One line per event: text for people, json for log shippers.")
@click.option("--no-server", is_flag=True, help="Don't serve webhooks (file watching, polling and drift only).")
@pass_ctx
def watch(obj: Context, log_format: str, no_server: bool) -> None:
    """Run the daemon: apply on file changes, webhooks and polls; heal drift."""
    from gitops.watch import Daemon
    from gitops.events import Events

    events = Events()
    events.subscribe(LogLines(log_format))
    config = Path(obj.config).resolve() if obj.config else (Path("kalpana.yaml").resolve()
                                                           if Path("kalpana.yaml").exists() else None)
    daemon = Daemon(obj.settings, config, obj.runtime, obj.history, events, serve=not no_server)

    def stop(signum, frame) -> None:
        # Only flag it here: run() does the shutdown, outside the signal handler.
        threading.Thread(target=daemon.stop, args=(f"received {signal.Signals(signum).name}",), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.exit(daemon.run())


@cli.command()
@json_option
@pass_ctx
def webhooks(obj: Context, as_json: bool) -> None:
    """Each deployment's webhook URL (for GitHub → Settings → Webhooks), and the instance-wide one."""
    settings = obj.settings
    engine = obj.engine()
    load = engine.load()
    base = (settings.public_url or f"http://{settings.listen}").rstrip("/")
    rows = [{"name": None, "url": f"{base}/webhook", "secret_set": bool(settings.webhook_secret),
             "auto_rebuild": True, "repo": mask_url(settings.repo.url) if settings.repo else None}]
    for name, d in sorted(load.desired.items()):
        source = d.spec.source
        rows.append({"name": name, "url": f"{base}/api/deployments/{name}/webhook",
                     "secret_set": bool(d.spec.webhook_secret), "auto_rebuild": d.spec.auto_rebuild,
                     "repo": mask_url(source.repo) if source and source.repo else None})
    if as_json:
        print_json({"webhooks": rows})
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("DEPLOYMENT", "WEBHOOK URL", "SECRET", "AUTO-REBUILD", "REPOSITORY"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(escape(r["name"] or "(instance)"), escape(r["url"]),
                      "set" if r["secret_set"] else "[red]missing[/red]", "yes" if r["auto_rebuild"] else "no",
                      escape(r["repo"] or "-"))
    out_console().print(table)
    out_console().print("GitHub: content type application/json, the secret above, \"Just the push event\".")
