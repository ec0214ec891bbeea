"""Turning core events and results into terminal output (rich), plain lines or JSON.

rich is imported when something is first printed with it: a no-op `kalpana apply`
prints one plain line and should not pay for loading it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from gitops.cli.output import plain, reader_gone, write  # noqa: F401 - reader_gone, write: re-exported
from gitops.events import (Event, LockWait, LogLine, PhaseEntered, Recovered, StepFailed, StepStarted,
                           StepSucceeded, Warned)
from gitops.labels import IMAGE_REPOSITORY
from gitops.plan import Action, Plan
from gitops.source import short_revision

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from gitops.build import Build
    from gitops.status import DeploymentStatus
    from gitops.webhook import Endpoint


# rich.markup.escape's own pattern: importing rich (~25 ms) for it cost a no-op apply, which
# escapes every event's text but prints none of them with rich (test_render_escape checks they agree).
_MARKUP = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """Escape rich markup in user text (names, messages, logs), as ``rich.markup.escape`` does."""
    text = _MARKUP.sub(lambda m: f"{m[1]}{m[1]}\\{m[2]}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text

ACTION_STYLE = {Action.CREATE: "green", Action.REBUILD: "yellow", Action.REDEPLOY: "cyan", Action.START: "blue",
                Action.STOP: "magenta", Action.REMOVE: "red", Action.NOOP: "dim", Action.FOREIGN: "dim"}
STATUS_STYLE = {"SUCCESS": "green", "FAILED": "red", "CANCELLED": "yellow", "BUILDING": "cyan", "PENDING": "dim",
                "running": "green", "failed": "red", "stopped": "yellow", "building": "cyan", "not deployed": "dim"}


def out_console(wide: bool = False) -> Console:
    """A rich console on stdout; ``wide`` (--wide) never wraps: lines are as long as their content."""
    return _console(stderr=False, width=WIDE if wide else None)


def err_console() -> Console:
    """A rich console on stderr (progress beside --json, errors)."""
    return _console(stderr=True)


#: The width a --wide table may take: wider than any row, so none wraps.
WIDE = 100_000


def _terminal(stream) -> bool:
    """Whether rich would take ``stream`` for a terminal (``Console.is_terminal``'s rule, without rich)."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed, or not a real file
        return False


def _console(stderr: bool, width: int | None = None) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a log file): don't wrap tables at 80 columns, unless COLUMNS asks for a width.
    if width is None and not (stream.isatty() or os.environ.get("COLUMNS", "").isdigit()):
        width = 200
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


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    write(json_document(data))


def json_document(data: Any) -> str:
    """``data`` as the CLI prints JSON: indented, one document, a newline at the end."""
    return json.dumps(data, indent=2, default=str) + "\n"


class Progress:
    """Renders engine events live: a spinner on a terminal, plain lines otherwise.

    Steps of several deployments may run at once: every line names its deployment, and the
    spinner lists each step in flight with its latest phase, stopping when the last one ends.
    The bus delivers one event at a time (``Events``), so this needs no lock of its own.
    With ``to_stderr`` (used by --json) progress goes to stderr so stdout stays one JSON document.
    """

    def __init__(self, to_stderr: bool = False):
        self._to_stderr = to_stderr
        self._console: Console | None = None
        self._status = None
        self._running: dict[str, str] = {}  # deployment -> what it does now, in the order steps started
        # Not a terminal (a pipe, a log, the benchmarks): plain lines, and no rich to import (~20 ms of a run).
        stream = sys.stderr if to_stderr else sys.stdout
        self._plain = not _terminal(stream)

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = err_console() if self._to_stderr else out_console()
        return self._console

    @property
    def live(self) -> bool:
        return not self._plain and self.console.is_terminal

    def _print(self, markup: str) -> None:
        if self._plain:
            write(plain(markup) + "\n", stderr=self._to_stderr)
        else:
            self.console.print(markup)

    def __call__(self, event: Event) -> None:
        # The plan and the daemon's own events (triggers, jobs) are not shown while a command runs.
        name = f"[bold]{escape(event.deployment)}[/bold] " if event.deployment else ""
        message = escape(event.message)
        if isinstance(event, LogLine):
            self._print(f"  [dim]{escape(event.deployment or '')} |[/dim] {message}")
        elif isinstance(event, StepStarted):
            self._print(f"{name}[bold]{escape(event.action)}[/bold]: {message}")
            self._spin(event.deployment, event.action)
        elif isinstance(event, PhaseEntered):
            self._print(f"  {name}-> {message}")
            self._spin(event.deployment, event.message)
        elif isinstance(event, StepSucceeded):
            self._ended(event.deployment)
            self._print(f"[green]OK[/green] {name}{message}")
        elif isinstance(event, StepFailed):
            self._ended(event.deployment)
            self._print(f"[red]FAILED[/red] {name}{message}")
        elif isinstance(event, (Warned, LockWait)):
            self._print(f"[yellow]![/yellow] {name}{message}")
        elif isinstance(event, Recovered):
            self._print(f"[yellow]recovered[/yellow] {name}{message}")

    def spinner_text(self) -> str:
        """What the spinner says: the one step in flight, or how many and each one's phase."""
        if len(self._running) == 1:
            (who, what), = self._running.items()
            return f"{who}: {what}"
        return f"{len(self._running)} in flight: " + "; ".join(f"{who}: {what}" for who, what in self._running.items())

    def _spin(self, deployment: str | None, text: str) -> None:
        if deployment is None:
            return  # a run-wide phase (Traefik started, a config fetch): its line is enough
        self._running[deployment] = text
        if not self.live:
            return
        # One line: a long list is cut at the terminal's width rather than wrapped over the output.
        shown = escape(_cut(self.spinner_text(), max(20, self.console.width - 4)))
        if self._status is None:
            self._status = self.console.status(shown)
            self._status.start()
        else:
            self._status.update(shown)

    def _ended(self, deployment: str | None) -> None:
        self._running.pop(deployment, None)
        if not self._running:
            self._stop()
        elif self._status is not None:
            self._status.update(escape(_cut(self.spinner_text(), max(20, self.console.width - 4))))

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._running.clear()
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


def status_table(rows: list[DeploymentStatus], wide: bool = False, width: int = 80) -> RenderableType:
    """`kalpana status`: one row per deployment, then each row's note in full.

    Fits ``width`` columns: a URL and a build id are never broken (they are copied and
    clicked); notes go below the table, wrapped at spaces, so their remedy stays readable.
    ``wide`` adds the image and puts the note in its row, whatever the width.
    """
    columns = [_Column("DEPLOYMENT", style="bold"), _Column("STATE"), _Column("URL", keep=True),
               _Column("BUILD", keep=True)]
    if wide:
        columns.append(_Column("IMAGE", keep=True))
    columns.append(_Column("UPTIME", keep=True))
    if wide:
        columns.append(_Column("NOTE"))
    cells = []
    for r in rows:
        row = [escape(r.name), styled(r.state.value), escape(r.url or "-"), escape(r.build_id or "-")]
        if wide:
            row.append(escape(short_image(r.image, r.name)))
        row.append(duration(r.uptime_seconds))
        if wide:
            row.append(escape(r.detail or ""))
        cells.append(row)
    if not wide and not _fits(columns, rows, width):
        # The URL must stay whole: the build id gives way (it is in --wide and --json).
        columns = [c for c in columns if c.header != "BUILD"]
        cells = [row[:3] + row[4:] for row in cells]
    table = _grid(columns, cells)
    if wide:
        return table
    return _with_notes(table, [(r.name, summary(r.detail)) for r in rows if r.detail])


def builds_table(builds: list[Build], wide: bool = False) -> RenderableType:
    """`kalpana builds NAME`: one row per build, newest first, then each failure's message.

    A failure shows its first line and the line that says what to do (see ``summary``);
    ``wide`` adds start time, commit message and image, and the whole error in its row.
    """
    headers = ["BUILD", "STATUS", "ACTION", "TRIGGER", "COMMIT"] + (["STARTED", "IMAGE"] if wide else []) + [
        "DURATION"] + (["ERROR"] if wide else [])
    # With --wide the commit message may fold; ids, times and durations stay whole.
    columns = [_Column(h, keep=h in ("BUILD", "DURATION", "STARTED", "IMAGE") or (h == "COMMIT" and not wide))
               for h in headers]
    cells = []
    for b in builds:
        # A plain directory has no commit: its content hash, marked as one (content:d9b193f).
        commit = (b.commit_hash or "")[:7] or (short_revision(b.revision) if b.revision else "") or "-"
        if wide and b.commit_message:
            commit += f" {first_line(b.commit_message, 50)}"
        row = [b.id, styled(b.status.value), escape(b.action), b.triggered_by.value, escape(commit)]
        if wide:
            row += [escape(b.started_at or b.created_at), escape(short_image(b.image, b.deployment))]
        row.append(duration(b.duration))
        if wide:
            row.append(escape(b.error_message or ""))
        cells.append(row)
    table = _grid(columns, cells)
    if wide:
        return table
    return _with_notes(table, [(b.id, summary(b.error_message)) for b in builds if b.error_message])


class _Column:
    """A column's header, style, and whether its cells may be broken across lines."""

    def __init__(self, header: str, style: str | None = None, keep: bool = False):
        self.header, self.style, self.keep = header, style, keep


def _grid(columns: list[_Column], cells: list[list[str]]) -> Table:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for c in columns:
        # keep: a URL, an id or a number broken over two lines can no longer be copied or clicked.
        table.add_column(c.header, style=c.style, no_wrap=c.keep, overflow="ignore" if c.keep else "fold")
    for row in cells:
        table.add_row(*row)
    return table


def _fits(columns: list[_Column], rows: list[DeploymentStatus], width: int) -> bool:
    """Whether the unbreakable columns leave the deployment and state columns room for a short word."""
    from rich.text import Text

    plain = {"URL": [r.url or "-" for r in rows], "BUILD": [r.build_id or "-" for r in rows],
             "UPTIME": [duration(r.uptime_seconds) for r in rows]}
    plain["DEPLOYMENT"] = [r.name for r in rows]
    plain["STATE"] = [r.state.value for r in rows]
    # Every column whole: a name split over two lines reads as two deployments.
    need = sum(max([len(c.header)] + [Text.from_markup(v).cell_len for v in plain.get(c.header, [])])
               for c in columns)
    gaps = 2 * (len(columns) - 1)
    return need + gaps <= width


def _with_notes(table: Table, notes: list[tuple[str, str]]) -> RenderableType:
    from rich.console import Group
    from rich.table import Table as Grid
    from rich.text import Text

    if not notes:
        return table
    # A grid, not bare text: a table wraps its cells at spaces whatever the console's soft_wrap.
    grid = Grid.grid(padding=(0, 0, 0, 2))
    grid.add_column(overflow="fold")
    for who, note in notes:
        grid.add_row(Text.assemble((f"{who}: ", "bold"), note))
    return Group(table, Text(""), grid)


# A line of an error that tells the user what to do, e.g. "run `docker pull busybox` ..." or "fix the syntax".
_REMEDY = re.compile(r"(`kalpana |\b(run|set|fix|check|use|start|free|see|give|try|remove|add|create|point)\b)",
                     re.IGNORECASE)


def summary(text: str | None) -> str:
    """A message as tables show it: its first line, plus the later line that says what to do, if any.

    Error messages say what went wrong, then what to do (STYLE 6); in a multi-line one
    (a build's last log lines, a list of file errors) the remedy can be any line, and a table
    that cut the message short hid it. The rest is in --wide, --json and `kalpana logs`.
    """
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    shown = [lines[0]]
    if len(lines) > 1 and not _REMEDY.search(lines[0]):
        remedy = next((line for line in lines[1:] if _REMEDY.search(line)), None)
        if remedy:
            shown.append(remedy)
    hidden = len(lines) - len(shown)
    return " / ".join(shown) + (f" (+{hidden} more line{'s' if hidden > 1 else ''}: --wide)" if hidden else "")


def short_image(image: str | None, deployment: str) -> str:
    """An image as tables show it: the tag alone when it is one of the deployment's own images."""
    if not image:
        return "-"
    repository, _, tag = image.rpartition(":")
    if tag and "/" not in tag and repository.startswith(f"{IMAGE_REPOSITORY}/") and (
            repository.endswith(f"/{deployment}")):
        return tag
    return image


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


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
