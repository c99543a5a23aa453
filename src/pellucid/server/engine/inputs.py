"""Inputs and annotations: validation, content-derived ids, per-item outcomes, jobs.

A batch never fails as a whole because of one item: every item gets its own outcome,
and the good ones are stored in one transaction.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import (
    AlreadyExists,
    EngineError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from pellucid.server.engine.fair_pool import FairPool
from pellucid.server.engine.fetch import UrlFetcher
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.media import sniff
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.validation import (
    MAX_NAME_LENGTH,
    check_batch,
    check_metadata,
    check_text,
)
from pellucid.server.records import (
    AnnotationRecord,
    AppRecord,
    ConceptRecord,
    ConceptValue,
    IndexState,
    IngestItem,
    InputRecord,
    JobRecord,
    RegionRecord,
)
from pellucid.server.storage import AnnotationResult, IngestResult, MetadataStore
from pellucid.server.storage.blobs import (
    BlobStore,
    BlobTooLarge,
    CollectionReport,
    DigestMismatch,
    is_sha256,
    sha256_hex,
)

INPUT_TYPES = ("image", "video", "audio", "text")
MAX_TEXT_BYTES = 1024 * 1024
ANNOTATION_ACTIONS = ("merge", "overwrite", "remove")
DEFAULT_MAX_BLOB_BYTES = 1 << 30
DEFAULT_BLOB_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class MediaSpec:
    kind: str  # image | video | audio
    data: bytes = b""
    url: str = ""
    blob_sha256: str = ""


@dataclass(frozen=True)
class InputSpec:
    """An input as the caller sent it."""

    id: str = ""
    media: tuple[MediaSpec, ...] = ()
    text: str = ""
    text_url: str = ""
    labels: tuple[ConceptValue, ...] = ()
    regions: tuple[RegionRecord, ...] = ()
    metadata: dict[str, Any] | None = None
    geo: tuple[float, float] | None = None
    dataset_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputOutcome:
    input_id: str
    error: EngineError | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class AnnotationOutcome:
    annotation: AnnotationRecord | None
    error: EngineError | None = None
    duplicate: bool = False


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def check_sha256(value: str, field: str) -> str:
    """A client-supplied blob hash: 64 lowercase hex characters, nothing else (it keys files on disk)."""
    if not is_sha256(value):
        raise InvalidArgument(
            f"{field} {value[:80]!r} is not a sha256: give the 64 lowercase hex characters UploadBlob returned",
            reason="BAD_SHA256",
            field=field,
        )
    return value


def blob_not_found(field: str, sha256: str) -> NotFound:
    """The same answer whether nobody stored the blob or someone else did: no existence oracle."""
    return NotFound(
        f"{field}: no blob {sha256} in your account: send it with UploadBlob (or send the bytes) first",
        reason="BLOB_NOT_FOUND",
        field=field,
    )


def too_large(limit: int, field: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"{field}: the blob is larger than this server's limit of {limit} bytes ({limit / (1 << 20):,.1f} MiB); "
        "the limit is the server setting max_blob_bytes (`pellucid server --max-blob-bytes N`)",
        reason="BLOB_TOO_LARGE",
        field=field,
    )


def derived_annotation_id(input_id: str, concepts: Iterable[ConceptValue], region: RegionRecord | None) -> str:
    """Same input and same labels or region: same id, so re-running an upload adds nothing twice."""
    labels = ",".join(sorted(f"{c.id}={c.value!r}" for c in concepts))
    shape = (
        ""
        if region is None
        else f"{region.bbox!r}|{region.polygon!r}|{','.join(sorted(c.id for c in region.concepts))}"
    )
    return _digest("annotation", input_id, labels, shape)[:32]


# an input ready to store (its record, annotations and bytes), or why it cannot be
Prepared = tuple[InputRecord, builtins.list[AnnotationRecord], bytes] | EngineError


class Inputs:
    FETCH_WORKERS = 8

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        apps: Apps,
        clock: Callable[[], float] = time.time,
        urls: UrlFetcher | None = None,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        blob_grace_seconds: float = DEFAULT_BLOB_GRACE_SECONDS,
    ) -> None:
        self._store = store
        self.max_blob_bytes = max_blob_bytes
        self.blob_grace_seconds = blob_grace_seconds
        self._blobs = blobs
        self._apps = apps
        self._clock = clock
        self._urls = urls or UrlFetcher()
        # URL fetches of every user's batches share these threads in turns (a user's batch of slow
        # URLs, each up to the fetch timeout, cannot hold them all: the others' batches go on)
        self._fetcher: FairPool[Prepared] = FairPool(self.FETCH_WORKERS, self.FETCH_WORKERS - 1, "pellucid-fetch")
        # called when a batch stored inputs that wait to be embedded (wakes the indexer)
        self.on_pending: Callable[[], None] | None = None

    def close(self) -> None:
        """Stop the URL fetch threads (fetches under way end first)."""
        self._fetcher.close()

    # ingestion

    def post(
        self, principal: Principal, user_id: str, app_id: str, specs: builtins.list[InputSpec], job_id: str = ""
    ) -> tuple[builtins.list[InputOutcome], JobRecord | None]:
        check_batch(len(specs), "inputs")
        app = self._apps.get(principal, user_id, app_id)
        if job_id:
            validate_id(job_id, "inputs_add_job_id")
        known_datasets = self._existing_datasets(app, {d for s in specs for d in s.dataset_ids})
        # the types the app's base workflow embeds: those inputs wait for the indexer (PENDING)
        embedded = frozenset(self._apps.embedders(app.user_id, app.id, app.base_workflow))
        # one query for the batch: the blobs named by hash that this app's owner holds (others: as if absent)
        named = sorted({m.blob_sha256 for s in specs for m in s.media if is_sha256(m.blob_sha256)})
        held = self._blobs.acquire(app.user_id, named) if named else {}
        prepared: builtins.list[Prepared]
        if any(s.text_url or any(m.url for m in s.media) for s in specs):
            futures = [
                self._fetcher.submit(app.user_id, self._prepare, app, i, s, known_datasets, held, embedded)
                for i, s in enumerate(specs)
            ]
            prepared = [future.result() for future in futures]
        else:
            prepared = [self._prepare(app, i, s, known_datasets, held, embedded) for i, s in enumerate(specs)]
        # bytes first (content-addressed, so a crash here leaves nothing to undo), then metadata;
        # storing them makes the app's owner an owner of each blob
        payloads = [(p[2], p[0].media_sha256) for p in prepared if not isinstance(p, EngineError) and p[2]]
        if payloads:
            self._blobs.put_many(app.user_id, [data for data, _ in payloads], [sha for _, sha in payloads])
        items: builtins.list[IngestItem] = []
        concepts: dict[str, ConceptRecord] = {}
        for p in prepared:
            if isinstance(p, EngineError):
                continue
            record, annotations, _ = p
            items.append(IngestItem(record, tuple(annotations)))
            for a in annotations:
                for c in [*a.concepts, *(c for r in a.regions for c in r.concepts)]:
                    if c.id not in concepts:
                        concepts[c.id] = ConceptRecord(app.user_id, app.id, c.id, c.name or c.id, record.created_at)
        now = self._clock()
        failed_early = sum(isinstance(p, EngineError) for p in prepared)
        job = (
            JobRecord(app.user_id, app.id, job_id, now, now, received=len(specs), failed=failed_early)
            if job_id
            else None
        )
        stored, totals = (
            self._store.ingest(app.user_id, app.id, items, list(concepts.values()), job) if items or job else ([], None)
        )
        if self.on_pending is not None and any(
            r is IngestResult.NEW and i.input.index_state is IndexState.PENDING for i, r in zip(items, stored)
        ):
            self.on_pending()
        outcomes, results = [], iter(zip(items, stored))
        for p in prepared:
            if isinstance(p, EngineError):
                outcomes.append(InputOutcome("", p))
                continue
            item, result = next(results)
            if result is IngestResult.CONFLICT:
                outcomes.append(
                    InputOutcome(
                        item.input.id,
                        AlreadyExists(
                            f"input id {item.input.id!r} already holds different content: choose another id or delete that input",
                            reason="INPUT_ID_TAKEN",
                            field="id",
                        ),
                    )
                )
            else:
                outcomes.append(InputOutcome(item.input.id, duplicate=result is IngestResult.DUPLICATE))
        return outcomes, totals

    def _existing_datasets(self, app: AppRecord, dataset_ids: set[str]) -> set[str]:
        return self._store.existing_datasets(app.user_id, app.id, sorted(dataset_ids)[:1000])

    def _prepare(
        self,
        app: AppRecord,
        index: int,
        spec: InputSpec,
        datasets: set[str],
        held: dict[str, int],
        embedded: frozenset[str] = frozenset(),
    ) -> Prepared:
        try:
            return self._prepare_or_raise(app, spec, datasets, held, embedded)
        except EngineError as exc:
            # messages name fields relative to the item (the status is already per item);
            # the field path says where the item sits in the request
            exc.field = f"inputs[{index}]" + (f".{exc.field}" if exc.field else "")
            return exc

    def _prepare_or_raise(
        self,
        app: AppRecord,
        spec: InputSpec,
        datasets: set[str],
        held: dict[str, int],
        embedded: frozenset[str] = frozenset(),
    ) -> tuple[InputRecord, builtins.list[AnnotationRecord], bytes]:
        """Validate one item and build its records; the bytes returned are to be stored as a blob.

        `held`: the sizes of the blobs named by hash in the batch that the app's owner holds;
        `embedded`: the input types the app's base workflow embeds.
        """
        for dataset_id in spec.dataset_ids:
            validate_id(dataset_id, "dataset_ids")
            if dataset_id not in datasets:
                raise NotFound(
                    f"dataset {dataset_id!r} not found in app {app.id!r}: create it first",
                    reason="DATASET_NOT_FOUND",
                    field="dataset_ids",
                )
        text = spec.text
        if spec.text_url:
            raw = self._urls.fetch(spec.text_url, "data.text.url")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(f"the text at {spec.text_url!r} is not UTF-8", field="data.text") from None
        if len(text.encode()) > MAX_TEXT_BYTES:
            raise InvalidArgument(f"text is longer than {MAX_TEXT_BYTES} bytes", field="data.text")
        if "\x00" in text:
            raise InvalidArgument("text contains a NUL character", field="data.text")
        media_fields: dict[str, Any] = {}
        media_key, payload = "", b""
        if len(spec.media) > 1:
            kinds = ", ".join(m.kind for m in spec.media)
            raise InvalidArgument(
                f"one input holds one of image, video or audio (plus text), not {kinds}", field="data"
            )
        if spec.media:
            media = spec.media[0]
            field = f"data.{media.kind}"
            given = sum(map(bool, (media.data, media.url, media.blob_sha256)))
            if given != 1:
                raise InvalidArgument(f"{field}: give exactly one of base64 (bytes), url or blob_sha256", field=field)
            if media.blob_sha256:
                sha = check_sha256(media.blob_sha256, f"{field}.blob_sha256")
                size = held.get(sha)
                if size is None:
                    raise blob_not_found(f"{field}.blob_sha256", sha)
                # images are checked whole (their end marker matters); video and audio by their header
                sample = self._blobs.get(sha) if media.kind == "image" else next(self._blobs.read_chunks(sha), b"")
                info = sniff(sample or b"", media.kind, field)
            else:
                payload = media.data or self._urls.fetch(media.url, f"{field}.url")
                if len(payload) > self.max_blob_bytes:
                    raise too_large(self.max_blob_bytes, field)
                info = sniff(payload, media.kind, field)
                sha, size = sha256_hex(payload), len(payload)
            media_key = sha
            media_fields = dict(
                media_sha256=sha,
                media_size=size,
                media_mime=info.mime,
                media_url=media.url,
                width=info.width,
                height=info.height,
            )
        elif not text:
            raise InvalidArgument("no content: give an image, video, audio or text", field="data")
        metadata = check_metadata(spec.metadata or {}, "data.metadata")
        if spec.geo is not None:
            lon, lat = spec.geo
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise InvalidArgument(
                    f"geo point ({lon}, {lat}) is out of range: longitude -180..180, latitude -90..90", field="data.geo"
                )
        labels = _checked_concepts(spec.labels, "data.concepts")
        regions = [_checked_region(r, f"data.regions[{i}]") for i, r in enumerate(spec.regions)]
        input_type = spec.media[0].kind if spec.media else "text"
        text_key = hashlib.sha256(text.encode()).hexdigest() if text else _EMPTY_SHA256
        content_key = _digest("input", input_type, media_key, text_key)
        input_id = spec.id or content_key[:32]
        validate_id(input_id, "id")
        now = self._clock()
        annotations = []
        if labels:
            annotations.append(
                AnnotationRecord(input_id, derived_annotation_id(input_id, labels, None), now, concepts=tuple(labels))
            )
        for region in regions:
            region = replace(region, id=region.id or derived_annotation_id(input_id, (), region))
            annotations.append(
                AnnotationRecord(input_id, derived_annotation_id(input_id, (), region), now, regions=(region,))
            )
        record = InputRecord(
            user_id=app.user_id,
            app_id=app.id,
            id=input_id,
            input_type=input_type,
            content_key=content_key,
            created_at=now,
            text=text,
            text_url=spec.text_url,
            metadata=metadata,
            geo=spec.geo,
            labels=tuple(labels),
            dataset_ids=tuple(dict.fromkeys(spec.dataset_ids)),
            index_state=IndexState.PENDING if input_type in embedded else IndexState.READY,
            **media_fields,
        )
        return record, annotations, payload

    def upload_blob(
        self, principal: Principal, user_id: str, app_id: str, chunks: Iterator[bytes], expected_sha256: str = ""
    ) -> tuple[str, int]:
        """Store a streamed blob for the app's owner; refused as soon as it passes max_blob_bytes."""
        app = self._apps.get(principal, user_id, app_id)
        if expected_sha256:
            check_sha256(expected_sha256, "sha256")
        try:
            return self._blobs.put_stream(app.user_id, chunks, self.max_blob_bytes, expected_sha256)
        except BlobTooLarge as exc:
            raise too_large(exc.limit, "data") from None
        except DigestMismatch as exc:
            raise InvalidArgument(
                f"the blob's sha256 is {exc.actual}, not {exc.expected}: the upload was damaged, send it again",
                field="sha256",
            ) from None

    def collect_garbage(self, grace_seconds: float | None = None) -> CollectionReport:
        """Delete blobs no input uses any more (once unused for the grace period) and compact their space.

        A blob counts as used by a user while an input in one of that user's apps, or one of the
        user's hosted data files, holds it;
        the grace period protects blobs uploaded for inputs still on their way (see
        BlobStore.collect_garbage for why that is safe).
        """
        grace = self.blob_grace_seconds if grace_seconds is None else grace_seconds
        if grace < 0:
            raise InvalidArgument(f"grace_seconds {grace} is negative", field="grace_seconds")
        return self._blobs.collect_garbage(self._blobs_in_use, grace)

    def _blobs_in_use(self, pairs: builtins.list[tuple[str, str]]) -> set[tuple[str, str]]:
        """The pairs an input or a hosted data file (data://) of that user still names."""
        held = self._store.referenced_blobs(pairs)
        rest = [pair for pair in pairs if pair not in held]
        return held | (self._store.referenced_data_blobs(rest) if rest else set())

    def get_job(self, principal: Principal, user_id: str, app_id: str, job_id: str) -> JobRecord:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(job_id, "job_id")
        job = self._store.get_job(app.user_id, app.id, job_id)
        if job is None:
            raise NotFound(f"inputs-add job {job_id!r} not found in app {app.id!r}", field="job_id")
        return job

    # reading and deleting

    def get(self, principal: Principal, user_id: str, app_id: str, input_id: str) -> InputRecord:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(input_id, "input_id")
        found = self._store.get_inputs(app.user_id, app.id, [input_id])
        if input_id not in found:
            raise NotFound(f"input {input_id!r} not found in app {app.id!r}", field="input_id")
        return found[input_id]

    def list(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        page: PageRequest,
        dataset_id: str = "",
        version_id: str = "",
        input_type: str = "",
        ids: builtins.list[str] | None = None,
    ) -> tuple[builtins.list[InputRecord], str]:
        app = self._apps.get(principal, user_id, app_id)
        if input_type and input_type not in INPUT_TYPES:
            raise InvalidArgument(f"input_type {input_type!r}: use one of {', '.join(INPUT_TYPES)}", field="input_type")
        if version_id and not dataset_id:
            raise InvalidArgument("a dataset version needs its dataset_id", field="dataset_id")
        for value, name in ((dataset_id, "dataset_id"), (version_id, "dataset_version_id")):
            if value:
                validate_id(value, name)
        if ids and len(ids) > 1000:
            raise InvalidArgument(f"ids has {len(ids)} items: filter by at most 1000 ids per call", field="ids")
        scope = f"inputs:{app.user_id}:{app.id}:{dataset_id}:{version_id}:{input_type}:{','.join(ids or [])}"
        try:
            result = self._store.list_inputs(
                app.user_id,
                app.id,
                to_query(page, scope),
                dataset_id=dataset_id,
                version_id=version_id,
                input_type=input_type,
                ids=ids,
            )
        except LookupError as exc:
            raise NotFound(f"{exc} in app {app.id!r}", field="dataset_id") from None
        return result.items, next_token(result, scope)

    def delete(
        self, principal: Principal, user_id: str, app_id: str, input_ids: builtins.list[str]
    ) -> builtins.list[InputOutcome]:
        check_batch(len(input_ids), "ids")
        app = self._apps.get(principal, user_id, app_id)
        outcomes: builtins.list[InputOutcome | None] = []
        valid = []
        for i, input_id in enumerate(input_ids):
            try:
                validate_id(input_id, f"ids[{i}]")
                valid.append(input_id)
                outcomes.append(None)
            except EngineError as exc:
                outcomes.append(InputOutcome(input_id, exc))
        # their vectors go too (keyed by seq: read the seqs before the rows go); a worker embedding
        # one of them meanwhile removes the vector it wrote when it finds the input gone
        seqs = self._store.input_seqs(app.user_id, app.id, valid) if valid and self._apps.vectors is not None else {}
        deleted_flags = self._store.delete_inputs(app.user_id, app.id, valid)
        self._apps.forget_vectors(app, [seqs[i] for i, ok in zip(valid, deleted_flags) if ok and i in seqs])
        deleted = iter(deleted_flags)
        return [
            o
            if o is not None
            else (
                InputOutcome(input_ids[i])
                if next(deleted)
                else InputOutcome(
                    input_ids[i], NotFound(f"input {input_ids[i]!r} not found in app {app.id!r}", field=f"ids[{i}]")
                )
            )
            for i, o in enumerate(outcomes)
        ]

    def download(
        self, principal: Principal, user_id: str, app_id: str, input_ids: builtins.list[str]
    ) -> Iterator[tuple[InputRecord, Iterator[bytes]]]:
        """Each input with an iterator over its bytes (media, or the UTF-8 text); NotFound if any is missing."""
        check_batch(len(input_ids), "ids")
        app = self._apps.get(principal, user_id, app_id)
        found = self._store.get_inputs(app.user_id, app.id, list(dict.fromkeys(input_ids)))
        missing = [i for i in input_ids if i not in found]
        if missing:
            raise NotFound(f"inputs not found in app {app.id!r}: {', '.join(missing[:10])}", field="ids")
        for input_id in input_ids:
            record = found[input_id]
            if record.media_sha256:
                if not is_sha256(record.media_sha256) or self._blobs.size(record.media_sha256) is None:
                    # stored before hashes were checked, or its blob is gone: never a path, never INTERNAL
                    raise NotFound(
                        f"the media of input {input_id!r} is not in the blob store: upload it again",
                        reason="BLOB_NOT_FOUND",
                        field="ids",
                    )
                yield record, self._blobs.read_chunks(record.media_sha256)
            else:
                yield record, iter([record.text.encode()])

    # annotations

    def post_annotations(
        self, principal: Principal, user_id: str, app_id: str, annotations: builtins.list[AnnotationRecord]
    ) -> builtins.list[AnnotationOutcome]:
        return self._put_annotations(principal, user_id, app_id, annotations, "create")

    def patch_annotations(
        self, principal: Principal, user_id: str, app_id: str, annotations: builtins.list[AnnotationRecord], action: str
    ) -> builtins.list[AnnotationOutcome]:
        if action not in ANNOTATION_ACTIONS:
            raise InvalidArgument(f"action {action!r}: use one of {', '.join(ANNOTATION_ACTIONS)}", field="action")
        return self._put_annotations(principal, user_id, app_id, annotations, action)

    def _put_annotations(
        self, principal: Principal, user_id: str, app_id: str, annotations: builtins.list[AnnotationRecord], action: str
    ) -> builtins.list[AnnotationOutcome]:
        check_batch(len(annotations), "annotations")
        app = self._apps.get(principal, user_id, app_id)
        now = self._clock()
        outcomes: builtins.list[AnnotationOutcome | None] = [None] * len(annotations)
        ready: builtins.list[tuple[int, AnnotationRecord]] = []
        for i, a in enumerate(annotations):
            where = f"annotations[{i}]"
            try:
                validate_id(a.input_id, f"{where}.input_id")
                concepts = _checked_concepts(a.concepts, f"{where}.data.concepts")
                regions = tuple(_checked_region(r, f"{where}.data.regions[{j}]") for j, r in enumerate(a.regions))
                if action == "create" and not (concepts or regions):
                    raise InvalidArgument(f"{where}: an annotation needs concepts or regions", field=f"{where}.data")
                regions = tuple(replace(r, id=r.id or derived_annotation_id(a.input_id, (), r)) for r in regions)
                annotation_id = a.id or derived_annotation_id(
                    a.input_id, concepts, regions[0] if len(regions) == 1 and not concepts else None
                )
                if action != "create" and not a.id:
                    raise InvalidArgument(f"{where}: patching needs the annotation id", field=f"{where}.id")
                validate_id(annotation_id, f"{where}.id")
                ready.append((i, AnnotationRecord(a.input_id, annotation_id, now, tuple(concepts), regions)))
            except EngineError as exc:
                outcomes[i] = AnnotationOutcome(None, exc)
        if action != "create":
            existing = self._store.get_annotations(app.user_id, app.id, [(a.input_id, a.id) for _, a in ready])
            merged = []
            for i, a in ready:
                current = existing.get((a.input_id, a.id))
                if current is None:
                    outcomes[i] = AnnotationOutcome(
                        None,
                        NotFound(
                            f"annotation {a.id!r} of input {a.input_id!r} not found", field=f"annotations[{i}].id"
                        ),
                    )
                    continue
                merged.append((i, _apply(current, a, action)))
            ready = merged
        if ready:
            results = self._store.put_annotations(
                app.user_id, app.id, [a for _, a in ready], replace=action != "create"
            )
            for (i, a), result in zip(ready, results):
                if result is AnnotationResult.MISSING_INPUT:
                    outcomes[i] = AnnotationOutcome(
                        None,
                        NotFound(
                            f"input {a.input_id!r} not found in app {app.id!r}", field=f"annotations[{i}].input_id"
                        ),
                    )
                else:
                    outcomes[i] = AnnotationOutcome(a, duplicate=result is AnnotationResult.DUPLICATE)
        return [o for o in outcomes if o is not None]

    def list_annotations(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        page: PageRequest,
        input_ids: builtins.list[str] | None = None,
    ) -> tuple[builtins.list[AnnotationRecord], str]:
        app = self._apps.get(principal, user_id, app_id)
        for i, input_id in enumerate(input_ids or []):
            validate_id(input_id, f"input_ids[{i}]")
        if input_ids and len(input_ids) > 1000:
            raise InvalidArgument("input_ids: at most 1000 per call", field="input_ids")
        scope = f"annotations:{app.user_id}:{app.id}:{','.join(input_ids or [])}"
        result = self._store.list_annotations(app.user_id, app.id, to_query(page, scope), input_ids)
        return result.items, next_token(result, scope)


def _checked_concepts(concepts: Iterable[ConceptValue], field: str) -> builtins.list[ConceptValue]:
    checked = []
    for i, c in enumerate(concepts):
        validate_id(c.id, f"{field}[{i}].id (the label)")
        check_text(c.name, f"{field}[{i}].name", MAX_NAME_LENGTH)
        if not 0.0 <= c.value <= 1.0:
            raise InvalidArgument(
                f"{field}[{i}].value {c.value} is out of range: use 0 (absent) to 1 (present)", field=field
            )
        checked.append(c)
    return checked


def _checked_region(region: RegionRecord, field: str) -> RegionRecord:
    if region.id:
        validate_id(region.id, f"{field}.id")
    if region.bbox is None and region.polygon is None:
        raise InvalidArgument(f"{field}: give a bounding box or a polygon", field=field)
    if region.bbox is not None:
        top, left, bottom, right = region.bbox
        if not all(0.0 <= v <= 1.0 for v in region.bbox) or not (top < bottom and left < right):
            raise InvalidArgument(
                f"{field}: bounding box (top_row={top}, left_col={left}, bottom_row={bottom}, right_col={right}) is out of range: "
                "coordinates are fractions of the image size in [0, 1], with top < bottom and left < right",
                reason="BAD_BOX",
                field=field,
            )
    if region.polygon is not None:
        if len(region.polygon) < 3:
            raise InvalidArgument(f"{field}: a polygon needs at least 3 points", field=field)
        if not all(0.0 <= v <= 1.0 for point in region.polygon for v in point):
            raise InvalidArgument(f"{field}: polygon points are fractions of the image size in [0, 1]", field=field)
    _checked_concepts(region.concepts, f"{field}.data.concepts")
    return region


def _apply(current: AnnotationRecord, given: AnnotationRecord, action: str) -> AnnotationRecord:
    if action == "overwrite":
        return replace(given, created_at=current.created_at)
    if action == "remove":
        drop_concepts = {c.id for c in given.concepts}
        drop_regions = {r.id for r in given.regions}
        return replace(
            current,
            concepts=tuple(c for c in current.concepts if c.id not in drop_concepts),
            regions=tuple(r for r in current.regions if r.id not in drop_regions),
        )
    concepts = {c.id: c for c in current.concepts} | {c.id: c for c in given.concepts}
    regions = {r.id: r for r in current.regions} | {r.id: r for r in given.regions}
    return replace(current, concepts=tuple(concepts.values()), regions=tuple(regions.values()))
