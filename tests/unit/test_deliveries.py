"""Webhook delivery ids: a redelivery of a push that was built builds nothing; one that failed runs again.

An id is NEW until claimed, QUEUED while its job waits or runs, HANDLED once
that job succeeded (across restarts too), and NEW again if the job failed.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from gitops import deliveries as deliveries_module
from gitops.deliveries import Claim, Deliveries


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "deliveries.log"  # the state directory may not exist yet


def handled(deliveries: Deliveries, *ids: str) -> None:
    """Claim and finish ``ids`` as a successful job does."""
    for delivery in ids:
        assert deliveries.claim(delivery) is Claim.NEW
    deliveries.done(ids)


def test_new_then_queued_then_handled(path):
    deliveries = Deliveries(path)
    delivery = str(uuid.uuid4())
    assert deliveries.claim(delivery) is Claim.NEW
    assert deliveries.claim(delivery) is Claim.QUEUED  # GitHub redelivers while the job waits: nothing to add
    assert deliveries.claim(delivery) is Claim.QUEUED
    deliveries.done([delivery])
    assert deliveries.claim(delivery) is Claim.HANDLED
    assert deliveries.claim(str(uuid.uuid4())) is Claim.NEW


def test_a_failed_job_frees_its_deliveries_for_a_redelivery(path):
    # GitHub's Redeliver button is how a user retries a push whose build failed.
    deliveries = Deliveries(path)
    assert deliveries.claim("d1") is Claim.NEW
    deliveries.release(["d1"])
    assert deliveries.claim("d1") is Claim.NEW
    assert deliveries.claim("d1") is Claim.QUEUED
    deliveries.done(["d1"])
    assert deliveries.claim("d1") is Claim.HANDLED


def test_only_handled_ids_survive_a_restart(path):
    # A daemon that stopped before the job ran never handled the delivery: after a restart it runs again.
    first = Deliveries(path)
    handled(first, "built-1", "built-2")
    assert first.claim("queued-when-stopped") is Claim.NEW
    again = Deliveries(path)
    assert again.claim("built-1") is Claim.HANDLED
    assert again.claim("built-2") is Claim.HANDLED
    assert again.claim("queued-when-stopped") is Claim.NEW
    assert path.read_text().split() == ["built-1", "built-2"]


def test_done_without_a_claim_still_counts(path):
    # A retry carries its deliveries past a release: its success handles them.
    deliveries = Deliveries(path)
    deliveries.done(["d1", "d1", ""])
    assert deliveries.claim("d1") is Claim.HANDLED
    deliveries.done(["d1"])  # twice (a redelivered job also succeeded): written once
    assert path.read_text() == "d1\n"


def test_releasing_what_is_not_in_flight_is_harmless(path):
    deliveries = Deliveries(path)
    deliveries.release(["never-seen", ""])
    handled(deliveries, "d1")
    deliveries.release(["d1"])  # a late release does not forget a handled id
    assert deliveries.claim("d1") is Claim.HANDLED


@pytest.mark.parametrize("missing", [None, ""])
def test_a_missing_id_is_always_new(path, missing):
    deliveries = Deliveries(path)
    assert deliveries.claim(missing) is Claim.NEW
    assert deliveries.claim(missing) is Claim.NEW
    deliveries.done([missing] if missing is not None else [])
    assert deliveries.claim(missing) is Claim.NEW
    assert not path.exists() or path.read_text() == ""


def test_surrounding_whitespace_is_the_same_id(path):
    deliveries = Deliveries(path)
    assert deliveries.claim("abc-123") is Claim.NEW
    assert deliveries.claim(" abc-123\n") is Claim.QUEUED
    deliveries.done([" abc-123 "])
    assert deliveries.claim("abc-123") is Claim.HANDLED


def test_a_huge_id_is_stored_bounded(path):
    deliveries = Deliveries(path)
    handled(deliveries, "x" * 100_000)
    assert deliveries.claim("x" * 100_000) is Claim.HANDLED
    assert path.stat().st_size < 1000


def test_only_the_last_keep_ids_are_remembered(path, monkeypatch):
    monkeypatch.setattr(deliveries_module, "KEEP", 3)
    deliveries = Deliveries(path)
    for i in range(1, 6):
        handled(deliveries, f"d{i}")
    for i in (3, 4, 5):
        assert deliveries.claim(f"d{i}") is Claim.HANDLED
    assert deliveries.claim("d1") is Claim.NEW  # forgotten: the oldest goes first


def test_the_file_is_trimmed_to_keep_on_load(path, monkeypatch):
    monkeypatch.setattr(deliveries_module, "KEEP", 3)
    deliveries = Deliveries(path)
    for i in range(1, 11):
        handled(deliveries, f"d{i}")
    reloaded = Deliveries(path)
    assert path.read_text().split() == ["d8", "d9", "d10"]
    for i in (8, 9, 10):
        assert reloaded.claim(f"d{i}") is Claim.HANDLED
    assert reloaded.claim("d1") is Claim.NEW
    assert not path.with_suffix(".tmp").exists()


def test_blank_lines_and_padding_in_the_file_are_ignored(path):
    path.parent.mkdir(parents=True)
    path.write_text("d1\n\n  \n  d2  \n")
    deliveries = Deliveries(path)
    assert deliveries.claim("d1") is Claim.HANDLED
    assert deliveries.claim("d2") is Claim.HANDLED
    assert deliveries.claim("") is Claim.NEW
    handled(deliveries, "d3")
    assert Deliveries(path).claim("d3") is Claim.HANDLED


def test_concurrent_redeliveries_queue_once(path):
    deliveries = Deliveries(path)
    results: list[Claim] = []
    barrier = threading.Barrier(8)

    def deliver():
        barrier.wait()
        results.append(deliveries.claim("same-id"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [Claim.NEW] + [Claim.QUEUED] * 7
