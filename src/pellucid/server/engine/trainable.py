"""The model types the server trains and then serves itself (issue #11).

- `embedding-classifier`: a softmax classifier (multinomial logistic regression, or a small
  MLP with `hidden_units`) over the embeddings of the built-in embedders or of an embedding
  model of the app; its outputs are the concepts it learnt, with probabilities.
- `clusterer`: k-means over the same embeddings; a predict answers the nearest cluster as the
  concept `cluster-<n>` (with the distance in the output's metadata), and the cluster of each
  training input is stored: listed by `ListClusterAssignments`, and answered by a predict of
  an input that carries only its id.

A version of such a model is made by a training job (engine/training.py) and predicts once
the job has TRAINED it; `check_version` says why any other version cannot.
"""

from __future__ import annotations

import abc
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.local_models import LocalModelType, ParamInfo, check_params
from pellucid.server.engine.predict import OutputCode, OutputData, PredictInput, PredictOutput
from pellucid.server.engine.training_data import (
    BUILTIN,
    Embeddings,
    NoTrainingData,
    Report,
    TrainingData,
    TrainingFailed,
    Vector,
)
from pellucid.server.records import (
    ClusterAssignment,
    ConceptValue,
    ModelRecord,
    ModelVersionRecord,
    PageQuery,
    TrainingState,
)
from pellucid.server.storage import MetadataStore
from pellucid.trained import KMeans, SoftmaxClassifier, fit_kmeans, fit_softmax, load_weights

MAX_SEED = 2**31 - 1

DATA_PARAMS = (
    ParamInfo(
        "dataset_id",
        "str",
        "",
        "the dataset of the model's app whose inputs are the training examples",
        required=True,
    ),
    ParamInfo(
        "dataset_version_id",
        "str",
        "",
        "a version of the dataset (its inputs frozen when it was made); empty: the dataset's inputs now",
    ),
    ParamInfo(
        "embedder",
        "str",
        BUILTIN,
        "where the embeddings come from: 'builtin' (the server's embedder of each input's type: text "
        "all-MiniLM-L6-v2, 384-d; image ResNet-50, 1024-d; vectors already stored for search are reused) "
        "or the id of an embedding model in the app",
    ),
    ParamInfo(
        "input_type",
        "choice",
        "auto",
        "the input type to learn from; auto: the dataset's only one (a dataset mixing text and image needs one)",
        choices=("auto", "text", "image", "video", "audio"),
    ),
    ParamInfo("seed", "int", 0, "seed of the random initialisation and split: equal seeds, equal models", 0, MAX_SEED),
)


@dataclass
class Fitted:
    """What a job made: the weights (trained.py's bytes), metrics, and per-input assignments."""

    artifact: bytes
    metrics: dict[str, Any]
    concepts: list[ConceptValue] = field(default_factory=list)
    assignments: list[ClusterAssignment] = field(default_factory=list)


class TrainableModelType(LocalModelType):
    """A local model type whose versions a training job makes (see engine/training.py)."""

    trainable = True
    reads = ("text", "image", "embeddings")
    makes = ("concepts",)
    templates: ClassVar[dict[str, dict[str, Any]]] = {}  # name -> param values over the defaults
    needs_labels = True  # inputs without a wanted concept are no examples

    def __init__(self, store: MetadataStore, embeddings: Embeddings) -> None:
        self._store = store
        self._embeddings = embeddings
        self._loaded: OrderedDict[tuple[str, ...], SoftmaxClassifier | KMeans] = OrderedDict()
        self._lock = threading.Lock()

    # params

    def resolve_params(self, template: str, given: dict[str, Any]) -> dict[str, Any]:
        """Every declared param: the defaults, then the template's values, then `given` (checked)."""
        if template and template not in self.templates:
            known = ", ".join(sorted(self.templates)) or "none"
            raise InvalidArgument(
                f"template {template!r} is not one of {self.type_id}'s templates ({known})", field="template"
            )
        values = {p.name: p.default for p in self.params}
        values.update(self.templates.get(template, {}))
        values.update(check_params(self.params, given))
        return values

    @abc.abstractmethod
    def fit(self, data: TrainingData, params: dict[str, Any], report: Report) -> Fitted:
        """Learn from the job's examples (report.progress from 0.5 to 0.95)."""

    # serving

    def check_version(self, model: ModelRecord, version: ModelVersionRecord) -> str:
        job = self._store.get_training_job(model.user_id, model.app_id, model.id, version.id)
        described = f"version {version.id!r} of model {model.id!r}"
        if job is None:
            return (
                f"{described} was not made by training, so it has no weights: call Model.train() and predict "
                "with the version it returns"
            )
        if job.state in (TrainingState.QUEUED, TrainingState.TRAINING):
            return (
                f"{described} is {job.state.value} ({job.progress:.0%} done): predict once "
                "Model.training_status() says trained"
            )
        if job.state is TrainingState.FAILED:
            return f"training {described} failed: {job.reason}"
        if job.state is TrainingState.NO_DATA:
            return f"training {described} found no data: {job.reason}"
        return ""

    def _trained(self, model: ModelRecord, version: ModelVersionRecord) -> SoftmaxClassifier | KMeans:
        job = self._store.get_training_job(model.user_id, model.app_id, model.id, version.id)
        if job is None or job.state is not TrainingState.TRAINED:
            raise TrainingFailed(self.check_version(model, version) or "the version is not trained")
        key = (model.user_id, model.app_id, model.id, version.id, str(job.finished_at))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        artifact = self._store.get_training_artifact(model.user_id, model.app_id, model.id, version.id)
        if artifact is None:
            raise TrainingFailed(f"the weights of version {version.id!r} are missing")
        loaded = load_weights(artifact)
        with self._lock:
            self._loaded[key] = loaded
            while len(self._loaded) > 32:
                self._loaded.popitem(last=False)
        return loaded

    def predict(
        self,
        model: ModelRecord,
        version: ModelVersionRecord,
        inputs: Sequence[PredictInput],
        params: dict[str, Any],
    ) -> list[PredictOutput]:
        try:
            trained = self._trained(model, version)
        except (TrainingFailed, ValueError, OSError) as exc:  # deleted or retrained since check_version
            return [_failed(given, OutputCode.FAILED_PRECONDITION, str(exc)) for given in inputs]
        outputs: dict[int, PredictOutput] = self._stored_outputs(model, version, inputs)
        vectors: dict[int, Vector] = {}
        groups: dict[str, list[int]] = {}
        embedder = str(version.params.get("embedder") or BUILTIN)
        for i, given in enumerate(inputs):
            if i in outputs:
                continue
            if given.embeddings:
                vectors[i] = np.asarray(given.embeddings[0], dtype=np.float32)
                continue
            media = next(iter(given.media), None)
            if media is None:
                outputs[i] = _failed(given, OutputCode.INVALID_ARGUMENT, self._no_content(model))
                continue
            try:
                key = Embeddings.key(embedder, media.kind)
            except TrainingFailed as exc:
                outputs[i] = _failed(given, OutputCode.INVALID_ARGUMENT, str(exc))
                continue
            groups.setdefault(key, []).append(i)
        for key, positions in groups.items():
            try:
                found, errors = self._embeddings.embed(
                    model.user_id, model.app_id, key, [inputs[i].media[0] for i in positions]
                )
            except TrainingFailed as exc:
                found, errors = {}, dict.fromkeys(range(len(positions)), str(exc))
            for j, i in enumerate(positions):
                if j in found:
                    vectors[i] = found[j]
                else:
                    outputs[i] = _failed(inputs[i], OutputCode.FAILED_PRECONDITION, errors.get(j, "not embedded"))
        usable: list[int] = []
        for i, vector in vectors.items():
            if vector.ndim != 1 or vector.shape[0] != trained.dimension:
                outputs[i] = _failed(
                    inputs[i],
                    OutputCode.INVALID_ARGUMENT,
                    f"the embedding has {vector.shape[-1]} dimensions; the model was trained on {trained.dimension}",
                )
            elif not np.isfinite(vector).all():
                outputs[i] = _failed(
                    inputs[i], OutputCode.INVALID_ARGUMENT, "the embedding holds NaN or infinite values"
                )
            else:
                usable.append(i)
        if usable:
            data = self._apply(trained, np.stack([vectors[i] for i in usable]))
            for i, made in zip(usable, data):
                outputs[i] = PredictOutput(inputs[i].id, data=made)
        return [outputs[i] for i in range(len(inputs))]

    def _no_content(self, model: ModelRecord) -> str:
        return f"model {model.id!r} reads text, an image or an embedding: the input has none"

    def _stored_outputs(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput]
    ) -> dict[int, PredictOutput]:
        """Outputs answered from what training stored, by position (a clusterer's assignments)."""
        return {}

    @abc.abstractmethod
    def _apply(self, trained: SoftmaxClassifier | KMeans, vectors: Vector) -> list[OutputData]: ...


def _failed(given: PredictInput, code: OutputCode, message: str) -> PredictOutput:
    return PredictOutput(given.id, code, message)


class EmbeddingClassifier(TrainableModelType):
    type_id = "embedding-classifier"
    description = (
        "A classifier trained by the server over embeddings (built-in embedder or an embedding model of the "
        "app): multinomial logistic regression, or a small MLP with hidden_units > 0. Outputs the concepts "
        "it learnt with their probabilities."
    )
    params = (
        *DATA_PARAMS,
        ParamInfo(
            "concepts",
            "list[str]",
            [],
            "the concepts to learn; an input labelled with some of them is an example of each; "
            "empty: every concept the dataset's inputs are labelled with (at least two need examples)",
        ),
        ParamInfo(
            "hidden_units",
            "int",
            0,
            "units of one ReLU hidden layer; 0: logistic regression (no hidden layer)",
            0,
            4096,
        ),
        ParamInfo("epochs", "int", 200, "full-batch Adam steps at most (fewer once the loss stops moving)", 1, 100000),
        ParamInfo("learning_rate", "float", 0.05, "Adam's step size", 1e-6, 10.0),
        ParamInfo("l2", "float", 1e-2, "L2 penalty on the weights (larger: smoother, less overfitting)", 0.0, 100.0),
        ParamInfo(
            "validation_fraction",
            "float",
            0.2,
            "share of each concept's examples held out to measure accuracy (a concept with fewer than "
            "1/fraction examples keeps all of them for training); 0: none held out",
            0.0,
            0.5,
        ),
    )
    templates: ClassVar[dict[str, dict[str, Any]]] = {
        "logistic-regression": {},
        "mlp": {"hidden_units": 128, "epochs": 300, "learning_rate": 0.005},
    }

    def fit(self, data: TrainingData, params: dict[str, Any], report: Report) -> Fitted:
        wanted: list[str] = list(params.get("concepts") or [])
        counts = Counter(c for labelled in data.concepts for c in set(labelled))
        concept_ids = wanted or sorted(counts)
        missing = [c for c in concept_ids if not counts.get(c)]
        concept_ids = [c for c in concept_ids if counts.get(c)]
        if missing:
            report.log(f"no examples of {', '.join(missing)}: the model cannot output them")
        if len(concept_ids) < 2:
            raise NoTrainingData(
                f"a classifier needs examples of at least two concepts; the dataset has examples of "
                f"{', '.join(concept_ids) or 'none'}" + (f" (none of {', '.join(missing)})" if missing else "")
            )
        index = {c: k for k, c in enumerate(concept_ids)}
        targets = np.zeros((len(data.input_ids), len(concept_ids)), dtype=np.float32)
        for row, labelled in enumerate(data.concepts):
            own = [index[c] for c in labelled if c in index]
            targets[row, own] = 1.0 / len(own)
        primary = targets.argmax(axis=1)
        train, held = stratified_split(
            primary, len(concept_ids), float(params["validation_fraction"]), int(params["seed"])
        )
        report.log(
            f"{len(data.input_ids)} examples of {len(concept_ids)} concepts "
            f"({', '.join(f'{c}: {counts[c]}' for c in concept_ids)}); {len(held)} held out for validation"
        )
        epochs = int(params["epochs"])
        every = max(1, epochs // 10)

        def on_epoch(epoch: int, loss: float) -> None:
            if epoch % every == 0 or epoch == 1:
                report.log(f"epoch {epoch}/{epochs}: loss {loss:.4f}")
            report.progress(0.5 + 0.45 * epoch / epochs)

        model, ran = fit_softmax(
            data.vectors[train],
            targets[train],
            concept_ids,
            [data.concept_names.get(c, c) for c in concept_ids],
            hidden_units=int(params["hidden_units"]),
            epochs=epochs,
            learning_rate=float(params["learning_rate"]),
            l2=float(params["l2"]),
            seed=int(params["seed"]),
            on_epoch=on_epoch,
            check=report.check,
        )
        model.config.update({"embedder": data.embedder_key, "input_type": data.input_type})
        metrics: dict[str, Any] = {
            "examples": len(data.input_ids),
            "train_examples": len(train),
            "validation_examples": len(held),
            "concept_counts": {c: counts[c] for c in concept_ids},
            "epochs_run": ran,
            "dimension": int(data.vectors.shape[1]),
            "embedder": data.embedder_key,
            "train_accuracy": _accuracy(model, data.vectors[train], primary[train], report),
        }
        if len(held):
            metrics["validation_accuracy"] = _accuracy(model, data.vectors[held], primary[held], report)
        if data.skipped:
            metrics["skipped_inputs"] = dict(data.skipped)
        report.log(
            f"trained in {ran} epochs: train accuracy {metrics['train_accuracy']:.3f}"
            + (f", validation accuracy {metrics['validation_accuracy']:.3f}" if len(held) else "")
        )
        concepts = [ConceptValue(c, data.concept_names.get(c, c)) for c in concept_ids]
        return Fitted(model.to_bytes(), metrics, concepts)

    def _apply(self, trained: SoftmaxClassifier | KMeans, vectors: Vector) -> list[OutputData]:
        assert isinstance(trained, SoftmaxClassifier)
        probabilities = trained.probabilities(vectors)
        made = []
        for row in probabilities:
            order = np.argsort(-row, kind="stable")
            made.append(
                OutputData(
                    concepts=tuple(
                        ConceptValue(trained.concept_ids[k], trained.concept_names[k], float(row[k])) for k in order
                    )
                )
            )
        return made


class Clusterer(TrainableModelType):
    type_id = "clusterer"
    description = (
        "k-means over embeddings (built-in embedder or an embedding model of the app). A predict answers the "
        "nearest cluster as the concept cluster-<n> (distance in the output's metadata); each training input's "
        "cluster is stored (ListClusterAssignments, or predict an input by its id alone)."
    )
    needs_labels = False
    params = (
        *DATA_PARAMS,
        ParamInfo(
            "concepts",
            "list[str]",
            [],
            "keep only inputs labelled with one of these concepts; empty: every input of the dataset",
        ),
        ParamInfo("num_clusters", "int", 8, "how many clusters (k)", 2, 4096),
        ParamInfo("max_iterations", "int", 100, "Lloyd iterations at most (fewer once no input moves)", 1, 10000),
    )
    templates: ClassVar[dict[str, dict[str, Any]]] = {"k-means": {}}

    def fit(self, data: TrainingData, params: dict[str, Any], report: Report) -> Fitted:
        clusters = int(params["num_clusters"])
        count = len(data.input_ids)
        if count < clusters:
            raise NoTrainingData(f"{count} inputs cannot make {clusters} clusters: lower num_clusters or add inputs")
        limit = int(params["max_iterations"])

        every = max(1, limit // 20)

        def on_iteration(iteration: int, inertia: float) -> None:
            if iteration % every == 0 or iteration == 1:
                report.log(f"iteration {iteration}: inertia {inertia:.4f}")
            report.progress(0.5 + 0.45 * iteration / limit)

        model, labels, distances, iterations = fit_kmeans(
            data.vectors,
            clusters,
            max_iterations=limit,
            seed=int(params["seed"]),
            on_iteration=on_iteration,
            check=report.check,
        )
        model.config.update({"embedder": data.embedder_key, "input_type": data.input_type})
        sizes = np.bincount(labels, minlength=clusters)
        metrics = {
            "inputs": count,
            "clusters": clusters,
            "iterations": iterations,
            "inertia": float((distances**2).sum()),
            "cluster_sizes": [int(s) for s in sizes],
            "dimension": int(data.vectors.shape[1]),
            "embedder": data.embedder_key,
        }
        report.log(f"{clusters} clusters after {iterations} iterations, sizes {metrics['cluster_sizes']}")
        assignments = [
            ClusterAssignment(input_id, int(label), float(distance))
            for input_id, label, distance in zip(data.input_ids, labels, distances)
        ]
        concepts = [ConceptValue(cluster_concept(k), f"cluster {k}") for k in range(clusters)]
        return Fitted(model.to_bytes(), metrics, concepts, assignments)

    def _apply(self, trained: SoftmaxClassifier | KMeans, vectors: Vector) -> list[OutputData]:
        assert isinstance(trained, KMeans)
        labels, distances = trained.assign(vectors)
        return [_cluster_output(int(k), float(d), stored=False) for k, d in zip(labels, distances)]

    def _no_content(self, model: ModelRecord) -> str:
        return (
            f"model {model.id!r} reads text, an image or an embedding, or the id of one of its training inputs: "
            "the input has none of them"
        )

    def _stored_outputs(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput]
    ) -> dict[int, PredictOutput]:
        by_id = [i for i, given in enumerate(inputs) if given.id and not given.media and not given.embeddings]
        if not by_id:
            return {}
        page = self._store.list_cluster_assignments(
            model.user_id,
            model.app_id,
            model.id,
            version.id,
            PageQuery(limit=len(by_id)),
            input_ids=[inputs[i].id for i in by_id],
        )
        found = {a.input_id: a for a in page.items}
        outputs: dict[int, PredictOutput] = {}
        for i in by_id:
            assignment = found.get(inputs[i].id)
            if assignment is None:
                outputs[i] = _failed(
                    inputs[i],
                    OutputCode.NOT_FOUND,
                    f"input {inputs[i].id!r} was not one of version {version.id!r}'s training inputs: "
                    "send its content to find its nearest cluster",
                )
            else:
                outputs[i] = PredictOutput(
                    inputs[i].id, data=_cluster_output(assignment.cluster, assignment.distance, stored=True)
                )
        return outputs


def cluster_concept(k: int) -> str:
    return f"cluster-{k}"


def _cluster_output(k: int, distance: float, stored: bool) -> OutputData:
    return OutputData(
        concepts=(ConceptValue(cluster_concept(k), f"cluster {k}", 1.0),),
        metadata={"cluster": k, "distance": distance, "from_training": stored},
    )


def stratified_split(primary: Any, classes: int, fraction: float, seed: int) -> tuple[Any, Any]:
    """Row indices to train on and to hold out: floor(fraction * n) of each class held out."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    held: list[int] = []
    for k in range(classes):
        rows = np.flatnonzero(primary == k)
        rng.shuffle(rows)
        out = int(np.floor(fraction * len(rows)))
        held += rows[:out].tolist()
        train += rows[out:].tolist()
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(held), dtype=np.int64)


def _accuracy(model: SoftmaxClassifier, vectors: Vector, truth: Any, report: Report) -> float:
    if not len(truth):
        return 0.0
    return float((model.probabilities(vectors, report.check).argmax(axis=1) == truth).mean())


__all__ = [
    "Clusterer",
    "EmbeddingClassifier",
    "Fitted",
    "TrainableModelType",
    "cluster_concept",
    "stratified_split",
]
