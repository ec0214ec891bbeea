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
from gitops.cli.main import Context, cli, long_running
from gitops.cli.render import out_console, print_json, webhooks_table, write
from gitops.events import Event, LogLine


class LogLines:
    """One line per event on stderr: human-readable, or JSON for log shippers."""

    def __init__(self, fmt: str):
        self.json = fmt == "json"
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine):
            return  # build output stays in the build's log (`kalpana logs NAME`), not in the daemon log
        now = datetime.now(timezone.utc)
        if self.json:
            # The build record is in the history (`kalpana builds`); one log line stays one short line.
            fields = {k: v for k, v in event.to_dict().items()
                      if k != "build" and not (k == "build_id" and v is None)}
            line = json.dumps({"time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **fields},
                              default=str)
        else:
            who = f"{event.deployment}: " if event.deployment else ""
            line = f"{now:%Y-%m-%d %H:%M:%S} {event.kind:<11} {who}{event.message}"
        with self._lock:
            write(line + "\n", stderr=True)


@cli.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="One line per event: text for people, json for log shippers.")
@click.option("--no-server", is_flag=True, help="Don't serve webhooks (file watching, polling and drift only).")
@pass_ctx
def watch(obj: Context, log_format: str, no_server: bool) -> None:
    """Run the daemon: apply on file changes, webhooks and polls; heal drift."""
    long_running()
    from gitops.daemon import Daemon
    from gitops.events import Events

    events = Events()
    events.subscribe(LogLines(log_format))
    config = Path(obj.config).resolve() if obj.config else (Path("kalpana.yaml").resolve()
                                                           if Path("kalpana.yaml").exists() else None)
    daemon = Daemon(obj.settings, config, obj.runtime, obj.history, events, serve=not no_server)

    def stop(signum, frame) -> None:
        # Only flag it here: run() does the shutdown, outside the signal handler.
        threading.Thread(target=daemon.stop, args=(f"received {signal.Signals(signum).name}",), daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = daemon.run()
    finally:
        # The handlers point at this daemon: whoever called us (a test, an embedding) gets its own back.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code)


@cli.command()
@json_option
@pass_ctx
def webhooks(obj: Context, as_json: bool) -> None:
    """Each deployment's webhook URL (for GitHub → Settings → Webhooks), and the instance-wide one."""
    endpoints = obj.engine().webhooks()
    if as_json:
        print_json({"webhooks": [e.to_dict() for e in endpoints]})
        return
    out_console().print(webhooks_table(endpoints))
    out_console().print("GitHub: content type application/json, the secret above, \"Just the push event\".")
