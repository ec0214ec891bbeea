"""Settings: kalpana.yaml, then a .env file beside it, then the environment.

Precedence, lowest first: built-in defaults < kalpana.yaml < .env < process
environment. Every key has a ``KALPANA_<KEY>`` override; the guide's own
``TRAEFIK_BASE_URL`` / ``TRAEFIK_EMAIL`` / ``TRAEFIK_NETWORK`` work too, and
the Docker client honours ``DOCKER_HOST``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gitops.errors import ConfigError

DEFAULT_CONFIG = "kalpana.yaml"
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123
_TLD = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")  # alphabetic, or an internationalized one (punycode)


class RepoSettings(BaseModel):
    """The git repository the deployment files themselves live in (`kalpana sync` keeps it current)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., description="https or ssh URL, a local path or a file:// URL.")
    branch: str | None = Field(None, description="Branch to follow (default: the remote's default branch).")
    path: str = Field("deployments.d", description="Directory of deployment files inside the repository.")
    token_env: str | None = Field(None, description="Environment variable holding an https access token.")
    ssh_key: str | None = Field(None, description="Private key file for ssh URLs.")


class Settings(BaseModel):
    """Global settings of one Kalpana instance (every key is documented in kalpana.yaml.example)."""

    model_config = ConfigDict(extra="forbid")

    deployments_dir: Path = Field(Path("deployments.d"), description="Directory of deployment files.")
    workspace: Path = Field(Path("."), description="Root that local `source.path`s are relative to.")
    state_dir: Path = Field(Path(".kalpana"), description="Build history, locks and build logs.")
    instance: str = Field("default", pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$",
                          description="Labels carry it: two instances on one Docker host never touch each other.")
    default_image: str | None = Field(None, description="Base image for deployments that set no `image`.")
    image_fallbacks: dict[str, str] = Field(default_factory=dict, description="Declared base image -> local image "
                                            "to build on when the declared one is neither on the host nor pullable.")
    docker_host: str | None = Field(None, description="Docker address; defaults to DOCKER_HOST or the local socket.")
    lock_timeout: float = Field(300.0, ge=0, description="Seconds an apply waits for another one to finish.")
    stop_timeout: int = Field(10, ge=0, description="Seconds a container gets to stop before it is killed.")
    parallelism: int = Field(default_factory=lambda: _default_parallelism(), ge=1,
                             description="Deployments built and started at once by one apply (1: one after "
                             "another); default min(4, CPUs).")
    keep_images: int = Field(5, ge=1, description="Images kept per deployment (rollback targets); older ones are removed.")
    log_tail: int = Field(20, ge=0, description="Container log lines quoted when a new container fails.")
    keep_builds: int = Field(50, ge=1, description="Build records (and their logs) kept per deployment; older ones "
                             "go, except those of running containers and of the images kept for rollback.")
    max_log_bytes: int = Field(5_000_000, ge=10_000, description="Stored size cap of one build log (head and tail "
                               "are kept, with a marker saying what was cut); live output is not cut.")
    allowed_roots: list[Path] = Field(default_factory=list, description="Directories deployment files may read "
                                      "from (source.path, env_file) besides the workspace.")
    publish_address: str = Field("0.0.0.0", description="Host address host ports are published on (port mode); "
                                 "127.0.0.1 keeps deployments off the network.")
    traefik_base_url: str | None = Field(None, description="Base domain for subdomain routing (TRAEFIK_BASE_URL).")
    traefik_email: str | None = Field(None, description="Let's Encrypt account email (TRAEFIK_EMAIL).")
    traefik_network: str = Field("traefik-proxy", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                                 description="Docker network shared with Traefik (TRAEFIK_NETWORK).")
    traefik_image: str = Field("traefik:v3.3", description="Image of the kalpana-traefik container (Traefik v3; "
                               "v2.10+ works too). Kalpana never builds it: pull it, or load it with `docker load`.")
    traefik_web_entrypoint: str = Field("web", pattern=r"^[a-zA-Z0-9_-]+$",
                                        description="Traefik entrypoint on :80 (redirects to HTTPS).")
    traefik_websecure_entrypoint: str = Field("websecure", pattern=r"^[a-zA-Z0-9_-]+$",
                                              description="Traefik entrypoint on :443 that routes carry.")
    traefik_cert_resolver: str = Field("letsencrypt", pattern=r"^[a-zA-Z0-9_-]+$",
                                       description="Name of the ACME certificate resolver routes use.")
    traefik_http_port: int = Field(80, ge=1, le=65535, description="Host port of Traefik's web entrypoint.")
    traefik_https_port: int = Field(443, ge=1, le=65535, description="Host port of Traefik's websecure entrypoint.")
    traefik_acme_staging: bool = Field(False, description="Use Let's Encrypt's staging CA (untrusted certificates, "
                                       "generous rate limits) while trying things out.")
    traefik_dashboard: bool = Field(False, description="Publish Traefik's dashboard (off by default).")
    traefik_dashboard_address: str = Field("127.0.0.1:8080", pattern=r"^[^\s]*:\d+$",
                                           description="host:port the dashboard is published on when enabled; "
                                           "127.0.0.1 keeps it off the network.")
    traefik_drain_seconds: float = Field(3.0, ge=0, description="Seconds an old container keeps running after its "
                                         "route moved to the new one: covers Traefik's reload (file watch + its "
                                         "2 s provider throttle) and requests in flight.")
    repo: RepoSettings | None = Field(None, description="Keep the deployment files in this git repository.")
    listen: str = Field("127.0.0.1:9000", pattern=r"^[^:\s]*:\d+$",
                        description="host:port the webhook server of `kalpana watch` listens on.")
    public_url: str | None = Field(None, description="How GitHub reaches the webhook server (shown as webhook URLs).")
    webhook_secret: str | None = Field(None, description="Secret of the instance-wide POST /webhook endpoint.")
    insecure_webhooks: bool = Field(False, description="Accept unsigned webhooks where no secret is set (warned about).")
    api_token: str | None = Field(None, description="Bearer token of the HTTP API (KALPANA_API_TOKEN); without one the "
                                  "API answers on loopback only, and `watch` refuses a non-loopback `listen`.")
    poll_interval: float = Field(60.0, ge=1, description="Seconds between polls of git repositories by `kalpana watch`.")
    drift_interval: float = Field(10.0, ge=0.5, description="Seconds between drift checks by `kalpana watch`.")
    debounce: float = Field(0.2, ge=0, description="Seconds `kalpana watch` waits for a burst of file saves to settle.")

    # Where the settings came from; relative paths above resolve against it.
    config_dir: Path = Field(Path("."), exclude=True)

    @field_validator("instance", mode="before")
    @classmethod
    def _instance_name(cls, value: Any) -> Any:
        # Said in words here: the pattern alone reads as a riddle.
        if isinstance(value, str) and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", value):
            raise ValueError(f"{value!r} is not an instance name: use 1 to 32 lowercase letters, digits and "
                             "hyphens, starting and ending with a letter or digit (e.g. "
                             f"{_instance_hint(value)!r})")
        return value

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        # From the environment the list comes as one string: "/srv/apps:/opt/shared" (or commas).
        if isinstance(value, str):
            return [part for part in value.replace(",", os.pathsep).split(os.pathsep) if part.strip()]
        return value

    @field_validator("image_fallbacks", mode="before")
    @classmethod
    def _image_mapping(cls, value: Any) -> Any:
        # From the environment the mapping comes as JSON: {"busybox:1.36": "kalpana-local/busybox:latest"}.
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON object such as {"busybox:1.36": "kalpana-local/busybox:latest"}') \
                    from None
        if value is None:  # `image_fallbacks:` with nothing under it
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of declared base image -> local image, "
                             "such as busybox:1.36: kalpana-local/busybox:latest")
        for declared, fallback in value.items():
            if not isinstance(declared, str) or not isinstance(fallback, str) or not declared.strip() \
                    or not fallback.strip():
                raise ValueError(f"{declared!r}: {fallback!r}: both sides must be image names, "
                                 "such as busybox:1.36: kalpana-local/busybox:latest")
        return value

    @field_validator("publish_address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address of this host, such as 0.0.0.0 or 127.0.0.1") from None
        return value

    @field_validator("traefik_base_url")
    @classmethod
    def _domain_name(cls, value: str | None) -> str | None:
        # A scheme and a trailing slash are cut quietly (the guide's users paste URLs); anything else
        # that is not a domain name is refused: hosts become <subdomain>.<base-url>, and an IP address
        # or a bare word gives hosts no certificate authority will sign.
        if value is None or not value.strip():
            return None
        bare = value.strip().removeprefix("https://").removeprefix("http://").strip("/").lower()
        expected = ("set a domain name such as example.com (labels of letters, digits and hyphens "
                    "separated by dots, at least two labels, ending in an alphabetic top-level domain; "
                    "no IP address, port or path)")
        try:
            ipaddress.ip_address(bare.strip("[]"))
        except ValueError:
            pass
        else:
            raise ValueError(f"{value!r} is an IP address: {expected}")
        labels = bare.split(".")
        if len(bare) > 253 or len(labels) < 2 or not all(_DNS_LABEL.fullmatch(part) for part in labels) \
                or not _TLD.fullmatch(labels[-1]):
            raise ValueError(f"{value!r} is not a domain name: {expected}")
        return bare

    @field_validator("traefik_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value and "@" not in value:
            raise ValueError("must be an email address (Let's Encrypt sends expiry notices there)")
        return value or None

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.config_dir / path).resolve()

    @property
    def config_checkout(self) -> Path:
        """Where the config repository is checked out (when ``repo`` is set)."""
        return self.state_path / "config-repo"

    @property
    def deployments_path(self) -> Path:
        if self.repo:
            return self.config_checkout / self.repo.path
        return self._resolve(self.deployments_dir)

    @property
    def workspace_path(self) -> Path:
        # With a config repo, local `source.path`s are paths inside it (monorepos).
        if self.repo and "workspace" not in self.model_fields_set:
            return self.config_checkout
        return self._resolve(self.workspace)

    @property
    def allowed_root_paths(self) -> list[Path]:
        """``allowed_roots``, resolved (symlinks included) against the settings file's directory."""
        return [self._resolve(root).resolve() for root in self.allowed_roots]

    @property
    def checkouts_path(self) -> Path:
        """Clones of git sources."""
        return self.state_path / "sources"

    @property
    def routes_path(self) -> Path:
        """The route directory Traefik's file provider watches (mounted read-only into kalpana-traefik)."""
        return self.state_path / "traefik-routes"

    @property
    def state_path(self) -> Path:
        return self._resolve(self.state_dir)


KEYS = [k for k in Settings.model_fields if k not in ("config_dir", "repo")]
# The guide's names, honoured as they are.
GUIDE_ENV = {"TRAEFIK_BASE_URL": "traefik_base_url", "TRAEFIK_EMAIL": "traefik_email",
             "TRAEFIK_NETWORK": "traefik_network", "DOCKER_HOST": "docker_host"}


def _overrides(env: Mapping[str, str | None], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Keys set by environment-style variables, and for each key where it came from."""
    found: dict[str, Any] = {}
    origin: dict[str, str] = {}
    names = [(var, key) for var, key in GUIDE_ENV.items()] + [(f"KALPANA_{k.upper()}", k) for k in KEYS]
    for var, key in names:
        if env.get(var) not in (None, ""):
            found[key] = env[var]
            origin[key] = f"{var} ({where})"
    repo = {k: env.get(f"KALPANA_REPO_{k.upper()}") for k in RepoSettings.model_fields}
    if any(repo.values()):
        found["repo"] = {k: v for k, v in repo.items() if v}
        origin["repo"] = f"KALPANA_REPO_* ({where})"
    return found, origin


def load_settings(config: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings; ``config`` defaults to ./kalpana.yaml, and a missing default file means defaults."""
    environ = os.environ if environ is None else environ
    explicit = config is not None or bool(environ.get("KALPANA_CONFIG"))
    path = Path(config or environ.get("KALPANA_CONFIG") or DEFAULT_CONFIG)
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    try:
        text = path.read_text() if path.is_file() else None
    except OSError as exc:  # a name too long, a file we may not read: the user's input, not a crash
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror}): check -c/--config") from None
    if text is not None:
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}): fix the syntax") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: must be a mapping of settings (see kalpana.yaml.example)")
        data.update(loaded)
        origin.update({key: str(path) for key in loaded})
    elif explicit and path.is_dir():
        raise ConfigError(f"config file {path} is a directory: give the settings file itself "
                          f"(e.g. -c {path / DEFAULT_CONFIG})")
    elif explicit:
        raise ConfigError(f"config file {path} not found: check -c/--config or create it from kalpana.yaml.example")
    dotenv = path.parent / ".env"
    layers = ([(_dotenv_values(dotenv), str(dotenv))] if dotenv.is_file() else []) + [(environ, "environment")]
    for values, where in layers:
        found, found_origin = _overrides(values, where)
        if "repo" in found:
            found["repo"] = {**(data.get("repo") or {}), **found["repo"]}
        data.update(found)
        origin.update(found_origin)
    data["config_dir"] = path.parent.resolve()
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        hint = " (unknown key: see kalpana.yaml.example for every key)" if first["type"] == "extra_forbidden" else ""
        source = origin.get(str(first["loc"][0]), str(path)) if first["loc"] else str(path)
        raise ConfigError(f"{source}: {field}: {message}{hint}") from None


def _default_parallelism() -> int:
    # Several steps mostly wait (for Docker, for health checks): worth it even on 2 CPUs; capped so
    # that 50 builds at once do not swamp a small host.
    return max(1, min(4, os.cpu_count() or 1))


def _instance_hint(value: str) -> str:
    """``value`` made into a valid instance name, to suggest one."""
    hint = re.sub(r"[^a-z0-9-]+", "-", value.lower())[:32].strip("-")
    return hint or "default"


def _dotenv_values(path: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values  # imported only when there is a .env to read

    return dotenv_values(path)
