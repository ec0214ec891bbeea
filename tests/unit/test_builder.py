"""The build phase's own checks, before anything reaches the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_runtime import BUILD, FakeRuntime

from gitops import labels as L
from gitops.builder import Builder
from gitops.errors import BuildFailed, ImageMissing
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


# -- image_fallbacks: a base image that cannot be had here -------------------------------------------

DECLARED = "busybox:1.36"
STAND_IN = "kalpana-local/busybox:latest"
NO_HOST = ('Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.0.0.53:53: '
           "no such host")


class NoRegistry(FakeRuntime):
    """A host where no registry answers: ensure_image succeeds only for images already local."""

    def ensure_image(self, image: str, on_line=lambda line: None) -> None:
        self._call("ensure_image", image)
        if self._image(image) is None:
            raise ImageMissing(image, NO_HOST)


def build_on(runtime: FakeRuntime, tmp_path: Path, fallbacks: dict[str, str]) -> tuple[str, list[str]]:
    source = tmp_path / "app"
    source.mkdir(exist_ok=True)
    (source / "index.html").write_text("hi")
    lines: list[str] = []
    tag = Builder(runtime, "default", image_fallbacks=fallbacks).build(
        desired(image=DECLARED), Revision("content:x", source), "b1", lines.append)
    return tag, lines


def test_a_declared_image_that_cannot_be_had_builds_on_its_local_fallback_and_says_so(tmp_path: Path):
    runtime = NoRegistry(allow=BUILD | {"image_exists"})
    runtime.add_image(STAND_IN, {})
    tag, lines = build_on(runtime, tmp_path, {DECLARED: STAND_IN, "python:3.12-slim": "local/python"})
    assert runtime.dockerfiles[tag].splitlines()[0] == f"FROM {STAND_IN}"
    said = [line for line in lines if "image_fallbacks" in line]
    assert said == [f"{DECLARED} cannot be had here (no such host): building on {STAND_IN} "
                    "(image_fallbacks in kalpana.yaml)"], lines
    # What the planner compares stays the declared image: the labels carry the spec's build hash.
    built = desired(image=DECLARED)
    assert runtime._image(tag).labels[L.BUILD_HASH] == built.build_hash
    assert built.image == DECLARED
    runtime.assert_no_violations()


def test_a_pullable_declared_image_never_consults_the_fallback(tmp_path: Path):
    runtime = FakeRuntime(allow=BUILD)  # every pull works; image_exists (the fallback check) is not allowed
    tag, lines = build_on(runtime, tmp_path, {DECLARED: STAND_IN})
    assert runtime.dockerfiles[tag].splitlines()[0] == f"FROM {DECLARED}"
    assert not any("image_fallbacks" in line for line in lines), lines
    assert runtime.called("ensure_image") == [("ensure_image", (DECLARED,))]
    runtime.assert_no_violations()


def test_a_fallback_that_is_missing_too_keeps_the_pull_error_and_names_the_fallback(tmp_path: Path):
    runtime = NoRegistry(allow=BUILD | {"image_exists"})
    with pytest.raises(ImageMissing) as failure:
        build_on(runtime, tmp_path, {DECLARED: STAND_IN})
    message = str(failure.value)
    assert message.startswith(str(ImageMissing(DECLARED, NO_HOST))), message
    assert message.endswith(f"; the fallback {STAND_IN} named in image_fallbacks is not on this host either")
    assert not runtime.called("build")
    runtime.assert_no_violations()


def test_without_a_fallback_for_that_image_the_pull_error_stands(tmp_path: Path):
    runtime = NoRegistry(allow=BUILD)
    runtime.add_image(STAND_IN, {})
    with pytest.raises(ImageMissing) as failure:
        build_on(runtime, tmp_path, {"busybox:latest": STAND_IN})
    assert str(failure.value) == str(ImageMissing(DECLARED, NO_HOST))
    assert not runtime.called("build")
    runtime.assert_no_violations()
