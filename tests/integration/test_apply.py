"""plan/apply against a real engine: create, rebuild on a source change, redeploy on an env change, prune."""

from __future__ import annotations

import json
import re
import subprocess

import docker.errors

from gitops.labels import REVISION, image_repository

from .helpers import (HTTPD, builds, containers, deploy_web, get, host_port, image_tags, only_container, output,
                      plan_steps, status_row, web_spec)


def test_create_serves_records_and_then_plans_noop(kalpana_project):
    p = kalpana_project
    p.write_app("hello", {"index.html": "v1"})
    p.write_deployment("hello", web_spec("hello"))

    pending = p.run("plan", "--exit-code", check=False)
    assert pending.returncode == 2, output(pending)
    assert plan_steps(p)["hello"]["action"] == "create"

    p.run("apply")
    row = status_row(p, "hello")
    port = host_port(p, "hello", row)
    assert get(p, port) == "v1"

    records = builds(p, "hello")
    assert len(records) == 1, records
    build = records[0]
    assert build["status"] == "SUCCESS"
    assert build["triggered_by"] == "manual"
    assert build["action"] == "create"
    assert build["image"] == f"{image_repository(p.instance, 'hello')}:{build['id']}"
    assert build["image"].startswith("kalpana/") and p.instance in build["image"], build["image"]
    assert build["started_at"] and build["completed_at"] and not build["error_message"]

    assert row["state"] == "running"
    assert row["url"] == f"http://localhost:{port}"
    assert row["build_id"] == build["id"]
    assert row["image"] == build["image"]

    container = only_container(p, "hello")
    assert container.status == "running"
    assert build["image"] in container.image.tags

    step = plan_steps(p)["hello"]
    assert step["action"] == "noop", step
    settled = p.run("plan", "--exit-code", check=False)
    assert settled.returncode == 0, output(settled)

    # A second apply changes nothing: same container, no new build.
    p.run("apply")
    assert only_container(p, "hello").id == container.id
    assert len(builds(p, "hello")) == 1


def test_source_change_rebuilds_and_serves_new_content(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "src", "v1")
    first = builds(p, "src")[0]

    p.write_app("src", {"index.html": "v2"})
    step = plan_steps(p)["src"]
    assert step["action"] == "rebuild", step
    assert "source" in step["reason"], step

    p.run("apply")
    assert host_port(p, "src") == port, "the assigned host port must be kept across rebuilds"
    assert get(p, port) == "v2"
    second = builds(p, "src")[0]
    assert second["status"] == "SUCCESS" and second["action"] == "rebuild"
    assert second["id"] != first["id"]
    assert second["image"] != first["image"]
    assert second["image"] in only_container(p, "src").image.tags
    assert plan_steps(p)["src"]["action"] == "noop"


def test_env_change_redeploys_the_same_image(kalpana_project):
    p = kalpana_project
    start = f"echo $GREETING > /workspace/env.txt; {HTTPD}"
    port = deploy_web(p, "envy", "v1", start_command=start, env={"GREETING": "hello"})
    assert get(p, port, "/env.txt").strip() == "hello"
    before = only_container(p, "envy")
    tags_before = image_tags(p, "envy")

    p.write_deployment("envy", web_spec("envy", start_command=start, env={"GREETING": "bonjour"}))
    step = plan_steps(p)["envy"]
    assert step["action"] == "redeploy", step
    assert "env changed" in step["reason"], step

    p.run("apply")
    assert get(p, port, "/env.txt").strip() == "bonjour"
    assert get(p, port) == "v1"
    after = only_container(p, "envy")
    assert after.id != before.id, "a redeploy makes a new container"
    assert after.image.id == before.image.id, "an env change must not rebuild the image"
    assert after.attrs["Config"]["Image"] == before.attrs["Config"]["Image"]
    assert "GREETING=bonjour" in after.attrs["Config"]["Env"]
    assert image_tags(p, "envy") == tags_before, "no new image may be built for an env change"
    latest = builds(p, "envy")[0]
    assert latest["action"] == "redeploy" and latest["status"] == "SUCCESS"
    assert latest["image"] == before.attrs["Config"]["Image"]
    assert plan_steps(p)["envy"]["action"] == "noop"


def test_removed_file_is_pruned(kalpana_project):
    p = kalpana_project
    keep_port = deploy_web(p, "keeper", "keep")
    deploy_web(p, "goner", "gone")
    goner_id = only_container(p, "goner").id

    p.remove_deployment("goner")
    step = plan_steps(p)["goner"]
    assert step["action"] == "remove", step

    p.run("apply")
    try:
        p.client.containers.get(goner_id)
    except docker.errors.NotFound:
        pass
    else:
        raise AssertionError("the container of a deployment whose file was removed is still there")
    assert containers(p, "goner") == []
    assert image_tags(p, "goner") == set(), "pruning leaves no images of the removed deployment"
    assert get(p, keep_port) == "keep"
    assert "goner" not in {row["name"] for row in p.run_json("status")["deployments"]}


def test_broken_file_beside_good_one_applies_good_and_prunes_nothing(kalpana_project):
    p = kalpana_project
    good_port = deploy_web(p, "good", "v1")
    orphan_port = deploy_web(p, "orphan", "orphaned")
    orphan_id = only_container(p, "orphan").id

    p.write_app("good", {"index.html": "v2"})
    p.remove_deployment("orphan")
    broken = p.write_deployment("broken", "name: broken\nsource: good\nstart_command: [unclosed\nport: 8080\n")

    result = p.run("apply", check=False)
    text = output(result)
    assert result.returncode != 0, text
    assert get(p, good_port) == "v2", "the good file must be applied despite the broken one"
    assert builds(p, "good")[0]["status"] == "SUCCESS"

    orphan = p.client.containers.get(orphan_id)
    assert orphan.status == "running", "nothing may be pruned on a run where a file failed to load"
    assert get(p, orphan_port) == "orphaned"
    assert "pruning skipped" in text, text
    assert re.search(rf"{re.escape(broken.name)}:\d+:", text), f"the error must name file:line:\n{text}"

    # plan agrees, and keeps the orphan with a reason.
    plan = p.run("plan", "--json", check=False)
    assert plan.returncode != 0
    steps = plan_steps_from(plan)
    assert steps["orphan"]["action"] == "noop", steps["orphan"]

    # Fixing the file makes the next apply prune the orphan.
    p.write_deployment("broken", web_spec("broken", source="good"))
    p.run("apply")
    assert containers(p, "orphan") == []
    assert get(p, host_port(p, "broken")) == "v2"


def plan_steps_from(result: subprocess.CompletedProcess[str]) -> dict:
    """Steps by name from the stdout of a `plan --json` that exited non-zero (run_json insists on exit 0)."""
    return {step["name"]: step for step in json.loads(result.stdout)["steps"]}


def test_git_source_records_commit_and_dirty_tree_rebuilds(kalpana_project):
    p = kalpana_project
    app = p.write_app("gitapp", {"index.html": "committed"})

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid", *args],
                              cwd=app, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "trunk")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    p.write_deployment("gitapp", web_spec("gitapp"))

    p.run("apply")
    port = host_port(p, "gitapp")
    assert get(p, port) == "committed"
    build = builds(p, "gitapp")[0]
    assert re.fullmatch(r"[0-9a-f]{40}", build["commit_hash"] or ""), build
    assert build["commit_hash"] == head
    assert build["commit_message"] == "first"
    assert build["branch"] == "trunk"
    assert only_container(p, "gitapp").labels[REVISION] == head
    step = plan_steps(p)["gitapp"]
    assert step["action"] == "noop", step

    (app / "index.html").write_text("uncommitted")
    step = plan_steps(p)["gitapp"]
    assert step["action"] == "rebuild", step
    assert "source" in step["reason"], step
    assert step["revision"].startswith(head) and "+dirty" in step["revision"], step

    p.run("apply")
    assert get(p, port) == "uncommitted"
    dirty = builds(p, "gitapp")[0]
    assert dirty["status"] == "SUCCESS"
    assert dirty["commit_hash"] == head
    assert "+dirty" in (dirty["revision"] or ""), dirty

    git("commit", "-q", "-am", "second")
    step = plan_steps(p)["gitapp"]
    assert step["action"] == "rebuild", step
    p.run("apply")
    assert builds(p, "gitapp")[0]["commit_message"] == "second"
    assert builds(p, "gitapp")[0]["commit_hash"] == git("rev-parse", "HEAD")
