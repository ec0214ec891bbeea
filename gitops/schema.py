"""The JSON Schema of one deployment document: what the loader accepts, every spelling and shorthand included.

Editors and CI check files with it, so it must not reject a file Kalpana loads,
nor pass a typo. It is built from the model in ``spec.py`` (field names,
aliases, types, bounds and descriptions come from there) plus the rules of the
model's validators, written again here as JSON Schema: the shorthands
(``source: apps/web``, ``healthcheck: /health``), the three forms of ``env``,
the cross-field rules (``start_command`` or ``dockerfile``, ...), and the
coercions pydantic applies when it loads a file (``port: "8080"``,
``enabled: "yes"``).

What JSON Schema cannot say is left to ``kalpana validate`` (each case is
listed with its reason in tests/unit/test_schema.py): host paths that must
exist inside the workspace, host ports two files declare, a memory string's
minimum (6m), the JSON inside an ``envVars`` string, ``dockerfile`` paths that
climb out after going down (``a/../../x``), digit separators in quoted
numbers, and numbers that round to zero or are NaN.

The schema describes ONE deployment document; a file may hold several (YAML
``---``), each checked on its own.
"""

from __future__ import annotations

import itertools
import json
import types
import typing
from enum import Enum
from typing import Any, Callable

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gitops.spec import Deployment, HealthCheck, HealthKind, Resources, SourceSpec, spellings

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "Kalpana deployment"

# Python's `$` also matches before a final newline; pydantic's patterns (Rust regex) do not.
_END = r"$(?!\n)"
# Every character str.splitlines() breaks a line at (what parse_env_text splits on).
_BREAKS = r"\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"

_NULL: dict = {"type": "null"}
_STRING: dict = {"type": "string"}


def _caseless(word: str) -> str:
    # No inline flags in ECMA-262 regexes (what editors run): spell both cases out.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What pydantic reads as a boolean (case-insensitive, no surrounding space).
_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "y", "n", "t", "f", "1", "0")
_BOOLEAN: dict = {"anyOf": [
    {"type": "boolean"},
    {"enum": [0, 1]},
    {"type": "string", "pattern": "^(?:" + "|".join(map(_caseless, _BOOL_WORDS)) + ")" + _END},
]}

# 1..65535 written out, leading zeros and a `.0` fraction allowed as pydantic allows them.
_PORT_DIGITS = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PORT_STRING = rf"^\s*\+?0*{_PORT_DIGITS}(?:\.0+)?\s*$"
# A decimal above zero (some digit 1-9 before the exponent), or infinity.
_POSITIVE_STRING = (r"^\s*\+?(?:(?=[0-9.]*[1-9])(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    rf"|{_caseless('inf')}(?:{_caseless('inity')})?)\s*$")

_MEMORY_STRING = r"^\s*[0-9]+(?:\.[0-9]+)?\s*[kKmMgGtT]?[iI]?[bB]?\s*$"
_MIN_MEMORY = 6 * 1024 * 1024

# The loader checks keys with Python's re, whose `$` lets a final newline through; an editor (ECMA-262) does not.
_ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SPACE = rf"[^\S{_BREAKS}]"  # whitespace inside one line
_REST = rf"[^{_BREAKS}]*"
_LINE_END = rf"(?![^{_BREAKS}])"  # an item ends its line, so a long bad line cannot make the regex backtrack
_ASSIGN = rf"(?:export {_SPACE}*|(?!export ))[A-Za-z_][A-Za-z0-9_]*{_SPACE}*={_REST}"
_ENV_LINES = rf"\s*(?:(?:#{_REST}|{_ASSIGN}){_LINE_END}\s*)*"
# A JSON object (its content is checked by the loader only), or KEY=VALUE lines, `export` and comments allowed.
_ENV_TEXT = rf"^(?:\s*\{{[\s\S]*|{_ENV_LINES})$"


def _integer(minimum: int, maximum: int) -> dict:
    if (minimum, maximum) != (1, 65535):
        raise ValueError(f"no quoted form for integers in {minimum}..{maximum}: add one in gitops/schema.py")
    return {"anyOf": [
        {"type": "integer", "minimum": minimum, "maximum": maximum},
        {"const": True},  # pydantic reads true as 1
        {"type": "string", "pattern": _PORT_STRING},
    ]}


def _positive_number() -> dict:
    return {"anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"const": True},  # pydantic reads true as 1.0
        {"type": "string", "pattern": _POSITIVE_STRING},
    ]}


def _form(owner: str, name: str, info: FieldInfo) -> dict:
    """The lax form of a plain field, from its annotation and constraints."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    kinds = [a for a in args if a is not type(None)] if optional else [annotation]
    if len(kinds) != 1:
        raise ValueError(f"{owner}.{name}: no JSON Schema form for {annotation}: add one in gitops/schema.py")
    kind = kinds[0]
    limits = {key: getattr(m, key) for m in info.metadata
              for key in ("ge", "le", "gt", "max_length", "pattern") if getattr(m, key, None) is not None}
    if kind is str:
        form: dict = dict(_STRING)
        if "pattern" in limits:
            pattern = limits.pop("pattern")
            form["pattern"] = pattern.removesuffix("$") + _END if pattern.endswith("$") else pattern
        if "max_length" in limits:
            form["maxLength"] = limits.pop("max_length")
    elif kind is int and set(limits) == {"ge", "le"}:
        form = _integer(limits.pop("ge"), limits.pop("le"))
    elif kind is float and limits == {"gt": 0}:
        limits.clear()
        form = _positive_number()
    elif kind is bool:
        form = _BOOLEAN
    elif isinstance(kind, type) and issubclass(kind, Enum):
        form = {"enum": [member.value for member in kind]}  # pydantic matches the values exactly
    else:
        raise ValueError(f"{owner}.{name}: no JSON Schema form for {annotation}: add one in gitops/schema.py")
    if limits:
        raise ValueError(f"{owner}.{name}: constraints {sorted(limits)} not in the schema: add them in gitops/schema.py")
    return {"anyOf": [form, _NULL]} if optional else form


def _given(key: str) -> dict:
    """``key`` is present and not null."""
    return {"required": [key], "properties": {key: {"not": _NULL}}}


def _filled(key: str) -> dict:
    """``key`` is a non-empty string (what the validators test with ``if value``)."""
    return {"required": [key], "properties": {key: {"type": "string", "minLength": 1}}}


def _names(model: type[BaseModel], field: str) -> list[str]:
    """Every key ``field`` is accepted under, its own name first."""
    return [field] + sorted(k for k, v in spellings(model).items() if v == field and k != field)


def _any(parts: list[dict]) -> dict:
    return parts[0] if len(parts) == 1 else {"anyOf": parts}


def _object(model: type[BaseModel], forms: dict[str, dict], rules: list[dict]) -> dict:
    """A mapping of ``model``'s fields under each of their spellings; unknown keys fail, one field given twice fails."""
    properties: dict[str, dict] = {}
    twice: list[dict] = []
    for field, info in model.model_fields.items():
        form = dict(forms[field]) if field in forms else _form(model.__name__, field, info)
        if info.description:
            form["description"] = info.description
        if not info.is_required() and info.default_factory is None:
            form["default"] = info.default.value if isinstance(info.default, Enum) else info.default
        names = _names(model, field)
        properties[field] = form
        for alias in names[1:]:
            properties[alias] = {**form, "description": f"Same as `{field}` (another spelling of it)."}
        # The loader refuses a field set under two of its names rather than keep one of them.
        twice += [{"not": {"required": list(pair)}} for pair in itertools.combinations(names, 2)]
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if model.__doc__:
        out["description"] = model.__doc__.strip().splitlines()[0]
    if rules or twice:
        out["allOf"] = rules + twice
    return out


def _source() -> dict:
    repo_only = [n for f in ("branch", "subdir", "token_env", "ssh_key") for n in _names(SourceSpec, f)]
    inside = {"type": "string", "not": {"pattern": r"^/|(^|/)\.\.(/|$)"}}
    mapping = _object(SourceSpec, {"subdir": {"anyOf": [inside, _NULL]}}, [
        {"oneOf": [_filled("path"), _filled("repo")]},
        {"if": _filled("path"), "then": {"not": {"anyOf": [_filled(n) for n in repo_only]}}},
    ])
    return {"anyOf": [
        _NULL,
        {"type": "string", "minLength": 1, "description": "Shorthand for {path: ...}: a directory of the workspace."},
        mapping,
    ]}


def _healthcheck() -> dict:
    slash = {"type": "string", "pattern": "^/"}
    mapping = _object(HealthCheck, {"path": {"anyOf": [{"type": "string", "maxLength": 0}, slash, _NULL]}}, [
        {"if": {"required": ["type"], "properties": {"type": {"const": HealthKind.HTTP.value}}},
         "then": _filled("path")},
    ])
    kinds = [k.value for k in HealthKind if k is not HealthKind.HTTP]
    return {"anyOf": [
        {**slash, "description": "Shorthand for {type: http, path: ...}."},
        {"enum": kinds, "description": "Shorthand for {type: ...}."},
        mapping,
    ]}


def _http_healthcheck(key: str) -> dict:
    """The deployment's health check (under ``key``) is an HTTP one, in any of its forms."""
    return {"required": [key], "properties": {key: {"anyOf": [
        {"type": "string", "pattern": "^/"},
        {"type": "object", "required": ["type"], "properties": {"type": {"const": HealthKind.HTTP.value}}},
        {"type": "object", "not": {"required": ["type"]}, **_filled("path")},
    ]}}}


def _resources() -> dict:
    memory = {"anyOf": [
        {"type": "string", "pattern": _MEMORY_STRING},
        {"type": "integer", "minimum": _MIN_MEMORY},
        _NULL,
    ]}
    return _object(Resources, {"memory": memory}, [])


def _deployment_forms() -> dict[str, dict]:
    name = _form("Deployment", "name", Deployment.model_fields["name"])
    climbs = r"^/|^(\./+)*\.\.(/|$)"  # absolute, or `..` first once normalised
    return {
        "name": {**name, "not": {"pattern": "--"}},  # `--` marks a container being replaced
        "dockerfile": {"anyOf": [{"type": "string", "not": {"pattern": climbs}}, _NULL]},
        "working_dir": {"type": "string", "pattern": "^/"},
        "env": {"anyOf": [
            {"type": "object", "propertyNames": {"pattern": _ENV_KEY},
             "description": "Values of any type become strings (true -> \"true\", null -> \"\")."},
            {"type": "string", "pattern": _ENV_TEXT, "description": "KEY=VALUE lines, or a JSON object."},
            _NULL,
        ]},
        "source": _source(),
        "healthcheck": _healthcheck(),
        "resources": _resources(),
    }


def _deployment_rules() -> list[dict]:
    def any_of(field: str, test: Callable[[str], dict]) -> dict:
        return _any([test(n) for n in _names(Deployment, field)])

    return [
        {"anyOf": [_filled(n) for f in ("start_command", "dockerfile") for n in _names(Deployment, f)]},
        {"if": any_of("dockerfile", _filled), "then": any_of("source", _given)},
        {"if": any_of("exposed_port", _given), "then": any_of("port", _given)},
        {"if": any_of("healthcheck", _http_healthcheck), "then": any_of("port", _given)},
    ]


def schema() -> dict:
    """JSON Schema (draft 2020-12) of one deployment document, for editors and CI."""
    body = _object(Deployment, _deployment_forms(), _deployment_rules())
    return {
        "$schema": DIALECT,
        "title": TITLE,
        "description": body.pop("description") + " One YAML document of a deployment file "
                       "(a file may hold several, separated by ---).",
        "required": [name for name, info in Deployment.model_fields.items() if info.is_required()],
        **body,
    }


def dumps_schema() -> str:
    """The schema as pretty JSON."""
    return json.dumps(schema(), indent=2)
