#!/usr/bin/env python3
"""Benchmark (issue 8): what a deploy that never gets healthy costs the users of a served app.

A deployment serves HTTP on a host port. Each round applies a change whose container runs but
never listens (``start_command: sleep 1000``, health timeout ``--health-timeout``, default 5 s)
while a poller GETs the port every 10 ms, and counts failed requests and the longest time
without a 200. Side by side, interleaved:

* ``kalpana``: ``python -m gitops -c kalpana.yaml apply`` (a fresh process, as a user runs it):
  the new version is tried beside the old one first, so the old one should never stop.
* ``old swap (raw SDK)``: the swap Kalpana did before, done in-process with the docker SDK's
  low-level API on a labelled container of the same image and command: rename the old container,
  create the new one, stop the old one, start the new one, probe it (TCP, its own address) until
  the timeout, remove it, rename the old one back and start it again, until the first 200.
* ``--baseline-tree DIR`` (optional): Kalpana itself from another checkout (e.g. a
  ``git worktree`` of an earlier commit), on its own deployment and port.

Target: zero failed requests for Kalpana.

    python benchmarks/failed_deploy.py [--reps 5] [--health-timeout 5] [--baseline-tree DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root: the tests' poller

from _common import (BASE_IMAGE, BENCH_LABEL, Deadline, KalpanaProject, bytecode_note, common_arguments,  # noqa: E402
                     deadline, free_port, log, machine_info, remove_kalpana_instance, remove_labelled,
                     start_run, summary)
from tests.integration.poller import Poller, wait_200  # noqa: E402

APP_PORT = 8080
# httpd answers 200 only for a file; /tmp/index.html makes GET / a 200.
GOOD_COMMAND = f"echo ok > /tmp/index.html && exec httpd -f -p {APP_PORT} -h /tmp"
BAD_COMMAND = "sleep 1000"  # runs, never listens: the case
DEPLOYMENT = "web"


class OldSwap:
    """The pre-issue-8 port-mode swap, with raw SDK calls, on one labelled container of ``BASE_IMAGE``."""

    def __init__(self, client, run_id: str, port: int, health_timeout: float):
        self.api = client.api
        self.run_id = run_id
        self.port = port
        self.health_timeout = health_timeout
        self.name = f"kbench-{run_id}-old-swap"
        self.container_id: str | None = None

    def _create(self, command: str, name: str) -> str:
        host_config = self.api.create_host_config(port_bindings={APP_PORT: self.port}, init=True,
                                                  restart_policy={"Name": "unless-stopped"})
        created = self.api.create_container(image=BASE_IMAGE, name=name, entrypoint=["/bin/sh", "-c"],
                                            command=[command], labels={BENCH_LABEL: self.run_id}, ports=[APP_PORT],
                                            host_config=host_config, detach=True)
        return created["Id"]

    def setup(self) -> None:
        self.container_id = self._create(GOOD_COMMAND, self.name)
        self.api.start(self.container_id)
        wait_200(self.port, 30)

    def _healthy(self, container_id: str) -> bool:
        networks = self.api.inspect_container(container_id)["NetworkSettings"]["Networks"]
        address = next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), None)
        if not address:
            return False
        try:
            with socket.create_connection((address, APP_PORT), timeout=1.0):
                return True
        except OSError:
            return False

    def failed_deploy(self) -> None:
        """rename, create, stop old, start new, probe until the timeout, remove new, rename back, start old."""
        api, old = self.api, self.container_id
        api.rename(old, f"{self.name}--retiring")
        new = self._create(BAD_COMMAND, self.name)
        api.stop(old, timeout=0)
        api.start(new)
        limit = time.monotonic() + self.health_timeout
        while time.monotonic() < limit and not self._healthy(new):
            time.sleep(0.05)
        api.remove_container(new, force=True)
        api.rename(old, self.name)
        api.start(old)
        wait_200(self.port, 30)


class OtherTree(KalpanaProject):
    """A Kalpana project run by the package of another checkout (``--baseline-tree``)."""

    def __init__(self, instance: str, tree: Path, *, keep_dir: bool = False):
        super().__init__(instance, keep_dir=keep_dir)
        self.tree = tree

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PYTHONPATH"] = str(self.tree)
        return env


def spec(port: int, command: str, health_timeout: float) -> dict[str, Any]:
    return {"start_command": command, "port": APP_PORT, "exposed_port": port,
            "healthcheck": {"timeout": health_timeout}}


def measured(poller: Poller) -> dict[str, Any]:
    """Wait for the port to serve again and return the round's requests, failed requests and longest refusal."""
    figures = poller.finish()
    return {"requests": figures.requests, "failed": figures.failed,
            "longest_refusal_s": round(figures.longest_gap, 4)}


def kalpana_failed_deploy(project: KalpanaProject, port: int, health_timeout: float) -> tuple[dict, dict]:
    """One never-healthy apply with the poller running; (poller figures, the build record)."""
    project.write_deployment(DEPLOYMENT, spec(port, BAD_COMMAND, health_timeout))
    with Poller(port) as poller:
        began = time.perf_counter()
        result = project.run("apply", check=False, timeout=300)
        wall = time.perf_counter() - began
        figures = measured(poller)
    figures["wall_s"] = round(wall, 3)
    build = project.run_json("builds", DEPLOYMENT, "--limit", "1")["builds"][0]
    if result.returncode != 1 or build.get("status") != "FAILED":
        raise RuntimeError(f"expected a failed deploy (exit 1, FAILED), got exit {result.returncode}: "
                           + json.dumps({k: build.get(k) for k in ("id", "status", "error_message")}))
    # Back to the version that serves (a no-op: the failed deploy left it running).
    project.write_deployment(DEPLOYMENT, spec(port, GOOD_COMMAND, health_timeout))
    return figures, build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, reps=5, timeout=1800)
    parser.add_argument("--health-timeout", type=float, default=5.0,
                        help="the deployment's health check timeout in seconds (default 5)")
    parser.add_argument("--baseline-tree", type=Path, default=None, metavar="DIR",
                        help="also run Kalpana from this checkout (e.g. a git worktree of an earlier commit)")
    args = parser.parse_args()

    run_id, pycache, client = start_run(args.no_bytecode_cache)
    ports = []
    while len(ports) < 3:
        port = free_port(28000, 28999)
        if port not in ports:
            ports.append(port)
    port, raw_port, tree_port = ports
    project = KalpanaProject(f"bench-{run_id}", keep_dir=args.keep_dir)
    tree = OtherTree(f"bench-tree-{run_id}", args.baseline_tree.resolve(), keep_dir=args.keep_dir) \
        if args.baseline_tree else None
    old = OldSwap(client, run_id, raw_port, args.health_timeout)
    report: dict[str, Any] = {"benchmark": "failed_deploy", "run_id": run_id, "reps": args.reps,
                              "health_timeout_s": args.health_timeout, "port": port, "raw_port": raw_port,
                              "baseline_tree": str(args.baseline_tree) if tree else None,
                              "bytecode": bytecode_note(), "machine": machine_info()}
    samples: dict[str, list[dict]] = {"kalpana": [], "old swap (raw SDK)": []}
    if tree:
        samples["kalpana, baseline tree"] = []
    problems: list[str] = []
    try:
        with deadline(args.timeout):
            log(f"setting up: Kalpana deployment {DEPLOYMENT} on port {port} (instance {project.instance}), "
                f"raw container {old.name} on port {raw_port}"
                + (f", Kalpana from {tree.tree} on port {tree_port}" if tree else ""))
            project.write_deployment(DEPLOYMENT, spec(port, GOOD_COMMAND, args.health_timeout))
            project.run("apply", timeout=300)
            wait_200(port, 30)
            if tree:
                tree.write_deployment(DEPLOYMENT, spec(tree_port, GOOD_COMMAND, args.health_timeout))
                tree.run("apply", timeout=300)
                wait_200(tree_port, 30)
            old.setup()

            def kalpana_round() -> None:
                figures, _build = kalpana_failed_deploy(project, port, args.health_timeout)
                samples["kalpana"].append(figures)

            def tree_round() -> None:
                figures, _build = kalpana_failed_deploy(tree, tree_port, args.health_timeout)
                samples["kalpana, baseline tree"].append(figures)

            def raw_round() -> None:
                with Poller(raw_port) as poller:
                    began = time.perf_counter()
                    old.failed_deploy()
                    wall = time.perf_counter() - began
                    figures = measured(poller)
                figures["wall_s"] = round(wall, 3)
                samples["old swap (raw SDK)"].append(figures)

            rounds = [kalpana_round, raw_round] + ([tree_round] if tree else [])
            log(f"timing {args.reps} rounds of a never-healthy deploy (health timeout {args.health_timeout:g} s)")
            for i in range(args.reps):
                order = rounds[i % len(rounds):] + rounds[:i % len(rounds)]
                for fn in order:
                    fn()
                log(f"  rep {i + 1}/{args.reps}: " + "; ".join(
                    f"{name} {s[-1]['failed']}/{s[-1]['requests']} failed, longest refusal "
                    f"{s[-1]['longest_refusal_s']:.2f} s" for name, s in samples.items()))
    except (Deadline, RuntimeError) as exc:
        problems.append(str(exc))
        log(f"ERROR: {exc}")
    finally:
        log("cleaning up")
        problems += remove_labelled(client, f"{BENCH_LABEL}={run_id}")
        problems += remove_kalpana_instance(client, project.instance)
        project.close()
        if tree:
            problems += remove_kalpana_instance(client, tree.instance)
            tree.close()
        client.close()
        if pycache is not None:
            shutil.rmtree(pycache, ignore_errors=True)

    results = {name: {"failed": summary([s["failed"] for s in rows]),
                      "requests": summary([s["requests"] for s in rows]),
                      "longest_refusal_s": summary([s["longest_refusal_s"] for s in rows]),
                      "wall_s": summary([s["wall_s"] for s in rows])}
               for name, rows in samples.items()}
    kalpana_failed = results["kalpana"]["failed"]["max"]
    report.update({"results": results, "problems": problems,
                   "targets": {"kalpana: zero failed requests": {
                       "value": kalpana_failed, "verdict": "n/a" if kalpana_failed is None
                       else ("MET" if kalpana_failed == 0 else "MISSED")}}})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        load = ", ".join(f"{x:.2f}" for x in report["machine"]["loadavg_at_start"] or ())
        print(f"\nfailed-deploy benchmark (run {run_id}; {args.reps} reps, interleaved; health timeout "
              f"{args.health_timeout:g} s; poller every 10 ms; load average at start {load})")
        width = max(len(name) for name in results)
        print(f"  {'':{width}}  {'failed requests':>22}  {'of requests':>11}  {'longest refusal (s)':>26}  "
              f"{'wall (s)':>8}")
        print(f"  {'':{width}}  {'median  [min-max]':>22}  {'median':>11}  {'median  [min-max]':>26}  "
              f"{'median':>8}")
        for name, r in results.items():
            if r["failed"]["median"] is None:
                print(f"  {name:{width}}  (not measured)")
                continue
            print(f"  {name:{width}}  {r['failed']['median']:>8g}  [{r['failed']['min']:g}-{r['failed']['max']:g}]"
                  f"{'':>6}  {r['requests']['median']:>11g}  {r['longest_refusal_s']['median']:>12.3f}  "
                  f"[{r['longest_refusal_s']['min']:.3f}-{r['longest_refusal_s']['max']:.3f}]  "
                  f"{r['wall_s']['median']:>8.2f}")
        target = report["targets"]["kalpana: zero failed requests"]
        print(f"\ntarget: kalpana, zero failed requests in every round: {target['verdict']} "
              f"(worst round: {target['value']})")
        if problems:
            print("\nproblems:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
