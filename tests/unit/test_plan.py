"""The plan, table-driven (STYLE 11): desired + observed -> one action and reason per deployment.

The rows live in plan_cases.yaml. Observed containers and images are built the way the
engine sees them: Docker listing dicts carrying the labels the deployer and the builder
really write, read back through the runtime's named constructors.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops import labels as L
from gitops.builder import image_labels
from gitops.deployer import container_labels
from gitops.plan import Action, Plan, make_plan
from gitops.runtime.objects import Container, Image, Observed
from gitops.source import Revision, short_revision
from gitops.spec import Deployment, Desired

INSTANCE = "default"
HERE = "/srv/here/deployments.d"  # the workspace every table row plans from (unless the row sets `workspace`)
REVISIONS = {"A": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
             "B": "d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d"}
BASE_SPEC = {"image": "busybox:1.36", "build_command": "echo build", "start_command": "httpd -f -p 8080",
             "port": 8080, "env": {"GREETING": "hello"}}
CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "plan_cases.yaml").read_text())


def rev(value: str) -> str:
    return REVISIONS.get(value, value)


def make_desired(name: str, overrides: dict | None = None) -> Desired:
    spec = Deployment.model_validate({**BASE_SPEC, "name": name, **(overrides or {})})
    return Desired(spec, f"deployments.d/{name}.yaml", 1, image=spec.image, env=dict(spec.env))


def make_container(name: str, row: dict) -> Container:
    deployed_from = make_desired(name, row.get("spec"))
    build = row.get("build", "b1")
    labels = container_labels(INSTANCE, deployed_from, build_id=build, revision=rev(row.get("revision", "A")),
                              host_port=row.get("host_port"), workspace=row.get("workspace"),
                              rolled_back_from=row.get("rolled_back_from"))
    if row.get("legacy"):
        del labels[L.FIELD_HASHES]
    if row.get("legacy") or row.get("no_healthcheck_label"):
        del labels[L.HEALTHCHECK_HASH]
    return Container.from_ps({
        "Id": f"c0ffee-{name}", "Names": [f"/{L.container_name(INSTANCE, name)}"],
        "State": row.get("state", "running"), "Status": row.get("status", "Up 5 minutes"),
        "Image": L.image_tag(INSTANCE, name, build), "Labels": labels, "Created": 1_700_000_000, "Ports": [],
    })


def make_image(name: str, row: dict) -> Image:
    built_from = make_desired(name, row.get("spec"))
    build = row.get("build", "b1")
    labels = image_labels(INSTANCE, built_from, Revision(rev(row.get("revision", "A"))), build)
    return Image.from_list({"Id": f"sha256:{name}-{build}", "RepoTags": [L.image_tag(INSTANCE, name, build)],
                            "Labels": labels, "Created": row.get("created", 1_700_000_000)})


def plan_for(case: dict) -> Plan:
    desired = {name: make_desired(name, overrides) for name, overrides in (case.get("desired") or {}).items()}
    revisions = {name: "A" for name in desired}
    revisions.update(case.get("revisions") or {})
    containers = [make_container(n, row or {}) for n, row in (case.get("containers") or {}).items()]
    images = [make_image(n, row or {}) for n, rows in (case.get("images") or {}).items() for row in rows]
    kwargs: dict[str, Any] = {}
    if "stopped" in case:
        kwargs["stopped"] = set(case["stopped"])
    if "prune" in case:
        kwargs["prune"] = case["prune"]
    if "prune_note" in case:
        kwargs["prune_note"] = case["prune_note"]
    if "only" in case:
        kwargs["only"] = set(case["only"])
    if "broken" in case:
        kwargs["broken"] = set(case["broken"])
    if "take_over" in case:
        kwargs["take_over"] = case["take_over"]
    kwargs["workspace"] = case.get("workspace", HERE)
    return make_plan(desired, {n: rev(r) for n, r in revisions.items()}, Observed.from_lists(containers, images),
                     **kwargs)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_plan_table(case: dict) -> None:
    plan = plan_for(case)
    expect = case["expect"]
    got = {step.name: step for step in plan.steps}
    assert {n: s.action.value for n, s in got.items()} == {n: e["action"] for n, e in expect.items()}
    for name, e in expect.items():
        assert e["reason"] in got[name].reason, f"{name}: {got[name].reason!r}"
        if "image" in e:
            assert got[name].image is not None and got[name].image.tag == e["image"]
        if "has_container" in e:
            assert (got[name].container is not None) is e["has_container"], got[name]
    if "expect_prune" in case:
        assert plan.prune is case["expect_prune"]


def test_table_ids_are_unique() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))


# --- purity ---------------------------------------------------------------------------------------------

@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch):
    """Any file, process or network access raises while this is active."""
    def forbidden(*args, **kwargs):
        raise AssertionError(f"make_plan did I/O: {args!r}")

    with monkeypatch.context() as patch:
        for target, name in [(builtins, "open"), (io, "open"), (os, "open"), (os, "stat"), (os, "lstat"),
                             (os, "listdir"), (os, "scandir"), (os, "walk"), (os, "system"),
                             (subprocess, "Popen"), (socket, "socket"), (socket, "create_connection"),
                             (Path, "read_text"), (Path, "exists"), (Path, "is_file"), (Path, "is_dir")]:
            patch.setattr(target, name, forbidden)
        yield


def test_make_plan_does_no_io(no_io) -> None:
    # The whole body runs under the guard: building specs and wrapping listing dicts needs no I/O either.
    for case in CASES:
        desired = {n: make_desired(n, o) for n, o in (case.get("desired") or {}).items()}
        observed = Observed.from_lists([make_container(n, r or {}) for n, r in (case.get("containers") or {}).items()],
                                       [make_image(n, r) for n, rows in (case.get("images") or {}).items() for r in rows])
        make_plan(desired, {n: REVISIONS["A"] for n in desired}, observed, stopped=set(case.get("stopped") or []))


def test_make_plan_does_not_mutate_its_inputs() -> None:
    desired = {"api": make_desired("api", {"env": {"GREETING": "bye"}})}
    observed = Observed.from_lists([make_container("api", {}), make_container("old", {})], [make_image("api", {})])
    before = (dict(desired), dict(observed.containers), {k: list(v) for k, v in observed.images.items()})
    make_plan(desired, {"api": REVISIONS["A"]}, observed)
    assert (dict(desired), dict(observed.containers), {k: list(v) for k, v in observed.images.items()}) == before


# --- the plan as a value ---------------------------------------------------------------------------------

def test_plan_to_dict_is_json_with_snake_case_keys() -> None:
    desired = {"api": make_desired("api"), "web": make_desired("web")}
    observed = Observed.from_lists([make_container("api", {}), make_container("old", {})], [])
    plan = make_plan(desired, {"api": REVISIONS["A"], "web": REVISIONS["A"]}, observed)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["pending"] == 2
    assert data["prune"] is True
    steps = {s["name"]: s for s in data["steps"]}
    assert {n: (s["action"], s["reason"]) for n, s in steps.items()} == {
        "api": ("noop", "up to date"),
        "old": ("remove", "no deployment file declares it"),
        "web": ("create", "not deployed yet"),
    }
    assert steps["api"]["file"] == "deployments.d/api.yaml"
    assert steps["api"]["container"] == "api"
    assert steps["api"]["image"] == "kalpana/api:b1"
    for step in data["steps"]:
        assert all(key == key.lower() and "-" not in key for key in step)


def test_plan_changes_lists_only_changing_steps() -> None:
    desired = {"api": make_desired("api"), "web": make_desired("web")}
    observed = Observed.from_lists([make_container("api", {})], [])
    plan = make_plan(desired, {"api": REVISIONS["A"], "web": REVISIONS["A"]}, observed)
    assert [(s.name, s.action) for s in plan.changes] == [("web", Action.CREATE)]
    assert [s.changes for s in plan.steps] == [False, True]


def test_plan_steps_are_sorted_desired_first_then_orphans() -> None:
    desired = {"zeta": make_desired("zeta"), "alpha": make_desired("alpha")}
    observed = Observed.from_lists([make_container("orphan-b", {}), make_container("orphan-a", {})], [])
    plan = make_plan(desired, {}, observed)
    assert [s.name for s in plan.steps] == ["alpha", "zeta", "orphan-a", "orphan-b"]


def test_redeploy_reason_lists_every_changed_runtime_field() -> None:
    desired = {"api": make_desired("api", {"start_command": "httpd -f -v -p 9090", "port": 9090})}
    observed = Observed.from_lists([make_container("api", {})], [])
    step = make_plan(desired, {"api": REVISIONS["A"]}, observed).steps[0]
    assert step.action is Action.REDEPLOY
    assert step.reason == "start_command changed, port changed"


@pytest.mark.parametrize(("stored", "shown"), [
    ("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", "a1b2c3d"),
    ("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678+dirty.0123456789", "a1b2c3d+dirty"),
    ("content:0123456789abcdef", "content:0123456"),
    ("", "none"),
])
def test_short_revision(stored: str, shown: str) -> None:
    assert short_revision(stored) == shown


def test_remove_step_of_a_deployment_with_only_images() -> None:
    # Its builds failed after their images were made (or its container was removed by hand), then its
    # file was deleted: the step acts on no container, and the engine removes its images.
    observed = Observed.from_lists([], [make_image("failed", {"build": "f2", "created": 1_700_000_200}),
                                        make_image("failed", {"build": "f1", "created": 1_700_000_100})])
    plan = make_plan({}, {}, observed)
    [step] = plan.steps
    assert (step.action, step.container, step.image) == (Action.REMOVE, None, None)
    assert step.changes and plan.changes == [step]
    assert json.loads(json.dumps(step.to_dict())) == {
        "name": "failed", "action": "remove", "reason": "2 images left, no container; no deployment file declares it",
        "file": None, "container": None, "image": None, "revision": None}


def test_images_without_a_deployment_label_are_never_planned() -> None:
    unlabelled = Image.from_list({"Id": "sha256:x", "RepoTags": ["kalpana/default/x:1"],
                                  "Labels": {L.INSTANCE: INSTANCE}, "Created": 1})
    assert make_plan({}, {}, Observed.from_lists([], [unlabelled])).steps == []
