"""PostgreSQL tables of algorithms, their tags, calls and insights (a mixin of PostgresMetadataStore)."""

from __future__ import annotations

from typing import Any

from pellucid.server.records import (
    AlgorithmCallRecord,
    AlgorithmRecord,
    AlgorithmTagRecord,
    InsightRecord,
    Page,
    PageQuery,
)
from pellucid.server.storage import algorithm_rows as rows


def _q(template: str) -> str:
    return rows.sql(template, "%s")


class PostgresAlgorithmTables:
    _read: Any
    _write: Any
    _page: Any

    def save_algorithm(self, algorithm: AlgorithmRecord) -> None:
        with self._write() as conn:
            cursor = conn.execute(_q(rows.SAVE_ALGORITHM), rows.algorithm_params(algorithm))
            if cursor.rowcount != 1:
                raise LookupError(f"model {algorithm.model_id!r} of app {algorithm.app_id!r} does not exist")

    def get_algorithm(self, user_id: str, name: str) -> AlgorithmRecord | None:
        with self._read() as conn:
            row = conn.execute(_q(rows.ALGORITHM_SELECT) + " AND al.name = %s", (user_id, name)).fetchone()
        return rows.algorithm_from_row(row) if row else None

    def list_algorithms(self, user_id: str, public_only: bool, query: PageQuery) -> Page[AlgorithmRecord]:
        sql = _q(rows.ALGORITHM_SELECT) + (" AND al.public" if public_only else "")
        return self._page(sql, (user_id,), query, rows.algorithm_from_row, seq="al.seq")

    def insert_algorithm_tag(self, tag: AlgorithmTagRecord) -> None:
        with self._write() as conn:  # a unique violation is a Conflict
            cursor = conn.execute(_q(rows.INSERT_TAG), (tag.tag, tag.created_at, tag.user_id, tag.name, tag.version_id))
            if cursor.rowcount != 1:
                raise LookupError(f"algorithm {tag.user_id}/{tag.name} or its version {tag.version_id} does not exist")

    def list_algorithm_tags(self, user_id: str, name: str) -> list[AlgorithmTagRecord]:
        with self._read() as conn:
            return [rows.tag_from_row(r) for r in conn.execute(_q(rows.TAG_SELECT), (user_id, name)).fetchall()]

    def insert_algorithm_call(self, call: AlgorithmCallRecord) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                _q(rows.INSERT_CALL), (call.id, call.version_id, call.caller, call.created_at, call.user_id, call.name)
            )
            if cursor.rowcount != 1:
                raise LookupError(f"algorithm {call.user_id}/{call.name} does not exist")

    def get_algorithm_call(self, call_id: str) -> AlgorithmCallRecord | None:
        with self._read() as conn:
            row = conn.execute(_q(rows.CALL_SELECT), (call_id,)).fetchone()
        return rows.call_from_row(row) if row else None

    def purge_algorithm_calls(self, older_than: float) -> int:
        with self._write() as conn:
            return int(conn.execute(_q(rows.PURGE_CALLS), (older_than,)).rowcount)

    def insert_insights(self, insight: InsightRecord, max_reports: int) -> bool:
        with self._write() as conn:
            conn.execute(_q(rows.LOCK_CALL_INSIGHTS), (insight.call_id,))
            if int(conn.execute(_q(rows.COUNT_CALL_INSIGHTS), (insight.call_id,)).fetchone()["n"]) >= max_reports:
                return False
            cursor = conn.execute(_q(rows.INSERT_INSIGHTS), rows.insight_params(insight))
            if cursor.rowcount != 1:
                raise LookupError(f"algorithm {insight.user_id}/{insight.name} does not exist")
        return True

    def list_insights(self, user_id: str, name: str, query: PageQuery) -> Page[InsightRecord]:
        return self._page(_q(rows.INSIGHT_SELECT), (user_id, name), query, rows.insight_from_row, seq="i.seq")
