"""Rows to records and back: the JSON encodings of columns, shared by every metadata backend.

A row is anything indexable by column name (sqlite3.Row, a psycopg dict row); both
backends name their columns alike. No SQL lives here.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pellucid.server.records import (
    AnnotationRecord,
    AppRecord,
    ConceptRecord,
    ConceptValue,
    DataEntryRecord,
    DatasetRecord,
    DatasetStats,
    DatasetVersionRecord,
    FeatureSpec,
    IndexState,
    InputRecord,
    ModelRecord,
    ModelVersionRecord,
    OutputConfig,
    RegionRecord,
    RunnerRecord,
    TokenRecord,
    UserRecord,
)


def model_from_row(row: Any) -> ModelRecord:
    return ModelRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        id=row["id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        name=row["name"],
        description=row["description"],
        model_type_id=row["model_type_id"],
        input_fields=tuple(json.loads(row["input_fields"])),
        output_fields=tuple(json.loads(row["output_fields"])),
        **feature_specs_from_json(row["feature_specs"]),
    )


def feature_specs_json(model: ModelRecord) -> str:
    """A model's declared input and output features, as one JSON column."""
    return json.dumps(
        {
            "in": [spec_dict(spec) for spec in model.input_specs],
            "out": [spec_dict(spec) for spec in model.output_specs],
        }
    )


def spec_dict(spec: FeatureSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.type,
        "categories": list(spec.categories),
        "width": spec.width,
        "height": spec.height,
        "channels": spec.channels,
        "dtype": spec.dtype,
        "shape": list(spec.shape),
        "required": spec.required,
    }


def feature_spec_from_dict(given: dict[str, Any]) -> FeatureSpec:
    return FeatureSpec(
        name=given["name"],
        type=given["type"],
        categories=tuple(given.get("categories", ())),
        width=given.get("width", 0),
        height=given.get("height", 0),
        channels=given.get("channels", 0),
        dtype=given.get("dtype", ""),
        shape=tuple(given.get("shape", ())),
        required=given.get("required", True),
    )


def feature_specs_from_json(text: str | None) -> dict[str, tuple[FeatureSpec, ...]]:
    """ModelRecord's input_specs and output_specs from feature_specs_json (rows from before: none)."""
    specs = json.loads(text) if text else {}
    return {
        "input_specs": tuple(feature_spec_from_dict(s) for s in specs.get("in", ())),
        "output_specs": tuple(feature_spec_from_dict(s) for s in specs.get("out", ())),
    }


def output_info_json(v: ModelVersionRecord) -> str:
    """A model version's params, concepts and output config, as one JSON column."""
    return json.dumps(
        {
            "params": v.params,
            # the value is a concept's threshold for the thresholders (rows written before it had
            # none: 1.0, the default)
            "concepts": [[c.id, c.name, c.value] for c in v.concepts],
            "output_config": {
                "min_value": v.output_config.min_value,
                "max_concepts": v.output_config.max_concepts,
                "select_concepts": list(v.output_config.select_concepts),
            },
        }
    )


def model_version_from_row(row: Any) -> ModelVersionRecord:
    info = json.loads(row["output_info"])
    config = info.get("output_config", {})
    return ModelVersionRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        model_id=row["model_id"],
        id=row["id"],
        created_at=row["created_at"],
        description=row["description"],
        params=info.get("params", {}),
        concepts=tuple(ConceptValue(*c) for c in info.get("concepts", [])),
        output_config=OutputConfig(
            config.get("min_value", 0.0), config.get("max_concepts", 0), tuple(config.get("select_concepts", ()))
        ),
        runner_labels=tuple(json.loads(row["runner_labels"])),
        item_timeout_seconds=row["item_timeout_seconds"],
        metadata=json.loads(row["metadata"]),
    )


def runner_from_row(row: Any) -> RunnerRecord:
    return RunnerRecord(
        user_id=row["user_id"],
        id=row["id"],
        created_at=row["created_at"],
        labels=tuple(json.loads(row["labels"])),
        description=row["description"],
    )


def all_concepts(a: AnnotationRecord) -> list[ConceptValue]:
    return [*a.concepts, *(c for r in a.regions for c in r.concepts)]


@functools.lru_cache(maxsize=4096)  # a dataset has few distinct label sets: encode each once
def concepts_json(concepts: tuple[ConceptValue, ...]) -> str:
    if not concepts:
        return "[]"
    return json.dumps([{"id": c.id, "name": c.name, "value": c.value} for c in concepts])


def concepts_from(data: list[dict]) -> tuple[ConceptValue, ...]:
    return tuple(ConceptValue(c["id"], c.get("name", ""), c.get("value", 1.0)) for c in data)


def regions_json(regions: tuple[RegionRecord, ...]) -> str:
    if not regions:
        return "[]"
    return json.dumps(
        [
            {
                "id": r.id,
                "bbox": list(r.bbox) if r.bbox else None,
                "polygon": [list(p) for p in r.polygon] if r.polygon is not None else None,
                "concepts": json.loads(concepts_json(r.concepts)),
            }
            for r in regions
        ]
    )


def regions_from(text: str) -> tuple[RegionRecord, ...]:
    return tuple(
        RegionRecord(
            id=r["id"],
            bbox=tuple(r["bbox"]) if r["bbox"] else None,
            polygon=tuple(tuple(p) for p in r["polygon"]) if r["polygon"] is not None else None,
            concepts=concepts_from(r["concepts"]),
        )
        for r in json.loads(text)
    )


def stats_from_json(text: str) -> DatasetStats:
    return DatasetStats(**json.loads(text))


def dataset_from_row(row: Any) -> DatasetRecord:
    return DatasetRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        id=row["id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        description=row["description"],
        metadata=json.loads(row["metadata"]),
        input_count=row["input_count"],
    )


def dataset_version_from_row(row: Any) -> DatasetVersionRecord:
    return DatasetVersionRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        dataset_id=row["dataset_id"],
        id=row["id"],
        created_at=row["created_at"],
        description=row["description"],
        metadata=json.loads(row["metadata"]),
        stats=stats_from_json(row["stats"]),
    )


def input_from_row(user_id: str, app_id: str, row: Any, dataset_ids: tuple[str, ...]) -> InputRecord:
    geo = (row["geo_lon"], row["geo_lat"]) if row["geo_lon"] is not None else None
    return InputRecord(
        user_id=user_id,
        app_id=app_id,
        id=row["id"],
        input_type=row["input_type"],
        content_key=row["content_key"],
        created_at=row["created_at"],
        media_sha256=row["media_sha256"],
        media_size=row["media_size"],
        media_mime=row["media_mime"],
        media_url=row["media_url"],
        width=row["width"],
        height=row["height"],
        text=row["text"],
        text_url=row["text_url"],
        metadata=json.loads(metadata) if isinstance(metadata := row["metadata"], str) else metadata,  # JSONB: a dict
        geo=geo,
        labels=concepts_from(json.loads(row["labels"])),
        dataset_ids=dataset_ids,
        seq=row["seq"],
        index_state=IndexState(row["index_state"]),
        index_message=row["index_message"],
    )


def annotation_from_row(row: Any) -> AnnotationRecord:
    return AnnotationRecord(
        input_id=row["input_id"],
        id=row["id"],
        created_at=row["created_at"],
        concepts=concepts_from(json.loads(row["concepts"])),
        regions=regions_from(row["regions"]),
    )


def user_from_row(row: Any) -> UserRecord:
    return UserRecord(
        id=row["id"], is_admin=bool(row["is_admin"]), created_at=row["created_at"], metadata=json.loads(row["metadata"])
    )


# the user's columns beside a token's, in a join that authenticates with one read
TOKEN_USER_COLUMNS = "t.*, u.is_admin AS user_is_admin, u.metadata AS user_metadata, u.created_at AS user_created_at"


def token_and_user_from_row(row: Any) -> tuple[TokenRecord, UserRecord]:
    """A row of `SELECT TOKEN_USER_COLUMNS FROM tokens t JOIN users u ON u.id = t.user_id`."""
    user = {
        "id": row["user_id"],
        "is_admin": row["user_is_admin"],
        "metadata": row["user_metadata"],
        "created_at": row["user_created_at"],
    }
    return token_from_row(row), user_from_row(user)


def token_from_row(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        kind=row["kind"],
        token_hash=row["token_hash"],
        created_at=row["created_at"],
        description=row["description"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        request_id=row["request_id"],
    )


def app_from_row(row: Any) -> AppRecord:
    return AppRecord(
        user_id=row["user_id"],
        id=row["id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        name=row["name"],
        description=row["description"],
        base_workflow=row["base_workflow"],
        metadata=json.loads(row["metadata"]),
    )


def concept_from_row(row: Any) -> ConceptRecord:
    return ConceptRecord(
        user_id=row["user_id"], app_id=row["app_id"], id=row["id"], name=row["name"], created_at=row["created_at"]
    )


def data_entry_from_row(row: Any) -> DataEntryRecord:
    return DataEntryRecord(
        seq=row["seq"],
        owner=row["owner"],
        parent_seq=row["parent_seq"],
        name=row["name"],
        is_dir=bool(row["is_dir"]),
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        size=row["size"],
        sha256=row["sha256"],
        acl=row["acl"],
    )
