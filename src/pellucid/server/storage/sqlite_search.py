"""SQLite side of the SearchStore area: inputs selected by filters through indexes, index states.

A mixin of SqliteMetadataStore: it uses its connections, transactions and the input tables'
helpers (`_app_seq`, `_with_datasets`).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from pellucid.server.records import IndexState, IndexWork, InputFilter, InputRecord
from pellucid.server.storage.search_sql import UNINDEXED_STATES, SqliteDialect, filters_where
from pellucid.server.storage.search_terms import contains, haversine_km


@functools.lru_cache(maxsize=64)
def _wanted(text: str) -> Any:
    return json.loads(text)


def _contains(stored: str | None, wanted: str) -> int:
    return int(stored is not None and contains(json.loads(stored), _wanted(wanted)))


def _km(lon: float | None, lat: float | None, lon0: float, lat0: float) -> float | None:
    return None if lon is None or lat is None else haversine_km(lon, lat, lon0, lat0)


# SQL functions the filters call (registered on every connection of the store)
SEARCH_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "pellucid_contains": (2, _contains),
    "pellucid_km": (4, _km),
}

_DIALECT = SqliteDialect()


class SearchTables:
    """select/count by filters, inputs by seq, and the indexing states (needs _conn, _write,
    _app_seq, _with_datasets and INPUT_SELECT of the input tables)."""

    _conn: Any
    _write: Any
    _app_seq: Any
    _with_datasets: Any
    INPUT_SELECT: str  # "i.seq AS seq, i.id AS id, ..." of every column an InputRecord needs

    def search_sql(
        self, user_id: str, app_id: str, filters: list[InputFilter], after_seq: int = 0, limit: int | None = None
    ) -> tuple[str, list[Any]]:
        """The statement select_inputs runs, and its parameters (to EXPLAIN it in tests)."""
        where, params = filters_where(_DIALECT, self._app_seq(self._conn(), user_id, app_id), filters)
        sql = f"SELECT i.seq FROM inputs i WHERE {where} AND i.seq > ? ORDER BY i.seq"
        params.append(after_seq)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    def select_inputs(
        self, user_id: str, app_id: str, filters: list[InputFilter], after_seq: int = 0, limit: int | None = None
    ) -> list[int]:
        if limit is not None and limit <= 0:
            return []
        sql, params = self.search_sql(user_id, app_id, filters, after_seq, limit)
        return [seq for (seq,) in self._conn().execute(sql, params)]

    def count_inputs(self, user_id: str, app_id: str, filters: list[InputFilter]) -> int:
        conn = self._conn()
        where, params = filters_where(_DIALECT, self._app_seq(conn, user_id, app_id), filters)
        return int(conn.execute(f"SELECT COUNT(*) FROM inputs i WHERE {where}", params).fetchone()[0])

    def inputs_by_seq(self, user_id: str, app_id: str, seqs: list[int]) -> dict[int, InputRecord]:
        conn = self._conn()
        app_seq = self._app_seq(conn, user_id, app_id)
        rows: list[sqlite3.Row] = []
        unique = sorted(set(seqs))
        for start in range(0, len(unique), 900):
            part = unique[start : start + 900]
            rows += conn.execute(
                f"SELECT {self.INPUT_SELECT} FROM inputs i WHERE i.app_seq = ? AND i.seq IN ({','.join('?' * len(part))})",
                (app_seq, *part),
            ).fetchall()
        return {r.seq: r for r in self._with_datasets(conn, user_id, app_id, rows)}

    def input_seqs(self, user_id: str, app_id: str, input_ids: list[str]) -> dict[str, int]:
        conn = self._conn()
        app_seq = self._app_seq(conn, user_id, app_id)
        found: dict[str, int] = {}
        unique = sorted(set(input_ids))
        for start in range(0, len(unique), 900):
            part = unique[start : start + 900]
            for input_id, seq in conn.execute(
                f"SELECT id, seq FROM inputs WHERE app_seq = ? AND id IN ({','.join('?' * len(part))})",
                (app_seq, *part),
            ):
                found[input_id] = seq
        return found

    def claim_unindexed(self, limit: int, now: float, lease_seconds: float) -> list[IndexWork]:
        if limit <= 0:
            return []
        until = now + lease_seconds
        with self._write() as conn:  # one write transaction: no other claimer runs in between
            seqs = [
                seq
                for (seq,) in conn.execute(
                    f"SELECT seq FROM inputs WHERE index_state IN {UNINDEXED_STATES}"
                    " AND (index_state = ? OR index_claimed_until < ?) ORDER BY seq LIMIT ?",
                    (int(IndexState.PENDING), now, limit),
                )
            ]
            if not seqs:
                return []
            marks = ",".join("?" * len(seqs))
            conn.execute(
                f"UPDATE inputs SET index_state = ?, index_claimed_until = ? WHERE seq IN ({marks})",
                (int(IndexState.IN_PROGRESS), until, *seqs),
            )
            rows = conn.execute(
                f"SELECT {self.INPUT_SELECT}, a.user_id AS app_user_id, a.id AS app_id, a.base_workflow AS base_workflow"
                f" FROM inputs i JOIN apps a ON a.seq = i.app_seq WHERE i.seq IN ({marks}) ORDER BY i.seq",
                seqs,
            ).fetchall()
            by_app: dict[tuple[str, str], list[sqlite3.Row]] = {}
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
        with self._write() as conn:
            conn.executemany(
                "UPDATE inputs SET index_state = ?, index_message = ?, index_claimed_until = NULL"
                " WHERE seq = ? AND index_state = ?",
                [(int(state), message, seq, int(IndexState.IN_PROGRESS)) for seq, state, message in results],
            )

    def reset_indexing(self, user_id: str, app_id: str, input_types: tuple[str, ...]) -> int:
        types = sorted(set(input_types))
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            conn.execute(
                "UPDATE inputs SET index_state = CASE WHEN input_type IN"
                f" ({','.join('?' * len(types))}) THEN ? ELSE ? END, index_message = '', index_claimed_until = NULL"
                " WHERE app_seq = ?",
                (*types, int(IndexState.PENDING), int(IndexState.READY), app_seq),
            )
            row = conn.execute(
                "SELECT COUNT(*) FROM inputs WHERE app_seq = ? AND index_state = ?", (app_seq, int(IndexState.PENDING))
            ).fetchone()
        return int(row[0])

    def index_counts(self, user_id: str, app_id: str) -> dict[IndexState, int]:
        conn = self._conn()
        counts = dict.fromkeys(IndexState, 0)
        for state, n in conn.execute(
            "SELECT index_state, COUNT(*) FROM inputs WHERE app_seq = ? GROUP BY index_state",
            (self._app_seq(conn, user_id, app_id),),
        ):
            counts[IndexState(state)] = n
        return counts
