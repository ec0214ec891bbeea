"""Bounded growth (issue 8, points 10-12) against a real engine, through the CLI.

Build records and their logs stay within ``keep_builds`` per deployment (but
never lose the build a container runs or a kept image came from), one noisy
build's stored log stays within ``max_log_bytes``, and pruning a deployment
that left only images (its deploys failed) removes those images.
"""

from __future__ import annotations

from pathlib import Path

from gitops.config import load_settings
from gitops.engine import Engine
from gitops.errors import KalpanaError
from gitops.events import Event, Events, Warned
from gitops.history import History
from gitops.runtime.docker_runtime import DockerRuntime

from .helpers import builds, deploy_web, image_tags, output, plan_steps, status_row, web_spec

CUT_MARKER = "bytes of output cut here"


def _log_files(p) -> set[str]:
    return {path.name for path in (p.state_dir / "logs").iterdir()}


def test_history_keeps_keep_builds_per_deployment_but_never_what_serves(kalpana_project):
    p = kalpana_project
    p.write_config(keep_builds=2, keep_images=2)
    deploy_web(p, "steady", "v1")
    serving = builds(p, "steady")[0]
    assert serving["status"] == "SUCCESS"

    # Three failed rebuilds: each is a newer record; the container keeps running build `serving`.
    p.write_deployment("steady", web_spec("steady", build_command="echo failing on purpose; exit 3"))
    orphan = p.state_dir / "logs" / "20200101-000000-dead.log"
    for attempt in range(3):
        if attempt == 2:
            orphan.write_text("a log whose record is gone\n")
        failed = p.run("apply", check=False)
        assert failed.returncode != 0, output(failed)

    records = builds(p, "steady")
    assert [r["status"] for r in records] == ["FAILED", "FAILED", "SUCCESS"], records
    # The newest two (keep_builds), plus the one the running container and the kept image name.
    assert records[-1]["id"] == serving["id"]
    assert _log_files(p) == {f"{r['id']}.log" for r in records}, "dropped records take their logs along"
    assert not orphan.exists(), "a log without a record is removed"

    row = status_row(p, "steady")
    assert row["state"] == "running" and row["build_id"] == serving["id"]
    assert row["last_build_status"] == "FAILED"
    assert "exit" in p.run("logs", "steady").stdout  # the newest kept build's log reads back


def test_a_noisy_build_stores_head_marker_and_tail_within_max_log_bytes(kalpana_project):
    p = kalpana_project
    p.write_config(max_log_bytes=10_000)
    # About 170 kB of build output, 17 times the cap.
    deploy_web(p, "noisy", "v1", build_command="seq 100001 130000")
    build = builds(p, "noisy")[0]
    assert build["status"] == "SUCCESS"

    stored = p.state_dir / "logs" / f"{build['id']}.log"
    assert stored.stat().st_size <= 10_000
    assert _log_files(p) == {stored.name}, "the side file is spliced in when the build finishes"

    log = p.run("logs", "noisy").stdout
    head, marker, tail = log.partition(CUT_MARKER)
    assert marker, log[:500]
    assert "==> building" in head and "100001" in head
    assert "130000" in tail, "the end of the build output is kept"
    assert "==> deploying" in tail and "healthy" in tail


def test_pruning_a_deployment_that_left_only_images_removes_them(kalpana_project):
    p = kalpana_project
    # Builds fine, never gets healthy: every deploy fails and leaves its image, but no container.
    p.write_app("flaky", {"index.html": "never served"})
    p.write_deployment("flaky", web_spec("flaky", start_command="exit 1"))
    first = p.run("apply", check=False)
    assert first.returncode != 0, output(first)
    second = p.run("deploy", "flaky", check=False)  # a forced rebuild: a second image
    assert second.returncode != 0, output(second)
    assert p.container("flaky") is None
    assert len(image_tags(p, "flaky")) == 2
    assert [r["status"] for r in builds(p, "flaky")] == ["FAILED", "FAILED"]

    p.remove_deployment("flaky")
    step = plan_steps(p)["flaky"]
    assert step["action"] == "remove", step
    assert step["container"] is None and "2 images left" in step["reason"], step

    p.run("apply")
    assert image_tags(p, "flaky") == set()
    assert "flaky" not in plan_steps(p), "nothing of it is left to plan"


class _BrokenPrune(History):
    def prune(self, keep, protect=frozenset()):
        raise KalpanaError("the disk is on fire")


def test_a_failed_history_prune_is_a_warning_not_a_failed_apply(kalpana_project):
    p = kalpana_project
    p.write_app("calm", {"index.html": "v1"})
    p.write_deployment("calm", web_spec("calm"))
    settings = load_settings(p.config_path, environ={})
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    engine = Engine(settings, DockerRuntime.connect(settings.docker_host),
                    _BrokenPrune(Path(settings.state_path)), events)

    result = engine.apply()

    assert result.ok, result.to_dict()
    assert [o.step.action.value for o in result.outcomes] == ["create"]
    warnings = [e.message for e in seen if isinstance(e, Warned)]
    assert any("could not prune the build history" in w and "the disk is on fire" in w for w in warnings), warnings
    assert status_row(p, "calm")["state"] == "running"
