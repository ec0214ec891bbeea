#!/usr/bin/env python3
"""Benchmark of the `kalpana watch` daemon and its GitHub webhooks (issue 3).

One run starts the real daemon as a subprocess (``python -m gitops -c kalpana.yaml watch
--log-format json``, default queue and watcher settings: ``debounce`` 0.2 s, ``drift_interval``
10 s; ``poll_interval`` 3600 s so that polling never adds work) and measures:

(a) webhook answer time under a burst of ``--burst`` (200) deliveries, half with bad signatures
    (signed with another secret), every one with its own ``X-GitHub-Delivery``, sent by
    ``--clients`` (8) client threads. Four targets, interleaved over ``--burst-rounds`` rounds,
    each with keep-alive connections and with one new TCP connection per delivery (as GitHub does):

    * ``queued``:  the good half are pushes to the followed branch of ``site``'s repository, to
      ``/api/deployments/site/webhook``, whose ``after`` is the commit already deployed: each is
      answered 202 "queued", the queue coalesces them into one (or a few) runs that find nothing
      to change, so the burst builds nothing (checked: no new build record).
    * ``ignored``: the good half are pushes of a repository no deployment follows, to the
      instance-wide ``/webhook``: 202 "ignored" (signature checked, payload parsed, routed).
    * ``app-alone``: the ``queued`` burst against the daemon's FastAPI app served by uvicorn with the
      daemon's settings, alone in a process (no watcher, queue or worker threads) behind a stub
      receiver doing the same per-delivery work (Deliveries file, one log line): what the
      HTTP stack costs by itself, so that daemon - app-alone is what the daemon around it adds.
    * ``floor``:   the same burst against a trivial ``http.server`` (ThreadingHTTPServer, HTTP/1.1,
      TCP_NODELAY, in its own process) that reads the body and answers 202: HTTP on this machine.

    Target: p99 < 50 ms and every bad delivery answered 401.
(b) webhook -> new version serving, minus the build: a commit changing ``app/index.html`` is
    pushed to the bare repository ``site`` follows (busybox httpd serving the checkout, image
    kalpana-test-base:latest), the signed delivery is POSTed, and GET / is polled every 10 ms
    (0.1 s timeout) until the new content is served; ``durations.build`` of the build record
    (``kalpana builds site --json``, checked: trigger webhook, the pushed commit) is subtracted.
    ``--reps`` times in each of two variants, alternating: ``traffic`` (the polling goes on through
    the container swap, as on a live site; a second client with a 5 s timeout polls alongside and
    reports its longest request) and ``quiet`` (no request between the child's "stopping the old
    container" and "waiting for health" lines). On Docker's userland proxy, connections made while
    the host port has no container can hang until TCP retransmits the SYN (~1 s), and the new
    container can become reachable later than without such traffic. Medians; target < 2 s. Broken
    down with the daemon's JSON log (trigger, job_start, the relayed phases of its child `kalpana
    apply`) and the record's durations.
(c) file save -> apply start: ``--reps`` times, ``deployments.d/tiny.yaml`` (a no-port ``sleep``
    deployment) is rewritten in place with a new env value; from the write to the daemon's
    ``job_start`` (the run begins), and to the child's ``plan`` and ``step_start``. Target < 1 s.
(d) the daemon's resident memory (VmRSS of its pid, /proc): idle after start, after each of (a),
    (b), (c), then during ``--builds`` (100) builds triggered through the daemon, sampled at 0, 25,
    50, 75 and 100, with threads, open fds and the daemon's own CPU time. ``--memory-trigger``:
    ``webhook`` (default: each build is a new commit pushed + webhook, a real image build of
    ``site``) or ``file`` (each is an env edit of ``tiny``, a redeploy). Target < 100 MB, no growth.

``--baseline REF`` (e.g. ``main``) then runs (b) and (c) again, in the same run and on the same instance,
with a daemon (and its workers) from ``git archive REF`` of this repository: the report sets issue 12's
target 3 (webhook -> serving minus build <= 0.8 s, file save -> first step <= 0.4 s) beside that baseline.
The two daemons take turns (``--baseline-rounds``, default 2: this tree, REF, this tree, REF), so that a
change in the machine's load shows in both; the medians are over every rep of each. ``--only '' --baseline
REF`` runs only that comparison.

``--profile`` then stops the daemon and runs the command it starts for a push (``kalpana apply
--fetch site`` as a webhook job, i.e. ``python -m gitops.worker`` with that job on stdin) once
under ``-X importtime`` and once under cProfile, each for a
newly pushed commit: where the child's start-up, fetch and planning time goes.

Usage (repository root; Docker engine and kalpana-test-base:latest as for the other benchmarks)::

    python benchmarks/watch_daemon.py [--reps 5] [--burst 200] [--clients 8] [--burst-rounds 3]
                                      [--builds 100] [--memory-trigger webhook|file]
                                      [--only a,b,c,d] [--profile] [--json] [--timeout 2400]
                                      [--keep-dir] [--no-bytecode-cache] [--baseline main]

What it creates: Kalpana instance ``bench-w<hex>`` (containers ``site`` and ``tiny``, their
images), a temporary project with a bare git repository, the daemon listening on a free
127.0.0.1 port, the app-alone and floor servers on two more. Everything is removed at the end (``finally``),
also after an error, Ctrl-C or the deadline; the daemon is stopped with SIGTERM (then SIGKILL).
Only 127.0.0.1 is talked to. The load average is printed at start and end: on a shared 2-core
machine the figures of (a) move with it; compare with the floor of the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root: the tests' daemon harness

from _common import (Deadline, KalpanaProject, bytecode_note, common_arguments, configure_bytecode,  # noqa: E402
                     cprofile_cli, deadline, docker_client, ensure_base_image, importtime_profile, log, machine_info,
                     new_run_id, print_profile, python_startup_figures, remove_kalpana_instance, summary)
from tests.integration.daemon_helpers import Daemon as WatchDaemon  # noqa: E402
from tests.integration.daemon_helpers import (HTTPD, GitRemote, delivery_headers, free_port,  # noqa: E402
                                              push_payload)

from gitops.build import Trigger  # noqa: E402
from gitops.queue import Job  # noqa: E402
from gitops.worker_protocol import WORKER_MODULE, encode_job  # noqa: E402

INSTANCE_SECRET = "bench-instance-secret"
DEPLOYMENT_SECRET = "bench-site-secret"
WRONG_SECRET = "not-the-secret"
SITE = "site"
TINY = "tiny"
HOST_PORT_LABEL = "dev.kalpana.host-port"
DEPLOYMENT_LABEL = "dev.kalpana.deployment"
INSTANCE_LABEL = "dev.kalpana.instance"

TARGETS = {"webhook_p99_s": 0.050, "webhook_to_serving_minus_build_s": 2.0, "save_to_apply_start_s": 1.0,
           "rss_mb": 100.0}
# Issue 12, target 3: the worker's start-up off the critical path.
TARGETS_12 = {"webhook_to_serving_minus_build_s": 0.8, "save_to_step_start_s": 0.4}

FLOOR_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"message": "accepted"}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 128  # the default backlog of 5 drops SYNs under 8 new connections
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

# The daemon's webhook app (gitops.server.app.create_app) alone: served by uvicorn with the settings
# `kalpana watch` uses, in a process of its own with no other threads, behind a receiver that does what
# the daemon's does for a delivery (secret look-up, targets, the Deliveries file, one JSON log line per
# queued push). Daemon minus this = what the daemon's other threads and its work queue add.
APP_ALONE_SERVER = r"""
import json, sys, tempfile, threading, time
from datetime import datetime, timezone
from pathlib import Path
import uvicorn
from gitops import webhook as wh
from gitops.deliveries import Deliveries
from gitops.server.app import create_app

repo, site, site_secret, instance_secret = sys.argv[1:5]
lock = threading.Lock()

class Receiver:
    insecure = False
    deliveries = Deliveries(Path(tempfile.mkdtemp(prefix="kalpana-bench-app-")) / "deliveries.log")

    def secret_for(self, name):
        return (site_secret if name else instance_secret), "webhook_secret"

    def known(self, name):
        return name == site

    def targets(self, name):
        return [wh.Target(site, repo, "main")]

    def claim_delivery(self, delivery):
        return self.deliveries.claim(delivery)

    def enqueue_push(self, work, push, delivery):
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": "trigger",
                           "deployment": None, "message": f"webhook push to {push.branch} at {push.after[:7]} "
                           f"(delivery {delivery}): {', '.join(work.deployments)}"})
        with lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

server = uvicorn.Server(uvicorn.Config(create_app(Receiver()), host="127.0.0.1", port=0, log_level="warning",
                                       access_log=False, lifespan="off"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
while not server.started and thread.is_alive():
    time.sleep(0.01)
print(server.servers[0].sockets[0].getsockname()[1], flush=True)
thread.join()
"""


# -- small helpers --------------------------------------------------------------

def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def post(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 15) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_body(port: int, timeout: float = 1.0) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        data = response.read()
        return data.decode("utf-8", "replace") if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, Any]:
    """VmRSS/VmHWM/RssAnon (MB), threads, open fds and own CPU seconds of ``pid``."""
    fields: dict[str, Any] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
        elif key == "Threads":
            fields["threads"] = int(value)
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    fields["cpu_s"] = round(cpu_seconds(pid), 3)
    return fields


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, not the children's


# -- the daemon -------------------------------------------------------------------

class Daemon(WatchDaemon):
    """The tests' daemon wrapper (tests/integration/daemon_helpers.py), set up for measuring.

    Each event carries its times (``_t``: the daemon's own, ``_seen``: when read here), the daemon
    has a process group of its own, and waiting for it to be idle polls every 0.1 s for up to 180 s.
    """

    def __init__(self, project: KalpanaProject, listen: str):
        super().__init__(project, listen, timestamps=True, new_session=True)

    def wait_idle(self, quiet: float = 2.5, timeout: float = 180, interval: float = 0.1) -> None:
        super().wait_idle(quiet, timeout, interval)

    def stop(self) -> int | None:
        """SIGTERM; after 60 s, SIGKILL to its process group. Its exit code."""
        return self.terminate(on_kill=lambda: log("daemon did not stop within 60 s of SIGTERM: "
                                                  "killing its process group"))


class FromTree:
    """``project`` as a daemon started from another source tree sees it: PYTHONPATH points there."""

    def __init__(self, project: KalpanaProject, root: Path):
        self._project = project
        self._root = root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._project, name)

    def env(self) -> dict[str, str]:
        return {**self._project.env(), "PYTHONPATH": str(self._root)}


def export_tree(ref: str) -> Path:
    """``git archive ref`` of this repository, unpacked into a temporary directory."""
    root = Path(__file__).resolve().parent.parent
    target = Path(tempfile.mkdtemp(prefix="kalpana-bench-baseline-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def start_watch(project, listen: str) -> "Daemon":
    daemon = Daemon(project, listen)
    try:
        daemon.wait_for(lambda e: e.get("event") == "info" and "webhooks on http://" in str(e.get("message")),
                        timeout=120, what="'webhooks on' line")
        daemon.wait_event("job_done", timeout=180)
        daemon.wait_idle(quiet=3)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def merged(parts: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [rep for part in parts for rep in part[key]["reps"]]


def bench_against_baseline(args, daemon: Daemon, project: KalpanaProject, listen: str, remote: GitRemote,
                           port: int, tag: str) -> tuple[dict[str, Any], Daemon | None]:
    """(b) and (c) with this tree's daemon and REF's, taking turns; the daemon left running (this tree's)."""
    tree = export_tree(args.baseline)
    rounds: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    started: Daemon | None = None  # a daemon this function started: stopped here if anything fails
    try:
        for round_ in range(args.baseline_rounds):
            for side in ("baseline", "this"):
                if daemon is not None:
                    daemon.stop()
                    daemon = None
                what = args.baseline if side == "baseline" else "this tree"
                log(f"baseline comparison, round {round_ + 1}: {side} ({what})")
                daemon = started = start_watch(FromTree(project, tree) if side == "baseline" else project, listen)
                part = {"b": bench_webhook_to_serving(args, daemon, remote, project, port, f"{tag}{side[0]}{round_}"),
                        "c": bench_file_save(args, daemon, project),
                        "load": os.getloadavg()[0]}
                rounds[side].append(part)
    except BaseException:
        if started is not None:
            started.stop()
        raise
    finally:
        import shutil
        shutil.rmtree(tree, ignore_errors=True)
    out: dict[str, Any] = {"ref": args.baseline, "rounds": args.baseline_rounds}
    for side, parts in rounds.items():
        b = merged(parts, "b")
        c = merged(parts, "c")
        out[side] = {
            "webhook_traffic": med([r["post_to_served_minus_build_s"] for r in b if r["variant"] == "traffic"]),
            "webhook_quiet": med([r["post_to_served_minus_build_s"] for r in b if r["variant"] == "quiet"]),
            "webhook_trigger_to_job_start": med([r["queue_quiet_s"] for r in b if r["queue_quiet_s"] is not None]),
            "webhook_job_start_to_fetched": med([r["child_start_lock_recover_fetch_s"] for r in b
                                                 if r["child_start_lock_recover_fetch_s"] is not None]),
            "webhook_deploy": med([float(r["record_deploy_s"]) for r in b if r["record_deploy_s"] is not None]),
            "save_to_step_start": med([r["save_to_step_start_s"] for r in c]),
            "save_to_job_start": med([r["save_to_job_start_s"] for r in c]),
            "loadavg": [round(part["load"], 2) for part in parts],
            "reps": {"b": len(b), "c": len(c)},
        }
    return out, daemon


# -- (a) bursts ---------------------------------------------------------------------

class Burst:
    """``n`` prepared deliveries (half bad), sent by ``clients`` threads; per-request latency and answer."""

    def __init__(self, port: int, requests: list[tuple[str, str, bytes, dict[str, str]]], clients: int,
                 keep_alive: bool):
        self.port = port
        self.requests = requests  # (kind "good"/"bad", path, body, headers)
        self.clients = clients
        self.keep_alive = keep_alive
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _one(self, item: tuple[str, str, bytes, dict[str, str]]) -> tuple[str, int, float, bytes, float]:
        kind, path, body, headers = item
        began = time.perf_counter()
        sent_at = time.time()
        if self.keep_alive:
            for attempt in (1, 2):
                conn = self._conn()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    status = response.status
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    self._local.conn = None
                    if attempt == 2:
                        raise
                    began = time.perf_counter()
        else:
            status, data = post(self.port, path, body, headers)
        return kind, status, time.perf_counter() - began, data, sent_at

    def run(self) -> dict[str, Any]:
        began = time.perf_counter()
        start_epoch = time.time()
        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            results = list(pool.map(self._one, self.requests))
        elapsed = time.perf_counter() - began
        for conn in self._conns:
            conn.close()
        return {"results": results, "elapsed": elapsed, "start": start_epoch, "end": time.time()}


def make_burst(n: int, path_good: str, secret: str, payload_for: Callable[[int], dict[str, Any]],
               seed: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
    items = []
    for i in range(n):
        body = json.dumps(payload_for(i)).encode()
        bad = i % 2 == 1
        items.append(("bad" if bad else "good", path_good, body,
                      delivery_headers(body, WRONG_SECRET if bad else secret)))
    random.Random(seed).shuffle(items)
    return items


def check_answers(target: str, results: list[tuple[str, int, float, bytes, float]]) -> dict[str, Any]:
    """Count answers that are not what the target should give."""
    wrong = []
    for kind, status, _, data, _ in results:
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            answer = {}
        if kind == "bad":
            ok = status == 401 if target != "floor" else status == 202
        elif target in ("queued", "app-alone"):
            ok = status == 202 and answer.get("queued") == [SITE]
        elif target == "ignored":
            ok = status == 202 and answer.get("ignored") is True
        else:
            ok = status == 202
        if not ok:
            wrong.append(f"{kind}: {status} {data[:120]!r}")
    return {"wrong": len(wrong), "examples": wrong[:3]}


def bench_bursts(args, daemon: Daemon, others: dict[str, tuple[int, int]], remote: GitRemote, head: str,
                 project: KalpanaProject) -> dict[str, Any]:
    log(f"(a) bursts of {args.burst} deliveries, {args.clients} clients, {args.burst_rounds} rounds")
    builds_before = len(builds(project, SITE))
    counter = [0]

    def queued_payload(i: int) -> dict[str, Any]:
        return push_payload(remote, head, f"same head {i}", full_name="bench/site")

    def ignored_payload(i: int) -> dict[str, Any]:
        counter[0] += 1
        return push_payload("/nonexistent/other-repo.git", f"{counter[0]:040x}", f"other {i}", full_name="bench/other")

    plans = {
        "queued": (daemon.base_port, f"/api/deployments/{SITE}/webhook", DEPLOYMENT_SECRET, queued_payload),
        "ignored": (daemon.base_port, "/webhook", INSTANCE_SECRET, ignored_payload),
        "app-alone": (others["app-alone"][0], f"/api/deployments/{SITE}/webhook", DEPLOYMENT_SECRET, queued_payload),
        "floor": (others["floor"][0], "/webhook", INSTANCE_SECRET, ignored_payload),
    }
    samples: dict[tuple[str, str], dict[str, list]] = {}
    per_round: list[dict[str, Any]] = []
    jobs_in_burst = []
    names = list(plans)
    for rnd in range(args.burst_rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for mode in ("keepalive", "fresh"):
            for target in order:
                port, path, secret, payload_for = plans[target]
                items = make_burst(args.burst, path, secret, payload_for, seed=rnd * 31 + len(target))
                if target in ("queued", "ignored"):
                    daemon.wait_idle(quiet=2.5)
                else:
                    time.sleep(0.5)
                mark = daemon.mark()
                pid = daemon.pid if target in ("queued", "ignored") else others[target][1]
                cpu_before = cpu_seconds(pid)
                outcome = Burst(port, items, args.clients, keep_alive=(mode == "keepalive")).run()
                cpu = cpu_seconds(pid) - cpu_before
                results = outcome["results"]
                key = (target, mode)
                bucket = samples.setdefault(key, {"good": [], "bad": [], "all": [], "elapsed": [], "cpu": [],
                                                  "wrong": 0, "examples": []})
                for kind, _, latency, _, _ in results:
                    bucket[kind].append(latency)
                    bucket["all"].append(latency)
                bucket["elapsed"].append(outcome["elapsed"])
                bucket["cpu"].append(cpu)
                check = check_answers(target, results)
                bucket["wrong"] += check["wrong"]
                bucket["examples"] += check["examples"]
                round_row = {"round": rnd + 1, "target": target, "mode": mode,
                             "p50_ms": round(pct([r[2] for r in results], 50) * 1000, 2),
                             "p99_ms": round(pct([r[2] for r in results], 99) * 1000, 2),
                             "burst_s": round(outcome["elapsed"], 3), "wrong": check["wrong"],
                             "server_cpu_s": round(cpu, 3)}
                if target == "queued":
                    daemon.wait_idle(quiet=2.5)
                    starts = daemon.since(mark, "job_start")
                    round_row["jobs"] = len(starts)
                    round_row["job_start_during_burst"] = sum(1 for e in starts if e["_t"] <= outcome["end"])
                    jobs_in_burst.append(round_row["job_start_during_burst"])
                per_round.append(round_row)
                log(f"  round {rnd + 1} {mode:9} {target:9}: p50 {round_row['p50_ms']:6.2f} ms, "
                    f"p99 {round_row['p99_ms']:6.2f} ms, burst {outcome['elapsed']:.2f} s"
                    + f", server cpu {cpu:.2f} s"
                    + (f", runs {round_row['jobs']}" if "jobs" in round_row else "")
                    + (f", WRONG {check['wrong']}" if check["wrong"] else ""))
    daemon.wait_idle(quiet=2.5)
    builds_after = len(builds(project, SITE))
    table = []
    for (target, mode), b in samples.items():
        n_requests = len(b["all"])
        table.append({
            "target": target, "mode": mode, "n": n_requests,
            "p50_ms": round(pct(b["all"], 50) * 1000, 2), "p99_ms": round(pct(b["all"], 99) * 1000, 2),
            "max_ms": round(max(b["all"]) * 1000, 2),
            "good_p50_ms": round(pct(b["good"], 50) * 1000, 2), "good_p99_ms": round(pct(b["good"], 99) * 1000, 2),
            "bad_p50_ms": round(pct(b["bad"], 50) * 1000, 2), "bad_p99_ms": round(pct(b["bad"], 99) * 1000, 2),
            "throughput_rps": round(n_requests / sum(b["elapsed"]), 1),
            "server_cpu_ms_per_request": (round(sum(b["cpu"]) / n_requests * 1000, 3) if b["cpu"] else None),
            "wrong_answers": b["wrong"], "wrong_examples": b["examples"][:3],
        })
    return {"table": table, "rounds": per_round, "builds_created_by_queued_bursts": builds_after - builds_before,
            "queued_bursts_job_starts_during_burst": jobs_in_burst}


# -- (b) webhook -> serving ----------------------------------------------------------

def builds(project: KalpanaProject, name: str, limit: int = 0) -> list[dict[str, Any]]:
    return project.run_json("builds", name, "--limit", str(limit))["builds"]


def site_port(client, instance: str) -> int:
    containers = client.api.containers(filters={"label": [f"{INSTANCE_LABEL}={instance}",
                                                          f"{DEPLOYMENT_LABEL}={SITE}"]})
    for c in containers:
        port = (c.get("Labels") or {}).get(HOST_PORT_LABEL)
        if port:
            return int(port)
        for p in c.get("Ports") or []:
            if p.get("PrivatePort") == 8080 and p.get("PublicPort"):
                return int(p["PublicPort"])
    raise RuntimeError(f"no running {SITE} container with a host port: {containers}")


class NaiveClient:
    """GET / every 10 ms with a 5 s timeout, as a browser would: when it first sees ``content``, its longest wait."""

    def __init__(self, port: int, content: str):
        self.port = port
        self.content = content
        self.first_new: float | None = None
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="naive-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        limit = time.monotonic() + 150
        while not self._stop.is_set() and time.monotonic() < limit:
            began = time.monotonic()
            body = get_body(self.port, timeout=5.0)
            self.longest = max(self.longest, time.monotonic() - began)
            if body == self.content and self.first_new is None:
                self.first_new = time.time()
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop once it has seen the new content (or after its in-flight request, at most ~6 s)."""
        limit = time.monotonic() + 6
        while self.first_new is None and time.monotonic() < limit and self._thread.is_alive():
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(6)


def first(events: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((e for e in events if predicate(e)), None)


def phase(name: str, prefix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "phase" and e.get("deployment") == name and \
        str(e.get("message", "")).startswith(prefix)


def bench_webhook_to_serving(args, daemon: Daemon, remote: GitRemote, project: KalpanaProject,
                             port: int, tag: str) -> dict[str, Any]:
    log(f"(b) webhook -> new version serving, {args.reps} reps with traffic during the swap and {args.reps} without")
    reps = []
    for index in range(2 * args.reps):
        rep = index
        # "traffic": GET / every 10 ms throughout (a live site). "quiet": the same, but no request between the
        # child's 'stopping the old container' and 'waiting for health' lines (nobody calls during the swap).
        variant = "traffic" if index % 2 == 0 else "quiet"
        daemon.wait_idle(quiet=2.5)
        content = f"v{rep + 1}-{tag}-{uuid.uuid4().hex[:8]}"
        message = f"bench version {rep + 1}"
        sha = remote.commit_and_push({"app/index.html": content}, message)
        body = json.dumps(push_payload(remote, sha, message, full_name="bench/site")).encode()
        headers = delivery_headers(body, DEPLOYMENT_SECRET)
        naive = NaiveClient(port, content) if variant == "traffic" else None
        mark = daemon.mark()
        t0 = time.time()
        status, answer = post(port=daemon.base_port, path=f"/api/deployments/{SITE}/webhook", body=body,
                              headers=headers)
        t_answer = time.time()
        if status != 202:
            raise RuntimeError(f"webhook answered {status}: {answer[:300]!r}")
        served = None
        polls = 0
        limit = time.monotonic() + 120
        while time.monotonic() < limit:
            if variant == "quiet" and in_swap(daemon, mark):
                time.sleep(0.002)
                continue
            polls += 1
            # A short timeout: a connection attempted while the old container is gone can hang until TCP
            # retransmits its SYN (1 s); the next poll 10 ms later must not wait for that.
            if get_body(port, timeout=0.1) == content:
                served = time.time()
                break
            time.sleep(0.01)
        if naive is not None:
            naive.stop()
        if served is None:
            raise RuntimeError(f"{content!r} not served within 120 s; daemon log:\n{daemon.log_tail(40)}")
        done = daemon.wait_event("job_done", after=mark, timeout=120)
        record = builds(project, SITE, limit=1)[0]
        if record.get("commit_hash") != sha or record.get("triggered_by") != "webhook" or record["status"] != "SUCCESS":
            raise RuntimeError(f"unexpected newest build record: {record}")
        ev = daemon.since(mark)
        t = {
            "trigger": first(ev, lambda e: e.get("event") == "trigger" and "webhook push" in str(e.get("message"))),
            "job_start": first(ev, lambda e: e.get("event") == "job_start"),
            "fetched": first(ev, phase(SITE, "fetched")),
            "plan": first(ev, lambda e: e.get("event") == "plan"),
            "step_start": first(ev, lambda e: e.get("event") == "step_start" and e.get("deployment") == SITE),
            "building": first(ev, phase(SITE, "building")),
            "deploying": first(ev, phase(SITE, "deploying")),
            "stopping": first(ev, phase(SITE, "stopping the old")),
            "waiting": first(ev, phase(SITE, "waiting for health")),
            "healthy": first(ev, phase(SITE, "healthy")),
            "step_done": first(ev, lambda e: e.get("event") == "step_done" and e.get("deployment") == SITE),
            "job_done": done,
        }
        at = {k: (v["_t"] if v else None) for k, v in t.items()}
        seen = {k: (v["_seen"] if v else None) for k, v in t.items()}
        missing = [k for k, v in at.items() if v is None]
        durations = record.get("durations") or {}
        build_s = float(durations.get("build") or 0.0)

        def span(a: str, b: str) -> float | None:
            return round(at[b] - at[a], 4) if at[a] is not None and at[b] is not None else None

        row = {
            "rep": rep + 1, "variant": variant, "sha": sha[:7], "answer_s": round(t_answer - t0, 4), "polls": polls,
            "post_to_served_s": round(served - t0, 4),
            "post_to_served_minus_build_s": round(served - t0 - build_s, 4),
            "trigger_to_served_minus_build_s": (round(served - at["trigger"] - build_s, 4)
                                                if at["trigger"] else None),
            "record_build_s": build_s, "record_deploy_s": durations.get("deploy"), "record_gap_s": durations.get("gap"),
            "record_total_s": durations.get("total"),
            "post_to_trigger_s": round(at["trigger"] - t0, 4) if at["trigger"] else None,
            "queue_quiet_s": span("trigger", "job_start"),
            "child_start_lock_recover_fetch_s": span("job_start", "fetched"),
            "fetched_to_plan_s": span("fetched", "plan"),
            "plan_to_step_start_s": span("plan", "step_start"),
            "step_start_to_building_s": span("step_start", "building"),
            "build_logged_s": span("building", "deploying"),
            "deploy_logged_s": span("deploying", "healthy"),
            "deploy_to_stopping_s": span("deploying", "stopping"),
            "stop_create_start_s": span("stopping", "waiting"),
            "health_wait_s": span("waiting", "healthy"),
            "waiting_logged_to_served_s": round(served - at["waiting"], 4) if at["waiting"] else None,
            "healthy_logged_to_served_s": round(served - at["healthy"], 4) if at["healthy"] else None,
            "healthy_to_job_done_s": span("healthy", "job_done"),
            "log_relay_lag_max_s": round(max((seen[k] - at[k]) for k in at if at[k] is not None and seen[k]), 4),
            "naive_client_served_minus_build_s": (round(naive.first_new - t0 - build_s, 4)
                                                  if naive and naive.first_new else None),
            "naive_client_longest_request_s": round(naive.longest, 4) if naive else None,
            "missing_events": missing,
        }
        reps.append(row)
        log(f"  rep {rep + 1} ({variant}): post->served {row['post_to_served_s']:.3f} s, build {build_s:.3f} s, "
            f"minus build {row['post_to_served_minus_build_s']:.3f} s (quiet {row['queue_quiet_s']}, "
            f"child+fetch {row['child_start_lock_recover_fetch_s']}, deploy {row['record_deploy_s']})"
            + (f"; missing events {missing}" if missing else ""))
    keys = [k for k in reps[0] if k not in ("rep", "variant", "sha", "missing_events", "polls")]
    out: dict[str, Any] = {"reps": reps}
    for variant in ("traffic", "quiet"):
        chosen = [r for r in reps if r["variant"] == variant]
        out[variant] = {"median": {k: (round(med([r[k] for r in chosen if r[k] is not None]), 4)
                                       if any(r[k] is not None for r in chosen) else None) for k in keys},
                        "summary": summary([r["post_to_served_minus_build_s"] for r in chosen])}
    return out


def in_swap(daemon: Daemon, mark: int) -> bool:
    """Between the child's 'stopping the old container' and 'waiting for health' lines of this run."""
    events = daemon.since(mark, "phase")
    stopping = any(str(e.get("message", "")).startswith("stopping the old") for e in events)
    waiting = any(str(e.get("message", "")).startswith("waiting for health") for e in events)
    return stopping and not waiting


# -- (c) file save -> apply start ----------------------------------------------------

def tiny_spec(value: str) -> dict[str, Any]:
    return {"start_command": "sleep 1000000", "env": {"BENCH_VALUE": value}}


def bench_file_save(args, daemon: Daemon, project: KalpanaProject) -> dict[str, Any]:
    log(f"(c) file save -> apply start, {args.reps} reps")
    path = project.deployments_dir / f"{TINY}.yaml"
    reps = []
    for rep in range(args.reps):
        daemon.wait_idle(quiet=2.5)
        text = yaml.safe_dump({"name": TINY, **tiny_spec(f"save-{rep}-{uuid.uuid4().hex[:6]}")}, sort_keys=False)
        mark = daemon.mark()
        with open(path, "w") as handle:  # an in-place save, as most editors do
            handle.write(text)
        written = time.time()
        trigger = daemon.wait_for(lambda e: e.get("event") == "trigger" and "file change" in str(e.get("message")),
                                  after=mark, timeout=30, what="file-change trigger")
        start = daemon.wait_event("job_start", after=mark, timeout=30)
        plan = daemon.wait_event("plan", after=mark, timeout=60)
        step = daemon.wait_for(lambda e: e.get("event") == "step_start" and e.get("deployment") == TINY,
                               after=mark, timeout=60, what="step_start")
        done = daemon.wait_event("job_done", after=mark, timeout=120)
        if not done.get("ok"):
            raise RuntimeError(f"run after the save failed: {done}")
        row = {"rep": rep + 1,
               "save_to_trigger_s": round(trigger["_t"] - written, 4),
               "save_to_job_start_s": round(start["_t"] - written, 4),
               "save_to_plan_s": round(plan["_t"] - written, 4),
               "save_to_step_start_s": round(step["_t"] - written, 4),
               "trigger_to_job_start_s": round(start["_t"] - trigger["_t"], 4),
               "job_start_to_plan_s": round(plan["_t"] - start["_t"], 4),
               "save_to_job_done_s": round(done["_t"] - written, 4)}
        reps.append(row)
        log(f"  rep {rep + 1}: trigger {row['save_to_trigger_s']:.3f}, job_start {row['save_to_job_start_s']:.3f}, "
            f"plan {row['save_to_plan_s']:.3f}, step_start {row['save_to_step_start_s']:.3f} s")
    keys = [k for k in reps[0] if k != "rep"]
    return {"reps": reps, "median": {k: round(med([r[k] for r in reps]), 4) for k in keys}}


# -- (d) memory ----------------------------------------------------------------------

def bench_memory(args, daemon: Daemon, remote: GitRemote, project: KalpanaProject, port: int,
                 tag: str) -> dict[str, Any]:
    log(f"(d) {args.builds} builds through the daemon ({args.memory_trigger}), RSS every {args.builds // 4}")
    daemon.wait_idle(quiet=2.5)
    samples = []
    job_times = []
    failures = 0
    name = SITE if args.memory_trigger == "webhook" else TINY
    count_before = len(builds(project, name))
    step = max(1, args.builds // 4)
    began = time.monotonic()
    cpu_start = cpu_seconds(daemon.pid)
    for i in range(args.builds + 1):
        if i % step == 0 or i == args.builds:
            status = proc_status(daemon.pid)
            status["after_builds"] = i
            samples.append(status)
            log(f"  after {i:3d} builds: VmRSS {status['VmRSS']:.1f} MB (anon {status.get('RssAnon')}), "
                f"threads {status['threads']}, fds {status['fds']}, cpu {status['cpu_s']:.1f} s")
        if i == args.builds:
            break
        mark = daemon.mark()
        t0 = time.monotonic()
        if args.memory_trigger == "webhook":
            sha = remote.commit_and_push({"app/index.html": f"m{i}-{tag}"}, f"memory build {i}")
            body = json.dumps(push_payload(remote, sha, f"memory build {i}", full_name="bench/site")).encode()
            status_code, answer = post(daemon.base_port, f"/api/deployments/{SITE}/webhook", body,
                                       delivery_headers(body, DEPLOYMENT_SECRET))
            if status_code != 202:
                raise RuntimeError(f"webhook answered {status_code}: {answer[:300]!r}")
        else:
            path = project.deployments_dir / f"{TINY}.yaml"
            path.write_text(yaml.safe_dump({"name": TINY, **tiny_spec(f"mem-{i}-{tag}")}, sort_keys=False))
        done = daemon.wait_event("job_done", after=mark, timeout=180)
        job_times.append(time.monotonic() - t0)
        if not done.get("ok"):
            failures += 1
            log(f"  build {i + 1} failed: {done.get('message')}")
    daemon.wait_idle(quiet=2.5)
    count_after = len(builds(project, name))
    cpu_used = cpu_seconds(daemon.pid) - cpu_start
    rss = [s["VmRSS"] for s in samples]
    return {"trigger": args.memory_trigger, "deployment": name, "samples": samples,
            "builds_recorded": count_after - count_before, "failed_runs": failures,
            "seconds_per_build_median": round(med(job_times), 3), "wall_s": round(time.monotonic() - began, 1),
            "daemon_cpu_ms_per_build": round(cpu_used / max(1, args.builds) * 1000, 1),
            "rss_growth_mb": round(rss[-1] - rss[0], 1),
            "rss_growth_25_to_100_mb": round(rss[-1] - rss[1], 1) if len(rss) > 2 else None}


# -- the run ---------------------------------------------------------------------------

def write_config(project: KalpanaProject, **settings: Any) -> None:
    config = yaml.safe_load(project.config_path.read_text())
    config.update(settings)
    project.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def start_server(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """A server script in its own process; it prints its port on the first line."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(args) -> dict[str, Any]:
    client = docker_client()
    ensure_base_image(client)
    run_id = new_run_id()
    instance = f"bench-w{run_id}"
    result: dict[str, Any] = {"machine": machine_info(), "instance": instance, "bytecode": bytecode_note(),
                              "targets": TARGETS, "settings": {}}
    only = set(args.only.split(","))
    project = KalpanaProject(instance, keep_dir=args.keep_dir)
    daemon: Daemon | None = None
    servers: list[subprocess.Popen] = []
    try:
        listen = f"127.0.0.1:{free_port()}"
        settings = {"listen": listen, "webhook_secret": INSTANCE_SECRET, "poll_interval": 3600,
                    "drift_interval": 10, "debounce": 0.2}
        write_config(project, **settings)
        import importlib.util
        result["settings"] = {**settings, "webhook_secret": "(set)", "uvicorn_http": "httptools" if
                              importlib.util.find_spec("httptools") else "h11", "uvicorn_loop": "uvloop" if
                              importlib.util.find_spec("uvloop") else "asyncio"}
        remote = GitRemote(project.root / "git")
        head = remote.commit_and_push({"app/index.html": f"v0-{run_id}"}, "first version")
        project.write_deployment(SITE, {"source": {"repo": remote.url, "subdir": "app"}, "start_command": HTTPD,
                                        "port": 8080, "auto_rebuild": True, "webhook_secret": DEPLOYMENT_SECRET,
                                        "healthcheck": {"timeout": 30}})
        project.write_deployment(TINY, tiny_spec("initial"))
        log(f"instance {instance}: first apply of {SITE} and {TINY}")
        project.run("apply", timeout=300)
        port = site_port(client, instance)
        if get_body(port, timeout=3) != f"v0-{run_id}":
            raise RuntimeError(f"{SITE} not serving v0 on port {port}")

        log(f"starting `kalpana watch` on {listen}")
        daemon = start_watch(project, listen)
        memory: list[dict[str, Any]] = [{"when": "idle after start", **proc_status(daemon.pid)}]
        log(f"daemon pid {daemon.pid}: idle VmRSS {memory[0]['VmRSS']} MB")

        if "a" in only:
            floor, floor_port = start_server(FLOOR_SERVER)
            servers.append(floor)
            app, app_port = start_server(APP_ALONE_SERVER, remote.url, SITE, DEPLOYMENT_SECRET, INSTANCE_SECRET,
                                         env=project.env())
            servers.append(app)
            result["a"] = bench_bursts(args, daemon, {"floor": (floor_port, floor.pid), "app-alone": (app_port, app.pid)},
                                       remote, head,
                                       project)
            memory.append({"when": "after (a)", **proc_status(daemon.pid)})
        if "b" in only:
            result["b"] = bench_webhook_to_serving(args, daemon, remote, project, port, run_id)
            memory.append({"when": "after (b)", **proc_status(daemon.pid)})
        if "c" in only:
            result["c"] = bench_file_save(args, daemon, project)
            memory.append({"when": "after (c)", **proc_status(daemon.pid)})
        if "d" in only:
            result["d"] = bench_memory(args, daemon, remote, project, port, run_id)
            daemon.wait_idle(quiet=3)
            time.sleep(5)
            memory.append({"when": "idle after (d)", **proc_status(daemon.pid)})
        if args.baseline:
            result["baseline"], daemon = bench_against_baseline(args, daemon, project, listen, remote, port, run_id)
        result["memory"] = memory
        if "b" in only or "c" in only:
            log("python start-up figures (what each worker process pays first)")
            result["python_startup"] = python_startup_figures(3)
        errors = [e for e in daemon.events if e.get("event") == "error"]
        result["daemon_errors"] = [e.get("message") for e in errors][:10]
        if args.profile:
            result["daemon_exit_code"] = daemon.stop()
            daemon = None
            # The worker the daemon runs for a push (a webhook job fetching and applying site), run here once under
            # -X importtime and once under cProfile, each time for a newly pushed commit (a real fetch and build).
            log("profiling the daemon's child command (the daemon is stopped first)")
            job = encode_job(Job(frozenset({SITE}), Trigger.WEBHOOK, fetch=True, reasons=["profile"]))
            remote.commit_and_push({"app/index.html": f"p1-{run_id}"}, "profile 1")
            profile = importtime_profile(project, module=WORKER_MODULE, stdin=job)
            remote.commit_and_push({"app/index.html": f"p2-{run_id}"}, "profile 2")
            profile.update(cprofile_cli(project, module=WORKER_MODULE, stdin=job))
            result["child_profile"] = profile
    finally:
        if daemon is not None:
            code = daemon.stop()
            result["daemon_exit_code"] = code
            log(f"daemon stopped (exit {code})")
        for proc in servers:
            stop_server(proc)
        failures = remove_kalpana_instance(client, instance)
        if failures:
            log("cleanup left: " + "; ".join(failures))
        result["cleanup_failures"] = failures
        project.close()
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    return result


# -- output ------------------------------------------------------------------------------

def fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def verdict_below(value: float | None, target: float) -> str:
    return "n/a" if value is None else ("MET" if value < target else "MISSED")


def print_report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\nkalpana watch benchmark: instance {r['instance']}, python {m['python']}, {m['cpus']} CPUs, "
          f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}, "
          f"at end {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_end', ()))}")
    print(f"settings: {r['settings']}; {r['bytecode']}")
    if "a" in r:
        a = r["a"]
        print("\n(a) webhook answer time, bursts of deliveries (half bad signature), ms over all rounds"
              "   [target: p99 < 50 ms, every bad one 401]")
        print(f"  {'target':9} {'mode':9} {'n':>5} {'p50':>7} {'p99':>7} {'max':>7} {'good p50/p99':>14} "
              f"{'bad p50/p99':>14} {'req/s':>7} {'cpu ms/req':>10} {'wrong':>5}  verdict")
        for row in sorted(a["table"], key=lambda x: (x["mode"], x["target"])):
            is_daemon = row["target"] in ("queued", "ignored")
            v = (verdict_below(row["p99_ms"] / 1000, TARGETS["webhook_p99_s"])
                 + ("" if row["wrong_answers"] == 0 else " +WRONG ANSWERS")) if is_daemon else "(reference)"
            print(f"  {row['target']:9} {row['mode']:9} {row['n']:5d} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
                  f"{row['max_ms']:7.2f} {row['good_p50_ms']:6.2f}/{row['good_p99_ms']:<7.2f} "
                  f"{row['bad_p50_ms']:6.2f}/{row['bad_p99_ms']:<7.2f} {row['throughput_rps']:7.1f} "
                  f"{fmt(row['server_cpu_ms_per_request'], digits=2):>10} {row['wrong_answers']:5d}  {v}")
        print(f"  queued bursts: {a['builds_created_by_queued_bursts']} build records created (expected 0); "
              f"runs starting while a burst was still being sent: {a['queued_bursts_job_starts_during_burst']}")
        print("  queued/ignored: the daemon; app-alone: its FastAPI app + uvicorn alone in a process (stub receiver"
              " doing the same per-delivery work); floor: http.server answering 202. cpu ms/req: the server process.")
        print("  per round p99 (ms): " + "; ".join(
            f"{x['round']}/{x['mode'][:4]}/{x['target']} {x['p99_ms']:.1f}" for x in a["rounds"]))
    if "b" in r:
        b = r["b"]
        tr, qu = b["traffic"]["median"], b["quiet"]["median"]
        n = sum(1 for x in b["reps"] if x["variant"] == "traffic")
        print(f"\n(b) webhook -> new version serving, minus build (s, medians of {n} + {n})   [target < 2 s]")
        print(f"  {'':66} {'traffic':>8} {'quiet':>8}")
        print(f"  {'post -> served - durations.build':66} {fmt(tr['post_to_served_minus_build_s']):>8} "
              f"{fmt(qu['post_to_served_minus_build_s']):>8}   "
              f"traffic {verdict_below(tr['post_to_served_minus_build_s'], TARGETS['webhook_to_serving_minus_build_s'])}"
              f", quiet {verdict_below(qu['post_to_served_minus_build_s'], TARGETS['webhook_to_serving_minus_build_s'])}")
        print("  traffic: GET / every 10 ms throughout, as on a live site; quiet: no request during the swap "
              "(from 'stopping the old container' to 'waiting for health')")
        rows = [("trigger logged -> served - build", "trigger_to_served_minus_build_s"),
                ("post -> served (with build)", "post_to_served_s"),
                ("5 s-timeout client polling alongside: sees it (minus build)", "naive_client_served_minus_build_s"),
                ("  its longest single request (a connection made during the swap)",
                 "naive_client_longest_request_s"),
                ("breakdown (daemon log timestamps, build record durations):", None),
                ("webhook answer (client)", "answer_s"),
                ("post -> trigger logged", "post_to_trigger_s"),
                ("queue quiet period (trigger -> job_start)", "queue_quiet_s"),
                ("child start + lock + recover + git fetch (job_start -> 'fetched')",
                 "child_start_lock_recover_fetch_s"),
                ("load + resolve + plan ('fetched' -> plan)", "fetched_to_plan_s"),
                ("plan -> step_start", "plan_to_step_start_s"),
                ("step_start -> 'building' (record)", "step_start_to_building_s"),
                ("build, logged ('building' -> 'deploying')", "build_logged_s"),
                ("build, record durations.build", "record_build_s"),
                ("deploy, logged ('deploying' -> 'healthy')", "deploy_logged_s"),
                ("deploy, record durations.deploy", "record_deploy_s"),
                ("  of which gap (durations.gap)", "record_gap_s"),
                ("  'deploying' -> 'stopping the old container' (rename)", "deploy_to_stopping_s"),
                ("  stop old + create + start new ('stopping' -> 'waiting for health')", "stop_create_start_s"),
                ("  health probes ('waiting for health' -> 'healthy')", "health_wait_s"),
                ("  'waiting for health' -> new content seen by poll", "waiting_logged_to_served_s"),
                ("'healthy' logged -> new content seen by poll", "healthy_logged_to_served_s"),
                ("'healthy' -> job_done (prune images, child exit)", "healthy_to_job_done_s"),
                ("record durations.total", "record_total_s"),
                ("max lag daemon log time -> line read here", "log_relay_lag_max_s")]
        for label, key in rows:
            if key is None:
                print(f"  {label}")
                continue
            print(f"    {label:64} {fmt(tr.get(key)):>8} {fmt(qu.get(key)):>8}")
        ps = r.get("python_startup") or {}
        if ps:
            print("  child start estimate (separate runs, median): " + ", ".join(
                f"{k} {v['median']:.3f} s" for k, v in ps.items()))
        print("  per rep (post->served-build): " + ", ".join(
            f"{x['variant'][0]}{x['post_to_served_minus_build_s']:.3f}" for x in b["reps"]))
    if "c" in r:
        c = r["c"]
        md = c["median"]
        print(f"\n(c) file save -> apply start (s, median of {len(c['reps'])})   [target < 1 s]")
        for label, key, target in (("save -> trigger logged (watchfiles)", "save_to_trigger_s", None),
                                   ("save -> job_start (run begins)", "save_to_job_start_s", 1.0),
                                   ("save -> plan (child planned)", "save_to_plan_s", 1.0),
                                   ("save -> step_start", "save_to_step_start_s", 1.0),
                                   ("  trigger -> job_start (queue quiet)", "trigger_to_job_start_s", None),
                                   ("  job_start -> plan (child start, lock, load, observe)", "job_start_to_plan_s",
                                    None),
                                   ("save -> job_done", "save_to_job_done_s", None)):
            print(f"  {label:58} {fmt(md[key]):>8}   {verdict_below(md[key], target) if target else ''}")
        print("  per rep save->job_start: " + ", ".join(f"{x['save_to_job_start_s']:.3f}" for x in c["reps"]))
    if r.get("baseline"):
        base = r["baseline"]
        this, ref = base["this"], base["baseline"]
        print(f"\nissue 12 target 3, this tree beside {base['ref'][:12]} ({base['rounds']} rounds each, taking turns; "
              f"medians of {this['reps']['b']} webhook and {this['reps']['c']} save reps per side; "
              f"load average per round: this {this['loadavg']}, {base['ref'][:12]} {ref['loadavg']})")
        print(f"  {'':52} {'this':>8} {base['ref'][:8]:>8} {'ratio':>6} {'target':>7}  verdict")
        webhook_target = TARGETS_12["webhook_to_serving_minus_build_s"]
        for label, key, target in (
                ("webhook -> serving - build, traffic", "webhook_traffic", webhook_target),
                ("webhook -> serving - build, quiet", "webhook_quiet", webhook_target),
                ("file save -> first step (step_start)", "save_to_step_start", TARGETS_12["save_to_step_start_s"]),
                ("  webhook: trigger -> job_start (queue)", "webhook_trigger_to_job_start", None),
                ("  webhook: job_start -> 'fetched' (child start, fetch)", "webhook_job_start_to_fetched", None),
                ("  webhook: deploy (record durations.deploy)", "webhook_deploy", None),
                ("  file save -> job_start", "save_to_job_start", None)):
            mine, theirs = this.get(key), ref.get(key)
            ratio = f"{mine / theirs:.2f}" if mine is not None and theirs else "-"
            verdict = ("MET" if mine is not None and mine <= target else "MISSED") if target else ""
            print(f"  {label:52} {fmt(mine):>8} {fmt(theirs):>8} {ratio:>6} "
                  f"{fmt(target, digits=1) if target else '':>7}  {verdict}")
    if "memory" in r:
        print("\n(d) daemon resident memory (MB)   [target < 100 MB, no growth]")
        for s in r["memory"]:
            print(f"  {s['when']:22} VmRSS {s['VmRSS']:6.1f}  VmHWM {s['VmHWM']:6.1f}  anon {s.get('RssAnon', 0):6.1f}"
                  f"  threads {s['threads']:3d}  fds {s['fds']:3d}  cpu {s['cpu_s']:7.2f} s")
    if "d" in r:
        d = r["d"]
        print(f"  {d['builds_recorded']} builds of {d['deployment']} via {d['trigger']} "
              f"({d['failed_runs']} failed runs), {d['seconds_per_build_median']:.2f} s each (median), "
              f"daemon CPU {d['daemon_cpu_ms_per_build']:.0f} ms per build")
        for s in d["samples"]:
            print(f"    after {s['after_builds']:3d} builds: VmRSS {s['VmRSS']:6.1f}  anon {s.get('RssAnon', 0):6.1f}"
                  f"  threads {s['threads']:3d}  fds {s['fds']:3d}")
        peak = max(s["VmRSS"] for s in d["samples"])
        print(f"  peak {peak:.1f} MB: {verdict_below(peak, TARGETS['rss_mb'])}; growth 0->{d['samples'][-1]['after_builds']}"
              f" {d['rss_growth_mb']:+.1f} MB, 25->100 {d['rss_growth_25_to_100_mb']:+.1f} MB")
    if r.get("child_profile"):
        print_profile(r["child_profile"], "profile of the worker `python -m gitops.worker` (a webhook job for site) "
                      "(run outside the daemon, for a new commit)")
    if r.get("daemon_errors"):
        print("\ndaemon 'error' events: " + " | ".join(r["daemon_errors"]))
    print(f"\ndaemon exit code {r.get('daemon_exit_code')}; cleanup failures: {r.get('cleanup_failures') or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(parser, reps=5, timeout=2400)
    parser.add_argument("--burst", type=int, default=200, help="deliveries per burst, half bad (default 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--burst-rounds", type=int, default=3, help="rounds of bursts per target and mode (default 3)")
    parser.add_argument("--builds", type=int, default=100, help="builds for the memory figure (default 100)")
    parser.add_argument("--memory-trigger", choices=("webhook", "file"), default="webhook")
    parser.add_argument("--only", default="a,b,c,d", help="which parts to run (default a,b,c,d)")
    parser.add_argument("--baseline", metavar="REF", default=None,
                        help="also run (b) and (c) with the daemon of git REF (e.g. main), taking turns, and print "
                             "issue 12's target 3 beside it")
    parser.add_argument("--baseline-rounds", type=int, default=2, help="turns per side with --baseline (default 2)")
    parser.add_argument("--profile", action="store_true",
                        help="at the end, profile the child command a push runs (-X importtime, cProfile)")
    args = parser.parse_args()
    cache = None
    if not args.no_bytecode_cache:
        cache = tempfile.mkdtemp(prefix="kalpana-bench-pyc-")
        configure_bytecode(Path(cache))
    try:
        with deadline(args.timeout):
            result = run(args)
    except Deadline as exc:
        sys.exit(f"stopped: {exc}")
    finally:
        if cache:
            import shutil
            shutil.rmtree(cache, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
