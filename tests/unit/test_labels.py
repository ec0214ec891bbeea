"""Label keys and naming: what Kalpana writes onto Docker objects, and how it finds them again.

These strings are a contract with every running installation: changing one orphans the
containers and images of every user, so the spellings are pinned here.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gitops import labels as L
from gitops.builder import image_labels
from gitops.deployer import container_labels
from gitops.runtime.objects import Container, Image, Observed
from gitops.source import Revision
from gitops.spec import Deployment, Desired

SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def make_desired(name: str = "api") -> Desired:
    spec = Deployment.model_validate({"name": name, "image": "busybox:1.36", "start_command": "httpd -f -p 8080",
                                      "port": 8080, "env": {"A": "1"}})
    return Desired(spec, f"deployments.d/{name}.yaml", 1, image=spec.image, env=dict(spec.env))


def test_label_keys_are_pinned() -> None:
    assert (L.MANAGED_BY, L.MANAGED_BY_VALUE) == ("dev.kalpana.managed-by", "kalpana")
    assert L.INSTANCE == "dev.kalpana.instance"
    assert L.DEPLOYMENT == "dev.kalpana.deployment"
    assert L.BUILD_HASH == "dev.kalpana.build-hash"
    assert L.RUNTIME_HASH == "dev.kalpana.runtime-hash"
    assert L.FIELD_HASHES == "dev.kalpana.field-hashes"
    assert L.REVISION == "dev.kalpana.revision"
    assert L.BUILD_ID == "dev.kalpana.build-id"
    assert L.HOST_PORT == "dev.kalpana.host-port"


def test_every_label_key_has_the_prefix() -> None:
    keys = [v for k, v in vars(L).items() if k.isupper() and isinstance(v, str) and v.startswith(L.PREFIX + ".")]
    assert len(keys) == len(set(keys)) >= 9


@pytest.mark.parametrize(("instance", "container", "retired", "repository", "tag"), [
    ("default", "api", "api--retiring", "kalpana/api", "kalpana/api:b-42"),
    ("staging", "staging_api", "staging_api--retiring", "kalpana/staging/api", "kalpana/staging/api:b-42"),
    ("t-1a2b3c4d", "t-1a2b3c4d_api", "t-1a2b3c4d_api--retiring", "kalpana/t-1a2b3c4d/api",
     "kalpana/t-1a2b3c4d/api:b-42"),
])
def test_naming(instance: str, container: str, retired: str, repository: str, tag: str) -> None:
    assert L.container_name(instance, "api") == container
    assert L.retired_name(instance, "api") == retired
    assert L.image_repository(instance, "api") == repository
    assert L.image_tag(instance, "api", "b-42") == tag


def test_two_instances_never_share_a_name() -> None:
    names = {L.container_name(i, d) for i in ("default", "blue", "green") for d in ("api", "web")}
    assert len(names) == 6
    repositories = {L.image_repository(i, d) for i in ("default", "blue", "green") for d in ("api", "web")}
    assert len(repositories) == 6


@pytest.mark.parametrize(("a", "b"), [
    (("default", "staging-api"), ("staging", "api")),
    (("blue", "x-api"), ("blue-x", "api")),
])
def test_names_of_different_instances_cannot_collide(a: tuple[str, str], b: tuple[str, str]) -> None:
    # Both pairs are valid (instance, deployment) names. A shared container name makes the second
    # instance's create fail with a conflict: one instance would block the other.
    assert L.container_name(*a) != L.container_name(*b)
    assert L.image_repository(*a) != L.image_repository(*b)


def test_a_deployment_name_is_never_a_retired_name() -> None:
    # "api--retiring" is a DNS label, but its container would look like api's retiring one:
    # the model refuses "--" in names, so no deployment can be called that.
    assert L.container_name("default", "api--retiring") == L.retired_name("default", "api")
    with pytest.raises(ValidationError, match="must not contain '--'"):
        Deployment.model_validate({"name": "api--retiring", "start_command": "run"})


def test_image_repository_prefix_of_an_instance() -> None:
    # Cleanup finds an instance's images by this prefix (tests/conftest.py).
    prefix = L.image_repository("t-1", "")
    assert prefix.startswith("kalpana/t-1")
    assert L.image_tag("t-1", "api", "b1").startswith(prefix)
    assert not L.image_tag("t-10", "api", "b1").startswith(prefix)
    assert not L.image_tag("default", "api", "b1").startswith(prefix)


def test_image_repository_prefix_excludes_other_instances_deployments() -> None:
    # Same collision as above, seen from the cleanup's side: a default-instance deployment called
    # "t-1-web" must not fall under instance t-1's prefix.
    assert not L.image_tag("default", "t-1-web", "b1").startswith(L.image_repository("t-1", ""))


@pytest.mark.parametrize("instance", ["default", "staging"])
def test_instance_filter(instance: str) -> None:
    assert L.instance_filter(instance) == ["dev.kalpana.managed-by=kalpana", f"dev.kalpana.instance={instance}"]


def test_instance_filter_matches_base_labels() -> None:
    # Every object made for a deployment must be found by its instance's filter, and only by it.
    labels = L.base_labels("blue", "api")
    assert labels == {L.MANAGED_BY: "kalpana", L.INSTANCE: "blue", L.DEPLOYMENT: "api"}
    as_filters = {f"{k}={v}" for k, v in labels.items()}
    assert set(L.instance_filter("blue")) <= as_filters
    assert not set(L.instance_filter("green")) <= as_filters


def test_container_labels_round_trip() -> None:
    d = make_desired()
    labels = container_labels("blue", d, build_id="b7", revision=SHA, host_port=18080)
    assert set(L.instance_filter("blue")) <= {f"{k}={v}" for k, v in labels.items()}
    assert all(isinstance(v, str) for v in labels.values())  # Docker labels are strings
    c = Container.from_ps({"Id": "c1", "Names": ["/blue-api"], "State": "running", "Status": "Up 1 second",
                           "Image": "kalpana/blue-api:b7", "Labels": labels, "Created": 1})
    assert (c.name, c.deployment, c.build_id, c.revision, c.host_port) == ("blue-api", "api", "b7", SHA, 18080)
    assert c.field_hashes == d.hashes
    assert labels[L.BUILD_HASH] == d.build_hash
    assert labels[L.RUNTIME_HASH] == d.runtime_hash


def test_container_labels_without_host_port() -> None:
    labels = container_labels("default", make_desired(), build_id="b1", revision="", host_port=None)
    assert L.HOST_PORT not in labels
    c = Container.from_ps({"Id": "c1", "Names": ["/api"], "Labels": labels})
    assert c.host_port is None


def test_image_labels_round_trip() -> None:
    d = make_desired()
    labels = image_labels("blue", d, Revision(SHA), "b7")
    image = Image.from_list({"Id": "sha256:1", "RepoTags": ["kalpana/blue-api:b7"], "Labels": labels, "Created": 5})
    assert (image.deployment, image.build_id, image.build_hash, image.revision, image.tag) == \
        ("api", "b7", d.build_hash, SHA, "kalpana/blue-api:b7")
    assert set(L.instance_filter("blue")) <= {f"{k}={v}" for k, v in labels.items()}
    assert L.RUNTIME_HASH not in labels  # an image is reusable across runtime changes


def test_observed_groups_by_deployment_label_not_name() -> None:
    d = make_desired()
    labels = container_labels("blue", d, build_id="b1", revision=SHA, host_port=None)
    running = Container.from_ps({"Id": "new", "Names": ["/blue-api"], "State": "running", "Labels": labels, "Created": 2})
    retiring = Container.from_ps({"Id": "old", "Names": ["/blue-api--retiring"], "State": "exited", "Labels": labels,
                                  "Created": 1})
    observed = Observed.from_lists([running, retiring], [])
    assert list(observed.containers) == ["api"]
    assert observed.containers["api"].id == "new"
    assert [c.id for c in observed.extra] == ["old"]
    assert retiring.retiring and not running.retiring
