"""Operating commands against a real engine: stop/start, rollback, deploy, logs, errors."""

from __future__ import annotations

from .helpers import (HTTPD, builds, deploy_two_versions, deploy_web, get, host_port, image_tags, only_container, output, plan_steps,
                      web_spec)


def test_stop_keeps_it_stopped_across_apply_until_start(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "pausable", "v1")
    container_id = only_container(p, "pausable").id

    p.run("stop", "pausable")
    container = p.client.containers.get(container_id)
    assert container.status != "running", container.status

    step = plan_steps(p)["pausable"]
    assert step["action"] == "noop", step
    assert "stopped by the operator" in step["reason"], step
    row = [r for r in p.run_json("status")["deployments"] if r["name"] == "pausable"][0]
    assert row["state"] == "stopped" and row["url"] is None, row

    p.run("apply")
    assert p.client.containers.get(container_id).status != "running", "apply must not restart a stopped deployment"

    p.run("start", "pausable")
    assert host_port(p, "pausable") == port
    assert get(p, port) == "v1"
    assert only_container(p, "pausable").status == "running"
    assert plan_steps(p)["pausable"]["action"] == "noop"


def test_rollback_runs_the_previous_image_and_sticks(kalpana_project):
    p = kalpana_project
    port, v1, v2 = deploy_two_versions(p, "rolly")
    assert v2["image"] != v1["image"]
    tags = image_tags(p, "rolly")

    result = p.run("rollback", "rolly")
    assert get(p, port) == "v1"
    back = builds(p, "rolly")[0]
    assert back["id"] not in (v1["id"], v2["id"])
    assert back["action"] == "rollback", back
    assert back["status"] == "SUCCESS", back
    assert back["image"] == v1["image"], back
    assert back["triggered_by"] == "manual"
    assert only_container(p, "rolly").attrs["Config"]["Image"] == v1["image"]
    assert image_tags(p, "rolly") == tags, "a rollback must not build an image"
    assert "Step 1/" not in output(result) and "Step 1/" not in p.run("logs", "rolly").stdout

    # The rollback sticks until the files change.
    step = plan_steps(p)["rolly"]
    assert step["action"] == "noop", step
    p.run("apply")
    assert get(p, port) == "v1"
    assert builds(p, "rolly")[0]["id"] == back["id"], "apply after a rollback must do nothing"

    p.run("rollback", "rolly", "--to", v2["id"])
    assert get(p, port) == "v2"
    forward = builds(p, "rolly")[0]
    assert forward["action"] == "rollback" and forward["status"] == "SUCCESS"
    assert forward["image"] == v2["image"]
    assert plan_steps(p)["rolly"]["action"] == "noop"

    # A new source change after the rollback is deployed again.
    p.write_app("rolly", {"index.html": "v3"})
    assert plan_steps(p)["rolly"]["action"] == "rebuild"
    p.run("apply")
    assert get(p, port) == "v3"


def test_deploy_rebuilds_even_when_up_to_date(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "forced", "v1")
    first = builds(p, "forced")[0]
    first_container = only_container(p, "forced").id
    assert plan_steps(p)["forced"]["action"] == "noop"

    p.run("deploy", "forced")
    assert get(p, port) == "v1"
    again = builds(p, "forced")[0]
    assert again["id"] != first["id"]
    assert again["action"] == "deploy", again
    assert again["status"] == "SUCCESS" and again["triggered_by"] == "manual"
    assert again["image"] != first["image"], "deploy must build a new image"
    assert again["image"] in image_tags(p, "forced")
    container = only_container(p, "forced")
    assert container.id != first_container
    assert again["image"] in container.image.tags
    assert plan_steps(p)["forced"]["action"] == "noop"


def test_secrets_are_masked_in_printed_and_stored_logs(kalpana_project):
    p = kalpana_project
    secret = "s3cr3t-value"
    p.write_app("masked", {"index.html": "v1"})
    p.write_deployment("masked", web_spec("masked", env={"API_TOKEN": secret},
                                          build_command=f"echo token is {secret}",
                                          start_command=f'echo "app token is $API_TOKEN"; {HTTPD}'))
    applied = p.run("apply")
    assert get(p, host_port(p, "masked")) == "v1"
    assert secret not in output(applied)
    assert "token is ***" in applied.stdout, applied.stdout

    logs = p.run("logs", "masked")
    assert "token is ***" in logs.stdout, logs.stdout
    assert secret not in output(logs)

    build = builds(p, "masked")[0]
    stored = p.state_dir / "logs" / f"{build['id']}.log"
    assert stored.is_file(), sorted(p.state_dir.rglob("*"))
    text = stored.read_text()
    assert "token is ***" in text and secret not in text
    for path in p.state_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"the secret reached {path}"
    # The app itself still gets the real value, and what it prints is masked like build output.
    assert f"API_TOKEN={secret}" in only_container(p, "masked").attrs["Config"]["Env"]
    app_logs = p.run("logs", "masked", "--app")
    assert "app token is ***" in app_logs.stdout, app_logs.stdout
    assert secret not in output(app_logs)


def test_unknown_deployment_lists_known_ones(kalpana_project):
    p = kalpana_project
    p.write_app("known", {"index.html": "v1"})
    p.write_deployment("known", web_spec("known"))
    for args in (("builds", "nope"), ("logs", "nope"), ("rollback", "nope"), ("deploy", "nope")):
        result = p.run(*args, check=False)
        text = output(result)
        assert result.returncode == 1, f"{args}: {text}"
        assert "nope" in text and "known" in text, f"{args}: {text}"
        assert "Traceback" not in text


def test_docker_unreachable_is_one_clear_line(kalpana_project):
    p = kalpana_project
    p.write_app("nodocker", {"index.html": "v1"})
    p.write_deployment("nodocker", web_spec("nodocker"))
    address = "unix:///nonexistent.sock"
    for args in (("plan",), ("apply",), ("status",)):
        result = p.run(*args, env={"DOCKER_HOST": address}, check=False)
        text = output(result)
        assert result.returncode == 1, f"{args}: {text}"
        assert "Traceback" not in text
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1, f"{args}: expected one line, got:\n{text}"
        assert "/nonexistent.sock" in lines[0], lines[0]
