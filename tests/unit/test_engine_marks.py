"""What the engine writes on containers beyond the desired state, and what it refuses because of it
(issue 9, points 4 and 8): the workspace managing a container, and the mark of a rollback.

The same fake runtime, project and fixtures as test_engine.py; the real flows run against Docker in
tests/integration/test_workspaces.py and test_rollback_note.py.
"""

from __future__ import annotations

import pytest
from fake_runtime import BUILD, DEPLOY
from test_engine import INSTANCE, NAME, Project, project, runtime  # noqa: F401 - fixtures used by name

from gitops import labels as L
from gitops.errors import KalpanaError
from gitops.events import StepFailed
from gitops.plan import Action

OTHER = "/srv/other/deployments.d"


def workspace_of(project: Project) -> str:
    return str(project.settings.deployments_path)


def test_containers_carry_the_workspace_that_manages_them(project, runtime):
    project.deployed()
    assert runtime.by_name(NAME).labels[L.WORKSPACE] == workspace_of(project)


def hand_over(runtime, to: str) -> None:
    """Make the deployed container look managed from another workspace (labels can't change in Docker)."""
    runtime.by_name(NAME).labels[L.WORKSPACE] = to


def test_a_deployment_another_workspace_manages_is_refused_and_left_alone(project, runtime):
    project.deployed()
    hand_over(runtime, OTHER)
    before = {c.id: dict(c.labels) for c in runtime.containers.values()}
    project.write(env={"API_TOKEN": "changed"})
    runtime.allow("observe")  # no build, create, stop or remove

    result = project.engine.apply()

    assert not result.ok
    [outcome] = result.outcomes
    assert outcome.step.action is Action.FOREIGN and not outcome.ok
    assert OTHER in outcome.error and workspace_of(project) in outcome.error and "--take-over" in outcome.error
    assert [e.message for e in project.events if isinstance(e, StepFailed)] == [outcome.error]
    assert {c.id: dict(c.labels) for c in runtime.containers.values()} == before
    assert project.engine.builds("web")[0].action == "create", "no record for what was refused"


def test_take_over_redeploys_with_this_workspaces_label(project, runtime):
    first = project.deployed()
    hand_over(runtime, OTHER)
    old = runtime.by_name(NAME)
    runtime.allow("observe", *DEPLOY)  # the same image again: no build

    result = project.engine.apply(take_over=True)

    assert result.ok, result.to_dict()
    [outcome] = result.outcomes
    assert (outcome.step.action, outcome.step.reason) == (Action.REDEPLOY, f"taking over from {OTHER}")
    new = runtime.by_name(NAME)
    assert new.id != old.id and new.image == first.image
    assert new.labels[L.WORKSPACE] == workspace_of(project)
    plan, _ = project.engine.plan()
    assert [(s.action, s.reason) for s in plan.steps] == [(Action.NOOP, "up to date")]


def test_another_workspaces_container_is_never_pruned(project, runtime):
    project.deployed()
    hand_over(runtime, OTHER)
    (project.settings.deployments_path / "web.yaml").unlink()
    runtime.allow("observe", "started_at")

    result = project.engine.apply()

    assert result.ok and result.outcomes == []
    [step] = result.plan.steps
    assert step.action is Action.FOREIGN and OTHER in step.reason
    assert runtime.by_name(NAME) is not None
    [row] = project.engine.status()
    assert row.detail == f"managed from {OTHER}"


@pytest.mark.parametrize("command", ["stop", "rollback"])
def test_stop_and_rollback_refuse_another_workspaces_container(project, runtime, command):
    project.deployed()
    hand_over(runtime, OTHER)
    runtime.allow("observe", "load_sdk")

    with pytest.raises(KalpanaError, match="--take-over") as raised:
        getattr(project.engine, command)("web")

    assert OTHER in str(raised.value) and runtime.by_name(NAME).state == "running"
    assert project.engine.history.stopped() == set()


def deployed_twice(project: Project, runtime) -> tuple:
    """A first build, then a second one (a build_command change): both images kept for rollback."""
    first = project.deployed()
    project.write(build_command="echo building v2")
    runtime.allow("observe", "remove_image", "image_exists", "started_at", *BUILD, *DEPLOY)
    result = project.engine.apply()
    assert result.ok, result.to_dict()
    return first, result.outcomes[0].build


def test_a_rollback_marks_its_container_until_apply_force(project, runtime):
    first, second = deployed_twice(project, runtime)

    back = project.engine.rollback("web")

    container = runtime.by_name(NAME)
    assert container.image == first.image and back.action == "rollback"
    assert container.labels[L.ROLLED_BACK_FROM] == second.id
    note = (f"rolled back to build {first.id}; files declare {second.id}; "
            "`apply --force` or a new commit returns to the files")
    plan, _ = project.engine.plan()
    assert [(s.action, s.reason) for s in plan.steps] == [(Action.NOOP, note)]
    [row] = project.engine.status()
    assert (row.detail, row.rolled_back_to, row.to_dict()["rolled_back_to"]) == (note, first.id, first.id)

    # A runtime change reuses the rolled-back image: the mark stays with it.
    project.write(build_command="echo building v2", start_command="httpd -f -v -p 8080 -h /workspace")
    result = project.engine.apply()
    assert [o.step.action for o in result.outcomes] == [Action.REDEPLOY]
    container = runtime.by_name(NAME)
    assert container.image == first.image and container.labels[L.ROLLED_BACK_FROM] == second.id

    result = project.engine.apply(force=True)

    assert result.ok and [o.step.action for o in result.outcomes] == [Action.REBUILD]
    container = runtime.by_name(NAME)
    assert L.ROLLED_BACK_FROM not in container.labels
    assert container.image == result.outcomes[0].build.image
    [row] = project.engine.status()
    assert (row.detail, row.rolled_back_to) == ("", None)


def test_rolling_back_onto_the_files_build_ends_the_mark(project, runtime):
    first, second = deployed_twice(project, runtime)
    project.engine.rollback("web")

    project.engine.rollback("web", to=second.id)

    container = runtime.by_name(NAME)
    assert container.image == second.image and L.ROLLED_BACK_FROM not in container.labels
    plan, _ = project.engine.plan()
    assert [(s.action, s.reason) for s in plan.steps] == [(Action.NOOP, "up to date")]


def test_apply_force_leaves_a_deployment_the_operator_stopped_stopped(project, runtime):
    project.deployed()
    runtime.allow("observe", "stop", "load_sdk")
    project.engine.stop("web")
    warnings = []
    project.engine.events.subscribe(lambda e: warnings.append(e.message) if type(e).__name__ == "Warned" else None)
    runtime.allow("observe", "load_sdk")  # a build, create or start would be rejected

    result = project.engine.apply(force=True)

    assert result.ok and result.outcomes == []
    assert runtime.by_name(NAME).state != "running"
    assert any("--force leaves it stopped" in w for w in warnings), warnings
