"""Search (issue #10): the SDK's Search and App.search, the PostInputsSearches RPC and the
engine's rules: filters inside the search (checked against a brute force over the same data),
AND/OR/negate, ranks and their fusion, paging against top_k, min_value, only_count, and every
refusal with the message that says what to fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client import Hit, Search
from pellucid.client.app import App
from pellucid.client.user import User
from tests.conftest import RunningServer
from tests.raw_calls import RawClient, find_method

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


_ = (App, Hit)
