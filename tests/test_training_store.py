"""The TrainingStore contract over SQLite and PostgreSQL (the `metadata_uri` fixture): jobs are
claimed once, a lapsed claim is taken over, only the holder records progress and the outcome,
and a job goes with its model version."""

from __future__ import annotations

import dataclasses

import pytest

from pellucid.server.records import (
    AppRecord,
    ClusterAssignment,
    ModelRecord,
    ModelVersionRecord,
    PageQuery,
    TrainingJobRecord,
    TrainingState,
)
from pellucid.server.storage import Conflict, MetadataStore, open_metadata_store


def _version(store: MetadataStore, version_id: str, first: bool = False) -> ModelVersionRecord:
    version = ModelVersionRecord(user_id="u", app_id="a", model_id="m", id=version_id, created_at=1.0)
    if first:
        store.insert_app(AppRecord(user_id="u", id="a", created_at=0, modified_at=0))
        store.insert_model(
            ModelRecord(user_id="u", app_id="a", id="m", created_at=0, modified_at=0, model_type_id="clusterer"),
            version,
        )
    else:
        store.insert_model_version(version)
    return version


def _job(version_id: str, created_at: float) -> TrainingJobRecord:
    return TrainingJobRecord(
        user_id="u",
        app_id="a",
        model_id="m",
        version_id=version_id,
        model_type_id="clusterer",
        created_at=created_at,
        modified_at=created_at,
        params={"num_clusters": 2, "concepts": ["x"]},
    )


def test_training_jobs_are_claimed_once_and_taken_over_when_their_claim_lapses(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        _version(store, "v1", first=True)
        _version(store, "v2")
        store.insert_training_job(_job("v1", 10.0))
        store.insert_training_job(_job("v2", 20.0))
        with pytest.raises(Conflict):
            store.insert_training_job(_job("v1", 30.0))
        with pytest.raises(LookupError):
            store.insert_training_job(_job("nope", 30.0))
        queued = store.get_training_job("u", "a", "m", "v1")
        assert queued is not None and queued.state is TrainingState.QUEUED and queued.params["num_clusters"] == 2

        first = store.claim_training_job(100.0, 60.0, "w1")
        second = store.claim_training_job(100.0, 60.0, "w2")
        assert first is not None and second is not None
        assert (first.version_id, second.version_id) == ("v1", "v2")  # oldest first, never twice
        assert first.state is TrainingState.TRAINING and first.owner == "w1" and first.attempts == 1
        assert first.claimed_until == 160.0 and first.started_at == 100.0
        assert store.claim_training_job(150.0, 60.0, "w3") is None  # both claims still live

        assert store.update_training_job(first, "w1", 110.0, 170.0, 0.5, "epoch 1\n")
        assert not store.update_training_job(first, "w2", 110.0, 170.0, 0.9, "not mine\n")
        # w1 goes silent: after its claim lapses another worker takes the job over
        taken = store.claim_training_job(171.0, 60.0, "w3")
        assert taken is not None and taken.version_id == "v1" and taken.attempts == 2 and taken.owner == "w3"
        assert taken.progress == 0.5 and taken.logs == "epoch 1\n" and taken.started_at == 100.0
        assert not store.update_training_job(first, "w1", 172.0, 200.0, 0.6)  # the old holder is told to stop
        assert not store.finish_training_job(first, "w1", 172.0, TrainingState.TRAINED, artifact=b"old")

        assignments = [ClusterAssignment(f"in{i}", i % 2, float(i)) for i in range(5)]
        assert store.finish_training_job(
            taken, "w3", 180.0, TrainingState.TRAINED, "", "done\n", {"inertia": 1.5}, b"\x00weights", assignments
        )
        done = store.get_training_job("u", "a", "m", "v1")
        assert done is not None and done.state is TrainingState.TRAINED and done.progress == 1.0
        assert done.logs == "epoch 1\ndone\n" and done.metrics == {"inertia": 1.5} and done.finished_at == 180.0
        assert done.claimed_until is None
        assert store.get_training_artifact("u", "a", "m", "v1") == b"\x00weights"
        assert store.get_training_artifact("u", "a", "m", "v2") is None
        page = store.list_cluster_assignments("u", "a", "m", "v1", PageQuery(limit=3))
        assert [a.input_id for a in page.items] == ["in0", "in1", "in2"] and page.next_after is not None
        rest = store.list_cluster_assignments("u", "a", "m", "v1", PageQuery(limit=3, after=page.next_after))
        assert [(a.input_id, a.cluster, a.distance) for a in rest.items] == [("in3", 1, 3.0), ("in4", 0, 4.0)]
        only = store.list_cluster_assignments("u", "a", "m", "v1", PageQuery(limit=10), input_ids=["in4", "zz"])
        assert [a.input_id for a in only.items] == ["in4"]
        assert store.requeue_training_jobs() == 1  # a server with the store to itself starts: v2 waits again
        requeued = store.get_training_job("u", "a", "m", "v2")
        assert requeued is not None and requeued.state is TrainingState.QUEUED and requeued.owner == ""
        assert store.claim_training_job(200.0, 60.0, "w4") is not None  # v1 is done: v2
        assert store.claim_training_job(250.0, 60.0, "w5") is None  # w4's claim is live

        assert (
            store.finish_training_job(second, "w2", 200.0, TrainingState.NO_DATA, "no inputs") is False
        )  # w4 holds it
        v2 = store.get_training_job("u", "a", "m", "v2")
        assert v2 is not None and v2.owner == "w4" and v2.attempts == 2
        assert store.finish_training_job(v2, "w4", 251.0, TrainingState.NO_DATA, "dataset 'd' holds no inputs")
        failed = store.get_training_job("u", "a", "m", "v2")
        assert failed is not None and failed.state is TrainingState.NO_DATA and failed.reason.startswith("dataset")
        assert failed.progress == 0.0

        # a job goes with its version, its assignments with it
        assert store.delete_model_version("u", "a", "m", "v1")
        assert store.get_training_job("u", "a", "m", "v1") is None
        assert store.list_cluster_assignments("u", "a", "m", "v1", PageQuery(limit=10)).items == []
        assert store.delete_model("u", "a", "m")
        assert store.get_training_job("u", "a", "m", "v2") is None
    finally:
        store.close()


def test_users_take_turns_claiming_training_jobs(metadata_uri: str) -> None:
    """User A queues 3 jobs, then B queues 1: B's is claimed second, not after all of A's."""
    store = open_metadata_store(metadata_uri)
    try:
        store.insert_app(AppRecord(user_id="b", id="a", created_at=0, modified_at=0))
        store.insert_model(
            ModelRecord(user_id="b", app_id="a", id="m", created_at=0, modified_at=0, model_type_id="clusterer"),
            ModelVersionRecord(user_id="b", app_id="a", model_id="m", id="vb", created_at=1.0),
        )
        _version(store, "v1", first=True)
        _version(store, "v2")
        _version(store, "v3")
        for n, version_id in enumerate(("v1", "v2", "v3")):
            store.insert_training_job(_job(version_id, 10.0 + n))
        store.insert_training_job(dataclasses.replace(_job("vb", 20.0), user_id="b"))

        claimed = []
        for n in range(4):
            job = store.claim_training_job(100.0 + n, 60.0, f"w{n}")
            assert job is not None
            claimed.append((job.user_id, job.version_id))
        assert claimed == [("u", "v1"), ("b", "vb"), ("u", "v2"), ("u", "v3")]
        assert store.claim_training_job(110.0, 60.0, "w9") is None
        # later: B's new job goes before A's, whose last claim (103) is more recent than B's (101)
        _version(store, "v4")
        store.insert_training_job(_job("v4", 30.0))
        store.insert_model_version(ModelVersionRecord(user_id="b", app_id="a", model_id="m", id="vb2", created_at=2.0))
        store.insert_training_job(dataclasses.replace(_job("vb2", 40.0), user_id="b"))
        first = store.claim_training_job(120.0, 60.0, "w10")
        assert first is not None and (first.user_id, first.version_id) == ("b", "vb2")
    finally:
        store.close()
