"""Settings: defaults < kalpana.yaml < .env beside it < process environment.

Every test passes ``environ`` explicitly, so the developer's shell never leaks in.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gitops.config import GUIDE_ENV, KEYS, Settings, load_settings
from gitops.errors import ConfigError, KalpanaError

REPO_ROOT = Path(__file__).resolve().parents[2]

# One valid KALPANA_<KEY> value per key, and what it parses to. A new key must be added here.
ENV_VALUES = {
    "deployments_dir": ("deploys", Path("deploys")),
    "workspace": ("ws", Path("ws")),
    "state_dir": ("st", Path("st")),
    "instance": ("blue", "blue"),
    "default_image": ("busybox:1.36", "busybox:1.36"),
    "docker_host": ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
    "lock_timeout": ("7.5", 7.5),
    "stop_timeout": ("3", 3),
    "keep_images": ("2", 2),
    "parallelism": ("3", 3),
    "log_tail": ("0", 0),
    "keep_builds": ("7", 7),
    "max_log_bytes": ("20000", 20000),
    "allowed_roots": ("/srv/apps:/opt/shared", [Path("/srv/apps"), Path("/opt/shared")]),
    "publish_address": ("127.0.0.1", "127.0.0.1"),
    "traefik_base_url": ("apps.example.org", "apps.example.org"),
    "traefik_email": ("ops@example.org", "ops@example.org"),
    "traefik_network": ("proxy-net", "proxy-net"),
    "traefik_image": ("traefik:v2.10", "traefik:v2.10"),
    "traefik_web_entrypoint": ("http", "http"),
    "traefik_websecure_entrypoint": ("https", "https"),
    "traefik_cert_resolver": ("le", "le"),
    "traefik_acme_staging": ("true", True),
    "traefik_http_port": ("8000", 8000),
    "traefik_https_port": ("8443", 8443),
    "traefik_dashboard": ("1", True),
    "traefik_dashboard_address": ("10.0.0.5:9090", "10.0.0.5:9090"),
    "traefik_drain_seconds": ("0.5", 0.5),
    "listen": ("0.0.0.0:9100", "0.0.0.0:9100"),
    "public_url": ("https://hooks.example.org", "https://hooks.example.org"),
    "webhook_secret": ("s3cret", "s3cret"),
    "insecure_webhooks": ("true", True),
    "api_token": ("t0ken", "t0ken"),
    "poll_interval": ("30", 30.0),
    "drift_interval": ("2.5", 2.5),
    "debounce": ("0.5", 0.5),
    "image_fallbacks": ('{"busybox:1.36": "kalpana-local/busybox:latest"}',
                        {"busybox:1.36": "kalpana-local/busybox:latest"}),
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def test_defaults_without_a_file(cwd: Path) -> None:
    s = load_settings(None, environ={})
    assert s.instance == "default"
    assert s.default_image is None
    assert s.docker_host is None
    assert (s.lock_timeout, s.stop_timeout, s.keep_images, s.log_tail) == (300.0, 10, 5, 20)
    assert (s.traefik_base_url, s.traefik_email, s.traefik_network) == (None, None, "traefik-proxy")
    assert s.deployments_path == cwd / "deployments.d"
    assert s.workspace_path == cwd
    assert s.state_path == cwd / ".kalpana"


def test_yaml_values(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", """\
        deployments_dir: apps.d
        instance: staging
        default_image: python:3.12-slim
        docker_host: unix:///run/docker.sock
        lock_timeout: 12
        stop_timeout: 2
        keep_images: 3
        log_tail: 50
        traefik_base_url: example.com
        traefik_email: admin@example.com
        traefik_network: edge
        """)
    s = load_settings(None, environ={})
    assert s.deployments_path == cwd / "apps.d"
    assert (s.instance, s.default_image, s.docker_host) == ("staging", "python:3.12-slim", "unix:///run/docker.sock")
    assert (s.lock_timeout, s.stop_timeout, s.keep_images, s.log_tail) == (12.0, 2, 3, 50)
    assert (s.traefik_base_url, s.traefik_email, s.traefik_network) == ("example.com", "admin@example.com", "edge")


def test_empty_yaml_means_defaults(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "# nothing set\n")
    assert load_settings(None, environ={}).instance == "default"


def test_dotenv_next_to_config_overrides_yaml(cwd: Path) -> None:
    config = write(cwd / "conf" / "kalpana.yaml", "instance: from-yaml\nkeep_images: 4\n")
    write(cwd / "conf" / ".env", "KALPANA_INSTANCE=from-dotenv\nTRAEFIK_NETWORK=dotenv-net\n")
    # A .env in the current directory is not the config's and must not be read.
    write(cwd / ".env", "KALPANA_INSTANCE=from-cwd\nKALPANA_KEEP_IMAGES=9\n")
    s = load_settings(config, environ={})
    assert (s.instance, s.keep_images, s.traefik_network) == ("from-dotenv", 4, "dotenv-net")


def test_process_env_overrides_dotenv(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "instance: from-yaml\n")
    write(cwd / ".env", "KALPANA_INSTANCE=from-dotenv\nKALPANA_LOG_TAIL=7\n")
    s = load_settings("kalpana.yaml", environ={"KALPANA_INSTANCE": "from-env"})
    assert (s.instance, s.log_tail) == ("from-env", 7)


def test_dotenv_without_config_file(cwd: Path) -> None:
    write(cwd / ".env", "KALPANA_INSTANCE=from-dotenv\n")
    assert load_settings(None, environ={}).instance == "from-dotenv"


def test_empty_env_value_does_not_override(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "instance: from-yaml\n")
    assert load_settings(None, environ={"KALPANA_INSTANCE": ""}).instance == "from-yaml"


def test_env_table_covers_every_key() -> None:
    assert set(ENV_VALUES) == set(KEYS)
    assert "config_dir" not in KEYS


@pytest.mark.parametrize("key", sorted(ENV_VALUES))
def test_kalpana_env_override_for_every_key(cwd: Path, key: str) -> None:
    raw, expected = ENV_VALUES[key]
    write(cwd / "kalpana.yaml", "instance: from-yaml\nlog_tail: 99\n")
    s = load_settings(None, environ={f"KALPANA_{key.upper()}": raw})
    assert getattr(s, key) == expected


@pytest.mark.parametrize("key", sorted(ENV_VALUES))
def test_kalpana_override_from_dotenv_for_every_key(cwd: Path, key: str) -> None:
    raw, expected = ENV_VALUES[key]
    write(cwd / ".env", f"KALPANA_{key.upper()}={raw}\n")
    assert getattr(load_settings(None, environ={}), key) == expected


@pytest.mark.parametrize(("var", "value", "key", "expected"), [
    ("TRAEFIK_BASE_URL", "example.com", "traefik_base_url", "example.com"),
    ("TRAEFIK_BASE_URL", "https://example.com/", "traefik_base_url", "example.com"),
    ("TRAEFIK_EMAIL", "admin@example.com", "traefik_email", "admin@example.com"),
    ("TRAEFIK_NETWORK", "my-proxy", "traefik_network", "my-proxy"),
    ("DOCKER_HOST", "tcp://10.0.0.5:2376", "docker_host", "tcp://10.0.0.5:2376"),
])
def test_guide_env_names(cwd: Path, var: str, value: str, key: str, expected: str) -> None:
    assert getattr(load_settings(None, environ={var: value}), key) == expected
    # ...and from the .env file the guide tells users to write.
    write(cwd / ".env", f"{var}={value}\n")
    assert getattr(load_settings(None, environ={}), key) == expected


def test_guide_env_names_override_yaml(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "traefik_network: from-yaml\n")
    assert load_settings(None, environ={"TRAEFIK_NETWORK": "from-env"}).traefik_network == "from-env"


def test_guide_env_table() -> None:
    assert GUIDE_ENV == {"TRAEFIK_BASE_URL": "traefik_base_url", "TRAEFIK_EMAIL": "traefik_email",
                         "TRAEFIK_NETWORK": "traefik_network", "DOCKER_HOST": "docker_host"}


@pytest.mark.parametrize(("var", "value"), [
    ("TRAEFIK_EMAIL", "not-an-email"),
    ("TRAEFIK_BASE_URL", "localhost"),
    ("TRAEFIK_BASE_URL", "example.com/path"),
    ("KALPANA_INSTANCE", "Not_Valid"),
    ("KALPANA_LOCK_TIMEOUT", "soon"),
    ("KALPANA_KEEP_IMAGES", "0"),
])
def test_invalid_env_value_is_a_config_error(cwd: Path, var: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(None, environ={var: value})


def test_config_error_from_an_env_var_names_the_variable(cwd: Path) -> None:
    # The value came from the environment, not from kalpana.yaml (which doesn't even exist here):
    # the message must send the user to TRAEFIK_EMAIL.
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"TRAEFIK_EMAIL": "not-an-email"})
    assert "TRAEFIK_EMAIL" in str(info.value)


def test_a_bad_instance_name_is_explained_in_words_with_a_suggestion(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "instance: My_Site\n")
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={})
    assert "lowercase letters, digits and hyphens" in str(info.value) and "'my-site'" in str(info.value)
    assert "pattern" not in str(info.value)


def test_a_config_path_that_is_a_directory_says_so(cwd: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory: give the settings file itself"):
        load_settings(str(cwd), environ={})


def test_bad_email_in_yaml(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "traefik_email: nobody\n")
    with pytest.raises(ConfigError, match="traefik_email") as info:
        load_settings(None, environ={})
    assert "email" in str(info.value)
    assert isinstance(info.value, KalpanaError)


def test_unknown_key_names_the_key(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "instance: a\ndeploymnts_dir: x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={})
    assert "deploymnts_dir" in str(info.value)
    assert "kalpana.yaml" in str(info.value)


def test_wrong_type_names_the_key(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "stop_timeout: later\n")
    with pytest.raises(ConfigError, match="stop_timeout"):
        load_settings(None, environ={})


def test_image_fallbacks_from_yaml(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", """\
        image_fallbacks:
          busybox:1.36: kalpana-local/busybox:latest
          "python:3.12-slim": local/python
        """)
    assert load_settings(None, environ={}).image_fallbacks == {"busybox:1.36": "kalpana-local/busybox:latest",
                                                              "python:3.12-slim": "local/python"}


def test_image_fallbacks_default_to_none_and_an_empty_key_means_none(cwd: Path) -> None:
    assert load_settings(None, environ={}).image_fallbacks == {}
    write(cwd / "kalpana.yaml", "image_fallbacks:\n")
    assert load_settings(None, environ={}).image_fallbacks == {}


def test_image_fallbacks_env_replaces_the_yaml_mapping(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "image_fallbacks: {a: b}\n")
    s = load_settings(None, environ={"KALPANA_IMAGE_FALLBACKS": '{"c:1": "d"}'})
    assert s.image_fallbacks == {"c:1": "d"}


@pytest.mark.parametrize(("value", "says"), [
    ("busybox=local", "JSON object"),
    ('["busybox"]', "mapping of declared base image"),
    ('{"busybox:1.36": ""}', "both sides must be image names"),
    ('{"busybox:1.36": 3}', "both sides must be image names"),
])
def test_bad_image_fallbacks_from_env_name_the_variable(cwd: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"KALPANA_IMAGE_FALLBACKS": value})
    assert str(info.value).startswith("KALPANA_IMAGE_FALLBACKS (environment): image_fallbacks: "), info.value
    assert says in str(info.value)


def test_bad_image_fallbacks_in_yaml_name_the_file(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "image_fallbacks: [busybox]\n")
    with pytest.raises(ConfigError, match=r"kalpana\.yaml: image_fallbacks: must be a mapping"):
        load_settings(None, environ={})


def test_explicit_missing_config_is_an_error(cwd: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(cwd / "nope.yaml", environ={})


def test_kalpana_config_env_pointing_nowhere_is_an_error(cwd: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(None, environ={"KALPANA_CONFIG": str(cwd / "nope.yaml")})


def test_kalpana_config_env_is_read(cwd: Path) -> None:
    write(cwd / "elsewhere" / "k.yaml", "instance: via-env\n")
    assert load_settings(None, environ={"KALPANA_CONFIG": str(cwd / "elsewhere" / "k.yaml")}).instance == "via-env"


def test_invalid_yaml_is_a_config_error_with_line(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "instance: a\nlog_tail: [1\nkeep_images: 2\n")
    with pytest.raises(ConfigError, match=r"kalpana\.yaml:\d+: not valid YAML"):
        load_settings(None, environ={})


def test_non_mapping_config_is_an_error(cwd: Path) -> None:
    write(cwd / "kalpana.yaml", "- instance\n- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(None, environ={})


def test_relative_paths_resolve_against_the_config_directory(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(cwd / "site" / "kalpana.yaml", "deployments_dir: deploys\nworkspace: ../src\nstate_dir: .state\n")
    (cwd / "elsewhere").mkdir()
    monkeypatch.chdir(cwd / "elsewhere")
    s = load_settings(config, environ={})
    assert s.deployments_path == cwd / "site" / "deploys"
    assert s.workspace_path == cwd / "src"
    assert s.state_path == cwd / "site" / ".state"


def test_relative_config_path_resolves_against_its_directory(cwd: Path) -> None:
    write(cwd / "site" / "kalpana.yaml", "deployments_dir: deploys\n")
    s = load_settings("site/kalpana.yaml", environ={})
    assert s.deployments_path == cwd / "site" / "deploys"


def test_relative_env_override_resolves_against_the_config_directory(cwd: Path) -> None:
    config = write(cwd / "site" / "kalpana.yaml", "instance: a\n")
    s = load_settings(config, environ={"KALPANA_STATE_DIR": "var/state"})
    assert s.state_path == cwd / "site" / "var" / "state"


def test_absolute_paths_are_kept(cwd: Path) -> None:
    config = write(cwd / "site" / "kalpana.yaml", f"state_dir: {cwd / 'abs-state'}\n")
    assert load_settings(config, environ={}).state_path == cwd / "abs-state"


def test_example_config_documents_every_key() -> None:
    example = (REPO_ROOT / "kalpana.yaml.example").read_text()
    missing = [key for key in KEYS if not re.search(rf"^(# )?{key}:", example, re.MULTILINE)]
    assert missing == [], f"not documented in kalpana.yaml.example: {missing}"


def test_example_config_loads_with_every_commented_key_enabled(tmp_path: Path) -> None:
    example = (REPO_ROOT / "kalpana.yaml.example").read_text()
    # Copied away from the repository root, so a developer's .env there can't leak in.
    as_is = write(tmp_path / "as-is" / "kalpana.yaml", example)
    assert load_settings(as_is, environ={}).instance == "default"
    enabled = re.sub(rf"^# ({'|'.join(KEYS)}):", r"\1:", example, flags=re.MULTILINE)
    assert enabled != example
    config = tmp_path / "kalpana.yaml"
    config.write_text(enabled)
    s = load_settings(config, environ={})
    assert s.default_image and s.docker_host and s.traefik_base_url and s.traefik_email
    assert isinstance(s, Settings)


@pytest.mark.parametrize("value", ["exa_mple.com", "a..b", "example.com:8443", "-bad.example.com", "1.2.3",
                                   "example.123", "localhost", "example.c0m"])
def test_base_url_that_is_not_a_domain_name_names_the_variable_and_field(cwd: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"TRAEFIK_BASE_URL": value})
    text = str(info.value)
    assert text.startswith("TRAEFIK_BASE_URL (environment): traefik_base_url: "), text
    assert "is not a domain name" in text


def test_base_url_is_kept_bare_and_lowercase(cwd: Path) -> None:
    assert load_settings(None, environ={"TRAEFIK_BASE_URL": "https://Apps.Example.com/"}).traefik_base_url \
        == "apps.example.com"


@pytest.mark.parametrize("value", ["127.0.0.1", "http://10.0.0.1/", "::1", "[::1]"])
def test_an_ip_address_as_base_url_is_refused_naming_the_setting_and_what_is_expected(cwd: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"KALPANA_TRAEFIK_BASE_URL": value})
    text = str(info.value)
    assert text.startswith("KALPANA_TRAEFIK_BASE_URL (environment): traefik_base_url: "), text
    assert "is an IP address" in text and "set a domain name such as example.com" in text, text


def test_a_base_url_refused_in_kalpana_yaml_names_the_file(cwd: Path) -> None:
    (cwd / "kalpana.yaml").write_text("traefik_base_url: 1.2.3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={})
    text = str(info.value)
    assert "kalpana.yaml: traefik_base_url: '1.2.3' is not a domain name" in text, text
    assert "top-level domain" in text


@pytest.mark.parametrize(("value", "kept"), [("http://example.test", "example.test"), ("shop.xn--p1ai", "shop.xn--p1ai"),
                                            ("a-1.b2.example.io/", "a-1.b2.example.io")])
def test_domain_names_are_accepted(cwd: Path, value: str, kept: str) -> None:
    assert load_settings(None, environ={"TRAEFIK_BASE_URL": value}).traefik_base_url == kept
