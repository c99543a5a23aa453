"""Inputs and annotations through the SDK against a real server."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.input import Inputs
from pellucid.client.user import User
from tests.media_samples import mp4, png


@pytest.fixture
def app(alice: User, unique: str) -> App:
    return alice.create_app(f"in-{unique}")


@pytest.fixture
def inputs(app: App) -> Inputs:
    return app.inputs()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback HTTP server for URL inputs."""
    root = tmp_path_factory.mktemp("web")
    (root / "cat.png").write_bytes(png("web-cat"))
    (root / "note.txt").write_text("fetched text")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_builders_make_the_documented_messages(tmp_path: Path) -> None:
    image = Inputs.get_input_from_bytes(
        "a", image_bytes=b"xx", dataset_id="d", labels=["cat"], geo_info=[2.35, 48.85], metadata={"k": "v"}
    )
    assert image.data.image.base64 == b"xx" and list(image.dataset_ids) == ["d"]
    assert [(c.id, c.name, c.value) for c in image.data.concepts] == [("cat", "cat", 1.0)]
    assert image.data.geo.geo_point.latitude == pytest.approx(48.85)
    assert Inputs.get_input_from_url("u", video_url="http://x/v.mp4").data.video.url == "http://x/v.mp4"
    assert Inputs.get_text_input("t", "hello").data.text.raw == "hello"
    both = Inputs.get_multimodal_input("m", raw_text="caption", image_bytes=b"img")
    assert both.data.text.raw == "caption" and both.data.image.base64 == b"img"
    text_file = tmp_path / "t.txt"
    text_file.write_text("from a file")
    assert Inputs.get_input_from_file("f", text_file=str(text_file)).data.text.raw == "from a file"
    box = Inputs.get_bbox_proto("a", "cat", [0.1, 0.2, 0.3, 0.4]).data.regions[0].region_info.bounding_box
    assert (box.left_col, box.top_row, box.right_col, box.bottom_row) == pytest.approx((0.1, 0.2, 0.3, 0.4))
    mask = Inputs.get_mask_proto("a", "cat", [[0.1, 0.1], [0.5, 0.1], [0.3, 0.4]])
    assert len(mask.data.regions[0].region_info.polygon.points) == 3
    with pytest.raises(errors.UserError, match="exactly one"):
        Inputs.get_input_from_bytes("a", image_bytes=b"x", video_bytes=b"y")
    with pytest.raises(errors.UserError, match="xmin"):
        Inputs.get_bbox_proto("a", "cat", [0.1, 0.2])
    with pytest.raises(errors.UserError, match="cannot read"):
        Inputs.get_input_from_file("a", image_file=str(tmp_path / "missing.png"))


def test_upload_list_and_download(inputs: Inputs) -> None:
    image = png("one", side=12)
    job_id = inputs.upload_from_bytes("one", image_bytes=image, labels=["cat"], metadata={"source": "test"})
    job = inputs.get_inputs_add_job(job_id)
    assert (job.received, job.stored, job.failed) == (1, 1, 0)
    stored = inputs.get_input("one")
    assert stored.input_type == "image"
    assert (stored.data.image.mime, stored.data.image.width, stored.data.image.height) == ("image/png", 12, 12)
    assert stored.data.image.size == len(image) and not stored.data.image.base64
    assert dict(stored.data.metadata) == {"source": "test"}
    assert [c.id for c in stored.data.concepts] == ["cat"]
    inputs.upload_text("two", "some words")
    assert inputs.download_inputs(["one", "two"]) == [image, b"some words"]


def test_ids_are_derived_from_content(inputs: Inputs) -> None:
    first = inputs.upload_inputs([Inputs.get_text_input("", "same text")], show_log=False)
    again = inputs.upload_inputs([Inputs.get_text_input("", "same text")], show_log=False)
    assert first.stored_ids and again.duplicate_ids == first.stored_ids
    assert len(list(inputs.list_inputs())) == 1


def test_bad_items_fail_alone(inputs: Inputs) -> None:
    good = [Inputs.get_input_from_bytes(f"good{i}", image_bytes=png(f"good{i}")) for i in range(3)]
    bad = [
        Inputs.get_input_from_bytes("corrupt", image_bytes=png("c")[:-20]),
        Inputs.get_input_from_bytes("notimage", image_bytes=b"just some text, not a picture"),
        Inputs.get_input_from_bytes("badlabel", image_bytes=png("l"), labels=["has space"]),
        v1.Input(
            id="badbox",
            data=v1.Data(
                image=v1.Image(base64=png("b")),
                regions=[Inputs.get_bbox_proto("x", "cat", [0.5, 0.5, 1.5, 0.9]).data.regions[0]],
            ),
        ),
        v1.Input(
            id="twopoints",
            data=v1.Data(
                image=v1.Image(base64=png("p")),
                regions=[Inputs.get_mask_proto("x", "cat", [[0.1, 0.1], [0.2, 0.2]]).data.regions[0]],
            ),
        ),
        Inputs.get_input_from_bytes("bad id!", image_bytes=png("i")),
        Inputs.get_input_from_bytes("badgeo", image_bytes=png("g"), geo_info=[200, 0]),
    ]
    result = inputs.upload_inputs([good[0], *bad, good[1], good[2]], show_log=False)
    assert sorted(result.stored_ids) == ["good0", "good1", "good2"]
    reasons = {f.index: f.reason for f in result.failed}
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 7}
    assert "PNG" in reasons[1] and "JPEG, PNG" in reasons[2]
    assert "has space" in reasons[3] and "[0, 1]" in reasons[4] and "3 points" in reasons[5]
    assert "A-Z a-z 0-9" in reasons[6] and "longitude" in reasons[7]
    assert all(f.code == "INVALID_ARGUMENT" for f in result.failed)


def test_a_taken_id_with_other_content_fails_alone(inputs: Inputs) -> None:
    inputs.upload_text("mine", "original")
    result = inputs.upload_inputs(
        [Inputs.get_text_input("mine", "different"), Inputs.get_text_input("other", "x")], show_log=False
    )
    assert result.stored_ids == ["other"]
    assert result.failed[0].code == "ALREADY_EXISTS" and "different content" in result.failed[0].reason
    assert inputs.download_inputs(["mine"]) == [b"original"]  # nothing stored was changed
    with pytest.raises(errors.AlreadyExists):
        inputs.upload_text("mine", "different again")


def test_url_inputs_are_fetched(inputs: Inputs, web: str) -> None:
    inputs.upload_from_url("fromurl", image_url=f"{web}/cat.png")
    assert inputs.download_inputs(["fromurl"]) == [png("web-cat")]
    assert inputs.get_input("fromurl").data.image.url == f"{web}/cat.png"
    inputs.upload_from_url("texturl", text_url=f"{web}/note.txt")
    assert inputs.get_input("texturl").data.text.raw == "fetched text"
    with pytest.raises(errors.InvalidArgument, match="cannot fetch"):
        inputs.upload_from_url("missing", image_url=f"{web}/nope.png")
    with pytest.raises(errors.InvalidArgument, match="http"):
        inputs.upload_from_url("ftp", image_url="ftp://example/x.png")


def test_multimodal_and_geo(inputs: Inputs) -> None:
    inputs.upload_inputs(
        [Inputs.get_multimodal_input("mm", raw_text="a red cat", image_bytes=png("mm"), geo_info=[-122.4, 37.8])],
        show_log=False,
    )
    stored = inputs.get_input("mm")
    assert stored.input_type == "image" and stored.data.text.raw == "a red cat"
    assert stored.data.geo.geo_point.longitude == pytest.approx(-122.4)


def test_large_files_go_in_chunks(inputs: Inputs) -> None:
    video = mp4(6 * 1024 * 1024, seed=1)
    result = inputs.upload_inputs([Inputs.get_input_from_bytes("big", video_bytes=video)], show_log=False)
    assert result.stored_ids == ["big"], result.failed
    stored = inputs.get_input("big")
    assert stored.input_type == "video" and stored.data.video.size == len(video)
    assert inputs.download_inputs(["big"]) == [video]


def test_list_filters_run_on_the_server(app: App, inputs: Inputs) -> None:
    app.create_dataset("d1")
    batch = [Inputs.get_text_input(f"t{i}", f"text {i}", dataset_id="d1" if i % 2 else None) for i in range(10)]
    batch += [Inputs.get_input_from_bytes(f"i{i}", image_bytes=png(f"img{i}"), dataset_id="d1") for i in range(10)]
    assert inputs.upload_inputs(batch, show_log=False).ok
    assert [i.id for i in inputs.list_inputs(input_type="text", page_no=1, per_page=4)] == ["t0", "t1", "t2", "t3"]
    assert len(list(inputs.list_inputs(dataset_id="d1"))) == 15
    assert [i.id for i in inputs.list_inputs(dataset_id="d1", input_type="text")] == ["t1", "t3", "t5", "t7", "t9"]
    assert next(iter(inputs.list_inputs(dataset_id="d1", input_type="image"))).dataset_ids == ["d1"]
    with pytest.raises(errors.UserError, match="input_type"):
        list(inputs.list_inputs(input_type="pdf"))
    with pytest.raises(errors.NotFound):
        list(inputs.list_inputs(dataset_id="nope"))


def test_unknown_dataset_fails_the_item(inputs: Inputs) -> None:
    result = inputs.upload_inputs([Inputs.get_text_input("x", "x", dataset_id="missing")], show_log=False)
    assert result.failed[0].code == "NOT_FOUND" and "create it first" in result.failed[0].reason


def test_annotations(app: App, inputs: Inputs) -> None:
    inputs.upload_from_bytes("pic", image_bytes=png("pic"))
    result = inputs.upload_annotations(
        [
            Inputs.get_bbox_proto("pic", "cat", [0.1, 0.1, 0.4, 0.5], annot_id="box1"),
            Inputs.get_mask_proto("pic", "dog", [[0.5, 0.5], [0.9, 0.5], [0.7, 0.9]], annot_id="mask1"),
            Inputs.get_bbox_proto("ghost", "cat", [0.1, 0.1, 0.4, 0.5]),
        ],
        show_log=False,
    )
    assert result.stored_ids == ["box1", "mask1"]
    assert result.failed[0].code == "NOT_FOUND"
    listed = {a.id: a for a in inputs.list_annotations([v1.Input(id="pic")])}
    assert set(listed) == {"box1", "mask1"}
    assert {c.id for c in app.list_concepts()} >= {"cat", "dog"}  # labels create the app's concepts

    extra = v1.Annotation(id="box1", input_id="pic", data=v1.Data(concepts=[v1.Concept(id="fluffy", value=1.0)]))
    inputs.patch_annotations([extra], action="merge")
    merged = next(a for a in inputs.list_annotations([v1.Input(id="pic")]) if a.id == "box1")
    assert [c.id for c in merged.data.concepts] == ["fluffy"] and len(merged.data.regions) == 1
    inputs.patch_annotations(
        [v1.Annotation(id="box1", input_id="pic", data=v1.Data(concepts=[v1.Concept(id="fluffy")]))], action="remove"
    )
    removed = next(a for a in inputs.list_annotations([v1.Input(id="pic")]) if a.id == "box1")
    assert list(removed.data.concepts) == [] and len(removed.data.regions) == 1
    inputs.patch_annotations(
        [v1.Annotation(id="box1", input_id="pic", data=v1.Data(concepts=[v1.Concept(id="other", value=1.0)]))],
        action="overwrite",
    )
    replaced = next(a for a in inputs.list_annotations([v1.Input(id="pic")]) if a.id == "box1")
    assert [c.id for c in replaced.data.concepts] == ["other"] and not replaced.data.regions
    missing = inputs.patch_annotations([v1.Annotation(id="nope", input_id="pic")], action="merge")
    assert missing.failed[0].code == "NOT_FOUND"
    with pytest.raises(errors.UserError):
        inputs.patch_annotations([extra], action="explode")


def test_patch_concepts(app: App, inputs: Inputs) -> None:
    app.create_concepts(["cat"])
    assert [c.name for c in inputs.patch_concepts(["cat"], labels=["Felis catus"])] == ["Felis catus"]
    assert app.get_concept("cat").name == "Felis catus"
    with pytest.raises(errors.PartialFailure):
        inputs.patch_concepts(["unicorn"], labels=["x"])


def test_delete_inputs(inputs: Inputs) -> None:
    inputs.upload_inputs(
        [Inputs.get_text_input(f"d{i}", f"delete me {i}", labels=["x"]) for i in range(3)], show_log=False
    )
    inputs.delete_inputs(["d0", v1.Input(id="d1")])
    assert [i.id for i in inputs.list_inputs()] == ["d2"]
    assert [a.input_id for a in inputs.list_annotations()] == ["d2"]
    with pytest.raises(errors.PartialFailure) as info:
        inputs.delete_inputs(["d2", "never-was"])
    assert info.value.failed[0].item_id == "never-was"
    assert list(inputs.list_inputs()) == []


def test_other_users_cannot_touch_inputs(app: App, inputs: Inputs, bob: User) -> None:
    inputs.upload_text("private", "secret")
    intruder = Inputs(user_id=app.user_id, app_id=app.id, base_url=bob.base_url, pat=bob._connection.settings.pat)
    with pytest.raises(errors.NotFound):
        list(intruder.list_inputs())
    with pytest.raises(errors.NotFound):
        intruder.upload_text("evil", "x")
    with pytest.raises(errors.NotFound):
        intruder.download_inputs(["private"])
    with pytest.raises(errors.NotFound):
        intruder.delete_inputs(["private"])
    assert inputs.download_inputs(["private"]) == [b"secret"]


def test_audio_and_folder_and_csv_builders(inputs: Inputs, tmp_path: Path) -> None:
    wav = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(28)
    inputs.upload_from_bytes("sound", audio_bytes=wav)
    assert inputs.get_input("sound").input_type == "audio"
    assert inputs.get_input("sound").data.audio.mime.startswith("audio/")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "x.JPG").write_bytes(png("folder-x"))
    (tmp_path / "imgs" / "y.png").write_bytes(png("folder-y"))
    built = Inputs.get_image_inputs_from_folder(str(tmp_path / "imgs"), dataset_id="d", labels=True)
    assert sorted([c.id for c in b.data.concepts] for b in built) == [[], ["cat"]]
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.TXT").write_text("alpha")
    assert [b.data.text.raw for b in Inputs.get_text_inputs_from_folder(str(tmp_path / "texts"))] == ["alpha"]
    (tmp_path / "rows.csv").write_text('input,concepts\nfirst,a\nsecond,"b,c"\n')
    rows = Inputs.get_inputs_from_csv(str(tmp_path / "rows.csv"))
    assert [(r.data.text.raw, [c.id for c in r.data.concepts]) for r in rows] == [
        ("first", ["a"]),
        ("second", ["b", "c"]),
    ]


def test_one_users_slow_urls_do_not_hold_up_another_users_batch(app: App, bob: User) -> None:
    """URL fetches share the server's fetch threads in turns between users: a batch whose
    URLs hang holds at most all but one of them, and another user's batch is fetched meanwhile."""
    release = threading.Event()
    lock = threading.Lock()
    hanging = [0, 0]  # requests waiting now, the most at once

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow/"):
                with lock:
                    hanging[0] += 1
                    hanging[1] = max(hanging)
                release.wait(60)
                with lock:
                    hanging[0] -= 1
            body = png(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{web.server_address[1]}"
    slow_batch = [Inputs.get_input_from_url(f"s{i}", image_url=f"{base}/slow/{i}.png") for i in range(16)]
    results: list[object] = []
    uploader = threading.Thread(
        target=lambda: results.append(app.inputs().upload_inputs(slow_batch, show_log=False)), daemon=True
    )
    try:
        uploader.start()
        deadline = time.monotonic() + 20
        while hanging[0] < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hanging[0] == 7  # all of the fetch threads but one, however many URLs wait
        theirs = bob.create_app("fetch-turns").inputs().with_options(timeout=20)
        fast = [Inputs.get_input_from_url(f"f{i}", image_url=f"{base}/fast/{i}.png") for i in range(3)]
        result = theirs.upload_inputs(fast, show_log=False)  # while every slow URL still hangs
        assert not result.failed and not release.is_set()
    finally:
        release.set()
        uploader.join(60)
        web.shutdown()
    assert len(results) == 1 and not results[0].failed  # type: ignore[attr-defined]
    assert hanging[1] == 7
