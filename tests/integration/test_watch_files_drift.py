"""`kalpana watch` without anyone typing a command: saved files are applied, broken ones change nothing,
and containers killed or removed behind Kalpana's back come back (from their image, not a rebuild)."""

from __future__ import annotations

from .daemon_helpers import HTTPD, fetch, start_daemon, wait_serving, wait_until
from .helpers import builds, deploy_web, host_port, image_tags, only_container, web_spec
from gitops.labels import FIELD_HASHES, RUNTIME_HASH

__all__ = ["start_daemon"]  # the fixture, imported so pytest finds it here


def test_saved_deployment_file_is_applied(kalpana_project, start_daemon):
    p = kalpana_project
    p.write_app("local", {"alt/index.html": "two"})
    port = deploy_web(p, "local", "one", env={"COLOR": "blue"})
    old = only_container(p, "local")
    count = len(builds(p, "local"))
    daemon = start_daemon()

    mark = daemon.mark()
    p.write_deployment("local", web_spec("local", env={"COLOR": "red"},
                                         start_command="httpd -f -p 8080 -h /workspace/alt"))

    daemon.wait_for(lambda e: e.get("event") == "trigger" and "local" in e.get("message", ""), after=mark,
                    what="trigger for the saved file")
    wait_serving(port, "two", timeout=120)
    daemon.wait_idle()
    new = only_container(p, "local")
    assert new.id != old.id
    assert "COLOR=red" in new.attrs["Config"]["Env"], new.attrs["Config"]["Env"]
    assert new.labels[RUNTIME_HASH] != old.labels[RUNTIME_HASH]
    assert new.labels[FIELD_HASHES] != old.labels[FIELD_HASHES]
    assert new.attrs["Config"]["Image"] == old.attrs["Config"]["Image"], "a runtime-only change must not rebuild"
    records = builds(p, "local")
    assert len(records) == count + 1, records[0]
    assert records[0]["action"] == "redeploy" and records[0]["status"] == "SUCCESS", records[0]
    assert records[0]["triggered_by"] == "auto", records[0]
    assert host_port(p, "local") == port


def test_invalid_file_is_reported_and_changes_nothing(kalpana_project, start_daemon):
    p = kalpana_project
    ports = {name: deploy_web(p, name, f"{name} v1") for name in ("keep", "other")}
    before = {name: only_container(p, name).id for name in ports}
    counts = {name: len(builds(p, name)) for name in ports}
    daemon = start_daemon()

    # A file saved half-written: the YAML ends mid-flow.
    mark = daemon.mark()
    broken = p.deployments_dir / "keep.yaml"
    broken.write_text("name: keep\nsource: keep\nstart_command: [httpd, -f\n")
    error = daemon.wait_for(lambda e: e.get("event") == "error" and "keep.yaml" in e.get("message", ""),
                            after=mark, what="error naming keep.yaml")
    assert ":" in error["message"], error  # file:line: what is wrong

    # While that file is broken, a removed file must not prune anything either (the broken one included).
    p.remove_deployment("other")
    daemon.wait_event("job_done", after=mark, timeout=120)
    daemon.wait_idle()
    warnings = [e["message"] for e in daemon.since(mark, "warning")]
    assert any("pruning skipped" in w for w in warnings), daemon.log_tail()

    for name, port in ports.items():
        container = only_container(p, name)
        assert container.id == before[name], f"{name} was replaced"
        assert container.status == "running", (name, container.status)
        assert fetch(port) == (200, f"{name} v1"), name
        assert len(builds(p, name)) == counts[name], name

    # Fixing the file is picked up: the watcher is still alive and the deployment is managed again.
    mark = daemon.mark()
    p.write_deployment("keep", web_spec("keep", env={"FIXED": "1"}))
    wait_until(lambda: only_container(p, "keep").id != before["keep"], timeout=120,
               what="keep redeployed after its file was fixed")
    daemon.wait_idle()
    assert "FIXED=1" in only_container(p, "keep").attrs["Config"]["Env"]
    assert fetch(ports["keep"]) == (200, "keep v1")


def test_killed_container_is_restarted_and_removed_one_recreated_without_rebuild(kalpana_project, start_daemon):
    p = kalpana_project
    port = deploy_web(p, "steady", "steady v1")
    first = only_container(p, "steady")
    image = first.attrs["Config"]["Image"]
    tags = image_tags(p, "steady")
    known = {r["id"] for r in builds(p, "steady")}
    daemon = start_daemon(drift_interval=1)

    first.kill()
    wait_until(lambda: fetch(port) == (200, "steady v1"), timeout=30, interval=0.2,
               what="the killed container serving again")
    assert only_container(p, "steady").status == "running"

    mark = daemon.mark()
    p.client.containers.get(first.id).remove(force=True)
    daemon.wait_for(lambda e: e.get("event") == "trigger" and e.get("deployment") == "steady"
                    and "drift" in e.get("message", ""), after=mark, timeout=30, what="drift trigger")
    wait_until(lambda: fetch(port) == (200, "steady v1"), timeout=60, interval=0.2,
               what="the removed container recreated and serving")
    daemon.wait_idle()

    now = only_container(p, "steady")
    assert now.id != first.id and now.status == "running"
    assert now.attrs["Config"]["Image"] == image, "recreated from another image"
    assert image_tags(p, "steady") == tags, "healing drift must not build an image"
    new = [r for r in builds(p, "steady") if r["id"] not in known]
    assert all(r["action"] == "start" for r in new), [(r["action"], r["status"]) for r in new]
    assert all(r["status"] == "SUCCESS" for r in new), [(r["action"], r["status"]) for r in new]
    assert HTTPD in " ".join(now.attrs["Config"]["Cmd"] or []), now.attrs["Config"]["Cmd"]


def test_saved_env_file_redeploys_the_deployments_reading_it(kalpana_project, start_daemon):
    p = kalpana_project
    (p.deployments_dir / "web.env").parent.mkdir(parents=True, exist_ok=True)
    (p.deployments_dir / "web.env").write_text("GREETING=hello\n")
    p.write_app("envapp", {"index.html": "x"})
    # The app serves the variable, so the test reads what the running container really got.
    p.write_deployment("envapp", web_spec("envapp", env_file="web.env",
                                          start_command="echo $GREETING > /workspace/index.html; " + HTTPD))
    p.run("apply")
    port = host_port(p, "envapp")
    assert fetch(port) == (200, "hello\n")
    daemon = start_daemon()

    mark = daemon.mark()
    (p.deployments_dir / "web.env").write_text("GREETING=bonjour\n")
    daemon.wait_for(lambda e: e.get("event") == "trigger" and "envapp" in e.get("message", ""), after=mark,
                    what="trigger for the saved env_file")
    wait_serving(port, "bonjour\n", timeout=120)
    daemon.wait_idle()
    assert builds(p, "envapp")[0]["action"] == "redeploy"
