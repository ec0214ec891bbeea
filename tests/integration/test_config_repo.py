"""The deployment files live in a git repository (`repo:` in kalpana.yaml): `kalpana sync`.

A real bare repository is the remote; apps are local sources inside that
repository (a monorepo), so a push that changes one app rebuilds only it.
"""

from __future__ import annotations

import yaml

from integration.daemon_helpers import GitRemote, git
from integration.helpers import builds, containers, get, host_port, plan_steps, web_spec


def test_sync_follows_the_config_repository_and_rebuilds_only_what_changed(kalpana_project, tmp_path):
    p = kalpana_project
    remote = GitRemote(tmp_path / "config")
    remote.commit_and_push({
        "deploy/a.yaml": yaml.safe_dump(web_spec("app-a", source="apps/a")),
        "deploy/b.yaml": yaml.safe_dump(web_spec("app-b", source="apps/b")),
        "apps/a/index.html": "a1",
        "apps/b/index.html": "b1",
    }, "first")
    # Local sources are paths inside the config repository's checkout.
    p.write_config(repo={"url": remote.url, "path": "deploy"}, workspace=str(p.state_dir / "config-repo"))

    p.run("sync")
    port_a, port_b = host_port(p, "app-a"), host_port(p, "app-b")
    assert get(p, port_a) == "a1" and get(p, port_b) == "b1"
    b_builds = len(builds(p, "app-b"))

    sha = remote.commit_and_push({"apps/a/index.html": "a2"}, "change app a only")
    # plan never fetches: nothing pending until a sync brings the commit in.
    assert {s["action"] for s in plan_steps(p).values()} == {"noop"}

    p.run("sync")
    assert get(p, port_a) == "a2"
    newest = builds(p, "app-a")[0]
    assert newest["status"] == "SUCCESS" and newest["commit_hash"] == sha
    assert newest["commit_message"] == "change app a only" and newest["branch"] == "main"
    assert len(builds(p, "app-b")) == b_builds, "app b did not change: a monorepo push must not rebuild it"
    assert get(p, port_b) == "b1"

    # A deployment file removed in the repository is pruned on the next sync.
    git("rm", "--quiet", "deploy/b.yaml", cwd=remote.work)
    git("commit", "--quiet", "-m", "retire app b", cwd=remote.work)
    remote.push()
    p.run("sync")
    assert containers(p, "app-b") == []
    assert get(p, port_a) == "a2"


def test_a_failed_fetch_keeps_the_last_good_checkout(kalpana_project, tmp_path):
    p = kalpana_project
    remote = GitRemote(tmp_path / "config")
    remote.commit_and_push({"deploy/a.yaml": yaml.safe_dump(web_spec("app-a", source="apps/a")),
                            "apps/a/index.html": "a1"}, "first")
    p.write_config(repo={"url": remote.url, "path": "deploy"}, workspace=str(p.state_dir / "config-repo"))
    p.run("sync")
    port = host_port(p, "app-a")

    remote.bare.rename(remote.bare.with_name("moved.git"))  # the remote is unreachable now
    result = p.run("sync", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "last good checkout" in result.stdout + result.stderr
    assert get(p, port) == "a1"
    assert (p.state_dir / "config-repo" / "apps" / "a" / "index.html").read_text() == "a1"
