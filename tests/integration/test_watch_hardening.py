"""`kalpana watch` when things go wrong: probing webhooks without the secret, GitHub's Redeliver after a
failure, runs that fail outside their build, and SIGKILL of a run mid-swap or of the daemon mid-build.

Everything is real: the daemon (`python -m gitops watch`), its worker children, Docker, a bare git
remote and signed deliveries over HTTP. Kills are real SIGKILLs of real processes.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

from filelock import FileLock

from .daemon_helpers import (DEPLOYMENT_SECRET, HTTPD, INSTANCE_SECRET, fetch, process_alive, push_payload, site,
                             start_daemon, wait_serving, wait_until)
from .helpers import builds, deploy_web, only_container, web_spec
from gitops.labels import BUILD_ID, retired_name

__all__ = ["site", "start_daemon"]  # the fixtures, imported so pytest finds them here


def worker_children(daemon) -> list[int]:
    """The daemon's child processes (its worker runs), from /proc: whichever thread started them."""
    pids: set[int] = set()
    for children in Path(f"/proc/{daemon.pid}/task").glob("*/children"):
        try:
            pids |= {int(pid) for pid in children.read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return sorted(pid for pid in pids if process_alive(pid))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- 7: names cannot be probed without the secret ------------------------------------------------


def test_an_unknown_deployment_answers_as_a_bad_signature_and_no_answer_names_a_file(kalpana_project,
                                                                                    start_daemon):
    p = kalpana_project
    deploy_web(p, "site", "v1", webhook_secret=DEPLOYMENT_SECRET)
    deploy_web(p, "open", "open v1")  # no webhook_secret
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    body = json.dumps({"zen": "hi"}).encode()

    answers = {
        "known, unsigned": daemon.post("site", body, secret=None, event="ping"),
        "unknown, unsigned": daemon.post("nope", body, secret=None, event="ping"),
        "known, wrong secret": daemon.post("site", body, secret=DEPLOYMENT_SECRET, sign_with="guess", event="ping"),
        "unknown, wrong secret": daemon.post("nope", body, secret=DEPLOYMENT_SECRET, sign_with="guess",
                                             event="ping"),
        # The secrets an attacker may hold are no use on a name that does not exist either.
        "unknown, instance secret": daemon.post("nope", body, secret=INSTANCE_SECRET, event="ping"),
        "unknown, a deployment's secret": daemon.post("nope", body, secret=DEPLOYMENT_SECRET, event="ping"),
    }
    assert {what: status for what, (status, _) in answers.items()} == {what: 401 for what in answers}, answers
    assert len({json.dumps(answer, sort_keys=True) for _, answer in answers.values()}) == 1, answers

    status, answer = daemon.post("open", body, secret="anything", event="ping")
    assert status == 403 and "set webhook_secret in the deployment's file" in answer["message"], answer
    everything = json.dumps([answer] + [a for _, a in answers.values()])
    assert str(p.deployments_dir) not in everything and ".yaml" not in everything, everything

    # The right secret on the right name still gets in.
    assert daemon.post("site", body, secret=DEPLOYMENT_SECRET, event="ping")[0] == 200


# -- 8: GitHub's Redeliver button retries a push whose job failed ------------------------------------


def test_redelivery_of_a_failed_push_runs_again_and_of_a_built_one_does_not(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    broken = site.remote.commit_and_push({"app/index.html": "v2", "app/build.sh": "exit 3\n"}, "broken build")
    payload = push_payload(site.remote, broken, "broken build")
    failed_delivery = str(uuid.uuid4())

    mark = daemon.mark()
    status, answer = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=failed_delivery)
    assert status == 202, answer
    again = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=failed_delivery)
    assert again[0] == 200 and again[1].get("duplicate") is True, again  # queued or running: nothing to add
    daemon.wait_event("job_done", after=mark, ok=False, timeout=120)
    daemon.wait_idle()
    assert builds(p, "site")[0]["status"] == "FAILED"
    assert len(daemon.since(mark, "job_start")) == 1
    assert not [e for e in daemon.since(mark, "warning") if "retrying" in e.get("message", "")], \
        "the build failed on its own command: it waits for a change, not for a retry"

    # The user presses Redeliver: the push runs again.
    mark = daemon.mark()
    count = len(builds(p, "site"))
    status, answer = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=failed_delivery)
    assert status == 202, f"a redelivery of a push whose build failed was refused: {answer}"
    daemon.wait_event("job_done", after=mark, timeout=120)
    daemon.wait_idle()
    assert len(builds(p, "site")) == count + 1
    assert builds(p, "site")[0]["commit_hash"] == broken

    # A push that builds is handled: its redelivery builds nothing, before and after a restart.
    fixed = site.remote.commit_and_push({"app/index.html": "v3", "app/build.sh": "echo fixed\n"}, "fixed")
    fixed_payload = push_payload(site.remote, fixed, "fixed")
    built_delivery = str(uuid.uuid4())
    assert daemon.post("site", fixed_payload, secret=DEPLOYMENT_SECRET, delivery=built_delivery)[0] == 202
    wait_serving(site.port, "v3", timeout=120)
    daemon.wait_idle()
    mark = daemon.mark()
    status, answer = daemon.post("site", fixed_payload, secret=DEPLOYMENT_SECRET, delivery=built_delivery)
    assert status == 200 and "already handled" in answer["message"], answer
    daemon.wait_idle()
    assert daemon.since(mark, "job_start") == []

    daemon.terminate()
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    status, answer = daemon.post("site", fixed_payload, secret=DEPLOYMENT_SECRET, delivery=built_delivery)
    assert status == 200 and answer.get("duplicate") is True, answer
    # The failed one was never handled: after the restart too, Redeliver runs it.
    status, answer = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=failed_delivery)
    assert status == 202, answer
    daemon.wait_idle()


# -- 9: a failure outside the build is retried with backoff ----------------------------------------------


def test_a_run_that_failed_on_the_lock_is_retried_without_another_trigger(kalpana_project, start_daemon):
    p = kalpana_project
    port = deploy_web(p, "site", "v1")
    daemon = start_daemon(lock_timeout=1)
    lock = FileLock(str(p.state_dir / "apply.lock"))
    lock.acquire(timeout=10)  # another kalpana (say, an operator's long `kalpana apply`) holds it
    try:
        mark = daemon.mark()
        p.write_deployment("site", web_spec("site", env={"COLOR": "red"}))
        failed = daemon.wait_event("job_done", after=mark, ok=False, timeout=60)
        assert "still holds" in failed["message"], failed
        retry = daemon.wait_for(lambda e: e.get("event") == "warning" and "retrying" in e.get("message", ""),
                                after=mark, timeout=10, what="a retry being scheduled")
        assert "in 5 s" in retry["message"], retry
    finally:
        lock.release()
    done = daemon.wait_event("job_done", after=mark, ok=True, timeout=60)
    assert "site" in done["message"], done
    daemon.wait_idle()
    assert "COLOR=red" in only_container(p, "site").attrs["Config"]["Env"]
    assert fetch(port) == (200, "v1")
    triggers = [e["message"] for e in daemon.since(mark, "trigger")]
    assert len(triggers) == 1, f"the retry needed another trigger: {triggers}"


def test_a_push_whose_fetch_failed_is_retried_and_deploys_once_the_remote_answers(kalpana_project, site,
                                                                                  start_daemon):
    """A failed fetch leaves the last good checkout serving, but the push was not deployed: retry it."""
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    pushed = site.remote.commit_and_push({"app/index.html": "v2"}, "second version")
    away = site.remote.bare.with_name("away.git")
    site.remote.bare.rename(away)  # the remote stops answering
    try:
        mark = daemon.mark()
        status, answer = daemon.post("site", push_payload(site.remote, pushed, "second version"),
                                     secret=DEPLOYMENT_SECRET, delivery=str(uuid.uuid4()))
        assert status == 202, answer
        failed = daemon.wait_event("job_done", after=mark, ok=False, timeout=60)
        assert "site" in failed["message"], failed
        daemon.wait_for(lambda e: e.get("event") == "warning" and "retrying" in e.get("message", ""),
                        after=mark, timeout=10, what="a retry being scheduled")
        assert fetch(site.port) == (200, "v1"), "the last good checkout keeps serving"
    finally:
        away.rename(site.remote.bare)  # the remote is back
    wait_serving(site.port, "v2", timeout=60)
    daemon.wait_idle()
    assert builds(kalpana_project, "site")[0]["commit_hash"] == pushed
    assert len(daemon.since(mark, "trigger")) == 1, "the retry needed no other trigger"


# -- 2: a run killed mid-swap is recovered at once --------------------------------------------------------


def test_a_run_killed_mid_swap_is_recovered_at_once_then_retried(kalpana_project, start_daemon):
    p = kalpana_project
    port = deploy_web(p, "site", "v1")
    old = only_container(p, "site")
    daemon = start_daemon(serve=False)

    # A runtime change whose new container takes a while to answer: the swap is in progress for ~12 s,
    # the old container stopped (port mode) and renamed <name>--retiring.
    mark = daemon.mark()
    p.write_deployment("site", web_spec("site", env={"COLOR": "red"}, start_command=f"sleep 12; {HTTPD}",
                                        healthcheck={"timeout": 60}))
    daemon.wait_for(lambda e: e.get("event") == "phase" and "waiting for health" in e.get("message", ""),
                    after=mark, timeout=120, what="the swap waiting for the new container")
    # The run's process (beside it waits the worker started for the next job).
    child = builds(p, "site")[0]["pid"]
    assert child in worker_children(daemon), (child, worker_children(daemon))
    assert "gitops.worker" in _cmdline(child), _cmdline(child)
    old.reload()
    assert old.name == retired_name(p.instance, "site") and old.status == "exited", (old.name, old.status)
    assert fetch(port, timeout=1) is None, "the swap should be in progress: nothing serving"

    killed = daemon.mark()
    began = time.monotonic()
    os.kill(child, signal.SIGKILL)
    wait_serving(port, "v1", timeout=30)
    took = time.monotonic() - began
    # The new container would answer 12 s after its start, and the retry (whose apply would also
    # recover first) runs 5 s after the kill: serving before either means the recovery ran at once.
    assert took < 4.5, f"serving again only {took:.1f} s after the kill"
    daemon.wait_for(lambda e: e.get("event") == "recovered" and e.get("deployment") == "site"
                    and "restored" in e.get("message", ""), after=killed, timeout=10,
                    what="the recovery of the half-swapped container")
    starts = daemon.since(killed, "job_start")
    assert starts and any("recovery" in r for r in starts[0].get("reasons", [])), starts

    # Then the change itself is retried (it was not the build's fault) and lands.
    wait_until(lambda: builds(p, "site")[0]["status"] == "SUCCESS" and builds(p, "site")[0]["action"] == "redeploy",
               timeout=120, what="the retried redeploy to succeed")
    daemon.wait_idle()
    records = builds(p, "site")
    interrupted = records[1]
    assert interrupted["status"] == "FAILED" and "interrupted" in (interrupted["error_message"] or ""), interrupted
    current = only_container(p, "site")
    assert current.id != old.id and "COLOR=red" in current.attrs["Config"]["Env"]
    wait_serving(port, "v1", timeout=30)


# -- 3: SIGKILL of the daemon mid-build -------------------------------------------------------------------------


def test_sigkill_of_the_daemon_mid_build_cancels_the_build_cleanly(kalpana_project, start_daemon):
    p = kalpana_project
    port = deploy_web(p, "site", "v1")
    old = only_container(p, "site")
    daemon = start_daemon(serve=False)

    p.write_deployment("site", web_spec("site", build_command="sleep 20"))

    def building():
        newest = builds(p, "site")[0]
        return newest if newest["status"] == "BUILDING" and newest["id"] != old.labels.get(BUILD_ID) else None

    record = wait_until(building, timeout=120, what="the rebuild to start")
    assert record["pid"] in worker_children(daemon), (record["pid"], worker_children(daemon))
    time.sleep(1)  # the build streams its log through the daemon's pipe

    daemon.process.send_signal(signal.SIGKILL)
    daemon.wait_exit(10)
    wait_until(lambda: not process_alive(record["pid"]), timeout=30,
               what="the orphaned run to stop (its parent died)")

    final = {r["id"]: r for r in builds(p, "site")}[record["id"]]
    assert final["status"] in ("CANCELLED", "SUCCESS"), final
    assert "BrokenPipe" not in (final["error_message"] or ""), final
    assert "Broken pipe" not in p.run("logs", "site", "--build", record["id"], check=False).stdout
    assert fetch(port) == (200, "v1")
    if final["status"] == "CANCELLED":
        current = only_container(p, "site")
        assert current.id == old.id and current.status == "running", (current.name, current.status)
