#!/usr/bin/env python3
"""Benchmark (b): redeploy of one HTTP deployment after an env change.

Each round, interleaved:

* ``kalpana``: change ``env`` in the deployment file and run ``python -m gitops -c kalpana.yaml apply``
  (a fresh process, as a user runs it). Measured: the apply's wall time; the port's unavailable gap
  (a background thread GETs http://127.0.0.1:<port>/ every ~5 ms and records the longest time between
  two 200s around the apply); Kalpana's own ``durations.gap`` from ``kalpana builds web --json``, and
  ``durations.trial``: since issue 8 the new version is first proven in a trial container beside the
  old one (no host port), which costs one more container start before the gap, not in it.
* ``raw SDK``: the same swap done in-process with the docker SDK's low-level API: stop the old container
  (timeout 0), remove it, create + start a new one of the same image (port binding, init), then GET
  until the first 200. This is the floor of the Docker work a redeploy needs.
* ``raw SDK safe swap``: the raw swap made as safe as Kalpana's rollout: first a trial container (no host
  port) started and GET on its own address until 200, then the raw swap, then the trial removed. Its
  difference to the raw swap is what the trial costs in Docker work; apply minus it is what Kalpana adds
  to a rollout that is as safe (printed, no target).

Targets: apply overhead beyond the raw Docker calls (apply - raw) <= 0.3 s (issue 12; 0.5 s in issue 2);
gap < 1 s (issue 2).
``kalpana apply`` starts a new Python process: the start-up and import figures are printed as well, so
the overhead can be attributed.

    python benchmarks/redeploy.py [--reps 7] [--port 28xxx] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root: the tests' poller

from _common import (BASE_IMAGE, BENCH_LABEL, Deadline, KalpanaProject, Timing, bytecode_note,  # noqa: E402
                     common_arguments, cprofile_cli, deadline, free_port, importtime_profile, log,
                     machine_info, print_profile, print_rows, python_startup_figures, ratio,
                     remove_kalpana_instance, remove_labelled, start_run, stopwatch, summary,
                     timing_summary, verdict)
from tests.integration.poller import Poller, wait_200  # noqa: E402

APP_PORT = 8080
# httpd answers 200 only for a file; /tmp/index.html makes GET / a 200.
START_COMMAND = f"echo ok > /tmp/index.html && exec httpd -f -p {APP_PORT} -h /tmp"
DEPLOYMENT = "web"


class RawSwap:
    """The raw-SDK baseline: one labelled container on ``port``, swapped for a new one each round."""

    def __init__(self, client, run_id: str, port: int):
        self.api = client.api
        self.run_id = run_id
        self.port = port
        self.name = f"kbench-{run_id}-raw"
        self.container_id: str | None = None
        self.rev = 0

    def _create_and_start(self, trial: bool = False) -> str:
        api = self.api
        host_config = api.create_host_config(port_bindings=None if trial else {APP_PORT: self.port}, init=True,
                                             restart_policy={"Name": "unless-stopped"})
        created = api.create_container(image=BASE_IMAGE, name=f"{self.name}-trial" if trial else self.name,
                                       entrypoint=["/bin/sh", "-c"],
                                       command=[START_COMMAND], working_dir="/workspace",
                                       environment={"BENCH_REV": str(self.rev)},
                                       labels={BENCH_LABEL: self.run_id}, ports=[APP_PORT],
                                       host_config=host_config, detach=True)
        api.start(created["Id"])
        return created["Id"]

    def setup(self) -> None:
        self.container_id = self._create_and_start()
        wait_200(self.port, 30, interval=0.005)

    def swap(self) -> Timing:
        """stop(timeout 0) + remove + create + start + first 200: wall seconds."""
        self.rev += 1
        with stopwatch(children=False) as timing:
            self.api.stop(self.container_id, timeout=0)
            self.api.remove_container(self.container_id, force=True)
            self.container_id = self._create_and_start()
            wait_200(self.port, 30, interval=0.005)
        return timing

    def safe_swap(self) -> Timing:
        """The same, as safe as Kalpana's: first a trial container without the port, probed on its own
        address until it answers 200, then the swap, then the trial's removal: wall seconds."""
        self.rev += 1
        with stopwatch(children=False) as timing:
            trial = self._create_and_start(trial=True)
            address = self.api.inspect_container(trial)["NetworkSettings"]["IPAddress"]
            _wait_200_at(f"http://{address}:{APP_PORT}/", 30)
            self.api.stop(self.container_id, timeout=0)
            self.api.remove_container(self.container_id, force=True)
            self.container_id = self._create_and_start()
            wait_200(self.port, 30, interval=0.005)
            self.api.remove_container(trial, force=True)
        return timing


def _wait_200_at(url: str, timeout: float) -> None:
    deadline_at = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline_at:
            raise RuntimeError(f"{url} never answered 200")
        time.sleep(0.005)


def gap_poller(port: int) -> Poller:
    """The poller of both rounds: a GET every 5 ms, each given 0.5 s; its longest gap is "gap polled"."""
    return Poller(port, interval=0.005, request_timeout=0.5)


def kalpana_spec(port: int, rev: int, healthcheck: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"start_command": START_COMMAND, "port": APP_PORT, "exposed_port": port,
                            "env": {"BENCH_REV": str(rev)}}
    if healthcheck:
        spec["healthcheck"] = healthcheck
    return spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, timeout=900)
    parser.add_argument("--port", type=int, default=None, help="host port of the Kalpana deployment "
                                                                "(default: a free one in 28000-28999)")
    parser.add_argument("--raw-port", type=int, default=None, help="host port of the raw-SDK container "
                                                                    "(default: a free one in 28000-28999)")
    parser.add_argument("--profile", action="store_true",
                        help="also run one redeploy under cProfile and one under -X importtime")
    parser.add_argument("--healthcheck", default=None, metavar="CHECK",
                        help="the deployment's healthcheck (default: Kalpana's default, tcp; e.g. / for HTTP)")
    args = parser.parse_args()

    run_id, pycache, client = start_run(args.no_bytecode_cache)
    port = args.port or free_port(28000, 28999)
    raw_port = args.raw_port or free_port(28000, 28999)
    while raw_port == port:
        raw_port = free_port(28000, 28999)
    project = KalpanaProject(f"bench-{run_id}", keep_dir=args.keep_dir)
    raw = RawSwap(client, run_id, raw_port)
    report: dict[str, Any] = {"benchmark": "redeploy", "run_id": run_id, "reps": args.reps, "port": port,
                              "raw_port": raw_port, "healthcheck": args.healthcheck or "default (tcp)", "bytecode": bytecode_note(), "machine": machine_info()}
    failures: list[str] = []
    apply_t: list[Timing] = []
    raw_t: list[Timing] = []
    safe_t: list[Timing] = []
    gaps: list[float] = []
    raw_gaps: list[float] = []
    recorded_gaps: list[float] = []
    recorded_deploy: list[float] = []
    recorded_trial: list[float] = []
    startup: dict[str, Any] = {}
    profile: dict[str, Any] | None = None
    try:
        with deadline(args.timeout):
            log(f"setting up: Kalpana deployment {DEPLOYMENT} on port {port} (instance {project.instance}), "
                f"raw container {raw.name} on port {raw_port}")
            rev = 0
            project.write_deployment(DEPLOYMENT, kalpana_spec(port, rev, args.healthcheck))
            project.run("apply", timeout=300)
            wait_200(port, 30, interval=0.005)
            raw.setup()

            def kalpana_round() -> None:
                nonlocal rev
                rev += 1
                project.write_deployment(DEPLOYMENT, kalpana_spec(port, rev, args.healthcheck))
                with gap_poller(port) as poller:
                    timing, _ = project.timed("apply", timeout=300)
                    gap = poller.finish(timeout=10).longest_gap
                build = project.run_json("builds", DEPLOYMENT, "--limit", "1")["builds"][0]
                if build.get("status") != "SUCCESS" or build.get("action") != "redeploy":
                    failures.append(f"round {rev}: expected a successful redeploy (no rebuild), got " + json.dumps(
                        {k: build.get(k) for k in ('id', 'action', 'reason', 'status', 'error_message')}))
                durations = build.get("durations") or {}
                apply_t.append(timing)
                gaps.append(gap)
                if durations.get("gap") is not None:
                    recorded_gaps.append(durations["gap"])
                if durations.get("deploy") is not None:
                    recorded_deploy.append(durations["deploy"])
                if durations.get("trial") is not None:
                    recorded_trial.append(durations["trial"])

            def raw_round() -> None:
                with gap_poller(raw_port) as poller:
                    timing = raw.swap()
                    gap = poller.finish(timeout=10).longest_gap
                raw_t.append(timing)
                raw_gaps.append(gap)

            def safe_round() -> None:
                safe_t.append(raw.safe_swap())

            log("warm-up round (not timed)")
            kalpana_round()
            raw_round()
            safe_round()
            for lst in (apply_t, raw_t, safe_t, gaps, raw_gaps, recorded_gaps, recorded_deploy, recorded_trial):
                lst.clear()
            log(f"timing {args.reps} rounds of: kalpana apply (env change), raw SDK swap, raw SDK safe swap")
            for i in range(args.reps):
                rounds = [kalpana_round, raw_round, safe_round]
                for fn in rounds[i % 3:] + rounds[:i % 3]:
                    fn()
                log(f"  rep {i + 1}/{args.reps}: apply {apply_t[-1].wall:.3f} s (gap {gaps[-1]:.3f}, recorded "
                    f"{recorded_gaps[-1] if recorded_gaps else float('nan'):.3f}), raw {raw_t[-1].wall:.3f} s "
                    f"(gap {raw_gaps[-1]:.3f}), raw safe {safe_t[-1].wall:.3f} s")
            log("python start-up and import figures")
            startup = python_startup_figures(args.reps)
            if args.profile:
                log("profiling one redeploy (cProfile) and one more (-X importtime)")
                rev += 1
                project.write_deployment(DEPLOYMENT, kalpana_spec(port, rev, args.healthcheck))
                profile = cprofile_cli(project, "apply")
                rev += 1
                project.write_deployment(DEPLOYMENT, kalpana_spec(port, rev, args.healthcheck))
                profile.update(importtime_profile(project, "apply"))
    except Deadline as exc:
        failures.append(str(exc))
        log(f"ERROR: {exc}")
    finally:
        log("cleaning up")
        failures += remove_labelled(client, f"{BENCH_LABEL}={run_id}")
        failures += remove_kalpana_instance(client, project.instance)
        project.close()
        client.close()
        if pycache is not None:
            shutil.rmtree(pycache, ignore_errors=True)
    if failures:
        log("problems:\n  " + "\n  ".join(failures))

    s_apply, s_raw = timing_summary(apply_t), timing_summary(raw_t)
    s_gap, s_raw_gap = summary(gaps), summary(raw_gaps)
    s_rec_gap, s_rec_deploy = summary(recorded_gaps), summary(recorded_deploy)
    s_rec_trial = summary(recorded_trial)
    s_safe = timing_summary(safe_t)
    overhead = round(s_apply["median"] - s_raw["median"], 4) if apply_t and raw_t else None
    safe_overhead = round(s_apply["median"] - s_safe["median"], 4) if apply_t and safe_t else None
    gap_max = s_gap["max"]
    imports = (startup.get("imports of apply (in-process)") or {}).get("median")
    interpreter = (startup.get("python -c pass") or {}).get("median")
    attributed = None
    if overhead is not None and imports is not None and interpreter is not None:
        attributed = {"python_start_s": interpreter, "imports_s": imports,
                      "rest_s": round(overhead - interpreter - imports, 4)}
    report.update({
        "apply": s_apply, "raw_sdk": s_raw, "raw_sdk_safe": s_safe, "overhead_over_safe_s": safe_overhead,
        "gap_polled": s_gap, "gap_polled_raw": s_raw_gap,
        "gap_recorded": s_rec_gap, "deploy_recorded": s_rec_deploy, "trial_recorded": s_rec_trial,
        "startup": startup,
        "overhead_s": overhead, "overhead_attribution": attributed,
        "targets": {
            "overhead <= 0.3 s": {"value": overhead, "verdict": verdict(overhead, 0.3)},
            "gap (median) < 1 s": {"value": s_gap["median"], "verdict": verdict(s_gap["median"], 1.0, strict=True)},
            "gap (max) < 1 s": {"value": gap_max, "verdict": verdict(gap_max, 1.0, strict=True)},
        },
        "apply_over_raw": ratio(s_apply["median"], s_raw["median"]),
        "profile": profile,
        "problems": failures,
    })
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        load = ", ".join(f"{x:.2f}" for x in report["machine"]["loadavg_at_start"] or ())
        print(f"\nredeploy benchmark (run {run_id}; {args.reps} reps, interleaved; seconds; load average at "
              f"start {load}; healthcheck {report['healthcheck']}; {report['bytecode']})")
        print_rows("redeploy after an env change", [
            ("kalpana apply (wall)", s_apply, "fresh process: start-up, imports, plan, swap, record"),
            ("raw SDK swap", s_raw, "in-process stop(0)+remove+create+start until the first 200"),
            ("raw SDK safe swap", s_safe, "the same after a trial container answered 200 on its own address; "
             "then the trial removed"),
            ("gap, kalpana (polled)", s_gap, "longest time without a 200 on the port during the apply"),
            ("gap, kalpana (recorded)", s_rec_gap, "durations.gap from `kalpana builds web --json`"),
            ("deploy, kalpana (recorded)", s_rec_deploy, "durations.deploy (trial..remove old)"),
            ("  of which trial (recorded)", s_rec_trial if recorded_trial else None,
             "durations.trial: the new version proven beside the old one, before the gap"),
            ("gap, raw SDK (polled)", s_raw_gap, "same poller around the raw swap"),
        ])
        print_rows("python start-up (a fresh `kalpana` process pays this first)", [
            (name, s, "") for name, s in startup.items()])
        print("\ntargets (medians)")
        for name, t in report["targets"].items():
            value = "n/a" if t["value"] is None else f"{t['value']:.3f} s"
            print(f"  {name:22} {value:>9}  {t['verdict']}")
        if safe_overhead is not None:
            print(f"  {'overhead over the safe swap':22} {safe_overhead:>7.3f} s  (apply - raw SDK safe swap: "
                  "what Kalpana adds to the Docker work of a rollout that is as safe)")
        if attributed:
            print(f"  overhead = apply - raw = {overhead:.3f} s, of which python start-up ~{interpreter:.3f} s, "
                  f"imports ~{imports:.3f} s, the rest ~{attributed['rest_s']:.3f} s "
                  "(config, history, plan, record, health probing)")
        if profile:
            print_profile(profile, "where a redeploy apply spends its time")
        if failures:
            print("\nproblems:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
