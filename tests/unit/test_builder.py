"""The build phase's own checks, before anything reaches the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops.builder import Builder
from gitops.errors import BuildFailed
from gitops.source import Revision
from gitops.spec import Deployment, Desired


class NoRuntime:
    """Any call is a failure: these checks must refuse before the runtime is asked anything."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the runtime was called ({name}) although the build must be refused first")


def desired(**fields) -> Desired:
    spec = Deployment.model_validate({"name": "web", "start_command": "run", "source": "app", **fields})
    return Desired(spec, "deployments.d/web.yaml", 1, image=spec.image, env={})


def test_a_dockerfile_that_is_a_symlink_out_of_the_source_is_refused(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    source = tmp_path / "app"
    source.mkdir()
    (source / "Dockerfile").symlink_to(secret)
    with pytest.raises(BuildFailed, match="resolves outside the source") as failure:
        Builder(NoRuntime(), "default").build(desired(dockerfile="Dockerfile"), Revision("content:x", source),
                                              "b1", lambda line: None)
    assert "root:x" not in str(failure.value)


def test_a_missing_dockerfile_is_named(tmp_path: Path):
    source = tmp_path / "app"
    source.mkdir()
    with pytest.raises(BuildFailed, match="not found"):
        Builder(NoRuntime(), "default").build(desired(dockerfile="Dockerfile"), Revision("content:x", source),
                                              "b1", lambda line: None)
