"""A failed build or a bad new container never breaks what is running."""

from __future__ import annotations

import time

from .helpers import builds, deploy_web, get, only_container, output, plan_steps, web_spec


def test_failing_build_keeps_the_old_version_serving(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "fails", "v1")
    before = only_container(p, "fails")
    good = builds(p, "fails")[0]

    p.write_app("fails", {"index.html": "v2"})
    p.write_deployment("fails", web_spec("fails", build_command="echo about to fail; exit 3"))
    result = p.run("apply", check=False)
    assert result.returncode == 1, output(result)

    assert get(p, port) == "v1"
    after = only_container(p, "fails")
    assert after.id == before.id, "a failed build must not touch the running container"
    assert after.status == "running"
    assert after.attrs["Config"]["Image"] == good["image"]

    failed = builds(p, "fails")[0]
    assert failed["id"] != good["id"]
    assert failed["status"] == "FAILED", failed
    message = failed["error_message"] or ""
    assert "build command exited with 3" in message, message
    assert failed["completed_at"]
    # The failed build's log was stored and shows the build command's output.
    assert "about to fail" in p.run("logs", "fails").stdout

    status = [row for row in p.run_json("status")["deployments"] if row["name"] == "fails"][0]
    assert status["state"] == "running" and status["last_build_status"] == "FAILED", status
    # The change is still pending: the next apply tries again.
    assert plan_steps(p)["fails"]["action"] == "rebuild"


def test_never_healthy_container_is_removed_and_old_one_serves(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "sleepy", "v1", healthcheck={"timeout": 3})
    before = only_container(p, "sleepy")

    # Runs, but never listens on its port.
    p.write_deployment("sleepy", web_spec("sleepy", start_command="sleep 1000", healthcheck={"timeout": 3}))
    result = p.run("apply", check=False)
    assert result.returncode == 1, output(result)

    assert get(p, port) == "v1"
    after = only_container(p, "sleepy")
    assert after.id == before.id
    assert after.status == "running"
    assert after.name == before.name, "the old container must get its own name back"

    failed = builds(p, "sleepy")[0]
    assert failed["status"] == "FAILED", failed
    assert "not healthy" in (failed["error_message"] or ""), failed


def test_crashing_container_fails_fast_and_old_one_serves(kalpana_project):
    p = kalpana_project
    # A long health timeout: the failure must come from noticing the exit, not from waiting it out.
    port = deploy_web(p, "crashy", "v1", healthcheck={"timeout": 60})
    before = only_container(p, "crashy")

    p.write_deployment("crashy", web_spec("crashy", start_command="echo going down; exit 7",
                                          healthcheck={"timeout": 60}))
    began = time.monotonic()
    result = p.run("apply", check=False)
    elapsed = time.monotonic() - began
    assert result.returncode == 1, output(result)
    assert elapsed < 20, f"a container that exits at once must fail the deploy quickly, took {elapsed:.1f}s"

    assert get(p, port) == "v1"
    after = only_container(p, "crashy")
    assert after.id == before.id and after.status == "running"

    failed = builds(p, "crashy")[0]
    assert failed["status"] == "FAILED", failed
    message = failed["error_message"] or ""
    assert "exit code 7" in message, message
    assert "going down" in message, f"the error should quote the new container's last log lines: {message}"
