"""A failed build, as the user sees it: the command's exit code in their words, not Docker's, and a build
stream without Kalpana's own LABEL step (which the image still carries)."""

from __future__ import annotations

from gitops.labels import BUILD_ID, PREFIX

from .helpers import builds, image_tags, output, web_spec


def test_a_failing_build_command_says_it_exited_with_its_code_and_where_the_log_is(kalpana_project):
    p = kalpana_project
    p.write_app("broken", {"index.html": "x"})
    # Both lines on stdout: Docker interleaves a RUN's stdout and stderr in no fixed order.
    p.write_deployment("broken", web_spec("broken", build_command="echo preparing; echo 'missing thing'; exit 3"))

    result = p.run("apply", check=False)

    assert result.returncode == 1, output(result)
    [record] = builds(p, "broken")
    assert record["status"] == "FAILED", record
    expected = (f"build command exited with 3; its last output line: 'missing thing'; "
                f"the full log: `kalpana logs broken --build {record['id']}`")
    assert record["error_message"] == expected, record
    shown = output(result)
    assert "build command exited with 3" in shown and f"kalpana logs broken --build {record['id']}" in shown, shown
    assert "returned a non-zero code" not in shown, shown
    # The command the message points to shows the command's output.
    log = p.run("logs", "broken", "--build", record["id"]).stdout
    assert "preparing" in log and "missing thing" in log, log
    assert "returned a non-zero code" not in log, log


def test_the_build_stream_and_log_leave_out_the_internal_label_step(kalpana_project):
    p = kalpana_project
    p.write_app("labelled", {"index.html": "x"})
    p.write_deployment("labelled", web_spec("labelled", build_command="echo building"))

    result = p.run("apply")

    [record] = builds(p, "labelled")
    log = p.run("logs", "labelled", "--build", record["id"]).stdout
    for text in (output(result), log):
        assert "building" in text, text
        assert f"LABEL {PREFIX}" not in text, text
    # Left out of what is shown, not out of the image: the planner reads these labels.
    [tag] = image_tags(p, "labelled")
    image = p.client.images.get(tag)
    assert image.labels[BUILD_ID] == record["id"], image.labels
