"""Deploy the example deployments of a fresh clone, even where no container registry answers.

    python scripts/setup_examples.py [-c kalpana.yaml] [--fallback-tag TAG]

Run by scripts/setup.sh once Kalpana is installed and a Docker engine answers.
Where every base image the deployments name is local or can be pulled, this is
plain `kalpana apply`. Where one cannot be had:

- a busybox base image gets a stand-in built here from Debian's static busybox
  (scripts/build-test-image.sh, tagged ``kalpana-local/busybox``, never the official
  tag: the stand-in is not that image, nor even that version), and the workspace's
  kalpana.yaml names it in ``image_fallbacks`` (the file is created when missing; an
  existing one gets the key appended, its other keys and comments untouched). The
  deployment files stay as written and the builds record the declared image, so the
  user's own `kalpana plan` / `apply` from the same directory see these deployments
  as up to date, and build on the real image once a registry answers;
- any other deployment is skipped, with the reason and what to do.

The examples that can run are then deployed by one plain `kalpana apply NAME...`
(the same workspace as the user's later commands), and the URL of every example
that serves is printed. Exit 0 when at least one serves and every apply that ran
succeeded; 1 otherwise, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gitops import labels as L
from gitops.config import DEFAULT_CONFIG, Settings, load_settings
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


def config_file(config: str | None) -> Path:
    """The settings file the `kalpana` commands of this workspace read (as load_settings picks it)."""
    return Path(config or os.environ.get("KALPANA_CONFIG") or DEFAULT_CONFIG)


CREATED_HEADER = """\
# kalpana.yaml: settings of this Kalpana workspace (every key: kalpana.yaml.example).
# Written by scripts/setup.sh: no registry answered, so the base images below could not be pulled.
# Builds that declare them run on a stand-in built here from Debian's busybox-static; the
# deployment files still name the real image, which new builds use once a registry answers.
"""
APPENDED_HEADER = """\
# Added by scripts/setup.sh: no registry answered, so builds that declare these base images run on
# a stand-in built here from Debian's busybox-static (see image_fallbacks in kalpana.yaml.example).
"""
KEY_LINE = re.compile(r"^image_fallbacks:[ \t]*(#.*)?$")


def name_fallback(config: Path, image: str, tag: str) -> str | None:
    """Make ``config`` map ``image`` to ``tag`` in ``image_fallbacks``; None when it does, else why it does not.

    A missing file is created; an existing one is only ever added to (the key block appended, or
    one entry inserted under a block-style ``image_fallbacks:``): the user's keys and comments stay.
    """
    entry = f"{json.dumps(image)}: {json.dumps(tag)}"
    if not config.exists():
        config.write_text(f"{CREATED_HEADER}image_fallbacks:\n  {entry}\n")
        return None
    text = config.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        return f"{config} is not a mapping of settings"
    current = data.get("image_fallbacks")
    if "image_fallbacks" not in data:
        new = text + ("" if text.endswith("\n") or not text else "\n") + ("\n" if text.strip() else "")
        new += f"{APPENDED_HEADER}image_fallbacks:\n  {entry}\n"
    elif isinstance(current, dict) and image in current:
        if current[image] == tag:
            return None
        return f"image_fallbacks in {config} already maps {image} to {current[image]}: left as it is"
    else:
        lines = text.splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if KEY_LINE.match(line.rstrip("\n"))), None)
        if at is None:  # a flow mapping ({...}) or something stranger: not ours to reformat
            return f"add {image}: {tag} to image_fallbacks in {config} (setup edits only the block form)"
        following = next((line for line in lines[at + 1:] if line.strip() and not line.lstrip().startswith("#")), "")
        indent = following[:len(following) - len(following.lstrip())] or "  "
        if not lines[at].endswith("\n"):
            lines[at] += "\n"
        lines.insert(at + 1, f"{indent}{entry}\n")
        new = "".join(lines)
    expected = {**data, "image_fallbacks": {**(current or {}), image: tag}}
    if yaml.safe_load(new) != expected:  # the edit must add exactly that entry, or nothing is written
        return f"add {image}: {tag} to image_fallbacks in {config} (setup could not add it safely)"
    config.write_text(new)
    return None


def left_by_old_setup(runtime: DockerRuntime, settings: Settings, names: list[str]) -> list[str]:
    """Deployments an earlier setup applied from its copies under the state directory (now foreign here).

    That mechanism is gone: the copies are removed, and their containers are taken over by this workspace.
    """
    overlay = settings.state_path / "setup" / "deployments.d"
    if not overlay.is_dir():
        return []
    for copy in overlay.iterdir():  # ours alone: the earlier setup wrote them
        copy.unlink()
    overlay.rmdir()
    observed = runtime.observe(settings.instance)
    return [name for name in names if name in observed.containers
            and observed.containers[name].labels.get(L.WORKSPACE) == str(overlay)]


class Kalpana:
    """The `kalpana` command of this Python, with the caller's -c/--config."""

    def __init__(self, config: str | None):
        self.prefix = [sys.executable, "-m", "gitops"] + (["-c", config] if config else [])

    def apply(self, names: list[str], take_over: bool = False) -> int:
        flags = ["--take-over"] if take_over else []
        return subprocess.run([*self.prefix, "apply", *flags, *names], stdin=subprocess.DEVNULL).returncode

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

    runnable = list(plan.as_written)
    if plan.stand_in:
        runnable += fall_back(plan, args.fallback_tag, args.config, settings, runtime)
    codes = []
    if runnable:
        try:
            old = left_by_old_setup(runtime, settings, runnable)
        except (KalpanaError, OSError) as exc:
            say(f"could not check for an earlier setup's copies: {str(exc).splitlines()[0]}")
            old = []
        fresh = [name for name in runnable if name not in old]
        if fresh:
            codes.append(kalpana.apply(fresh))
        if old:
            say(f"{', '.join(old)} was deployed by an earlier setup from copies under {settings.state_path}: "
                "taking it over for this workspace")
            codes.append(kalpana.apply(old, take_over=True))
    urls = kalpana.urls()
    _print_urls(urls, runnable)
    for name, why in sorted(plan.skipped.items()):
        say(f"skipped {name}: {why}")
    if any(codes):
        say("an apply failed (see above)")
        return 1
    if not any(name in urls for name in runnable):
        say("nothing could be deployed here: every example needs a base image this host cannot get (see above)")
        return 1
    return 0


def fall_back(plan: Triage, tag: str, config: str | None, settings: Settings, runtime: DockerRuntime) -> list[str]:
    """Give the deployments whose busybox cannot be had a local base image through image_fallbacks.

    The stand-in ``tag`` is built and named in the workspace's kalpana.yaml, unless the settings
    already name another fallback for that image (the user's choice: left as it is). Returns the
    deployments that can now be applied; the others land in ``plan.skipped`` with the reason.
    """
    names = sorted(plan.stand_in)
    theirs = {image: settings.image_fallbacks[image] for image in set(plan.stand_in.values())
              if settings.image_fallbacks.get(image, tag) != tag}
    ours = sorted(set(plan.stand_in.values()) - set(theirs))
    refused: dict[str, str] = {}  # image -> why it has no usable fallback
    for image, fallback in sorted(theirs.items()):
        say(f"image_fallbacks already maps {image} to {fallback}: left as it is")
        if not runtime.image_exists(fallback):
            refused[image] = f"the fallback {fallback} named in image_fallbacks is not on this host either"
    if ours:
        problem = build_stand_in(tag)
        path = config_file(config)
        before = path.read_text() if path.exists() else None
        if problem:
            refused.update({image: f"the local stand-in {tag} could not be built ({problem})" for image in ours})
        else:
            refused.update({image: why for image in ours if (why := name_fallback(path, image, tag))})
            try:
                named = load_settings(config).image_fallbacks
            except KalpanaError as exc:  # only if our edit broke the file, which name_fallback guards against
                named = {}
                refused.update({image: str(exc).splitlines()[0] for image in ours})
            for image in ours:
                if image not in refused and named.get(image) != tag:  # the environment wins over the file
                    refused[image] = (f"KALPANA_IMAGE_FALLBACKS overrides image_fallbacks in {path}: "
                                      f"add {json.dumps(image)}: {json.dumps(tag)} to it")
        covered = [image for image in ours if image not in refused]
        on_it = [name for name in names if plan.stand_in[name] in covered]
        if on_it:
            after = path.read_text()
            named_in = (f"image_fallbacks in {path} names it" if after == before else
                        f"image_fallbacks in {path}, which setup created, names it" if before is None else
                        f"added to image_fallbacks in {path}")
            say(f"{', '.join(covered)} cannot be pulled here: {', '.join(on_it)} runs on {tag}, built here from "
                f"Debian's busybox-static ({busybox_version()}; {named_in}; your deployment files are unchanged)")
    for name in names:
        if plan.stand_in[name] in refused:
            plan.skipped[name] = f"{plan.stand_in[name]} cannot be pulled here: {refused[plan.stand_in[name]]}"
    return [name for name in names if name not in plan.skipped]


def _print_urls(urls: dict[str, str], names: list[str]) -> None:
    for name in names:
        if name in urls:
            say(f"{name} serves at {urls[name]}")


if __name__ == "__main__":
    sys.exit(main())
