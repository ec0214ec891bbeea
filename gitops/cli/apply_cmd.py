"""`kalpana apply`, in a module of its own: loaded alone (``main.ALONE``), it answers a repeated
no-op apply from ``gitops.noop_replay`` before pydantic and the models are imported."""

from __future__ import annotations

import sys

import click

from gitops.cli.main import Context, cli, json_option, pass_ctx
from gitops.cli.output import write


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--no-prune", is_flag=True, help="Keep containers no file declares.")
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `kalpana plan`).")
@click.option("--fetch", is_flag=True, help="First fetch the git sources of these deployments.")
@click.option("--force", is_flag=True, help="Rebuild and redeploy to what the files declare even when up to date "
              "(e.g. after a rollback).")
@click.option("--take-over", is_flag=True, help="Take over deployments declared here whose containers another "
              "workspace of this instance manages.")
@json_option
@pass_ctx
def apply(obj: Context, names: tuple[str, ...], no_prune: bool, dry_run: bool, fetch: bool, force: bool,
          take_over: bool, as_json: bool) -> None:
    """Make Docker match the files: build and deploy what changed, prune what is gone."""
    plain = not (names or no_prune or dry_run or fetch or force or take_over)
    if plain:
        from gitops import noop_replay

        replayed = noop_replay.replay(obj.config, as_json)
        if replayed is not None:
            write(replayed)
            sys.exit(0)
    from gitops.cli.commands import show_plan, run_with_progress, summarize

    if dry_run:
        engine = obj.engine()
        result, load = engine.plan(list(names) or None, prune=not no_prune, take_over=take_over)
        show_plan(result, load, as_json)
        sys.exit(0 if load.ok else 1)
    if plain:
        result = _apply_and_record(obj, as_json)
    else:
        result = run_with_progress(obj, as_json, lambda engine: engine.apply(list(names) or None, prune=not no_prune,
                                                                             fetch=fetch, force=force,
                                                                             take_over=take_over))
    summarize(result, as_json)


def _apply_and_record(obj: Context, as_json: bool):
    """A plain apply; when it changed nothing and said nothing, its output is kept for the next one to replay."""
    import time

    from gitops import noop_replay
    from gitops.cli.commands import run_with_progress, summary_line
    from gitops.cli.render import json_document

    started = time.time()
    before = noop_replay.settings_part(obj.config)  # before the settings are loaded: a change meanwhile is seen
    said: list = []

    def work(engine):
        engine.events.subscribe(said.append)
        base = noop_replay.inputs_of(obj.config, obj.settings, obj.runtime.address)
        start = noop_replay.start(base)
        result = engine.apply(None)
        noop_replay.keep_if_noop(engine, obj.config, result, said, base=base, before=before, start=start,
                                 started=started, outputs=lambda: (summary_line(result),
                                                                   json_document(result.to_dict())))
        return result

    return run_with_progress(obj, as_json, work)
