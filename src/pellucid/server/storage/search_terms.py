"""What both metadata backends derive from inputs to filter them through indexes (issue #10).

Pure Python, no SQL: the rows of the concept table (one per concept of an input's labels or
annotations), SQLite's metadata terms (one per leaf path and value), the exact containment
check those terms preselect for, and the geometry of a geo filter.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

from pellucid.server.records import AnnotationRecord, ConceptValue

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
_MAX_TERM = 200  # longer terms are stored as a digest: an index of short keys


def polarity(value: float) -> float:
    """A concept's value as the filter sees it: 1.0 = present (any value above 0), 0.0 = a negative."""
    return 1.0 if value > 0 else 0.0


def concept_pairs(concepts: Iterable[ConceptValue]) -> set[tuple[str, float]]:
    """The distinct (concept id, polarity) pairs of labels or of an annotation (regions included)."""
    return {(c.id, polarity(c.value)) for c in concepts}


_encode_string = json.encoder.encode_basestring  # C: json.dumps(s, ensure_ascii=False) without its overhead


def canonical(value: Any) -> str:
    """One spelling per JSON scalar: 1 and 1.0 are the same number (as in JSONB and protobuf Structs)."""
    if isinstance(value, str):
        return _encode_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int) and abs(value) < 2**63:
        return str(value)
    number = float(value)
    if number.is_integer() and abs(number) < 2**63:
        return str(int(number))
    return repr(number)


def metadata_terms(metadata: dict[str, Any]) -> set[str]:
    """One term per leaf: its key path and its value ('a.b=' + canonical value); the elements of a
    list are leaves of the list's path. A filter's terms are a subset of the terms of every input
    it contains; the converse needs `contains` (paths may be ambiguous, lists nest)."""
    terms: set[str] = set()
    _add_terms(metadata, "", terms)
    return terms


def _add_terms(value: Any, path: str, terms: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _add_terms(item, f"{path}.{key}" if path else key, terms)
    elif isinstance(value, list):
        for item in value:
            _add_terms(item, path, terms)
    else:
        term = f"{path}={canonical(value)}"
        terms.add(term if len(term) <= _MAX_TERM else "#" + hashlib.sha256(term.encode()).hexdigest())


def contains(stored: Any, wanted: Any) -> bool:
    """JSONB's `@>` for a filter object: every key of `wanted` is in `stored` with a value it
    contains; each element of a wanted list is contained in some element of the stored list;
    scalars are equal (numbers by value, booleans only to booleans)."""
    if isinstance(wanted, dict):
        return isinstance(stored, dict) and all(k in stored and contains(stored[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(stored, list) and all(any(contains(s, w) for s in stored) for w in wanted)
    if isinstance(stored, dict | list) or isinstance(stored, bool) != isinstance(wanted, bool):
        return False
    if isinstance(stored, int | float) and isinstance(wanted, int | float):
        return stored == wanted
    return type(stored) is type(wanted) and stored == wanted


def haversine_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance on the mean Earth sphere."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def radius_box(
    longitude: float, latitude: float, radius_km: float
) -> tuple[float, float, list[tuple[float, float]] | None]:
    """(min_lat, max_lat, longitude ranges or None for all) holding every point within radius_km:
    the index narrows to it, the exact distance decides. A small margin absorbs rounding."""
    margin = 1e-6
    angle = radius_km / EARTH_RADIUS_KM
    dlat = math.degrees(angle) + margin
    min_lat, max_lat = latitude - dlat, latitude + dlat
    if angle >= math.pi / 2 or min_lat <= -90 or max_lat >= 90:
        return max(min_lat, -90.0), min(max_lat, 90.0), None  # a pole is inside: every longitude
    dlon = math.degrees(math.asin(min(1.0, math.sin(angle) / math.cos(math.radians(latitude))))) + margin
    low, high = longitude - dlon, longitude + dlon
    if low < -180:
        return min_lat, max_lat, [(low + 360, 180.0), (-180.0, high)]
    if high > 180:
        return min_lat, max_lat, [(low, 180.0), (-180.0, high - 360)]
    return min_lat, max_lat, [(low, high)]


# rows of input_concepts (app_seq, concept_id, value, input_seq, annotation_seq) and of
# input_terms (app_seq, term, input_seq), in both backends' column order


def label_rows(app_seq: int, input_seq: int, labels: Iterable[ConceptValue]) -> list[tuple[Any, ...]]:
    return [(app_seq, cid, value, input_seq, None) for cid, value in concept_pairs(labels)]


def annotation_rows(
    app_seq: int, input_seq: int, annotation_seq: int, annotation: AnnotationRecord
) -> list[tuple[Any, ...]]:
    """The annotation's concepts and those of its regions."""
    every = [*annotation.concepts, *(c for r in annotation.regions for c in r.concepts)]
    return [(app_seq, cid, value, input_seq, annotation_seq) for cid, value in concept_pairs(every)]


def term_rows(app_seq: int, input_seq: int, metadata: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(app_seq, term, input_seq) for term in metadata_terms(metadata)] if metadata else []
