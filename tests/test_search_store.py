"""The SearchStore contract (issue #10) over SQLite and PostgreSQL: filters select exactly what the
documented semantics select (checked against a brute-force evaluation in plain Python), through
indexes; index states are claimed once, finished, reset and counted; old stores migrate."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pellucid.server.records import (
    AnnotationRecord,
    AppRecord,
    ConceptRecord,
    ConceptValue,
    DatasetRecord,
    GeoFilter,
    IndexState,
    IngestItem,
    InputFilter,
    InputRecord,
    RegionRecord,
)
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.base import MetadataStore
from pellucid.server.storage.search_terms import EARTH_RADIUS_KM

USER, APP, OTHER_APP = "u", "app", "other"
TYPES = ("image", "text", "video", "audio")
DATASETS = ("d1", "d2", "d3")
CONCEPTS = ("cat", "dog", "car", "tree", "sky")
CENTERS = [(2.35, 48.85), (179.6, -16.5), (-122.4, 37.8), (10.0, 88.9)]  # Paris, Fiji (antimeridian), SF, polar


@pytest.fixture
def store(metadata_uri: str) -> Iterator[MetadataStore]:
    opened = open_metadata_store(metadata_uri)
    yield opened
    opened.close()


def _app(store: MetadataStore, app_id: str, workflow: str = "Universal") -> None:
    store.insert_app(AppRecord(user_id=USER, id=app_id, created_at=0, modified_at=0, base_workflow=workflow))
    for dataset_id in DATASETS:
        store.insert_dataset(DatasetRecord(user_id=USER, app_id=app_id, id=dataset_id, created_at=0, modified_at=0))


def _record(input_id: str, app_id: str = APP, **fields: Any) -> InputRecord:
    fields.setdefault("input_type", "text")
    return InputRecord(user_id=USER, app_id=app_id, id=input_id, content_key=f"k-{input_id}", created_at=0, **fields)


def _ingest(store: MetadataStore, app_id: str, items: list[IngestItem]) -> None:
    concepts = {c.id for item in items for c in item.input.labels} | {
        c.id
        for item in items
        for a in item.annotations
        for c in (*a.concepts, *(x for r in a.regions for x in r.concepts))
    }
    store.ingest(USER, app_id, items, [ConceptRecord(USER, app_id, c, c, 0) for c in sorted(concepts)], None)


def _sql(store: MetadataStore, sql: str) -> list[Any]:
    """Rows of a statement run on the backend itself (to look at its tables and plans)."""
    if hasattr(store, "_read"):
        with store._read() as conn:
            return [tuple(r.values()) for r in conn.execute(sql).fetchall()]
    return [tuple(r) for r in store._conn().execute(sql).fetchall()]


# the documented semantics, evaluated by brute force over what the test stored


def _jsonb_contains(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(stored, dict) and all(
            k in stored and _jsonb_contains(stored[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(stored, list) and all(any(_jsonb_contains(s, w) for s in stored) for w in wanted)
    if isinstance(stored, dict | list) or isinstance(stored, bool) != isinstance(wanted, bool):
        return False
    return bool(stored == wanted)


def _km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    dlat, dlon = math.radians(lat2 - lat1), math.radians(lon2 - lon1)
    h = math.sin(dlat / 2) ** 2 + math.cos(math.radians(lat1)) * math.cos(math.radians(lat2)) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


class Truth:
    """What the test stored, per input: the reference the store's answers are checked against."""

    def __init__(self) -> None:
        self.inputs: dict[str, InputRecord] = {}
        self.datasets: dict[str, set[str]] = {}
        self.annotations: dict[tuple[str, str], AnnotationRecord] = {}
        self.states: dict[str, IndexState] = {}

    def concepts(self, input_id: str) -> set[tuple[str, float]]:
        found = {(c.id, 1.0 if c.value > 0 else 0.0) for c in self.inputs[input_id].labels}
        for (owner, _), a in self.annotations.items():
            if owner == input_id:
                every = [*a.concepts, *(c for r in a.regions for c in r.concepts)]
                found |= {(c.id, 1.0 if c.value > 0 else 0.0) for c in every}
        return found

    def matches(self, input_id: str, f: InputFilter) -> bool:
        record = self.inputs[input_id]
        checks = []
        if f.input_types:
            checks.append(record.input_type in f.input_types)
        if f.dataset_ids:
            checks.append(bool(self.datasets[input_id] & set(f.dataset_ids)))
        if f.status_codes:
            checks.append(self.states[input_id] in f.status_codes)
        if f.input_ids:
            checks.append(input_id in f.input_ids)
        if f.concepts:
            mine = self.concepts(input_id)
            checks.append(any((cid, 1.0 if v > 0 else 0.0) in mine for cid, v in f.concepts))
        if f.metadata is not None:
            checks.append(_jsonb_contains(record.metadata, f.metadata))
        if f.geo is not None:
            if record.geo is None:
                checks.append(False)
            elif f.geo.radius_km > 0:
                checks.append(_km(*record.geo, f.geo.longitude, f.geo.latitude) <= f.geo.radius_km)
            else:
                assert f.geo.box is not None
                min_lon, min_lat, max_lon, max_lat = f.geo.box
                lon, lat = record.geo
                checks.append(min_lon <= lon <= max_lon and min_lat <= lat <= max_lat)
        return all(checks) != f.negate

    def select(self, filters: list[InputFilter]) -> list[str]:
        return [i for i in self.inputs if all(self.matches(i, f) for f in filters)]


def _metadata(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth < 2 and kind < 0.3:
        return {k: _metadata(rng, depth + 1) for k in rng.sample(["a", "b", "c", "tags"], rng.randint(1, 3))}
    if depth < 3 and kind < 0.5:
        return [_metadata(rng, depth + 2) for _ in range(rng.randint(0, 3))]
    return rng.choice(["x", "y", "z", 1, 2, 1.0, 2.5, True, False, None, "1", "a.b"])


def _part_of(rng: random.Random, value: Any) -> Any:
    """A random piece of a stored metadata value: a filter that contains it matches."""
    if isinstance(value, dict) and value:
        keys = rng.sample(sorted(value), rng.randint(1, len(value)))
        return {k: _part_of(rng, value[k]) for k in keys}
    if isinstance(value, list) and value:
        return [_part_of(rng, v) for v in rng.sample(value, rng.randint(1, len(value)))]
    if isinstance(value, float) and value.is_integer() and rng.random() < 0.5:
        return int(value)  # 1.0 and 1 are the same number
    return value


def _random_store(store: MetadataStore, rng: random.Random, n: int) -> Truth:
    truth = Truth()
    _app(store, APP)
    _app(store, OTHER_APP)
    items = []
    for i in range(n):
        input_id = f"in{i:04d}"
        labels = tuple(
            ConceptValue(c, "", rng.choice([0.0, 1.0, 0.6])) for c in rng.sample(CONCEPTS, rng.randint(0, 2))
        )
        geo = None
        if rng.random() < 0.7:
            lon0, lat0 = rng.choice(CENTERS)
            lon = ((lon0 + rng.uniform(-3, 3) + 180) % 360) - 180
            geo = (lon, max(-90.0, min(90.0, lat0 + rng.uniform(-2, 2))))
        metadata = {k: _metadata(rng, 1) for k in rng.sample(["a", "b", "n", "tags"], rng.randint(0, 3))}
        state = rng.choice([IndexState.READY, IndexState.PENDING])
        record = _record(
            input_id,
            input_type=rng.choice(TYPES),
            labels=labels,
            geo=geo,
            metadata=metadata,
            dataset_ids=tuple(rng.sample(DATASETS, rng.randint(0, 2))),
            index_state=state,
        )
        annotations = []
        for j in range(rng.randint(0, 2)):
            concepts = tuple(
                ConceptValue(c, "", rng.choice([0.0, 1.0])) for c in rng.sample(CONCEPTS, rng.randint(0, 1))
            )
            regions = tuple(
                RegionRecord(f"r{k}", bbox=(0.1, 0.1, 0.5, 0.5), concepts=(ConceptValue(rng.choice(CONCEPTS)),))
                for k in range(rng.randint(0, 1))
            )
            annotations.append(AnnotationRecord(input_id, f"a{j}", 0, concepts, regions))
        items.append(IngestItem(record, tuple(annotations)))
        truth.inputs[input_id] = record
        truth.datasets[input_id] = set(record.dataset_ids)
        truth.states[input_id] = state
        truth.annotations.update({(input_id, a.id): a for a in annotations})
    for start in range(0, n, 50):
        _ingest(store, APP, items[start : start + 50])
    # the other app holds the same ids, concepts and metadata: nothing of it may leak into APP's answers
    _ingest(
        store, OTHER_APP, [IngestItem(_record(f"in{i:04d}", OTHER_APP, **_copy(items[i].input))) for i in range(40)]
    )
    # annotations added and replaced after ingestion
    later = []
    for input_id in rng.sample(sorted(truth.inputs), 60):
        later.append(
            AnnotationRecord(input_id, rng.choice(["a0", "a9"]), 0, (ConceptValue(rng.choice(CONCEPTS), "", 1.0),))
        )
    store.put_annotations(USER, APP, later[:30], replace=False)
    for a in later[:30]:
        truth.annotations.setdefault((a.input_id, a.id), a)
    store.put_annotations(USER, APP, later[30:], replace=True)
    for a in later[30:]:
        truth.annotations[(a.input_id, a.id)] = a
    # some inputs fail their embedder, some are being embedded
    seqs = store.input_seqs(USER, APP, sorted(truth.inputs))
    ids = {seq: i for i, seq in seqs.items()}
    work = store.claim_unindexed(30, now=1000.0, lease_seconds=60)
    store.finish_indexing([(w.input.seq, IndexState.FAILED, "boom") for w in work[:10]])
    for w in work:
        if w.input.app_id == APP:
            truth.states[ids[w.input.seq]] = IndexState.FAILED if w in work[:10] else IndexState.IN_PROGRESS
    return truth


def _copy(record: InputRecord) -> dict[str, Any]:
    return {"input_type": record.input_type, "labels": record.labels, "metadata": record.metadata, "geo": record.geo}


def _random_filter(rng: random.Random, truth: Truth) -> InputFilter:
    fields: dict[str, Any] = {}
    some_input = truth.inputs[rng.choice(sorted(truth.inputs))]
    for name in rng.sample(["types", "datasets", "states", "concepts", "metadata", "geo", "ids"], rng.randint(1, 2)):
        if name == "types":
            fields["input_types"] = tuple(rng.sample(TYPES, rng.randint(1, 2)))
        elif name == "datasets":
            fields["dataset_ids"] = tuple(rng.sample([*DATASETS, "nope"], rng.randint(1, 2)))
        elif name == "states":
            fields["status_codes"] = tuple(rng.sample(list(IndexState), rng.randint(1, 2)))
        elif name == "concepts":
            fields["concepts"] = tuple((c, rng.choice([0.0, 1.0])) for c in rng.sample(CONCEPTS, rng.randint(1, 2)))
        elif name == "metadata":
            if rng.random() < 0.8 and some_input.metadata:
                fields["metadata"] = _part_of(rng, some_input.metadata)
            else:
                fields["metadata"] = {rng.choice(["a", "b", "n"]): _metadata(rng, 1)}
        elif name == "geo":
            lon, lat = rng.choice(CENTERS)
            if rng.random() < 0.6:
                fields["geo"] = GeoFilter(longitude=lon, latitude=lat, radius_km=rng.choice([50.0, 150.0, 400.0]))
            else:
                fields["geo"] = GeoFilter(box=(lon - 2, lat - 1.5, lon + 1, lat + 1))
        else:
            fields["input_ids"] = tuple(rng.sample(sorted(truth.inputs), 25))
    return InputFilter(negate=rng.random() < 0.3, **fields)


def test_filters_select_exactly_what_brute_force_selects(store: MetadataStore) -> None:
    rng = random.Random(10)
    truth = _random_store(store, rng, 300)
    seqs = store.input_seqs(USER, APP, sorted(truth.inputs))
    assert len(seqs) == 300 and len(set(seqs.values())) == 300
    assert store.select_inputs(USER, APP, []) == sorted(seqs.values())  # no filter: every input of the app
    assert store.count_inputs(USER, APP, []) == 300
    nonempty = 0
    for _ in range(250):
        filters = [_random_filter(rng, truth) for _ in range(rng.choice([1, 1, 2, 3]))]
        expected = sorted(seqs[i] for i in truth.select(filters))
        nonempty += bool(expected) and len(expected) < 300
        assert store.select_inputs(USER, APP, filters) == expected, filters
        assert store.count_inputs(USER, APP, filters) == len(expected), filters
        if len(expected) > 3:  # pages: ascending seqs after a cursor, at most limit
            assert store.select_inputs(USER, APP, filters, after_seq=expected[1], limit=2) == expected[2:4]
    assert nonempty > 150  # the filters were not trivial: most select some inputs, not all


def test_records_carry_seq_and_index_state(store: MetadataStore) -> None:
    _app(store, APP)
    _ingest(
        store,
        APP,
        [
            IngestItem(
                _record("p", index_state=IndexState.PENDING, labels=(ConceptValue("cat"),), dataset_ids=("d1",))
            ),
            IngestItem(_record("r")),
        ],
    )
    # a duplicate leaves the stored state alone
    _ingest(store, APP, [IngestItem(_record("p", index_state=IndexState.READY))])
    by_id = store.get_inputs(USER, APP, ["p", "r"])
    assert by_id["p"].index_state is IndexState.PENDING and by_id["r"].index_state is IndexState.READY
    assert by_id["p"].seq > 0 and by_id["r"].seq > by_id["p"].seq
    listed = store.list_inputs(USER, APP, _page()).items
    assert [(r.id, r.seq, r.index_state) for r in listed] == [
        (r.id, r.seq, r.index_state) for r in (by_id["p"], by_id["r"])
    ]
    by_seq = store.inputs_by_seq(USER, APP, [by_id["p"].seq, by_id["r"].seq, 10**9])
    assert set(by_seq) == {by_id["p"].seq, by_id["r"].seq}
    assert by_seq[by_id["p"].seq].dataset_ids == ("d1",) and by_seq[by_id["p"].seq].labels[0].id == "cat"
    work = store.claim_unindexed(5, now=0.0, lease_seconds=10)
    store.finish_indexing([(work[0].input.seq, IndexState.FAILED, "the model refused it")])
    failed = store.get_inputs(USER, APP, ["p"])["p"]
    assert (failed.index_state, failed.index_message) == (IndexState.FAILED, "the model refused it")
    assert store.input_seqs(USER, APP, ["p", "missing"]) == {"p": by_id["p"].seq}


def _page() -> Any:
    from pellucid.server.records import PageQuery

    return PageQuery(limit=100)


def test_claims_finish_reset_and_counts(store: MetadataStore) -> None:
    _app(store, APP, "Text")
    _app(store, OTHER_APP, "Universal")
    _ingest(store, APP, [IngestItem(_record(f"t{i}", index_state=IndexState.PENDING)) for i in range(6)])
    _ingest(store, APP, [IngestItem(_record(f"i{i}", input_type="image")) for i in range(3)])
    _ingest(
        store, OTHER_APP, [IngestItem(_record(f"o{i}", OTHER_APP, index_state=IndexState.PENDING)) for i in range(2)]
    )
    counts = store.index_counts(USER, APP)
    assert counts == {IndexState.READY: 3, IndexState.PENDING: 6, IndexState.FAILED: 0, IndexState.IN_PROGRESS: 0}

    first = store.claim_unindexed(4, now=100.0, lease_seconds=30)
    assert [w.input.id for w in first] == ["t0", "t1", "t2", "t3"]  # oldest first
    assert {w.base_workflow for w in first} == {"Text"} and {w.claimed_until for w in first} == {130.0}
    assert all(w.input.index_state is IndexState.IN_PROGRESS for w in first)
    second = store.claim_unindexed(10, now=101.0, lease_seconds=30)
    assert [(w.input.id, w.base_workflow) for w in second] == [
        ("t4", "Text"),
        ("t5", "Text"),
        ("o0", "Universal"),
        ("o1", "Universal"),
    ]
    assert store.claim_unindexed(10, now=102.0, lease_seconds=30) == []  # everything is held

    store.finish_indexing([(first[0].input.seq, IndexState.READY, ""), (first[1].input.seq, IndexState.FAILED, "bad")])
    store.finish_indexing([(first[0].input.seq, IndexState.FAILED, "late"), (10**9, IndexState.READY, "")])
    assert store.get_inputs(USER, APP, ["t0"])["t0"].index_state is IndexState.READY  # only IN_PROGRESS rows change
    assert store.index_counts(USER, APP) == {
        IndexState.READY: 4,
        IndexState.PENDING: 0,
        IndexState.FAILED: 1,
        IndexState.IN_PROGRESS: 4,
    }
    # t2 and t3's worker died: their claims lapse at 130 and another takes them
    assert store.claim_unindexed(10, now=129.0, lease_seconds=30) == []
    assert [w.input.id for w in store.claim_unindexed(2, now=131.0, lease_seconds=30)] == ["t2", "t3"]

    # a base workflow change: images (and texts) back to PENDING; a claim made before loses to it
    assert store.reset_indexing(USER, APP, ("image",)) == 3
    store.finish_indexing([(w.input.seq, IndexState.READY, "") for w in second])
    counts = store.index_counts(USER, APP)
    assert counts == {IndexState.READY: 6, IndexState.PENDING: 3, IndexState.FAILED: 0, IndexState.IN_PROGRESS: 0}
    assert store.index_counts(USER, OTHER_APP)[IndexState.READY] == 2  # o0, o1 finished
    assert store.reset_indexing(USER, APP, ()) == 0
    assert store.index_counts(USER, APP)[IndexState.READY] == 9


def test_two_claimers_never_get_the_same_input(metadata_uri: str) -> None:
    stores = [open_metadata_store(metadata_uri), open_metadata_store(metadata_uri)]  # two replicas
    try:
        _app(stores[0], APP)
        for start in range(0, 300, 100):
            _ingest(
                stores[0],
                APP,
                [IngestItem(_record(f"x{i}", index_state=IndexState.PENDING)) for i in range(start, start + 100)],
            )
        got: list[list[int]] = [[], [], [], []]
        barrier = threading.Barrier(4)

        def claim(k: int) -> None:
            barrier.wait()
            while work := stores[k % 2].claim_unindexed(7, now=0.0, lease_seconds=60):
                got[k] += [w.input.seq for w in work]

        threads = [threading.Thread(target=claim, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [seq for part in got for seq in part]
        assert len(every) == len(set(every)) == 300
        assert stores[1].index_counts(USER, APP)[IndexState.IN_PROGRESS] == 300
    finally:
        for s in stores:
            s.close()


def test_deletes_and_replaced_annotations_leave_the_filters(store: MetadataStore) -> None:
    _app(store, APP)
    items = [
        IngestItem(
            _record(f"i{k}", labels=(ConceptValue("cat"),), metadata={"a": {"b": "x"}, "tags": ["p", "q"]}),
            (
                AnnotationRecord(
                    f"i{k}", "a0", 0, regions=(RegionRecord("r", bbox=(0, 0, 1, 1), concepts=(ConceptValue("dog"),)),)
                ),
            ),
        )
        for k in range(4)
    ]
    _ingest(store, APP, items)
    cat, dog = InputFilter(concepts=(("cat", 1.0),)), InputFilter(concepts=(("dog", 1.0),))
    tagged = InputFilter(metadata={"a": {"b": "x"}, "tags": ["q"]})
    assert [store.count_inputs(USER, APP, [f]) for f in (cat, dog, tagged)] == [4, 4, 4]
    rows_before = _sql(store, "SELECT COUNT(*) FROM input_concepts")[0][0]

    store.delete_inputs(USER, APP, ["i0"])
    assert [store.count_inputs(USER, APP, [f]) for f in (cat, dog, tagged)] == [3, 3, 3]
    assert _sql(store, "SELECT COUNT(*) FROM input_concepts")[0][0] == rows_before - 2  # its label and its region
    if not hasattr(store, "_read"):
        assert _sql(store, "SELECT COUNT(*) FROM input_terms WHERE input_seq NOT IN (SELECT seq FROM inputs)") == [(0,)]

    # replacing an annotation replaces its concepts; adding one adds them
    store.put_annotations(USER, APP, [AnnotationRecord("i1", "a0", 0, (ConceptValue("car"),))], replace=True)
    store.put_annotations(USER, APP, [AnnotationRecord("i2", "a0", 0, (ConceptValue("car"),))], replace=False)
    store.put_annotations(USER, APP, [AnnotationRecord("i3", "a1", 0, (ConceptValue("sky", "", 0.0),))], replace=False)
    assert store.count_inputs(USER, APP, [dog]) == 2  # i1's region went with the replaced annotation
    assert store.count_inputs(USER, APP, [InputFilter(concepts=(("car", 1.0),))]) == 1  # i2's a0 kept (no replace)
    assert store.count_inputs(USER, APP, [InputFilter(concepts=(("sky", 0.0),))]) == 1  # a negative
    assert store.count_inputs(USER, APP, [InputFilter(concepts=(("sky", 1.0),))]) == 0
    store.delete_app(USER, APP)
    assert _sql(store, "SELECT COUNT(*) FROM input_concepts") == [(0,)]


def _plan(store: MetadataStore, f: InputFilter) -> str:
    sql, params = store.search_sql(USER, APP, [f])  # type: ignore[attr-defined]
    if hasattr(store, "_read"):
        with store._read() as conn:
            return "\n".join(str(r["QUERY PLAN"]) for r in conn.execute("EXPLAIN " + sql, params).fetchall())
    return "\n".join(r[3] for r in store._conn().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())


def test_concept_and_metadata_filters_use_indexes(store: MetadataStore) -> None:
    _app(store, APP)
    items = [
        IngestItem(
            _record(
                f"i{k}",
                labels=(ConceptValue(f"c{k % 500}"),),
                metadata={"k": k % 500, "tags": [f"t{k % 300}"]},
                geo=((k % 360) - 180.0, (k % 170) - 85.0),
            )
        )
        for k in range(5000)
    ]
    for start in range(0, len(items), 500):
        _ingest(store, APP, items[start : start + 500])
    if hasattr(store, "_read"):
        with store._write() as conn:
            conn.execute("ANALYZE")
    else:
        store._conn().execute("ANALYZE")
    # the statements select_inputs runs read inputs by primary key, driven by the filter's own index
    concept = _plan(store, InputFilter(concepts=(("c7", 1.0),)))
    metadata = _plan(store, InputFilter(metadata={"k": 7, "tags": ["t7"]}))
    geo = _plan(store, InputFilter(geo=GeoFilter(longitude=10, latitude=10, radius_km=100)))
    if hasattr(store, "_read"):
        assert "input_concepts_by_concept" in concept and "Seq Scan on inputs" not in concept, concept
        assert "inputs_by_metadata" in metadata and "Seq Scan on inputs" not in metadata, metadata
        assert "inputs_by_geo" in geo and "Seq Scan on inputs" not in geo, geo
    else:
        assert "input_concepts_by_concept" in concept and "SCAN i" not in concept, concept
        assert "SEARCH t USING PRIMARY KEY (app_seq=? AND term=?)" in metadata and "SCAN i" not in metadata, metadata
        assert "inputs_by_geo" in geo and "SCAN i" not in geo, geo
    assert store.select_inputs(USER, APP, [InputFilter(metadata={"k": 7, "tags": ["t7"]})]) == sorted(
        store.input_seqs(USER, APP, ["i7", "i1507", "i3007", "i4507"]).values()
    )


def test_an_old_sqlite_store_migrates(tmp_path: Path) -> None:
    """A data dir of the version before search: its inputs become READY and filterable."""
    from pellucid.server.storage.sqlite_schema import MIGRATIONS

    path = tmp_path / "metadata.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL)")
        for version, script in MIGRATIONS:
            if version <= 7:
                assert isinstance(script, str)
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
        _old_rows(conn.execute, "?")
    store = open_metadata_store(str(path))
    try:
        _check_migrated(store)
    finally:
        store.close()


def test_an_old_postgres_store_migrates(_postgres_session: None) -> None:
    import psycopg

    from pellucid.server.storage.postgres_schema import MIGRATIONS
    from tests import pg

    uri = pg.new_database()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        version, script = MIGRATIONS[0]
        assert version == 1 and isinstance(script, str)
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement.encode())
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        _old_rows(conn.execute, "%s")
    store = open_metadata_store(uri)
    try:
        _check_migrated(store)
    finally:
        store.close()


def _old_rows(execute: Any, mark: str) -> None:
    """An app with two inputs, a label, an annotation with a region and nested metadata, as the old schema held them."""

    def run(sql: str, *params: Any) -> None:
        execute(sql.replace("?", mark), params)

    run(
        "INSERT INTO apps (user_id, id, name, description, base_workflow, metadata, created_at, modified_at)"
        " VALUES (?, ?, '', '', 'Empty', '{}', 0, 0)",
        USER,
        APP,
    )
    for n, (labels, metadata) in enumerate(
        [('[{"id": "cat", "name": "cat", "value": 1.0}]', {"a": {"b": "x"}, "l": [1, 2]}), ("[]", {})]
    ):
        run(
            "INSERT INTO inputs (app_seq, id, input_type, content_key, media_sha256, media_size, media_mime, media_url,"
            " width, height, text, text_url, metadata, geo_lon, geo_lat, labels, created_at)"
            " VALUES ((SELECT seq FROM apps), ?, 'text', ?, '', 0, '', '', 0, 0, 'hi', '', ?, NULL, NULL, ?, 0)",
            f"old{n}",
            f"k{n}",
            json.dumps(metadata),
            labels,
        )
    run(
        "INSERT INTO annotations (input_seq, id, concepts, regions, created_at)"
        " VALUES ((SELECT seq FROM inputs WHERE id = 'old1'), 'a', '[]', ?, 0)",
        json.dumps([{"id": "r", "bbox": [0, 0, 1, 1], "polygon": None, "concepts": [{"id": "dog", "value": 1.0}]}]),
    )


def _check_migrated(store: MetadataStore) -> None:
    seqs = store.input_seqs(USER, APP, ["old0", "old1"])
    assert store.index_counts(USER, APP)[IndexState.READY] == 2
    assert store.select_inputs(USER, APP, [InputFilter(concepts=(("cat", 1.0),))]) == [seqs["old0"]]
    assert store.select_inputs(USER, APP, [InputFilter(concepts=(("dog", 1.0),))]) == [seqs["old1"]]
    assert store.select_inputs(USER, APP, [InputFilter(metadata={"a": {"b": "x"}, "l": [2]})]) == [seqs["old0"]]
    assert store.get_inputs(USER, APP, ["old0"])["old0"].metadata == {"a": {"b": "x"}, "l": [1, 2]}
