"""Search (issue #10): the SDK's Search and App.search, the PostInputsSearches RPC and the
engine's rules: filters inside the search (checked against a brute force over the same data),
AND/OR/negate, ranks and their fusion, paging against top_k, min_value, only_count, and every
refusal with the message that says what to fix."""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.struct_pb2 import Struct

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client import Hit, Search
from pellucid.client.app import App
from pellucid.client.user import User
from pellucid.server.engine.media import encode_png
from pellucid.server.engine.spaces import space_name
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.conftest import RunningServer
from tests.media_samples import png
from tests.raw_calls import RawClient, find_method
from tests.runner_models import ColourEmbedder

# 1. what the SDK refuses before sending


def test_search_options_are_checked_and_listed(alice: User, unique: str) -> None:
    app = alice.create_app(f"s-{unique}")
    with pytest.raises(errors.UserError, match="metric 'manhattan' is not one of cosine, euclidean, dot"):
        app.search(metric="manhattan")
    with pytest.raises(errors.UserError, match="algorithm 'hnsw' is not one of nearest_neighbor, brute_force"):
        app.search(algorithm="hnsw")
    for top_k in (0, -1, 10_001, 2.5, True):
        with pytest.raises(errors.UserError, match="top_k must be an integer from 1 to 10000"):
            app.search(top_k=top_k)
    with pytest.raises(errors.UserError, match="Search needs an app_id"):
        Search(user_id="someone")
    search = app.search(top_k=12, metric="euclidean")
    assert (search.app_id, search.top_k, search.metric, search.user_id) == (app.id, 12, "euclidean", alice.user_id)


@pytest.mark.parametrize(
    ("ranks", "filters", "message"),
    [
        ([{"text": "cat"}], None, r"ranks\[0\] has unknown keys \['text'\]: use text_raw, image_bytes, image_url"),
        (None, [{"input_type": "image"}], r"filters\[0\] has unknown keys \['input_type'\]: use input_types,"),
        ([{"text_raw": "  "}], None, r"ranks\[0\]\['text_raw'\] must be a non-empty string"),
        ([{"image_url": "ftp://x/y.png"}], None, r"must be an http\(s\) URL"),
        ([{"image_bytes": b""}], None, r"is empty: give the bytes of an encoded image"),
        ([{"image_bytes": "no/such/file.png"}], None, r"cannot read the image file 'no/such/file.png'"),
        ([{"vector": ["a"]}], None, r"must be a list of numbers"),
        ([{"vector": [float("nan")]}], None, r"all finite"),
        (None, [{"concepts": [{"id": "cat", "value": 0.5}]}], r"must be 1 \(has the concept\) or 0"),
        (None, [{"concepts": [{"colour": "red"}]}], r"unknown keys \['colour'\]: use id, name, value, language"),
        (None, [{"geo_point": {"longitude": 1, "latitude": 2}}], r"needs geo_limit \(geo_limit: the radius in km\)"),
        (None, [{"geo_box": {"min_longitude": 1}}], r"must be a dict with exactly min_longitude"),
        (None, [{"input_status_code": "ready"}], r"must be an int \(e.g. 30000\)"),
        (None, [{"negate": 1}], r"must be True or False"),
        ({"text_raw": "cat"}, None, r"ranks must be a list of dicts, got dict"),
        (None, ["input_types"], r"filters\[0\] must be a dict, got str"),
    ],
)
def test_bad_queries_are_refused_before_sending(
    alice: User, unique: str, ranks: Any, filters: Any, message: str
) -> None:
    search = alice.create_app(f"s-{unique}").search()
    with pytest.raises(errors.UserError, match=message):
        list(search.query(ranks=ranks, filters=filters))


def test_the_callers_dicts_are_not_changed(alice: User, unique: str) -> None:
    """The reference SDK popped keys off the filters it was given."""
    search = alice.create_app(f"s-{unique}").search()
    filters = [{"input_types": ["text"], "metadata": {"k": 1}, "negate": False}]
    ranks = [{"concepts": [{"id": "cat", "value": 1}]}]
    before = repr((filters, ranks))
    with pytest.raises(errors.UserError):
        list(search.query(ranks=ranks, filters=filters, per_page=0))
    assert repr((filters, ranks)) == before


# 2. what the server refuses, through raw stubs (no SDK checks in the way)


@pytest.fixture
def raw(server: RunningServer, alice: User) -> Iterator[RawClient]:
    client = RawClient(server.server.address, f"Bearer {alice._connection.settings.pat}")
    yield client
    client.close()


def refused(raw: RawClient, request: v1.PostInputsSearchesRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        raw.call(find_method("PostInputsSearches"), request)
    return caught.value.code(), caught.value.details()


INVALID, PRECONDITION, NOT_FOUND = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
)


def test_bad_queries_are_refused_by_the_server_saying_what_to_fix(raw: RawClient, alice: User, unique: str) -> None:
    empty = alice.create_app(f"empty-{unique}", base_workflow="Empty").id
    text = alice.create_app(f"text-{unique}", base_workflow="Text").id

    def query(app_id: str = text, **fields: Any) -> v1.PostInputsSearchesRequest:
        ranks = fields.pop("ranks", [])
        filters = fields.pop("filters", [])
        return v1.PostInputsSearchesRequest(app_id=app_id, query=v1.Query(ranks=ranks, filters=filters), **fields)

    cases: list[tuple[v1.PostInputsSearchesRequest, grpc.StatusCode, str]] = [
        (query(metric=7), INVALID, "metric '<enum value 7>' is not one of cosine, euclidean, dot"),
        (query(algorithm=9), INVALID, "algorithm '<enum value 9>' is not one of nearest_neighbor, brute_force"),
        (query(top_k=10_001), INVALID, "top_k 10001 is out of range: use 1-10000"),
        (query(top_k=-3), INVALID, "top_k -3 is out of range"),
        (query(top_k=5, page=2), INVALID, "give top_k (the best k hits) or page/per_page/page_token"),
        (query(per_page=5000), INVALID, "per_page 5000 is out of range: use 1-1000"),
        (query(page_token="garbage"), INVALID, "page_token is not valid"),
        (query(min_value=float("nan")), INVALID, "min_value nan must be a finite number"),
        (query(ranks=[v1.Rank()]), INVALID, "ranks[0] is empty: give one of text_raw, image_bytes"),
        (
            query(ranks=[v1.Rank(text_raw="cat", concepts=[v1.Concept(id="cat", value=1)])]),
            INVALID,
            "ranks[0] sets text_raw and concepts: a rank is one query; put each in its own rank",
        ),
        (query(ranks=[v1.Rank(text_raw="   ")]), INVALID, "ranks[0].text_raw is empty: give the text to search for"),
        (query(ranks=[v1.Rank(text_raw="cat", embedder="text")]), INVALID, "embedder goes with a vector rank only"),
        (query(ranks=[v1.Rank(input_id="no such id!")]), INVALID, "ranks[0].input_id 'no such id!' is not valid"),
        (
            query(ranks=[v1.Rank(concepts=[v1.Concept(id="cat", value=0.5)])]),
            INVALID,
            "ranks[0].concepts[0].value is 0.5: use 1 (has the concept) or 0 (has it as negative)",
        ),
        (
            query(ranks=[v1.Rank(image_bytes=b"\x89PNG")]),
            PRECONDITION,
            "ranks[0]: this app embeds no images; create it with base_workflow='Universal'",
        ),
        (
            query(empty, ranks=[v1.Rank(text_raw="cat")]),
            PRECONDITION,
            "ranks[0]: this app embeds no texts; create it with base_workflow='Text' (or 'Universal')",
        ),
        (
            query(empty, ranks=[v1.Rank(vector=[1.0, 0.0])]),
            PRECONDITION,
            "this app embeds nothing (base_workflow 'Empty'), so it has no vectors to compare with",
        ),
        (
            query(filters=[v1.Filter(input_types=["photo"])]),
            INVALID,
            "filters[0].input_types has 'photo': use image, video, audio, text",
        ),
        (
            query(filters=[v1.Filter(input_status_codes=[404])]),
            INVALID,
            "filters[0].input_status_code 404 is not an input status: use 30000 (READY), 30001 (PENDING)",
        ),
        (
            query(filters=[v1.Filter(concepts=[v1.Concept(id="cat", value=2)])]),
            INVALID,
            "filters[0].concepts[0].value is 2.0: use 1",
        ),
        (
            query(filters=[v1.Filter(geo=v1.GeoQuery(geo_point=v1.GeoPoint(longitude=2, latitude=48)))]),
            INVALID,
            "filters[0].geo: the radius is 0.0 km: give geo_limit (km) above 0",
        ),
        (
            query(filters=[v1.Filter(geo=v1.GeoQuery(geo_point=v1.GeoPoint(longitude=200, latitude=48), radius_km=5))]),
            INVALID,
            "filters[0].geo: the point's longitude 200.0 is not in [-180, 180]",
        ),
        (
            query(
                filters=[
                    v1.Filter(
                        geo=v1.GeoQuery(
                            box_min=v1.GeoPoint(longitude=3, latitude=40), box_max=v1.GeoPoint(longitude=2, latitude=50)
                        )
                    )
                ]
            ),
            INVALID,
            "must be west and south of its north-east corner",
        ),
        (query("no-such-app"), NOT_FOUND, "app 'no-such-app' of user"),
    ]
    for request, code, message in cases:
        got_code, got_message = refused(raw, request)
        assert (got_code, message in got_message) == (code, True), (request, got_code, got_message)


def test_another_users_app_is_not_found(raw: RawClient, bob: User, unique: str) -> None:
    theirs = bob.create_app(f"bob-{unique}")
    code, message = refused(raw, v1.PostInputsSearchesRequest(user_id=bob.user_id, app_id=theirs.id))
    assert code == NOT_FOUND and f"app {theirs.id!r} of user {bob.user_id!r} not found" in message


def test_sdk_errors_carry_the_servers_message(alice: User, unique: str) -> None:
    search = alice.create_app(f"s-{unique}", base_workflow="Empty").search()
    with pytest.raises(errors.ApiError, match="this app embeds no images; create it with base_workflow='Universal'"):
        list(search.query(ranks=[{"image_bytes": b"\x89PNG..."}]))


# 3. filters inside the search, checked against a brute force over the same data
#
# A server with no index workers, so the vectors the test writes into its index (keys: the
# inputs' seqs, in the app's text space) stay as written; the search runs through the SDK.

DIM = 8
COLOURS = ("red", "green", "blue")
PARIS, TOKYO = (2.35, 48.86), (139.69, 35.69)


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    metadata: dict[str, Any]
    labels: dict[str, float]
    datasets: tuple[str, ...]
    geo: tuple[float, float] | None


def make_items() -> list[Item]:
    items = []
    for i in range(48):
        labels = {"cat": 1.0} if i % 4 == 0 else {"dog": 1.0} if i % 4 == 1 else {"cat": 0.0} if i % 4 == 2 else {}
        items.append(
            Item(
                id=f"item-{i:02d}",
                kind="image" if i % 8 == 7 else "text",
                metadata={"colour": COLOURS[i % 3], "size": i % 5, "shop": {"open": i % 2 == 0}},
                labels=labels,
                datasets=("train",) if i % 2 == 0 else ("test",) if i % 6 == 1 else (),
                geo=(PARIS if i % 3 == 0 else TOKYO if i % 3 == 1 else None),
            )
        )
    return items


def to_input(item: Item) -> v1.Input:
    data = v1.Data(concepts=[v1.Concept(id=c, name=c, value=v) for c, v in item.labels.items()])
    if item.kind == "text":
        data.text.raw = f"text of {item.id}"
    else:
        data.image.base64 = png(item.id)
    data.metadata.update(item.metadata)
    if item.geo is not None:
        data.geo.geo_point.CopyFrom(v1.GeoPoint(longitude=item.geo[0], latitude=item.geo[1]))
    return v1.Input(id=item.id, data=data, dataset_ids=list(item.datasets))


def contains(held: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(held, dict) and all(k in held and contains(held[k], v) for k, v in wanted.items())
    return bool(held == wanted)


def km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def matches(item: Item, given: dict[str, Any]) -> bool:
    """One filter dict, evaluated in Python: keys AND, values of one key OR, negate flips."""
    checks = []
    if "input_types" in given:
        checks.append(item.kind in given["input_types"])
    if "input_dataset_ids" in given:
        checks.append(bool(set(item.datasets) & set(given["input_dataset_ids"])))
    if "input_ids" in given:
        checks.append(item.id in given["input_ids"])
    if "concepts" in given:
        checks.append(any(item.labels.get(c["id"]) == c["value"] for c in given["concepts"]))
    if "metadata" in given:
        checks.append(contains(item.metadata, given["metadata"]))
    if "geo_point" in given:
        point = given["geo_point"]
        checks.append(
            item.geo is not None and km(item.geo, (point["longitude"], point["latitude"])) <= point["geo_limit"]
        )
    if "geo_box" in given:
        box = given["geo_box"]
        checks.append(
            item.geo is not None
            and box["min_longitude"] <= item.geo[0] <= box["max_longitude"]
            and box["min_latitude"] <= item.geo[1] <= box["max_latitude"]
        )
    return all(checks) != bool(given.get("negate"))


FILTERS: list[list[dict[str, Any]]] = [
    [],
    [{"input_types": ["text"]}],
    [{"input_types": ["image", "text"]}],
    [{"metadata": {"colour": "red"}}],
    [{"metadata": {"shop": {"open": True}, "size": 2}}],
    [{"metadata": {"colour": "red"}}, {"input_dataset_ids": ["train"]}],
    [{"input_dataset_ids": ["train", "test"]}],
    [{"concepts": [{"id": "cat", "value": 1}, {"id": "dog", "value": 1}]}],
    [{"concepts": [{"id": "cat", "value": 0}]}],
    [{"metadata": {"colour": "red"}, "negate": True}],
    [{"metadata": {"colour": "red"}, "input_dataset_ids": ["train"], "negate": True}],
    [{"concepts": [{"id": "cat", "value": 1}], "negate": True}, {"input_types": ["text"]}],
    [{"geo_point": {"longitude": 2.3, "latitude": 48.8, "geo_limit": 50}}],
    [{"geo_box": {"min_longitude": 100, "min_latitude": 20, "max_longitude": 150, "max_latitude": 50}}],
    [{"input_ids": ["item-01", "item-02", "item-09", "item-30"]}, {"metadata": {"size": 1}, "negate": True}],
    [{"metadata": {"colour": "purple"}}],
]


@dataclass
class Corpus:
    server: PellucidServer
    user: User
    app: App
    items: list[Item]
    vectors: dict[str, np.ndarray]  # input id -> its vector as the index holds it

    def candidates(self, filters: list[dict[str, Any]]) -> list[Item]:
        return [item for item in self.items if all(matches(item, f) for f in filters)]

    def brute_force(self, query: np.ndarray, filters: list[dict[str, Any]], metric: str) -> list[tuple[str, float]]:
        """Every scored candidate, best first, ties in upload order, as the API reports scores."""
        scored = []
        for position, item in enumerate(self.candidates(filters)):
            vector = self.vectors.get(item.id)
            if vector is None:
                continue
            if metric == "cosine":
                score = float(vector @ query / (np.linalg.norm(vector) * np.linalg.norm(query)))
            elif metric == "dot":
                score = float(vector @ query)
            else:
                score = 1.0 / (1.0 + float(np.linalg.norm(vector - query)))
            scored.append((-score, position, item.id))
        return [(item_id, -negative) for negative, _, item_id in sorted(scored)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    server = PellucidServer(
        ServerSettings(data_dir=tmp_path_factory.mktemp("search"), port=0, allow_private_urls=True, index_workers=0)
    )
    server.start()
    credentials = server.data_dir.read_credentials()
    assert credentials is not None and server.engine is not None
    user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
    app = user.create_app("corpus", base_workflow="Text")
    app.create_dataset("train")
    app.create_dataset("test")
    items = make_items()
    result = app.inputs().upload_inputs([to_input(item) for item in items], show_log=False)
    assert not result.failed, result.failed
    engine = server.engine
    seqs = engine.store.input_seqs(user.user_id, app.id, [item.id for item in items if item.kind == "text"])
    rng = np.random.default_rng(10)
    space = space_name(user.user_id, app.id, "text")
    keys = np.array(sorted(seqs.values()), dtype=np.int64)
    engine.vectors.upsert(space, keys, rng.normal(size=(len(keys), DIM)).astype(np.float32))
    by_seq = {seq: input_id for input_id, seq in seqs.items()}
    held = engine.vectors.get(space, keys)
    yield Corpus(server, user, app, items, {by_seq[k]: np.asarray(v) for k, v in held.items()})
    user.close()
    server.stop(grace=0.5)


def ids_and_scores(hits: Iterator[Hit]) -> list[tuple[str, float]]:
    return [(hit.input.id, hit.score) for hit in hits]


def assert_same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)


@pytest.mark.parametrize("filters", FILTERS, ids=[repr(f)[:60] for f in FILTERS])
def test_filters_with_a_rank_return_what_a_brute_force_returns(corpus: Corpus, filters: list[dict[str, Any]]) -> None:
    query = np.random.default_rng(len(repr(filters))).normal(size=DIM).astype(np.float32)
    for metric in ("cosine", "euclidean", "dot"):
        expected = corpus.brute_force(query, filters, metric)
        for algorithm in ("nearest_neighbor", "brute_force"):
            search = corpus.app.search(top_k=5, metric=metric, algorithm=algorithm)
            got = ids_and_scores(search.query(ranks=[{"vector": query.tolist()}], filters=filters))
            assert_same(got, expected[:5])
        every = ids_and_scores(
            corpus.app.search(metric=metric).query(ranks=[{"vector": query}], filters=filters, per_page=7)
        )
        assert_same(every, expected)  # paging: every scored candidate, across pages


@pytest.mark.parametrize("filters", FILTERS, ids=[repr(f)[:60] for f in FILTERS])
def test_filters_alone_return_every_match_in_upload_order(corpus: Corpus, filters: list[dict[str, Any]]) -> None:
    expected = [item.id for item in corpus.candidates(filters)]
    search = corpus.app.search(top_k=10)
    hits = list(search.query(filters=filters))
    assert [h.input.id for h in hits] == expected[:10]
    assert {(h.score, h.rank) for h in hits} <= {(1.0, 0)}
    assert [h.input.id for h in search.query(filters=filters, per_page=9)] == expected
    assert [h.input.id for h in search.query(filters=filters, page_no=2, per_page=4)] == expected[4:8]
    assert search.count(filters=filters) == len(expected)


def test_top_k_is_respected_and_paging_returns_every_hit(corpus: Corpus) -> None:
    query = [1.0] * DIM
    expected = corpus.brute_force(np.asarray(query, dtype=np.float32), [], "cosine")
    texts = sum(item.kind == "text" for item in corpus.items)
    assert len(expected) == texts
    for top_k in (1, 3, 17, 100):
        got = ids_and_scores(corpus.app.search(top_k=top_k).query(ranks=[{"vector": query}]))
        assert_same(got, expected[:top_k])
    search = corpus.app.search()
    assert_same(ids_and_scores(search.query(ranks=[{"vector": query}], per_page=5)), expected)
    assert_same(ids_and_scores(search.query(ranks=[{"vector": query}], page_no=3, per_page=5)), expected[10:15])
    assert_same(ids_and_scores(search.query(ranks=[{"vector": query}], page_no=2)), expected[16:32])
    assert list(search.query(ranks=[{"vector": query}], page_no=40, per_page=5)) == []
    assert search.count(ranks=[{"vector": query}]) == texts


def test_min_value_drops_weak_hits_and_count_agrees(corpus: Corpus) -> None:
    query = np.ones(DIM, dtype=np.float32)
    expected = corpus.brute_force(query, [{"input_types": ["text"]}], "cosine")
    strong = [(i, s) for i, s in expected if s >= 0.2]
    assert 0 < len(strong) < len(expected)
    search = corpus.app.search(top_k=100)
    got = ids_and_scores(search.query(ranks=[{"vector": query}], min_value=0.2))
    assert_same(got, strong)
    assert search.count(ranks=[{"vector": query}], min_value=0.2) == len(strong)
    assert list(search.query(filters=[{"input_types": ["text"]}], min_value=1.5)) == []


def test_more_like_this_input_ranks_it_first(corpus: Corpus) -> None:
    target = "item-05"
    expected = corpus.brute_force(corpus.vectors[target], [], "cosine")
    got = ids_and_scores(corpus.app.search(top_k=4).query(ranks=[{"input_id": target}]))
    assert got[0][0] == target and got[0][1] == pytest.approx(1.0, abs=1e-5)
    assert_same(got, expected[:4])


def test_several_ranks_fuse_by_best_score_into_unique_hits(corpus: Corpus) -> None:
    a, b = np.random.default_rng(1).normal(size=(2, DIM)).astype(np.float32)
    by_a = dict(corpus.brute_force(a, [], "cosine"))
    by_b = dict(corpus.brute_force(b, [], "cosine"))
    fused = sorted(
        ((max(by_a[i], by_b[i]), 0 if by_a[i] >= by_b[i] else 1, i) for i in by_a),
        key=lambda t: (-t[0], [item.id for item in corpus.items].index(t[2])),
    )
    hits = list(corpus.app.search(top_k=12).query(ranks=[{"vector": a}, {"vector": b}]))
    assert [(h.input.id, h.rank) for h in hits] == [(i, r) for _, r, i in fused[:12]]
    assert np.allclose([h.score for h in hits], [s for s, _, _ in fused[:12]], atol=1e-5)
    same = list(corpus.app.search(top_k=48).query(ranks=[{"vector": a}, {"vector": a}]))
    assert len({h.input.id for h in same}) == len(same) == len(by_a)  # unique inputs
    assert {h.rank for h in same} == {0}  # a tie goes to the first rank


def test_concept_and_metadata_ranks_score_matches(corpus: Corpus) -> None:
    search = corpus.app.search(top_k=100)
    cats = [item.id for item in corpus.items if item.labels.get("cat") == 1.0]
    either = [item.id for item in corpus.items if item.labels.get("cat") == 1.0 or item.labels.get("dog") == 1.0]
    hits = list(search.query(ranks=[{"concepts": [{"id": "cat", "value": 1}, {"id": "dog", "value": 1}]}]))
    assert [h.input.id for h in hits] == either and {h.score for h in hits} == {0.5}
    red_cats = [i for i in cats if corpus.items[int(i[-2:])].metadata["colour"] == "red"]
    hits = list(
        search.query(ranks=[{"metadata": {"colour": "red"}}], filters=[{"concepts": [{"id": "cat", "value": 1}]}])
    )
    assert [h.input.id for h in hits] == red_cats and {h.score for h in hits} == {1.0}
    # a concept rank beside a vector rank: matches score 1.0, above every cosine below 1
    query = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    hits = list(search.query(ranks=[{"vector": query}, {"concepts": [{"id": "dog", "value": 1}]}]))
    dogs = [item.id for item in corpus.items if item.labels.get("dog") == 1.0]
    assert [h.input.id for h in hits[: len(dogs)]] == dogs and {h.rank for h in hits[: len(dogs)]} == {1}
    assert len(hits) == len({h.input.id for h in hits})


def test_a_filter_keeping_few_inputs_still_fills_top_k(corpus: Corpus) -> None:
    """Filters select candidates inside the search: never fewer than top_k when that many match."""
    filters = [{"metadata": {"colour": "blue"}}, {"input_types": ["text"]}]
    expected = corpus.brute_force(np.ones(DIM, dtype=np.float32), filters, "dot")
    assert len(expected) >= 10
    got = ids_and_scores(
        corpus.app.search(top_k=10, metric="dot").query(ranks=[{"vector": [1.0] * DIM}], filters=filters)
    )
    assert_same(got, expected[:10])


def test_vector_rank_errors_on_the_real_index(corpus: Corpus) -> None:
    search = corpus.app.search()
    with pytest.raises(
        errors.InvalidArgument, match=r"ranks\[0\].vector has 3 dimensions; the app's text embeddings have 8"
    ):
        list(search.query(ranks=[{"vector": [1.0, 2.0, 3.0]}]))
    with pytest.raises(errors.InvalidArgument, match=r"ranks\[0\].embedder 'image' is not one of this app's: text"):
        list(search.query(ranks=[{"vector": [1.0] * DIM, "embedder": "image"}]))
    # vectors without a direction, or whose norms would overflow float32 (every cosine 0), are refused
    with pytest.raises(errors.InvalidArgument, match=r"ranks\[0\].vector cannot be searched with: it is all zeros"):
        list(search.query(ranks=[{"vector": [0.0] * DIM}]))
    with pytest.raises(
        errors.InvalidArgument, match=r"ranks\[0\].vector cannot be searched with: it holds values beyond"
    ):
        list(search.query(ranks=[{"vector": [3e38] * DIM}]))
    with pytest.raises(errors.NotFound, match="input 'nope' not found in app 'corpus'"):
        list(search.query(ranks=[{"input_id": "nope"}]))
    with pytest.raises(errors.FailedPrecondition, match="input 'item-07' is an image and this app embeds no images"):
        list(search.query(ranks=[{"input_id": "item-07"}]))


def test_raw_stub_search(corpus: Corpus) -> None:
    """PostInputsSearches with v1 messages, no SDK."""
    credentials = corpus.server.data_dir.read_credentials()
    assert credentials is not None
    channel = grpc.insecure_channel(corpus.server.address)
    try:
        stub = v1.SearchServiceStub(channel)
        metadata = (("authorization", f"Bearer {credentials.pat}"),)
        request = v1.PostInputsSearchesRequest(
            app_id="corpus",
            query=v1.Query(
                ranks=[v1.Rank(vector=[1.0] * DIM)],
                filters=[v1.Filter(input_types=["text"]), v1.Filter(metadata=_struct({"colour": "green"}))],
            ),
            metric=v1.SEARCH_METRIC_EUCLIDEAN,
            top_k=3,
        )
        response = stub.PostInputsSearches(request, metadata=metadata)
        expected = corpus.brute_force(
            np.ones(DIM, dtype=np.float32), [{"input_types": ["text"]}, {"metadata": {"colour": "green"}}], "euclidean"
        )
        assert_same([(h.input.id, h.score) for h in response.hits], expected[:3])
        assert response.hits[0].input.data.text.raw == f"text of {response.hits[0].input.id}"
        first = stub.PostInputsSearches(
            v1.PostInputsSearchesRequest(app_id="corpus", query=request.query, per_page=2), metadata=metadata
        )
        second = stub.PostInputsSearches(
            v1.PostInputsSearchesRequest(
                app_id="corpus", query=request.query, per_page=2, page_token=first.next_page_token
            ),
            metadata=metadata,
        )
        cosine = corpus.brute_force(
            np.ones(DIM, dtype=np.float32), [{"input_types": ["text"]}, {"metadata": {"colour": "green"}}], "cosine"
        )
        assert [h.input.id for h in [*first.hits, *second.hits]] == [i for i, _ in cosine[:4]]
        other = v1.PostInputsSearchesRequest(
            app_id="corpus", query=v1.Query(), per_page=2, page_token=first.next_page_token
        )
        with pytest.raises(grpc.RpcError, match="page_token belongs to a different listing"):
            stub.PostInputsSearches(other, metadata=metadata)
        counted = stub.PostInputsSearches(
            v1.PostInputsSearchesRequest(app_id="corpus", query=request.query, only_count=True), metadata=metadata
        )
        assert (counted.count, len(counted.hits)) == (len(cosine), 0)
    finally:
        channel.close()


def _struct(data: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(data)
    return struct


def test_without_the_models_extra_text_ranks_say_what_to_install_and_filters_still_work(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a server installed without `pellucid[models]`: onnxruntime does not import."""
    from pellucid.server import embedders

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    monkeypatch.setattr(embedders, "_loaded", {})  # nothing loaded before in this process
    search = corpus.app.search()
    with pytest.raises(errors.FailedPrecondition, match=r"pip install 'pellucid\[models\]'"):
        list(search.query(ranks=[{"text_raw": "kitten"}]))
    assert len(list(search.query(filters=[{"metadata": {"colour": "red"}}], per_page=50))) == 16
    assert len(list(search.query(ranks=[{"concepts": [{"id": "dog", "value": 1}]}]))) == 10


# 4. meaning: the real built-in embedders, behind the server's own indexing, through the SDK

TOPICS = {
    "cats": [
        "A kitten is asleep on the warm windowsill",
        "The cat chased a mouse across the kitchen floor",
        "My tabby purrs whenever I scratch behind her ears",
        "Our two Siamese cats were adopted from the shelter",
        "The cat knocked a glass off the table again",
        "She bought a scratching post and a litter box for her cat",
        "Stray cats gather behind the fish market at dusk",
        "The vet said our cat needs fewer treats",
    ],
    "cars": [
        "The new sedan has a powerful turbocharged engine",
        "He changed the flat tyre on his car by the highway",
        "Electric vehicles need fewer oil changes than petrol cars",
        "She drove the convertible along the coastal road",
        "The mechanic replaced the brake pads and the clutch",
        "Traffic on the motorway was slow after the accident",
        "This hatchback does fifty miles to the gallon",
        "He parked the truck in the garage and charged its battery",
    ],
    "taxes": [
        "File your income tax return before the April deadline",
        "The accountant found deductions that lowered our tax bill",
        "Property taxes rose again in the county this year",
        "Capital gains are taxed at a different rate than wages",
        "The government raised the value added tax",
        "Keep receipts in case the revenue service audits you",
        "Charitable donations can reduce your taxable income",
        "Self-employed people pay estimated taxes every quarter",
    ],
}


@pytest.fixture(scope="module")
def notes(server: RunningServer, admin: User) -> App:
    """An app of texts on three topics, embedded by the server's own workers."""
    app = admin.create_app(f"notes-{uuid.uuid4().hex[:8]}", base_workflow="Universal")
    app.inputs().upload_inputs(
        [
            v1.Input(
                id=f"{topic}-{i}",
                data=v1.Data(text=v1.Text(raw=text), metadata=_struct({"topic": topic, "i": i})),
            )
            for topic, texts in TOPICS.items()
            for i, text in enumerate(texts)
        ],
        show_log=False,
    )
    return app


@pytest.mark.parametrize(
    ("query", "topic"), [("kitten", "cats"), ("automobile repair", "cars"), ("IRS refund", "taxes")]
)
def test_a_text_query_ranks_its_topic_first(notes: App, query: str, topic: str) -> None:
    hits = list(notes.search(top_k=8, wait=True).query(ranks=[{"text_raw": query}]))
    assert [h.input.id.split("-")[0] for h in hits[:5]] == [topic] * 5, [h.input.data.text.raw for h in hits]
    assert all(-1.0 <= h.score <= 1.0 for h in hits) and hits == sorted(hits, key=lambda h: -h.score)


def test_a_text_query_within_a_filter(notes: App) -> None:
    """Filters apply inside the semantic search: "kitten" among the car texts still gives top_k car texts."""
    hits = list(
        notes.search(top_k=6, wait=True).query(
            ranks=[{"text_raw": "kitten"}], filters=[{"metadata": {"topic": "cars"}}]
        )
    )
    assert len(hits) == 6 and {h.input.id.split("-")[0] for h in hits} == {"cars"}
    more = list(notes.search(top_k=3, wait=True).query(ranks=[{"input_id": "taxes-0"}]))
    assert more[0].input.id == "taxes-0" and {h.input.id.split("-")[0] for h in more} == {"taxes"}


def skimage_photo(name: str, box: tuple[float, float, float, float]) -> bytes:
    """A crop (fractions of the width and height) of a photo scikit-image ships in its wheel, as PNG."""
    import io
    from pathlib import Path

    import skimage
    from PIL import Image

    with Image.open(Path(skimage.__file__).parent / "data" / name) as original:
        image = original.convert("RGB")
    width, height = image.size
    left, top, right, bottom = box
    crop = image.crop((int(left * width), int(top * height), int(right * width), int(bottom * height)))
    buffer = io.BytesIO()
    crop.resize((crop.width // 2, crop.height // 2)).save(buffer, format="PNG")
    return buffer.getvalue()


CROPS = [(0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 1.0, 1.0), (0.1, 0.0, 0.9, 0.9), (0.0, 0.1, 0.9, 1.0)]


def test_an_image_query_ranks_its_kind_first(notes: App) -> None:
    kinds = {"cat": "chelsea.png", "rocket": "rocket.jpg"}
    inputs = notes.inputs()
    for kind, name in kinds.items():
        for i, box in enumerate(CROPS[:3]):
            inputs.upload_from_bytes(input_id=f"{kind}-photo-{i}", image_bytes=skimage_photo(name, box))
    search = notes.search(top_k=3, wait=True)
    for kind, name in kinds.items():
        hits = list(search.query(ranks=[{"image_bytes": skimage_photo(name, CROPS[3])}]))
        assert [h.input.id.split("-")[0] for h in hits] == [kind] * 3, [(h.input.id, h.score) for h in hits]
        assert all(h.input.input_type == "image" for h in hits)


# 5. a user's own model as the app's embedder: queries are embedded by it, on its runner


@pytest.fixture
def colour_runner(alice: User, unique: str) -> Iterator[ColourEmbedder]:
    alice.create_runner(f"colour-{unique}", labels=[f"colour-{unique}"])
    runner = ColourEmbedder(f"colour-{unique}", base_url=alice.base_url, pat=alice._connection.settings.pat)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    yield runner
    runner.stop(drain=False)
    thread.join(10)


def solid_png(rgb: tuple[int, int, int], noise: int) -> bytes:
    jitter = hashlib.shake_128(str(noise).encode()).digest(16 * 16 * 3)
    return encode_png(16, 16, bytes(max(0, min(255, rgb[i % 3] + (jitter[i] % 24) - 12)) for i in range(16 * 16 * 3)))


def test_an_image_query_embedded_by_the_apps_own_model(alice: User, unique: str, colour_runner: ColourEmbedder) -> None:
    app = alice.create_app(f"own-{unique}", base_workflow="Empty")
    app.create_model("colour", runner_labels=[f"colour-{unique}"], input_fields=["image"])
    app.patch(base_workflow="colour")
    colours = {"red": (210, 30, 30), "blue": (20, 40, 220), "green": (30, 200, 40)}
    for name, rgb in colours.items():
        for i in range(2):
            app.inputs().upload_from_bytes(input_id=f"{name}-{i}", image_bytes=solid_png(rgb, i))
    search = app.search(top_k=2, wait=True)
    for name, rgb in colours.items():
        hits = list(search.query(ranks=[{"image_bytes": solid_png(rgb, 99)}]))
        assert [h.input.id.split("-")[0] for h in hits] == [name, name]
    with pytest.raises(errors.FailedPrecondition, match="this app embeds no texts"):
        list(search.query(ranks=[{"text_raw": "red"}]))
    with pytest.raises(errors.FailedPrecondition, match="model 'colour' failed on the query"):
        list(search.query(ranks=[{"image_bytes": b"GIF89a not a png"}]))
