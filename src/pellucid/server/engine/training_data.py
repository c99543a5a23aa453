"""What trained models learn from and predict on: embeddings of inputs (issue #11).

An embedder param names where vectors come from: "builtin" (the server's built-in embedder of
each input's type, server/embedders) or the id of an embedding model in the app (served by a
runner or in-process, as an app's base workflow may be). A training job first reads the
vectors the app already stored for search (the same embedder writes the same vector space),
and embeds only the inputs that have none; a predict embeds its inputs (or takes vectors a
workflow's embedder node passed on).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pellucid.server.embedders import MODALITIES, Embedder, EmbedderUnavailable, builtin_embedder
from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import EngineError
from pellucid.server.engine.models import Models
from pellucid.server.engine.predict import Media, PredictInput, PredictRequest
from pellucid.server.engine.spaces import MODEL_EMBEDDER_PREFIX, output_embedding, space_name
from pellucid.server.records import InputRecord, PageQuery
from pellucid.server.storage import MetadataStore
from pellucid.server.storage.blobs import BlobStore
from pellucid.server.storage.vectors import VectorIndex

BUILTIN = "builtin"
TRAINER_TOKEN_ID = "pellucid-trainer"  # the principal an embedder model's predicts run as (the app's owner)
EMBED_BATCH = 64
PAGE = 500

Vector = npt.NDArray[np.float32]


class NoTrainingData(Exception):
    """The dataset gave nothing to learn from: the job ends NO_DATA with this reason."""


class TrainingFailed(Exception):
    """The job cannot go on: it ends FAILED with this reason."""


class Report(Protocol):
    """How a job tells its progress; each raises when the job must stop (taken over, deleted,
    shutdown, past the server's time limit)."""

    def log(self, line: str) -> None: ...

    def progress(self, fraction: float) -> None: ...

    def check(self) -> None:
        """Progress unchanged: what a fit calls between blocks of work, so the job stops within one block."""


@dataclass
class TrainingData:
    """The labelled examples of one job, in dataset order."""

    input_ids: list[str]
    vectors: Vector  # (examples, dimension)
    concepts: list[tuple[str, ...]]  # each example's concepts among the wanted ones
    concept_names: dict[str, str]
    embedder_key: str  # "text", "image" or "model:<id>"
    input_type: str
    skipped: dict[str, int] = field(default_factory=dict)  # why inputs were left out -> how many


class Embeddings:
    """Vectors of stored inputs and of predict inputs, from the app's stored vectors or an embedder."""

    def __init__(
        self,
        blobs: BlobStore,
        models: Models,
        vectors: VectorIndex | None,
        embedder: Callable[[str], Embedder] = builtin_embedder,
    ) -> None:
        self._blobs = blobs
        self._models = models
        self._vectors = vectors
        self.embedder = embedder  # modality -> built-in embedder (replaceable for tests)

    @staticmethod
    def key(embedder: str, input_type: str) -> str:
        """The embedder key (as engine/spaces.py names vector spaces) for one input type."""
        if embedder == BUILTIN:
            if input_type not in MODALITIES:
                raise TrainingFailed(
                    f"the built-in embedders read {' and '.join(MODALITIES)}, not {input_type}: "
                    "set the embedder param to the id of a model of the app that embeds it"
                )
            return input_type
        return MODEL_EMBEDDER_PREFIX + embedder

    @staticmethod
    def describe(key: str) -> str:
        if key.startswith(MODEL_EMBEDDER_PREFIX):
            return f"model {key[len(MODEL_EMBEDDER_PREFIX) :]!r}"
        return f"the built-in {key} embedder"

    def stored(self, user_id: str, app_id: str, key: str, seqs: Sequence[int]) -> dict[int, Vector]:
        """The vectors the app stored for search under this embedder, by input seq."""
        if self._vectors is None or not seqs:
            return {}
        return self._vectors.get(space_name(user_id, app_id, key), np.array(list(seqs), dtype=np.int64))

    def embed(
        self, user_id: str, app_id: str, key: str, items: Sequence[Media]
    ) -> tuple[dict[int, Vector], dict[int, str]]:
        """Vectors of `items` by position, and why the others have none."""
        found: dict[int, Vector] = {}
        errors: dict[int, str] = {}
        ready: list[int] = []
        for i, media in enumerate(items):
            if media.data:
                ready.append(i)
            elif media.url:
                errors[i] = f"send the {media.kind}'s bytes: trained models embed them on the server and fetch no URL"
            else:
                errors[i] = f"the {media.kind} is empty"
        for start in range(0, len(ready), EMBED_BATCH):
            batch = ready[start : start + EMBED_BATCH]
            if key.startswith(MODEL_EMBEDDER_PREFIX):
                got, failed = self._with_model(
                    user_id, app_id, key[len(MODEL_EMBEDDER_PREFIX) :], [items[i] for i in batch]
                )
            else:
                got, failed = self._builtin(key, [items[i].data for i in batch])
            found.update({batch[j]: v for j, v in got.items()})
            errors.update({batch[j]: e for j, e in failed.items()})
        return found, errors

    def _builtin(self, modality: str, items: list[bytes]) -> tuple[dict[int, Vector], dict[int, str]]:
        try:
            embedder = self.embedder(modality)
        except EmbedderUnavailable as exc:
            raise TrainingFailed(str(exc)) from None
        try:
            result = embedder.embed(items)
        except Exception as exc:  # noqa: BLE001 - the batch as a whole failed: one by one, so a bad item fails alone
            if len(items) == 1:
                return {}, {0: f"the {modality} embedder failed on it: {exc}"}
            found: dict[int, Vector] = {}
            errors: dict[int, str] = {}
            for i, item in enumerate(items):
                one, error = self._builtin(modality, [item])
                if 0 in one:
                    found[i] = one[0]
                else:
                    errors[i] = error[0]
            return found, errors
        found = {i: result.vectors[i] for i in range(len(items)) if i not in result.errors}
        return found, dict(result.errors)

    def _with_model(
        self, user_id: str, app_id: str, model_id: str, items: list[Media]
    ) -> tuple[dict[int, Vector], dict[int, str]]:
        request = PredictRequest(
            user_id=user_id,
            app_id=app_id,
            model_id=model_id,
            inputs=tuple(PredictInput(str(i), (m,)) for i, m in enumerate(items)),
            deadline_seconds=60.0,
        )
        owner = Principal(user_id=user_id, is_admin=False, token_id=TRAINER_TOKEN_ID)
        try:
            result = self._models.predict(owner, request)
        except EngineError as exc:
            raise TrainingFailed(f"embedder model {model_id!r} failed: {exc.message}") from None
        found: dict[int, Vector] = {}
        errors: dict[int, str] = {}
        for i in range(len(items)):
            output = result.outputs[i] if i < len(result.outputs) else None
            if output is None:
                errors[i] = f"model {model_id!r} returned no output for it"
                continue
            vector, why = output_embedding(output, "it")
            if vector is None:
                errors[i] = f"model {model_id!r} {why}"
            else:
                found[i] = vector
        return found, errors


def record_media(blobs: BlobStore, record: InputRecord) -> Media:
    """A stored input's content as a predict input's media (empty if its bytes are gone)."""
    if record.input_type == "text":
        return Media("text", record.text.encode("utf-8", "surrogatepass"))
    data = blobs.get(record.media_sha256) if record.media_sha256 else None
    return Media(record.input_type, data or b"", url=record.media_url, mime=record.media_mime)


def collect(
    store: MetadataStore,
    blobs: BlobStore,
    embeddings: Embeddings,
    user_id: str,
    app_id: str,
    params: dict[str, Any],
    report: Report,
    needs_labels: bool,
) -> TrainingData:
    """The job's examples: the dataset (version)'s inputs with their concepts and vectors.

    A classifier (`needs_labels`) keeps the inputs labelled with a wanted concept (its labels,
    or whole-input annotations, valued > 0); a clusterer keeps every input, or with concepts
    given, those labelled with one of them."""
    dataset_id: str = params["dataset_id"]
    version_id: str = params.get("dataset_version_id", "")
    where = f"dataset {dataset_id!r}" + (f" (version {version_id!r})" if version_id else "")
    records: list[InputRecord] = []
    after: int | None = None
    while True:
        page = store.list_inputs(
            user_id, app_id, PageQuery(limit=PAGE, after=after), dataset_id=dataset_id, version_id=version_id
        )
        records += page.items
        if page.next_after is None:
            break
        after = page.next_after
    if not records:
        hint = ": does that version exist?" if version_id else ": upload labelled inputs to it first"
        raise NoTrainingData(f"{where} holds no inputs{hint}")
    report.log(f"{where} holds {len(records)} inputs")
    labels = _labels(store, user_id, app_id, records)
    wanted: list[str] = list(params.get("concepts") or [])
    wanted_set = set(wanted)
    chosen: list[tuple[InputRecord, tuple[str, ...]]] = []
    for record in records:
        own = labels.get(record.id, ())
        kept = tuple(c for c in own if c in wanted_set) if wanted_set else own
        if (needs_labels or wanted_set) and not kept:
            continue
        chosen.append((record, kept))
    if not chosen:
        about = f"any of the concepts {', '.join(wanted)}" if wanted else "any concept"
        raise NoTrainingData(
            f"none of the {len(records)} inputs of {where} is labelled with {about} "
            "(labels given at upload, or annotations of the whole input, with value > 0)"
        )
    skipped: dict[str, int] = {}
    if len(chosen) < len(records):
        skipped["not labelled with a wanted concept"] = len(records) - len(chosen)
    input_type = _input_type(params, chosen, where)
    if input_type:
        before = len(chosen)
        chosen = [(r, c) for r, c in chosen if r.input_type == input_type]
        if before - len(chosen):
            skipped[f"not {input_type}"] = before - len(chosen)
    embedder: str = params.get("embedder") or BUILTIN
    kinds = {r.input_type for r, _ in chosen}
    keys = {kind: Embeddings.key(embedder, kind) for kind in kinds}
    if len(set(keys.values())) > 1:  # guarded by _input_type; kept for a model embedder reading one type
        raise TrainingFailed(f"{where} mixes {', '.join(sorted(kinds))}: set input_type to one of them")
    key = next(iter(keys.values()))
    report.log(f"embedding {len(chosen)} {'/'.join(sorted(kinds))} inputs with {Embeddings.describe(key)}")
    reasons: list[str] = []
    vectors = _vectors(blobs, embeddings, user_id, app_id, key, [r for r, _ in chosen], report, skipped, reasons)
    kept_rows = [i for i in range(len(chosen)) if i in vectors]
    if not kept_rows:
        why = f" (the first, {reasons[0]})" if reasons else ""
        raise TrainingFailed(f"no input of {where} could be embedded{why}: {'; '.join(skipped) or 'no vectors'}")
    widths = {vectors[i].shape[-1] for i in kept_rows}
    if len(widths) > 1:
        raise TrainingFailed(f"{Embeddings.describe(key)} returned vectors of several lengths ({sorted(widths)})")
    names: dict[str, str] = {}
    for concept_id in sorted({c for _, cs in chosen for c in cs} | wanted_set):
        concept = store.get_concept(user_id, app_id, concept_id)
        names[concept_id] = concept.name if concept is not None and concept.name else concept_id
    return TrainingData(
        input_ids=[chosen[i][0].id for i in kept_rows],
        vectors=np.stack([vectors[i] for i in kept_rows]).astype(np.float32),
        concepts=[chosen[i][1] for i in kept_rows],
        concept_names=names,
        embedder_key=key,
        input_type=next(iter(kinds)) if len(kinds) == 1 else "",
        skipped=skipped,
    )


def _labels(
    store: MetadataStore, user_id: str, app_id: str, records: builtins.list[InputRecord]
) -> dict[str, tuple[str, ...]]:
    """Each input's positive concepts: its labels, then its whole-input annotations'."""
    found: dict[str, dict[str, None]] = {r.id: dict.fromkeys(c.id for c in r.labels if c.value > 0) for r in records}
    ids = [r.id for r in records]
    for start in range(0, len(ids), PAGE):
        chunk = ids[start : start + PAGE]
        after: int | None = None
        while True:
            page = store.list_annotations(user_id, app_id, PageQuery(limit=PAGE, after=after), input_ids=chunk)
            for annotation in page.items:
                if annotation.input_id in found:
                    found[annotation.input_id].update(dict.fromkeys(c.id for c in annotation.concepts if c.value > 0))
            if page.next_after is None:
                break
            after = page.next_after
    return {input_id: tuple(concepts) for input_id, concepts in found.items()}


def _input_type(params: dict[str, Any], chosen: list[tuple[InputRecord, tuple[str, ...]]], where: str) -> str:
    """The one input type to learn from ("" keeps all: a model embedder reading several)."""
    given = params.get("input_type") or "auto"
    if given != "auto":
        if not any(r.input_type == given for r, _ in chosen):
            raise NoTrainingData(f"{where} holds no usable {given} inputs (input_type is {given!r})")
        return str(given)
    kinds = sorted({r.input_type for r, _ in chosen})
    if len(kinds) > 1:
        raise TrainingFailed(
            f"{where} holds {' and '.join(kinds)} inputs, whose embeddings are not comparable: "
            f"set input_type to one of {', '.join(kinds)}"
        )
    return kinds[0]


def _vectors(
    blobs: BlobStore,
    embeddings: Embeddings,
    user_id: str,
    app_id: str,
    key: str,
    records: list[InputRecord],
    report: Report,
    skipped: dict[str, int],
    reasons: list[str],
) -> dict[int, Vector]:
    """Vectors by position: stored ones first, the rest embedded now (progress 0.05 .. 0.5);
    why each of the others could not be embedded is added to `reasons`."""
    stored = embeddings.stored(user_id, app_id, key, [r.seq for r in records])
    vectors = {i: stored[r.seq] for i, r in enumerate(records) if r.seq in stored}
    missing = [i for i in range(len(records)) if i not in vectors]
    report.log(f"{len(vectors)} vectors were stored for search; {len(missing)} to embed")
    for start in range(0, len(missing), EMBED_BATCH):
        batch = missing[start : start + EMBED_BATCH]
        found, errors = embeddings.embed(user_id, app_id, key, [record_media(blobs, records[i]) for i in batch])
        vectors.update({batch[j]: v for j, v in found.items()})
        for j, reason in errors.items():
            reasons.append(f"{records[batch[j]].id}: {reason}")
        report.progress(0.05 + 0.45 * min(start + EMBED_BATCH, len(missing)) / len(missing))
    if reasons:
        skipped["could not be embedded"] = len(reasons)
        report.log(f"{len(reasons)} inputs could not be embedded, e.g. {'; '.join(reasons[:3])}")
    return vectors


__all__ = [
    "BUILTIN",
    "Embeddings",
    "NoTrainingData",
    "Report",
    "TrainingData",
    "TrainingFailed",
    "collect",
    "record_media",
]
