"""A rollback is visible (issue 9, point 8): status and plan say the container serves an older build
than the files declare, and `apply --force` (or a new change) returns to the files and ends the note."""

from __future__ import annotations

from .helpers import deploy_two_versions, deploy_web, get, host_port, plan_steps, status_row


def test_rollback_is_noted_until_apply_force_returns_to_the_files(kalpana_project):
    p = kalpana_project
    port, v1, v2 = deploy_two_versions(p, "rolled")
    assert status_row(p, "rolled")["rolled_back_to"] is None

    p.run("rollback", "rolled")
    assert get(p, port) == "v1"

    row = status_row(p, "rolled")
    assert row["rolled_back_to"] == v1["id"], row
    assert row["detail"] == (f"rolled back to build {v1['id']}; files declare {v2['id']}; "
                             "`apply --force` or a new commit returns to the files"), row
    step = plan_steps(p)["rolled"]
    assert step["action"] == "noop", step
    assert step["reason"] == row["detail"], step
    table = p.run("status").stdout
    assert f"rolled back to build {v1['id']}" in table, table

    # A plain apply keeps the rollback (the operator chose it) and keeps saying so.
    p.run("apply")
    assert get(p, port) == "v1"
    assert status_row(p, "rolled")["rolled_back_to"] == v1["id"]

    p.run("apply", "--force")
    assert get(p, host_port(p, "rolled")) == "v2"
    row = status_row(p, "rolled")
    assert row["rolled_back_to"] is None and "rolled back" not in row["detail"], row
    step = plan_steps(p)["rolled"]
    assert (step["action"], step["reason"]) == ("noop", "up to date"), step


def test_a_new_change_after_a_rollback_ends_the_note(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "rolled", "v1")
    p.write_app("rolled", {"index.html": "v2"})
    p.run("apply")
    p.run("rollback", "rolled")
    assert get(p, port) == "v1"
    assert status_row(p, "rolled")["rolled_back_to"] is not None

    p.write_app("rolled", {"index.html": "v3"})
    step = plan_steps(p)["rolled"]
    assert step["action"] == "rebuild" and step["reason"].startswith("source content:"), step
    p.run("apply")
    assert get(p, host_port(p, "rolled")) == "v3"
    row = status_row(p, "rolled")
    assert row["rolled_back_to"] is None and "rolled back" not in row["detail"], row
