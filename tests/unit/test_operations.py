"""The daemon's side of the API: reserved deploy records, joined deploys, streams ended by what runs.

A real History in a temporary directory and a real WorkQueue that is never
started (submitted jobs wait in it); the engine is a stand-in that knows one
deployment. The worker's part is played by calling ``running`` / ``after_run``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gitops.build import BuildStatus, Trigger
from gitops.errors import UnknownDeployment
from gitops.events import LogLine, StepFailed, StepSucceeded
from gitops.history import History
from gitops.queue import Job, WorkQueue
from gitops.server.operations import UNUSED_RESERVATION, Operations
from gitops.worker_protocol import decode_job, encode_job


class _Engine:
    def desired(self, name: str):
        if name != "web":
            raise UnknownDeployment(name, ["web"])

    def status(self):
        return []


@pytest.fixture
def ops(tmp_path: Path) -> Operations:
    history = History(tmp_path)
    work = WorkQueue(lambda running: None)
    return Operations(_Engine(), history, work, token=lambda: None, reload=lambda: None)


def _waiting(ops: Operations) -> Job:
    return ops.work._pending  # the job the queue would run next


def _messages(ops: Operations, build_id: str) -> list[str]:
    async def run():
        return [m.kind async for m in ops.streams.follow(build_id) if m is not None]

    return asyncio.run(run())


def test_a_deploy_reserves_a_pending_record_and_queues_a_forced_job(ops: Operations) -> None:
    build = ops.deploy("web")
    assert build.status is BuildStatus.PENDING and build.triggered_by is Trigger.MANUAL
    job = _waiting(ops)
    assert job.names == {"web"} and job.force == {"web"} and job.builds == {"web": build.id}
    # What the worker child is sent carries both.
    sent = decode_job(encode_job(job))
    assert sent.force == {"web"} and sent.builds == {"web": build.id}
    assert ops.streams.known(build.id)


def test_deploys_asked_while_one_waits_join_it(ops: Operations) -> None:
    first = ops.deploy("web")
    assert ops.deploy("web").id == first.id
    ops.running(_waiting(ops))  # the worker took it: the next deploy is a build of its own
    assert ops.deploy("web").id != first.id


def test_an_unknown_name_queues_nothing(ops: Operations) -> None:
    with pytest.raises(UnknownDeployment, match="known deployments: web"):
        ops.deploy("nope")
    assert _waiting(ops) is None and ops.history.list() == []


def test_a_reservation_the_run_did_not_use_fails_and_ends_its_stream(ops: Operations) -> None:
    build = ops.deploy("web")
    job = _waiting(ops)
    ops.running(job)
    ops.after_run(job)
    record = ops.history.get(build.id)
    assert record.status is BuildStatus.FAILED and record.error_message == UNUSED_RESERVATION
    assert _messages(ops, build.id) == ["end"]


def test_a_step_that_succeeds_ends_its_build_stream_at_once(ops: Operations) -> None:
    build = ops.deploy("web")
    ops.on_event(LogLine("web", "hello", build_id=build.id))
    done = ops.history.finish(build.id, BuildStatus.SUCCESS)
    ops.on_event(StepSucceeded("web", "deploy", build=done.to_dict()))
    assert _messages(ops, build.id) == ["log", "end"]
    assert b'kalpana_builds_total{status="SUCCESS"} 1.0' in ops.metrics.render()


def test_a_failed_step_ends_the_streams_of_its_finished_builds_only(ops: Operations) -> None:
    build = ops.deploy("web")
    ops.on_event(StepFailed("web", "no"))  # still PENDING: its stream goes on
    assert ops.streams.open_builds() == [build.id]
    ops.history.finish(build.id, BuildStatus.FAILED, error_message="exit 2")
    ops.on_event(StepFailed("web", "exit 2"))
    assert ops.streams.open_builds() == []


def test_apply_waits_for_the_run_that_does_it(ops: Operations) -> None:
    assert ops.apply(frozenset({"web"}), reasons=["t"], timeout=0.01) is False  # nobody ran it
    job = _waiting(ops)
    ops.after_run(job)
    assert all(done.is_set() for done in job.done)
