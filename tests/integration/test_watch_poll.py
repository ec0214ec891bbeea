"""`kalpana watch` without webhooks: polling finds new commits of git sources with auto_rebuild."""

from __future__ import annotations

from .daemon_helpers import GitRemote, git_site_spec, start_daemon, wait_serving
from .helpers import builds, host_port

__all__ = ["start_daemon"]  # the fixture, imported so pytest finds it here


def test_polling_deploys_a_pushed_commit_and_leaves_auto_rebuild_false_alone(kalpana_project, start_daemon, tmp_path):
    p = kalpana_project
    remote = GitRemote(tmp_path / "git")
    remote.commit_and_push({"app/index.html": "v1"}, "first")
    p.write_deployment("polled", git_site_spec("polled", remote))
    p.write_deployment("manual", git_site_spec("manual", remote, auto_rebuild=False))
    p.run("apply")
    polled, manual = host_port(p, "polled"), host_port(p, "manual")
    daemon = start_daemon(serve=False, poll_interval=1)

    mark = daemon.mark()
    sha = remote.commit_and_push({"app/index.html": "v2"}, "second")
    daemon.wait_for(lambda e: e.get("event") == "trigger" and "poll" in e.get("message", ""), after=mark,
                    what="a poll trigger")
    wait_serving(polled, "v2", timeout=120)
    daemon.wait_idle()
    newest = builds(p, "polled")[0]
    assert newest["status"] == "SUCCESS" and newest["commit_hash"] == sha, newest
    assert newest["triggered_by"] == "auto", newest
    wait_serving(manual, "v1", timeout=5)
    assert [b["commit_hash"] for b in builds(p, "manual")] != [] and builds(p, "manual")[0]["commit_hash"] != sha
