"""Declaring and undeclaring deployments by writing their files (the HTTP API's create and delete).

Files stay the source of truth: creating a deployment writes
``<deployments_dir>/<name>.yaml``, deleting one removes that file, and the
usual apply does the rest. Both refuse when the files come from a git
repository (a commit there is the only way to change them) and say which
file to commit. A body is checked by the loader itself, so the API accepts
exactly what a file accepts, and a refused body leaves no file behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from gitops.config import Settings
from gitops.errors import KalpanaError, UnknownDeployment
from gitops.loader import display_path, load_configured, load_configured_file
from gitops.spec import DNS_LABEL


class FileConflict(KalpanaError):
    """The files cannot be changed that way: they come from git, or the name is taken."""


class InvalidDeployment(KalpanaError):
    """A deployment body a file could not hold; ``field`` names the offending field."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def create(settings: Settings, body: Any) -> Path:
    """Write ``body`` (a deployment file's fields) as ``<deployments_dir>/<name>.yaml``; its path.

    FileConflict when the files come from git or ``name`` exists; InvalidDeployment for a body
    the loader refuses (nothing is written then).
    """
    if not isinstance(body, dict):
        raise InvalidDeployment(None, "the body must be a JSON object of deployment fields (name, startCommand, ...)")
    name = body.get("name")
    if not isinstance(name, str) or not re.match(DNS_LABEL, name):
        raise InvalidDeployment("name", "required: lowercase letters, digits and hyphens (a DNS label)")
    directory = settings.deployments_path
    target = directory / f"{name}.yaml"
    if settings.repo is not None:
        raise FileConflict(f"the deployment files come from the git repository {settings.repo.url}: commit "
                           f"{settings.repo.path}/{name}.yaml there and push (or POST the instance webhook)")
    _refuse_taken(settings, name)
    if not directory.is_dir():
        raise FileConflict(f"the deployments directory {display_path(directory)} does not exist: create it first")
    draft = directory / f".{name}.yaml.new"  # hidden: neither the loader nor the file watcher reads it
    try:
        draft.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
        _, errors = load_configured_file(settings, draft)
        if errors:
            first = errors[0]
            raise InvalidDeployment(first.field, first.message)
        try:
            os.link(draft, target)  # fails if the name was taken meanwhile: never overwrites a file
        except FileExistsError:
            raise FileConflict(f"{display_path(target)} already exists: pick another name") from None
    except OSError as exc:  # read-only directory, disk full, permissions: the operator's to fix
        raise FileConflict(f"cannot write {display_path(target)}: {exc.strerror or exc}: check the deployments "
                           "directory's permissions and free space") from None
    finally:
        draft.unlink(missing_ok=True)
    # What one file cannot tell: a host port another file declares too.
    clash = [e for e in load_configured(settings).errors if Path(e.file).resolve() == target.resolve()]
    if clash:
        target.unlink(missing_ok=True)
        raise InvalidDeployment(clash[0].field, clash[0].message)
    return target


def delete(settings: Settings, name: str) -> Path:
    """Remove the file declaring ``name``; its path. FileConflict when it comes from git or declares more."""
    load = load_configured(settings)
    desired = load.desired.get(name)
    if desired is None:
        raise UnknownDeployment(name, sorted(load.desired))
    if settings.repo is not None:
        raise FileConflict(f"{name} is declared in the git repository {settings.repo.url}: delete "
                           f"{_in_repo(settings, desired.file)} there, commit and push")
    path = Path(desired.file).resolve()
    others = sorted(n for n, d in load.desired.items() if n != name and Path(d.file).resolve() == path)
    if others:
        raise FileConflict(f"{desired.file} also declares {', '.join(others)}: remove {name}'s document from it "
                           "by hand")
    try:
        path.unlink()
    except FileNotFoundError:
        pass  # removed meanwhile: what was asked for
    except OSError as exc:
        raise FileConflict(f"cannot remove {desired.file}: {exc.strerror or exc}: check the deployments "
                           "directory's permissions") from None
    return path


def _refuse_taken(settings: Settings, name: str) -> None:
    load = load_configured(settings)
    if name in load.desired:
        raise FileConflict(f"deployment {name!r} already exists, declared in {load.desired[name].file}: "
                           "pick another name, or edit that file")
    for suffix in (".yaml", ".yml", ".json"):
        path = settings.deployments_path / f"{name}{suffix}"
        if path.exists():
            raise FileConflict(f"{display_path(path)} already exists: pick another name, or fix that file")


def _in_repo(settings: Settings, file: str) -> str:
    try:
        return str(Path(file).resolve().relative_to(settings.config_checkout.resolve()))
    except ValueError:
        return file
