"""Shared helpers for the benchmarks: a throw-away Kalpana project, cleanup, timing, output.

Everything a benchmark creates on Docker carries a label naming its run
(Kalpana's own ``dev.kalpana.instance=bench-<hex>`` for Kalpana's objects,
``dev.kalpana.benchmark=<run id>`` for compose and raw-SDK objects) and is
removed in ``finally`` blocks. Every subprocess has a timeout, and the whole
run has a deadline (``--timeout``) after which it cleans up and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "kalpana-test-base:latest"
BUILD_TEST_IMAGE = REPO_ROOT / "scripts" / "build-test-image.sh"

# Kalpana's label keys, spelled out so the benchmarks do not import the package they measure.
KALPANA_INSTANCE_LABEL = "dev.kalpana.instance"
# Our own label for everything not made by Kalpana (compose services, raw-SDK containers).
BENCH_LABEL = "dev.kalpana.benchmark"

PYTHON = sys.executable
_SETTINGS_ENV = ("TRAEFIK_BASE_URL", "TRAEFIK_EMAIL", "TRAEFIK_NETWORK")

# The environment of every process a benchmark starts (see configure_bytecode).
_BASE_ENV: dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith("KALPANA_")}


def configure_bytecode(cache_dir: Path | None) -> None:
    """Where child Pythons keep bytecode.

    A pip-installed `kalpana` runs from cached bytecode. A shell with
    PYTHONDONTWRITEBYTECODE=1 (as on the CI machines) recompiles the editable
    package from source on every run instead. With ``cache_dir`` the children
    write and reuse bytecode there (PYTHONPYCACHEPREFIX, nothing is written into
    the source tree); with None they inherit this shell's setting.
    """
    if cache_dir is not None:
        _BASE_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        _BASE_ENV["PYTHONPYCACHEPREFIX"] = str(cache_dir)


def base_env() -> dict[str, str]:
    return dict(_BASE_ENV)


def bytecode_note() -> str:
    if "PYTHONPYCACHEPREFIX" in _BASE_ENV:
        return "bytecode cached (PYTHONPYCACHEPREFIX in a temporary directory)"
    if _BASE_ENV.get("PYTHONDONTWRITEBYTECODE"):
        return "PYTHONDONTWRITEBYTECODE set: the package is compiled from source on every run"
    return "bytecode as this shell has it"


class Deadline(Exception):
    """The run's overall time budget (--timeout) is spent."""


def log(message: str) -> None:
    """Progress goes to stderr, so --json keeps stdout to one document."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def common_arguments(parser: argparse.ArgumentParser, reps: int = 7, timeout: float = 1800) -> None:
    parser.add_argument("--reps", type=int, default=reps, help=f"timed repetitions per variant (default {reps})")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the table")
    parser.add_argument("--timeout", type=float, default=timeout,
                        help=f"overall deadline in seconds; the run cleans up and exits after it (default {timeout:g})")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary project directory (for debugging)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run child Pythons with this shell's bytecode setting (PYTHONDONTWRITEBYTECODE=1 "
                             "recompiles Kalpana on every run) instead of a temporary bytecode cache")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Deadline in the main thread after ``seconds``; SIGTERM/SIGHUP become SystemExit, so finally runs."""

    def on_alarm(signum, frame):  # noqa: ARG001
        raise Deadline(f"the benchmark ran longer than --timeout {seconds:g} s")

    def on_term(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGALRM, on_alarm), (signal.SIGTERM, on_term), (signal.SIGHUP, on_term))}
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- Docker -----------------------------------------------------------------

def docker_client():
    """A docker SDK client of the engine from the environment; exit with one line when none answers."""
    import docker
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        sys.exit(f"Docker engine not reachable ({exc}): run scripts/ensure-docker.sh")
    return client


def ensure_base_image(client) -> None:
    """Build kalpana-test-base:latest (busybox on scratch) when it is missing."""
    import docker.errors
    try:
        client.images.get(BASE_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    log(f"{BASE_IMAGE} missing: running {BUILD_TEST_IMAGE.relative_to(REPO_ROOT)}")
    subprocess.run(["bash", str(BUILD_TEST_IMAGE)], check=True, stdin=subprocess.DEVNULL, timeout=600)


def _gone(exc) -> bool:
    import docker.errors
    return isinstance(exc, docker.errors.NotFound) or (
        getattr(exc, "status_code", None) == 409 and "in progress" in str(getattr(exc, "explanation", "") or ""))


def remove_labelled(client, label: str) -> list[str]:
    """Remove containers, networks and images carrying ``label`` (``key=value``); return failures."""
    import docker.errors
    failures = []
    filters = {"label": label}
    for c in client.api.containers(all=True, filters=filters):
        try:
            client.api.remove_container(c["Id"], force=True, v=True)
        except docker.errors.APIError as exc:
            if not _gone(exc):
                failures.append(f"container {c['Names']}: {exc}")
    for n in client.api.networks(filters=filters):
        try:
            client.api.remove_network(n["Id"])
        except docker.errors.APIError as exc:
            if not _gone(exc):
                failures.append(f"network {n['Name']}: {exc}")
    for image in client.api.images(filters=filters):
        try:
            client.api.remove_image(image["Id"], force=True)
        except docker.errors.APIError as exc:
            if not _gone(exc):
                failures.append(f"image {image.get('RepoTags')}: {exc}")
    return failures


def remove_kalpana_instance(client, instance: str) -> list[str]:
    """Remove everything of one Kalpana instance: labelled objects and its ``kalpana/<instance>...`` images."""
    failures = remove_labelled(client, f"{KALPANA_INSTANCE_LABEL}={instance}")
    prefixes = (f"kalpana/{instance}/", f"kalpana/{instance}-")  # the repository naming has had both forms
    for image in client.api.images():
        if any(tag.startswith(prefixes) for tag in image.get("RepoTags") or []):
            try:
                client.api.remove_image(image["Id"], force=True)
            except Exception as exc:  # noqa: BLE001
                if not _gone(exc):
                    failures.append(f"image {image.get('RepoTags')}: {exc}")
    return failures


def free_port(low: int, high: int) -> int:
    """A host port in [low, high] that nothing listens on (random start, so parallel runs rarely collide)."""
    span = high - low + 1
    start = secrets.randbelow(span)
    for offset in range(span):
        port = low + (start + offset) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


# -- a throw-away Kalpana project --------------------------------------------

class KalpanaProject:
    """kalpana.yaml + deployments.d/ in a temporary directory, driven through the real CLI (``python -m gitops``)."""

    def __init__(self, instance: str, *, keep_dir: bool = False):
        self.instance = instance
        self.keep_dir = keep_dir
        self.root = Path(tempfile.mkdtemp(prefix=f"kalpana-{instance}-"))
        self.config_path = self.root / "kalpana.yaml"
        self.deployments_dir = self.root / "deployments.d"
        self.state_dir = self.root / "state"
        self.deployments_dir.mkdir()
        self.config_path.write_text(yaml.safe_dump({
            "instance": instance,
            "default_image": BASE_IMAGE,
            "state_dir": str(self.state_dir),
            "deployments_dir": "deployments.d",
            "workspace": ".",
            "stop_timeout": 0,
            "lock_timeout": 60,
        }, sort_keys=False))

    def write_deployment(self, name: str, spec: Mapping[str, Any]) -> Path:
        path = self.deployments_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, **spec}, sort_keys=False))
        return path

    def env(self) -> dict[str, str]:
        """Our environment without settings overrides (kalpana.yaml must win), with plain output."""
        env = {k: v for k, v in base_env().items() if k not in _SETTINGS_ENV}
        env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "PYTHONPATH": str(REPO_ROOT),
                    "XDG_CACHE_HOME": str(self.root / ".cache")})  # the no-op replay's record stays here
        return env

    def command(self, *args: str, python_flags: Sequence[str] = (), module: str = "gitops") -> list[str]:
        """``module`` "gitops" is the CLI; "gitops.worker" is the daemon's worker (its job comes on stdin)."""
        return [PYTHON, *python_flags, "-m", module, "-c", str(self.config_path), *args]

    def run(self, *args: str, timeout: float = 300, check: bool = True, python_flags: Sequence[str] = (),
            module: str = "gitops", stdin: str | None = None,
            extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(*args, python_flags=python_flags, module=module), cwd=self.root,
                                env={**self.env(), **(extra_env or {})}, capture_output=True, text=True, timeout=timeout,
                                **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}))
        if check and result.returncode != 0:
            raise RuntimeError(f"kalpana {' '.join(args)} exited {result.returncode}\n"
                               f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}")
        return result

    def run_json(self, *args: str, timeout: float = 300) -> Any:
        return json.loads(self.run(*args, "--json", timeout=timeout).stdout)

    def timed(self, *args: str, timeout: float = 300,
              extra_env: Mapping[str, str] | None = None) -> tuple[Timing, subprocess.CompletedProcess[str]]:
        """Wall and CPU time of one CLI run (start of the process to its exit), and its result."""
        with stopwatch() as timing:
            result = self.run(*args, timeout=timeout, extra_env=extra_env)
        return timing, result

    def apply_with_progress(self, total: int, timeout: float, label: str, attempts: int = 3) -> None:
        """``kalpana apply``, logging how many deployments are done so far (the first apply of a big set).

        A deployment that fails to come up (on a busy shared machine: a health timeout, a host port
        another process took meanwhile) is reported and retried by applying again, up to ``attempts``.
        """
        began = time.monotonic()
        done = 0
        for attempt in range(1, attempts + 1):
            left = timeout - (time.monotonic() - began)
            code, ok, failures = self._apply_streaming(total, done, left, label)
            done += ok
            if code == 0:
                break
            log(f"  {label}: apply exited {code} (attempt {attempt}/{attempts}); failures:\n    "
                + "\n    ".join(failures or ["(no FAILED line; see above)"]))
            if attempt == attempts:
                raise RuntimeError(f"setup apply of {label} failed {attempts} times: " + " | ".join(failures))
        log(f"  {label}: set up in {time.monotonic() - began:.1f} s")

    def _apply_streaming(self, total: int, done: int, timeout: float, label: str) -> tuple[int, int, list[str]]:
        cmd = self.command("apply")
        began = time.monotonic()
        ok = 0
        failures: list[str] = []
        context = 0
        with subprocess.Popen(cmd, cwd=self.root, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, bufsize=1) as proc:
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if time.monotonic() - began > timeout:
                        raise subprocess.TimeoutExpired(cmd, timeout)
                    text = line.rstrip()
                    if context and not text.startswith("OK "):
                        failures[-1] += " / " + text.strip()
                        context -= 1
                    if text.startswith("OK "):
                        ok += 1
                        if (done + ok) % 10 == 0 or done + ok == total:
                            log(f"  {label}: {done + ok}/{total} deployed ({time.monotonic() - began:.0f} s)")
                    elif text.startswith(("FAILED ", "error:")):
                        failures.append(text)
                        context = 6
                code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - began)))
            except BaseException:
                proc.kill()
                proc.wait(timeout=30)
                raise
        return code, ok, failures

    def close(self) -> None:
        if not self.keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            log(f"kept {self.root}")


class Timing:
    """Wall seconds of something, and the CPU seconds (user + sys) its child processes used."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu: float | None = None

    def __repr__(self) -> str:
        return f"Timing(wall={self.wall:.3f}, cpu={self.cpu})"


@contextmanager
def stopwatch(children: bool = True) -> Iterator[Timing]:
    """Time a block; with ``children``, also the CPU its (waited-for) child processes used.

    CPU time is much less disturbed than wall time by other work on a busy machine.
    """
    timing = Timing()
    before = resource.getrusage(resource.RUSAGE_CHILDREN) if children else None
    began = time.perf_counter()
    yield timing
    timing.wall = time.perf_counter() - began
    if before is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        timing.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed_command(cmd: Sequence[str], *, timeout: float = 120, cwd: Path | None = None,
                  env: Mapping[str, str] | None = None) -> Timing:
    """Wall (and CPU) time of one subprocess; a non-zero exit is an error."""
    with stopwatch() as timing:
        result = subprocess.run(list(cmd), cwd=cwd, env=dict(env) if env is not None else base_env(),
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return timing


def interleaved(reps: int, variants: Mapping[str, Callable[[], Timing]]) -> dict[str, list[Timing]]:
    """Run every variant ``reps`` times, rotating the order each round so drift and noise hit all alike."""
    names = list(variants)
    samples: dict[str, list[Timing]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            samples[name].append(variants[name]())
        log(f"  rep {rep + 1}/{reps}: " + ", ".join(f"{n} {samples[n][-1].wall:.3f}" for n in names))
    return samples


# -- figures ------------------------------------------------------------------

def summary(samples: Sequence[float]) -> dict[str, Any]:
    values = [round(v, 4) for v in samples]
    return {"median": round(statistics.median(samples), 4) if samples else None,
            "min": min(values) if values else None, "max": max(values) if values else None,
            "n": len(values), "samples": values}


def timing_summary(samples: Sequence[Timing]) -> dict[str, Any]:
    """Wall-time summary, plus the median CPU seconds when known."""
    result = summary([t.wall for t in samples])
    cpus = [t.cpu for t in samples if t.cpu is not None]
    result["cpu_median"] = round(statistics.median(cpus), 4) if cpus else None
    result["cpu_samples"] = [round(c, 4) for c in cpus]
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def verdict(value: float | None, target: float, below: bool = True, strict: bool = False) -> str:
    if value is None:
        return "n/a"
    ok = (value < target if strict else value <= target) if below else value >= target
    return "MET" if ok else "MISSED"


def print_ratios(ratios: Mapping[str, Mapping[str, Any]], width: int = 22) -> None:
    """The report's ratios (medians), each with its target and verdict when it has one."""
    print("\nratios (medians)")
    for name, row in ratios.items():
        value = "n/a" if row["value"] is None else f"{row['value']:.2f}"
        target = f"  target {row['target']}: {row['verdict']}" if "target" in row else ""
        print(f"  {name:{width}} {value:>6}{target}")


def print_rows(title: str, rows: Sequence[tuple[str, dict[str, Any] | None, str]]) -> None:
    """``label | median | min | max | cpu | n | note`` (seconds; cpu = median CPU of the child processes)."""
    print(f"\n{title}")
    if not rows:
        print("  (not measured)")
        return
    width = max(len(label) for label, _, _ in rows)
    print(f"  {'':{width}}  {'median':>8}  {'min':>8}  {'max':>8}  {'cpu':>7}  {'n':>3}  note")
    for label, stats, note in rows:
        if stats is None or stats.get("median") is None:
            print(f"  {label:{width}}  {'-':>8}  {'-':>8}  {'-':>8}  {'-':>7}  {'-':>3}  {note}")
            continue
        cpu = stats.get("cpu_median")
        cpu_text = f"{cpu:7.3f}" if cpu is not None else f"{'-':>7}"
        print(f"  {label:{width}}  {stats['median']:8.3f}  {stats['min']:8.3f}  {stats['max']:8.3f}  {cpu_text}  "
              f"{stats['n']:3d}  {note}")


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(), "loadavg_at_start": load,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def python_startup_figures(reps: int) -> dict[str, dict[str, Any]]:
    """Where a fresh `kalpana` process spends time before it does anything: interpreter, imports."""
    env = base_env()
    env["PYTHONPATH"] = str(REPO_ROOT)
    imports = ("import time; t = time.perf_counter(); "
               "import gitops.cli.main, gitops.cli.commands, gitops.cli.operate, gitops.engine, gitops.config, "
               "gitops.history, gitops.loader, gitops.runtime.docker_runtime; "
               "print(time.perf_counter() - t)")
    names = ("python -c pass", "python -m gitops --version", "python: import docker", "imports of apply (in-process)")
    samples: dict[str, list[Timing]] = {name: [] for name in names}
    for _ in range(reps):
        samples[names[0]].append(timed_command([PYTHON, "-c", "pass"], env=env))
        samples[names[1]].append(timed_command([PYTHON, "-m", "gitops", "--version"], env=env, cwd=REPO_ROOT))
        samples[names[2]].append(timed_command([PYTHON, "-c", "import docker"], env=env))
        out = subprocess.run([PYTHON, "-c", imports], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60, check=True)
        inner = Timing()
        inner.wall = float(out.stdout.strip().splitlines()[-1])
        samples[names[3]].append(inner)
    return {name: timing_summary(values) for name, values in samples.items()}


def new_run_id() -> str:
    return secrets.token_hex(4)


def start_run(no_bytecode_cache: bool):
    """What every Docker benchmark does first: a run id, the bytecode cache of its child Pythons
    (None with ``--no-bytecode-cache``; the caller removes it at the end), and a client of an engine
    that has the base image. Returns (run_id, pycache, client)."""
    run_id = new_run_id()
    pycache = None if no_bytecode_cache else Path(tempfile.mkdtemp(prefix=f"kbench-pyc-{run_id}-"))
    configure_bytecode(pycache)
    client = docker_client()
    ensure_base_image(client)
    return run_id, pycache, client


# -- profiles -------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def importtime_profile(project: KalpanaProject, *args: str, top: int = 15, module: str = "gitops",
                       stdin: str | None = None) -> dict[str, Any]:
    """One CLI (or worker) run under ``-X importtime``: the top-level imports and the heaviest single modules."""
    result = project.run(*args, python_flags=("-X", "importtime"), timeout=300, module=module, stdin=stdin)
    rows = []  # (cumulative s, self s, depth, module)
    for line in result.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            rows.append((int(m.group(2)) / 1e6, int(m.group(1)) / 1e6, len(m.group(3)) // 2, m.group(4)))
    top_level = sorted((r for r in rows if r[2] == 0), reverse=True)
    heavy = sorted(rows, key=lambda r: r[1], reverse=True)
    return {
        "imports_total_s": round(sum(r[0] for r in top_level), 4),
        "imports_top_level": [{"module": r[3], "cumulative_s": round(r[0], 4)} for r in top_level[:top]],
        "imports_heaviest_self": [{"module": r[3], "self_s": round(r[1], 4)} for r in heavy[:top]],
        "imports_of": {name: round(next((r[0] for r in rows if r[3] == name), 0.0), 4)
                       for name in ("docker", "requests", "pydantic", "rich", "click", "tinydb", "git", "yaml",
                                    "filelock", "gitops.spec", "gitops.history", "gitops.config")},
    }


def cprofile_cli(project: KalpanaProject, *args: str, top: int = 25, module: str = "gitops",
                 stdin: str | None = None) -> dict[str, Any]:
    """One CLI (or worker) run under cProfile: Kalpana's own functions (module bodies left out) and the hottest."""
    fd, name = tempfile.mkstemp(prefix="kalpana-bench-", suffix=".prof")
    os.close(fd)
    out = Path(name)
    try:
        with stopwatch() as timing:
            subprocess.run([PYTHON, "-m", "cProfile", "-o", str(out), "-m", module, "-c", str(project.config_path),
                            *args], cwd=project.root, env=project.env(), capture_output=True, text=True,
                           timeout=300, check=True,
                           **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}))
        stats = pstats.Stats(str(out))
        entries = []
        for (filename, lineno, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            entries.append({"function": f"{_short_path(filename)}:{lineno}({func})", "calls": nc,
                            "tottime": round(tt, 4), "cumtime": round(ct, 4), "_module": func == "<module>"})
    finally:
        out.unlink(missing_ok=True)
    runtime = [e for e in entries if not e["_module"] and e["function"].startswith("gitops/")]
    docker_calls = [e for e in entries if e["function"].startswith("docker/api/client.py")
                    and e["function"].endswith(("(_get)", "(_post)", "(_delete)", "(_post_json)", "(_put)"))]
    for e in entries:
        del e["_module"]
    return {
        "cprofile_wall_s": round(timing.wall, 4),
        "cprofile_runtime_by_cumtime": sorted(runtime, key=lambda e: e["cumtime"], reverse=True)[:top],
        "cprofile_docker_requests": sorted(docker_calls, key=lambda e: e["cumtime"], reverse=True),
        "cprofile_by_tottime": sorted(entries, key=lambda e: e["tottime"], reverse=True)[:top],
    }


def profile_cli(project: KalpanaProject, *args: str) -> dict[str, Any]:
    return {**importtime_profile(project, *args), **cprofile_cli(project, *args)}


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", str(REPO_ROOT) + "/", "/lib/python3."):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def print_profile(profile: dict[str, Any], title: str) -> None:
    if "imports_total_s" in profile:
        print(f"\n{title}\n  imports (-X importtime, top level; sum {profile['imports_total_s']:.3f} s; "
              "cumulative, so nested modules count in their importer):")
        for row in profile["imports_top_level"][:8]:
            print(f"    {row['cumulative_s']:7.3f}  {row['module']}")
        print("  packages, cumulative: " + ", ".join(f"{k} {v:.3f}" for k, v in profile["imports_of"].items() if v))
        print("  heaviest single modules (self time):")
        for row in profile["imports_heaviest_self"][:10]:
            print(f"    {row['self_s']:7.3f}  {row['module']}")
    else:
        print(f"\n{title}")
    if "cprofile_wall_s" in profile:
        print(f"  cProfile (that run took {profile['cprofile_wall_s']:.3f} s wall under the profiler); "
              "Kalpana functions by cumulative time, module bodies left out:")
        for e in profile["cprofile_runtime_by_cumtime"][:20]:
            print(f"    {e['cumtime']:7.3f} cum  {e['tottime']:7.3f} self  {e['calls']:6d}x  {e['function']}")
        print("  Docker API requests:")
        for e in profile["cprofile_docker_requests"]:
            print(f"    {e['cumtime']:7.3f} cum  {e['calls']:6d}x  {e['function']}")
        print("  hottest functions (self time):")
        for e in profile["cprofile_by_tottime"][:10]:
            print(f"    {e['tottime']:7.3f} self  {e['calls']:6d}x  {e['function']}")
