"""`kalpana status` on a build whose process is gone: shown as interrupted, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fake_runtime import FakeRuntime

from gitops import status
from gitops.build import BuildStatus, Trigger
from gitops.history import History
from gitops.loader import LoadResult, load_directory

INSTANCE = "t-status"


def declared(root: Path) -> LoadResult:
    """deployments.d with one deployment, web."""
    directory = root / "deployments.d"
    directory.mkdir()
    (directory / "web.yaml").write_text("name: web\nimage: busybox\nstart_command: sleep 1000\n")
    load = load_directory(directory, workspace=root)
    assert load.ok and list(load.desired) == ["web"], load.errors
    return load


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_building_record_whose_process_is_gone_shows_as_interrupted(tmp_path: Path):
    history = History(tmp_path / "state")
    build = history.new_build("web", Trigger.MANUAL, "deploy", status=BuildStatus.BUILDING)
    pid = dead_pid()
    history.update(build.id, pid=pid)
    database = next((tmp_path / "state").glob("*.json"))
    stored = database.read_bytes()
    runtime = FakeRuntime(allow=["observe"])

    [row] = status.report(declared(tmp_path), runtime, history, INSTANCE)

    assert row.state is status.State.FAILED, row
    assert row.last_build_status == "FAILED", row
    assert f"build {build.id} was interrupted" in row.detail and f"pid {pid}" in row.detail, row.detail
    assert "`kalpana apply` repairs it" in row.detail, row.detail
    assert database.read_bytes() == stored, "status must only read"
    assert history.get(build.id).status is BuildStatus.BUILDING
    runtime.assert_no_violations()


def test_a_building_record_whose_process_lives_shows_as_building(tmp_path: Path):
    history = History(tmp_path / "state")
    build = history.new_build("web", Trigger.MANUAL, "deploy", status=BuildStatus.BUILDING)
    # A record with this very pid counts as orphaned (nobody else writes with it): another live process's pid.
    history.update(build.id, pid=os.getppid())
    runtime = FakeRuntime(allow=["observe"])

    [row] = status.report(declared(tmp_path), runtime, history, INSTANCE)

    assert row.state is status.State.BUILDING, row
    assert "interrupted" not in row.detail


def test_while_a_new_build_runs_the_serving_container_keeps_its_url(tmp_path: Path):
    from gitops import labels as L

    history = History(tmp_path / "state")
    build = history.new_build("web", Trigger.MANUAL, "deploy", status=BuildStatus.BUILDING)
    history.update(build.id, pid=os.getppid())
    runtime = FakeRuntime(allow=["observe", "started_at"])
    runtime.add_container(L.container_name(INSTANCE, "web"), L.image_tag(INSTANCE, "web", "20250614-153012-a1b2"),
                          {**L.base_labels(INSTANCE, "web"), L.BUILD_ID: "20250614-153012-a1b2",
                           L.HOST_PORT: "24802"}, port=8080, host_port=24802)

    [row] = status.report(declared(tmp_path), runtime, history, INSTANCE)

    assert row.state is status.State.BUILDING, row
    assert row.url is not None and row.url.endswith(":24802"), row
