"""What one caller can make an algorithm's owner store (no gRPC): insight reports are capped
per report and per call, and calls are deleted once older than the server's retention.

The algorithm is a built-in model (random-sample), so calls need no runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.server.engine import Engine, Principal, algorithms
from pellucid.server.engine.errors import InvalidArgument, NotFound, ResourceExhausted
from pellucid.server.engine.paging import PageRequest
from pellucid.server.engine.predict import Media, PredictInput
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store

OWNER = Principal("u", is_admin=False, token_id="t")
DAY = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Iterator[Engine]:
    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'metadata.db'}"),
        open_blob_store(f"file://{tmp_path / 'blobs'}"),
        clock=clock,
    )
    engine.users.bootstrap("u")
    engine.apps.create(OWNER, "u", "app")
    engine.models.create(OWNER, "u", "app", "sample", model_type_id="random-sample")
    engine.algorithms.publish(OWNER, "u", "app", "sample", tag="1.0.0", public=True)
    yield engine
    engine.close()


def call(engine: Engine) -> str:
    made = engine.algorithms.call(OWNER, "u/sample", PredictInput(media=(Media("text", b"hi"),)), 20.0)
    made.pending.result()
    return made.id


def test_insight_reports_are_capped_per_report_and_per_call(engine: Engine) -> None:
    call_id = call(engine)
    with pytest.raises(InvalidArgument, match="101 insights in one report: the limit is 100"):
        engine.algorithms.report_insights(OWNER, call_id, {f"k{i}": 1.0 for i in range(101)})
    for i in range(algorithms.MAX_REPORTS_PER_CALL):
        engine.algorithms.report_insights(OWNER, call_id, {"step": float(i)})
    with pytest.raises(ResourceExhausted) as caught:
        engine.algorithms.report_insights(OWNER, call_id, {"step": 100.0})
    assert "already has 100 insight reports, the limit per call" in caught.value.message
    assert "several numbers in one report (up to 100 each)" in caught.value.message
    engine.algorithms.report_insights(OWNER, call(engine), {"step": 0.0})  # another call has its own budget
    stored, _ = engine.algorithms.list_insights(OWNER, "u/sample", PageRequest(page_size=1000))
    assert len(stored) == 101


def test_calls_older_than_the_retention_are_purged_by_later_calls(engine: Engine, clock: Clock) -> None:
    engine.algorithms.call_retention_seconds = 30 * DAY  # the algorithm_call_retention_seconds setting
    old = call(engine)
    engine.algorithms.report_insights(OWNER, old, {"x": 1.0})
    clock.now += 29 * DAY
    recent = call(engine)  # purges nothing: the old call is 29 days old
    engine.algorithms.report_insights(OWNER, old, {"x": 2.0})
    clock.now += 2 * DAY
    call(engine)  # the old call is 31 days old now: deleted
    with pytest.raises(NotFound, match="not found"):
        engine.algorithms.report_insights(OWNER, old, {"x": 3.0})
    engine.algorithms.report_insights(OWNER, recent, {"x": 4.0})  # 2 days old: kept
    assert engine.store.get_algorithm_call(old) is None and engine.store.get_algorithm_call(recent) is not None
    stored, _ = engine.algorithms.list_insights(OWNER, "u/sample", PageRequest(page_size=10))
    assert [i.values["x"] for i in stored] == [1.0, 2.0, 4.0]  # what was reported stays


def test_a_retention_shorter_than_a_call_never_purges_calls_that_may_still_run(engine: Engine, clock: Clock) -> None:
    """The setting's minimum (60 s) is shorter than a call may wait for its runner (a day): a call
    that may still run keeps its row, so its runner can still read data:// and report insights."""
    engine.algorithms.call_retention_seconds = 60.0
    running = call(engine)
    clock.now += 3600.0
    call(engine)  # purges calls older than the retention, but not one that may still be running
    engine.algorithms.report_insights(OWNER, running, {"x": 1.0})
    assert engine.store.get_algorithm_call(running) is not None
    clock.now += DAY
    call(engine)  # a day and an hour old: no call runs that long, so it goes
    assert engine.store.get_algorithm_call(running) is None
