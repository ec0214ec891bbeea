"""A new workspace for `kalpana init`: kalpana.yaml, a first deployment with its app, a .gitignore.

The first deployment is a static site on busybox httpd that `kalpana apply`
serves as it stands. Existing files are never overwritten unless asked
(``force``); what was written and what was kept is returned for the CLI to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from gitops.errors import KalpanaError
from gitops.spec import DNS_LABEL

DEFAULT_NAME = "hello"
DEFAULT_IMAGE = "busybox:1.36"
# What a workspace must keep out of git: the state directory (history, logs, clones) and secrets.
IGNORED = (".kalpana/", ".env")
_INSTANCE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")  # config.Settings.instance


class Outcome(Enum):
    """What `init` did with one file."""

    CREATED = "created"  #: the file did not exist
    OVERWRITTEN = "overwritten"  #: it existed and ``force`` was given
    KEPT = "kept"  #: it existed and was left as it was


@dataclass
class Scaffolded:
    """The files of a scaffolded workspace, each with what happened to it."""

    root: Path
    files: dict[Path, Outcome] = field(default_factory=dict)  # relative path -> outcome, in writing order
    # Entries of IGNORED that a kept .gitignore lacks (the user adds them; we never edit their file).
    missing_ignores: list[str] = field(default_factory=list)

    def having(self, outcome: Outcome) -> list[Path]:
        """The relative paths with ``outcome``."""
        return [path for path, got in self.files.items() if got is outcome]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a deployment, or None when it can."""
    if len(name) > 63 or not re.match(DNS_LABEL, name):
        return "must be a DNS label: lowercase letters, digits and hyphens, at most 63, not starting or ending with '-'"
    return None


def instance_for(directory: Path) -> str:
    """An instance name from the directory's name (``My Site`` -> ``my-site``), else ``default``.

    Each workspace gets its own instance, so two workspaces on one Docker host never
    prune each other's deployments.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")[:32].strip("-")
    return name if _INSTANCE.match(name) else "default"


def scaffold(directory: Path, *, name: str = DEFAULT_NAME, image: str = DEFAULT_IMAGE,
             force: bool = False) -> Scaffolded:
    """Write a new workspace into ``directory`` (created if missing); existing files are kept unless ``force``."""
    problem = name_problem(name)
    if problem:
        raise KalpanaError(f"deployment name {name!r} {problem}: choose another with --name")
    try:
        is_file = directory.exists() and not directory.is_dir()
    except OSError as exc:  # a name the OS refuses (too long, say)
        raise KalpanaError(f"cannot use {str(directory)[:80]!r} as a directory: {exc.strerror or exc}") from None
    if is_file:
        raise KalpanaError(f"{directory} is a file, not a directory: choose another directory for `kalpana init`")
    result = Scaffolded(directory)
    for rel, text in _files(name, image, instance_for(directory)).items():
        path = directory / rel
        existed = path.exists()
        if existed and not force:
            result.files[rel] = Outcome.KEPT
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise KalpanaError(f"cannot write {path}: {exc.strerror or exc}; choose another directory "
                               "for `kalpana init`") from None
        result.files[rel] = Outcome.OVERWRITTEN if existed else Outcome.CREATED
    gitignore = directory / ".gitignore"
    if result.files[Path(".gitignore")] is Outcome.KEPT:
        lines = {line.strip().rstrip("/") for line in gitignore.read_text(errors="replace").splitlines()}
        result.missing_ignores = [entry for entry in IGNORED if entry.rstrip("/") not in lines]
    return result


def _files(name: str, image: str, instance: str) -> dict[Path, str]:
    return {
        Path("kalpana.yaml"): _SETTINGS.format(instance=instance),
        Path("deployments.d") / f"{name}.yaml": _DEPLOYMENT.format(name=name, image=image),
        Path("apps") / name / "index.html": _PAGE.format(name=name),
        Path(".gitignore"): "".join(f"{entry}\n" for entry in IGNORED),
    }


_SETTINGS = """\
# kalpana.yaml: settings of this Kalpana workspace. Missing keys take their defaults.
# Every key, its default and its KALPANA_<KEY> environment override are documented in
# kalpana.yaml.example in the Kalpana repository; a .env file beside this one is read too.

# Name of this instance: every container and image carries it, so two workspaces on one
# Docker host never touch (or prune) each other's deployments. One per workspace.
instance: {instance}

# Directory of deployment files (*.yaml, *.yml, *.json; one deployment per YAML document).
deployments_dir: deployments.d

# Build history, build logs and locks (kept out of git by .gitignore).
state_dir: .kalpana

# Host address host ports are published on; 127.0.0.1 keeps deployments off the network.
# publish_address: 0.0.0.0

# Base image for deployments that set no `image`.
# default_image: busybox:1.36

# Subdomain routing through Traefik (https://<subdomain>.<base url>) instead of host ports.
# traefik_base_url: example.com
# traefik_email: admin@example.com

# Keep the deployment files in a git repository that `kalpana sync` and `kalpana watch` follow.
# repo:
#   url: https://github.com/acme/deployments.git
#   branch: main
"""

_DEPLOYMENT = """\
# A first deployment: the static site in apps/{name}, served by busybox httpd.
# `kalpana schema` prints every field as a JSON Schema (for your editor); the guide's
# camelCase names (startCommand, exposedPort, ...) work too.
name: {name}
description: A static site served by busybox httpd
# The base image the source is built on.
image: {image}
# The app's files, relative to the directory of kalpana.yaml; copied to /workspace.
source: apps/{name}
# Runs at build time and is baked into the image, e.g.:
# build_command: echo "built at $(date)" > built.txt
start_command: httpd -f -p 8080 -h /workspace
# The port the app listens on inside the container.
port: 8080
# The host port; unset, one is assigned (20000-29999) and kept.
# exposed_port: 8080
# A deploy counts once this answers; until then the old version keeps serving.
healthcheck: /index.html
"""

_PAGE = """\
<!doctype html>
<title>{name}</title>
<h1>Hello from {name}</h1>
<p>Served by Kalpana. Edit apps/{name}/index.html and run <code>kalpana apply</code>.</p>
"""
