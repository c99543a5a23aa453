"""PostgreSQL side of the SearchStore area: inputs selected by filters through indexes, index states.

A mixin of PostgresMetadataStore. Replicas share the database: claims take rows with
`FOR UPDATE SKIP LOCKED`, so two claimers never get the same input and neither waits.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from pellucid.server.records import IndexState, IndexWork, InputFilter, InputRecord
from pellucid.server.storage.search_sql import UNINDEXED_STATES, PostgresDialect, filters_where

Connection = psycopg.Connection[Any]
_DIALECT = PostgresDialect()


class PostgresSearchTables:
    """select/count by filters, inputs by seq, and the indexing states (needs _read, _write,
    _app_seq, _with_datasets and INPUT_SELECT of the input tables)."""

    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]
    _app_seq: Any
    _with_datasets: Any
    INPUT_SELECT: str

    def search_sql(
        self, user_id: str, app_id: str, filters: list[InputFilter], after_seq: int = 0, limit: int | None = None
    ) -> tuple[str, list[Any]]:
        """The statement select_inputs runs, and its parameters (to EXPLAIN it in tests)."""
        with self._read() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
        where, params = filters_where(_DIALECT, app_seq, filters)
        sql = f"SELECT i.seq AS seq FROM inputs i WHERE {where} AND i.seq > %s ORDER BY i.seq"
        params.append(after_seq)
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return sql, params

    def select_inputs(
        self, user_id: str, app_id: str, filters: list[InputFilter], after_seq: int = 0, limit: int | None = None
    ) -> list[int]:
        if limit is not None and limit <= 0:
            return []
        sql, params = self.search_sql(user_id, app_id, filters, after_seq, limit)
        with self._read() as conn:
            return [int(r["seq"]) for r in conn.execute(sql, params).fetchall()]

    def count_inputs(self, user_id: str, app_id: str, filters: list[InputFilter]) -> int:
        with self._read() as conn:
            where, params = filters_where(_DIALECT, self._app_seq(conn, user_id, app_id), filters)
            row = conn.execute(f"SELECT COUNT(*) AS n FROM inputs i WHERE {where}", params).fetchone()
        return int(row["n"]) if row else 0

    def inputs_by_seq(self, user_id: str, app_id: str, seqs: list[int]) -> dict[int, InputRecord]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self.INPUT_SELECT} FROM inputs i WHERE i.app_seq = %s AND i.seq = ANY(%s)",
                (self._app_seq(conn, user_id, app_id), sorted(set(seqs))),
            ).fetchall()
            return {r.seq: r for r in self._with_datasets(conn, user_id, app_id, rows)}

    def input_seqs(self, user_id: str, app_id: str, input_ids: list[str]) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, seq FROM inputs WHERE app_seq = %s AND id = ANY(%s)",
                (self._app_seq(conn, user_id, app_id), sorted(set(input_ids))),
            ).fetchall()
        return {r["id"]: int(r["seq"]) for r in rows}

    def claim_unindexed(self, limit: int, now: float, lease_seconds: float) -> list[IndexWork]:
        if limit <= 0:
            return []
        until = now + lease_seconds
        with self._write() as conn:
            claimed = conn.execute(
                "UPDATE inputs SET index_state = %s, index_claimed_until = %s WHERE seq IN (SELECT seq FROM inputs"
                f" WHERE index_state IN {UNINDEXED_STATES} AND (index_state = %s OR index_claimed_until < %s)"
                " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING seq",
                (int(IndexState.IN_PROGRESS), until, int(IndexState.PENDING), now, limit),
            ).fetchall()
            if not claimed:
                return []
            rows = conn.execute(
                f"SELECT {self.INPUT_SELECT}, a.user_id AS app_user_id, a.id AS app_id, a.base_workflow AS base_workflow"
                " FROM inputs i JOIN apps a ON a.seq = i.app_seq WHERE i.seq = ANY(%s) ORDER BY i.seq",
                ([int(r["seq"]) for r in claimed],),
            ).fetchall()
            by_app: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for row in rows:
                by_app.setdefault((row["app_user_id"], row["app_id"]), []).append(row)
            work: list[IndexWork] = []
            for (user_id, app_id), app_rows in by_app.items():
                workflow = app_rows[0]["base_workflow"]
                work += [IndexWork(r, workflow, until) for r in self._with_datasets(conn, user_id, app_id, app_rows)]
        return sorted(work, key=lambda w: w.input.seq)

    def finish_indexing(self, results: list[tuple[int, IndexState, str]]) -> None:
        if not results:
            return
        ordered = sorted(results)  # one lock order for every replica
        with self._write() as conn:
            conn.execute(
                "UPDATE inputs i SET index_state = r.state, index_message = r.message, index_claimed_until = NULL"
                " FROM unnest(%s::bigint[], %s::integer[], %s::text[]) AS r(seq, state, message)"
                " WHERE i.seq = r.seq AND i.index_state = %s",
                (
                    [seq for seq, _, _ in ordered],
                    [int(state) for _, state, _ in ordered],
                    [message for _, _, message in ordered],
                    int(IndexState.IN_PROGRESS),
                ),
            )

    def reset_indexing(self, user_id: str, app_id: str, input_types: tuple[str, ...]) -> int:
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            conn.execute(
                "UPDATE inputs SET index_state = CASE WHEN input_type = ANY(%s) THEN %s ELSE %s END,"
                " index_message = '', index_claimed_until = NULL WHERE app_seq = %s",
                (sorted(set(input_types)), int(IndexState.PENDING), int(IndexState.READY), app_seq),
            )
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM inputs WHERE app_seq = %s AND index_state = %s",
                (app_seq, int(IndexState.PENDING)),
            ).fetchone()
        return int(row["n"]) if row else 0

    def index_counts(self, user_id: str, app_id: str) -> dict[IndexState, int]:
        counts = dict.fromkeys(IndexState, 0)
        with self._read() as conn:
            for row in conn.execute(
                "SELECT index_state, COUNT(*) AS n FROM inputs WHERE app_seq = %s GROUP BY index_state",
                (self._app_seq(conn, user_id, app_id),),
            ):
                counts[IndexState(row["index_state"])] = int(row["n"])
        return counts
