"""Interrupted runs: SIGKILL and Ctrl-C mid-build, and two applies at once."""

from __future__ import annotations

import signal
import threading
import time

from .helpers import (builds, deploy_web, finish, get, only_container, output, running_count, spawn,
                      status_row, wait_for_status, web_spec)


def test_sigkill_mid_build_then_apply_recovers(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "killed", "v1")
    before = only_container(p, "killed")

    p.write_app("killed", {"index.html": "v2"})
    p.write_deployment("killed", web_spec("killed", build_command="sleep 30"))
    process = spawn(p, "apply")
    stuck = wait_for_status(p, "killed", "BUILDING", process)
    process.send_signal(signal.SIGKILL)
    code, _ = finish(process)
    assert code == -signal.SIGKILL

    assert get(p, port) == "v1"
    assert only_container(p, "killed").id == before.id
    assert builds(p, "killed")[0]["status"] == "BUILDING", "nothing can have finished a killed run's record"
    # status knows the process is gone: not "building" for ever, but what serves, with a note.
    row = status_row(p, "killed")
    assert row["state"] == "running" and row["url"] == f"http://localhost:{port}", row
    assert f"build {stuck['id']} was interrupted" in row["detail"] and row["last_build_status"] == "FAILED", row

    p.write_deployment("killed", web_spec("killed", build_command="echo fixed"))
    result = p.run("apply")
    assert "interrupted" in output(result), output(result)
    records = {b["id"]: b for b in builds(p, "killed")}
    old = records[stuck["id"]]
    assert old["status"] == "FAILED", old
    assert "interrupted" in (old["error_message"] or ""), old
    assert old["completed_at"]
    newest = builds(p, "killed")[0]
    assert newest["id"] != stuck["id"] and newest["status"] == "SUCCESS"
    assert get(p, port) == "v2"
    only_container(p, "killed")


def test_ctrl_c_mid_build_cancels_and_keeps_the_old_version(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "cancelled", "v1")
    before = only_container(p, "cancelled")

    p.write_app("cancelled", {"index.html": "v2"})
    p.write_deployment("cancelled", web_spec("cancelled", build_command="sleep 30"))
    process = spawn(p, "apply")
    stuck = wait_for_status(p, "cancelled", "BUILDING", process)
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, text = finish(process, timeout=30)
    assert code == 130, f"exit {code}:\n{text}"
    assert time.monotonic() - began < 15, "Ctrl-C must not wait for the build to finish"
    assert "Traceback" not in text

    record = builds(p, "cancelled")[0]
    assert record["id"] == stuck["id"]
    assert record["status"] == "CANCELLED", record
    assert record["completed_at"]
    assert get(p, port) == "v1"
    after = only_container(p, "cancelled")
    assert after.id == before.id and after.status == "running"

    # The next apply is not confused by the cancelled record.
    p.write_deployment("cancelled", web_spec("cancelled"))
    p.run("apply")
    assert get(p, port) == "v2"
    assert builds(p, "cancelled")[1]["status"] == "CANCELLED"


def test_concurrent_applies_wait_for_the_lock(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "locked", "v1")

    running_counts: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            running_counts.append(running_count(p, "locked"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        p.write_app("locked", {"index.html": "v2"})
        p.write_deployment("locked", web_spec("locked", build_command="sleep 5"))
        first = spawn(p, "apply")
        wait_for_status(p, "locked", "BUILDING", first)
        second = p.run("apply", check=False)
        first_code, first_text = finish(first)
    finally:
        stop.set()
        sampler.join()

    assert first_code == 0, first_text
    assert second.returncode == 0, output(second)
    assert "waiting" in output(second).lower(), output(second)
    assert get(p, port) == "v2"
    assert running_counts and max(running_counts) <= 1, f"two containers ran for one deployment: {running_counts}"
    only_container(p, "locked")
    # The second apply found everything done: one build for the change, not two.
    assert [b["status"] for b in builds(p, "locked")] == ["SUCCESS", "SUCCESS"]
