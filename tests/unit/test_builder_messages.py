"""What the user sees of a build: no internal LABEL step, and a failed command told in their terms."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops.builder import Builder, BuildOutput, failure_message
from gitops.errors import BuildFailed
from gitops.source import Revision
from gitops.spec import Deployment, Desired

from fake_runtime import FakeRuntime, _read_member

CLASSIC = "The command '/bin/sh -c npm run build' returned a non-zero code: 3"
BUILDKIT = 'process "/bin/sh -c npm run build" did not complete successfully: exit code: 3'
OUR_LABEL = 'LABEL dev.kalpana.build-hash="abc" dev.kalpana.field-hashes="{\\"image\\": \\"1\\"}"'


def desired(**fields) -> Desired:
    spec = Deployment.model_validate({"name": "web", "start_command": "run", "source": "app", "image": "base",
                                      **fields})
    return Desired(spec, "deployments.d/web.yaml", 1, image=spec.image, env={})


def fed(*lines: str, hidden: str = OUR_LABEL) -> tuple[BuildOutput, list[str]]:
    shown: list[str] = []
    output = BuildOutput(shown.append, hidden_step=hidden)
    for line in lines:
        output(line)
    return output, shown


def test_the_internal_label_step_and_its_bookkeeping_are_hidden():
    _, shown = fed("Step 1/4 : FROM base", " ---> 2f842da7fcf3", "Step 3/4 : RUN make", " ---> Running in 9a25",
                   "built", "Removing intermediate container 9a25", " ---> 5654db7704ab",
                   f"Step 4/4 : {OUR_LABEL}", " ---> Running in 77aa", "Removing intermediate container 77aa",
                   " ---> 0123abcd", "Successfully built 0123abcd", "Successfully tagged kalpana/web:b1")
    assert shown == ["Step 1/4 : FROM base", " ---> 2f842da7fcf3", "Step 3/4 : RUN make", " ---> Running in 9a25",
                     "built", "Removing intermediate container 9a25", " ---> 5654db7704ab",
                     "Successfully built 0123abcd", "Successfully tagged kalpana/web:b1"]


def test_a_users_own_label_step_is_shown():
    _, shown = fed("Step 2/3 : LABEL org.example.team=web", " ---> Running in 1", "Step 3/3 : RUN true")
    assert shown == ["Step 2/3 : LABEL org.example.team=web", " ---> Running in 1", "Step 3/3 : RUN true"]


@pytest.mark.parametrize("raw", [CLASSIC, BUILDKIT])
def test_a_failed_build_command_says_its_exit_code_last_line_and_where_the_log_is(raw):
    output, _ = fed("Step 3/4 : RUN [\"/bin/sh\",\"-c\",\"npm run build\"]", " ---> Running in 9a25",
                    "\x1b[91mnpm ERR! missing script: build", "\x1b[0m", "Removing intermediate container 9a25")
    message = failure_message(raw, output, name="web", build_id="20240101-1", own_dockerfile=False)
    assert message == ("build command exited with 3; its last output line: 'npm ERR! missing script: build'; "
                       "the full log: `kalpana logs web --build 20240101-1`")


def test_a_silent_command_says_it_printed_nothing_and_a_dockerfile_step_is_named():
    output, _ = fed("Step 1/2 : FROM base", "Step 2/2 : RUN make dist", " ---> Running in 9a25")
    message = failure_message("The command '/bin/sh -c make dist' returned a non-zero code: 2", output,
                              name="web", build_id="b7", own_dockerfile=True)
    assert message == ("Dockerfile step `RUN make dist` exited with 2; it printed nothing; "
                       "the full log: `kalpana logs web --build b7`")


def test_a_long_last_line_is_cut():
    output, _ = fed("Step 2/2 : RUN x", "y" * 500)
    message = failure_message(CLASSIC, output, name="web", build_id="b1", own_dockerfile=False)
    assert "y" * 157 + "..." in message and "y" * 158 not in message


def test_other_docker_errors_pass_unchanged():
    output, _ = fed("Step 2/3 : COPY missing /x")
    raw = "COPY failed: file not found in build context or excluded by .dockerignore: stat missing: no such file"
    assert failure_message(raw, output, name="web", build_id="b1", own_dockerfile=False) == raw


def test_the_builder_streams_without_its_label_step_and_reshapes_the_failure(tmp_path: Path):
    source = tmp_path / "app"
    source.mkdir()
    runtime = FakeRuntime(allow={"ensure_image", "build"})
    runtime.script_build(["Step 1/5 : FROM base", "Step 4/5 : RUN [\"/bin/sh\",\"-c\",\"exit 3\"]", "oh no"],
                         BuildFailed("The command '/bin/sh -c exit 3' returned a non-zero code: 3"))
    shown: list[str] = []
    with pytest.raises(BuildFailed) as failure:
        Builder(runtime, "default").build(desired(build_command="exit 3"), Revision("content:x", source), "b1",
                                          shown.append)
    assert str(failure.value) == ("build command exited with 3; its last output line: 'oh no'; "
                                  "the full log: `kalpana logs web --build b1`")
    assert "returned a non-zero code" not in str(failure.value)


def test_the_builder_hides_the_label_step_it_wrote_into_the_dockerfile(tmp_path: Path):
    source = tmp_path / "app"
    source.mkdir()
    label_step: list[str] = []

    class Echo(FakeRuntime):
        """Echoes the generated Dockerfile's LABEL line as Docker's step line, as the engine does."""

        def build(self, context, *, tag, dockerfile="Dockerfile"):
            text = _read_member(context, dockerfile)
            label = next(line for line in text.splitlines() if line.startswith("LABEL "))
            label_step.append(label)
            yield from ["Step 1/2 : FROM base", f"Step 2/2 : {label}", " ---> Running in 1", " ---> abc",
                        "Successfully built abc"]

    shown: list[str] = []
    Builder(Echo(allow={"ensure_image"}), "default").build(desired(), Revision("content:x", source), "b2",
                                                          shown.append)
    assert label_step and len(label_step[0]) > 200  # the step is there, in the Dockerfile
    assert shown == ["Step 1/2 : FROM base", "Successfully built abc"]
