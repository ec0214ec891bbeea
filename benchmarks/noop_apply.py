#!/usr/bin/env python3
"""Benchmark (a): a no-op `kalpana apply` on 20 and 100 running deployments.

Measured in the same run, interleaved (every round runs each variant once, in a
rotating order, so machine noise hits all of them alike):

* ``kalpana@20`` / ``kalpana@100``: wall time of ``python -m gitops -c kalpana.yaml apply``
  (a fresh process, as a user runs it) when everything is already up to date: a repeated no-op
  apply, which is replayed from its record (gitops/noop_replay.py). Before the timed rounds the
  script waits for the inputs to settle and checks that the apply is replayed, and again after them
  (a problem is reported otherwise);
* ``kalpana@20 full`` / ``kalpana@100 full``: the same with ``KALPANA_NO_REPLAY=1``: the files
  validated and the plan made, as the first no-op after a change runs;
* ``compose@20``: ``docker-compose -p <project> up -d`` on an equivalent 20-service file
  (same image, commands, env, init, restart policy, ports) after a first ``up``;
* ``floor``: one Python process that imports the docker SDK and lists containers once.

Targets (issue 12; issue 2 had 0.5 x): kalpana@20 <= 0.3 x compose@20; kalpana@100 <= 1.5 x kalpana@20
(printed for the full runs too).

    python benchmarks/noop_apply.py [--reps 7] [--sizes 20,100] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from gitops.noop_replay import SETTLE_SECONDS  # noqa: E402
from _common import (BASE_IMAGE, print_ratios, BENCH_LABEL, Deadline, KalpanaProject, PYTHON, Timing, base_env,  # noqa: E402
                     bytecode_note, common_arguments, deadline, interleaved, log, machine_info,
                     print_profile, print_rows, profile_cli, python_startup_figures, ratio,
                     remove_kalpana_instance, remove_labelled, start_run, timed_command, timing_summary,
                     verdict)

WEB_COMMAND = "httpd -f -p 8080 -h /tmp"
SLEEP_COMMAND = "sleep 100000"
FLOOR_CODE = "import docker; docker.from_env().api.containers(all=True)"


def deployment_specs(count: int, port_every: int) -> dict[str, dict[str, Any]]:
    """``count`` tiny deployments: every ``port_every``-th one serves HTTP on a host port, the rest sleep."""
    specs = {}
    for i in range(count):
        web = port_every > 0 and i % port_every == 0
        spec: dict[str, Any] = {"start_command": WEB_COMMAND if web else SLEEP_COMMAND, "env": {"INDEX": str(i)}}
        if web:
            spec["port"] = 8080
        specs[f"{'web' if web else 'svc'}{i:03d}"] = spec
    return specs


def compose_file(specs: dict[str, dict[str, Any]], run_id: str) -> dict[str, Any]:
    """The docker-compose equivalent of the Kalpana deployments (what Kalpana's containers run with)."""
    services = {}
    for name, spec in specs.items():
        service: dict[str, Any] = {
            "image": BASE_IMAGE,
            "entrypoint": ["/bin/sh", "-c"],
            "command": [spec["start_command"]],
            "working_dir": "/workspace",
            "environment": spec["env"],
            "init": True,
            "restart": "unless-stopped",
            "stop_grace_period": "0s",
            "labels": {BENCH_LABEL: run_id},
        }
        if spec.get("port"):
            service["ports"] = [str(spec["port"])]  # an ephemeral host port on 0.0.0.0, like Kalpana's binding
        services[name] = service
    return {"version": "2.4", "services": services, "networks": {"default": {"labels": {BENCH_LABEL: run_id}}}}


class ComposeProject:
    def __init__(self, root: Path, name: str, specs: dict[str, dict[str, Any]], run_id: str):
        self.root = root
        self.name = name
        self.file = root / "docker-compose.yml"
        self.file.write_text(yaml.safe_dump(compose_file(specs, run_id), sort_keys=False))
        self.env = {**base_env(), "COMPOSE_INTERACTIVE_NO_CLI": "1"}

    def command(self, *args: str) -> list[str]:
        return ["docker-compose", "--no-ansi", "-p", self.name, "-f", str(self.file), *args]

    def up(self) -> Timing:
        return timed_command(self.command("up", "-d"), cwd=self.root, env=self.env, timeout=300)

    def down(self) -> None:
        subprocess.run(self.command("down", "-t", "0", "--remove-orphans"), cwd=self.root, env=self.env,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=300)


def check_noop(project: KalpanaProject, expected: int) -> None:
    """The apply we time must really be a no-op: nothing pending, every deployment up to date."""
    result = project.run_json("apply", timeout=300)
    steps = result["plan"]["steps"]
    changed = [s for s in steps if s["action"] != "noop"]
    if changed or result["results"] or len(steps) != expected or not result["ok"]:
        raise RuntimeError(f"{project.instance}: the second apply was not a no-op: "
                           f"{json.dumps(changed or result['results'])[:2000]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.add_argument("--sizes", default="20,100", help="numbers of Kalpana deployments (default 20,100)")
    parser.add_argument("--port-every", type=int, default=5,
                        help="every Nth deployment serves HTTP on a host port (default 5; 0: none)")
    parser.add_argument("--no-compose", action="store_true", help="skip the docker-compose baseline")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one no-op apply of the largest size (-X importtime and cProfile)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    compose_size = sizes[0]
    if not args.no_compose and shutil.which("docker-compose") is None:
        sys.exit("docker-compose not found: `KALPANA_WITH_COMPOSE=1 bash scripts/ensure-docker.sh`, or --no-compose")

    run_id, pycache, client = start_run(args.no_bytecode_cache)
    projects: dict[int, KalpanaProject] = {}
    compose: ComposeProject | None = None
    compose_dir: Path | None = None
    report: dict[str, Any] = {"benchmark": "noop_apply", "run_id": run_id, "reps": args.reps, "sizes": sizes,
                              "port_every": args.port_every, "bytecode": bytecode_note(), "machine": machine_info()}
    failures: list[str] = []
    try:
        with deadline(args.timeout):
            # -- setup ---------------------------------------------------------------
            for size in sizes:
                project = KalpanaProject(f"bench-{run_id}-{size}", keep_dir=args.keep_dir)
                projects[size] = project
                for name, spec in deployment_specs(size, args.port_every).items():
                    project.write_deployment(name, spec)
                log(f"setting up {size} Kalpana deployments (instance {project.instance}): one `kalpana apply`")
                project.apply_with_progress(size, timeout=max(60.0, 10.0 * size), label=f"kalpana@{size}")
                check_noop(project, size)
            if not args.no_compose:
                compose_dir = Path(tempfile.mkdtemp(prefix=f"kbench-compose-{run_id}-"))
                compose = ComposeProject(compose_dir, f"kbench{run_id}", deployment_specs(compose_size, args.port_every),
                                         run_id)
                log(f"setting up the {compose_size}-service compose project {compose.name}")
                log(f"  first `docker-compose up -d`: {compose.up().wall:.1f} s")

            # -- measurements --------------------------------------------------------
            variants = {}
            for size, project in projects.items():
                def kalpana(project=project, env=None) -> Timing:
                    elapsed, result = project.timed("apply", timeout=300, extra_env=env)
                    if "0 changed, 0 failed" not in result.stdout:
                        raise RuntimeError(f"{project.instance}: apply was not a no-op:\n{result.stdout[-2000:]}")
                    return elapsed
                variants[f"kalpana@{size}"] = kalpana
                # The same apply with the replay turned off: the full run that a change (or the first
                # no-op after one) pays.
                variants[f"kalpana@{size} full"] = lambda kalpana=kalpana: kalpana(env={"KALPANA_NO_REPLAY": "1"})
            log(f"letting the files settle ({SETTLE_SECONDS:g} s) so that a no-op apply is recorded for replay")
            time.sleep(SETTLE_SECONDS + 0.5)
            for size, project in projects.items():
                project.run("apply")
                if not replayed(project):
                    failures.append(f"kalpana@{size}: a repeated no-op apply was not replayed")
            if compose is not None:
                variants[f"compose@{compose_size}"] = compose.up
            variants["floor"] = lambda: timed_command([PYTHON, "-c", FLOOR_CODE], timeout=60)
            log("warm-up round (not timed)")
            for fn in variants.values():
                fn()
            log(f"timing {args.reps} rounds of: {', '.join(variants)}")
            samples = interleaved(args.reps, variants)
            for size, project in projects.items():
                if not replayed(project):
                    failures.append(f"kalpana@{size}: the no-op apply was no longer replayed after the timed rounds")
            log("python start-up and import figures")
            startup = python_startup_figures(args.reps)
            profile = profile_cli(projects[sizes[-1]], "apply") if args.profile else None
    except Deadline as exc:
        failures.append(str(exc))
        log(f"ERROR: {exc}")
        samples, startup, profile = {}, {}, None
    finally:
        log("cleaning up")
        if compose is not None:
            compose.down()
        failures += remove_labelled(client, f"{BENCH_LABEL}={run_id}")
        if compose is not None:
            failures += remove_labelled(client, f"com.docker.compose.project={compose.name}")
        if compose_dir is not None and not args.keep_dir:
            shutil.rmtree(compose_dir, ignore_errors=True)
        for project in projects.values():
            failures += remove_kalpana_instance(client, project.instance)
            project.close()
        client.close()
        if pycache is not None:
            shutil.rmtree(pycache, ignore_errors=True)
    if failures:
        log("cleanup/run problems:\n  " + "\n  ".join(failures))

    stats = {name: timing_summary(values) for name, values in samples.items()}
    med = {name: s["median"] for name, s in stats.items()}
    cpu = {name: s["cpu_median"] for name, s in stats.items()}
    small, large = f"kalpana@{sizes[0]}", f"kalpana@{sizes[-1]}"
    compose_key = f"compose@{compose_size}"
    r_compose = ratio(med.get(small), med.get(compose_key))
    r_scale = ratio(med.get(large), med.get(small)) if len(sizes) > 1 else None
    ratios: dict[str, dict[str, Any]] = {}
    if not args.no_compose:
        ratios[f"{small}/{compose_key}"] = {"value": r_compose, "target": "<= 0.3", "verdict": verdict(r_compose, 0.3)}
    if len(sizes) > 1:
        ratios[f"{large}/{small}"] = {"value": r_scale, "target": "<= 1.5", "verdict": verdict(r_scale, 1.5)}
    ratios[f"{small}/floor"] = {"value": ratio(med.get(small), med.get("floor"))}
    if not args.no_compose:
        r_full = ratio(med.get(f"{small} full"), med.get(compose_key))
        ratios[f"{small} full/{compose_key}"] = {"value": r_full}  # the first no-op after a change
    if len(sizes) > 1:
        ratios[f"{large} full/{small} full"] = {"value": ratio(med.get(f"{large} full"), med.get(f"{small} full")),
                                                "target": "<= 1.5", "verdict": verdict(
                                                    ratio(med.get(f"{large} full"), med.get(f"{small} full")), 1.5)}
    if not args.no_compose:
        ratios[f"{small}/{compose_key} (CPU)"] = {"value": ratio(cpu.get(small), cpu.get(compose_key))}
    if len(sizes) > 1:
        ratios[f"{large}/{small} (CPU)"] = {"value": ratio(cpu.get(large), cpu.get(small))}
    report.update({
        "results": stats,
        "startup": startup,
        "ratios": ratios,
        "profile": profile,
        "problems": failures,
    })
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        load = ", ".join(f"{x:.2f}" for x in report["machine"]["loadavg_at_start"] or ())
        print(f"\nno-op apply benchmark (run {run_id}; {args.reps} reps, interleaved; seconds; "
              f"load average at start {load}; {report['bytecode']})")
        print_rows("no-op runs", [
            *[row for size in sizes for row in (
                (f"kalpana@{size}", stats.get(f"kalpana@{size}"),
                 f"`kalpana apply`, {size} deployments up to date (replayed: nothing changed since the last)"),
                (f"kalpana@{size} full", stats.get(f"kalpana@{size} full"),
                 "the same with KALPANA_NO_REPLAY=1: files validated, plan made"))],
            (compose_key, stats.get(compose_key), f"`docker-compose up -d`, {compose_size} services up to date"),
            ("floor", stats.get("floor"), "python: import docker, list containers once"),
        ])
        print_rows("python start-up (a fresh `kalpana` process pays this first)", [
            (name, s, "") for name, s in startup.items()])
        print_ratios(report["ratios"], width=30)
        if profile:
            print_profile(profile, f"where a no-op apply of {sizes[-1]} deployments spends its time")
        if failures:
            print("\nproblems:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


def replayed(project: KalpanaProject) -> bool:
    """Whether a no-op `kalpana apply` is now answered from its record: a replay never imports pydantic."""
    result = project.run("apply", python_flags=["-X", "importtime"])
    return "0 changed, 0 failed" in result.stdout and not re.search(r"\|\s+pydantic\b", result.stderr)


if __name__ == "__main__":
    sys.exit(main())
