#!/usr/bin/env python3
"""Benchmark: the cost of history reads and writes at 20,000 build records, and after ``prune``.

Needs no Docker: it drives ``gitops.history.History`` in-process, in a temporary
state directory, the way ``kalpana status`` and ``kalpana apply`` do.

1. Create a history of ``--records`` finished builds spread over ``--deployments``
   deployments (one ``import_builds`` write, realistic record sizes), a small log
   file per build (``--no-logs`` skips them), a few operator intents and a few
   unfinished builds of another host (which ``mark_interrupted`` must leave alone).
2. Time, ``--reps`` times each, median shown:
   * ``latest_per_deployment()`` -- what ``kalpana status`` reads;
   * ``list()`` -- what ``status`` read before (every record made into a Build), for reference;
   * ``stopped()`` and ``mark_interrupted()`` -- what every ``apply`` reads first;
   * ``new_build`` + ``finish`` -- the two locked rewrites every build adds at least.
3. ``prune(keep=--keep)`` once (timed), and the same figures again.
4. With ``--cli``: the real ``kalpana status`` command (a fresh process, as a user runs it; it
   needs a Docker engine for its one listing) on that state, before and after prune, and with
   ``--baseline-tree DIR`` also the ``kalpana status`` of another checkout (say, the code before
   retention) on the same 20,000 records, in the same run.

Every operation opens the file afresh under the lock and parses all of it, so
its cost follows the file size: prune is what bounds it.

    python benchmarks/history_size.py [--records 20000] [--deployments 10] [--keep 50] [--reps 7] [--json]
                                      [--cli [--baseline-tree DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import log, machine_info, summary  # noqa: E402

from gitops.build import Build, BuildStatus, Trigger  # noqa: E402
from gitops.history import History  # noqa: E402


def populate(history: History, records: int, deployments: int, logs: bool) -> None:
    """``records`` finished builds, oldest first, in one write; a few unfinished ones and intents besides."""
    builds = []
    for i in range(records):
        name = f"app-{i % deployments:02d}"
        build_id = f"20250101-{i // 60 % 1_000_000:06d}-{i % 65536:04x}"
        failed = i % 7 == 0
        builds.append(Build(
            id=build_id, deployment=name, status=BuildStatus.FAILED if failed else BuildStatus.SUCCESS,
            triggered_by=Trigger.WEBHOOK, action="rebuild", reason="source a1b2c3d -> d4e5f6a",
            commit_hash=f"{i:040x}", commit_message=f"Fix the thing number {i}\n\nA body of a commit message.",
            branch="main", revision=f"{i:040x}", error_message="exit code 2" if failed else None,
            image=None if failed else f"kalpana/bench/{name}:{build_id}",
            created_at="2025-01-01T00:00:00.000Z", started_at="2025-01-01T00:00:00.100Z",
            completed_at="2025-01-01T00:00:42.000Z",
            durations={"build": 30.5, "deploy": 10.2, "gap": 0.4, "total": 41.9}, pid=4242, host="build-host"))
    history.import_builds(builds)
    if logs:
        for build in builds:
            history.append_log(build.id, f"==> building kalpana/bench/{build.deployment}:{build.id}\n"
                                         "Step 1/4 : FROM busybox\n ---> 0123456789ab\nSuccessfully built\n")
    # Unfinished builds of another host: mark_interrupted must look at them and leave them be.
    for i in range(3):
        b = history.new_build(f"app-{i:02d}", Trigger.AUTO, "rebuild", status=BuildStatus.BUILDING)
        history.update(b.id, host="another-host")
    history.set_stopped("app-01", True)
    history.assign_port("app-02", 28080)


def timed(fn: Callable[[], Any], reps: int) -> dict[str, Any]:
    fn()  # warm-up: imports, first-call caches
    samples = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return summary(samples)


def measure(history: History, reps: int) -> dict[str, dict[str, Any]]:
    def new_build_and_finish() -> None:
        build = history.new_build("app-00", Trigger.MANUAL, "deploy")
        history.finish(build.id, BuildStatus.SUCCESS)

    return {
        "latest_per_deployment": timed(history.latest_per_deployment, reps),
        "list (status before)": timed(history.list, reps),
        "stopped": timed(history.stopped, reps),
        "mark_interrupted": timed(history.mark_interrupted, reps),
        "new_build + finish": timed(new_build_and_finish, reps),
    }


def status_project(root: Path, state: Path, deployments: int) -> Path:
    """A kalpana.yaml over ``state`` and one deployment file per deployment of the history; its path."""
    (root / "deployments.d").mkdir(parents=True)
    for i in range(deployments):
        (root / "deployments.d" / f"app-{i:02d}.yaml").write_text(
            f"name: app-{i:02d}\nimage: busybox\nstart_command: sleep 1000\nport: 8080\nexposed_port: {29000 + i}\n")
    config = root / "kalpana.yaml"
    # An instance of its own: the one Docker listing finds no container, as on a fresh host.
    config.write_text(f"state_dir: {state}\ninstance: bench-h{secrets.token_hex(3)}\n")
    return config


def time_status(config: Path, reps: int, tree: Path | None = None) -> dict[str, Any]:
    """``kalpana status --json`` as a fresh process, ``reps`` times (from ``tree`` when given)."""
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None

    def run() -> None:
        subprocess.run([sys.executable, "-m", "gitops", "-c", str(config), "status", "--json"], env=env,
                       cwd=config.parent, capture_output=True, check=True, timeout=120)

    return timed(run, reps)


def state_size(history: History) -> dict[str, int]:
    return {"records": len(history.list()), "history_json_bytes": history.db_path.stat().st_size,
            "log_files": len(os.listdir(history.logs_dir))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--deployments", type=int, default=10)
    parser.add_argument("--keep", type=int, default=50, help="keep_builds passed to prune")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-logs", action="store_true", help="no log file per build")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary state directory")
    parser.add_argument("--cli", action="store_true", help="also time the `kalpana status` command (needs Docker)")
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="with --cli: also time `kalpana status` of this checkout on the same records")
    args = parser.parse_args(argv)
    cli: dict[str, Any] = {}

    state = Path(tempfile.mkdtemp(prefix="kalpana-history-bench-"))
    try:
        history = History(state)
        log(f"creating {args.records:,} records over {args.deployments} deployments in {state}")
        began = time.perf_counter()
        populate(history, args.records, args.deployments, logs=not args.no_logs)
        created_in = time.perf_counter() - began
        before_size = state_size(history)
        log(f"created in {created_in:.1f} s; measuring ({args.reps} reps)")
        before = measure(history, args.reps)
        if args.cli:
            config = status_project(state / "project", state, args.deployments)
            if args.baseline_tree:
                cli["status, baseline tree"] = time_status(config, args.reps, args.baseline_tree)
            cli["status, before prune"] = time_status(config, args.reps)

        began = time.perf_counter()
        dropped = history.prune(keep=args.keep)
        prune_seconds = time.perf_counter() - began
        after_size = state_size(history)
        log(f"prune(keep={args.keep}) dropped {len(dropped):,} records in {prune_seconds:.2f} s; measuring again")
        after = measure(history, args.reps)
        if args.cli:
            cli["status, after prune"] = time_status(config, args.reps)
    finally:
        if args.keep_dir:
            log(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)

    result = {"machine": machine_info(), "records": args.records, "deployments": args.deployments,
              "keep": args.keep, "created_seconds": round(created_in, 3), "prune_seconds": round(prune_seconds, 3),
              "dropped": len(dropped), "before": {"size": before_size, "timings": before},
              "after": {"size": after_size, "timings": after}, "cli": cli}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    print(f"\nHistory size: {before_size['records']:,} records, {before_size['history_json_bytes'] / 1e6:.1f} MB, "
          f"{before_size['log_files']:,} log files  ->  prune(keep={args.keep}) in {prune_seconds:.2f} s  ->  "
          f"{after_size['records']:,} records, {after_size['history_json_bytes'] / 1e6:.2f} MB, "
          f"{after_size['log_files']:,} log files")
    left = f"{before_size['records']:,} records"
    right = f"after prune ({after_size['records']:,})"
    width = max(len(name) for name in before)
    print(f"\nMedian of {args.reps} (ms)")
    print(f"  {'':{width}}  {left:>16}  {right:>22}  {'ratio':>7}")
    for name in before:
        b, a = before[name]["median"] * 1000, after[name]["median"] * 1000
        print(f"  {name:{width}}  {b:16.1f}  {a:22.1f}  {b / a:6.0f}x")
    if cli:
        print(f"\n`kalpana status` (fresh process, {args.deployments} deployments), median of {args.reps} (s)")
        for name, figures in cli.items():
            print(f"  {name:24}  {figures['median']:.3f}  (min {figures['min']:.3f}, max {figures['max']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
