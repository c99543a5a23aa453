"""Search requests and results <-> the engine's SearchQuery and SearchResult."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pellucid.api import v1
from pellucid.server.engine.search import FilterSpec, GeoSpec, RankSpec, SearchQuery, SearchResult
from pellucid.server.grpc.convert import to_dict
from pellucid.server.records import InputRecord

METRICS = {
    v1.SEARCH_METRIC_UNSPECIFIED: "cosine",
    v1.SEARCH_METRIC_COSINE: "cosine",
    v1.SEARCH_METRIC_EUCLIDEAN: "euclidean",
    v1.SEARCH_METRIC_DOT: "dot",
}
ALGORITHMS = {
    v1.SEARCH_ALGORITHM_UNSPECIFIED: "nearest_neighbor",
    v1.SEARCH_ALGORITHM_NEAREST_NEIGHBOR: "nearest_neighbor",
    v1.SEARCH_ALGORITHM_BRUTE_FORCE: "brute_force",
}


def _concepts(concepts: Iterable[v1.Concept]) -> tuple[tuple[str, float], ...]:
    return tuple((c.id, c.value) for c in concepts)


def geo_spec(geo: v1.GeoQuery) -> GeoSpec:
    if geo.HasField("box_min") or geo.HasField("box_max"):
        box = (geo.box_min.longitude, geo.box_min.latitude, geo.box_max.longitude, geo.box_max.latitude)
        return GeoSpec(box=box)
    return GeoSpec(geo.geo_point.longitude, geo.geo_point.latitude, geo.radius_km)


def filter_spec(message: v1.Filter) -> FilterSpec:
    return FilterSpec(
        input_types=tuple(message.input_types),
        dataset_ids=tuple(message.input_dataset_ids),
        status_codes=tuple(message.input_status_codes),
        concepts=_concepts(message.concepts),
        metadata=to_dict(message.metadata) if message.HasField("metadata") else None,
        geo=geo_spec(message.geo) if message.HasField("geo") else None,
        input_ids=tuple(message.input_ids),
        negate=message.negate,
    )


def rank_spec(message: v1.Rank) -> RankSpec:
    return RankSpec(
        text_raw=message.text_raw,
        image_bytes=message.image_bytes,
        image_url=message.image_url,
        input_id=message.input_id,
        vector=tuple(message.vector),
        embedder=message.embedder,
        concepts=_concepts(message.concepts),
        metadata=to_dict(message.metadata) if message.HasField("metadata") else None,
    )


def search_query(request: v1.PostInputsSearchesRequest) -> SearchQuery:
    """Unknown enum numbers reach the engine as text, which refuses them naming the known values."""
    return SearchQuery(
        ranks=tuple(rank_spec(r) for r in request.query.ranks),
        filters=tuple(filter_spec(f) for f in request.query.filters),
        metric=METRICS.get(request.metric, f"<enum value {request.metric}>"),
        algorithm=ALGORITHMS.get(request.algorithm, f"<enum value {request.algorithm}>"),
        top_k=request.top_k,
        page=request.page,
        per_page=request.per_page,
        page_token=request.page_token,
        min_value=request.min_value if request.HasField("min_value") else None,
        only_count=request.only_count,
    )


def search_response(
    result: SearchResult, input_message: Callable[[InputRecord], v1.Input]
) -> v1.PostInputsSearchesResponse:
    return v1.PostInputsSearchesResponse(
        hits=[v1.Hit(input=input_message(h.input), score=h.score, rank_index=h.rank_index) for h in result.hits],
        count=result.count,
        next_page_token=result.next_page_token,
    )
