"""Search: an app's inputs ranked by similarity to queries, within filters (issue #10).

The rules (also in protos/pellucid/api/v1/search.proto and docs/search.md):

- **Filters** select the candidates: a search ANDs its filters; inside one filter the fields
  AND and the values of one field OR; `negate` keeps what the filter does not match. The
  store selects the candidates through its indexes and the vector index searches only those
  (`allowed`), so a search for k hits gets k whenever k candidates exist.
- **Ranks** score candidates. A vector rank (text, image, input id, raw vector) scores every
  candidate that has a vector in the rank's space: cosine in [-1, 1], dot the inner product,
  euclidean 1 / (1 + distance); larger is closer. A concepts rank scores a candidate the
  fraction of the rank's concepts it has (inputs with none are not its hits); a metadata rank
  scores 1.0 the candidates whose metadata contains it.
- **Several ranks**: an input's score is its best over the ranks (max fusion), and its hit
  names the rank that gave it (the first on a tie). Hits are unique inputs, best first, ties
  in upload order (ascending seq). The top k of the fused list is exact from each rank's own
  top k, so no rank needs to be read deeper than the page asked for.
- **No rank**: every candidate is a hit with score 1.0, in upload order.
- `min_value` drops hits scoring below it, before top_k, paging and `only_count`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pellucid.server.embedders import Embedder, EmbedderUnavailable, builtin_embedder
from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import FailedPrecondition, InvalidArgument, NotFound
from pellucid.server.engine.fetch import UrlFetcher
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.inputs import INPUT_TYPES
from pellucid.server.engine.models import Models
from pellucid.server.engine.paging import MAX_PAGE_SIZE, PageRequest, next_token, to_query
from pellucid.server.engine.predict import Media, PredictInput, PredictRequest
from pellucid.server.engine.spaces import (
    MODEL_EMBEDDER_PREFIX,
    WORKFLOW_EMBEDDER_PREFIX,
    output_embedding,
    space_name,
)
from pellucid.server.engine.validation import check_metadata, check_text
from pellucid.server.engine.workflow_runs import WorkflowRuns
from pellucid.server.records import AppRecord, GeoFilter, IndexState, InputFilter, InputRecord, Page, PageQuery
from pellucid.server.storage.base import SearchStore
from pellucid.server.storage.vectors import DimensionMismatch, Metric, VectorIndex, vector_problem

log = logging.getLogger("pellucid.server.search")

DEFAULT_TOP_K = 10
MAX_TOP_K = 10_000
MAX_RANKS = 16
MAX_FILTERS = 64
MAX_FILTER_VALUES = 1000  # ids, concepts or types in one filter field
MAX_QUERY_TEXT = 64 * 1024  # characters of a text rank
MAX_VECTOR_DIMENSION = 65_536
ALGORITHMS = ("nearest_neighbor", "brute_force")
METRICS = tuple(m.value for m in Metric)
RANK_KEYS = ("text_raw", "image_bytes", "image_url", "input_id", "vector", "concepts", "metadata")
VECTOR_RANK_KEYS = ("text_raw", "image_bytes", "image_url", "input_id", "vector")
MODALITY_NOUN = {"text": "texts", "image": "images", "video": "videos", "audio": "audio"}
# Which base workflow to suggest when an app embeds nothing of a kind.
WORKFLOW_FOR = {"text": "'Text' (or 'Universal')", "image": "'Universal'"}
MODEL_QUERY_DEADLINE = 30.0  # seconds a query waits for a model embedder's runner


@dataclass(frozen=True)
class GeoSpec:
    """An area as the caller sent it: a radius around a point, or (radius 0) a box."""

    longitude: float = 0.0
    latitude: float = 0.0
    radius_km: float = 0.0
    box: tuple[float, float, float, float] | None = None  # (min_lon, min_lat, max_lon, max_lat)


@dataclass(frozen=True)
class FilterSpec:
    """A filter as the caller sent it (checked and turned into an InputFilter here)."""

    input_types: tuple[str, ...] = ()
    dataset_ids: tuple[str, ...] = ()
    status_codes: tuple[int, ...] = ()
    concepts: tuple[tuple[str, float], ...] = ()
    metadata: dict[str, Any] | None = None
    geo: GeoSpec | None = None
    input_ids: tuple[str, ...] = ()
    negate: bool = False


@dataclass(frozen=True)
class RankSpec:
    """One query of a search: exactly one field set (see RANK_KEYS)."""

    text_raw: str = ""
    image_bytes: bytes = b""
    image_url: str = ""
    input_id: str = ""
    vector: tuple[float, ...] = ()
    embedder: str = ""  # for `vector`: which space ("text", "image", "model:<id>"); empty: inferred
    concepts: tuple[tuple[str, float], ...] = ()
    metadata: dict[str, Any] | None = None

    def keys(self) -> list[str]:
        """The rank keys this rank sets (a text of only spaces counts as set, to be refused as empty)."""
        return [key for key in RANK_KEYS if getattr(self, key)]


@dataclass(frozen=True)
class SearchQuery:
    ranks: tuple[RankSpec, ...] = ()
    filters: tuple[FilterSpec, ...] = ()
    metric: str = "cosine"
    algorithm: str = "nearest_neighbor"
    top_k: int = 0  # 0: DEFAULT_TOP_K (top-k mode)
    page: int = 0  # paging mode: page (from 1) or page_token, per_page hits each
    per_page: int = 0
    page_token: str = ""
    min_value: float | None = None
    only_count: bool = False

    @property
    def paging(self) -> bool:
        return bool(self.page or self.per_page or self.page_token)


@dataclass(frozen=True)
class SearchHit:
    input: InputRecord
    score: float
    rank_index: int  # position of the rank that gave the score in SearchQuery.ranks (0 with none)


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit] = field(default_factory=list)
    count: int = 0  # only_count: the number of matching inputs
    next_page_token: str = ""


@dataclass(frozen=True)
class _VectorPlan:
    """A vector rank, ready to search: its space and query vector."""

    space: str
    query: npt.NDArray[np.float32]


@dataclass(frozen=True)
class _MatchPlan:
    """A concepts or metadata rank: filters whose matches score (matched filters) / len(filters)."""

    filters: tuple[InputFilter, ...]


_Plan = _VectorPlan | _MatchPlan
EmbedderLoader = Callable[[str], Embedder]


class Search:
    """Validation first (every problem named with what to fix), then filters -> candidates,
    ranks -> scored candidates, fused, paged."""

    def __init__(
        self,
        store: SearchStore,
        apps: Apps,
        models: Models,
        vectors: VectorIndex | None,
        fetcher: UrlFetcher,
        embedders: EmbedderLoader = builtin_embedder,
    ) -> None:
        self._store = store
        self._apps = apps
        self._models = models
        self._vectors = vectors
        self._fetcher = fetcher
        self._embedders = embedders
        self.workflows: WorkflowRuns | None = None  # runs an app's base workflow when it names a workflow

    def search(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        query: SearchQuery,
        model_wait_seconds: float = MODEL_QUERY_DEADLINE,
    ) -> SearchResult:
        """Run one search (an app-scoped read: NOT_FOUND for apps the caller may not see).
        `model_wait_seconds`: how long a query waits for an embedding model's runner."""
        app = self._apps.get(principal, user_id, app_id)
        metric = _check_options(query)
        filters = [_input_filter(spec, f"filters[{i}]") for i, spec in enumerate(query.filters)]
        if len(query.ranks) > MAX_RANKS:
            raise InvalidArgument(
                f"ranks has {len(query.ranks)} ranks: give at most {MAX_RANKS}", reason="TOO_MANY_RANKS", field="ranks"
            )
        for i, rank in enumerate(query.ranks):
            _check_rank_shape(rank, f"ranks[{i}]")
        # a filter-only search's tokens hold the last seq seen, a ranked one's an offset
        scope = _scope(app, query) + ("" if query.ranks else ":seq")
        page = to_query(PageRequest(query.per_page, query.page_token, query.page), scope) if query.paging else None
        plans = [
            self._plan(principal, app, rank, f"ranks[{i}]", model_wait_seconds) for i, rank in enumerate(query.ranks)
        ]
        if not plans:
            return self._filter_only(app, query, filters, page, scope)
        return self._ranked(app, query, filters, plans, metric, page, scope)

    # no ranks: the candidates, score 1.0, in upload order

    def _filter_only(
        self, app: AppRecord, query: SearchQuery, filters: list[InputFilter], page: PageQuery | None, scope: str
    ) -> SearchResult:
        if query.min_value is not None and query.min_value > 1.0:
            return SearchResult()  # every hit scores 1.0
        if query.only_count:
            return SearchResult(count=self._store.count_inputs(app.user_id, app.id, filters))
        if page is None:
            seqs = self._store.select_inputs(app.user_id, app.id, filters, limit=query.top_k or DEFAULT_TOP_K)
            return SearchResult(hits=self._hits(app, [(seq, 1.0, 0) for seq in seqs]))
        if page.after is not None:
            seqs = self._store.select_inputs(app.user_id, app.id, filters, after_seq=page.after, limit=page.limit + 1)
        else:
            seqs = self._store.select_inputs(app.user_id, app.id, filters, limit=page.offset + page.limit + 1)
            seqs = seqs[page.offset :]
        more = len(seqs) > page.limit
        seqs = seqs[: page.limit]
        token = next_token(Page(seqs, seqs[-1] if more and seqs else None), scope)
        return SearchResult(hits=self._hits(app, [(seq, 1.0, 0) for seq in seqs]), next_page_token=token)

    # ranks

    def _ranked(
        self,
        app: AppRecord,
        query: SearchQuery,
        filters: list[InputFilter],
        plans: list[_Plan],
        metric: Metric,
        page: PageQuery | None,
        scope: str,
    ) -> SearchResult:
        allowed: npt.NDArray[np.int64] | None = None
        if filters:
            allowed = np.asarray(self._store.select_inputs(app.user_id, app.id, filters), dtype=np.int64)
        offset, limit = 0, query.top_k or DEFAULT_TOP_K
        if page is not None:
            offset, limit = (page.after if page.after is not None else page.offset), page.limit
        depth = None if query.only_count else offset + limit + 1  # None: every scored candidate
        best: dict[int, tuple[float, int]] = {}  # seq -> (score, rank index)
        for index, plan in enumerate(plans):
            for seq, score in self._scored(app, plan, filters, allowed, depth, metric, query.algorithm):
                if query.min_value is not None and score < query.min_value:
                    continue
                held = best.get(seq)
                if held is None or score > held[0]:
                    best[seq] = (score, index)
        if query.only_count:
            return SearchResult(count=len(best))
        ordered = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
        chosen = ordered[offset : offset + limit]
        hits = self._hits(app, [(seq, score, index) for seq, (score, index) in chosen])
        token = ""
        if page is not None and len(ordered) > offset + limit:
            token = next_token(Page([], offset + limit), scope)
        return SearchResult(hits=hits, next_page_token=token)

    def _scored(
        self,
        app: AppRecord,
        plan: _Plan,
        filters: list[InputFilter],
        allowed: npt.NDArray[np.int64] | None,
        depth: int | None,
        metric: Metric,
        algorithm: str,
    ) -> list[tuple[int, float]]:
        """(seq, score) of one rank's best `depth` candidates (every one with depth None)."""
        if isinstance(plan, _MatchPlan):
            matched: dict[int, int] = {}
            for match in plan.filters:
                for seq in self._store.select_inputs(app.user_id, app.id, [*filters, match]):
                    matched[seq] = matched.get(seq, 0) + 1
            scored = sorted(((seq, n / len(plan.filters)) for seq, n in matched.items()), key=lambda s: (-s[1], s[0]))
            return scored if depth is None else scored[:depth]
        vectors = self._require_vectors()
        size = vectors.count(plan.space) if allowed is None else min(len(allowed), vectors.count(plan.space))
        k = size if depth is None else min(depth, size)
        if k <= 0:
            return []
        try:
            found = vectors.search(plan.space, plan.query, k, metric, allowed=allowed, exact=algorithm == "brute_force")
        except DimensionMismatch as exc:
            raise InvalidArgument(f"the query vector does not fit the app's index: {exc}", field="ranks") from None
        if metric is Metric.EUCLIDEAN:  # the index scores -distance; the API reports 1 / (1 + distance)
            return [(hit.key, 1.0 / (1.0 - hit.score)) for hit in found]
        return [(hit.key, hit.score) for hit in found]

    def _hits(self, app: AppRecord, scored: list[tuple[int, float, int]]) -> list[SearchHit]:
        """The inputs of scored seqs, in order (an input deleted meanwhile is left out)."""
        if not scored:
            return []
        records = self._store.inputs_by_seq(app.user_id, app.id, [seq for seq, _, _ in scored])
        return [SearchHit(records[seq], score, index) for seq, score, index in scored if seq in records]

    # turning one rank into a plan (and its errors into messages that say what to fix)

    def _plan(self, principal: Principal, app: AppRecord, rank: RankSpec, where: str, wait: float) -> _Plan:
        if rank.concepts:
            return _MatchPlan(
                tuple(
                    InputFilter(concepts=(concept,)) for concept in _check_concepts(rank.concepts, f"{where}.concepts")
                )
            )
        if rank.metadata:
            return _MatchPlan((InputFilter(metadata=check_metadata(rank.metadata, f"{where}.metadata")),))
        embedders = self._apps.embedders(app.user_id, app.id, app.base_workflow)
        if rank.vector:
            return self._raw_vector_plan(app, embedders, rank, where)
        if rank.input_id:
            return self._input_plan(app, embedders, rank.input_id, f"{where}.input_id")
        if rank.text_raw:
            text = check_text(rank.text_raw, f"{where}.text_raw", MAX_QUERY_TEXT)
            if not text.strip():
                raise InvalidArgument(
                    f"{where}.text_raw is empty: give the text to search for", reason="EMPTY_TEXT", field=where
                )
            key = _embedder_for(embedders, "text", where)
            return _VectorPlan(
                space_name(app.user_id, app.id, key),
                self._embed(principal, app, key, "text", text.encode(), where, wait),
            )
        data = rank.image_bytes
        if rank.image_url:
            _embedder_for(embedders, "image", where)  # before fetching anything
            data = self._fetcher.fetch(rank.image_url, f"{where}.image_url")
        key = _embedder_for(embedders, "image", where)
        return _VectorPlan(
            space_name(app.user_id, app.id, key), self._embed(principal, app, key, "image", data, where, wait)
        )

    def _raw_vector_plan(self, app: AppRecord, embedders: dict[str, str], rank: RankSpec, where: str) -> _VectorPlan:
        vector = np.asarray(rank.vector, dtype=np.float32)
        if len(vector) > MAX_VECTOR_DIMENSION or not np.isfinite(vector).all():
            raise InvalidArgument(
                f"{where}.vector must hold at most {MAX_VECTOR_DIMENSION} finite numbers", field=f"{where}.vector"
            )
        problem = vector_problem(vector)
        if problem:
            raise InvalidArgument(f"{where}.vector cannot be searched with: {problem}", field=f"{where}.vector")
        keys = sorted(set(embedders.values()))
        if not keys:
            raise FailedPrecondition(
                f"this app embeds nothing (base_workflow {self._apps.workflow_name(app)!r}), so it has "
                "no vectors to compare with: create it with base_workflow='Text' or 'Universal'",
                reason="APP_EMBEDS_NOTHING",
                field=where,
            )
        vectors = self._require_vectors()
        dims = {key: vectors.dimension(space_name(app.user_id, app.id, key)) for key in keys}
        if rank.embedder:
            if rank.embedder not in keys:
                raise InvalidArgument(
                    f"{where}.embedder {rank.embedder!r} is not one of this app's: {', '.join(keys)}",
                    field=f"{where}.embedder",
                )
            key = rank.embedder
        else:
            fitting = [key for key in keys if dims[key] in (None, len(vector))]
            if len(keys) > 1 and len(fitting) != 1:
                raise InvalidArgument(
                    f"{where}.vector has {len(vector)} dimensions; this app's spaces: "
                    + ", ".join(f"{key} ({dims[key] or 'empty'})" for key in keys)
                    + f": set {where}.embedder to say which",
                    reason="WRONG_DIMENSION",
                    field=f"{where}.vector",
                )
            key = fitting[0] if fitting else keys[0]
        if dims[key] is not None and dims[key] != len(vector):
            raise InvalidArgument(
                f"{where}.vector has {len(vector)} dimensions; the app's {key} embeddings have {dims[key]}",
                reason="WRONG_DIMENSION",
                field=f"{where}.vector",
            )
        return _VectorPlan(space_name(app.user_id, app.id, key), vector)

    def _input_plan(self, app: AppRecord, embedders: dict[str, str], input_id: str, where: str) -> _VectorPlan:
        validate_id(input_id, where)
        seq = self._store.input_seqs(app.user_id, app.id, [input_id]).get(input_id)
        record = self._store.inputs_by_seq(app.user_id, app.id, [seq]).get(seq) if seq is not None else None
        if seq is None or record is None:
            raise NotFound(
                f"{where}: input {input_id!r} not found in app {app.id!r}", reason="INPUT_NOT_FOUND", field=where
            )
        key = _embedder_for(embedders, record.input_type, where, f"input {input_id!r} is {_a(record.input_type)} and ")
        space = space_name(app.user_id, app.id, key)
        stored = self._require_vectors().get(space, np.asarray([seq], dtype=np.int64)).get(seq)
        if stored is None:
            state = record.index_state
            why = (
                f"its embedding failed ({record.index_message})"
                if state is IndexState.FAILED
                else "it is not indexed yet"
            )
            raise FailedPrecondition(
                f"{where}: input {input_id!r} has no vector: {why}; wait for indexing (Search(..., wait=True)) or "
                "rank by its content instead",
                reason="INPUT_NOT_INDEXED",
                field=where,
            )
        return _VectorPlan(space, np.asarray(stored, dtype=np.float32))

    def _embed(
        self, principal: Principal, app: AppRecord, key: str, kind: str, data: bytes, where: str, wait: float
    ) -> npt.NDArray[np.float32]:
        """The query vector of `data` by the app's embedder `key`."""
        if not data:
            raise InvalidArgument(f"{where}.image_bytes is empty: give an encoded image", field=where)
        if key.startswith(MODEL_EMBEDDER_PREFIX):
            return self._model_embedding(
                principal, app, key.removeprefix(MODEL_EMBEDDER_PREFIX), kind, data, where, wait
            )
        if key.startswith(WORKFLOW_EMBEDDER_PREFIX) and self.workflows is not None:
            query = PredictInput(id="query", media=(Media(kind, data),))
            workflow_id = key.removeprefix(WORKFLOW_EMBEDDER_PREFIX)
            ((vector, why),) = self.workflows.embeddings(principal, app.user_id, app.id, workflow_id, [query], wait)
            if vector is None:
                raise FailedPrecondition(
                    f"{where}: the app's base workflow could not embed the query: {why}",
                    reason="EMBEDDING_FAILED",
                    field=where,
                )
            return vector
        try:
            embedder = self._embedders(key)
        except EmbedderUnavailable as exc:
            raise FailedPrecondition(
                f"cannot rank by {kind}: {exc}", reason="EMBEDDER_UNAVAILABLE", field=where
            ) from None
        try:
            batch = embedder.embed([data])
        except Exception as exc:  # noqa: BLE001 - the caller's bytes broke the model: their fault to fix, not INTERNAL
            log.warning("the %s embedder failed on a query: %r", kind, exc)
            raise InvalidArgument(f"{where}: cannot embed this {kind}: {exc}", field=where) from None
        if 0 in batch.errors:
            raise InvalidArgument(f"{where}: cannot embed this {kind}: {batch.errors[0]}", field=where)
        return np.asarray(batch.vectors[0], dtype=np.float32)

    def _model_embedding(
        self, principal: Principal, app: AppRecord, model_id: str, kind: str, data: bytes, where: str, wait: float
    ) -> npt.NDArray[np.float32]:
        """Ask the app's embedding model (on its runner) for the query's vector."""
        result = self._models.predict(
            principal,
            PredictRequest(
                user_id=app.user_id,
                app_id=app.id,
                model_id=model_id,
                inputs=(PredictInput(id="query", media=(Media(kind, data),)),),
                deadline_seconds=wait,
            ),
        )
        vector, why = output_embedding(result.outputs[0], "the query")
        if vector is None:
            raise FailedPrecondition(
                f"{where}: the app's embedding model {model_id!r} {why}",
                reason="EMBEDDING_FAILED",
                field=where,
            )
        return vector

    def _require_vectors(self) -> VectorIndex:
        if self._vectors is None:
            raise FailedPrecondition(
                "this server has no vector index: rank by concepts or metadata only", reason="NO_VECTOR_INDEX"
            )
        return self._vectors


def _embedder_for(embedders: dict[str, str], kind: str, where: str, prefix: str = "") -> str:
    key = embedders.get(kind)
    if key is None:
        suggestion = WORKFLOW_FOR.get(kind)
        fix = f"create it with base_workflow={suggestion}" if suggestion else "search by concepts or metadata"
        raise FailedPrecondition(
            f"{where}: {prefix}this app embeds no {MODALITY_NOUN.get(kind, kind)}; {fix}",
            reason="APP_EMBEDS_NO_" + kind.upper(),
            field=where,
        )
    return key


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _check_options(query: SearchQuery) -> Metric:
    if query.metric not in METRICS:
        raise InvalidArgument(
            f"metric {query.metric!r} is not one of {', '.join(METRICS)}", reason="BAD_METRIC", field="metric"
        )
    if query.algorithm not in ALGORITHMS:
        raise InvalidArgument(
            f"algorithm {query.algorithm!r} is not one of {', '.join(ALGORITHMS)}",
            reason="BAD_ALGORITHM",
            field="algorithm",
        )
    if query.top_k and query.paging:
        raise InvalidArgument(
            "give top_k (the best k hits) or page/per_page/page_token (every hit, page by page), not both",
            field="top_k",
        )
    if not 0 <= query.top_k <= MAX_TOP_K:
        raise InvalidArgument(
            f"top_k {query.top_k} is out of range: use 1-{MAX_TOP_K} (0 means {DEFAULT_TOP_K}), or page through "
            "every hit with page/per_page",
            reason="BAD_TOP_K",
            field="top_k",
        )
    if not 0 <= query.per_page <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"per_page {query.per_page} is out of range: use 1-{MAX_PAGE_SIZE}", reason="BAD_PER_PAGE", field="per_page"
        )
    if query.min_value is not None and not math.isfinite(query.min_value):
        raise InvalidArgument(f"min_value {query.min_value} must be a finite number", field="min_value")
    if len(query.filters) > MAX_FILTERS:
        raise InvalidArgument(f"filters has {len(query.filters)} filters: give at most {MAX_FILTERS}", field="filters")
    return Metric(query.metric)


def _check_rank_shape(rank: RankSpec, where: str) -> None:
    keys = rank.keys()
    if not keys:
        raise InvalidArgument(f"{where} is empty: give one of {', '.join(RANK_KEYS)}", reason="EMPTY_RANK", field=where)
    if len(keys) > 1:
        raise InvalidArgument(
            f"{where} sets {' and '.join(keys)}: a rank is one query; put each in its own rank "
            "(several ranks score each input by its best match)",
            reason="SEVERAL_QUERIES_IN_RANK",
            field=where,
        )
    if rank.embedder and not rank.vector:
        raise InvalidArgument(f"{where}.embedder goes with a vector rank only", field=f"{where}.embedder")


def _check_concepts(concepts: Sequence[tuple[str, float]], where: str) -> tuple[tuple[str, float], ...]:
    if len(concepts) > MAX_FILTER_VALUES:
        raise InvalidArgument(f"{where} has {len(concepts)} concepts: give at most {MAX_FILTER_VALUES}", field=where)
    checked = []
    for i, (concept_id, value) in enumerate(concepts):
        validate_id(concept_id, f"{where}[{i}].id")
        if value not in (0.0, 1.0):
            raise InvalidArgument(
                f"{where}[{i}].value is {value}: use 1 (has the concept) or 0 (has it as negative)",
                reason="BAD_CONCEPT_VALUE",
                field=f"{where}[{i}].value",
            )
        checked.append((concept_id, float(value)))
    return tuple(checked)


def _check_values(values: tuple[str, ...], where: str) -> None:
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidArgument(f"{where} has {len(values)} values: give at most {MAX_FILTER_VALUES}", field=where)


def _input_filter(spec: FilterSpec, where: str) -> InputFilter:
    for name in ("input_types", "dataset_ids", "status_codes", "input_ids"):
        _check_values(getattr(spec, name), f"{where}.{name}")
    for kind in spec.input_types:
        if kind not in INPUT_TYPES:
            raise InvalidArgument(
                f"{where}.input_types has {kind!r}: use {', '.join(INPUT_TYPES)}", field=f"{where}.input_types"
            )
    for i, dataset_id in enumerate(spec.dataset_ids):
        validate_id(dataset_id, f"{where}.input_dataset_ids[{i}]")
    for i, input_id in enumerate(spec.input_ids):
        validate_id(input_id, f"{where}.input_ids[{i}]")
    codes = {int(state) for state in IndexState}
    for code in spec.status_codes:
        if code not in codes:
            raise InvalidArgument(
                f"{where}.input_status_code {code} is not an input status: use "
                + ", ".join(f"{int(s)} ({s.name})" for s in IndexState),
                reason="BAD_STATUS_CODE",
                field=f"{where}.input_status_code",
            )
    metadata = check_metadata(spec.metadata, f"{where}.metadata") if spec.metadata else None
    return InputFilter(
        input_types=spec.input_types,
        dataset_ids=spec.dataset_ids,
        status_codes=tuple(IndexState(code) for code in spec.status_codes),
        concepts=_check_concepts(spec.concepts, f"{where}.concepts"),
        metadata=metadata,
        geo=_geo_filter(spec.geo, f"{where}.geo") if spec.geo is not None else None,
        input_ids=spec.input_ids,
        negate=spec.negate,
    )


def _geo_filter(geo: GeoSpec, where: str) -> GeoFilter:
    def check_point(longitude: float, latitude: float, what: str) -> None:
        if not (math.isfinite(longitude) and -180.0 <= longitude <= 180.0):
            raise InvalidArgument(f"{where}: {what} longitude {longitude} is not in [-180, 180]", field=where)
        if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
            raise InvalidArgument(f"{where}: {what} latitude {latitude} is not in [-90, 90]", field=where)

    if geo.box is not None:
        min_lon, min_lat, max_lon, max_lat = geo.box
        check_point(min_lon, min_lat, "the box's south-west corner")
        check_point(max_lon, max_lat, "the box's north-east corner")
        if min_lon > max_lon or min_lat > max_lat:
            raise InvalidArgument(
                f"{where}: the box's south-west corner ({min_lon}, {min_lat}) must be west and south of its "
                f"north-east corner ({max_lon}, {max_lat})",
                field=where,
            )
        return GeoFilter(box=geo.box)
    check_point(geo.longitude, geo.latitude, "the point's")
    if not (math.isfinite(geo.radius_km) and 0.0 < geo.radius_km <= 20_100.0):
        raise InvalidArgument(
            f"{where}: the radius is {geo.radius_km} km: give geo_limit (km) above 0 (at most 20100), or a box",
            reason="BAD_GEO_LIMIT",
            field=where,
        )
    return GeoFilter(longitude=geo.longitude, latitude=geo.latitude, radius_km=geo.radius_km)


def _scope(app: AppRecord, query: SearchQuery) -> str:
    """Ties a page token to the search that issued it (same app, query and options)."""
    described = repr((query.ranks, query.filters, query.metric, query.algorithm, query.min_value, query.per_page))
    return f"search:{app.user_id}/{app.id}:" + hashlib.sha256(described.encode()).hexdigest()


__all__ = [
    "ALGORITHMS",
    "METRICS",
    "RANK_KEYS",
    "FilterSpec",
    "GeoSpec",
    "RankSpec",
    "Search",
    "SearchHit",
    "SearchQuery",
    "SearchResult",
]
