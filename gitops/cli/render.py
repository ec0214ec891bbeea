"""Turning core events and results into terminal output (rich), plain lines or JSON.

rich is imported when something is first printed with it: a no-op `kalpana apply`
prints one plain line and should not pay for loading it.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from gitops.events import (Event, LockWait, LogLine, PhaseEntered, Recovered, StepFailed, StepStarted,
                           StepSucceeded, Warned)
from gitops.plan import Action, Plan

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from gitops.build import Build
    from gitops.status import DeploymentStatus
    from gitops.webhook import Endpoint


def escape(text: str) -> str:
    """Escape rich markup in user text (names, messages, logs)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

ACTION_STYLE = {Action.CREATE: "green", Action.REBUILD: "yellow", Action.REDEPLOY: "cyan", Action.START: "blue",
                Action.STOP: "magenta", Action.REMOVE: "red", Action.NOOP: "dim"}
STATUS_STYLE = {"SUCCESS": "green", "FAILED": "red", "CANCELLED": "yellow", "BUILDING": "cyan", "PENDING": "dim",
                "running": "green", "failed": "red", "stopped": "yellow", "building": "cyan", "not deployed": "dim"}


def out_console() -> Console:
    """A rich console on stdout."""
    return _console(stderr=False)


def err_console() -> Console:
    """A rich console on stderr (progress beside --json, errors)."""
    return _console(stderr=True)


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a log file): don't wrap tables at 80 columns.
    width = None if stream.isatty() else 200
    return _console_class()(stderr=stderr, highlight=False, soft_wrap=True, width=width)


@cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class PipeSafeConsole(Console):
        """A console that outlives its reader: rich's default answer to a closed pipe is exit 1 mid-deploy."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            reader_gone(self.file)

    return PipeSafeConsole


def reader_gone(stream: Any) -> None:
    """The reader of ``stream`` went away (``kalpana deploy x | head -1``): send the rest to /dev/null.

    The work goes on and is recorded; only its output has nobody left to read it. The file
    descriptor itself is pointed at /dev/null, so every later write, and the interpreter's final
    flush of what is still buffered, succeed instead of raising (or exiting 120).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing left to redirect
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def write(text: str, stderr: bool = False) -> None:
    """Write plain ``text`` to stdout (or stderr) now; a closed reader is not an error (see reader_gone)."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        reader_gone(stream)


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    write(json.dumps(data, indent=2, default=str) + "\n")


class Progress:
    """Renders engine events live: a spinner on a terminal, plain lines otherwise.

    With ``to_stderr`` (used by --json) progress goes to stderr so stdout stays one JSON document.
    """

    def __init__(self, to_stderr: bool = False):
        self._to_stderr = to_stderr
        self._console: Console | None = None
        self._status = None

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = err_console() if self._to_stderr else out_console()
        return self._console

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def __call__(self, event: Event) -> None:
        # The plan and the daemon's own events (triggers, jobs) are not shown while a command runs.
        name = f"[bold]{escape(event.deployment)}[/bold] " if event.deployment else ""
        message = escape(event.message)
        if isinstance(event, LogLine):
            self.console.print(f"  [dim]{escape(event.deployment or '')} |[/dim] {message}")
        elif isinstance(event, StepStarted):
            self.console.print(f"{name}[bold]{escape(event.action)}[/bold]: {message}")
            self._spin(f"{event.deployment}: {event.action}")
        elif isinstance(event, PhaseEntered):
            self.console.print(f"  {name}-> {message}")
            self._spin(f"{event.deployment}: {event.message}")
        elif isinstance(event, StepSucceeded):
            self._stop()
            self.console.print(f"[green]OK[/green] {name}{message}")
        elif isinstance(event, StepFailed):
            self._stop()
            self.console.print(f"[red]FAILED[/red] {name}{message}")
        elif isinstance(event, (Warned, LockWait)):
            self.console.print(f"[yellow]![/yellow] {name}{message}")
        elif isinstance(event, Recovered):
            self.console.print(f"[yellow]recovered[/yellow] {name}{message}")

    def _spin(self, text: str) -> None:
        if not self.live:
            return
        if self._status is None:
            self._status = self.console.status(escape(text))
            self._status.start()
        else:
            self._status.update(escape(text))

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._stop()


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def plan_table(plan: Plan) -> Table:
    """The plan as a table: deployment, action, reason."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("DEPLOYMENT", style="bold")
    table.add_column("ACTION")
    table.add_column("REASON", overflow="fold")
    for step in plan.steps:
        style = ACTION_STYLE[step.action]
        table.add_row(escape(step.name), f"[{style}]{step.action.value}[/{style}]", escape(step.reason))
    return table


def styled(value: str | None) -> str:
    """A status or state in its colour (the text itself always says it too)."""
    if value is None:
        return "-"
    style = STATUS_STYLE.get(value)
    return f"[{style}]{escape(value)}[/{style}]" if style else escape(value)


def duration(seconds: float | None) -> str:
    """Seconds as people read them: 4.2s, 3m07s, 5h02m, 3d4h."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24}h"


def status_table(rows: list[DeploymentStatus]) -> Table:
    """`kalpana status`: one row per deployment."""
    table = _table("DEPLOYMENT", "STATE", "URL", "BUILD", "IMAGE", "UPTIME", "NOTE")
    for r in rows:
        table.add_row(f"[bold]{escape(r.name)}[/bold]", styled(r.state.value), escape(r.url or "-"),
                      escape(r.build_id or "-"), escape(r.image or "-"), duration(r.uptime_seconds),
                      escape(first_line(r.detail, 90)))
    return table


def builds_table(builds: list[Build]) -> Table:
    """`kalpana builds NAME`: one row per build, newest first."""
    table = _table("BUILD", "STATUS", "ACTION", "TRIGGER", "COMMIT", "STARTED", "DURATION", "ERROR")
    for b in builds:
        commit = (b.commit_hash or "")[:7] + (f" {b.commit_message[:40]}" if b.commit_message else "")
        table.add_row(b.id, styled(b.status.value), b.action, b.triggered_by.value, escape(commit or "-"),
                      escape(b.started_at or b.created_at), duration(b.duration),
                      escape(first_line(b.error_message, 80)))
    return table


def webhooks_table(endpoints: list[Endpoint]) -> Table:
    """`kalpana webhooks`: each endpoint's URL, whether its secret is set, what it follows."""
    table = _table("DEPLOYMENT", "WEBHOOK URL", "SECRET", "AUTO-REBUILD", "REPOSITORY")
    for e in endpoints:
        table.add_row(escape(e.name or "(instance)"), escape(e.url), "set" if e.secret_set else "[red]missing[/red]",
                      "yes" if e.auto_rebuild else "no", escape(e.repo or "-"))
    return table


def first_line(text: str | None, width: int) -> str:
    """Tables show the start of long messages; --json and `logs` have them whole."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
