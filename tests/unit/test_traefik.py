"""Subdomain mode without Docker: route documents and labels key by key against Traefik's documented names,
kalpana-traefik's command line, ports, volume and network, and every bad input of issue 10.

Documented names (see gitops/routing.py and gitops/traefik.py for the pages):
file provider ``http.routers.<r>.{rule,entryPoints,service,tls.certResolver}``,
``http.services.<s>.loadBalancer.servers[].url``; Docker labels ``traefik.enable``,
``traefik.http.routers.<r>.{rule,entrypoints,tls.certresolver,service}``,
``traefik.http.services.<s>.loadbalancer.server.port``, ``traefik.docker.network``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fake_clock import FakeClock
from fake_runtime import BUILD, DEPLOY, TRAEFIK, FakeRuntime
from gitops import labels as L
from gitops import routing, traefik
from gitops.config import Settings
from gitops.deployer import Deployer
from gitops.engine import Engine
from gitops.errors import ImageMissing, KalpanaError
from gitops.events import Events, Warned
from gitops.history import History
from gitops.loader import load_configured
from gitops.routes import RouteTable

INSTANCE = "unit"
BASE = "apps.example.com"


def app(name: str, **overrides: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "start_command": "httpd -f -p 8080", "port": 8080,
            "subdomain": name, "healthcheck": {"timeout": 2}, **overrides}


def settings(root: Path, **overrides: Any) -> Settings:
    (root / "deployments.d").mkdir(exist_ok=True)
    return Settings(instance=INSTANCE, deployments_dir=root / "deployments.d", workspace=root,
                    state_dir=root / "state", stop_timeout=0, lock_timeout=5, config_dir=root, **overrides)


def write(root: Path, name: str, **overrides: Any) -> Path:
    path = root / "deployments.d" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(app(name, **overrides), sort_keys=False))
    return path


# -- routes, key by key ----------------------------------------------------------------------------------------

ROUTE = routing.RouteSettings(BASE, "traefik-proxy")


@pytest.mark.parametrize(("name", "sub", "port"), [("shop", "shop", 8080), ("api", "api-v2", 3000),
                                                   ("docs", "d", 80)])
def test_route_document_for_each_deployment_uses_traefiks_file_provider_keys(tmp_path, name, sub, port):
    table = RouteTable(tmp_path, INSTANCE)
    host = f"{sub}.{BASE}"
    table.write(name, host, [routing.server_url(f"{name}-abc", port)], ROUTE)
    doc = yaml.safe_load((tmp_path / f"{name}.yml").read_text())
    r = f"kalpana-{INSTANCE}-{name}"
    assert list(doc) == ["http"]
    assert list(doc["http"]) == ["routers", "services"]
    router = doc["http"]["routers"][r]
    assert router["rule"] == f"Host(`{host}`)"
    assert router["entryPoints"] == ["websecure"]
    assert router["service"] == r
    assert router["tls"] == {"certResolver": "letsencrypt"}
    assert doc["http"]["services"][r] == {"loadBalancer": {"servers": [{"url": f"http://{name}-abc:{port}"}]}}
    assert table.get(name).servers == (f"http://{name}-abc:{port}",) and table.get(name).host == host


def test_a_rewrite_replaces_the_route_atomically_and_leaves_no_temporary_file(tmp_path):
    table = RouteTable(tmp_path, INSTANCE)
    table.write("shop", "shop.x.com", ["http://old:80"], ROUTE)
    table.write("shop", "shop.x.com", ["http://new:80"], ROUTE)
    assert [p.name for p in tmp_path.iterdir()] == ["shop.yml"]
    assert table.get("shop").servers == ("http://new:80",)
    assert table.drop("shop") and not table.drop("shop") and table.entries() == []


def test_route_labels_use_traefiks_docker_label_names():
    route = routing.RouteSettings(BASE, "edge", entrypoint="https", cert_resolver="le", labels=True)
    labels = routing.route_labels("kalpana-unit-shop", f"shop.{BASE}", 8080, route)
    assert labels == {
        "traefik.enable": "true",
        "traefik.http.routers.kalpana-unit-shop.rule": f"Host(`shop.{BASE}`)",
        "traefik.http.routers.kalpana-unit-shop.entrypoints": "https",
        "traefik.http.routers.kalpana-unit-shop.tls.certresolver": "le",
        "traefik.http.routers.kalpana-unit-shop.service": "kalpana-unit-shop",
        "traefik.http.services.kalpana-unit-shop.loadbalancer.server.port": "8080",
        "traefik.docker.network": "edge",
    }


# -- the Traefik container -------------------------------------------------------------------------------------

def test_traefik_command_line_ports_volume_network(tmp_path):
    s = settings(tmp_path, traefik_base_url=BASE, traefik_email="ops@example.com", traefik_network="edge")
    config = traefik.container_config(s)
    assert config.name == "unit_kalpana-traefik" and config.image == "traefik:v3.3"
    assert config.command == [
        "--providers.file.directory=/etc/traefik/kalpana",
        "--providers.file.watch=true",
        "--entrypoints.web.address=:80",
        "--entrypoints.web.http.redirections.entrypoint.to=websecure",
        "--entrypoints.web.http.redirections.entrypoint.scheme=https",
        "--entrypoints.websecure.address=:443",
        "--certificatesresolvers.letsencrypt.acme.storage=/letsencrypt/acme.json",
        "--certificatesresolvers.letsencrypt.acme.httpchallenge.entrypoint=web",
        "--certificatesresolvers.letsencrypt.acme.email=ops@example.com",
    ]
    assert config.published == ((80, "0.0.0.0", 80), (443, "0.0.0.0", 443))
    assert config.mounts == (("unit_kalpana-traefik-acme", "/letsencrypt", False),
                             (str(s.routes_path), "/etc/traefik/kalpana", True))
    assert config.network == "edge"
    assert config.labels[L.ROLE] == L.TRAEFIK_ROLE
    assert not any("docker.sock" in m[0] for m in config.mounts), "no Docker socket in the internet-facing proxy"


def test_traefik_staging_dashboard_and_other_names(tmp_path):
    s = settings(tmp_path, traefik_acme_staging=True, traefik_dashboard=True, traefik_cert_resolver="le",
                 traefik_web_entrypoint="http", traefik_websecure_entrypoint="https", traefik_http_port=8000,
                 traefik_https_port=8443)
    config = traefik.container_config(s)
    assert "--certificatesresolvers.le.acme.caserver=https://acme-staging-v02.api.letsencrypt.org/directory" \
        in config.command
    assert "--entrypoints.http.http.redirections.entrypoint.to=https" in config.command
    assert "--api.dashboard=true" in config.command
    assert config.published == ((80, "0.0.0.0", 8000), (443, "0.0.0.0", 8443), (8080, "127.0.0.1", 8080)), \
        "the dashboard on 127.0.0.1 only"
    assert not any(a.startswith("--certificatesresolvers.le.acme.email") for a in config.command)
    assert not any(a.startswith("--api") for a in traefik.command(settings(tmp_path)))


# -- bad input -------------------------------------------------------------------------------------------------

def test_a_subdomain_that_is_not_a_dns_label_names_file_and_field(tmp_path):
    s = settings(tmp_path, traefik_base_url=BASE)
    write(tmp_path, "shop", subdomain="Shop_1")
    load = load_configured(s)
    (error,) = load.errors
    assert (Path(error.file).name, error.field) == ("shop.yaml", "subdomain")
    assert "is not a DNS label" in str(error)


def test_two_deployments_claiming_one_subdomain_name_both_files(tmp_path):
    s = settings(tmp_path, traefik_base_url=BASE)
    write(tmp_path, "one", subdomain="www")
    write(tmp_path, "two", subdomain="www")
    load = load_configured(s)
    (error,) = load.errors
    text = str(error)
    assert error.field == "subdomain" and "two.yaml" in text and "one.yaml" in text, text
    assert load.desired == {}, "neither is deployed"


class _Engine:
    def __init__(self, root: Path, runtime: FakeRuntime, **overrides: Any):
        self.settings = settings(root, **overrides)
        self.events: list = []
        bus = Events()
        bus.subscribe(self.events.append)
        clock = FakeClock()
        deployer = Deployer(runtime, INSTANCE, stop_timeout=0, log_tail=5, probe=lambda c, p, h: (True, "ok"),
                            port_free=lambda port, address: True, monotonic=clock.now, sleep=clock.advance)
        self.engine = Engine(self.settings, runtime, History(self.settings.state_path), bus, deployer=deployer)


def test_a_subdomain_without_base_url_warns_naming_traefik_base_url_and_uses_port_mode(tmp_path):
    runtime = FakeRuntime(allow={"observe", "remove_image", *BUILD, *DEPLOY})
    e = _Engine(tmp_path, runtime)
    write(tmp_path, "shop", exposed_port=28123)
    result = e.engine.apply()
    assert result.ok
    warnings = [ev.message for ev in e.events if isinstance(ev, Warned)]
    assert any("TRAEFIK_BASE_URL" in w and "shop.yaml" in w and "port mode" in w for w in warnings), warnings
    (config,) = runtime.created
    assert config.host_port == 28123 and config.network is None and L.ROUTE_HOST not in config.labels
    runtime.assert_no_violations()


def test_subdomain_mode_starts_traefik_then_routes_the_healthy_container_without_host_port(tmp_path):
    runtime = FakeRuntime(allow={"observe", "remove_image", *BUILD, *DEPLOY, *TRAEFIK})
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    write(tmp_path, "shop")
    assert e.engine.apply().ok
    traefik_config, app_config = runtime.created
    assert traefik_config.name == "unit_kalpana-traefik"
    assert runtime.networks == {"traefik-proxy": {L.MANAGED_BY: "kalpana", L.INSTANCE: INSTANCE}}
    assert app_config.host_port is None and app_config.network == "traefik-proxy"
    alias = app_config.labels[L.ROUTE_ALIAS]
    assert app_config.aliases == (alias,)
    assert RouteTable(e.settings.routes_path, INSTANCE).get("shop").servers == (f"http://{alias}:8080",)
    runtime.allow("started_at")
    (row,) = e.engine.status()
    assert row.url == f"https://shop.{BASE}"
    # A second apply (nothing changed) starts no second Traefik.
    runtime.calls.clear()
    assert e.engine.apply().ok and not runtime.changes()
    runtime.assert_no_violations()


class _NoTraefikImage(FakeRuntime):
    detail = "pull access denied"

    def ensure_image(self, image, on_line=lambda line: None):
        self._call("ensure_image", image)
        if image.startswith("traefik:"):
            raise ImageMissing(image, self.detail)


@pytest.mark.parametrize("detail", ["pull access denied",
                                    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: '
                                    "no such host", ""])
def test_a_missing_traefik_image_is_named_with_how_to_provide_it_and_no_app_container_is_touched(tmp_path, detail):
    runtime = _NoTraefikImage(allow={"observe", "load_sdk", "ensure_network", "container_named", "containers_on_network",
                                     "ensure_image"})
    runtime.detail = detail
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    write(tmp_path, "shop")
    with pytest.raises(KalpanaError) as info:
        e.engine.apply()
    text = str(info.value)
    assert "'traefik:v3.3'" in text and "docker pull traefik:v3.3" in text and "traefik_image" in text, text
    pulled = "Traefik image 'traefik:v3.3' is not on this Docker host and could not be pulled"
    assert text.startswith(pulled + (f" ({detail}): run `docker pull" if detail else ": run `docker pull")), \
        "Docker's reason whole, in parentheses, however many colons it holds"
    assert "no deployment was changed" in text
    assert runtime.created == [] and not any(m in ("build", "create", "start") for m, _ in runtime.calls)
    runtime.assert_no_violations()


def test_a_user_run_traefik_on_the_network_is_used_not_duplicated(tmp_path):
    runtime = FakeRuntime(allow={"observe", "remove_image", *BUILD, *DEPLOY, *TRAEFIK})
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    runtime.networks["traefik-proxy"] = {}
    from gitops.runtime.protocol import ContainerConfig
    user = runtime.add_container("edge-proxy", "traefik:v2.10", {})
    user.config = ContainerConfig(name="edge-proxy", image="traefik:v2.10", network="traefik-proxy",
                                  mounts=((str(e.settings.routes_path), "/dyn", True),))
    write(tmp_path, "shop")
    assert e.engine.apply().ok
    assert [c.name for c in runtime.created] == ["unit_shop"], "no kalpana-traefik beside the user's"
    assert e.engine.traefik_state().mode is traefik.TraefikMode.USER_FILE
    runtime.assert_no_violations()


def test_an_interrupted_switch_removes_the_drained_container_and_keeps_the_routed_one(tmp_path):
    runtime = FakeRuntime(allow={"observe", "remove", "remove_image", *BUILD, *DEPLOY, *TRAEFIK})
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    write(tmp_path, "shop")
    assert e.engine.apply().ok
    (routed,) = [c for c in runtime.containers.values() if c.name == "unit_shop"]
    # A run died after the route moved to ``routed``: the old container is left, renamed --draining.
    old = runtime.add_container(L.draining_name(INSTANCE, "shop"), routed.image, dict(routed.labels))
    runtime.calls.clear()
    assert e.engine.apply().ok
    assert old.id not in runtime.containers and routed.id in runtime.containers
    assert ("remove", (old.id,)) in runtime.calls and ("remove", (routed.id,)) not in runtime.calls
    runtime.assert_no_violations()


def test_setting_a_base_url_redeploys_a_port_mode_container_into_subdomain_mode(tmp_path):
    runtime = FakeRuntime(allow={"observe", "remove_image", *BUILD, *DEPLOY, *TRAEFIK})
    first = _Engine(tmp_path, runtime)
    write(tmp_path, "shop", exposed_port=28124)
    assert first.engine.apply().ok
    write(tmp_path, "shop")  # the same deployment, now without a host port
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    plan, _ = e.engine.plan()
    (step,) = plan.steps
    assert step.action.value in ("redeploy", "rebuild"), step
    write(tmp_path, "shop", exposed_port=28124)  # unchanged file: only the base URL changed
    plan, _ = e.engine.plan()
    (step,) = plan.steps
    assert (step.action.value, step.reason) == ("redeploy", f"route changed: https://shop.{BASE} (was port mode)")
    assert e.engine.apply().ok
    assert runtime.created[-1].network == "traefik-proxy" and runtime.created[-1].labels[L.ROUTE_HOST] == f"shop.{BASE}"


# -- back to port mode: the route goes (QA of issue 10) ----------------------------------------------------------

@pytest.mark.parametrize("change", ["no base URL", "no subdomain"])
def test_falling_back_to_port_mode_removes_the_route_once_the_port_mode_container_serves(tmp_path, change):
    runtime = FakeRuntime(allow={"observe", "remove_image", *BUILD, *DEPLOY, *TRAEFIK})
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    write(tmp_path, "shop")
    assert e.engine.apply().ok
    table = RouteTable(e.settings.routes_path, INSTANCE)
    assert table.get("shop") is not None
    if change == "no base URL":
        e = _Engine(tmp_path, runtime)
    else:
        path = tmp_path / "deployments.d" / "shop.yaml"
        spec = yaml.safe_load(path.read_text())
        del spec["subdomain"]
        path.write_text(yaml.safe_dump(spec))
    assert e.engine.apply().ok
    final = runtime.created[-1]
    assert final.host_port and final.network is None and L.ROUTE_HOST not in final.labels
    assert table.get("shop") is None and table.entries() == [], "the route named a container that is gone"
    assert not list(e.settings.routes_path.glob("*.yml"))
    runtime.assert_no_violations()


def test_an_apply_removes_route_files_no_container_of_this_instance_carries_and_leaves_foreign_files(tmp_path):
    runtime = FakeRuntime(allow={"observe", "remove_image", *BUILD, *DEPLOY})
    e = _Engine(tmp_path, runtime)  # routing off entirely
    write(tmp_path, "shop", exposed_port=28125)
    table = RouteTable(e.settings.routes_path, INSTANCE)
    table.write("shop", f"shop.{BASE}", ["http://unit_shop-dead:8080"], ROUTE)  # left by an older version
    table.write("gone", f"gone.{BASE}", ["http://unit_gone-dead:8080"], ROUTE)  # its deployment was deleted
    RouteTable(e.settings.routes_path, "other").write("mine", f"mine.{BASE}", ["http://x:80"], ROUTE)
    (e.settings.routes_path / "users-own.yml").write_text("http:\n  middlewares: {}\n")
    assert e.engine.apply().ok
    assert sorted(p.name for p in e.settings.routes_path.glob("*.yml")) == ["mine.yml", "users-own.yml"], \
        "only this instance's stale routes go; a file Kalpana did not write stays"
    # Nothing to do: a no-op apply cleans too.
    table.write("shop", f"shop.{BASE}", ["http://unit_shop-dead:8080"], ROUTE)
    runtime.calls.clear()
    assert e.engine.apply().ok and not runtime.changes()
    assert table.get("shop") is None
    runtime.assert_no_violations()


# -- `kalpana routes` says when no Traefik serves them (QA of issue 10) -----------------------------------------

def test_routes_after_traefik_down_say_the_routes_are_not_served(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from gitops import health
    from gitops.cli import routing_cmds  # noqa: F401 - registers the commands
    from gitops.cli.main import Context, cli

    runtime = FakeRuntime(allow={"observe", "remove_image", "remove", *BUILD, *DEPLOY, *TRAEFIK})
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    write(tmp_path, "shop")
    assert e.engine.apply().ok
    (tmp_path / "kalpana.yaml").write_text(yaml.safe_dump({
        "instance": INSTANCE, "state_dir": str(e.settings.state_path), "deployments_dir": "deployments.d",
        "workspace": ".", "traefik_base_url": BASE}))
    monkeypatch.chdir(tmp_path)
    for key in ("KALPANA_CONFIG", "TRAEFIK_BASE_URL", "KALPANA_TRAEFIK_BASE_URL", "TRAEFIK_NETWORK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(Context, "runtime", property(lambda self: runtime))
    monkeypatch.setattr(health, "probe", lambda check, port, host: (True, "200 OK"))

    def routes(*args: str):
        result = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(cli, ["routes", *args])
        assert result.exit_code == 0, result.output
        return result.output

    served = json.loads(routes("--json"))
    assert served["served"] is True and served["note"] is None and served["traefik"]["running"] is True
    assert "not served" not in routes()

    assert e.engine.traefik_down() is not None
    gone = json.loads(routes("--json"))
    assert [r["ready"] for r in gone["routes"]] == [True], "the target itself is still ready"
    assert gone["served"] is False and gone["traefik"]["mode"] == "none", gone
    assert "no Traefik runs on network traefik-proxy" in gone["note"], gone
    text = routes()
    assert f"https://shop.{BASE}" in text and "these routes are not served" in text and "kalpana traefik up" in text, text

    # Created but stopped (docker stop, a crash): it is named.
    runtime.allow("stop")
    e.engine.traefik_up()
    runtime.stop(runtime.by_name("unit_kalpana-traefik").id, timeout=0)
    stopped = json.loads(routes("--json"))
    assert stopped["served"] is False and "unit_kalpana-traefik is not running" in stopped["note"], stopped
    runtime.assert_no_violations()


@pytest.mark.parametrize("base", [None, BASE])
def test_validate_warns_as_apply_does_about_a_subdomain_without_base_url_and_exits_0(tmp_path, monkeypatch, base):
    import json

    from click.testing import CliRunner

    from gitops.cli import commands  # noqa: F401 - registers the commands
    from gitops.cli.main import cli

    (tmp_path / "deployments.d").mkdir()
    write(tmp_path, "shop")
    write(tmp_path, "plain", subdomain=None)
    (tmp_path / "kalpana.yaml").write_text(yaml.safe_dump({
        "instance": INSTANCE, "state_dir": "state", "deployments_dir": "deployments.d", "workspace": ".",
        **({"traefik_base_url": base} if base else {})}))
    monkeypatch.chdir(tmp_path)
    for key in ("KALPANA_CONFIG", "TRAEFIK_BASE_URL", "KALPANA_TRAEFIK_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    runner = CliRunner(env={"COLUMNS": "300", "NO_COLOR": "1"})
    text = runner.invoke(cli, ["validate"])
    data = runner.invoke(cli, ["validate", "--json"])
    assert text.exit_code == 0 and data.exit_code == 0, text.output + data.output
    warnings = json.loads(data.output)["warnings"]
    if base:
        assert warnings == [] and "warning" not in text.output, text.output
        return
    line = yaml.safe_dump(app("shop"), sort_keys=False).splitlines().index("subdomain: shop") + 1
    expected = (f"deployments.d/shop.yaml:{line}: subdomain 'shop' needs a base URL: set TRAEFIK_BASE_URL "
                "(traefik_base_url in kalpana.yaml); until then it is served in port mode")
    assert [w.endswith(expected) for w in warnings] == [True], warnings
    assert f"warning: {warnings[0]}" in text.output and "ok: 2 deployment(s)" in text.output, text.output


class _StopFails(FakeRuntime):
    failing = False

    def stop(self, container_id: str, timeout: int) -> None:
        if self.failing:
            self._call("stop", container_id, timeout)
            raise KalpanaError("Docker answered 500 to stop")
        super().stop(container_id, timeout)


def test_a_failing_stop_of_the_drained_container_does_not_fail_a_deploy_the_route_already_serves(tmp_path):
    runtime = _StopFails(allow={"observe", "remove", "remove_image", *BUILD, *DEPLOY, *TRAEFIK})
    e = _Engine(tmp_path, runtime, traefik_base_url=BASE)
    write(tmp_path, "shop")
    assert e.engine.apply().ok
    write(tmp_path, "shop", build_command="echo v2")
    runtime.failing = True

    result = e.engine.apply()

    assert result.ok, result.to_dict()
    (outcome,) = result.outcomes
    assert outcome.build.status.value == "SUCCESS"
    new = runtime.by_name(L.container_name(INSTANCE, "shop"))
    alias = new.labels[L.ROUTE_ALIAS]
    assert RouteTable(e.settings.routes_path, INSTANCE).get("shop").servers == (f"http://{alias}:8080",)
    assert runtime.by_name(L.draining_name(INSTANCE, "shop")) is not None, "left for the next run's recovery"
