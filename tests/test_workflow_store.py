"""The WorkflowStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

import pytest

from pellucid.server.records import (
    AppRecord,
    PageQuery,
    WorkflowNodeRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
)
from pellucid.server.storage import Conflict, open_metadata_store


def node(node_id: str, model_id: str, version_id: str, *inputs: str, app_id: str = "app") -> WorkflowNodeRecord:
    return WorkflowNodeRecord(
        id=node_id,
        model_user_id="u",
        model_app_id=app_id,
        model_id=model_id,
        model_version_id=version_id,
        model_type_id="concept-thresholder" if model_id == "thr" else "",
        params={"threshold": 0.5, "nested": {"a": [1, 2]}} if model_id == "thr" else {},
        node_inputs=inputs,
    )


def version(workflow_id: str, version_id: str, *nodes: WorkflowNodeRecord, at: float = 1) -> WorkflowVersionRecord:
    return WorkflowVersionRecord("u", "app", workflow_id, version_id, at, nodes, "d", {"k": "v"})


def test_workflows_and_versions_round_trip_and_deprecate(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
        store.insert_app(AppRecord(user_id="u", id="other", created_at=0, modified_at=0))
        first = version(
            "wf", "v1", node("det", "det", "dv1"), node("cls", "cls", "cv1", "det"), node("thr", "thr", "tv1", "cls")
        )
        workflow = WorkflowRecord("u", "app", "wf", 1, 1, "a workflow", {"m": 1})
        store.insert_workflow(workflow, first)
        assert store.get_workflow("u", "app", "wf") == workflow
        assert store.get_workflow("u", "other", "wf") is None
        assert store.get_workflow_version("u", "app", "wf", "v1") == first
        with pytest.raises(Conflict):
            store.insert_workflow(workflow, first)
        with pytest.raises(LookupError):
            store.insert_workflow(WorkflowRecord("u", "nope", "wf", 1, 1), first)

        second = version("wf", "v2", node("cls", "cls", "cv2"), at=2)
        store.insert_workflow_version(second)
        with pytest.raises(Conflict):
            store.insert_workflow_version(second)
        with pytest.raises(LookupError):
            store.insert_workflow_version(version("missing", "v1"))
        assert store.get_workflow_version("u", "app", "wf") == second  # the latest
        assert store.get_workflow("u", "app", "wf").modified_at == 2  # type: ignore[union-attr]
        page = store.list_workflow_versions("u", "app", "wf", PageQuery(limit=1))
        assert [v.id for v in page.items] == ["v1"] and page.next_after is not None
        rest = store.list_workflow_versions("u", "app", "wf", PageQuery(limit=5, after=page.next_after))
        assert [v.id for v in rest.items] == ["v2"] and rest.next_after is None

        # a deleted model version deprecates the versions pinning it, with the reason per node
        assert store.deprecate_workflow_pins("u", "app", "cls", "cv1", "version cv1 was deleted") == 1
        assert store.deprecate_workflow_pins("u", "app", "cls", "cv1", "again") == 0  # the first reason stays
        assert store.get_workflow_version("u", "app", "wf", "v1").deleted_pins == (  # type: ignore[union-attr]
            ("cls", "version cv1 was deleted"),
        )
        assert store.get_workflow_version("u", "app", "wf", "v2").deleted_pins == ()  # type: ignore[union-attr]
        assert store.deprecate_workflow_pins("u", "other", "cls", "", "other app") == 0
        # a deleted model: every version of it
        assert store.deprecate_workflow_pins("u", "app", "cls", "", "model cls was deleted") == 1
        listed = store.list_workflow_versions("u", "app", "wf", PageQuery(limit=5)).items
        assert [v.deleted_pins for v in listed] == [
            (("cls", "version cv1 was deleted"),),
            (("cls", "model cls was deleted"),),
        ]

        store.insert_workflow(WorkflowRecord("u", "app", "other_wf", 3, 3), version("other_wf", "x"))
        assert [w.id for w in store.list_workflows("u", "app", "", PageQuery(limit=10)).items] == ["wf", "other_wf"]
        assert [w.id for w in store.list_workflows("u", "app", "OTHER", PageQuery(limit=10)).items] == ["other_wf"]
        assert [w.id for w in store.list_workflows("u", "app", "_", PageQuery(limit=10)).items] == ["other_wf"]
        assert store.delete_workflow("u", "app", "wf") and not store.delete_workflow("u", "app", "wf")
        assert store.get_workflow_version("u", "app", "wf") is None
        assert store.deprecate_workflow_pins("u", "app", "det", "", "gone") == 0  # its pins went with it
        store.delete_app("u", "app")
        assert store.get_workflow("u", "app", "other_wf") is None
    finally:
        store.close()


def test_a_deleted_app_deprecates_the_pins_of_its_models_in_other_apps(metadata_uri: str) -> None:
    """model_id "" (and version ""): every node pinning any model of the app, in any workflow."""
    store = open_metadata_store(metadata_uri)
    try:
        for app_id in ("app", "models", "kept"):
            store.insert_app(AppRecord(user_id="u", id=app_id, created_at=0, modified_at=0))
        pins = version(
            "wf",
            "v1",
            node("det", "det", "dv1", app_id="models"),
            node("cls", "cls", "cv1", "det", app_id="models"),
            node("own", "own", "ov1", "cls", app_id="kept"),
        )
        store.insert_workflow(WorkflowRecord("u", "app", "wf", 1, 1), pins)
        assert store.deprecate_workflow_pins("u", "models", "", "", "its model's app 'models' was deleted") == 2
        assert store.deprecate_workflow_pins("u", "models", "", "", "again") == 0  # the first reason stays
        deprecated = store.get_workflow_version("u", "app", "wf", "v1")
        assert deprecated is not None and sorted(deprecated.deleted_pins) == [
            ("cls", "its model's app 'models' was deleted"),
            ("det", "its model's app 'models' was deleted"),
        ]  # the node of the kept app's model is not deprecated
        assert store.deprecate_workflow_pins("v", "kept", "", "", "another user's app of that name") == 0
    finally:
        store.close()
