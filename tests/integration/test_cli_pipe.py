"""The CLI's output streams: a reader that goes away (`kalpana deploy NAME | head -1`) must not stop or
corrupt the work; Ctrl-C on a follow just ends it."""

from __future__ import annotations

import signal
import subprocess
import sys

from .helpers import HTTPD, builds, deploy_web, finish, get, host_port, spawn, status_row


def test_deploy_into_a_closed_pipe_finishes_and_records_success(kalpana_project):
    p = kalpana_project
    port = deploy_web(p, "piped", "v1", build_command="i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); done")
    before = builds(p, "piped")[0]
    p.write_app("piped", {"index.html": "v2"})

    # `kalpana deploy piped | head -1`: read one line, then close the read end, as head does.
    cmd = [sys.executable, "-m", "gitops", "-c", str(p.config_path), "deploy", "piped"]
    process = subprocess.Popen(cmd, cwd=p.root, env=p.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    process.stdout.close()
    try:
        _, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert first.strip(), "kalpana printed nothing before the reader went away"

    assert process.returncode == 0, f"exit {process.returncode}; stderr:\n{err}"
    assert "Traceback" not in err and "BrokenPipe" not in err and "unexpected error" not in err, err
    latest = builds(p, "piped")[0]
    assert latest["id"] != before["id"], "the deploy never recorded a build"
    assert latest["status"] == "SUCCESS", latest
    row = status_row(p, "piped")
    assert row["build_id"] == latest["id"], row
    assert get(p, host_port(p, "piped", row)) == "v2"
    assert port == host_port(p, "piped", row)


def test_ctrl_c_ends_logs_follow_quietly(kalpana_project):
    p = kalpana_project
    deploy_web(p, "chatty", "v1", start_command=f"sh -c 'echo hello from chatty; exec {HTTPD}'")
    process = spawn(p, "logs", "chatty", "--app", "-f")
    assert "hello from chatty" in process.stdout.readline()  # the follow is streaming
    process.send_signal(signal.SIGINT)
    code, text = finish(process, timeout=30)
    assert code == 130, text
    assert "error" not in text and "Traceback" not in text, text
