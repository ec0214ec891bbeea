"""Two workspaces on one instance (issue 9, point 4): each container records the workspace that
manages it; neither prunes the other's deployments, and declaring the other's deployment is refused
until `apply --take-over`."""

from __future__ import annotations

import pytest

from gitops.labels import WORKSPACE

from .helpers import deploy_web, get, host_port, only_container, output, plan_steps, web_spec


@pytest.fixture
def second_workspace(kalpana_project, tmp_path):
    """Another directory with its own files and state, on the same instance as ``kalpana_project``."""
    p = kalpana_project
    # The fixture's class (conftest's KalpanaProject): the instance's cleanup covers both workspaces.
    return type(p)(tmp_path / "second", p.instance, p.client, p.image)


def test_two_workspaces_on_one_instance_never_prune_each_other(kalpana_project, second_workspace):
    a, b = kalpana_project, second_workspace
    a_path, b_path = str(a.deployments_dir.resolve()), str(b.deployments_dir.resolve())
    a_port = deploy_web(a, "alpha", "from a")
    alpha = only_container(a, "alpha")
    assert alpha.labels[WORKSPACE] == a_path

    # B declares only beta: alpha is A's, shown as foreign, and survives B's apply.
    b.write_app("beta", {"index.html": "from b"})
    b.write_deployment("beta", web_spec("beta"))
    step = plan_steps(b)["alpha"]
    assert step["action"] == "foreign", step
    assert a_path in step["reason"] and b_path in step["reason"] and "instance" in step["reason"], step
    table = b.run("plan").stdout
    assert "foreign" in table and a_path in table, table
    b.run("apply")
    assert only_container(a, "alpha").id == alpha.id
    assert get(a, a_port) == "from a"
    assert get(b, host_port(b, "beta")) == "from b"
    assert only_container(b, "beta").labels[WORKSPACE] == b_path

    # And the other way round: A's apply leaves beta alone.
    assert plan_steps(a)["beta"]["action"] == "foreign"
    a.run("apply")
    assert get(b, host_port(b, "beta")) == "from b"
    row = [r for r in b.run_json("status")["deployments"] if r["name"] == "alpha"][0]
    assert row["detail"] == f"managed from {a_path}", row

    # B declaring A's alpha is refused, naming both paths and the way out; alpha is untouched.
    b.write_app("alpha", {"index.html": "from b"})
    b.write_deployment("alpha", web_spec("alpha"))
    refused = b.run("apply", check=False)
    text = output(refused)
    assert refused.returncode == 1, text
    assert a_path in text and b_path in text and "--take-over" in text, text
    assert only_container(a, "alpha").id == alpha.id
    assert get(a, a_port) == "from a"

    # With --take-over it goes ahead: B's version serves, and the label says B manages it now.
    b.run("apply", "--take-over")
    taken = only_container(b, "alpha")
    assert taken.id != alpha.id
    assert taken.labels[WORKSPACE] == b_path
    assert get(b, host_port(b, "alpha")) == "from b"
    step = plan_steps(b)["alpha"]
    assert (step["action"], step["reason"]) == ("noop", "up to date"), step
    # Now A is the one that sees it as foreign (and would be refused in turn).
    step = plan_steps(a)["alpha"]
    assert step["action"] == "foreign" and b_path in step["reason"], step
