"""The deployment model: what one YAML document declares, and its hashes.

Field names are snake_case; the product guide's camelCase names
(``buildCommand``, ``startCommand``, ...) are accepted as aliases so the
guide's JSON examples are valid files as they stand.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
from enum import Enum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


class SourceSpec(_Model):
    """Where the application's files come from: a local path or a git repository."""

    path: str | None = Field(None, description="Directory relative to the workspace root.")
    repo: str | None = Field(None, description="Git repository: https or ssh URL, a local path or a file:// URL.")
    branch: str | None = Field(None, description="Branch to follow (default: the remote's default branch).")
    subdir: str | None = Field(None, description="Directory inside the repository holding the app.")
    token_env: str | None = Field(None, description="Environment variable holding an https access token.")
    ssh_key: str | None = Field(None, description="Private key file for ssh URLs.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "SourceSpec":
        if bool(self.path) == bool(self.repo):
            raise ValueError("set exactly one of `path` (a local directory) or `repo` (a git URL)")
        if self.path and (self.branch or self.subdir or self.token_env or self.ssh_key):
            raise ValueError("`branch`, `subdir`, `token_env` and `ssh_key` only apply to a `repo` source")
        if self.subdir and (self.subdir.startswith("/") or ".." in self.subdir.split("/")):
            raise ValueError("`subdir` must be a relative path inside the repository")
        return self


class HealthKind(str, Enum):
    """How Kalpana decides a new container is ready."""

    TCP = "tcp"  #: the container port accepts a TCP connection
    HTTP = "http"  #: an HTTP GET of ``path`` answers below 500
    NONE = "none"  #: running (and still running a moment later) is enough


class HealthCheck(_Model):
    """Gate between starting a new container and retiring the old one."""

    type: HealthKind = HealthKind.TCP
    path: str | None = Field(None, description="HTTP path to GET; implies type http.")
    timeout: float = Field(30.0, gt=0, description="Seconds the new container has to become healthy.")
    interval: float = Field(0.05, gt=0, description="Seconds between probes.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith("/"):
                return {"type": "http", "path": value}
            return {"type": value}
        if isinstance(value, dict) and value.get("path") and "type" not in value:
            return {**value, "type": "http"}
        return value

    @model_validator(mode="after")
    def _path_for_http(self) -> "HealthCheck":
        if self.type is HealthKind.HTTP and not self.path:
            raise ValueError("an http health check needs `path` (e.g. /health)")
        if self.path and not self.path.startswith("/"):
            raise ValueError("health check `path` must start with /")
        return self


_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(value: str | int) -> int:
    """``"256m"`` / ``"1GiB"`` / ``1048576`` -> bytes."""
    if isinstance(value, int):
        return value
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ValueError(f"cannot read memory size {value!r}: use a number with k, m or g (e.g. 256m)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Resources(_Model):
    """Limits applied to the container."""

    memory: str | int | None = Field(None, description="Memory limit, e.g. 256m or 1g.")
    cpus: float | None = Field(None, gt=0, description="CPU quota in cores, e.g. 0.5.")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | int | None) -> str | int | None:
        if value is not None and parse_memory(value) < 6 * 1024 * 1024:
            raise ValueError("memory below 6m is refused by Docker")
        return value

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)


def parse_env_text(text: str) -> dict[str, str]:
    """The guide stores envVars as one string: a JSON object or ``KEY=VALUE`` lines."""
    stripped = text.strip()
    if stripped.startswith("{"):
        data = json.loads(stripped)
        if not isinstance(data, dict):
            raise ValueError("envVars JSON must be an object")
        return {str(k): _env_value(v) for k, v in data.items()}
    env: dict[str, str] = {}
    for number, raw in enumerate(stripped.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, sep, value = line.partition("=")
        if not sep:
            # Not quoting the line: it may hold a secret.
            raise ValueError(f"line {number} of envVars is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


class Deployment(_Model):
    """One application: how to build it and how to run it."""

    name: str = Field(..., pattern=DNS_LABEL, max_length=63,
                      description="Deployment identifier: lowercase letters, digits and hyphens (a DNS label).")
    description: str | None = None
    image: str | None = Field(None, description="Base image to build on (defaults to default_image in kalpana.yaml).")
    dockerfile: str | None = Field(None, description="Build the source's own Dockerfile (path inside the source).")
    source: SourceSpec | None = Field(None, description="Application files: a path relative to the workspace, "
                                                        "or a git repository (repo, branch, subdir).")
    build_command: str | None = Field(None, description="Run in working_dir at build time, e.g. `npm run build`.")
    start_command: str | None = Field(None, description="Run by a shell in working_dir to start the app (required unless dockerfile is set).")
    working_dir: str = Field("/workspace", description="Where the source is copied and commands run.")
    port: int | None = Field(None, ge=1, le=65535, description="Port the app listens on inside the container.")
    exposed_port: int | None = Field(None, ge=1, le=65535,
                                     description="Host port; when absent one is assigned once and kept.")
    subdomain: str | None = Field(None, pattern=DNS_LABEL, description="Subdomain under TRAEFIK_BASE_URL.")
    env: dict[str, str] = Field(default_factory=dict,
                                validation_alias=AliasChoices("env", "envVars", "env_vars"),
                                description="Environment variables (mapping, KEY=VALUE lines or a JSON object).")
    env_file: str | None = Field(None, description="File of KEY=VALUE lines, relative to this deployment file.")
    auto_rebuild: bool = Field(False, description="Rebuild on GitHub pushes (webhooks).")
    webhook_secret: str | None = Field(None, description="Secret for this deployment's webhook signature.")
    healthcheck: HealthCheck = Field(default_factory=HealthCheck)
    resources: Resources = Field(default_factory=Resources)
    enabled: bool = Field(True, description="false keeps the file but stops the deployment.")

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            value = parse_env_text(value)
        if isinstance(value, dict):
            for key in value:
                if not ENV_KEY.match(str(key)):
                    raise ValueError(f"{key!r} is not a valid environment variable name")
            return {str(k): _env_value(v) for k, v in value.items()}
        return value

    @field_validator("name")
    @classmethod
    def _no_double_hyphen(cls, value: str) -> str:
        # "--" is how a container being replaced is marked (<name>--retiring).
        if "--" in value:
            raise ValueError("must not contain '--' (Kalpana reserves it)")
        return value

    @field_validator("dockerfile")
    @classmethod
    def _inside_source(cls, value: str | None) -> str | None:
        # Checked again against the resolved source (symlinks) by the loader; this catches the git sources too.
        if value and (value.startswith("/") or posixpath.normpath(value).split("/")[0] == ".."):
            raise ValueError("must be a relative path inside the source (e.g. Dockerfile or docker/Dockerfile)")
        return value

    @field_validator("working_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path inside the container, e.g. /workspace")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _runnable(self) -> "Deployment":
        if not self.start_command and not self.dockerfile:
            raise FieldProblem("start_command", "field required")
        if self.dockerfile and not self.source:
            raise FieldProblem("dockerfile", "needs a source (the directory holding the Dockerfile)")
        if self.healthcheck.type is HealthKind.HTTP and not self.port:
            raise FieldProblem("healthcheck", "an http health check needs port (the app's port in the container)")
        if self.exposed_port and not self.port:
            raise FieldProblem("exposed_port", "needs port (the port the app listens on inside the container)")
        return self


@functools.cache
def spellings(model: type[BaseModel]) -> dict[str, str]:
    """Every key a field of ``model`` is accepted under (snake_case, camelCase, other aliases) -> the field's name.

    One shared dict per model: read it, never change it.
    """
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        names[name] = name
        if info.alias:
            names[info.alias] = name
        choices = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) \
            else [info.validation_alias]
        names.update({choice: name for choice in choices if isinstance(choice, str)})
    return names


class FieldProblem(ValueError):
    """A rule across fields, reported by the loader at ``field`` (its name and its line)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


# Fields whose change needs a new image, and fields whose change only needs a
# new container. Everything else (description, auto_rebuild, webhook_secret,
# healthcheck, enabled) changes neither, so it must not be in any hash:
# an unexplained redeploy is the worst bug a tool like this can have.
BUILD_FIELDS = ("image", "dockerfile", "source", "build_command", "working_dir")
RUNTIME_FIELDS = ("start_command", "env", "port", "exposed_port", "subdomain", "resources")


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def field_hashes(spec: Deployment, *, image: str | None, env: dict[str, str]) -> dict[str, str]:
    """Per-field digests of every field that affects the result.

    ``image`` is the effective base image (the spec's or the configured
    default) and ``env`` the merged environment (env_file + env), because
    those, not the raw fields, decide what runs.
    """
    data = spec.model_dump(mode="json")
    data["image"] = image
    data["env"] = env
    # Credentials decide how the source is fetched, not what is built; unset keys are left out
    # so that adding an optional key to the model never redeploys anyone.
    data["source"] = spec.source.model_dump(mode="json", exclude_none=True, exclude={"token_env", "ssh_key"}) \
        if spec.source else None
    return {field: _digest(data[field]) for field in BUILD_FIELDS + RUNTIME_FIELDS}


def combined_hash(hashes: dict[str, str], fields: tuple[str, ...]) -> str:
    """One digest over the named fields' digests (what goes into a label)."""
    return _digest({f: hashes.get(f) for f in fields})


class Desired:
    """A validated deployment as loaded from its file, with everything the plan needs.

    ``image`` is the effective base image and ``env`` the merged environment
    (env_file under env); ``hashes`` are the per-field digests of both.
    ``lines`` holds the line of each top-level field the file sets.
    """

    __slots__ = ("spec", "file", "line", "image", "env", "hashes", "lines")

    def __init__(self, spec: Deployment, file: str, line: int, *, image: str | None, env: dict[str, str],
                 lines: dict[str, int] | None = None):
        self.spec = spec
        self.file = file
        self.line = line
        self.image = image
        self.env = env
        self.hashes = field_hashes(spec, image=image, env=env)
        self.lines = lines or {}

    def line_of(self, field: str) -> int:
        """The line of ``field`` in the file (the deployment's first line when the file does not set it)."""
        return self.lines.get(field, self.line)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def build_hash(self) -> str:
        return combined_hash(self.hashes, BUILD_FIELDS)

    @property
    def runtime_hash(self) -> str:
        return combined_hash(self.hashes, RUNTIME_FIELDS)

    def __repr__(self) -> str:
        return f"Desired({self.name!r}, {self.file}:{self.line})"
