"""Datasets: loaders for every task, CSV, folders, failure files, versions, export and import."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest

import pellucid.errors as errors
from pellucid.client.app import App
from pellucid.client.dataset import Dataset
from pellucid.client.user import User
from pellucid.datasets import (
    DataLoader,
    MultiModalFeatures,
    TextFeatures,
    VisualCaptioningFeatures,
    VisualClassificationFeatures,
    VisualDetectionFeatures,
    VisualSegmentationFeatures,
)
from tests.media_samples import png


@pytest.fixture
def app(alice: User, unique: str) -> App:
    return alice.create_app(f"ds-{unique}")


@pytest.fixture
def dataset(app: App) -> Dataset:
    return app.create_dataset("train", description="training set")


class ListLoader(DataLoader):
    def __init__(self, task: str, items: list) -> None:  # type: ignore[type-arg]
        self._task, self.items = task, items

    @property
    def task(self) -> str:
        return self._task

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
        item = self.items[index]
        if isinstance(item, Exception):
            raise item
        return item


def test_dataset_crud(app: App, dataset: Dataset) -> None:
    assert dataset.dataset_info.description == "training set"
    assert [d.id for d in app.list_datasets()] == ["train"]
    assert app.dataset("train").id == "train"
    with pytest.raises(errors.AlreadyExists):
        app.create_dataset("train")
    with pytest.raises(errors.InvalidArgument):
        app.create_dataset("bad id")
    app.delete_dataset("train")
    with pytest.raises(errors.NotFound):
        app.dataset("train")


def test_every_task_type(app: App, dataset: Dataset) -> None:
    loaders = [
        ListLoader("visual_classification", [VisualClassificationFeatures(image_bytes=png("c"), labels=["cat"])]),
        ListLoader(
            "visual_detection",
            [
                VisualDetectionFeatures(
                    image_bytes=png("d"), labels=["cat", "dog"], bboxes=[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]]
                )
            ],
        ),
        ListLoader(
            "visual_segmentation",
            [
                VisualSegmentationFeatures(
                    image_bytes=png("s"), labels=["dog"], polygons=[[[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]]
                )
            ],
        ),
        ListLoader("visual_captioning", [VisualCaptioningFeatures(image_bytes=png("cap"), caption="a cat on a mat")]),
        ListLoader("text_classification", [TextFeatures(text="great movie", labels=["positive"])]),
        ListLoader("multimodal_dataset", [MultiModalFeatures(text="a dog", image_bytes=png("mm"), labels=["dog"])]),
    ]
    for loader in loaders:
        result = dataset.upload_dataset(loader, progress=False)
        assert result.ok and len(result.stored_ids) == 1, (loader.task, result.failed)
    stats = dataset.get_stats()
    assert stats.inputs == 6 and dict(stats.inputs_by_type) == {"image": 5, "text": 1}
    assert stats.regions == 3
    assert dict(stats.concept_counts) == {"cat": 2, "dog": 3, "positive": 1}
    captioned = [i for i in dataset.list_inputs() if i.data.text.raw == "a cat on a mat"]
    assert len(captioned) == 1 and captioned[0].input_type == "image"


def test_loader_failures_are_reported_with_their_index(dataset: Dataset, tmp_path: Path) -> None:
    items = [VisualClassificationFeatures(image_bytes=png(i), labels=["ok"]) for i in range(6)]
    items[1] = OSError("disk on fire")
    items[3] = TextFeatures(text="wrong type for this task")
    items[4] = VisualClassificationFeatures(image_path=str(tmp_path / "missing.png"))
    result = dataset.upload_dataset(ListLoader("visual_classification", items), progress=False)
    assert len(result.stored_ids) == 3
    failed = {f.index: f.reason for f in result.failed}
    assert set(failed) == {1, 3, 4}
    assert "disk on fire" in failed[1] and "expected VisualClassificationFeatures" in failed[3]
    assert "missing.png" in failed[4]


def test_failures_file_retries_just_those(dataset: Dataset, tmp_path: Path) -> None:
    class Flaky(ListLoader):
        broken: ClassVar[set[int]] = {2, 5}

        def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
            if index in self.broken:
                raise OSError(f"item {index} unreadable right now")
            return super().__getitem__(index)

    loader = Flaky("text_classification", [TextFeatures(text=f"text {i}") for i in range(8)])
    first = dataset.upload_dataset(loader, progress=False)
    path = first.write_failures(tmp_path / "failures.jsonl")
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [2, 5]
    loader.broken = set()
    second = dataset.upload_dataset(loader, retry_from=path, progress=False)
    assert len(second.stored_ids) == 2 and not second.duplicate_ids and second.ok
    assert dataset.get_stats().inputs == 8


def test_upload_from_folder(dataset: Dataset, tmp_path: Path) -> None:
    root = tmp_path / "pictures"
    for label, names in {"cat": ["a.PNG", "b.png"], "dog": ["c.Png"], "nested/bird": ["d.png"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            (root / label / name).write_bytes(png(f"{label}{name}"))
    (root / "top.png").write_bytes(png("top"))
    (root / "notes.md").write_text("not an image")
    (root / "cat" / "broken.png").symlink_to(tmp_path / "gone.png")
    result = dataset.upload_from_folder(str(root), input_type="image", labels=True, progress=False)
    assert len(result.stored_ids) == 5
    assert len(result.failed) == 1 and "broken.png" in result.failed[0].source
    labels = {i.data.metadata["filename"]: [c.id for c in i.data.concepts] for i in dataset.list_inputs()}
    assert labels == {
        "cat/a.PNG": ["cat"],
        "cat/b.png": ["cat"],
        "dog/c.Png": ["dog"],
        "nested/bird/d.png": ["bird"],
        "top.png": [],
    }
    with pytest.raises(errors.UserError, match="not a folder"):
        dataset.upload_from_folder(str(tmp_path / "nope"))


def test_upload_from_csv(dataset: Dataset, tmp_path: Path) -> None:
    csv_path = tmp_path / "texts.csv"
    csv_path.write_text(
        "inputid,input,concepts,metadata,geopoints\n"
        'r1,first text,"pos,short","{""lang"": ""en""}","2.35,48.85"\n'
        "r2,second text,,,\n"
        "r3,third text,neg,\"{'lang': 'fr'}\",\n"
        "r4,fourth text,neg,,not-a-point\n"
        "\n"
        'r5,fifth text,"bad label",,\n'
    )
    result = dataset.upload_from_csv(str(csv_path), input_type="text", csv_type="raw", labels=True, progress=False)
    assert sorted(result.stored_ids) == ["r1", "r2", "r3"]
    failed = {f.input_id or f.source: f.reason for f in result.failed}
    assert any("geopoints" in r and "line 5" in r for r in failed.values())
    assert any("bad label" in r for r in failed.values())
    stored = {i.id: i for i in dataset.list_inputs()}
    assert [c.id for c in stored["r1"].data.concepts] == ["pos", "short"]
    assert [c.id for c in stored["r3"].data.concepts] == ["neg"]  # an empty cell in r2 did not switch labels off
    assert stored["r1"].data.metadata["lang"] == "en" and stored["r3"].data.metadata["lang"] == "fr"
    assert stored["r1"].data.geo.geo_point.longitude == pytest.approx(2.35)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nx,y\n")
    with pytest.raises(errors.UserError, match="no 'input' column"):
        dataset.upload_from_csv(str(bad))


def test_csv_of_image_paths(dataset: Dataset, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").write_bytes(png(f"csvimg{i}"))
    csv_path = tmp_path / "images.csv"
    csv_path.write_text("input,concepts\nimg/0.png,cat\nimg/1.png,dog\nimg/2.png,cat\nimg/missing.png,cat\n")
    result = dataset.upload_from_csv(str(csv_path), input_type="image", csv_type="file_path", progress=False)
    assert len(result.stored_ids) == 3 and len(result.failed) == 1
    assert dict(dataset.get_stats().concept_counts) == {"cat": 2, "dog": 1}


def test_memory_stays_bounded(dataset: Dataset) -> None:
    """The loader is read only as far ahead as the batches in flight allow."""
    batch_size, concurrency, ahead = 16, 2, []

    class Watching(ListLoader):
        def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
            if index % 8 == 0:
                ahead.append(index - dataset.get_stats().inputs)
            return super().__getitem__(index)

    loader = Watching("text_classification", [TextFeatures(text=f"bounded {i}") for i in range(400)])
    result = dataset.upload_dataset(loader, batch_size=batch_size, concurrency=concurrency, progress=False)
    assert len(result.stored_ids) == 400
    assert max(ahead) <= (concurrency + 1) * batch_size


def test_versions(dataset: Dataset) -> None:
    dataset.upload_dataset(
        ListLoader("text_classification", [TextFeatures(text=f"v {i}", labels=["a"]) for i in range(5)]), progress=False
    )
    version = dataset.create_version(description="first five", metadata={"split": "train"})
    assert version.stats.inputs == 5 and version.description == "first five"
    dataset.upload_dataset(
        ListLoader("text_classification", [TextFeatures(text=f"w {i}") for i in range(3)]), progress=False
    )
    assert dataset.get_stats().inputs == 8 and dataset.get_stats(version.id).inputs == 5
    assert len(list(dataset.list_inputs(version_id=version.id))) == 5
    assert [v.id for v in dataset.list_versions()] == [version.id]
    status = dataset.get_upload_status(delete_version=True)
    assert status["inputs"] == 8 and [v.id for v in dataset.list_versions()] == [version.id]
    dataset.delete_version(version.id)
    assert list(dataset.list_versions()) == []
    with pytest.raises(errors.NotFound):
        dataset.delete_version(version.id)


def test_export_and_import_round_trip(alice: User, app: App, dataset: Dataset, tmp_path: Path, unique: str) -> None:
    loaders = [
        ListLoader(
            "visual_detection",
            [
                VisualDetectionFeatures(
                    image_bytes=png(f"x{i}"),
                    labels=["cat"],
                    bboxes=[[0.1, 0.2, 0.3, 0.4]],
                    metadata={"i": i},
                    geo_info=[1.5, 2.5],
                )
                for i in range(3)
            ],
        ),
        ListLoader(
            "visual_segmentation",
            [
                VisualSegmentationFeatures(
                    image_bytes=png("seg"), labels=["dog"], polygons=[[[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]]
                )
            ],
        ),
        ListLoader("text_classification", [TextFeatures(text="hello", labels=["greeting"])]),
    ]
    for loader in loaders:
        assert dataset.upload_dataset(loader, progress=False).ok
    first = dataset.export(str(tmp_path / "first.zip"), split="train", progress=False)
    with zipfile.ZipFile(first) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = archive.namelist()
        records = [json.loads(line) for line in archive.read("inputs.jsonl").splitlines()]
    assert manifest["format"] == "pellucid.dataset-export" and manifest["inputs"] == 5
    assert sum(n.startswith("train/image/") and n.endswith(".png") for n in names) == 4
    assert {r["input_type"] for r in records} == {"image", "text"}

    other = alice.create_app(f"copy-{unique}").create_dataset("imported")
    imported = other.upload_from_archive(first, progress=False)
    assert imported.ok and len(imported.stored_ids) == 5
    second = other.export(str(tmp_path / "second.zip"), split="train", progress=False)
    with zipfile.ZipFile(second) as archive:
        again = [json.loads(line) for line in archive.read("inputs.jsonl").splitlines()]
        for record in again:
            if record["file"]:
                with zipfile.ZipFile(first) as original:
                    assert archive.read(record["file"]) == original.read(record["file"])

    def canonical(rows: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        return sorted(
            ({**r, "annotations": sorted(r["annotations"], key=lambda a: a["id"])} for r in rows), key=lambda r: r["id"]
        )

    assert canonical(again) == canonical(records)
    with pytest.raises(errors.UserError, match="not a pellucid dataset export"):
        other.upload_from_archive(tmp_path / "second.zip.part")


def test_dataset_urls_and_deleting_with_inputs(app: App, dataset: Dataset, server) -> None:  # type: ignore[no-untyped-def]
    dataset.upload_dataset(
        ListLoader("text_classification", [TextFeatures(text=f"gone {i}") for i in range(3)]), progress=False
    )
    pat = app._connection.settings.pat
    by_url = Dataset(url=f"{server.url}/{app.user_id}/{app.id}/datasets/train", pat=pat)
    assert by_url.load_info().input_count == 3
    app.delete_dataset("train", delete_inputs=True)
    assert list(app.inputs().list_inputs()) == []


def test_a_broken_source_ends_the_upload_with_a_report(dataset: Dataset) -> None:
    from pellucid.client.uploads import UploadItem

    def items():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield UploadItem(
                i,
                f"row {i}",
                lambda i=i: __import__("pellucid.client.input", fromlist=["Inputs"]).Inputs.get_text_input(
                    "", f"source {i}", dataset_id="train"
                ),
            )
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    result = dataset._inputs._uploader(progress=False).run(items())
    assert len(result.stored_ids) == 5
    assert result.failed[0].code == "ABORTED" and "invalid start byte" in result.failed[0].reason


def test_upload_options_like_the_reference(dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    loader = ListLoader("text_classification", [TextFeatures(text=f"ref {i}") for i in range(3)])
    result = dataset.upload_dataset(loader, batch_size=256, get_upload_status=True, progress=False)  # capped at 128
    assert len(result.stored_ids) == 3
    assert result.upload_status["inputs"] == 3 and "+3 inputs" in capsys.readouterr().out
    assert [v.id for v in dataset.list_versions()] == []  # the status version was deleted again
    with pytest.raises(errors.UserError, match="straight from the server"):
        dataset.export(str(tmp_path / "x.zip"), "http://archive")


def test_batches_are_read_in_parallel_and_sent_within_the_byte_limit(app: App, dataset: Dataset) -> None:
    """Reads that wait (network storage) overlap across batches, and no request passes
    max_batch_bytes: a batch whose inputs are too big together goes as several requests."""
    import threading
    import time

    from pellucid.api import v1

    reading, most, lock = [0], [0], threading.Lock()

    class WaitingReads(ListLoader):
        def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
            with lock:
                reading[0] += 1
                most[0] = max(most[0], reading[0])
            time.sleep(0.005)  # a read from slow storage
            with lock:
                reading[0] -= 1
            return super().__getitem__(index)

    images = [VisualClassificationFeatures(image_bytes=png(f"big-{i}", side=100), labels=["x"]) for i in range(48)]
    image_bytes = len(images[0].image_bytes)  # ~30 KB of noise each
    uploader = app.inputs()._uploader(batch_size=16, concurrency=3, max_batch_bytes=4 * image_bytes, progress=False)
    requests: list[int] = []
    real_call = uploader._call

    def recording_call(stub, method, request, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            requests.append(len(v1.PostInputsRequest.FromString(request.data).inputs))
            assert len(request.data) < 4 * image_bytes + 1024  # the limit, plus framing
        return real_call(stub, method, request, **kwargs)

    uploader._call = recording_call  # type: ignore[method-assign]
    from pellucid.client.loader_inputs import loader_items

    result = uploader.run(loader_items(WaitingReads("visual_classification", images), dataset.id), total=48)
    assert result.ok and len(result.stored_ids) == 48
    assert most[0] > 1  # several batches were being read at once
    assert sum(requests) == 48 and max(requests) < 16  # each 16-input batch went as several requests


def test_built_inputs_are_gathered_within_the_byte_limit_and_odd_items_fail_alone(app: App) -> None:
    """Inputs passed already built are not read ahead past a request's worth per batch, and
    an item that is not an Input fails alone, with its index."""
    from pellucid.api import v1
    from pellucid.client.input import Inputs
    from pellucid.client.uploads import UploadItem

    inputs = app.inputs()
    image = len(png("size-probe", side=100))
    uploader = inputs._uploader(batch_size=128, concurrency=2, max_batch_bytes=4 * image, progress=False)
    generated, requested, ahead = [0], [0], []
    real_call = uploader._call

    def counting_call(stub, method, request, **kwargs):  # type: ignore[no-untyped-def]
        requested[0] += len(v1.PostInputsRequest.FromString(request.data).inputs)
        return real_call(stub, method, request, **kwargs)

    uploader._call = counting_call  # type: ignore[method-assign]

    def source():  # type: ignore[no-untyped-def]
        for i in range(60):
            message = Inputs.get_input_from_bytes(f"built-{i}", image_bytes=png(f"built-{i}", side=100))
            generated[0] += 1
            ahead.append(generated[0] - requested[0])
            yield UploadItem(i, f"inputs[{i}]", lambda m=message: m, message.ByteSize())

    result = uploader.run(source(), total=60)
    assert result.ok and len(result.stored_ids) == 60
    assert max(ahead) <= (2 + 2) * 4  # batches in flight, the one gathered, the one waiting: 4 inputs each

    mixed = inputs.upload_inputs(
        [
            Inputs.get_text_input("fine-1", "one"),
            "not an input",  # type: ignore[list-item]
            Inputs.get_text_input("fine-2", "two"),
        ],
        show_log=False,
    )
    assert sorted(mixed.stored_ids) == ["fine-1", "fine-2"]
    assert [(f.index, f.code) for f in mixed.failed] == [(1, "INVALID_ARGUMENT")]


def test_ctrl_c_stops_the_reads_of_batches_in_flight(dataset: Dataset) -> None:
    import time

    reads = [0]

    class SlowReads(ListLoader):
        def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
            reads[0] += 1
            time.sleep(0.01)
            return super().__getitem__(index)

    loader = SlowReads("text_classification", [TextFeatures(text=f"interrupted {i}") for i in range(1000)])
    from pellucid.client.loader_inputs import loader_items

    def interrupted():  # type: ignore[no-untyped-def]
        for count, item in enumerate(loader_items(loader, dataset.id)):
            if count == 64:
                raise KeyboardInterrupt
            yield item

    uploader = dataset._inputs._uploader(batch_size=32, concurrency=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        uploader.run(interrupted(), total=1000)
    assert reads[0] < 64  # the two batches in flight stopped reading instead of finishing their 32 reads each
