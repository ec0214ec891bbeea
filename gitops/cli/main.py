"""Entry point: the click group, shared options, and the translation of errors.

Expected errors (KalpanaError) become one red line and a non-zero exit;
anything else prints a short line and where the traceback was written.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import signal
import sys
from functools import cached_property

import click

from gitops import __version__
from gitops.errors import KalpanaError

# Kalpana uses no pydantic plugin, and looking for one reads the metadata of every installed
# distribution each time a command starts (~10 ms). Set for the command and the workers it starts;
# a user who sets it keeps theirs.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


class Context:
    """Builds the core objects lazily, so `kalpana validate` never needs Docker."""

    def __init__(self, config: str | None):
        self.config = config

    @cached_property
    def settings(self):
        from gitops.config import load_settings
        return load_settings(self.config)

    @cached_property
    def runtime(self):
        from gitops.runtime.docker_runtime import DockerRuntime
        return DockerRuntime.connect(self.settings.docker_host)

    @cached_property
    def history(self):
        from gitops.history import History
        return History(self.settings.state_path, max_log_bytes=self.settings.max_log_bytes)

    def engine(self, progress=None):
        from gitops.engine import Engine
        from gitops.events import Events
        events = Events()
        if progress is not None:
            events.subscribe(progress)
        return Engine(self.settings, self.runtime, self.history, events)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts).")
pass_ctx = click.make_pass_decorator(Context)

#: The modules whose ``@cli.command()``s make up the CLI. They are imported when a command is
#: looked up, not before: ``--version`` needs none of them (nor pydantic, which they load).
COMMAND_MODULES = ("apply_cmd", "commands", "init", "operate", "routing_cmds", "watch")
#: Commands whose module is loaded alone when one of them is run: a repeated no-op `apply` is
#: answered before the models are imported (gitops.noop_replay).
ALONE = {"apply": "apply_cmd"}


def register_commands() -> None:
    """Import the command modules (each registers its commands on ``cli``)."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"gitops.cli.{name}")


class KalpanaGroup(click.Group):
    """Translates errors into one line and an exit code; loads the commands when one is looked up."""

    def get_command(self, ctx: click.Context, cmd_name: str):
        if cmd_name in ALONE:
            importlib.import_module(f"gitops.cli.{ALONE[cmd_name]}")
        else:
            register_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        register_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KalpanaError as exc:
            _error(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            _error("interrupted")
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            from gitops.crash import EXIT_CODE, crash_line

            _error(crash_line(exc))
            sys.exit(EXIT_CODE)


def _error(message: str) -> None:
    from gitops.cli.render import err_console, escape
    lines = message.splitlines() or [""]
    console = err_console()
    console.print(f"[red]error:[/red] {escape(lines[0])}")
    for line in lines[1:]:
        console.print(f"  {escape(line)}")


@click.group(cls=KalpanaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", metavar="FILE", envvar="KALPANA_CONFIG",
              help="Settings file (default ./kalpana.yaml; a missing default file means defaults).")
# The version from the package itself: asking the installed metadata scans every distribution.
@click.version_option(__version__, prog_name="kalpana")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Kalpana: deploy the apps declared in deployments.d/*.yaml to Docker, GitOps style."""
    ctx.obj = Context(config)


def main() -> None:
    """Console-script entry point."""
    # SIGTERM (systemd, CI timeouts, `kill`) gets what Ctrl-C gets: the build is recorded
    # CANCELLED and the old container restored, instead of a silent death mid-swap.
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the caller ignores it
        signal.signal(signal.SIGINT, _interrupt)
    # A short-lived command: skip the full garbage collection the interpreter runs at exit
    # (about 0.1 s of a no-op apply); the long-running daemon never gets here until it stops.
    atexit.register(gc.freeze)
    # Start-up creates some 100,000 objects that live as long as the process (modules, classes,
    # pydantic validators); at the default pace the collector walks them again and again, ~5% of
    # a no-op apply. Cycles are still collected, only less often; `watch` restores the default.
    gc.set_threshold(_STARTUP_GC_THRESHOLD, *_DEFAULT_GC_THRESHOLD[1:])
    cli(prog_name="kalpana")


_DEFAULT_GC_THRESHOLD = gc.get_threshold()
_STARTUP_GC_THRESHOLD = 100_000


def long_running() -> None:
    """The collector's default pace again, for a command that runs for days (the daemon)."""
    gc.set_threshold(*_DEFAULT_GC_THRESHOLD)


def _interrupt(signum, frame) -> None:
    from gitops import interrupt

    interrupt.request()  # raises KeyboardInterrupt, and marks the process (see gitops.interrupt)
