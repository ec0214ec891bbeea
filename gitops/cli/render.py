"""Turning core events and results into terminal output (rich), plain lines or JSON.

rich is imported when something is first printed with it: a no-op `kalpana apply`
prints one plain line and should not pay for loading it.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from gitops.events import Event, EventKind
from gitops.plan import Action, Plan

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def escape(text: str) -> str:
    """Escape rich markup in user text (names, messages, logs)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

ACTION_STYLE = {Action.CREATE: "green", Action.REBUILD: "yellow", Action.REDEPLOY: "cyan", Action.START: "blue",
                Action.STOP: "magenta", Action.REMOVE: "red", Action.NOOP: "dim"}
STATUS_STYLE = {"SUCCESS": "green", "FAILED": "red", "CANCELLED": "yellow", "BUILDING": "cyan", "PENDING": "dim",
                "running": "green", "failed": "red", "stopped": "yellow", "building": "cyan", "not deployed": "dim"}


def out_console() -> Console:
    return _console(stderr=False)


def err_console() -> Console:
    return _console(stderr=True)


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a log file): don't wrap tables at 80 columns.
    width = None if stream.isatty() else 200
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class Progress:
    """Renders engine events live: a spinner on a terminal, plain lines otherwise.

    With ``to_stderr`` (used by --json) progress goes to stderr so stdout stays one JSON document.
    """

    QUIET = {EventKind.PLAN, EventKind.INFO, EventKind.TRIGGER, EventKind.JOB_START, EventKind.JOB_DONE}

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
        if event.kind in self.QUIET:
            return
        name = f"[bold]{escape(event.deployment)}[/bold] " if event.deployment else ""
        message = escape(event.message)
        kind = event.kind
        if kind is EventKind.LOG:
            self.console.print(f"  [dim]{escape(event.deployment or '')} |[/dim] {message}")
            return
        if kind is EventKind.STEP_START:
            self.console.print(f"{name}[bold]{event.data.get('action', '')}[/bold]: {message}")
            self._spin(f"{event.deployment}: {event.data.get('action', '')}")
        elif kind is EventKind.PHASE:
            self.console.print(f"  {name}-> {message}")
            self._spin(f"{event.deployment}: {event.message}")
        elif kind is EventKind.STEP_DONE:
            self._stop()
            self.console.print(f"[green]OK[/green] {name}{message}")
        elif kind is EventKind.STEP_FAILED:
            self._stop()
            self.console.print(f"[red]FAILED[/red] {name}{message}")
        elif kind in (EventKind.WARNING, EventKind.LOCK_WAIT):
            self.console.print(f"[yellow]![/yellow] {name}{message}")
        elif kind is EventKind.RECOVERED:
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
    if value is None:
        return "-"
    style = STATUS_STYLE.get(value)
    return f"[{style}]{escape(value)}[/{style}]" if style else escape(value)


def duration(seconds: float | None) -> str:
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


class EventLines:
    """Every event as one JSON line on stdout: how `kalpana watch` follows the runs it starts."""

    def __call__(self, event: Event) -> None:
        sys.stdout.write(json.dumps(event_dict(event), default=str) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


def event_dict(event: Event) -> dict:
    """JSON form of an event."""
    return {"event": event.kind.value, "deployment": event.deployment, "message": event.message, **event.data}
