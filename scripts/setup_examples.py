"""Deploy the example deployments of a fresh clone, even where no container registry answers.

    python scripts/setup_examples.py [-c kalpana.yaml] [--fallback-tag TAG]

Run by scripts/setup.sh once Kalpana is installed and a Docker engine answers.
Where every base image the deployments name is local or can be pulled, this is
plain `kalpana apply`. Where one cannot be had:

- a busybox base image is replaced by a stand-in built here from Debian's
  static busybox (scripts/build-test-image.sh, tagged ``kalpana-local/busybox``, never
  the official tag: the stand-in is not that image, nor even that version). The
  deployment file stays as written; a copy naming the stand-in is written to
  ``<state_dir>/setup/deployments.d/`` and applied from there, so `kalpana plan`
  keeps saying that the files ask for an image this host lacks;
- any other deployment is skipped, with the reason and what to do.

Then the URL of every example that serves is printed. Exit 0 when at least one
serves and every apply that ran succeeded; 1 otherwise, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gitops.config import load_settings
from gitops.errors import KalpanaError
from gitops.loader import load_configured
from gitops.runtime.docker_runtime import DockerRuntime

BUILDER = Path(__file__).resolve().parent / "build-test-image.sh"
BUSYBOX = Path(os.environ.get("KALPANA_BUSYBOX", "/bin/busybox"))
STAND_IN = "kalpana-local/busybox:latest"
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def say(message: str) -> None:
    print(f"setup: {message}", file=sys.stderr, flush=True)


@dataclass
class Triage:
    """Which deployments can be applied as written, which on the busybox stand-in, which not at all (and why)."""

    as_written: list[str] = field(default_factory=list)
    stand_in: dict[str, str] = field(default_factory=dict)  # deployment -> the base image it cannot get
    skipped: dict[str, str] = field(default_factory=dict)  # deployment -> why


def is_busybox(image: str) -> bool:
    """Whether ``image`` is Docker Hub's official busybox, any tag (``busybox:1.36``, ``docker.io/library/busybox``)."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    name = ref.rsplit(":", 1)[0] if ":" in last else ref
    parts = name.split("/")
    if parts[0] in DOCKER_HUB:
        parts = parts[1:]
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return parts == ["busybox"]


def triage(desired: dict, runtime: DockerRuntime) -> Triage:
    """Sort the loaded deployments by whether their base image is local or pullable (pulling it if it is)."""
    result = Triage()
    missing: dict[str, str] = {}  # image -> why it cannot be had; each image is tried once
    for name, d in desired.items():
        image = d.image if d.spec.enabled and not d.spec.dockerfile else None
        if image and image not in missing and not runtime.image_exists(image):
            say(f"pulling {image} for {name}")
            try:
                runtime.ensure_image(image)
            except KalpanaError as exc:  # ImageMissing, or the engine gave up on the registry
                missing[image] = str(exc).splitlines()[0]
        if image not in missing:
            result.as_written.append(name)
        elif is_busybox(image):
            result.stand_in[name] = image
        else:
            result.skipped[name] = missing[image]
    return result


def busybox_version() -> str:
    """The version of the static busybox the stand-in is built from (``BusyBox 1.35.0``)."""
    try:
        out = subprocess.run([str(BUSYBOX)], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "BusyBox"
    found = re.search(r"BusyBox v(\d[\w.]*)", out)
    return f"BusyBox {found.group(1)}" if found else "BusyBox"


def build_stand_in(tag: str) -> str | None:
    """Build the busybox stand-in as ``tag`` (skipped by the builder when up to date); None, or why it failed."""
    result = subprocess.run(["bash", str(BUILDER), tag], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode == 0:
        return None
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"{BUILDER.name} exited {result.returncode}"


def write_overlay(desired: dict, names: list[str], tag: str, overlay: Path) -> None:
    """Write a copy of each named deployment's document into ``overlay``, its base image replaced by ``tag``."""
    if overlay.exists():
        shutil.rmtree(overlay)  # ours alone: a stale copy must not be applied again
    overlay.mkdir(parents=True)
    for name in names:
        d = desired[name]
        source = Path(d.file).resolve()
        doc = next(doc for doc in yaml.safe_load_all(source.read_text())
                   if isinstance(doc, dict) and doc.get("name") == name)
        for key in ("env_file", "envFile"):
            if key in doc:  # relative to the deployment file, which the copy no longer sits beside
                doc[key] = str((source.parent / doc[key]).resolve())
        doc["image"] = tag
        header = (f"# Written by scripts/setup_examples.py from {source}:\n"
                  f"# {d.image} could not be pulled here, so this copy builds on {tag}\n"
                  f"# (Debian's static busybox, built locally). The original file is unchanged.\n")
        (overlay / f"{name}.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=False))


class Kalpana:
    """The `kalpana` command of this Python, with the caller's -c/--config."""

    def __init__(self, config: str | None):
        self.prefix = [sys.executable, "-m", "gitops"] + (["-c", config] if config else [])

    def apply(self, names: list[str], deployments_dir: Path | None = None) -> int:
        env = dict(os.environ)
        if deployments_dir is not None:
            env["KALPANA_DEPLOYMENTS_DIR"] = str(deployments_dir)
        return subprocess.run([*self.prefix, "apply", *names], env=env, stdin=subprocess.DEVNULL).returncode

    def urls(self) -> dict[str, str]:
        """Deployment -> URL, of those that run and can be reached."""
        result = subprocess.run([*self.prefix, "status", "--json"], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            say(f"`kalpana status` failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
            return {}
        rows = json.loads(result.stdout)["deployments"]
        return {row["name"]: row["url"] for row in rows if row.get("state") == "running" and row.get("url")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", help="settings file (default ./kalpana.yaml)")
    parser.add_argument("--fallback-tag", default=STAND_IN, help=f"tag of the busybox stand-in (default {STAND_IN})")
    args = parser.parse_args(argv)
    kalpana = Kalpana(args.config)
    try:
        settings = load_settings(args.config)
        load = load_configured(settings)
        runtime = DockerRuntime.connect(settings.docker_host, timeout=60)
        plan = triage(load.desired, runtime) if not settings.repo else Triage(as_written=list(load.desired))
    except KalpanaError as exc:
        say(str(exc).splitlines()[0])
        return 1

    if not plan.stand_in and not plan.skipped:
        # Everything can be had (a registry answers, or the images are local): nothing to work around.
        code = kalpana.apply([])
        if code == 0:
            _print_urls(kalpana.urls(), list(load.desired))
        return code

    codes = []
    if plan.as_written:
        codes.append(kalpana.apply(plan.as_written))
    if plan.stand_in:
        tag = args.fallback_tag
        images = ", ".join(sorted(set(plan.stand_in.values())))
        names = sorted(plan.stand_in)
        problem = build_stand_in(tag)
        if problem:
            plan.skipped.update({name: f"{images} cannot be pulled here and the local stand-in {tag} could not be "
                                 f"built ({problem})" for name in names})
        else:
            overlay = settings.state_path / "setup" / "deployments.d"
            write_overlay(load.desired, names, tag, overlay)
            say(f"{images} cannot be pulled here: {', '.join(names)} runs on {tag}, built here from Debian's "
                f"busybox-static ({busybox_version()}; applied from {overlay}; your files are unchanged)")
            codes.append(kalpana.apply(names, deployments_dir=overlay))
    urls = kalpana.urls()
    _print_urls(urls, plan.as_written + sorted(plan.stand_in))
    for name, why in sorted(plan.skipped.items()):
        say(f"skipped {name}: {why}")
    if any(codes):
        say("an apply failed (see above)")
        return 1
    if not any(name in urls for name in plan.as_written + sorted(plan.stand_in)):
        say("nothing could be deployed here: every example needs a base image this host cannot get (see above)")
        return 1
    return 0


def _print_urls(urls: dict[str, str], names: list[str]) -> None:
    for name in names:
        if name in urls:
            say(f"{name} serves at {urls[name]}")


if __name__ == "__main__":
    sys.exit(main())
