"""Workflow rows <-> records, shared by the SQLite and PostgreSQL backends."""

from __future__ import annotations

import json
from typing import Any

from pellucid.server.records import WorkflowNodeRecord, WorkflowRecord, WorkflowVersionRecord


def nodes_json(nodes: tuple[WorkflowNodeRecord, ...]) -> str:
    return json.dumps(
        [
            {
                "id": n.id,
                "model_user_id": n.model_user_id,
                "model_app_id": n.model_app_id,
                "model_id": n.model_id,
                "model_version_id": n.model_version_id,
                "model_type_id": n.model_type_id,
                "params": n.params,
                "node_inputs": list(n.node_inputs),
            }
            for n in nodes
        ]
    )


def nodes_from(text: str) -> tuple[WorkflowNodeRecord, ...]:
    return tuple(
        WorkflowNodeRecord(
            id=n["id"],
            model_user_id=n["model_user_id"],
            model_app_id=n["model_app_id"],
            model_id=n["model_id"],
            model_version_id=n["model_version_id"],
            model_type_id=n.get("model_type_id", ""),
            params=n.get("params", {}),
            node_inputs=tuple(n.get("node_inputs", ())),
        )
        for n in json.loads(text)
    )


def pin_rows(version_seq: int, version: WorkflowVersionRecord) -> list[tuple[Any, ...]]:
    """One row per node: what `deprecate_workflow_pins` looks up when a model version goes."""
    return [(version_seq, n.id, n.model_user_id, n.model_app_id, n.model_id, n.model_version_id) for n in version.nodes]


def workflow_from_row(row: Any) -> WorkflowRecord:
    return WorkflowRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        id=row["id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        description=row["description"],
        metadata=json.loads(row["metadata"]),
    )


def workflow_version_from_row(row: Any, deleted_pins: list[tuple[str, str]]) -> WorkflowVersionRecord:
    return WorkflowVersionRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        workflow_id=row["workflow_id"],
        id=row["id"],
        created_at=row["created_at"],
        nodes=nodes_from(row["nodes"]),
        description=row["description"],
        metadata=json.loads(row["metadata"]),
        deleted_pins=tuple(deleted_pins),
    )
