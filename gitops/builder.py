"""The build phase: one immutable image per build, ``kalpana/<name>:<build-id>``.

Either a generated Dockerfile (base image + source copied to working_dir +
build_command run there) or the source's own Dockerfile. Nothing running is
touched here, so a failed build changes nothing that serves.

What the user sees of the build is shaped here too (``BuildOutput``): Kalpana's
own LABEL step stays in the Dockerfile but not in the stream, and a failed
command is told in the user's terms ("build command exited with 3", its last
output line, where the full log is) rather than Docker's.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import deque
from pathlib import Path
from typing import Callable

from gitops import labels as L
from gitops.errors import BuildFailed, ImageMissing
from gitops.runtime.protocol import Runtime
from gitops.source import Revision
from gitops.spec import BUILD_FIELDS, Desired


def dockerfile_for(desired: Desired, has_source: bool, labels: dict[str, str], base: str | None = None) -> str:
    """The Dockerfile Kalpana generates when the deployment sets no ``dockerfile``.

    ``base`` is what FROM names when it differs from the declared image (an ``image_fallbacks`` entry).
    """
    spec = desired.spec
    lines = [f"FROM {base or desired.image}", f"WORKDIR {spec.working_dir}"]
    if has_source:
        lines.append(f"COPY src/ {spec.working_dir}/")
    if spec.build_command:
        # Exec form with an explicit shell: the base image's SHELL/entrypoint must not matter.
        lines.append("RUN " + json.dumps(["/bin/sh", "-c", spec.build_command]))
    # Labels last: they change with every build and would otherwise void the layer cache below them.
    lines.append(label_line(labels))
    return "\n".join(lines) + "\n"


def label_line(labels: dict[str, str]) -> str:
    """One LABEL instruction: the build API's ``labels=`` costs one intermediate container per label."""
    return "LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))


def image_labels(instance: str, desired: Desired, revision: Revision, build_id: str) -> dict[str, str]:
    """Labels on a built image: enough for the planner to reuse it without rebuilding."""
    return {**L.base_labels(instance, desired.name), L.BUILD_ID: build_id, L.BUILD_HASH: desired.build_hash,
            L.REVISION: revision.revision,
            L.FIELD_HASHES: L.dumps_labels({f: desired.hashes[f] for f in BUILD_FIELDS})}


class Builder:
    """Turns a deployment at a revision into an image, streaming the build's output."""

    def __init__(self, runtime: Runtime, instance: str, image_fallbacks: dict[str, str] | None = None):
        self.runtime = runtime
        self.instance = instance
        self.image_fallbacks = dict(image_fallbacks or {})

    def build(self, desired: Desired, revision: Revision, build_id: str, on_line: Callable[[str], None]) -> str:
        """Build and tag the image; returns the tag. BuildFailed says what to fix."""
        spec = desired.spec
        tag = L.image_tag(self.instance, desired.name, build_id)
        labels = image_labels(self.instance, desired, revision, build_id)
        dockerfile_path = spec.dockerfile
        if not dockerfile_path and not desired.image and revision.path and (revision.path / "Dockerfile").is_file():
            dockerfile_path = "Dockerfile"  # no base image, but the source brings its own recipe
            on_line("no image set: building the source's own Dockerfile")
        if dockerfile_path:
            if revision.path is None:
                raise BuildFailed(f"{desired.file}: dockerfile is set but the deployment has no source to build")
            recipe = (revision.path / dockerfile_path).resolve()
            # Checked again here, not only when the file loads: a git source is only seen once it is
            # checked out, and a local file can be swapped for a symlink after validation.
            if not recipe.is_relative_to(revision.path.resolve()):
                raise BuildFailed(f"{desired.file}: dockerfile {dockerfile_path!r} resolves outside the source "
                                  f"{revision.path}: keep the Dockerfile inside the source")
            if not recipe.is_file():
                raise BuildFailed(f"{desired.file}: dockerfile {dockerfile_path!r} not found in {revision.path}: "
                                  "fix the path (it is relative to the source)")
            # The user's Dockerfile plus our LABEL line (it lands on the final stage, the one tagged).
            ours = ".kalpana.Dockerfile"
            text = recipe.read_text().rstrip("\n") + "\n" + label_line(labels) + "\n"
            context = tar_context({ours: text.encode()}, {".": revision.path}, skip=revision.exclude)
            dockerfile = ours
        else:
            if not desired.image:
                raise BuildFailed(f"{desired.file}: no base image to build on: set `image` (e.g. python:3.12-slim) "
                                  "in the deployment file, default_image in kalpana.yaml, or `dockerfile` to build "
                                  "the source's own Dockerfile")
            base = self.base_image(desired.image, on_line)
            has_source = revision.path is not None
            context = tar_context({"Dockerfile": dockerfile_for(desired, has_source, labels, base).encode()},
                                  {"src": revision.path} if has_source else {}, skip=revision.exclude)
            dockerfile = "Dockerfile"
        output = BuildOutput(on_line, hidden_step=label_line(labels))
        try:
            for line in self.runtime.build(context, tag=tag, dockerfile=dockerfile):
                output(line)
        except BuildFailed as exc:
            raise BuildFailed(failure_message(str(exc), output, name=desired.name, build_id=build_id,
                                              own_dockerfile=bool(dockerfile_path))) from None
        return tag

    def base_image(self, declared: str, on_line: Callable[[str], None]) -> str:
        """The image FROM names: ``declared`` made local (pulled), else its local ``image_fallbacks`` entry.

        Only the build sees the fallback: the spec, its hash, the plan and the labels keep the declared
        image, so the next build after a registry answers is on the real one. ImageMissing when neither
        can be had (naming the fallback when one was set).
        """
        try:
            self.runtime.ensure_image(declared, on_line)
            return declared
        except ImageMissing as missing:
            fallback = self.image_fallbacks.get(declared)
            if not fallback:
                raise
            if not self.runtime.image_exists(fallback):
                raise ImageMissing(declared, missing.detail, fallback=fallback) from None
            on_line(f"{declared} cannot be had here ({_short_reason(missing.detail)}): building on {fallback} "
                    "(image_fallbacks in kalpana.yaml)")
            return fallback


# Docker's words for a RUN step that failed: the classic builder's, then BuildKit's.
_EXIT_CODE = (re.compile(r"returned a non-zero code: (\d+)"),
              re.compile(r"did not complete successfully: exit code: (\d+)"))
_STEP = re.compile(r"Step \d+/\d+ : (?P<instruction>.*)", re.S)
# Lines the classic builder adds to a step: layer ids, intermediate containers, cache hits.
_BOOKKEEPING = re.compile(r" ---> |Removing intermediate container ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Docker colours a RUN's stderr red
_TAIL_LINES = 20
_QUOTE_MAX = 160


class BuildOutput:
    """Passes a build's lines on to ``on_line``, without Kalpana's own LABEL step; remembers the failing step.

    ``step`` is the instruction being run (``RUN ...``) and ``tail`` the last lines it printed,
    which is what ``failure_message`` quotes.
    """

    def __init__(self, on_line: Callable[[str], None], hidden_step: str):
        self._on_line = on_line
        self._hidden_step = hidden_step.strip()
        self._hiding = False
        self.step: str | None = None
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)

    def __call__(self, line: str) -> None:
        step = _STEP.match(line)
        if step:
            self.step = step.group("instruction").strip()
            self.tail.clear()
            # Our LABEL line is hundreds of characters of hashes: internal, and the same every build.
            self._hiding = self.step == self._hidden_step or self.step.startswith(f"LABEL {L.PREFIX}.")
        elif _BOOKKEEPING.match(line):
            pass  # the hidden step's own bookkeeping stays hidden with it
        else:
            self._hiding = False
            self.tail.append(line)
        if not self._hiding:
            self._on_line(line)

    def last_output(self) -> str | None:
        """The failing step's last non-empty output line, without colour codes."""
        for line in reversed(self.tail):
            text = _ANSI.sub("", line).strip()
            if text:
                return text
        return None


def failure_message(raw: str, output: BuildOutput, *, name: str, build_id: str, own_dockerfile: bool) -> str:
    """What a failed build says: the command's exit code in the user's terms, or Docker's words when it was not a command."""
    code = next((m.group(1) for m in (p.search(raw) for p in _EXIT_CODE) if m), None)
    if code is None:
        return raw
    if not own_dockerfile:  # the generated Dockerfile's only RUN is the build command
        what = "build command"
    elif output.step:
        what = f"Dockerfile step `{_cut(output.step, 80)}`"
    else:
        what = "a Dockerfile step"
    last = output.last_output()
    said = f"; its last output line: {_cut(last, _QUOTE_MAX)!r}" if last else "; it printed nothing"
    return f"{what} exited with {code}{said}; the full log: `kalpana logs {name} --build {build_id}`"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def tar_context(files: dict[str, bytes], directories: dict[str, Path], exclude: tuple[str, ...] = (".git",),
                skip: tuple[str, ...] = ()) -> io.BytesIO:
    """A build context: in-memory ``files`` plus whole ``directories`` (arcname -> path).

    ``exclude`` drops any path with such a component; ``skip`` drops these paths relative to each directory.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arcname, data in files.items():
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for arcname, path in directories.items():
            skipped = {str(Path(arcname) / s) for s in skip}

            def keep(ti: tarfile.TarInfo, skipped=skipped) -> tarfile.TarInfo | None:
                name = ti.name.removeprefix("./")
                if _excluded(name, exclude) or any(name == s or name.startswith(s + "/") for s in skipped):
                    return None
                return ti

            tar.add(str(path), arcname=arcname, filter=keep)
    buf.seek(0)
    return buf


def _short_reason(detail: str) -> str:
    # Docker's pull errors nest their causes ("Get ...: dial tcp: lookup ...: no such host"): the last is the point.
    reason = detail.strip().rstrip(".").rsplit(": ", 1)[-1].strip()
    if not reason:
        return "not on this host, and the pull failed"
    return reason if len(reason) <= 80 else reason[:77] + "..."


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(part in exclude for part in Path(name).parts)
