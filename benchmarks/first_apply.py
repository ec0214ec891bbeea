#!/usr/bin/env python3
"""Benchmark: the first `kalpana apply` of 20 deployments against docker-compose's first `up -d`.

Measured in the same run, interleaved (every round runs each variant once, in a rotating order):

* ``kalpana``: a fresh instance, first ``python -m gitops apply`` of N deployments at the default
  ``parallelism`` (each builds its image from a source directory with a build command, then starts
  and is health-checked over HTTP on its host port);
* ``kalpana-seq``: the same with ``parallelism: 1`` (one after another, as before issue 12);
* ``compose``: ``docker-compose up -d`` of the equivalent N services, each with a ``build:`` of the
  same recipe (base image, source copied to /workspace, the build command): compose builds N
  images too. It does not wait for health, Kalpana does.

Every round writes new source content, so no variant gets its build layers from the cache of an
earlier one. Target (issue 12, 4): kalpana <= 1.0 x compose.

    python benchmarks/first_apply.py [--reps 3] [--count 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from _common import (BASE_IMAGE, print_ratios, BENCH_LABEL, Deadline, KalpanaProject, Timing, base_env,  # noqa: E402
                     bytecode_note, common_arguments, deadline, interleaved, log, machine_info, print_rows, ratio,
                     remove_kalpana_instance, remove_labelled, start_run, stopwatch, timed_command, timing_summary,
                     verdict)

COMMAND = "httpd -f -p 8080 -h /workspace"


def names(count: int) -> list[str]:
    return [f"app{i:02d}" for i in range(count)]


def write_sources(root: Path, count: int, round_id: str) -> None:
    for name in names(count):
        app = root / name
        app.mkdir(parents=True, exist_ok=True)
        (app / "index.html").write_text(f"{name} {round_id}\n")


def compose_dir(root: Path, count: int, run_id: str, project: str) -> Path:
    """docker-compose.yml with one built service per deployment: the recipe Kalpana generates."""
    services = {}
    for name in names(count):
        (root / name / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nWORKDIR /workspace\nCOPY . /workspace/\n"
            f"RUN [\"/bin/sh\", \"-c\", \"echo building {name}\"]\n")
        services[name] = {
            "build": {"context": f"./{name}", "labels": {BENCH_LABEL: run_id}},
            "image": f"kbench-{project}-{name}",
            "entrypoint": ["/bin/sh", "-c"], "command": [COMMAND], "working_dir": "/workspace",
            "init": True, "restart": "unless-stopped", "stop_grace_period": "0s",
            "labels": {BENCH_LABEL: run_id}, "ports": ["8080"],
        }
    (root / "docker-compose.yml").write_text(yaml.safe_dump(
        {"version": "2.4", "services": services, "networks": {"default": {"labels": {BENCH_LABEL: run_id}}}},
        sort_keys=False))
    return root


class Compose:
    def __init__(self, root: Path, count: int, run_id: str):
        self.root, self.count, self.name = root, count, f"kbenchfirst{run_id}"
        self.env = {**base_env(), "COMPOSE_INTERACTIVE_NO_CLI": "1"}
        self.rounds = 0

    def command(self, *args: str) -> list[str]:
        return ["docker-compose", "--no-ansi", "-p", self.name, "-f", str(self.root / "docker-compose.yml"), *args]

    def first_up(self, run_id: str) -> Timing:
        self.rounds += 1
        write_sources(self.root, self.count, f"compose-{self.rounds}")
        compose_dir(self.root, self.count, run_id, self.name)
        try:
            return timed_command(self.command("up", "-d"), cwd=self.root, env=self.env, timeout=900)
        finally:
            self.down()

    def down(self) -> None:
        subprocess.run(self.command("down", "-t", "0", "--rmi", "all", "--remove-orphans"), cwd=self.root,
                       env=self.env, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)


class FirstApply:
    """A new Kalpana instance per round: its first apply is timed, then everything it made is removed."""

    def __init__(self, label: str, run_id: str, count: int, parallelism: int | None, client, keep_dir: bool):
        self.label, self.run_id, self.count, self.parallelism = label, run_id, count, parallelism
        self.client, self.keep_dir = client, keep_dir
        self.rounds = 0
        self.problems: list[str] = []

    def __call__(self) -> Timing:
        self.rounds += 1
        project = KalpanaProject(f"bench-{self.run_id}-{self.label}-{self.rounds}", keep_dir=self.keep_dir)
        try:
            config = yaml.safe_load(project.config_path.read_text())
            if self.parallelism is not None:
                config["parallelism"] = self.parallelism
            project.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            write_sources(project.root, self.count, f"{self.label}-{self.rounds}")
            for name in names(self.count):
                project.write_deployment(name, {"source": name, "build_command": f"echo building {name}",
                                                "start_command": COMMAND, "port": 8080,
                                                "healthcheck": {"timeout": 60}})
            with stopwatch() as timing:
                result = project.run("apply", timeout=900, check=False)
            if result.returncode != 0 or f"{self.count} changed, 0 failed" not in result.stdout:
                raise RuntimeError(f"{self.label}: first apply did not deploy all {self.count}:\n"
                                   f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
            return timing
        finally:
            self.problems += remove_kalpana_instance(self.client, project.instance)
            project.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, reps=3, timeout=3600)
    parser.add_argument("--count", type=int, default=20, help="deployments / services (default 20)")
    parser.add_argument("--parallelism", type=int, default=None,
                        help="parallelism of the `kalpana` variant (default: Kalpana's own default)")
    parser.add_argument("--no-sequential", action="store_true", help="skip the parallelism 1 variant")
    args = parser.parse_args()
    if shutil.which("docker-compose") is None:
        sys.exit("docker-compose not found: `KALPANA_WITH_COMPOSE=1 bash scripts/ensure-docker.sh`")

    run_id, pycache, client = start_run(args.no_bytecode_cache)
    compose_root = Path(tempfile.mkdtemp(prefix=f"kbench-first-{run_id}-"))
    compose = Compose(compose_root, args.count, run_id)
    report: dict[str, Any] = {"benchmark": "first_apply", "run_id": run_id, "reps": args.reps, "count": args.count,
                              "parallelism": args.parallelism, "bytecode": bytecode_note(), "machine": machine_info()}
    failures: list[str] = []
    kalpana = FirstApply("par", run_id, args.count, args.parallelism, client, args.keep_dir)
    sequential = FirstApply("seq", run_id, args.count, 1, client, args.keep_dir)
    samples: dict[str, list[Timing]] = {}
    try:
        with deadline(args.timeout):
            variants = {"kalpana": kalpana, "compose": lambda: compose.first_up(run_id)}
            if not args.no_sequential:
                variants["kalpana-seq"] = sequential
            log(f"timing {args.reps} rounds of: {', '.join(variants)} ({args.count} deployments each)")
            samples = interleaved(args.reps, variants)
    except (Deadline, RuntimeError) as exc:
        failures.append(str(exc))
        log(f"ERROR: {exc}")
    finally:
        log("cleaning up")
        compose.down()
        failures += remove_labelled(client, f"{BENCH_LABEL}={run_id}")
        failures += remove_labelled(client, f"com.docker.compose.project={compose.name}")
        failures += kalpana.problems + sequential.problems
        shutil.rmtree(compose_root, ignore_errors=True)
        client.close()
        if pycache is not None:
            shutil.rmtree(pycache, ignore_errors=True)
    report["machine"]["loadavg_at_end"] = machine_info()["loadavg_at_start"]

    stats = {name: timing_summary(values) for name, values in samples.items()}
    med = {name: s["median"] for name, s in stats.items()}
    r = ratio(med.get("kalpana"), med.get("compose"))
    report.update({"results": stats, "problems": failures, "ratios": {
        "kalpana/compose": {"value": r, "target": "<= 1.0", "verdict": verdict(r, 1.0)},
        "kalpana-seq/compose": {"value": ratio(med.get("kalpana-seq"), med.get("compose"))},
        "kalpana/kalpana-seq": {"value": ratio(med.get("kalpana"), med.get("kalpana-seq"))},
    }})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        load = ", ".join(f"{x:.2f}" for x in report["machine"]["loadavg_at_start"] or ())
        end = ", ".join(f"{x:.2f}" for x in report["machine"]["loadavg_at_end"] or ())
        print(f"\nfirst apply benchmark (run {run_id}; {args.reps} reps, interleaved; seconds; {args.count} "
              f"deployments; {report['machine']['cpus']} CPUs; load average {load} at start, {end} at end)")
        print_rows("first runs", [
            ("kalpana", stats.get("kalpana"), f"`kalpana apply`, parallelism "
             f"{args.parallelism or 'default'}: {args.count} builds + starts + HTTP health checks"),
            ("kalpana-seq", stats.get("kalpana-seq"), "the same, parallelism 1"),
            ("compose", stats.get("compose"), f"`docker-compose up -d`: {args.count} builds + starts, no health wait"),
        ])
        print_ratios(report["ratios"], width=22)
        if failures:
            print("\nproblems:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
