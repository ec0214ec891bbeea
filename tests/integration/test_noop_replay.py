"""A repeated no-op `kalpana apply` is replayed from its record, and any change is still seen (issue 12).

Real engine, real CLI processes. Whether a run was replayed is read from ``python -X importtime``:
a replay never imports pydantic (the full apply must, to validate the files).
"""

from __future__ import annotations

import re
import time
from typing import Callable

import pytest

from gitops.noop_replay import SETTLE_SECONDS
from tests.integration.helpers import deploy_web, get, host_port, only_container, web_spec


def _apply(project, *args: str, env: dict[str, str] | None = None) -> tuple[str, str, bool]:
    """(stdout, stderr without the import lines, replayed?) of `kalpana apply *args`."""
    result = project.run("apply", *args, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    modules = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", result.stderr, re.M)}
    assert "gitops" in modules, result.stderr[-2000:]  # importtime did report
    stderr = "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("import time:"))
    return result.stdout, stderr, "pydantic" not in modules


def _settle(project) -> None:
    """Let the last change age past the settle time: younger files are not recorded (a racy mtime)."""
    time.sleep(SETTLE_SECONDS + 0.2)


def _replay_ready(project) -> None:
    """After a change: one full no-op apply records (its inputs settled), and the next one is replayed."""
    _settle(project)
    out, _, replayed = _apply(project)
    assert not replayed and "0 changed, 0 failed" in out, out
    out, _, replayed = _apply(project)
    assert replayed, "a settled no-op apply after a recorded one was not replayed"


def test_a_repeated_noop_apply_is_replayed_with_the_output_of_the_full_one(kalpana_project):
    project = kalpana_project
    deploy_web(project, "web", "v1")
    deploy_web(project, "api", "api")
    _replay_ready(project)
    for args in ((), ("--json",)):
        replay_out, replay_err, replayed = _apply(project, *args)
        full_out, full_err, full = _apply(project, *args, env={"KALPANA_NO_REPLAY": "1"})
        assert replayed and not full
        assert (replay_out, replay_err) == (full_out, full_err)
    assert replay_out.startswith("{") and '"action": "noop"' in replay_out


def _stop_container(project) -> None:
    project.client.api.stop(only_container(project, "web").id, timeout=0)


def _remove_container(project) -> None:
    project.client.api.remove_container(only_container(project, "web").id, force=True)


def _edit_file(project) -> None:
    project.write_deployment("web", web_spec("web", env={"REV": "2"}))


def _edit_source(project) -> None:
    project.write_app("web", {"index.html": "v2"})


def _add_file(project) -> None:
    project.write_app("api", {"index.html": "api"})
    project.write_deployment("api", web_spec("api"))


def _change_settings(project) -> None:
    # Another workspace, named only in kalpana.yaml, whose web/ (the source) serves v2.
    (project.root / "ws2" / "web").mkdir(parents=True)
    (project.root / "ws2" / "web" / "index.html").write_text("v2")
    project.write_config(workspace="ws2")


CHANGES: dict[str, tuple[Callable, str]] = {
    "container stopped": (_stop_container, "OK web start"),
    "container removed": (_remove_container, "OK web start"),  # recreated from its image
    "deployment file edited": (_edit_file, "OK web redeploy"),
    "source file edited": (_edit_source, "OK web rebuild"),
    "deployment file added": (_add_file, "OK api create"),
    "settings changed": (_change_settings, "OK web rebuild"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_after_a_replayed_apply_is_applied(kalpana_project, change):
    project = kalpana_project
    deploy_web(project, "web", "v1")
    _replay_ready(project)
    make, expected = CHANGES[change]
    make(project)
    out, _, replayed = _apply(project)
    assert not replayed, f"{change}: replayed a stale no-op"
    assert expected in out and "1 changed, 0 failed" in out, out
    if change in ("source file edited", "settings changed"):
        assert get(project, host_port(project, "web")) == "v2"


def test_an_apply_that_warns_is_never_replayed(kalpana_project):
    project = kalpana_project
    # A subdomain without a base URL: port mode, and a warning on every apply.
    deploy_web(project, "web", "v1", subdomain="web")
    _settle(project)
    for _ in range(3):
        out, _, replayed = _apply(project)
        assert not replayed
        assert "0 changed, 0 failed, 1 unchanged" in out
        assert "TRAEFIK_BASE_URL" in out, out  # (the warning)
