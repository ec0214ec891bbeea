#!/usr/bin/env python3
"""Benchmark of the HTTP API served by `kalpana watch` (issue 11).

One run declares ``--deployments`` (100) small deployments (busybox ``sleep``, no port), applies
them, records ``--builds`` (10,000) finished builds among them in the history (one import, with
``keep_builds`` high enough to keep them all), starts the real daemon (``python -m gitops watch``
with an ``api_token``) and measures over real HTTP on loopback:

(a) ``GET /api/deployments`` latency: ``--requests`` (50) sequential requests, p50 / p99 / max, and
    the size of the answer. Each answer reads the files, one Docker listing and the history.
(b) ``POST /api/deployments/<name>/deploy`` -> first SSE byte, and -> the first ``phase`` event
    (the worker child started and the build began), ``--reps`` (5) times on one deployment.
(c) ``--clients`` (50) SSE clients following one build that prints ``--lines`` (200) lines:
    every client must receive every line (compared with the stored log) and the end event;
    the daemon's CPU seconds (utime + stime from /proc, its worker children excluded) and
    resident memory (VmRSS) before, during (peak, sampled every 50 ms) and after.

Usage (repository root; Docker engine and kalpana-test-base:latest as for the other benchmarks)::

    python benchmarks/api.py [--deployments 100] [--builds 10000] [--requests 50] [--reps 5]
                             [--clients 50] [--lines 200] [--json] [--timeout 1800] [--keep-dir]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root: the tests' daemon harness

from _common import (Deadline, KalpanaProject, common_arguments, deadline, log, machine_info,  # noqa: E402
                     remove_kalpana_instance, start_run)
from tests.integration.daemon_helpers import Daemon as WatchDaemon  # noqa: E402
from tests.integration.daemon_helpers import free_port  # noqa: E402

from gitops.build import Build, BuildStatus, Trigger  # noqa: E402
from gitops.history import History  # noqa: E402
from gitops.server.sse import parse  # noqa: E402

TOKEN = "bench-token"
SLEEPER = {"start_command": "sleep 3600", "healthcheck": {"type": "none"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def proc_figures(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, resident KiB) of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return cpu, rss


def populate(project: KalpanaProject, names: list[str], total: int) -> None:
    history = History(project.state_dir)
    builds = []
    for i in range(total):
        name = names[i % len(names)]
        build_id = f"20250101-{i // 60 % 1_000_000:06d}-{i % 65536:04x}"
        builds.append(Build(
            id=build_id, deployment=name, status=BuildStatus.FAILED if i % 7 == 0 else BuildStatus.SUCCESS,
            triggered_by=Trigger.WEBHOOK, action="rebuild", reason="source a1b2c3d -> d4e5f6a",
            commit_hash=f"{i:040x}", commit_message=f"Fix the thing number {i}", branch="main",
            created_at="2025-01-01T00:00:00.000Z", started_at="2025-01-01T00:00:00.100Z",
            completed_at="2025-01-01T00:00:42.000Z", durations={"build": 30.5, "deploy": 10.2, "total": 41.9},
            pid=4242, host="build-host"))
    history.import_builds(builds)


def read_stream(http: httpx.Client, method: str, path: str, marks: dict[str, float] | None = None,
                timeout: float = 600) -> list[tuple[str, Any]]:
    """An SSE response read to its end event; ``marks`` gets the time of the first byte and first phase."""
    events: list[tuple[str, Any]] = []
    buffer = ""
    with http.stream(method, path, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
        response.raise_for_status()
        for chunk in response.iter_text():
            if marks is not None and "first_byte" not in marks:
                marks["first_byte"] = time.perf_counter()
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                for kind, data in parse(block + "\n\n"):
                    events.append((kind, data))
                    if marks is not None and kind == "phase" and "first_phase" not in marks:
                        marks["first_phase"] = time.perf_counter()
                    if kind == "end":
                        return events
    raise RuntimeError(f"{path}: the stream closed before its end event")


def bench_list(http: httpx.Client, requests: int) -> dict[str, Any]:
    samples = []
    size = 0
    count = 0
    for _ in range(requests):
        began = time.perf_counter()
        response = http.get("/api/deployments")
        samples.append(time.perf_counter() - began)
        response.raise_for_status()
        size = len(response.content)
        count = len(response.json()["deployments"])
    return {"p50": round(percentile(samples, 0.5), 4), "p99": round(percentile(samples, 0.99), 4),
            "max": round(max(samples), 4), "n": len(samples), "deployments": count, "bytes": size}


def bench_deploy(http: httpx.Client, name: str, reps: int) -> dict[str, Any]:
    first_byte, first_phase, total = [], [], []
    for rep in range(reps):
        marks: dict[str, float] = {}
        began = time.perf_counter()
        events = read_stream(http, "POST", f"/api/deployments/{name}/deploy", marks)
        if events[-1][1]["status"] != "SUCCESS":
            raise RuntimeError(f"deploy {rep + 1} ended {events[-1][1]}")
        first_byte.append(marks["first_byte"] - began)
        first_phase.append(marks.get("first_phase", began) - began)
        total.append(time.perf_counter() - began)
        log(f"  deploy {rep + 1}/{reps}: first byte {first_byte[-1] * 1000:.1f} ms, first phase "
            f"{first_phase[-1]:.2f} s, end {total[-1]:.2f} s")
    med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
    return {"first_byte_median": med(first_byte), "first_byte_max": round(max(first_byte), 4),
            "first_phase_median": med(first_phase), "end_median": med(total), "n": reps}


def bench_fanout(http: httpx.Client, daemon: WatchDaemon, name: str, clients: int, lines: int) -> dict[str, Any]:
    # A new source: the build step cannot come from Docker's layer cache, so the lines are printed live.
    (Path(daemon.project.root) / name / "stamp").write_text(str(time.time()))
    cpu0, rss0 = proc_figures(daemon.pid)
    answer = http.post(f"/api/deployments/{name}/deploy", headers={"Accept": "application/json"})
    answer.raise_for_status()
    build_id = answer.json()["build"]
    results: list[list[tuple[str, Any]] | Exception] = [[] for _ in range(clients)]

    def follow(i: int) -> None:
        try:
            with httpx.Client(base_url=daemon.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as own:
                results[i] = read_stream(own, "GET", f"/api/builds/{build_id}/logs")
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    peak = [rss0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            try:
                peak[0] = max(peak[0], proc_figures(daemon.pid)[1])
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    threads = [threading.Thread(target=follow, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - began
    stop.set()
    sampler.join()
    cpu1, rss1 = proc_figures(daemon.pid)
    stored = [line for line in http.get(f"/api/builds/{build_id}/logs").text.splitlines()
              if not line.startswith("==> ")]
    complete = 0
    problems = []
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            problems.append(f"client {i}: {result}")
            continue
        got = [d["line"] for k, d in result if k == "log"]
        if got == stored and result[-1][0] == "end":
            complete += 1
        else:
            problems.append(f"client {i}: {len(got)} lines of {len(stored)}, last event {result[-1][0]}")
    printed = sum(1 for line in stored if line.startswith("chatty-"))
    return {"clients": clients, "complete": complete, "lines_printed": printed, "lines_stored": len(stored),
            "seconds": round(elapsed, 2), "daemon_cpu_seconds": round(cpu1 - cpu0, 3),
            "rss_kib_before": rss0, "rss_kib_peak": peak[0], "rss_kib_after": rss1, "problems": problems[:5],
            "build": build_id, "expected_lines": lines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, reps=5, timeout=1800)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--builds", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--lines", type=int, default=200)
    args = parser.parse_args()
    run_id, pycache, client = start_run(args.no_bytecode_cache)
    project = KalpanaProject(f"bench-{run_id}", keep_dir=args.keep_dir)
    daemon = None
    figures: dict[str, Any] = {"machine": machine_info()}
    try:
        with deadline(args.timeout):
            names = [f"app-{i:03d}" for i in range(args.deployments)]
            for name in names:
                project.write_deployment(name, SLEEPER)
            (project.root / "chatty").mkdir()
            (project.root / "chatty" / "stamp").write_text("setup")
            project.write_deployment("chatty", {
                **SLEEPER, "source": "chatty", "build_command": f"for i in $(seq 1 {args.lines}); do echo chatty-$i; sleep 0.01; done"})
            log(f"applying {len(names) + 1} deployments ...")
            project.apply_with_progress(len(names) + 1, timeout=args.timeout / 2, label="setup")
            log(f"recording {args.builds} builds ...")
            populate(project, names, args.builds)
            settings = json.loads(json.dumps(__import__("yaml").safe_load(project.config_path.read_text())))
            listen = f"127.0.0.1:{free_port()}"
            settings.update({"listen": listen, "api_token": TOKEN, "keep_builds": args.builds,
                             "poll_interval": 3600, "drift_interval": 60})
            project.config_path.write_text(__import__("yaml").safe_dump(settings, sort_keys=False))
            daemon = WatchDaemon(project, listen)
            daemon.wait_ready(timeout=300)
            http = httpx.Client(base_url=daemon.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
            http.get("/api/deployments").raise_for_status()  # warm: imports, first reads
            log("(a) GET /api/deployments ...")
            figures["list"] = bench_list(http, args.requests)
            log("(b) POST deploy -> first SSE byte ...")
            figures["deploy"] = bench_deploy(http, names[0], args.reps)
            log(f"(c) {args.clients} SSE clients on one build ...")
            figures["fanout"] = bench_fanout(http, daemon, "chatty", args.clients, args.lines)
    except Deadline as exc:
        log(str(exc))
        return 2
    finally:
        if daemon is not None:
            daemon.terminate()
        failures = remove_kalpana_instance(client, project.instance)
        log("cleanup: done" if not failures else "cleanup failures:\n  " + "\n  ".join(failures))
        project.close()
        if pycache is not None:
            import shutil
            shutil.rmtree(pycache, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    lst, dep, fan = figures["list"], figures["deploy"], figures["fanout"]
    print(f"\nGET /api/deployments ({lst['deployments']} deployments, {args.builds} builds in history, "
          f"{lst['bytes']} bytes): p50 {lst['p50'] * 1000:.1f} ms, p99 {lst['p99'] * 1000:.1f} ms, "
          f"max {lst['max'] * 1000:.1f} ms (n={lst['n']})")
    print(f"POST deploy -> first SSE byte: median {dep['first_byte_median'] * 1000:.1f} ms "
          f"(max {dep['first_byte_max'] * 1000:.1f} ms); -> first phase {dep['first_phase_median']:.2f} s; "
          f"-> end {dep['end_median']:.2f} s (n={dep['n']})")
    print(f"{fan['clients']} SSE clients on one build: {fan['complete']}/{fan['clients']} got all "
          f"{fan['lines_stored']} stored lines ({fan['lines_printed']} printed by the build) and the end, in "
          f"{fan['seconds']} s; daemon CPU {fan['daemon_cpu_seconds']} s; RSS {fan['rss_kib_before'] / 1024:.1f} -> "
          f"peak {fan['rss_kib_peak'] / 1024:.1f} -> {fan['rss_kib_after'] / 1024:.1f} MiB")
    for problem in fan["problems"]:
        print(f"  {problem}")
    return 0 if fan["complete"] == fan["clients"] else 1


if __name__ == "__main__":
    sys.exit(main())
