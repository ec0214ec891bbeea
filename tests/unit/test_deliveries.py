"""Webhook delivery ids: a redelivery of the same id never builds twice, across restarts too."""

from __future__ import annotations

import threading
import uuid

import pytest

from gitops import deliveries as deliveries_module
from gitops.deliveries import Deliveries


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "deliveries.log"  # the state directory may not exist yet


def test_first_then_seen(path):
    deliveries = Deliveries(path)
    delivery = str(uuid.uuid4())
    assert deliveries.first(delivery) is True
    assert deliveries.first(delivery) is False
    assert deliveries.first(delivery) is False
    assert deliveries.first(str(uuid.uuid4())) is True


def test_seen_ids_survive_a_restart(path):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    first = Deliveries(path)
    for delivery in ids:
        assert first.first(delivery)
    again = Deliveries(path)
    for delivery in ids:
        assert again.first(delivery) is False
    assert again.first("new-one") is True
    assert Deliveries(path).first("new-one") is False


@pytest.mark.parametrize("missing", [None, ""])
def test_a_missing_id_is_always_new(path, missing):
    deliveries = Deliveries(path)
    assert deliveries.first(missing) is True
    assert deliveries.first(missing) is True
    assert not path.exists() or path.read_text() == ""


def test_surrounding_whitespace_is_the_same_id(path):
    deliveries = Deliveries(path)
    assert deliveries.first("abc-123")
    assert deliveries.first(" abc-123\n") is False


def test_a_huge_id_is_stored_bounded(path):
    deliveries = Deliveries(path)
    assert deliveries.first("x" * 100_000)
    assert deliveries.first("x" * 100_000) is False
    assert path.stat().st_size < 1000


def test_only_the_last_keep_ids_are_remembered(path, monkeypatch):
    monkeypatch.setattr(deliveries_module, "KEEP", 3)
    deliveries = Deliveries(path)
    for i in range(1, 6):
        assert deliveries.first(f"d{i}")
    for i in (3, 4, 5):
        assert deliveries.first(f"d{i}") is False
    assert deliveries.first("d1") is True  # forgotten: the oldest goes first


def test_the_file_is_trimmed_to_keep_on_load(path, monkeypatch):
    monkeypatch.setattr(deliveries_module, "KEEP", 3)
    deliveries = Deliveries(path)
    for i in range(1, 11):
        deliveries.first(f"d{i}")
    reloaded = Deliveries(path)
    assert path.read_text().split() == ["d8", "d9", "d10"]
    for i in (8, 9, 10):
        assert reloaded.first(f"d{i}") is False
    assert reloaded.first("d1") is True
    assert not path.with_suffix(".tmp").exists()


def test_blank_lines_and_padding_in_the_file_are_ignored(path):
    path.parent.mkdir(parents=True)
    path.write_text("d1\n\n  \n  d2  \n")
    deliveries = Deliveries(path)
    assert deliveries.first("d1") is False
    assert deliveries.first("d2") is False
    assert deliveries.first("") is True
    assert deliveries.first("d3") is True
    assert Deliveries(path).first("d3") is False


def test_concurrent_redeliveries_build_once(path):
    deliveries = Deliveries(path)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver():
        barrier.wait()
        results.append(deliveries.first("same-id"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [False] * 7 + [True]
