#!/usr/bin/env python3
"""Benchmark (issue 10): port mode's gap under load, and a subdomain-mode redeploy against a port-mode one.

1. Port mode, the gap: one HTTP deployment on a host port, a background thread GETs
   http://127.0.0.1:<port>/ every ~5 ms (steady load) while ``kalpana apply`` redeploys it
   ``--redeploys`` times (an env change each time). Measured: failed requests per redeploy, the
   longest time without a 200 per redeploy, and Kalpana's own ``durations.gap``. Port mode cannot
   overlap two containers on one host port, so this is never zero.
2. Wall time of one redeploy (``kalpana apply`` start to exit), interleaved: the same deployment in
   port mode and in subdomain mode. Subdomain mode starts the new container beside the old one,
   switches the route, then waits ``traefik_drain_seconds`` (default 3 s: Traefik's file watch plus
   its 2 s provider throttle) before stopping the old one; the drain is printed separately.

Traefik itself cannot be pulled on these machines: subdomain mode runs with a local stand-in image
as ``traefik_image`` (what the integration tests use), so the wall time is Kalpana's side of the
switch. Everything is labelled with the run's instances and removed at the end.

    python benchmarks/routing.py [--redeploys 10] [--reps 5] [--drain 3.0] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root: the tests' poller

import yaml  # noqa: E402

from _common import (BASE_IMAGE, KalpanaProject, common_arguments, deadline, free_port, log,  # noqa: E402
                     machine_info, print_rows, remove_kalpana_instance, start_run, summary, timing_summary)
from tests.integration.poller import Poller  # noqa: E402

APP_PORT = 8080
START_COMMAND = f"echo ok > /tmp/index.html && exec httpd -f -p {APP_PORT} -h /tmp"
DEPLOYMENT = "web"
STAND_IN = "kalpana-test-traefik:stand-in"


def build_stand_in(client) -> None:
    dockerfile = (f"FROM {BASE_IMAGE}\nLABEL org.opencontainers.image.title=Traefik dev.kalpana.test=traefik-stand-in\n"
                  'ENTRYPOINT ["/bin/sh", "-c", "exec sleep 2147483647", "traefik"]\n')
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=STAND_IN, rm=True)


def spec(rev: int, **extra: Any) -> dict[str, Any]:
    return {"image": BASE_IMAGE, "start_command": START_COMMAND, "port": APP_PORT, "env": {"REV": str(rev)},
            "healthcheck": {"timeout": 20}, **extra}


def configure(project: KalpanaProject, **settings: Any) -> None:
    data = yaml.safe_load(project.config_path.read_text())
    data.update(settings)
    project.config_path.write_text(yaml.safe_dump(data, sort_keys=False))


def last_build(project: KalpanaProject) -> dict[str, Any]:
    return project.run_json("builds", DEPLOYMENT, "--limit", "1")["builds"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, reps=5, timeout=1800)
    parser.add_argument("--redeploys", type=int, default=10, help="redeploys under load in port mode (default 10)")
    parser.add_argument("--drain", type=float, default=3.0, help="traefik_drain_seconds in subdomain mode")
    args = parser.parse_args()

    run_id, pycache, client = start_run(args.no_bytecode_cache)
    port = free_port(28000, 28999)
    port_project = KalpanaProject(f"bench-{run_id}", keep_dir=args.keep_dir)
    sub_project = KalpanaProject(f"bench-{run_id}-sub", keep_dir=args.keep_dir)
    network = f"bench-{run_id}-proxy"
    report: dict[str, Any] = {"benchmark": "routing", "run_id": run_id, "redeploys": args.redeploys,
                              "reps": args.reps, "drain_s": args.drain, "machine": machine_info()}
    try:
        with deadline(args.timeout):
            build_stand_in(client)
            configure(sub_project, traefik_base_url="apps.bench", traefik_network=network,
                      traefik_image=STAND_IN, traefik_http_port=free_port(29000, 29499),
                      traefik_https_port=free_port(29500, 29999), traefik_drain_seconds=args.drain)

            # 1. port mode under steady load
            rev = 0
            port_project.write_deployment(DEPLOYMENT, spec(rev, exposed_port=port))
            port_project.run("apply")
            failed, gaps, recorded = [], [], []
            log(f"port mode: {args.redeploys} redeploys under load on port {port}")
            for _ in range(args.redeploys):
                rev += 1
                port_project.write_deployment(DEPLOYMENT, spec(rev, exposed_port=port))
                with Poller(port, interval=0.005) as poller:
                    port_project.run("apply")
                    figures = poller.finish()
                failed.append(figures.failed)
                gaps.append(figures.longest_gap)
                recorded.append(last_build(port_project)["durations"].get("gap") or 0.0)
            report["port_mode"] = {"failed_requests": summary(failed), "total_failed": sum(failed),
                                   "longest_gap_s": summary(gaps), "kalpana_gap_s": summary(recorded)}

            # 2. wall time: port mode vs subdomain mode, interleaved
            sub_project.write_deployment(DEPLOYMENT, spec(0, subdomain="web"))
            sub_project.run("apply")
            walls: dict[str, list] = {"port mode": [], "subdomain mode": []}
            for i in range(args.reps):
                for label, project, extra in (("port mode", port_project, {"exposed_port": port}),
                                              ("subdomain mode", sub_project, {"subdomain": "web"})):
                    rev += 1
                    project.write_deployment(DEPLOYMENT, spec(rev, **extra))
                    timing, _ = project.timed("apply")
                    walls[label].append(timing)
                log(f"round {i + 1}/{args.reps}: port {walls['port mode'][-1].wall:.2f} s, "
                    f"subdomain {walls['subdomain mode'][-1].wall:.2f} s")
            report["wall"] = {k: timing_summary(v) for k, v in walls.items()}
    finally:
        for project in (port_project, sub_project):
            problems = remove_kalpana_instance(client, project.instance)
            for problem in problems:
                log(f"cleanup: {problem}")
            project.close()
        for volume in client.volumes.list(filters={"name": f"bench-{run_id}-sub_kalpana-traefik-acme"}):
            volume.remove(force=True)
        for net in client.networks.list(names=[network]):
            net.remove()
        if pycache:
            shutil.rmtree(pycache, ignore_errors=True)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    pm = report["port_mode"]
    print_rows(f"port mode: {args.redeploys} redeploys under load (a GET every 5 ms)", [
        ("failed requests per redeploy", pm["failed_requests"], f"total {pm['total_failed']}"),
        ("longest gap without a 200 (s)", pm["longest_gap_s"], "seen by the poller"),
        ("durations.gap (s)", pm["kalpana_gap_s"], "Kalpana's own record"),
    ])
    wall = report["wall"]
    print_rows("redeploy wall time (kalpana apply, s)", [
        ("port mode", wall["port mode"], "trial container + stop/start on the port"),
        ("subdomain mode", wall["subdomain mode"], f"includes traefik_drain_seconds={args.drain:g}"),
    ])
    sub = wall["subdomain mode"]["median"]
    print(f"\n  subdomain mode without the drain: ~{sub - args.drain:.3f} s (median minus the drain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
