"""Dataset: bulk ingestion (loaders, CSV, folders, archives), versions, stats and export."""

from __future__ import annotations

import functools
import itertools
import json
import mimetypes
import os
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pellucid.api import v1
from pellucid.client.base import BaseClient
from pellucid.client.input import Inputs
from pellucid.client.lister import Lister
from pellucid.client.loader_inputs import loader_items
from pellucid.client.uploads import UploadItem, UploadResult, read_failures
from pellucid.client.urls import split_url
from pellucid.datasets.loaders import ArchiveLoader, CsvLoader, FolderLoader
from pellucid.errors import UserError

EXPORT_FORMAT_DOC = """\
A pellucid dataset export is a zip file holding:

  manifest.json   {"format": "pellucid.dataset-export", "version": 1, "user_id", "app_id",
                   "dataset_id", "dataset_version_id", "split", "exported_at", "inputs": N}
  inputs.jsonl    one JSON object per input, in dataset order:
                  {"id", "input_type" ("image"|"video"|"audio"|"text"), "file" (path of the media
                   in the zip, or null), "mime", "text", "metadata", "geo" ([lon, lat] or null),
                   "concepts" ([{"id", "name", "value"}], the input's labels),
                   "annotations" ([{"id", "concepts": [...], "regions": [{"id", "bbox":
                   [top, left, bottom, right] or null, "polygon": [[row, col], ...] or null,
                   "concepts": [...]}]}])}
  <split>/<input_type>/<input_id><ext>   the media of each input

Coordinates are fractions of the image size. Dataset.upload_from_archive imports it.
"""
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
    "text/plain": ".txt",
}


class Dataset(Lister, BaseClient):
    """A dataset of an app, addressed by `url` (`<base>/<user_id>/<app_id>/datasets/<id>`) or
    by `dataset_id` with `app_id` (and `user_id`). Constructing one makes no call."""

    def __init__(
        self,
        url: str = "",
        dataset_id: str = "",
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        *,
        app_id: str = "",
        user_id: str = "",
        **kwargs: Any,
    ) -> None:
        if url and dataset_id:
            raise UserError("give either url or dataset_id, not both")
        if url:
            parsed = split_url(url, "datasets")
            user_id, app_id, dataset_id = parsed.user_id, parsed.app_id, parsed.resource_id
            base_url = base_url or parsed.base
        if not dataset_id or not app_id:
            raise UserError(
                "Dataset needs dataset_id and app_id, or a url like <base>/<user_id>/<app_id>/datasets/<id>"
            )
        self.dataset_info: v1.Dataset | None = kwargs.pop("_dataset_info", None)
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)
        self.id, self.app_id = dataset_id, app_id
        self._inputs = Inputs(user_id=self._user_id, app_id=app_id, **self._child_kwargs())

    @classmethod
    def _from_proto(cls, proto: v1.Dataset, **kwargs: Any) -> Dataset:
        return cls(dataset_id=proto.id, app_id=proto.app_id, user_id=proto.user_id, _dataset_info=proto, **kwargs)

    def __repr__(self) -> str:
        return f"Dataset(user_id={self._user_id!r}, app_id={self.app_id!r}, dataset_id={self.id!r})"

    def _ids(self, **extra: Any) -> dict[str, Any]:
        return {"user_id": self._user_id, "app_id": self.app_id, "dataset_id": self.id, **extra}

    def load_info(self) -> v1.Dataset:
        self.dataset_info = self._call(v1.DatasetServiceStub, "GetDataset", v1.GetDatasetRequest(**self._ids()))
        return self.dataset_info

    # ingestion

    def _run(
        self,
        items: Iterator[UploadItem],
        total: int | None,
        *,
        batch_size: int,
        concurrency: int,
        retry_from: str | os.PathLike[str] | None,
        progress: bool,
        log_warnings: bool,
        get_upload_status: bool = False,
        description: str = "Uploading",
        before: dict[str, Any] | None = None,
    ) -> UploadResult:
        only = read_failures(retry_from) if retry_from else None
        uploader = self._inputs._uploader(
            batch_size=batch_size, concurrency=concurrency, progress=progress, description=f"{description} to {self.id}"
        )
        result = uploader.run(items, total, only)
        if log_warnings and result.failed:
            result.write_failures(f"upload_failures_{self.id}_{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        if get_upload_status:
            result.upload_status = self.get_upload_status(pre_upload_stats=before, delete_version=True)
        return result

    def upload_dataset(
        self,
        dataloader: Any,
        batch_size: int = 128,
        get_upload_status: bool = False,
        log_warnings: bool = False,
        *,
        retry_from: str | os.PathLike[str] | None = None,
        concurrency: int = 4,
        progress: bool = True,
    ) -> UploadResult:
        """Upload every item of a loader (see pellucid.datasets for the protocol).

        Items are read as their batch is packed; labels, boxes and polygons are stored with
        each input in the same transaction. The result lists what was stored, what was
        already there and what failed (with the loader index); `log_warnings` writes the
        failures to a JSONL file, and `retry_from=that file` uploads just those again.
        """
        before = self.get_upload_status(pre_upload=True) if get_upload_status else None
        return self._run(
            loader_items(dataloader, self.id),
            len(dataloader),
            batch_size=batch_size,
            before=before,
            concurrency=concurrency,
            retry_from=retry_from,
            progress=progress,
            log_warnings=log_warnings,
            get_upload_status=get_upload_status,
        )

    def upload_from_csv(
        self,
        csv_path: str = "",
        input_type: str = "text",
        csv_type: str = "raw",
        labels: bool = True,
        batch_size: int = 128,
        **kwargs: Any,
    ) -> UploadResult:
        """Upload the rows of a CSV file (header: input[, inputid, concepts, metadata, geopoints])."""
        return self.upload_dataset(CsvLoader(csv_path, input_type, csv_type or "raw", labels), batch_size, **kwargs)

    def upload_from_folder(
        self,
        folder_path: str = "",
        input_type: str = "image",
        labels: bool = False,
        batch_size: int = 128,
        **kwargs: Any,
    ) -> UploadResult:
        """Upload every image (or .txt) file under a folder, recursively; with labels, each
        file is labelled with the name of its folder."""
        return self.upload_dataset(FolderLoader(folder_path, input_type, labels), batch_size, **kwargs)

    def upload_from_archive(
        self,
        archive_path: str | os.PathLike[str],
        batch_size: int = 128,
        *,
        concurrency: int = 4,
        progress: bool = True,
    ) -> UploadResult:
        """Import an archive written by `export` into this dataset, keeping input and annotation ids."""
        archive = ArchiveLoader(archive_path)
        try:
            items = (
                UploadItem(i, f"{archive.path}: {r['id']}", functools.partial(_archive_input, archive, r, self.id))
                for i, r in enumerate(archive.records())
            )
            result = self._run(
                items,
                len(archive),
                batch_size=batch_size,
                concurrency=concurrency,
                retry_from=None,
                progress=progress,
                log_warnings=False,
                description="Importing",
            )
            annotations = [
                v1.Annotation(id=a["id"], input_id=r["id"], data=_annotation_data(a))
                for r in archive.records()
                for a in r["annotations"]
            ]
        finally:
            archive.close()
        if annotations:
            posted = self._inputs.upload_annotations(annotations, show_log=False)
            result.failed += posted.failed
        return result

    # versions and status

    def create_version(self, **kwargs: Any) -> v1.DatasetVersion:
        """Freeze the dataset's current inputs as a version (kwargs: id, description, metadata)."""
        unknown = set(kwargs) - {"id", "description", "metadata"}
        if unknown:
            raise UserError(f"create_version takes id, description and metadata; not {sorted(unknown)}")
        request = v1.CreateDatasetVersionRequest(
            **self._ids(), version_id=kwargs.get("id", ""), description=kwargs.get("description", "")
        )
        if kwargs.get("metadata"):
            request.metadata.update(kwargs["metadata"])
        return self._call(v1.DatasetServiceStub, "CreateDatasetVersion", request)

    def list_versions(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[v1.DatasetVersion]:
        endpoint = functools.partial(self._call, v1.DatasetServiceStub, "ListDatasetVersions")
        yield from self.list_pages_generator(endpoint, v1.ListDatasetVersionsRequest, self._ids(), page_no, per_page)

    def delete_version(self, version_id: str = "") -> None:
        if not version_id:
            raise UserError("delete_version needs a version_id")
        self._call(
            v1.DatasetServiceStub,
            "DeleteDatasetVersion",
            v1.DeleteDatasetVersionRequest(**self._ids(), version_id=version_id),
        )

    def get_stats(self, version_id: str = "") -> v1.DatasetStats:
        """Counts of inputs (by type), annotations, regions and concepts, now or in a version."""
        return self._call(
            v1.DatasetServiceStub, "GetDatasetStats", v1.GetDatasetStatsRequest(**self._ids(), version_id=version_id)
        )

    def get_upload_status(
        self,
        dataloader: Any = None,
        delete_version: bool = False,
        timeout: int = 600,
        pre_upload_stats: dict[str, Any] | None = None,
        pre_upload: bool = False,
    ) -> dict[str, Any]:
        """The dataset's counts, as a dict; prints them, with the change since `pre_upload_stats`.

        `pre_upload=True` returns the current counts without making a version (call it before
        an upload and pass the result back as `pre_upload_stats` after). Otherwise a version
        is made to record the state (deleted again with `delete_version`). With a `dataloader`,
        also reports how many of its items are in the dataset.
        """
        if pre_upload:
            return _stats_dict(self.get_stats())
        if isinstance(pre_upload_stats, tuple):  # the reference passes (stats, ...) pairs
            pre_upload_stats = pre_upload_stats[0] if pre_upload_stats else None
        version = self.with_options(timeout=timeout).create_version(description="upload status")
        stats = _stats_dict(version.stats)
        if delete_version:
            self.delete_version(version.id)
        else:
            stats["version_id"] = version.id
        lines = [
            f"dataset {self.id}: {stats['inputs']} inputs {stats['inputs_by_type']}, "
            f"{stats['annotations']} annotations, {stats['regions']} regions"
        ]
        if pre_upload_stats:
            lines.append(
                f"  since before the upload: +{stats['inputs'] - pre_upload_stats.get('inputs', 0)} inputs, "
                f"+{stats['annotations'] - pre_upload_stats.get('annotations', 0)} annotations"
            )
        if dataloader is not None:
            lines.append(f"  the loader has {len(dataloader)} items")
        print("\n".join(lines))
        return stats

    # reading

    def list_inputs(
        self,
        page_no: int | None = None,
        per_page: int | None = None,
        input_type: str | None = None,
        *,
        version_id: str = "",
    ) -> Iterator[v1.Input]:
        """The dataset's inputs (or a version's), in the order they joined it."""
        return self._inputs.list_inputs(self.id, page_no, per_page, input_type, dataset_version_id=version_id)

    def export(
        self,
        save_path: str = "",
        archive_url: str = "",
        local_archive_path: str = "",
        split: str = "all",
        num_workers: int = 4,
        *,
        version_id: str = "",
        progress: bool = True,
    ) -> Path:
        """Write the dataset (or a version) to a zip archive; the format is in EXPORT_FORMAT_DOC.

        Media are fetched by `num_workers` concurrent downloads. The archive is written to
        `<save_path>.part` and renamed when complete. (`archive_url` and `local_archive_path`,
        which the reference platform uses to export from a prepared archive, have no use here:
        pellucid exports straight from the server.)
        """
        if archive_url or local_archive_path:
            raise UserError("pellucid exports straight from the server: drop archive_url / local_archive_path")
        if not save_path:
            raise UserError("export needs a save_path for the zip archive")
        if not isinstance(num_workers, int) or num_workers < 1:
            raise UserError(f"num_workers must be a positive integer, got {num_workers!r}")
        if not split or "/" in split or split in (".", ".."):
            raise UserError(f"split {split!r} must be a plain folder name, e.g. 'train'")
        target = Path(save_path)
        partial = target.with_name(target.name + ".part")
        count = 0
        stats = self.get_stats(version_id)
        bar = tqdm(total=stats.inputs, desc=f"Exporting {self.id}", unit="input", disable=not progress)
        lines_path = target.with_name(target.name + ".inputs.jsonl.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive, lines_path.open("w") as lines:
            listing = self.list_inputs(version_id=version_id)
            while page := list(itertools.islice(listing, 128)):
                annotations: dict[str, list[v1.Annotation]] = {}
                for a in self._inputs.list_annotations(page):
                    annotations.setdefault(a.input_id, []).append(a)
                media = {i.id: i for i in page if i.input_type != "text"}
                files: dict[str, tuple[str, str]] = {}
                share = -(-len(media) // num_workers) or 1
                parts = [list(media)[i : i + share] for i in range(0, len(media), share)]
                with ThreadPoolExecutor(num_workers) as pool:
                    downloaded = pool.map(lambda ids: list(self._inputs.iter_input_bytes(ids)), parts)
                for input_id, data, mime in (d for part in downloaded for d in part):
                    extension = _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin"
                    name = f"{split}/{media[input_id].input_type}/{input_id}{extension}"
                    archive.writestr(name, data)
                    files[input_id] = (name, mime)
                for item in page:
                    lines.write(
                        json.dumps(_input_record(item, files.get(item.id), annotations.get(item.id, []))) + "\n"
                    )
                    count += 1
                bar.update(len(page))
            lines.close()
            archive.write(lines_path, "inputs.jsonl", zipfile.ZIP_DEFLATED)
            manifest = {
                "format": "pellucid.dataset-export",
                "version": 1,
                "user_id": self._user_id,
                "app_id": self.app_id,
                "dataset_id": self.id,
                "dataset_version_id": version_id,
                "split": split,
                "exported_at": time.time(),
                "inputs": count,
            }
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        lines_path.unlink()
        bar.close()
        os.replace(partial, target)
        return target


def _stats_dict(stats: v1.DatasetStats) -> dict[str, Any]:
    return {
        "inputs": stats.inputs,
        "inputs_by_type": dict(stats.inputs_by_type),
        "annotations": stats.annotations,
        "regions": stats.regions,
        "concept_counts": dict(stats.concept_counts),
    }


def _concepts(concepts: Any) -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.name, "value": round(c.value, 6)} for c in concepts]


def _input_record(item: v1.Input, file: tuple[str, str] | None, annotations: list[v1.Annotation]) -> dict[str, Any]:
    from google.protobuf import json_format

    geo = item.data.geo.geo_point if item.data.HasField("geo") else None
    return {
        "id": item.id,
        "input_type": item.input_type,
        "file": file[0] if file else None,
        "mime": file[1] if file else "text/plain",
        "text": item.data.text.raw,
        "metadata": json_format.MessageToDict(item.data.metadata),
        "geo": [geo.longitude, geo.latitude] if geo else None,
        "concepts": _concepts(item.data.concepts),
        "annotations": [
            {
                "id": a.id,
                "concepts": _concepts(a.data.concepts),
                "regions": [
                    {
                        "id": r.id,
                        "bbox": [
                            r.region_info.bounding_box.top_row,
                            r.region_info.bounding_box.left_col,
                            r.region_info.bounding_box.bottom_row,
                            r.region_info.bounding_box.right_col,
                        ]
                        if r.region_info.HasField("bounding_box")
                        else None,
                        "polygon": [[p.row, p.col] for p in r.region_info.polygon.points]
                        if r.region_info.HasField("polygon")
                        else None,
                        "concepts": _concepts(r.data.concepts),
                    }
                    for r in a.data.regions
                ],
            }
            for a in annotations
        ],
    }


def _concept_messages(items: list[dict[str, Any]]) -> list[v1.Concept]:
    return [v1.Concept(id=c["id"], name=c.get("name", ""), value=c.get("value", 1.0)) for c in items]


def _annotation_data(a: dict[str, Any]) -> v1.Data:
    regions = []
    for r in a["regions"]:
        info = v1.RegionInfo()
        if r["bbox"] is not None:
            top, left, bottom, right = r["bbox"]
            info.bounding_box.CopyFrom(v1.BoundingBox(top_row=top, left_col=left, bottom_row=bottom, right_col=right))
        if r["polygon"] is not None:
            info.polygon.CopyFrom(v1.Polygon(points=[v1.Point(row=row, col=col) for row, col in r["polygon"]]))
        regions.append(v1.Region(id=r["id"], region_info=info, data=v1.Data(concepts=_concept_messages(r["concepts"]))))
    return v1.Data(concepts=_concept_messages(a["concepts"]), regions=regions)


def _archive_input(archive: Any, record: dict[str, Any], dataset_id: str) -> v1.Input:
    data = v1.Data(concepts=_concept_messages(record["concepts"]))
    if record["file"]:
        getattr(data, record["input_type"]).base64 = archive.read(record["file"])
    if record["text"]:
        data.text.raw = record["text"]
    if record["metadata"]:
        data.metadata.update(record["metadata"])
    if record["geo"]:
        data.geo.geo_point.CopyFrom(v1.GeoPoint(longitude=record["geo"][0], latitude=record["geo"][1]))
    return v1.Input(id=record["id"], data=data, dataset_ids=[dataset_id])
