"""A failed deploy costs no request: the new version is proven beside the old one before the old one stops.

Issue 8: a new container that never got healthy took the site down for the
whole health timeout in port mode. Now a trial container (``<name>--candidate``,
no host port) is probed on its own address while the old one keeps serving; a
host port taken by another process fails before anything stops (and, with the
engine's plan check, before anything is built); and host ports are published on
``publish_address``. A poller GETs the port every 10 ms around each apply.
"""

from __future__ import annotations

import signal
import socket
import time
from typing import Iterator

import pytest

from gitops.labels import candidate_name

from .helpers import (builds, containers, deploy_web, finish, get, host_port, only_container, output, plan_steps,
                      spawn, status_row, web_spec)
from .poller import Poller

HEALTH = {"timeout": 4}  # short: the never-healthy cases wait it out


@pytest.fixture
def held_port() -> Iterator[int]:
    """A host port another process (this test) listens on, on every interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def started_at(container) -> str:
    container.reload()
    return container.attrs["State"]["StartedAt"]


def trial_of(p, name: str) -> str:
    return candidate_name(p.instance, name)


def trial_exists(p, name: str) -> bool:
    return any(c.name == trial_of(p, name) for c in containers(p, name))


# -- a version that never gets healthy ------------------------------------------------------------------------

def test_a_version_that_never_gets_healthy_costs_no_request(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "steady", "v1", healthcheck=HEALTH)
    before = only_container(p, "steady")
    first_start = started_at(before)

    # Runs, but never listens on its port: the case.
    p.write_deployment("steady", web_spec("steady", start_command="sleep 1000", healthcheck=HEALTH))
    with Poller(port) as poller:
        began = time.monotonic()
        result = p.run("apply", check=False)
        elapsed = time.monotonic() - began
    assert result.returncode == 1, output(result)

    assert poller.failures == [], poller.summary()
    assert poller.requests > 100, f"the poller must have run through the health timeout: {poller.summary()}"
    assert elapsed >= HEALTH["timeout"], "the trial was given its whole health timeout"

    after = only_container(p, "steady")  # the trial is gone
    assert (after.id, after.name) == (before.id, before.name), "not even renamed"
    assert started_at(after) == first_start, "the old container was never stopped"
    assert get(p, port) == "v1"

    failed = builds(p, "steady")[0]
    assert failed["status"] == "FAILED", failed
    assert f"not healthy within {HEALTH['timeout']} s" in failed["error_message"], failed
    assert "the running version was left as it was" in output(result)
    log = p.run("logs", "steady").stdout
    assert "trying the new version beside the old one" in log and "stopping the old container" not in log, log
    # The change is still pending: the next apply tries again.
    assert plan_steps(p)["steady"]["action"] == "redeploy"


def test_a_version_that_crashes_costs_no_request_and_fails_fast(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "crashes", "v1", healthcheck={"timeout": 60})
    before = only_container(p, "crashes")
    first_start = started_at(before)

    p.write_deployment("crashes", web_spec("crashes", start_command="echo bad config; exit 4",
                                           healthcheck={"timeout": 60}))
    with Poller(port) as poller:
        began = time.monotonic()
        result = p.run("apply", check=False)
        elapsed = time.monotonic() - began
    assert result.returncode == 1, output(result)
    assert elapsed < 20, f"an exit is noticed at once, not after the timeout: {elapsed:.1f} s"
    assert poller.failures == [], poller.summary()
    after = only_container(p, "crashes")
    assert after.id == before.id and started_at(after) == first_start
    message = builds(p, "crashes")[0]["error_message"]
    assert "exit code 4" in message and "bad config" in message, message


def test_a_good_redeploy_still_swaps_and_leaves_no_trial_behind(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "good", "v1", healthcheck=HEALTH)
    before = only_container(p, "good")

    p.write_deployment("good", web_spec("good", healthcheck=HEALTH, env={"RELEASE": "2"}))
    result = p.run("apply")
    assert get(p, port) == "v1"
    after = only_container(p, "good")
    assert after.id != before.id and after.name == before.name
    assert after.attrs["Config"]["Env"] and "RELEASE=2" in after.attrs["Config"]["Env"]
    record = builds(p, "good")[0]
    assert (record["status"], record["action"]) == ("SUCCESS", "redeploy"), record
    assert "gap" in record["durations"], record
    log = p.run("logs", "good").stdout
    # Proven first, then swapped: the trial's phase comes before the stop.
    assert log.index("trying the new version beside the old one") < log.index("stopping the old container"), log
    assert "could not remove the trial container" not in output(result)


def test_ctrl_c_during_the_trial_leaves_the_old_one_untouched(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "patient", "v1", healthcheck=HEALTH)
    before = only_container(p, "patient")
    first_start = started_at(before)

    p.write_deployment("patient", web_spec("patient", start_command="sleep 1000", healthcheck={"timeout": 60}))
    with Poller(port) as poller:
        process = spawn(p, "apply")
        deadline = time.monotonic() + 60
        while not trial_exists(p, "patient"):
            assert process.poll() is None, finish(process)[1]
            assert time.monotonic() < deadline, "no trial container appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        code, text = finish(process, timeout=30)
    assert code == 130, f"exit {code}:\n{text}"
    assert poller.failures == [], poller.summary()
    after = only_container(p, "patient")
    assert after.id == before.id and started_at(after) == first_start
    assert builds(p, "patient")[0]["status"] == "CANCELLED"
    assert get(p, port) == "v1"


def test_a_trial_left_by_a_killed_apply_is_removed_by_the_next_run(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "orphaned", "v1", healthcheck=HEALTH)
    before = only_container(p, "orphaned")

    p.write_deployment("orphaned", web_spec("orphaned", start_command="sleep 1000", healthcheck={"timeout": 60}))
    process = spawn(p, "apply")
    deadline = time.monotonic() + 60
    while not trial_exists(p, "orphaned"):
        assert process.poll() is None, finish(process)[1]
        assert time.monotonic() < deadline, "no trial container appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    finish(process)
    assert trial_exists(p, "orphaned"), "SIGKILL leaves the trial running (this is what the next run repairs)"
    assert get(p, port) == "v1"

    p.write_deployment("orphaned", web_spec("orphaned", healthcheck=HEALTH))  # back to the version that runs
    result = p.run("apply")
    assert f"removed {trial_of(p, 'orphaned')}" in output(result), output(result)
    after = only_container(p, "orphaned")
    assert after.id == before.id, "the old container is the deployment's, not the leftover trial"
    assert get(p, port) == "v1"


# -- a host port taken by another process ---------------------------------------------------------------------

def test_moving_to_a_host_port_another_process_holds_keeps_the_old_port_serving(kalpana_project, held_port):
    p = kalpana_project
    port = deploy_web(p, "mover", "v1", healthcheck=HEALTH)
    before = only_container(p, "mover")
    first_start = started_at(before)

    p.write_deployment("mover", web_spec("mover", healthcheck=HEALTH, exposed_port=held_port))
    with Poller(port) as poller:
        result = p.run("apply", check=False)
    assert result.returncode == 1, output(result)
    text = " ".join(output(result).split())  # the renderer may wrap long lines
    assert f"port {held_port} is in use by another process: free it or choose another exposed_port" in text, text
    assert poller.failures == [], poller.summary()
    after = only_container(p, "mover")
    assert after.id == before.id and started_at(after) == first_start
    assert host_port(p, "mover") == port and get(p, port) == "v1"


def test_plan_flags_a_busy_exposed_port_before_anything_is_built(kalpana_project, held_port):
    p = kalpana_project
    p.write_app("late", {"index.html": "v1"})
    p.write_deployment("late", web_spec("late", healthcheck=HEALTH, exposed_port=held_port))

    plan = p.run("plan", check=False)
    assert plan.returncode == 1, output(plan)
    text = " ".join(output(plan).split())
    line = next(n for n, text in enumerate((p.deployments_dir / "late.yaml").read_text().splitlines(), 1)
                if text.startswith("exposed_port:"))
    assert f"late.yaml:{line}: exposed_port: port {held_port} is in use by another process: free it or choose " \
           "another exposed_port" in text, text

    result = p.run("apply", check=False)
    assert result.returncode == 1, output(result)
    assert f"port {held_port} is in use by another process" in " ".join(output(result).split())
    assert containers(p, "late") == []
    assert p.run_json("builds", "late", "--limit", "0")["builds"] == [], "nothing was built for it"


# -- publish_address ------------------------------------------------------------------------------------------

def test_publish_address_binds_host_ports_on_that_address_only(kalpana_project):
    p = kalpana_project
    p.write_config(publish_address="127.0.0.1")
    port = deploy_web(p, "local", "v1", healthcheck=HEALTH)
    container = only_container(p, "local")
    bindings = container.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}], bindings
    assert status_row(p, "local")["url"] == f"http://localhost:{port}"

    # A redeploy keeps the address (the trial has no binding at all, the final one the same).
    p.write_deployment("local", web_spec("local", healthcheck=HEALTH, env={"RELEASE": "2"}))
    p.run("apply")
    again = only_container(p, "local")
    assert again.id != container.id
    assert again.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert get(p, port) == "v1"
