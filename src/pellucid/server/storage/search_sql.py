"""The WHERE clause of a search's filters over `inputs i`, in SQLite's or PostgreSQL's SQL.

Every field goes through an index: concepts through `input_concepts` (app, concept, value,
input), datasets through `dataset_inputs`, types, states and ids through `inputs`' own indexes,
geo through (app, lat, lon), metadata through PostgreSQL's GIN index on the JSONB column or
SQLite's `input_terms` (then an exact containment check on the candidates). A predicate is
never NULL, so `NOT` complements it exactly within the app.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pellucid.server.records import InputFilter
from pellucid.server.storage.search_terms import EARTH_RADIUS_KM, metadata_terms, polarity, radius_box

# claim_unindexed's partial index covers these states (PENDING, IN_PROGRESS)
UNINDEXED_STATES = "(30001, 30003)"


class Dialect:
    """What differs between the backends' SQL for the same filter."""

    mark = "?"

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join([self.mark] * len(values))})", list(values)

    def metadata(self, app_seq: int, wanted: dict[str, Any]) -> tuple[str, list[Any]]:
        raise NotImplementedError

    def distance_km(self, longitude: float, latitude: float) -> tuple[str, list[Any]]:
        raise NotImplementedError


class SqliteDialect(Dialect):
    """Metadata through the terms table, then `pellucid_contains` (registered on every connection);
    distances by `pellucid_km` (likewise)."""

    def metadata(self, app_seq: int, wanted: dict[str, Any]) -> tuple[str, list[Any]]:
        terms = sorted(metadata_terms(wanted))
        check = "pellucid_contains(i.metadata, ?)"
        if not terms:  # {} or only empty containers: no leaf to look up, the check decides alone
            return check, [json.dumps(wanted)]
        listed, params = self.in_list("t.term", terms)
        return (
            f"i.seq IN (SELECT t.input_seq FROM input_terms t WHERE t.app_seq = ? AND {listed}"
            f" GROUP BY t.input_seq HAVING COUNT(*) = {len(terms)}) AND {check}",
            [app_seq, *params, json.dumps(wanted)],
        )

    def distance_km(self, longitude: float, latitude: float) -> tuple[str, list[Any]]:
        return "pellucid_km(i.geo_lon, i.geo_lat, ?, ?)", [longitude, latitude]


class PostgresDialect(Dialect):
    mark = "%s"

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]

    def metadata(self, app_seq: int, wanted: dict[str, Any]) -> tuple[str, list[Any]]:
        return "i.metadata @> %s::jsonb", [json.dumps(wanted)]

    def distance_km(self, longitude: float, latitude: float) -> tuple[str, list[Any]]:
        return (
            f"2 * {EARTH_RADIUS_KM} * asin(least(1.0, sqrt(power(sin(radians(i.geo_lat - %s) / 2), 2)"
            " + cos(radians(%s)) * cos(radians(i.geo_lat)) * power(sin(radians(i.geo_lon - %s) / 2), 2))))",
            [latitude, latitude, longitude],
        )


def filters_where(dialect: Dialect, app_seq: int, filters: Sequence[InputFilter]) -> tuple[str, list[Any]]:
    """`i.app_seq = ? AND (filter) AND NOT (negated filter) ...` and its parameters."""
    m = dialect.mark
    clauses, params = [f"i.app_seq = {m}"], list[Any]([app_seq])
    for f in filters:
        sql, values = _filter(dialect, app_seq, f)
        clauses.append(f"NOT ({sql})" if f.negate else f"({sql})")
        params += values
    return " AND ".join(clauses), params


def _filter(d: Dialect, app_seq: int, f: InputFilter) -> tuple[str, list[Any]]:
    """One filter's fields ANDed (values of a field ORed); no field set matches every input."""
    m = d.mark
    parts: list[str] = []
    params: list[Any] = []

    def add(sql: str, values: list[Any]) -> None:
        parts.append(sql)
        params.extend(values)

    if f.input_types:
        add(*d.in_list("i.input_type", sorted(set(f.input_types))))
    if f.status_codes:
        add(*d.in_list("i.index_state", sorted({int(s) for s in f.status_codes})))
    if f.input_ids:
        add(*d.in_list("i.id", sorted(set(f.input_ids))))
    if f.dataset_ids:
        listed, values = d.in_list("d.id", sorted(set(f.dataset_ids)))
        add(
            "i.seq IN (SELECT di.input_seq FROM dataset_inputs di JOIN datasets d ON d.seq = di.dataset_seq"
            f" WHERE d.app_seq = {m} AND {listed})",
            [app_seq, *values],
        )
    if f.concepts:
        by_value: dict[float, set[str]] = {}
        for concept_id, value in f.concepts:
            by_value.setdefault(polarity(value), set()).add(concept_id)
        alternatives, values = [], list[Any]()
        for value, ids in sorted(by_value.items()):
            listed, listed_values = d.in_list("c.concept_id", sorted(ids))
            alternatives.append(f"(c.app_seq = {m} AND {listed} AND c.value = {m})")
            values += [app_seq, *listed_values, value]
        add(f"i.seq IN (SELECT c.input_seq FROM input_concepts c WHERE {' OR '.join(alternatives)})", values)
    if f.metadata is not None:
        add(*d.metadata(app_seq, f.metadata))
    if f.geo is not None:
        geo = f.geo
        if geo.radius_km > 0 or geo.box is None:
            min_lat, max_lat, lon_ranges = radius_box(geo.longitude, geo.latitude, geo.radius_km)
            distance, distance_values = d.distance_km(geo.longitude, geo.latitude)
            check, check_values = f" AND {distance} <= {m}", [*distance_values, geo.radius_km]
        else:
            min_lon, min_lat, max_lon, max_lat = geo.box
            lon_ranges, check, check_values = [(min_lon, max_lon)], "", []
        sql = f"i.geo_lat IS NOT NULL AND i.geo_lat BETWEEN {m} AND {m}"
        values = [min_lat, max_lat]
        if lon_ranges is not None:
            sql += " AND (" + " OR ".join([f"i.geo_lon BETWEEN {m} AND {m}"] * len(lon_ranges)) + ")"
            values += [v for r in lon_ranges for v in r]
        add(sql + check, values + check_values)
    if not parts:
        return "1 = 1", []
    return " AND ".join(parts), params
