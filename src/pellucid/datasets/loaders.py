"""Built-in loaders: a folder tree, a CSV file, and an archive made by Dataset.export."""

from __future__ import annotations

import ast
import csv
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pellucid.datasets.base import DataLoader
from pellucid.datasets.features import (
    MultiModalFeatures,
    TextFeatures,
    VisualClassificationFeatures,
)
from pellucid.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
TEXT_EXTENSIONS = (".txt",)
CSV_COLUMNS = ("inputid", "input", "concepts", "metadata", "geopoints")


class FolderLoader(DataLoader):
    """Every image (or text) file under a folder, recursively, in sorted order.

    Extensions match case-insensitively. With `labels`, a file's label is the name of the
    folder it sits in (files directly in the root folder get none).
    """

    def __init__(self, folder_path: str | os.PathLike[str], input_type: str = "image", labels: bool = False) -> None:
        if input_type not in ("image", "text"):
            raise UserError(f"input_type {input_type!r}: folders hold 'image' or 'text' files")
        self.root = Path(folder_path)
        if not self.root.is_dir():
            raise UserError(f"{self.root} is not a folder")
        self.input_type, self.labels = input_type, labels
        extensions = IMAGE_EXTENSIONS if input_type == "image" else TEXT_EXTENSIONS
        # broken links are kept, so that they are reported as failures rather than silently skipped
        self.files = sorted(
            p
            for p in self.root.rglob("*")
            if (p.is_file() or (p.is_symlink() and not p.is_dir())) and p.suffix.lower() in extensions
        )

    @property
    def task(self) -> str:
        return "visual_classification" if self.input_type == "image" else "text_classification"

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, path: Path) -> list[str]:
        return [path.parent.name] if self.labels and path.parent != self.root else []

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        meta = {"filename": str(path.relative_to(self.root))}
        if self.input_type == "image":
            return VisualClassificationFeatures(image_path=str(path), labels=self.label_of(path), metadata=meta)
        return TextFeatures(text=path.read_text(encoding="utf-8"), labels=self.label_of(path), metadata=meta)

    def source(self, index: int) -> str:
        return str(self.files[index])


class CsvLoader(DataLoader):
    """Rows of a CSV file with a header naming `input` and optionally `inputid`, `concepts`
    (comma-separated labels), `metadata` (a JSON object) and `geopoints` ("lon,lat").

    `csv_type` says what `input` holds: "raw" text, a "url", or a "file_path" (relative
    paths are taken from the CSV's folder). Rows are parsed one at a time; a bad row fails
    alone when it is built.
    """

    def __init__(
        self, csv_path: str | os.PathLike[str], input_type: str = "text", csv_type: str = "raw", labels: bool = True
    ) -> None:
        if input_type not in ("text", "image", "video", "audio"):
            raise UserError(f"input_type {input_type!r}: use text, image, video or audio")
        if csv_type not in ("raw", "url", "file_path"):
            raise UserError(f"csv_type {csv_type!r}: use raw, url or file_path")
        if csv_type == "raw" and input_type != "text":
            raise UserError("csv_type 'raw' holds text; use 'url' or 'file_path' for media")
        self.path = Path(csv_path)
        self.input_type, self.csv_type, self.labels = input_type, csv_type, labels
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise UserError(
                        f"{self.path} is empty: the first row must name the columns ({', '.join(CSV_COLUMNS)})"
                    )
                self.columns = [h.strip().lower() for h in header]
                self._count = sum(1 for row in reader if any(cell.strip() for cell in row))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"cannot read {self.path}: {exc}") from None
        if "input" not in self.columns:
            raise UserError(
                f"{self.path}: the header {header} has no 'input' column; columns are {', '.join(CSV_COLUMNS)}"
            )
        unknown = set(self.columns) - set(CSV_COLUMNS)
        if unknown:
            raise UserError(f"{self.path}: unknown columns {sorted(unknown)}; use {', '.join(CSV_COLUMNS)}")

    @property
    def task(self) -> str:
        return "text_classification" if self.input_type == "text" else "multimodal_dataset"

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[CsvRow]:
        """Rows in order, read one at a time (blank lines skipped)."""
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)
            index = 0
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield CsvRow(self, index, row, reader.line_num)
                    index += 1

    def __getitem__(self, index: int) -> Any:
        """Row `index` (reads from the start: uploads iterate instead)."""
        for row in self:
            if row.index == index:
                return row.features()
        raise IndexError(index)

    def source(self, index: int) -> str:
        return f"{self.path}: data row {index + 1}"


class CsvRow:
    """One CSV row; parsed into features on demand so a bad row fails alone."""

    def __init__(self, loader: CsvLoader, index: int, row: list[str], line: int) -> None:
        self.loader, self.index, self.row, self.line = loader, index, row, line

    def features(self) -> TextFeatures | MultiModalFeatures:
        loader = self.loader
        if len(self.row) != len(loader.columns):
            raise UserError(f"line {self.line} has {len(self.row)} cells for {len(loader.columns)} columns")
        cells = dict(zip(loader.columns, self.row))
        value = cells["input"]
        if not value.strip():
            raise UserError(f"line {self.line}: the input cell is empty")
        labels = [c.strip() for c in cells.get("concepts", "").split(",") if c.strip()] if loader.labels else []
        metadata = _parse_metadata(cells.get("metadata", ""), self.line)
        geo = _parse_geo(cells.get("geopoints", ""), self.line)
        input_id = cells.get("inputid", "").strip() or None
        if loader.input_type == "text":
            if loader.csv_type == "raw":
                text = value
            elif loader.csv_type == "file_path":
                text = (loader.path.parent / value).read_text(encoding="utf-8")
            else:
                raise UserError("text from URLs: use csv_type 'raw' or 'file_path'")
            return TextFeatures(id=input_id, metadata=metadata, geo_info=geo, text=text, labels=labels)
        if loader.input_type != "image":
            raise UserError(
                f"CSV upload of {loader.input_type} is not supported by the dataset loader; use Inputs.upload_inputs"
            )
        if loader.csv_type == "url":
            return MultiModalFeatures(id=input_id, metadata=metadata, geo_info=geo, image_url=value, labels=labels)
        image_path = str(loader.path.parent / value)
        return MultiModalFeatures(id=input_id, metadata=metadata, geo_info=geo, image_path=image_path, labels=labels)


def _parse_metadata(cell: str, line: int) -> dict[str, Any] | None:
    if not cell.strip():
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(cell)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return value
    raise UserError(f"line {line}: metadata {cell!r} is not a JSON object")


def _parse_geo(cell: str, line: int) -> tuple[float, float] | None:
    if not cell.strip():
        return None
    try:
        lon, lat = (float(v) for v in cell.split(","))
    except ValueError:
        raise UserError(f"line {line}: geopoints {cell!r} must be 'longitude,latitude'") from None
    return lon, lat


EXPORT_FORMAT = "pellucid.dataset-export"
EXPORT_VERSION = 1


class ArchiveLoader:
    """Reads an archive written by Dataset.export; Dataset.upload_from_archive imports it."""

    def __init__(self, archive_path: str | os.PathLike[str]) -> None:
        self.path = Path(archive_path)
        self._lock = threading.Lock()  # uploads read members from several threads
        try:
            self._zip = zipfile.ZipFile(self.path)
            self.manifest = json.loads(self._zip.read("manifest.json"))
        except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise UserError(f"{self.path} is not a pellucid dataset export: {exc}") from None
        if self.manifest.get("format") != EXPORT_FORMAT or self.manifest.get("version") != EXPORT_VERSION:
            raise UserError(
                f"{self.path}: unknown export format {self.manifest.get('format')!r} "
                f"version {self.manifest.get('version')!r}"
            )

    def __len__(self) -> int:
        return int(self.manifest["inputs"])

    def records(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            f = self._zip.open("inputs.jsonl")
        try:
            for line in f:
                if line.strip():
                    yield json.loads(line)
        finally:
            with self._lock:
                f.close()

    def read(self, member: str) -> bytes:
        with self._lock:
            return self._zip.read(member)

    def close(self) -> None:
        self._zip.close()
