"""`kalpana watch` and GitHub push webhooks, end to end.

A bare repository is the remote, commits are pushed to it, and signed push
deliveries shaped as GitHub sends them are POSTed over real HTTP to the
running daemon. What counts is what is served, what the build history
records and what the daemon's log says it ran.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

from .daemon_helpers import (DEPLOYMENT_SECRET, INSTANCE_SECRET, GitRemote, fetch, git_site_spec, post_webhook,
                             process_alive, push_payload, site, start_daemon, wait_serving, wait_until)
from .helpers import builds, get, host_port, only_container
from gitops.labels import BUILD_ID

__all__ = ["site", "start_daemon"]  # the fixtures, imported so pytest finds them here


def _work_since(daemon, mark: int) -> list[str]:
    """Trigger and run lines logged after ``mark``: empty when the daemon did nothing."""
    return [f"{e['event']}: {e.get('message')}" for e in daemon.since(mark)
            if e.get("event") in ("trigger", "job_start", "job_done")]


def test_push_webhook_deploys_the_pushed_commit(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    before = builds(p, "site")
    message = "second version\n\nwith a body GitHub also sends"
    sha = site.remote.commit_and_push({"app/index.html": "v2"}, message)

    mark = daemon.mark()
    began = time.monotonic()
    status, answer = daemon.post("site", push_payload(site.remote, sha, message), secret=DEPLOYMENT_SECRET)
    answered = time.monotonic() - began
    assert status == 202, answer
    assert answer["queued"] == ["site"] and answer["commit"] == sha, answer
    # GitHub gives up after 10 s: the answer must not wait for the pull and the build.
    assert answered < 5, f"webhook answered after {answered:.1f}s"

    wait_serving(site.port, "v2", timeout=120)
    daemon.wait_event("job_done", after=mark, timeout=120)
    daemon.wait_idle()
    records = builds(p, "site")
    assert len(records) == len(before) + 1, [r["id"] for r in records]
    newest = records[0]
    assert newest["status"] == "SUCCESS", newest
    assert newest["triggered_by"] == "webhook", newest
    assert newest["commit_hash"] == sha, newest
    assert newest["commit_message"] == "second version", newest
    assert newest["branch"] == "main", newest
    assert newest["action"] == "rebuild", newest
    assert only_container(p, "site").labels.get(BUILD_ID) == newest["id"]


def test_bad_signature_is_rejected_and_builds_nothing(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    count = len(builds(p, "site"))
    sha = site.remote.commit_and_push({"app/index.html": "v2"}, "second version")
    payload = push_payload(site.remote, sha, "second version")

    mark = daemon.mark()
    status, answer = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, sign_with="not-the-secret")
    assert status == 401, answer
    status, answer = daemon.post("site", payload, secret=None)  # no signature header at all
    assert status == 401, answer
    status, answer = daemon.post(None, payload, secret=INSTANCE_SECRET, sign_with=DEPLOYMENT_SECRET)
    assert status == 401, answer
    # The signature covers the raw body: one byte changed after signing is rejected too.
    body = json.dumps(payload).encode()
    status, answer = daemon.post("site", body + b" ", secret=DEPLOYMENT_SECRET, signed_body=body)
    assert status == 401, answer

    daemon.wait_idle()
    assert _work_since(daemon, mark) == [], "a rejected delivery must queue nothing"
    assert len(builds(p, "site")) == count
    assert get(p, site.port) == "v1"

    # The same delivery, correctly signed, does deploy: the rejections above were the signature's doing.
    status, answer = daemon.post("site", payload, secret=DEPLOYMENT_SECRET)
    assert status == 202, answer
    wait_serving(site.port, "v2", timeout=120)


def test_each_refused_delivery_is_logged_once_without_secrets(kalpana_project, site, start_daemon):
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    sha = site.remote.commit_and_push({"app/index.html": "v2"}, "second version")
    payload = push_payload(site.remote, sha, "second version")

    mark = daemon.mark()
    refused = [
        (daemon.post("site", payload, secret=DEPLOYMENT_SECRET, sign_with="not-the-secret", delivery="bad-sig"),
         "/api/deployments/site/webhook", "wrong X-Hub-Signature-256 signature", "site"),
        (daemon.post("nosuch", payload, secret=DEPLOYMENT_SECRET, delivery="unknown"),
         "/api/deployments/nosuch/webhook", "no deployment named 'nosuch'", None),
        (daemon.post(None, payload, secret=None, delivery="unsigned"),
         "/webhook", "no X-Hub-Signature-256 signature", None),
    ]
    for (status, answer), path, why, deployment in refused:
        assert status == 401, answer
        line = daemon.wait_for(lambda e, path=path: e.get("event") == "warning"
                               and e.get("message", "").startswith(f"refused POST {path} "), after=mark,
                               timeout=30, what=f"the refusal of {path}")
        assert why in line["message"] and " with 401: " in line["message"], line
        assert line.get("deployment") == deployment, line
    daemon.wait_idle()
    lines = [e["message"] for e in daemon.since(mark, "warning") if e["message"].startswith("refused ")]
    assert len(lines) == len(refused), lines
    log = "\n".join(daemon.raw)
    for secret in (DEPLOYMENT_SECRET, INSTANCE_SECRET, "not-the-secret"):
        assert secret not in log, f"{secret!r} in the daemon's log"
    assert _work_since(daemon, mark) == [], "a refused delivery must queue nothing"


def test_push_to_another_branch_is_ignored(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    count = len(builds(p, "site"))
    # main moves too, silently: a push wrongly taken as main's would fetch and build it.
    site.remote.commit_and_push({"app/index.html": "v2 on main"}, "main moves")
    site.remote.switch("feature", create=True)
    sha = site.remote.commit_and_push({"app/index.html": "feature"}, "feature work", branch="feature")

    mark = daemon.mark()
    status, answer = daemon.post("site", push_payload(site.remote, sha, "feature work", branch="feature"),
                                 secret=DEPLOYMENT_SECRET)
    assert status == 202, answer
    assert answer.get("ignored") is True, answer
    assert "main" in answer["message"], answer

    daemon.wait_idle()
    assert _work_since(daemon, mark) == [], "a push to another branch must queue nothing"
    assert len(builds(p, "site")) == count
    assert get(p, site.port) == "v1"


def test_redelivery_of_the_same_delivery_id_builds_once(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    count = len(builds(p, "site"))
    sha = site.remote.commit_and_push({"app/index.html": "v2"}, "second version")
    payload = push_payload(site.remote, sha, "second version")
    delivery = str(uuid.uuid4())

    mark = daemon.mark()
    first = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=delivery)
    again = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=delivery)
    assert first[0] == 202, first
    assert again[0] in (200, 202) and again[1].get("duplicate") is True, again
    wait_serving(site.port, "v2", timeout=120)
    daemon.wait_idle()

    # A newer commit lands without a webhook; a redelivery of the old id must not fetch and build it.
    site.remote.commit_and_push({"app/index.html": "v3"}, "third version")
    later = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=delivery)
    assert later[1].get("duplicate") is True, later
    daemon.wait_idle()

    triggers = [e for e in daemon.since(mark, "trigger") if "webhook push" in e.get("message", "")]
    assert len(triggers) == 1, [e["message"] for e in triggers]
    assert len(daemon.since(mark, "job_start")) == 1, _work_since(daemon, mark)

    # Delivery ids outlive the daemon: GitHub's "Redeliver" button may be pressed after a restart.
    daemon.terminate()
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    mark = daemon.mark()
    after_restart = daemon.post("site", payload, secret=DEPLOYMENT_SECRET, delivery=delivery)
    assert after_restart[1].get("duplicate") is True, after_restart
    daemon.wait_idle()
    assert _work_since(daemon, mark) == []

    records = builds(p, "site")
    assert len(records) == count + 1, records[: len(records) - count]
    assert records[0]["commit_hash"] == sha and records[0]["status"] == "SUCCESS", records[0]
    assert get(p, site.port) == "v2"


def test_a_burst_of_ten_pushes_gives_one_build_of_the_newest_commit(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    before = {r["id"] for r in builds(p, "site")}
    # Commit first (local, instant), then push and deliver each one as GitHub would: push, webhook, next push.
    shas = [site.remote.commit({"app/index.html": f"burst {i}"}, f"burst {i}") for i in range(1, 11)]

    began = time.monotonic()
    answers = []
    for i, sha in enumerate(shas, start=1):
        site.remote.push(rev=sha)
        answers.append(daemon.post("site", push_payload(site.remote, sha, f"burst {i}"), secret=DEPLOYMENT_SECRET))
    burst = time.monotonic() - began
    assert [status for status, _ in answers] == [202] * 10, answers

    wait_serving(site.port, "burst 10", timeout=180)
    daemon.wait_idle(timeout=180)
    assert get(p, site.port) == "burst 10"

    new = [r for r in builds(p, "site") if r["id"] not in before]
    summary = [(r["status"], (r["commit_hash"] or "")[:7], r.get("error_message")) for r in new]
    successes = [r for r in new if r["status"] == "SUCCESS"]
    assert len(successes) == 1, f"burst of {burst:.2f}s: expected one successful build, got {summary}"
    assert successes[0]["commit_hash"] == shas[-1], summary
    assert successes[0]["triggered_by"] == "webhook", successes[0]
    others = [r for r in new if r["status"] != "SUCCESS"]
    assert all(r["status"] == "CANCELLED" for r in others), summary
    assert all("superseded by" in (r.get("error_message") or "") for r in others), summary
    # Each superseded run stopped on its SIGTERM (at any point: fetching, building), none had to be killed.
    assert [e["message"] for e in daemon.since(0, "error")] == []


def test_push_during_a_build_supersedes_it(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    slow = site.remote.commit_and_push({"app/index.html": "slow", "app/build.sh": "sleep 20\n"}, "slow build")
    status, answer = daemon.post("site", push_payload(site.remote, slow, "slow build"), secret=DEPLOYMENT_SECRET)
    assert status == 202, answer

    def building():
        newest = builds(p, "site")[0]
        return newest if newest["commit_hash"] == slow and newest["status"] == "BUILDING" else None

    record = wait_until(building, timeout=120, what="the build of the slow commit to start")
    assert get(p, site.port) == "v1", "the old version serves while the new one builds"

    fast = site.remote.commit_and_push({"app/index.html": "fast", "app/build.sh": "echo quick\n"}, "fast fix")
    status, answer = daemon.post("site", push_payload(site.remote, fast, "fast fix"), secret=DEPLOYMENT_SECRET)
    assert status == 202, answer
    wait_serving(site.port, "fast", timeout=120)
    daemon.wait_idle()

    records = {r["id"]: r for r in builds(p, "site")}
    cancelled = records[record["id"]]
    assert cancelled["status"] == "CANCELLED", cancelled
    assert f"superseded by {fast[:7]}" in (cancelled["error_message"] or ""), cancelled
    newest = builds(p, "site")[0]
    assert newest["commit_hash"] == fast and newest["status"] == "SUCCESS", newest
    assert not any(r["status"] == "SUCCESS" and r["commit_hash"] == slow for r in records.values())


def test_sigterm_mid_build_cancels_it_and_keeps_the_old_version(kalpana_project, site, start_daemon):
    p = kalpana_project
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)
    old = only_container(p, "site")
    sha = site.remote.commit_and_push({"app/index.html": "slow v2", "app/build.sh": "sleep 20\n"}, "slow build")

    status, answer = daemon.post("site", push_payload(site.remote, sha, "slow build"), secret=DEPLOYMENT_SECRET)
    assert status == 202, answer

    def building():
        newest = builds(p, "site")[0]
        return newest if newest["commit_hash"] == sha and newest["status"] == "BUILDING" else None

    record = wait_until(building, timeout=120, what="the build of the pushed commit to start")

    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait_exit(45)
    took = time.monotonic() - began
    # Checked at once: the daemon may not exit while the run it cancelled is still going.
    child_left = process_alive(record["pid"])
    assert code is not None, f"daemon still running 45s after SIGTERM; its log:\n{daemon.log_tail()}"
    assert code == 0, f"daemon exited {code}; its log:\n{daemon.log_tail()}"
    assert took < 40, f"daemon took {took:.1f}s to stop"
    assert not child_left, f"the daemon exited while its build run (pid {record['pid']}) was still running"
    daemon.wait_for(lambda e: e.get("event") == "info" and e.get("message") == "stopped", timeout=5,
                    what="'stopped' line")

    cancelled = {r["id"]: r for r in builds(p, "site")}[record["id"]]
    assert cancelled["status"] == "CANCELLED", cancelled
    assert "stopping" in (cancelled["error_message"] or ""), cancelled
    assert get(p, site.port) == "v1"
    current = only_container(p, "site")
    assert current.id == old.id and current.status == "running", (current.name, current.status)


def test_webhooks_command_lists_urls_that_answer(kalpana_project, site, start_daemon):
    p = kalpana_project
    p.write_app("plain", {"index.html": "plain"})
    p.write_deployment("plain", {"name": "plain", "source": "plain", "start_command": "httpd -f -p 8080 -h /workspace",
                                 "port": 8080})
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)

    rows = {row["name"]: row for row in p.run_json("webhooks")["webhooks"]}
    assert set(rows) == {None, "site", "plain"}, rows
    assert rows[None]["url"] == f"{daemon.base_url}/webhook" and rows[None]["secret_set"] is True, rows[None]
    assert rows["site"]["url"] == f"{daemon.base_url}/api/deployments/site/webhook", rows["site"]
    assert rows["site"]["secret_set"] is True and rows["site"]["auto_rebuild"] is True, rows["site"]
    assert rows["site"]["repo"] == site.remote.url, rows["site"]
    assert rows["plain"]["url"] == f"{daemon.base_url}/api/deployments/plain/webhook", rows["plain"]
    assert rows["plain"]["secret_set"] is False, rows["plain"]

    # The listed URLs are the ones the daemon serves.
    assert post_webhook(rows[None]["url"], {"zen": "hi"}, secret=INSTANCE_SECRET, event="ping")[0] == 200
    assert post_webhook(rows["site"]["url"], {"zen": "hi"}, secret=DEPLOYMENT_SECRET, event="ping")[0] == 200
    status, answer = post_webhook(rows["plain"]["url"], {"zen": "hi"}, secret="anything", event="ping")
    assert status == 403 and "webhook_secret" in answer["message"], (status, answer)


def test_instance_webhook_rebuilds_the_deployments_of_the_pushed_repository(kalpana_project, site, start_daemon,
                                                                           tmp_path):
    p = kalpana_project
    # Same repository, auto_rebuild off: a push must leave it alone.
    p.write_deployment("manual", git_site_spec("manual", site.remote, auto_rebuild=False))
    # Another repository: not this push's business.
    other_remote = GitRemote(tmp_path / "other-git")
    other_remote.commit_and_push({"app/index.html": "other v1"}, "other first")
    p.write_deployment("other", git_site_spec("other", other_remote))
    p.run("apply")
    manual_port, other_port = host_port(p, "manual"), host_port(p, "other")
    counts = {name: len(builds(p, name)) for name in ("site", "manual", "other")}
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)

    sha = site.remote.commit_and_push({"app/index.html": "v2"}, "second version")
    payload = push_payload(site.remote, sha, "second version")
    status, answer = daemon.post(None, payload, secret=INSTANCE_SECRET)
    assert status == 202, answer
    assert answer["queued"] == ["site"], answer
    assert "auto_rebuild" in answer.get("skipped", {}).get("manual", ""), answer

    wait_serving(site.port, "v2", timeout=120)
    daemon.wait_idle()
    newest = builds(p, "site")[0]
    assert newest["triggered_by"] == "webhook" and newest["commit_hash"] == sha, newest
    assert newest["status"] == "SUCCESS", newest
    assert len(builds(p, "site")) == counts["site"] + 1
    assert len(builds(p, "manual")) == counts["manual"], "auto_rebuild: false must not be rebuilt by a webhook"
    assert len(builds(p, "other")) == counts["other"], "a push to one repository rebuilt another's deployment"
    assert fetch(manual_port) == (200, "v1")
    assert fetch(other_port) == (200, "other v1")


def test_push_for_one_deployment_leaves_an_auto_rebuild_false_sibling_at_its_commit(kalpana_project, site,
                                                                                  start_daemon):
    # "auto_rebuild: false deployments are not rebuilt by webhooks" must hold after the push too: a
    # deployment sharing the repository (and branch) keeps its commit until its operator deploys it.
    p = kalpana_project
    p.write_deployment("manual", git_site_spec("manual", site.remote, auto_rebuild=False))
    p.run("apply")
    manual_port = host_port(p, "manual")
    count = len(builds(p, "manual"))
    daemon = start_daemon(webhook_secret=INSTANCE_SECRET)

    sha = site.remote.commit_and_push({"app/index.html": "v2"}, "second version")
    status, answer = daemon.post("site", push_payload(site.remote, sha, "second version"), secret=DEPLOYMENT_SECRET)
    assert status == 202 and answer["queued"] == ["site"], answer
    wait_serving(site.port, "v2", timeout=120)
    daemon.wait_idle()

    # The daemon restarts (an upgrade, a reboot): its start-up run must not deploy the push to `manual`.
    daemon.terminate()
    start_daemon(webhook_secret=INSTANCE_SECRET)
    assert fetch(manual_port) == (200, "v1"), "a push for `site` reached `manual`, which has auto_rebuild: false"
    new = builds(p, "manual")[: len(builds(p, "manual")) - count]
    assert new == [], [(r["action"], r["triggered_by"], (r["commit_hash"] or "")[:7]) for r in new]
