"""Deployment files -> validated specs, with every error located by file, line and field.

A file may hold several YAML documents, one deployment each. ``.yaml``,
``.yml`` and ``.json`` files are read; anything else is ignored. A file
that fails contributes nothing, and its error is reported, so the caller
can leave that deployment alone and turn pruning off.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic.alias_generators import to_camel, to_snake

from gitops.errors import SpecError
from gitops.spec import Deployment, Desired, FieldProblem, HealthCheck, Resources, SourceSpec

EXTENSIONS = (".yaml", ".yml", ".json")
# Names a typo is compared with, per mapping: the top level and each nested model.
_NESTED = {"healthcheck": HealthCheck, "resources": Resources, "source": SourceSpec}
_ALIASES = {"env_vars": "env", "envVars": "env"}


def _candidates(parent: tuple[str, ...]) -> list[str]:
    model = _NESTED.get(to_snake(parent[0])) if len(parent) == 1 else (Deployment if not parent else None)
    return sorted(model.model_fields) if model else []


@dataclass
class LoadResult:
    """What a directory of deployment files declares, and what failed to load."""

    desired: dict[str, Desired] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def display_path(path: Path) -> str:
    """Paths in messages are relative to the current directory when that is shorter."""
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("../../") else str(path)
    except ValueError:
        return str(path)


def load_configured(settings) -> LoadResult:
    """Load the deployments ``settings`` (a ``config.Settings``) point at: its directory, workspace, default image."""
    return load_directory(settings.deployments_path, workspace=settings.workspace_path,
                          default_image=settings.default_image)


def load_directory(directory: Path, *, workspace: Path, default_image: str | None = None) -> LoadResult:
    """Load every deployment file under ``directory`` (not recursive; sorted by name)."""
    result = LoadResult()
    if not directory.is_dir():
        result.errors.append(SpecError(display_path(directory), None, None,
                                       "deployments directory not found: create it or set deployments_dir in kalpana.yaml"))
        return result
    seen: dict[str, Desired] = {}
    duplicated: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.suffix not in EXTENSIONS or not path.is_file() or path.name.startswith("."):
            continue
        result.files.append(path)
        loaded, errors = load_file(path, workspace=workspace, default_image=default_image)
        if errors:
            result.errors.extend(errors)
            continue
        for desired in loaded:
            if desired.name in seen:
                duplicated.add(desired.name)
                first = seen[desired.name]
                result.errors.append(SpecError(desired.file, desired.line, "name",
                                               f"deployment {desired.name!r} is already declared in {first.file}:{first.line}: "
                                               "names must be unique, rename one"))
                continue
            seen[desired.name] = desired
    # Duplicates poison both: neither is safe to apply.
    result.desired = {n: d for n, d in seen.items() if n not in duplicated}
    return result


def load_file(path: Path, *, workspace: Path, default_image: str | None = None) -> tuple[list[Desired], list[SpecError]]:
    """Parse and validate one file: all its documents, or its errors."""
    shown = display_path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [SpecError(shown, None, None, f"cannot read file ({exc})")]
    try:
        documents = list(_documents(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [SpecError(shown, mark.line + 1 if mark else None, None, f"not valid YAML: {problem}")]
    except _DuplicateKey as exc:
        return [], [SpecError(shown, exc.line, exc.key, "key appears twice in one mapping: keep one")]
    loaded: list[Desired] = []
    errors: list[SpecError] = []
    for data, lines, start in documents:
        if data is None:
            continue
        if not isinstance(data, dict):
            errors.append(SpecError(shown, start, None, "a deployment must be a mapping of fields (name, start_command, ...)"))
            continue
        try:
            spec = Deployment.model_validate(data)
        except ValidationError as exc:
            errors.extend(_spec_errors(shown, exc, lines, start))
            continue
        desired, problem = _resolve(spec, path, shown, lines, start, workspace, default_image)
        if problem:
            errors.append(problem)
        else:
            loaded.append(desired)
    return (loaded, []) if not errors else ([], errors)


def _resolve(spec: Deployment, path: Path, shown: str, lines: dict, start: int,
             workspace: Path, default_image: str | None) -> tuple[Desired | None, SpecError | None]:
    env: dict[str, str] = {}
    if spec.env_file:
        env_path = (path.parent / spec.env_file)
        line = _line(lines, ("env_file",), start)
        if not env_path.is_file():
            return None, SpecError(shown, line, "env_file", f"{display_path(env_path)} not found: create it or remove env_file")
        env.update({k: v or "" for k, v in dotenv_values(env_path).items()})
    env.update(spec.env)
    if spec.source and spec.source.path:
        src = workspace / spec.source.path
        if not src.is_dir():
            return None, SpecError(shown, _line(lines, ("source", "path"), start), "source.path",
                                   f"directory {display_path(src)} not found (paths are relative to the workspace {display_path(workspace)})")
    return Desired(spec, shown, _line(lines, ("name",), start), image=spec.image or default_image, env=env), None


def _spec_errors(shown: str, exc: ValidationError, lines: dict, start: int) -> list[SpecError]:
    found = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            loc = loc + (cause.field,)
        if err["type"] == "extra_forbidden":
            known = _candidates(loc[:-1])
            near = difflib.get_close_matches(to_snake(loc[-1]), known, n=1) or \
                difflib.get_close_matches(loc[-1], [to_camel(k) for k in known], n=1)
            message = "unknown field" + (f" (did you mean {to_snake(near[0])!r}?)" if near else "")
        elif err["type"] == "missing":
            message = "field required"
        elif err["type"] == "string_pattern_mismatch" and loc[-1] in ("name", "subdomain"):
            message = (f"{err['input']!r} is not a DNS label: use lowercase letters, digits and hyphens "
                       "(at most 63, not starting or ending with a hyphen)")
        field_name = ".".join(_ALIASES.get(p) or (to_snake(p) if not p.isdigit() else p) for p in loc) or None
        found.append(SpecError(shown, _line(lines, loc, start), field_name, message))
    return found


def _line(lines: dict[tuple[str, ...], int], loc: tuple[str, ...], start: int) -> int:
    """The line of the deepest key of ``loc`` present in the document (aliases included)."""
    for depth in range(len(loc), 0, -1):
        key = loc[:depth]
        if key in lines:
            return lines[key]
        camel = tuple(to_camel(k) for k in key)
        if camel in lines:
            return lines[camel]
        if key == ("env",):
            for alias in (("envVars",), ("env_vars",)):
                if alias in lines:
                    return lines[alias]
    return start


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.key, self.line = key, line


def _documents(text: str):
    """Yield (data, {key path: line}, first line) for each YAML document."""
    # The C loader when PyYAML has it: same marks, several times faster on a no-op apply of 100 files.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            lines: dict[tuple[str, ...], int] = {}
            _walk(node, (), lines)
            data = loader.construct_document(node)
            yield data, lines, node.start_mark.line + 1
    finally:
        loader.dispose()


def _walk(node: Any, prefix: tuple[str, ...], lines: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise _DuplicateKey(".".join(prefix + (key,)), key_node.start_mark.line + 1)
            seen.add(key)
            lines[prefix + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, prefix + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[prefix + (str(index),)] = item.start_mark.line + 1
            _walk(item, prefix + (str(index),), lines)


def schema() -> dict:
    """JSON Schema of one deployment document (for editors)."""
    out = Deployment.model_json_schema(by_alias=False)
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "Kalpana deployment"
    return out


def dumps_schema() -> str:
    """The schema as pretty JSON."""
    return json.dumps(schema(), indent=2)
