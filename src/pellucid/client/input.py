"""Inputs: build, upload, list, download and delete an app's inputs and their annotations."""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

from pellucid.api import v1
from pellucid.client import _protos
from pellucid.client.base import BaseClient
from pellucid.client.lister import Lister
from pellucid.client.loader_inputs import features_to_input
from pellucid.client.uploads import (
    FailedItem,
    Uploader,
    UploadItem,
    UploadResult,
    read_failures,
)
from pellucid.datasets.loaders import CsvLoader, FolderLoader
from pellucid.errors import ItemFailure, PartialFailure, UserError, error_class

log = logging.getLogger("pellucid.client")
_ANNOTATION_ACTIONS = {
    "merge": v1.ANNOTATION_ACTION_MERGE,
    "overwrite": v1.ANNOTATION_ACTION_OVERWRITE,
    "remove": v1.ANNOTATION_ACTION_REMOVE,
}
INPUT_TYPES = ("image", "video", "audio", "text")


def _one(kind: str, **given: Any) -> tuple[str, Any]:
    present = [(k, v) for k, v in given.items() if v is not None]
    if len(present) != 1:
        names = ", ".join(given)
        raise UserError(f"give exactly one of {names} for the {kind}" + (f" (got {len(present)})" if present else ""))
    return present[0]


class Inputs(Lister, BaseClient):
    """An app's inputs. Upload methods take `input_id=""` to let the server derive the id from
    the content, so uploading the same data again never makes a second copy."""

    def __init__(
        self,
        user_id: str = "",
        app_id: str = "",
        logger_level: str = "INFO",
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not app_id:
            raise UserError("Inputs needs an app_id")
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)
        self.app_id = app_id
        log.setLevel(logger_level)

    def __repr__(self) -> str:
        return f"Inputs(user_id={self._user_id!r}, app_id={self.app_id!r})"

    # building messages (no network)

    @staticmethod
    def get_input_from_url(
        input_id: str = "",
        image_url: str | None = None,
        video_url: str | None = None,
        audio_url: str | None = None,
        text_url: str | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> v1.Input:
        """An input the server fetches from a URL when it is uploaded."""
        kind, url = _one("url", image_url=image_url, video_url=video_url, audio_url=audio_url, text_url=text_url)
        media = {
            "image_url": ("image", v1.Image),
            "video_url": ("video", v1.Video),
            "audio_url": ("audio", v1.Audio),
            "text_url": ("text", v1.Text),
        }[kind]
        return _protos.make_input(input_id, **{media[0]: media[1](url=url)}, dataset_id=dataset_id, **kwargs)

    @staticmethod
    def get_input_from_bytes(
        input_id: str = "",
        image_bytes: bytes | None = None,
        video_bytes: bytes | None = None,
        audio_bytes: bytes | None = None,
        text_bytes: bytes | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> v1.Input:
        """An input from bytes (text bytes are decoded as UTF-8)."""
        kind, data = _one(
            "bytes", image_bytes=image_bytes, video_bytes=video_bytes, audio_bytes=audio_bytes, text_bytes=text_bytes
        )
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UserError(f"{kind} must be bytes, got {type(data).__name__}")
        if kind == "text_bytes":
            return _protos.make_input(input_id, text=v1.Text(raw=_protos.utf8(data)), dataset_id=dataset_id, **kwargs)
        media = {
            "image_bytes": ("image", v1.Image),
            "video_bytes": ("video", v1.Video),
            "audio_bytes": ("audio", v1.Audio),
        }[kind]
        return _protos.make_input(input_id, **{media[0]: media[1](base64=bytes(data))}, dataset_id=dataset_id, **kwargs)

    @staticmethod
    def get_input_from_file(
        input_id: str = "",
        image_file: str | None = None,
        video_file: str | None = None,
        audio_file: str | None = None,
        text_file: str | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> v1.Input:
        """An input from a file, read now (text files as UTF-8)."""
        kind, path = _one(
            "file", image_file=image_file, video_file=video_file, audio_file=audio_file, text_file=text_file
        )
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {kind} {path!r}: {exc.strerror}") from None
        return Inputs.get_input_from_bytes(
            input_id, dataset_id=dataset_id, **{kind.replace("_file", "_bytes"): data}, **kwargs
        )

    @staticmethod
    def get_text_input(
        input_id: str = "", raw_text: str = "", dataset_id: str | None = None, **kwargs: Any
    ) -> v1.Input:
        if not raw_text:
            raise UserError("raw_text is empty")
        return _protos.make_input(input_id, text=v1.Text(raw=raw_text), dataset_id=dataset_id, **kwargs)

    @staticmethod
    def get_multimodal_input(
        input_id: str = "",
        raw_text: str | None = None,
        text_bytes: bytes | None = None,
        image_url: str | None = None,
        image_bytes: bytes | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> v1.Input:
        """An image and a text in one input."""
        _, text = _one("text", raw_text=raw_text, text_bytes=text_bytes)
        kind, image = _one("image", image_url=image_url, image_bytes=image_bytes)
        text = _protos.utf8(text) if isinstance(text, (bytes, bytearray)) else text
        picture = v1.Image(url=image) if kind == "image_url" else v1.Image(base64=bytes(image))
        return _protos.make_input(input_id, image=picture, text=v1.Text(raw=text), dataset_id=dataset_id, **kwargs)

    @staticmethod
    def get_image_inputs_from_folder(
        folder_path: str, dataset_id: str | None = None, labels: bool = False
    ) -> list[v1.Input]:
        """Inputs for every image under a folder (recursive; label = folder name). Reads all files:
        for large folders use Dataset.upload_from_folder, which streams."""
        loader = FolderLoader(folder_path, "image", labels)
        return [
            Inputs.get_input_from_file("", image_file=str(p), dataset_id=dataset_id, labels=loader.label_of(p))
            for p in loader.files
        ]

    @staticmethod
    def get_text_inputs_from_folder(
        folder_path: str, dataset_id: str | None = None, labels: bool = False
    ) -> list[v1.Input]:
        loader = FolderLoader(folder_path, "text", labels)
        return [
            Inputs.get_input_from_file("", text_file=str(p), dataset_id=dataset_id, labels=loader.label_of(p))
            for p in loader.files
        ]

    @staticmethod
    def get_inputs_from_csv(
        csv_path: str = "",
        input_type: str = "text",
        csv_type: str = "raw",
        dataset_id: str | None = None,
        labels: bool = True,
    ) -> list[v1.Input]:
        """Inputs for every row of a CSV (see CsvLoader for the columns). Raises on the first bad
        row; Dataset.upload_from_csv streams and reports bad rows instead."""
        loader = CsvLoader(csv_path, input_type, csv_type, labels)
        return [features_to_input(row.features(), loader.task, dataset_id or "") for row in loader]

    @staticmethod
    def get_bbox_proto(
        input_id: str, label: str, bbox: Sequence[float], label_id: str | None = None, annot_id: str | None = None
    ) -> v1.Annotation:
        """An annotation with one box, [xmin, ymin, xmax, ymax] normalised to [0, 1]."""
        return v1.Annotation(
            id=annot_id or "", input_id=input_id, data=v1.Data(regions=[_protos.bbox_region(label, bbox, label_id)])
        )

    @staticmethod
    def get_mask_proto(
        input_id: str, label: str, polygons: Sequence[Any], label_id: str | None = None, annot_id: str | None = None
    ) -> v1.Annotation:
        """An annotation with a polygon ([[x, y], ...]) or several ([[[x, y], ...], ...])."""
        if not polygons:
            raise UserError("polygons is empty")
        shapes = polygons if isinstance(polygons[0][0], (list, tuple)) else [polygons]
        return v1.Annotation(
            id=annot_id or "",
            input_id=input_id,
            data=v1.Data(regions=[_protos.polygon_region(label, s, label_id) for s in shapes]),
        )

    # uploading

    def _uploader(self, **kwargs: Any) -> Uploader:
        return Uploader(
            self._call, self._stream_blob, self._user_id, self.app_id, batch_timeout=max(self.timeout, 120.0), **kwargs
        )

    def _stream_blob(self, chunks: Iterator[v1.BlobChunk]) -> v1.BlobRef:
        return self._connection.send_stream(v1.InputServiceStub, "UploadBlob", chunks, timeout=max(self.timeout, 300.0))

    def upload_inputs(
        self,
        inputs: Iterable[v1.Input],
        show_log: bool = True,
        *,
        batch_size: int = 128,
        concurrency: int = 4,
        job_id: str = "",
    ) -> UploadResult:
        """Upload any number of inputs (batched, several batches at once); every item is
        reported in the result, which also holds the job id."""
        if isinstance(inputs, v1.Input):
            inputs = [inputs]
        items = (
            UploadItem(i, f"inputs[{i}]", functools.partial(_given, m), m.ByteSize() if isinstance(m, v1.Input) else 0)
            for i, m in enumerate(inputs)
        )  # anything else fails as its item
        total = len(inputs) if isinstance(inputs, Sized) else None
        result = self._uploader(
            batch_size=batch_size,
            concurrency=concurrency,
            job_id=job_id,
            progress=show_log and (total or 0) > batch_size,
        ).run(items, total)
        if show_log and result.failed:
            for failure in result.failed[:20]:
                log.warning(
                    "input %s (%s) failed: %s %s", failure.input_id or "?", failure.source, failure.code, failure.reason
                )
        return result

    def _upload_one(self, message: v1.Input) -> str:
        result = self.upload_inputs([message], show_log=False)
        if result.failed:
            failure = result.failed[0]
            raise error_class(_code_value(failure.code))(failure.reason, method="PostInputs")
        return result.job_id

    def upload_from_url(
        self,
        input_id: str = "",
        image_url: str | None = None,
        video_url: str | None = None,
        audio_url: str | None = None,
        text_url: str | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Upload one input from a URL; returns the job id (raises if the input was refused)."""
        return self._upload_one(
            self.get_input_from_url(input_id, image_url, video_url, audio_url, text_url, dataset_id, **kwargs)
        )

    def upload_from_file(
        self,
        input_id: str = "",
        image_file: str | None = None,
        video_file: str | None = None,
        audio_file: str | None = None,
        text_file: str | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        return self._upload_one(
            self.get_input_from_file(input_id, image_file, video_file, audio_file, text_file, dataset_id, **kwargs)
        )

    def upload_from_bytes(
        self,
        input_id: str = "",
        image_bytes: bytes | None = None,
        video_bytes: bytes | None = None,
        audio_bytes: bytes | None = None,
        text_bytes: bytes | None = None,
        dataset_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        return self._upload_one(
            self.get_input_from_bytes(input_id, image_bytes, video_bytes, audio_bytes, text_bytes, dataset_id, **kwargs)
        )

    def upload_text(self, input_id: str = "", raw_text: str = "", dataset_id: str | None = None, **kwargs: Any) -> str:
        return self._upload_one(self.get_text_input(input_id, raw_text, dataset_id, **kwargs))

    def get_inputs_add_job(self, job_id: str) -> v1.InputsAddJob:
        """Progress of an upload job: received, stored, duplicates, failed."""
        return self._call(
            v1.InputServiceStub,
            "GetInputsAddJob",
            v1.GetInputsAddJobRequest(user_id=self._user_id, app_id=self.app_id, job_id=job_id),
        )

    # annotations

    def _annotation_batches(self, method: str, annotations: Sequence[v1.Annotation], **extra: Any) -> UploadResult:
        if isinstance(annotations, v1.Annotation):
            annotations = [annotations]
        result = UploadResult()
        request_type = v1.PostAnnotationsRequest if method == "PostAnnotations" else v1.PatchAnnotationsRequest
        for start in range(0, len(annotations), 128):
            chunk = list(annotations[start : start + 128])
            response = self._call(
                v1.InputServiceStub,
                method,
                request_type(user_id=self._user_id, app_id=self.app_id, annotations=chunk, **extra),
            )
            for offset, (asked, r) in enumerate(zip(chunk, response.results)):
                if r.status.code == v1.Status.OK:
                    (result.duplicate_ids if r.duplicate else result.stored_ids).append(r.annotation.id)
                else:
                    result.failed.append(
                        FailedItem(
                            start + offset,
                            asked.id,
                            f"input {asked.input_id}",
                            error_class(r.status.code).code.name,
                            r.status.message,
                        )
                    )
        return result

    def upload_annotations(self, batch_annot: Sequence[v1.Annotation], show_log: bool = True) -> UploadResult:
        """Add annotations (boxes, polygons, concepts) to existing inputs; each fails alone."""
        result = self._annotation_batches("PostAnnotations", batch_annot)
        if show_log:
            for failure in result.failed[:20]:
                log.warning("annotation of %s failed: %s %s", failure.source, failure.code, failure.reason)
        return result

    def patch_annotations(self, batch_annot: Sequence[v1.Annotation], action: str = "merge") -> UploadResult:
        """Change annotations by id: merge in concepts and regions, overwrite them, or remove them."""
        if action not in _ANNOTATION_ACTIONS:
            raise UserError(f"action {action!r}: use one of {', '.join(_ANNOTATION_ACTIONS)}")
        return self._annotation_batches("PatchAnnotations", batch_annot, action=_ANNOTATION_ACTIONS[action])

    def patch_concepts(
        self,
        concept_ids: Sequence[str],
        labels: Sequence[str] | None = None,
        values: Sequence[float] | None = None,
        action: str = "overwrite",
    ) -> list[v1.Concept]:
        """Rename the app's concepts (`labels` are the new names). Values belong to concepts on
        inputs, not to the app's list: change those with patch_annotations."""
        if action != "overwrite":
            raise UserError("patch_concepts supports action='overwrite' only")
        if values:
            raise UserError("values apply to concepts on inputs: use patch_annotations to change them")
        labels = list(labels or [])
        if len(labels) != len(concept_ids):
            raise UserError(f"labels has {len(labels)} names for {len(concept_ids)} concept ids")
        return _protos.concept_batches(
            self._call, "PatchConcepts", v1.PatchConceptsRequest, self._user_id, self.app_id, concept_ids, labels
        )

    def list_annotations(
        self, batch_input: Sequence[v1.Input] | None = None, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[v1.Annotation]:
        """Annotations of the given inputs (all of the app's if None)."""
        endpoint = functools.partial(self._call, v1.InputServiceStub, "ListAnnotations")
        if batch_input is None:
            yield from self.list_pages_generator(
                endpoint,
                v1.ListAnnotationsRequest,
                {"user_id": self._user_id, "app_id": self.app_id},
                page_no,
                per_page,
            )
            return
        ids = [i.id if isinstance(i, v1.Input) else str(i) for i in batch_input]
        for start in range(0, len(ids), 1000):
            request = {"user_id": self._user_id, "app_id": self.app_id, "input_ids": ids[start : start + 1000]}
            yield from self.list_pages_generator(endpoint, v1.ListAnnotationsRequest, request, page_no, per_page)

    # reading and deleting

    def list_inputs(
        self,
        dataset_id: str | None = None,
        page_no: int | None = None,
        per_page: int | None = None,
        input_type: str | None = None,
        *,
        dataset_version_id: str = "",
    ) -> Iterator[v1.Input]:
        """The app's inputs (or a dataset's, or a dataset version's), filtered on the server."""
        if input_type is not None and input_type not in INPUT_TYPES:
            raise UserError(f"input_type {input_type!r}: use one of {', '.join(INPUT_TYPES)}")
        endpoint = functools.partial(self._call, v1.InputServiceStub, "ListInputs")
        request = {
            "user_id": self._user_id,
            "app_id": self.app_id,
            "dataset_id": dataset_id or "",
            "input_type": input_type or "",
            "dataset_version_id": dataset_version_id,
        }
        yield from self.list_pages_generator(endpoint, v1.ListInputsRequest, request, page_no, per_page)

    def get_input(self, input_id: str) -> v1.Input:
        return self._call(
            v1.InputServiceStub,
            "GetInput",
            v1.GetInputRequest(user_id=self._user_id, app_id=self.app_id, input_id=input_id),
        )

    def delete_inputs(self, inputs: Iterable[v1.Input | str]) -> None:
        """Delete inputs (messages or ids) with their annotations; PartialFailure names any that failed."""
        ids = [i.id if isinstance(i, v1.Input) else str(i) for i in inputs]
        deleted, failed = [], []
        for start in range(0, len(ids), 128):
            response = self._call(
                v1.InputServiceStub,
                "DeleteInputs",
                v1.DeleteInputsRequest(user_id=self._user_id, app_id=self.app_id, ids=ids[start : start + 128]),
            )
            for offset, r in enumerate(response.results):
                if r.status.code == v1.Status.OK:
                    deleted.append(r.input_id)
                else:
                    failed.append(
                        ItemFailure(
                            start + offset,
                            ids[start + offset],
                            error_class(r.status.code)(r.status.message, method="DeleteInputs"),
                        )
                    )
        if failed:
            raise PartialFailure("deletions", deleted, failed)

    def iter_input_bytes(self, inputs: Iterable[v1.Input | str]) -> Iterator[tuple[str, bytes, str]]:
        """(input id, bytes, mime) for each input, in order, fetched 128 at a time."""
        ids = iter([i.id if isinstance(i, v1.Input) else str(i) for i in inputs])
        while chunk := list(itertools.islice(ids, 128)):
            request = v1.DownloadInputsRequest(user_id=self._user_id, app_id=self.app_id, ids=chunk)
            parts: list[bytes] = []
            for piece in self._connection.read_stream(
                v1.InputServiceStub, "DownloadInputs", request, timeout=max(self.timeout, 300.0)
            ):
                parts.append(piece.data)
                if piece.last:
                    yield piece.input_id, b"".join(parts), piece.mime
                    parts = []

    def download_inputs(self, inputs: Iterable[v1.Input | str]) -> list[bytes]:
        """The bytes of each input (media, or UTF-8 text), in order."""
        return [data for _, data, _ in self.iter_input_bytes(inputs)]


def _given(message: v1.Input) -> v1.Input:
    """An UploadItem's build for an input already built."""
    return message


def _code_value(name: str) -> int:
    import grpc

    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN).value[0]


def retry_indices(retry_from: str | os.PathLike[str] | None) -> set[int] | None:
    return read_failures(retry_from) if retry_from else None
