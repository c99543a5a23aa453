"""Which schema migrations a store still needs: every numbered one it has not applied, in order.

Migrations are numbered, and parts of the schema land in any order (each issue's part takes its
own number), so a store applies each number it has not recorded rather than only those above
its highest: a store at 14 that lacks 9 still gets 9.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TypeVar

Script = TypeVar("Script")


def pending_migrations(
    migrations: Sequence[tuple[int, Script]], applied: Collection[int], where: str
) -> list[tuple[int, Script]]:
    """The migrations not in `applied`, lowest number first; RuntimeError when the store holds a
    number this pellucid does not know (a newer pellucid wrote it: upgrade)."""
    known = {version for version, _ in migrations}
    if len(known) != len(migrations):
        raise AssertionError("two migrations share a number")
    unknown = sorted(set(applied) - known)
    if unknown:
        raise RuntimeError(
            f"{where} has schema version {unknown[-1]}, newer than this pellucid ({max(known)}): upgrade pellucid"
        )
    return sorted((m for m in migrations if m[0] not in applied), key=lambda m: m[0])
