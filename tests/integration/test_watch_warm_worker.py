"""`kalpana watch` runs each job in a worker process started before the job came (issue 12): one job per
process, a new one started for the next job, and a cancel still kills the one that runs."""

from __future__ import annotations

from pathlib import Path

from .daemon_helpers import start_daemon, wait_serving, wait_until
from .helpers import builds, deploy_web, get, web_spec

__all__ = ["start_daemon"]  # the fixture, imported so pytest finds it here


def workers(daemon_pid: int) -> set[int]:
    """The daemon's children that are workers (``python -m gitops.worker``), alive or not yet reaped."""
    children: set[int] = set()
    for task in Path(f"/proc/{daemon_pid}/task").iterdir():
        try:
            children |= {int(pid) for pid in (task / "children").read_text().split()}
        except OSError:
            continue  # the thread ended meanwhile
    found = set()
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"gitops.worker" in command and state not in ("Z", "X"):
            found.add(pid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_job_runs_in_the_worker_started_before_it_and_a_cancel_still_kills_it(kalpana_project, start_daemon):
    p = kalpana_project
    port = deploy_web(p, "warm", "v1")
    daemon = start_daemon()
    daemon.wait_idle()
    [waiting] = wait_until(lambda: workers(daemon.pid) or None, what="a worker waiting for the next job")

    # A saved file: the job goes to the worker that was waiting before the save, which exits once
    # it is done; a new one was started for the next job.
    mark = daemon.mark()
    p.write_app("warm", {"index.html": "v2"})
    p.write_deployment("warm", web_spec("warm", env={"V": "2"}))
    wait_serving(port, "v2", timeout=120)
    daemon.wait_event("job_done", after=mark, timeout=120)
    assert builds(p, "warm")[0]["pid"] == waiting, "the build ran in the worker that waited before the save"
    wait_until(lambda: not alive(waiting), what=f"the worker {waiting} that ran the job to exit")
    [running] = wait_until(lambda: workers(daemon.pid) or None, what="a new worker for the next job")
    assert running != waiting

    # A long build, then the daemon stops: the worker running it (the one waiting since the last job)
    # is cancelled, the build recorded CANCELLED, and the version before it still serves.
    mark = daemon.mark()
    p.write_app("warm", {"index.html": "v3"})
    p.write_deployment("warm", web_spec("warm", env={"V": "3"}, build_command="sleep 30"))
    daemon.wait_for(lambda e: e.get("event") == "phase" and e.get("deployment") == "warm"
                    and str(e.get("message", "")).startswith("building"), after=mark, timeout=120,
                    what="the build of v3")
    assert builds(p, "warm")[0]["pid"] == running, "the job went to the worker that was waiting for it"
    spare = wait_until(lambda: workers(daemon.pid) - {running} or None, what="the worker for the job after")
    assert daemon.terminate() == 0
    assert not alive(running) and not any(alive(pid) for pid in spare), "a worker outlived the daemon"
    record = builds(p, "warm")[0]
    assert record["status"] == "CANCELLED", record
    assert "the daemon is stopping" in (record["error_message"] or ""), record
    assert get(p, port) == "v2"
