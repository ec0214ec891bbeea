"""Deployment files -> validated specs, with every error located by file, line and field.

A file may hold several YAML documents, one deployment each. ``.yaml``,
``.yml`` and ``.json`` files are read; anything else is ignored. A file
that fails contributes nothing, and its error is reported, so the caller
can leave that deployment alone and turn pruning off.

The files are input, not trusted code: a file must itself lie in the
deployments directory (a symlink out of it is not read), every host path it
names must resolve inside the workspace, the config repository's checkout or
one of ``allowed_roots``, and parsing is bounded in size, depth and alias
expansion, so no file can make Kalpana read the host's files or exhaust it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel, to_snake
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from gitops.errors import SpecError
from gitops.spec import Deployment, Desired, FieldProblem, HealthCheck, Resources, SourceSpec, spellings

EXTENSIONS = (".yaml", ".yml", ".json")
# A deployment is a few hundred bytes, a few levels deep; these bounds are far past any real one.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_ALIAS_NODES = 10_000  # nodes that aliases add to one file, counted as if written out
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


@dataclass(frozen=True)
class Roots:
    """The directories the host paths in deployment files may resolve into (symlinks included)."""

    workspace: Path
    checkout: Path | None = None  # the config repository's checkout, when the files come from git
    allowed: tuple[Path, ...] = ()  # allowed_roots of kalpana.yaml

    @cached_property
    def _resolved(self) -> list[tuple[str, Path]]:
        places = [("the workspace", self.workspace.resolve())]
        if self.checkout is not None and self.checkout.resolve() != places[0][1]:
            places.append(("the config repository's checkout", self.checkout.resolve()))
        return places

    def outside(self, target: Path, *extra: tuple[str, Path]) -> str | None:
        """None when ``target`` resolves inside a root (or an ``extra`` one), else where it resolves to, said in full."""
        resolved = target.resolve()
        places = list(self._resolved)
        for label, root in extra:
            root = root.resolve()
            if not any(root.is_relative_to(known) for _, known in places):
                places.append((label, root))
        allowed = [Path(root).resolve() for root in self.allowed]
        if any(resolved.is_relative_to(root) for root in [root for _, root in places] + allowed):
            return None
        absolute = Path(os.path.normpath(target.absolute()))
        lexically = any(absolute.is_relative_to(root) for _, root in places) or \
            any(absolute.is_relative_to(os.path.normpath(root.absolute())) for root in (self.workspace, *self.allowed))
        names = [f"{label} {root}" for label, root in places]
        if allowed:
            names.append("allowed_roots (" + ", ".join(map(str, allowed)) + ")")
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"resolves to {resolved}{' through a symlink' if lexically else ''}, outside {listed}"


def display_path(path: Path) -> str:
    """Paths in messages are relative to the current directory when that is shorter."""
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("../../") else str(path)
    except ValueError:
        return str(path)


def _configured(settings) -> dict[str, Any]:
    return {"workspace": settings.workspace_path, "default_image": settings.default_image,
            "checkout": settings.config_checkout if settings.repo else None,
            "allowed_roots": settings.allowed_root_paths}


def load_configured(settings) -> LoadResult:
    """Load the deployments ``settings`` (a ``config.Settings``) point at: its directory, workspace, roots, image."""
    return load_directory(settings.deployments_path, **_configured(settings))


def load_configured_file(settings, path: Path) -> tuple[list[Desired], list[SpecError]]:
    """``load_file`` of one file of the configured deployments directory, with the settings' roots and image."""
    return load_file(path, directory=settings.deployments_path, **_configured(settings))


def load_directory(directory: Path, *, workspace: Path, default_image: str | None = None,
                   checkout: Path | None = None, allowed_roots: Sequence[Path] = ()) -> LoadResult:
    """Load every deployment file under ``directory`` (not recursive; sorted by name).

    Host paths in the files must resolve inside ``workspace``, ``checkout`` (the config
    repository's, when the files come from git) or one of ``allowed_roots``.
    """
    result = LoadResult()
    if not directory.is_dir():
        result.errors.append(SpecError(display_path(directory), None, None,
                                       "deployments directory not found: create it or set deployments_dir in kalpana.yaml"))
        return result
    roots = Roots(workspace, checkout, tuple(allowed_roots))
    seen: dict[str, Desired] = {}
    duplicated: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.suffix not in EXTENSIONS or not path.is_file() or path.name.startswith("."):
            continue
        result.files.append(path)
        loaded, errors = _load_file(path, directory, roots, default_image)
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
    clashing = _port_clashes(result.desired.values(), result.errors)
    clashing |= _subdomain_clashes(result.desired.values(), result.errors)
    result.desired = {n: d for n, d in result.desired.items() if n not in clashing}
    return result


def _subdomain_clashes(desired: Iterable[Desired], errors: list[SpecError]) -> set[str]:
    """Report a subdomain two enabled deployments claim (at the second, naming the first); return both names."""
    return _clashes(desired, errors, "subdomain", lambda sub, at, other: (
        f"subdomain {sub!r} is also claimed by {at} (deployment {other!r}): one host serves one deployment, "
        "give each its own subdomain"))


def _port_clashes(desired: Iterable[Desired], errors: list[SpecError]) -> set[str]:
    """Report host ports two enabled deployments declare (at the second, naming the first); return every name involved."""
    return _clashes(desired, errors, "exposed_port", lambda port, at, other: (
        f"host port {port} is also declared by {at} (deployment {other!r}): one port serves one deployment, "
        "give each its own exposed_port (or remove it from one and a free port is assigned)"))


def _clashes(desired: Iterable[Desired], errors: list[SpecError], field: str,
             message: Callable[[object, str, str], str]) -> set[str]:
    """Values of ``field`` two enabled deployments both set: an error at the second naming the first's file:line."""
    first: dict[object, Desired] = {}
    clashing: set[str] = set()
    for d in desired:
        value = getattr(d.spec, field)
        if not value or not d.spec.enabled:
            continue
        if value not in first:
            first[value] = d
            continue
        other = first[value]
        clashing |= {other.name, d.name}
        errors.append(SpecError(d.file, d.line_of(field), field,
                                message(value, f"{other.file}:{other.line_of(field)}", other.name)))
    return clashing


def load_file(path: Path, *, workspace: Path, default_image: str | None = None, checkout: Path | None = None,
              allowed_roots: Sequence[Path] = (), directory: Path | None = None) -> tuple[list[Desired], list[SpecError]]:
    """Parse and validate one file: all its documents, or its errors.

    ``directory`` is the deployments directory the file must resolve inside (default: its own).
    """
    return _load_file(path, directory if directory is not None else path.parent,
                      Roots(workspace, checkout, tuple(allowed_roots)), default_image)


def _load_file(path: Path, directory: Path, roots: Roots,
               default_image: str | None) -> tuple[list[Desired], list[SpecError]]:
    shown = display_path(path)
    # Before reading anything: a symlink to /etc/shadow must not have its lines quoted in an error.
    # (A plain file listed from the directory is in it: resolving costs a syscall per path component.)
    if (path.is_symlink() or path.parent != directory) and not path.resolve().is_relative_to(directory.resolve()):
        what = "is a symlink pointing outside" if path.is_symlink() else "is outside"
        return [], [SpecError(shown, None, None, f"{what} the deployments directory {display_path(directory)}: "
                                                 "not read; put the file itself in that directory")]
    if not path.is_file():
        return [], [SpecError(shown, None, None, "is not a regular file: not read; replace it with a file")]
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(min(size, MAX_FILE_BYTES) + 1)
            if len(raw) > size:  # it grew, or its size is not known up front: read on, up to the cap
                raw += handle.read(MAX_FILE_BYTES + 1 - len(raw))
            size = max(size, len(raw))
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [SpecError(shown, None, None, f"cannot read file ({exc})")]
    if size > MAX_FILE_BYTES:
        return [], [SpecError(shown, None, None,
                              f"file is {size} bytes, over the {MAX_FILE_BYTES} bytes (1 MiB) a deployment file may have: "
                              "split it into several files")]
    try:
        documents = list(_documents(text))
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        return [], [SpecError(shown, line, None, f"not valid YAML: {problem}: fix that line")]
    except _DuplicateKey as exc:
        return [], [SpecError(shown, exc.line, exc.key, "key appears twice in one mapping: keep one")]
    except _Refused as exc:
        return [], [SpecError(shown, exc.line, None, exc.message)]
    loaded: list[Desired] = []
    errors: list[SpecError] = []
    for data, lines, start in documents:
        if data is None:
            continue
        if not isinstance(data, dict):
            errors.append(SpecError(shown, start, None, "a deployment must be a mapping of fields (name, start_command, ...)"))
            continue
        twice = _given_twice(shown, data, lines, start)
        if twice:
            errors.extend(twice)
            continue
        try:
            spec = Deployment.model_validate(data)
        except ValidationError as exc:
            errors.extend(_spec_errors(shown, exc, lines, start))
            continue
        desired, problem = _resolve(spec, path, shown, lines, start, roots, directory, default_image)
        if problem:
            errors.append(problem)
        else:
            loaded.append(desired)
    return (loaded, []) if not errors else ([], errors)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """The line and the parser's own words, never the file's content (its context lines can quote it)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1, getattr(exc, "problem", None) or "the parser gave up here"
    if isinstance(exc, yaml.reader.ReaderError):
        return (text[:exc.position].count("\n") + 1,
                f"character #x{exc.character:04x} is not allowed in YAML")
    return None, getattr(exc, "problem", None) or "the parser gave up"


def _given_twice(shown: str, data: dict, lines: dict, start: int) -> list[SpecError]:
    """A field set under two of its names (``startCommand`` and ``start_command``): pydantic would keep one."""
    found = []
    mappings = [((), data, Deployment)]
    top = spellings(Deployment)
    mappings += [((top[str(k)],), v, _NESTED[top[str(k)]]) for k, v in data.items()
                 if top.get(str(k)) in _NESTED and isinstance(v, dict)]
    for prefix, mapping, model in mappings:
        names = spellings(model)
        first: dict[str, str] = {}
        for key in map(str, mapping):
            name = names.get(key)
            if name is None:
                continue
            if name not in first:
                first[name] = key
                continue
            where = [_key_line(lines, prefix, k, start) for k in (first[name], key)]
            found.append(SpecError(shown, where[1], ".".join(prefix + (name,)),
                                   f"given twice, as {first[name]!r} (line {where[0]}) and {key!r} (line {where[1]}): "
                                   "both names are the same field, keep one"))
    return found


def _key_line(lines: dict, prefix: tuple[str, ...], key: str, start: int) -> int:
    # A key merged in (`<<: *defaults`) has no line of its own in this mapping: the merge key's.
    return lines.get(prefix + (key,)) or lines.get(prefix + ("<<",)) or start


def _resolve(spec: Deployment, path: Path, shown: str, lines: dict, start: int, roots: Roots,
             directory: Path, default_image: str | None) -> tuple[Desired | None, SpecError | None]:
    env: dict[str, str] = {}
    if spec.env_file:
        env_path = (path.parent / spec.env_file)
        line = _line(lines, ("env_file",), start)
        outside = roots.outside(env_path, ("the deployments directory", directory))
        if outside:
            return None, SpecError(shown, line, "env_file", f"{outside}: keep env files beside the deployment files "
                                   "or in the workspace, or list the directory in allowed_roots in kalpana.yaml")
        if not env_path.is_file():
            return None, SpecError(shown, line, "env_file", f"{display_path(env_path)} not found: create it or remove env_file")
        from dotenv import dotenv_values  # only a deployment with an env_file needs it

        env.update({k: v or "" for k, v in dotenv_values(env_path).items()})
    env.update(spec.env)
    image = spec.image or default_image
    if spec.source and spec.source.path:
        src = roots.workspace / spec.source.path
        line = _line(lines, ("source", "path"), start)
        outside = roots.outside(src)
        if outside:
            return None, SpecError(shown, line, "source.path", f"{outside}: keep sources in the workspace, "
                                   "or list the directory in allowed_roots in kalpana.yaml")
        if not src.is_dir():
            return None, SpecError(shown, line, "source.path",
                                   f"directory {display_path(src)} not found (paths are relative to the workspace {display_path(roots.workspace)})")
        # The build reads the Dockerfile named, or the source's own one when there is no base image.
        dockerfile = spec.dockerfile or (None if image else "Dockerfile")
        target = (src.resolve() / dockerfile).resolve() if dockerfile else None
        if target is not None and not target.is_relative_to(src.resolve()):
            where = ("dockerfile", _line(lines, ("dockerfile",), start)) if spec.dockerfile else ("source.path", line)
            return None, SpecError(shown, where[1], where[0],
                                   f"{dockerfile} resolves to {target}, outside the source {src.resolve()}: "
                                   "keep the Dockerfile inside the source")
    top = {str(key[0]): number for key, number in lines.items() if len(key) == 1}
    names = spellings(Deployment)
    fields = {names.get(key, key): number for key, number in top.items()}
    return Desired(spec, shown, _line(lines, ("name",), start), image=image, env=env, lines=fields), None


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


class _Refused(Exception):
    """A file the parser must not go on with (too deep, an alias bomb): said at its line, without its content."""

    def __init__(self, line: int | None, message: str):
        self.line, self.message = line, message


class _PyEvents(Reader, Scanner, Parser):
    def __init__(self, text: str):
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


# libyaml makes the events when PyYAML has it (much faster); the composing is ours, to count as it goes.
_Events = yaml.cyaml.CParser if yaml.__with_libyaml__ else _PyEvents


class _GuardedLoader(Composer, _Events, SafeConstructor, Resolver):
    """YAML events composed in Python, so that nesting and aliases can be counted as they come.

    A few hundred bytes of nested anchors expand to millions of nodes in whatever walks the
    result (a "billion laughs"): each alias adds the nodes it stands for to a budget of
    ``MAX_ALIAS_NODES`` per file. Nesting past ``MAX_DEPTH`` (aliases written out) is refused
    as it starts, before libyaml (slow on deep nesting) and recursive code (PyYAML's C
    composer crashes the process near 50,000 levels) are driven into the ground.
    """

    def __init__(self, text: str):
        _Events.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._expanded = 0
        self._open: set[str] = set()  # anchors whose node is still being composed
        self._measured: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, depth), aliases written out

    def compose_document(self):
        self._measured = {}
        return super().compose_document()

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                raise _Refused(line, f"alias *{event.anchor} is used inside the node it names: "
                                     "recursive YAML cannot be a deployment, write the value out")
            if event.anchor in self.anchors:
                nodes, depth = self._measure(self.anchors[event.anchor])
                self._expanded += nodes
                if self._expanded > MAX_ALIAS_NODES:
                    raise _Refused(line, f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb): "
                                         "a deployment needs far fewer, write the values out or use fewer aliases")
                if self._depth + depth > MAX_DEPTH:
                    raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep once aliases are written out: "
                                         "a deployment needs a few, flatten it")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep: a deployment needs a few, flatten it")
        if event.anchor is not None:
            self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        self._open.discard(event.anchor)
        self._depth -= 1
        return node

    def _measure(self, node) -> tuple[int, int]:
        """Nodes under ``node`` and its depth, with aliases written out (each shared node measured once)."""
        known = self._measured.get(id(node))
        if known is None:
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            measures = [self._measure(child) for child in children]
            known = (1 + sum(n for n, _ in measures), 1 + max((d for _, d in measures), default=0))
            self._measured[id(node)] = known
        return known

    def construct_object(self, node, deep=False):
        # PyYAML lets Python's own errors through for some values (`2001-13-01`, `!!float x`); they quote the value.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None, None, f"the value cannot be read as a {node.tag.rsplit(':', 1)[-1]}", node.start_mark) from None


def _documents(text: str):
    """Yield (data, {key path: line}, first line) for each YAML document."""
    loader = _GuardedLoader(text)
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
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(key_node.start_mark.line + 1, "a key must be a name, not a list or a mapping")
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

