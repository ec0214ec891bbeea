"""`kalpana watch` and local sources: save a file of an app's source directory and the new content is served.

Only the deployment whose source holds the file is rebuilt; edits under node_modules/ or .git/ trigger
nothing; a deployment added while the daemon runs has its source watched from then on.
"""

from __future__ import annotations

from .daemon_helpers import start_daemon, wait_serving
from .helpers import builds, deploy_web, host_port, web_spec

__all__ = ["start_daemon"]  # the fixture, imported so pytest finds it here


def _source_triggers(daemon, mark: int) -> list[str]:
    return [e["message"] for e in daemon.since(mark, "trigger") if "source change" in e.get("message", "")]


def test_a_saved_source_file_is_served_and_rebuilds_only_its_deployment(kalpana_project, start_daemon):
    p = kalpana_project
    port = deploy_web(p, "hello", "v1")
    other_port = deploy_web(p, "other", "other v1")
    hello_builds, other_builds = len(builds(p, "hello")), len(builds(p, "other"))
    daemon = start_daemon(serve=False)

    mark = daemon.mark()
    (p.root / "hello" / "index.html").write_text("v2")
    wait_serving(port, "v2", timeout=120)
    daemon.wait_idle()
    assert any("hello" in m and "index.html" in m for m in _source_triggers(daemon, mark)), daemon.log_tail()
    records = builds(p, "hello")
    assert len(records) == hello_builds + 1, records[0]
    assert (records[0]["action"], records[0]["status"], records[0]["triggered_by"]) == ("rebuild", "SUCCESS", "auto")
    assert len(builds(p, "other")) == other_builds, "a save in hello/ rebuilt other"

    # Churn under node_modules/ and .git/ of hello first, then a real edit of other: the watcher reports
    # changes in order, so had the first ones counted, a trigger for hello would come before (or with)
    # the one for other.
    mark = daemon.mark()
    p.write_app("hello", {"node_modules/left-pad/index.js": "module.exports = 1\n",
                          ".git/HEAD": "ref: refs/heads/main\n", ".git/objects/ab/cdef": "x"})
    (p.root / "other" / "index.html").write_text("other v2")
    wait_serving(other_port, "other v2", timeout=120)
    daemon.wait_idle()
    triggers = _source_triggers(daemon, mark)
    assert triggers and all("hello" not in m for m in triggers), triggers
    assert len(builds(p, "hello")) == hello_builds + 1, "an edit under node_modules/ or .git/ rebuilt hello"
    assert len(builds(p, "other")) == other_builds + 1


def test_a_deployment_added_while_watching_has_its_source_watched(kalpana_project, start_daemon):
    p = kalpana_project
    daemon = start_daemon(serve=False)

    p.write_app("late", {"index.html": "late v1"})
    mark = daemon.mark()
    p.write_deployment("late", web_spec("late"))
    daemon.wait_event("job_done", after=mark, timeout=120)
    daemon.wait_idle()
    port = host_port(p, "late")
    wait_serving(port, "late v1", timeout=30)

    mark = daemon.mark()
    (p.root / "late" / "index.html").write_text("late v2")
    wait_serving(port, "late v2", timeout=120)
    daemon.wait_idle()
    assert any("late" in m for m in _source_triggers(daemon, mark)), daemon.log_tail()
    assert builds(p, "late")[0]["action"] == "rebuild"
