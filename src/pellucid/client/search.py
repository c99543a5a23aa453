"""Search: an app's inputs ranked by texts, images, inputs or vectors, within filters.

    search = app.search(top_k=5)
    for hit in search.query(ranks=[{"text_raw": "kitten"}], filters=[{"input_types": ["text"]}]):
        print(hit.input.id, hit.score, hit.rank)

The rules (docs/search.md): dicts in `filters` AND together, the values inside one key's list
OR, `negate` turns a filter around; each dict in `ranks` is one query, and an input's score is
its best over the ranks. Hits are unique inputs, best first.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pellucid.api import v1
from pellucid.client.base import BaseClient
from pellucid.errors import DeadlineExceeded, UserError

METRICS = {
    "cosine": v1.SEARCH_METRIC_COSINE,
    "euclidean": v1.SEARCH_METRIC_EUCLIDEAN,
    "dot": v1.SEARCH_METRIC_DOT,
}
ALGORITHMS = {
    "nearest_neighbor": v1.SEARCH_ALGORITHM_NEAREST_NEIGHBOR,
    "brute_force": v1.SEARCH_ALGORITHM_BRUTE_FORCE,
}
RANK_KEYS = ("text_raw", "image_bytes", "image_url", "input_id", "vector", "embedder", "concepts", "metadata")
FILTER_KEYS = (
    "input_types",
    "input_dataset_ids",
    "input_status_code",
    "input_ids",
    "concepts",
    "metadata",
    "geo_point",
    "geo_box",
    "negate",
)
CONCEPT_KEYS = ("id", "name", "value", "language")
GEO_POINT_KEYS = ("longitude", "latitude", "geo_limit")
GEO_BOX_KEYS = ("min_longitude", "min_latitude", "max_longitude", "max_latitude")
MAX_TOP_K = 10_000
MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 16  # page_no without per_page, as in every listing
WAIT_TIMEOUT = 600.0  # seconds wait=True waits for indexing before a query
_URL = re.compile(r"https?://\S+\Z", re.I)


@dataclass(frozen=True)
class Hit:
    """One search result: the input (a `pellucid.api.v1.Input`, without its media bytes), its
    score (larger is closer: cosine in [-1, 1], euclidean 1 / (1 + distance), dot the inner
    product; 1.0 for a filter-only search), and `rank`, the position in `ranks` of the rank
    that gave the score."""

    input: v1.Input
    score: float
    rank: int

    @property
    def id(self) -> str:
        return self.input.id


class Search(BaseClient):
    """Searches over one app's inputs. Constructing one makes no call.

    `metric` is 'cosine', 'euclidean' or 'dot'; `algorithm` 'nearest_neighbor' (the index's
    own search, approximate on large apps) or 'brute_force' (exact). `top_k` bounds the hits
    of a query without paging (1-10,000). With `wait=True`, each query first waits until every
    input of the app uploaded so far is indexed.
    """

    def __init__(
        self,
        user_id: str = "",
        app_id: str = "",
        top_k: int = 10,
        metric: str = "cosine",
        algorithm: str = "nearest_neighbor",
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        wait: bool = False,
        **kwargs: Any,
    ) -> None:
        if not app_id:
            raise UserError("Search needs an app_id (or use App.search())")
        if metric not in METRICS:
            raise UserError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if algorithm not in ALGORITHMS:
            raise UserError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if not _is_int(top_k) or not 1 <= top_k <= MAX_TOP_K:
            raise UserError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        self.app_id = app_id
        self.top_k = top_k
        self.metric = metric
        self.algorithm = algorithm
        self.wait = wait

    def __repr__(self) -> str:
        return (
            f"Search(user_id={self._user_id!r}, app_id={self.app_id!r}, top_k={self.top_k}, "
            f"metric={self.metric!r}, algorithm={self.algorithm!r})"
        )

    def query(
        self,
        ranks: Sequence[Mapping[str, Any]] | None = None,
        filters: Sequence[Mapping[str, Any]] | None = None,
        page_no: int | None = None,
        per_page: int | None = None,
        *,
        min_value: float | None = None,
    ) -> Iterator[Hit]:
        """Yield hits one by one, best first.

        Without `page_no` and `per_page`: at most `top_k` hits. With them (as every listing):
        `page_no` alone is that page of 16, `page_no` and `per_page` exactly that page,
        `per_page` alone every hit, `per_page` per request. `min_value` leaves out hits
        scoring below it.

        Rank keys (one per dict): text_raw, image_bytes (bytes, or the path of an image file),
        image_url, input_id (more like that input), vector (a raw embedding; `embedder` names
        its space when the app has several: "text", "image" or "model:<id>"), concepts
        ([{"id": ..., "value": 1}]: scores the fraction of them an input has), metadata (a
        dict the input's metadata contains: scores 1.0).

        Filter keys: input_types, input_dataset_ids, input_status_code, input_ids (each a value
        or a list whose values OR), concepts (value 1 = has it, 0 = has it as negative),
        metadata (nested containment), geo_point ({"longitude", "latitude", "geo_limit": km}),
        geo_box ({"min_longitude", "min_latitude", "max_longitude", "max_latitude"}), negate.

        Empty dicts are ignored, so the reference's `ranks=[{}]` means no rank. The dicts
        given are never changed.
        """
        request = self._request(ranks, filters, min_value)
        if page_no is not None and (not _is_int(page_no) or page_no < 1):
            raise UserError(f"page_no must be an integer >= 1, got {page_no!r}")
        if per_page is not None and (not _is_int(per_page) or not 1 <= per_page <= MAX_PER_PAGE):
            raise UserError(f"per_page must be an integer from 1 to {MAX_PER_PAGE}, got {per_page!r}")
        self._wait_if_asked()
        if page_no is None and per_page is None:
            request.top_k = self.top_k
            yield from _hits(self._post(request))
            return
        request.per_page = per_page or DEFAULT_PER_PAGE
        if page_no is not None:
            request.page = page_no
            yield from _hits(self._post(request))
            return
        while True:
            response = self._post(request)
            yield from _hits(response)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def count(
        self,
        filters: Sequence[Mapping[str, Any]] | None = None,
        ranks: Sequence[Mapping[str, Any]] | None = None,
        *,
        min_value: float | None = None,
    ) -> int:
        """How many inputs match (the filters; with ranks, those the ranks score, >= min_value)."""
        request = self._request(ranks, filters, min_value)
        request.only_count = True
        self._wait_if_asked()
        return int(self._post(request).count)

    def _request(
        self,
        ranks: Sequence[Mapping[str, Any]] | None,
        filters: Sequence[Mapping[str, Any]] | None,
        min_value: float | None,
    ) -> v1.PostInputsSearchesRequest:
        request = v1.PostInputsSearchesRequest(
            user_id=self._user_id,
            app_id=self.app_id,
            metric=METRICS[self.metric],
            algorithm=ALGORITHMS[self.algorithm],
            query=v1.Query(
                ranks=[rank_proto(r, i) for i, r in enumerate(_dicts(ranks, "ranks")) if r],
                filters=[filter_proto(f, i) for i, f in enumerate(_dicts(filters, "filters")) if f],
            ),
        )
        if min_value is not None:
            if not isinstance(min_value, int | float) or isinstance(min_value, bool) or not math.isfinite(min_value):
                raise UserError(f"min_value must be a finite number, got {min_value!r}")
            request.min_value = float(min_value)
        return request

    def _post(self, request: v1.PostInputsSearchesRequest) -> v1.PostInputsSearchesResponse:
        response: v1.PostInputsSearchesResponse = self._call(v1.SearchServiceStub, "PostInputsSearches", request)
        return response

    def wait_until_indexed(self, timeout: float = WAIT_TIMEOUT) -> v1.AppIndexStatus:
        """Wait until no input of the app waits to be embedded (as App.wait_until_indexed, without
        a progress bar: app.py imports this module, so this one cannot call it); raises
        DeadlineExceeded after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        request = v1.GetAppIndexStatusRequest(user_id=self._user_id, app_id=self.app_id)
        pause = 0.02
        while True:
            status: v1.AppIndexStatus = self._call(v1.AppServiceStub, "GetAppIndexStatus", request)
            waiting = status.pending + status.in_progress
            if not waiting:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"app {self.app_id!r}: {waiting} inputs still wait to be embedded after {timeout:g} s: "
                    "wait longer (Search.wait_until_indexed(timeout=...)), or check that the server runs index workers"
                )
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.5)

    def _wait_if_asked(self) -> None:
        if self.wait:
            self.wait_until_indexed()


def _hits(response: v1.PostInputsSearchesResponse) -> Iterator[Hit]:
    for hit in response.hits:
        yield Hit(hit.input, hit.score, hit.rank_index)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dicts(given: Sequence[Mapping[str, Any]] | None, name: str) -> list[Mapping[str, Any]]:
    if given is None:
        return []
    if isinstance(given, Mapping) or isinstance(given, str | bytes) or not isinstance(given, Sequence):
        raise UserError(f"{name} must be a list of dicts, got {type(given).__name__}")
    for i, item in enumerate(given):
        if not isinstance(item, Mapping):
            raise UserError(f"{name}[{i}] must be a dict, got {type(item).__name__}")
    return list(given)


def _check_keys(given: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [key for key in given if key not in allowed]
    if unknown:
        raise UserError(f"{where} has unknown keys {unknown}: use {', '.join(allowed)}")


def _strings(value: Any, where: str) -> list[str]:
    """A string or a list of strings, as a list."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not all(isinstance(v, str) and v for v in values):
        raise UserError(f"{where} must be a non-empty string or a list of them, got {value!r}")
    return list(values)


def _number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _point(longitude: Any, latitude: Any, where: str) -> v1.GeoPoint:
    return v1.GeoPoint(
        longitude=_number(longitude, f"{where} longitude"), latitude=_number(latitude, f"{where} latitude")
    )


def concept_protos(given: Any, where: str) -> list[v1.Concept]:
    """[{"id": "cat", "value": 1}, ...] ("name" stands for the id when no id is given; "language" is ignored)."""
    if not isinstance(given, Sequence) or isinstance(given, str | bytes) or not given:
        raise UserError(f"{where} must be a non-empty list of concept dicts like {{'id': 'cat', 'value': 1}}")
    concepts = []
    for i, concept in enumerate(given):
        if not isinstance(concept, Mapping):
            raise UserError(f"{where}[{i}] must be a dict like {{'id': 'cat', 'value': 1}}, got {concept!r}")
        _check_keys(concept, CONCEPT_KEYS, f"{where}[{i}]")
        concept_id = concept.get("id") or concept.get("name")
        if not isinstance(concept_id, str) or not concept_id:
            raise UserError(f"{where}[{i}] needs an 'id' (or 'name'): a non-empty string")
        value = concept.get("value", 1)
        if value not in (0, 1) or isinstance(value, bool):
            raise UserError(
                f"{where}[{i}]['value'] must be 1 (has the concept) or 0 (has it as negative), got {value!r}"
            )
        concepts.append(v1.Concept(id=concept_id, name=str(concept.get("name", "")), value=float(value)))
    return concepts


def _metadata(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise UserError(f"{where} must be a non-empty dict, got {value!r}")
    return dict(value)


def rank_proto(given: Mapping[str, Any], index: int) -> v1.Rank:
    """One rank dict as a message (the dict is only read)."""
    where = f"ranks[{index}]"
    _check_keys(given, RANK_KEYS, where)
    rank = v1.Rank()
    if "text_raw" in given:
        text = given["text_raw"]
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}['text_raw'] must be a non-empty string, got {text!r}")
        rank.text_raw = text
    if "image_bytes" in given:
        rank.image_bytes = _image_bytes(given["image_bytes"], f"{where}['image_bytes']")
    if "image_url" in given:
        url = given["image_url"]
        if not isinstance(url, str) or not _URL.match(url):
            raise UserError(f"{where}['image_url'] must be an http(s) URL, got {url!r}")
        rank.image_url = url
    if "input_id" in given:
        input_id = given["input_id"]
        if not isinstance(input_id, str) or not input_id:
            raise UserError(f"{where}['input_id'] must be a non-empty string, got {input_id!r}")
        rank.input_id = input_id
    if "vector" in given:
        rank.vector.extend(_vector(given["vector"], f"{where}['vector']"))
    if "embedder" in given:
        if not isinstance(given["embedder"], str):
            raise UserError(f"{where}['embedder'] must be a string: 'text', 'image' or 'model:<model id>'")
        rank.embedder = given["embedder"]
    if "concepts" in given:
        rank.concepts.extend(concept_protos(given["concepts"], f"{where}['concepts']"))
    if "metadata" in given:
        rank.metadata.update(_metadata(given["metadata"], f"{where}['metadata']"))
    return rank


def _image_bytes(value: Any, where: str) -> bytes:
    """Bytes as they are; a str or path names a file to read."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str | os.PathLike):
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise UserError(f"{where}: cannot read the image file {str(value)!r}: {exc.strerror or exc}") from None
    else:
        raise UserError(f"{where} must be bytes or the path of an image file, got {type(value).__name__}")
    if not data:
        raise UserError(f"{where} is empty: give the bytes of an encoded image")
    return data


def _vector(value: Any, where: str) -> list[float]:
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise UserError(f"{where} must be a list of numbers (or a 1-d numpy array)") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"{where} must hold at least one number, all finite")
    return values


def filter_proto(given: Mapping[str, Any], index: int) -> v1.Filter:
    """One filter dict as a message (the dict is only read)."""
    where = f"filters[{index}]"
    _check_keys(given, FILTER_KEYS, where)
    message = v1.Filter()
    if "input_types" in given:
        message.input_types.extend(_strings(given["input_types"], f"{where}['input_types']"))
    if "input_dataset_ids" in given:
        message.input_dataset_ids.extend(_strings(given["input_dataset_ids"], f"{where}['input_dataset_ids']"))
    if "input_ids" in given:
        message.input_ids.extend(_strings(given["input_ids"], f"{where}['input_ids']"))
    if "input_status_code" in given:
        codes = given["input_status_code"]
        codes = [codes] if _is_int(codes) else codes
        if not isinstance(codes, Sequence) or not codes or not all(_is_int(c) for c in codes):
            raise UserError(f"{where}['input_status_code'] must be an int (e.g. 30000) or a list of them")
        message.input_status_codes.extend(codes)
    if "concepts" in given:
        message.concepts.extend(concept_protos(given["concepts"], f"{where}['concepts']"))
    if "metadata" in given:
        message.metadata.update(_metadata(given["metadata"], f"{where}['metadata']"))
    if "geo_point" in given:
        point = given["geo_point"]
        if not isinstance(point, Mapping):
            raise UserError(f"{where}['geo_point'] must be a dict with {', '.join(GEO_POINT_KEYS)}")
        _check_keys(point, GEO_POINT_KEYS, f"{where}['geo_point']")
        missing = [key for key in GEO_POINT_KEYS if key not in point]
        if missing:
            raise UserError(f"{where}['geo_point'] needs {', '.join(missing)} (geo_limit: the radius in km)")
        message.geo.CopyFrom(
            v1.GeoQuery(
                geo_point=_point(point["longitude"], point["latitude"], f"{where}['geo_point']"),
                radius_km=_number(point["geo_limit"], f"{where}['geo_point']['geo_limit']"),
            )
        )
    if "geo_box" in given:
        box = given["geo_box"]
        if "geo_point" in given:
            raise UserError(f"{where} has geo_point and geo_box: give one (or put each in its own filter)")
        if not isinstance(box, Mapping) or set(box) != set(GEO_BOX_KEYS):
            raise UserError(f"{where}['geo_box'] must be a dict with exactly {', '.join(GEO_BOX_KEYS)}")
        message.geo.CopyFrom(
            v1.GeoQuery(
                box_min=_point(box["min_longitude"], box["min_latitude"], f"{where}['geo_box'] min"),
                box_max=_point(box["max_longitude"], box["max_latitude"], f"{where}['geo_box'] max"),
            )
        )
    if "negate" in given:
        if not isinstance(given["negate"], bool):
            raise UserError(f"{where}['negate'] must be True or False")
        message.negate = given["negate"]
    return message


__all__ = ["ALGORITHMS", "FILTER_KEYS", "METRICS", "RANK_KEYS", "Hit", "Search"]
