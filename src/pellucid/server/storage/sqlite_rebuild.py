"""SQLite table rebuilds (https://www.sqlite.org/lang_altertable.html#otheralter) and migration 19,
which rebuilds `inputs` so its seqs are never reused.

An input's seq keys data outside its row: its vectors in the vector index, dataset version
snapshots, evaluation items, search paging cursors, indexing claims. `seq INTEGER PRIMARY KEY`
alone hands out max(seq) + 1, so once the newest input is deleted the next one took its seq,
and a late vector removal (or a snapshot, a cursor) of the old input hit the new one.
AUTOINCREMENT never goes below the highest seq it has recorded in sqlite_sequence.
"""

from __future__ import annotations

import re
import sqlite3


def rebuild_table(conn: sqlite3.Connection, table: str, new_definition: str) -> None:
    """Replace `table` by one made with `new_definition` (a CREATE TABLE of `new_<table>` with the
    same column names), keeping every row, index, trigger and view: steps 3 to 9 of SQLite's
    procedure. Steps 1, 2, 10, 11 and 12 (foreign keys off, the transaction, PRAGMA
    foreign_key_check, commit, foreign keys on) are the caller's: SqliteMetadataStore._migrate."""
    if conn.execute("PRAGMA foreign_keys").fetchone()[0]:
        # DROP TABLE would delete every row first, cascading into the tables that reference it
        raise RuntimeError(f"rebuilding {table} needs foreign keys off (outside the transaction)")
    temporary = f"new_{table}"
    # 3: what else the table has, to make again (a UNIQUE constraint's index comes with the table)
    dependents = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger')"
        " AND sql IS NOT NULL ORDER BY rowid",
        (table,),
    ).fetchall()
    views = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY rowid").fetchall()
    for name, _ in views:  # a view on the table would block the rename
        conn.execute(f'DROP VIEW "{name}"')
    # 4-7: the new table, the rows, the old one gone and the new one in its place
    conn.execute(new_definition)
    columns = ", ".join(f'"{row[1]}"' for row in conn.execute(f'PRAGMA table_info("{table}")'))
    conn.execute(f'INSERT INTO "{temporary}" ({columns}) SELECT {columns} FROM "{table}" ORDER BY rowid')
    conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f'ALTER TABLE "{temporary}" RENAME TO "{table}"')
    # 8-9: indexes, triggers and views as they were
    for _, _, sql in dependents:
        conn.execute(sql)
    for _, sql in views:
        conn.execute(sql)


_SEQ_COLUMN = re.compile(r"\bseq\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s+AUTOINCREMENT)", re.IGNORECASE)


def autoincrement_definition(conn: sqlite3.Connection, table: str) -> str:
    """The CREATE TABLE of `new_<table>`: the table's own, as it stands after every ALTER, with its
    `seq INTEGER PRIMARY KEY` made AUTOINCREMENT."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if row is None:
        raise RuntimeError(f"no table {table} to rebuild")
    head = re.compile(rf'^CREATE\s+TABLE\s+"?{re.escape(table)}"?\s*\(', re.IGNORECASE)
    definition, heads = head.subn(f"CREATE TABLE new_{table} (", row[0])
    definition, keys = _SEQ_COLUMN.subn("seq INTEGER PRIMARY KEY AUTOINCREMENT", definition)
    if heads != 1 or keys != 1:
        raise RuntimeError(f"cannot make {table}.seq AUTOINCREMENT: unexpected definition {row[0]!r}")
    return definition


def input_seq_high_water(conn: sqlite3.Connection) -> int:
    """The highest input seq the database names anywhere: the inputs' own, and every column that
    holds one (`input_seq`, `*_input_seq`), including those that outlive their input (dataset
    version snapshots, evaluation items and cursors). A deleted input named nowhere left no trace."""
    highest = conn.execute("SELECT MAX(seq) FROM inputs").fetchone()[0] or 0
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for column in conn.execute(f'PRAGMA table_info("{table}")'):
            name = column[1]
            if name == "input_seq" or name.endswith("_input_seq"):
                found = conn.execute(f'SELECT MAX("{name}") FROM "{table}"').fetchone()[0]
                if isinstance(found, int):
                    highest = max(highest, found)
    return highest


def never_reuse_input_seqs(conn: sqlite3.Connection) -> None:
    """19: rebuild `inputs` with `seq INTEGER PRIMARY KEY AUTOINCREMENT`, its sqlite_sequence entry
    at the highest input seq the database names, so no seq handed out before is handed out again."""
    rebuild_table(conn, "inputs", autoincrement_definition(conn, "inputs"))
    highest = input_seq_high_water(conn)
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'inputs'")
    if highest:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('inputs', ?)", (highest,))
