"""Subdomain routing through Traefik (issue 10), on the real engine.

No registry is reachable here, so Traefik itself cannot be pulled or run: ``traefik_image``
is a locally built stand-in (the test base image, labelled as Traefik, that just keeps
running). What is proven is Kalpana's side: the network, the ``kalpana-traefik`` container
exactly as Traefik would be started (flags, ports, volume, mounts, restart policy), the route
documents Traefik's file provider would read, and that a route only ever names running,
ready containers. Readiness is judged from outside, like the deployer does: an HTTP GET of
each routed container on its own address.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from typing import Any, Iterator

import docker
import docker.errors
import pytest
import yaml

from gitops.labels import INSTANCE, ROUTE_ALIAS, acme_volume, traefik_name

from .helpers import builds, containers, get, host_port, output, status_row, web_spec

STAND_IN = "kalpana-test-traefik:stand-in"
BASE_URL = "apps.test"
SLOW_START = "sleep 2 && exec httpd -f -p 8080 -h /workspace"  # ready 2 s after it starts


@pytest.fixture(scope="session")
def traefik_stand_in(docker_client: docker.DockerClient, base_image: str) -> str:
    """A local image that stands in for Traefik: it runs (ignoring Traefik's flags) until stopped."""
    dockerfile = (f"FROM {base_image}\n"
                  "LABEL org.opencontainers.image.title=Traefik dev.kalpana.test=traefik-stand-in\n"
                  'ENTRYPOINT ["/bin/sh", "-c", "exec sleep 2147483647", "traefik"]\n')
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=STAND_IN, rm=True)
    return STAND_IN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


@pytest.fixture
def routed(kalpana_project, traefik_stand_in, docker_client) -> Iterator[Any]:
    """A project in subdomain mode: base URL, its own network, the stand-in image, free host ports."""
    p = kalpana_project
    p.network = f"{p.instance}-proxy"
    p.ports = (free_port(), free_port())
    p.write_config(traefik_base_url=BASE_URL, traefik_network=p.network, traefik_image=traefik_stand_in,
                   traefik_http_port=p.ports[0], traefik_https_port=p.ports[1], traefik_drain_seconds=0.3,
                   traefik_email="ops@apps.test")
    p.routes_dir = p.state_dir / "traefik-routes"
    yield p
    # The instance's sweep removes containers and networks; the certificate volume is ours to remove.
    for name in (traefik_name(p.instance),):
        try:
            docker_client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    try:
        docker_client.volumes.get(acme_volume(p.instance)).remove(force=True)
    except docker.errors.NotFound:
        pass


def route_of(p, name: str) -> dict[str, Any]:
    return yaml.safe_load((p.routes_dir / f"{name}.yml").read_text())


def routed_aliases(p, name: str) -> list[str]:
    path = p.routes_dir / f"{name}.yml"
    if not path.exists():
        return []
    doc = yaml.safe_load(path.read_text())
    (service,) = doc["http"]["services"].values()
    return [s["url"].split("//", 1)[1].rsplit(":", 1)[0] for s in service["loadBalancer"]["servers"]]


def address(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def get_body(ip: str, port: int = 8080, timeout: float = 1.0) -> str | None:
    """The body of a 200 from the container's own address, else None."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode()
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def deploy_routed(p, name: str, content: str, **overrides: Any) -> None:
    p.write_app(name, {"index.html": content})
    p.write_deployment(name, web_spec(name, subdomain=name, **overrides))
    p.run("apply")


# -- set-up and routes ----------------------------------------------------------------------------------------

def test_a_subdomain_deployment_is_routed_through_kalpana_traefik_created_once(routed, docker_client):
    p = routed
    deploy_routed(p, "shop", "v1")

    row = status_row(p, "shop")
    assert row["state"] == "running" and row["url"] == f"https://shop.{BASE_URL}", row

    (app,) = containers(p, "shop")
    app.reload()
    assert list(app.attrs["NetworkSettings"]["Networks"]) == [p.network], "attached to the Traefik network only"
    assert not any(app.attrs["HostConfig"]["PortBindings"] or {}), "no host port in subdomain mode"
    alias = app.labels[ROUTE_ALIAS]
    assert alias in app.attrs["NetworkSettings"]["Networks"][p.network]["Aliases"]

    name = f"kalpana-{p.instance}-shop"
    assert route_of(p, "shop") == {"http": {
        "routers": {name: {"rule": f"Host(`shop.{BASE_URL}`)", "entryPoints": ["websecure"], "service": name,
                           "tls": {"certResolver": "letsencrypt"}}},
        "services": {name: {"loadBalancer": {"servers": [{"url": f"http://{alias}:8080"}]}}}}}

    traefik = docker_client.containers.get(traefik_name(p.instance))
    attrs = traefik.attrs
    assert attrs["Config"]["Image"] == STAND_IN
    assert attrs["Args"][-len(EXPECTED_FLAGS):] == EXPECTED_FLAGS
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    bindings = attrs["HostConfig"]["PortBindings"]
    assert bindings["80/tcp"][0]["HostPort"] == str(p.ports[0])
    assert bindings["443/tcp"][0]["HostPort"] == str(p.ports[1])
    assert "8080/tcp" not in bindings, "the dashboard is off by default"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/letsencrypt"]["Type"] == "volume" and mounts["/letsencrypt"]["Name"] == acme_volume(p.instance)
    assert mounts["/etc/traefik/kalpana"]["Source"] == str(p.routes_dir) and not mounts["/etc/traefik/kalpana"]["RW"]
    assert list(attrs["NetworkSettings"]["Networks"]) == [p.network]

    routes = p.run_json("routes")["routes"]
    assert [(r["host"], r["container"], r["port"], r["ready"]) for r in routes] == \
        [(f"shop.{BASE_URL}", app.name, 8080, True)], routes
    table = p.run("routes").stdout
    assert f"https://shop.{BASE_URL}" in table and app.name in table and "yes" in table, table

    # A second apply that redeploys: still the one Traefik, untouched.
    p.write_app("shop", {"index.html": "v2"})
    p.run("apply")
    found = docker_client.containers.list(all=True, filters={"name": traefik_name(p.instance)})
    assert [c.id for c in found] == [traefik.id]
    assert p.run_json("traefik", "status")["mode"] == "kalpana"

    # `traefik down` keeps the certificates.
    p.run("traefik", "down")
    assert not docker_client.containers.list(all=True, filters={"name": traefik_name(p.instance)})
    docker_client.volumes.get(acme_volume(p.instance))


EXPECTED_FLAGS = [
    "--providers.file.directory=/etc/traefik/kalpana",
    "--providers.file.watch=true",
    "--entrypoints.web.address=:80",
    "--entrypoints.web.http.redirections.entrypoint.to=websecure",
    "--entrypoints.web.http.redirections.entrypoint.scheme=https",
    "--entrypoints.websecure.address=:443",
    "--certificatesresolvers.letsencrypt.acme.storage=/letsencrypt/acme.json",
    "--certificatesresolvers.letsencrypt.acme.httpchallenge.entrypoint=web",
    "--certificatesresolvers.letsencrypt.acme.email=ops@apps.test",
]


@pytest.mark.parametrize("mounts_routes", [True, False], ids=["file-provider", "docker-labels"])
def test_a_traefik_the_user_runs_on_the_network_is_used_not_duplicated(routed, docker_client, mounts_routes):
    p = routed
    docker_client.networks.create(p.network, driver="bridge", labels={INSTANCE: p.instance})
    p.routes_dir.mkdir(parents=True, exist_ok=True)
    volumes = {str(p.routes_dir): {"bind": "/etc/traefik/dynamic", "mode": "ro"}} if mounts_routes else {}
    users = docker_client.containers.run(STAND_IN, name=f"{p.instance}-users-traefik", detach=True,
                                         network=p.network, labels={INSTANCE: p.instance}, volumes=volumes)
    p.write_app("blog", {"index.html": "v1"})
    p.write_deployment("blog", web_spec("blog", subdomain="blog"))
    result = p.run("apply")

    assert not docker_client.containers.list(all=True, filters={"name": traefik_name(p.instance)}), \
        "kalpana-traefik must not be started beside the user's Traefik"
    state = p.run_json("traefik", "status")
    assert state["container"] == users.name
    (app,) = containers(p, "blog")
    if mounts_routes:
        assert state["mode"] == "user (file provider)"
        assert routed_aliases(p, "blog") == [app.labels[ROUTE_ALIAS]]
        assert "traefik.enable" not in app.labels, "file routes only: labels would route it before it is ready"
    else:
        assert state["mode"] == "user (docker labels)"
        assert "does not mount" in output(result)
        assert not (p.routes_dir / "blog.yml").exists()
        router = f"traefik.http.routers.kalpana-{p.instance}-blog"
        assert app.labels["traefik.enable"] == "true"
        assert app.labels[f"{router}.rule"] == f"Host(`blog.{BASE_URL}`)"
        assert app.labels[f"{router}.entrypoints"] == "websecure"
        assert app.labels[f"{router}.tls.certresolver"] == "letsencrypt"
        assert app.labels[f"traefik.http.services.kalpana-{p.instance}-blog.loadbalancer.server.port"] == "8080"
        assert app.labels["traefik.docker.network"] == p.network



def test_falling_back_to_port_mode_removes_the_route(routed):
    """QA of issue 10: with the base URL gone, the deployment moves to a host port and its route goes with it."""
    p = routed
    deploy_routed(p, "shop", "v1")
    assert (p.routes_dir / "shop.yml").exists()

    p.write_config(traefik_network=p.network, traefik_image=STAND_IN, traefik_http_port=p.ports[0],
                   traefik_https_port=p.ports[1])  # no traefik_base_url any more
    p.run("apply")
    port = host_port(p, "shop")
    assert get(p, port) == "v1", "the port-mode container serves"
    assert not (p.routes_dir / "shop.yml").exists(), "the route named a container that is gone"
    assert p.run_json("routes")["routes"] == []
    assert "no routes" in p.run("routes").stdout


# -- zero-downtime switches ------------------------------------------------------------------------------------

class RouteSampler:
    """Every 50 ms: which containers the route names, and whether each is running and answers 200 on its address."""

    def __init__(self, p, name: str, client: docker.DockerClient):
        self.p, self.name, self.client = p, name, client
        self.samples = 0
        self.problems: list[str] = []
        self.seen_aliases: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RouteSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def sample(self) -> None:
        aliases = routed_aliases(self.p, self.name)
        listed = self.client.api.containers(all=True, filters={"label": [f"{INSTANCE}={self.p.instance}"]})
        by_alias = {c["Labels"].get(ROUTE_ALIAS): c for c in listed}
        ready = 0
        for alias in aliases:
            self.seen_aliases.add(alias)
            c = by_alias.get(alias)
            if c is None or c["State"] != "running":
                self.problems.append(f"sample {self.samples}: routed {alias} is {c['State'] if c else 'gone'}")
                continue
            ip = (c["NetworkSettings"]["Networks"].get(self.p.network) or {}).get("IPAddress")
            if not ip or get_body(ip) is None:
                self.problems.append(f"sample {self.samples}: routed {alias} is running but not ready")
                continue
            ready += 1
        if not ready:
            self.problems.append(f"sample {self.samples}: no ready container carries the route ({aliases})")
        self.samples += 1


def test_a_redeploy_always_routes_to_a_running_ready_container_and_never_to_an_unready_one(routed, docker_client):
    p = routed
    deploy_routed(p, "api", "v1", start_command=SLOW_START, healthcheck={"timeout": 15})
    (old,) = containers(p, "api")
    assert routed_aliases(p, "api") == [old.labels[ROUTE_ALIAS]]

    p.write_app("api", {"index.html": "v2"})
    with RouteSampler(p, "api", docker_client) as sampler:
        p.run("apply")
        time.sleep(0.5)
    assert sampler.problems == [], sampler.problems[:10]
    assert sampler.samples >= 40, f"the sampler ran through the 2 s start: {sampler.samples} samples"

    (new,) = containers(p, "api")
    assert new.id != old.id
    assert sampler.seen_aliases == {old.labels[ROUTE_ALIAS], new.labels[ROUTE_ALIAS]}, "the route switched once"
    assert routed_aliases(p, "api") == [new.labels[ROUTE_ALIAS]]
    assert get_body(address(new, p.network)) == "v2"


def test_a_new_version_that_never_gets_healthy_leaves_the_old_one_routed_and_serving(routed, docker_client):
    p = routed
    deploy_routed(p, "api", "v1", healthcheck={"timeout": 3})
    (old,) = containers(p, "api")
    alias = old.labels[ROUTE_ALIAS]

    p.write_deployment("api", web_spec("api", subdomain="api", healthcheck={"timeout": 3},
                                       start_command="echo starting-but-never-listening; sleep 1000"))
    with RouteSampler(p, "api", docker_client) as sampler:
        result = p.run("apply", check=False)
    assert result.returncode == 1, output(result)
    assert sampler.problems == [], sampler.problems[:10]
    assert sampler.seen_aliases == {alias}, "the route never named the new container"

    (kept,) = containers(p, "api")  # the new one is removed
    assert kept.id == old.id and kept.name == old.name and kept.status == "running"
    assert routed_aliases(p, "api") == [alias]
    assert get_body(address(kept, p.network)) == "v1"
    failed = builds(p, "api")[0]
    assert failed["status"] == "FAILED", failed
    assert "not healthy within 3 s" in failed["error_message"]
    assert "starting-but-never-listening" in failed["error_message"], "the new container's last log lines"


def test_traefik_ports_held_by_another_process_fail_before_any_app_container(routed, docker_client):
    p = routed
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", p.ports[1]))
        holder.listen()
        p.write_app("shop", {"index.html": "v1"})
        p.write_deployment("shop", web_spec("shop", subdomain="shop"))
        result = p.run("apply", check=False)
    assert result.returncode != 0
    text = output(result)
    assert f"cannot start {traefik_name(p.instance)}" in text and "traefik_https_port" in text, text
    assert containers(p, "shop") == [], "no app container was touched"
    assert not docker_client.containers.list(all=True, filters={"name": traefik_name(p.instance)})
