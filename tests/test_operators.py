"""The built-in operator models, run by the server with no runner: through the engine, then once
each through gRPC with the SDK (regions, cropped images and embeddings cross the wire).

The photos are those scikit-image ships inside its wheel (nothing is downloaded)."""

from __future__ import annotations

import http.server
import importlib.util
import io
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pellucid.api import v1
from pellucid.client import _protos
from pellucid.client.user import User
from pellucid.errors import InvalidArgument as ClientInvalidArgument
from pellucid.server.embedders import EmbedderUnavailable
from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.fetch import UrlFetcher
from pellucid.server.engine.models import VersionSpec
from pellucid.server.engine.operators import BuiltinEmbedderModel, ImageCrop, crop_box
from pellucid.server.engine.predict import Media, OutputCode, OutputRegion, PredictInput, PredictRequest
from pellucid.server.records import ConceptValue, ModelRecord, ModelVersionRecord
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store

ADMIN = Principal("admin", is_admin=True, token_id="t")
SKIMAGE_DATA = Path(next(iter(importlib.util.find_spec("skimage").submodule_search_locations))) / "data"  # type: ignore[union-attr]


def photo(name: str) -> bytes:
    return (SKIMAGE_DATA / name).read_bytes()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'metadata.db'}"), open_blob_store(f"file://{tmp_path / 'blobs'}")
    )
    engine.users.bootstrap("admin")
    engine.apps.create(ADMIN, "admin", "app")
    yield engine
    engine.close()


def create(engine: Engine, model_id: str, type_id: str, **version: Any) -> None:
    engine.models.create(ADMIN, "admin", "app", model_id, model_type_id=type_id, version=VersionSpec(**version))


def predict(engine: Engine, model_id: str, *inputs: PredictInput, **params: Any) -> list[Any]:
    request = PredictRequest("admin", "app", model_id, inputs=inputs, params=params, deadline_seconds=20.0)
    result = engine.models.predict(ADMIN, request)
    assert result.runner_id == ""  # the server ran it
    return list(result.outputs)


def scored(*pairs: tuple[str, float]) -> tuple[ConceptValue, ...]:
    return tuple(ConceptValue(c, value=v) for c, v in pairs)


# thresholders


def test_the_concept_thresholder_compares_each_concept_with_its_threshold(engine: Engine) -> None:
    given = PredictInput("i", concepts=scored(("cat", 0.9), ("dog", 0.5), ("car", 0.2)))
    create(engine, "th", "concept-thresholder")  # the defaults: value > 0.5
    (out,) = predict(engine, "th", given)
    assert out.code is OutputCode.OK and [c.id for c in out.data.concepts] == ["cat"]
    expected = {
        "GREATER_THAN_OR_EQUAL": ["cat", "dog"],
        "LESS_THAN": ["car"],
        "LESS_THAN_OR_EQUAL": ["dog", "car"],
        "EQUAL": ["dog"],
    }
    for kind, ids in expected.items():
        (out,) = predict(engine, "th", given, concept_threshold_type=kind)
        assert sorted(c.id for c in out.data.concepts) == sorted(ids), kind
    # per concept: the version's concepts' values, then the concept_thresholds param over them
    create(
        engine,
        "per-concept",
        "concept-thresholder",
        concepts=scored(("dog", 0.4), ("cat", 0.95)),
        params={"threshold": 0.1, "concept_thresholds": {"cat": 0.8}},
    )
    (out,) = predict(engine, "per-concept", given)
    assert sorted(c.id for c in out.data.concepts) == ["car", "cat", "dog"]
    (out,) = predict(engine, "per-concept", given, concept_thresholds={"car": 0.3, "cat": 0.95})
    assert sorted(c.id for c in out.data.concepts) == ["dog"]


def test_bad_thresholder_params_are_refused_naming_the_param(engine: Engine) -> None:
    with pytest.raises(InvalidArgument, match="GREATER_THAN_OR_EQUAL") as raised:
        create(engine, "bad", "concept-thresholder", params={"concept_threshold_type": "ABOVE"})
    assert raised.value.field == "version.output_info.params.concept_threshold_type"
    with pytest.raises(InvalidArgument, match="known ones are concept_threshold_type, concept_thresholds, threshold"):
        create(engine, "bad", "region-thresholder", params={"treshold": 0.2})
    with pytest.raises(InvalidArgument, match="out of range") as raised:
        create(engine, "bad", "concept-thresholder", params={"concept_thresholds": {"cat": 1.5}})
    assert raised.value.field == "version.output_info.params.concept_thresholds.cat"
    assert engine.store.get_model("admin", "app", "bad") is None  # nothing stored
    create(engine, "th", "concept-thresholder")
    with pytest.raises(InvalidArgument, match=r"inference_params\.threshold"):
        predict(engine, "th", PredictInput("i", concepts=scored(("a", 1.0))), threshold="high")
    with pytest.raises(InvalidArgument, match="known ones"):  # a new version is checked as the first
        engine.models.create_version(ADMIN, "admin", "app", "th", VersionSpec(params={"keep_fraction": 0.5}))


def test_the_region_thresholder_keeps_regions_with_a_concept_left(engine: Engine) -> None:
    boxes = (
        OutputRegion("r1", (0.0, 0.0, 0.5, 0.5), scored(("cat", 0.9), ("dog", 0.3)), extra=b"\x08\x01"),
        OutputRegion("r2", (0.5, 0.5, 1.0, 1.0), scored(("dog", 0.45))),
    )
    create(engine, "rt", "region-thresholder", params={"threshold": 0.45})
    (out,) = predict(engine, "rt", PredictInput("i", regions=boxes))
    (kept,) = out.data.regions
    assert kept.id == "r1" and [c.id for c in kept.concepts] == ["cat"]
    assert kept.bbox == (0.0, 0.0, 0.5, 0.5) and kept.extra == b"\x08\x01"  # the rest of the region stays
    (out,) = predict(engine, "rt", PredictInput("i", regions=boxes), concept_threshold_type="LESS_THAN")
    assert [(r.id, [c.id for c in r.concepts]) for r in out.data.regions] == [("r1", ["dog"])]


# image-crop

BOXES = ((0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0), (0.75, 0.5, 1.0, 0.625))


def test_image_crop_makes_one_image_per_region_with_the_pixels_of_its_box(engine: Engine) -> None:
    png = photo("astronaut.png")  # 512 x 512 RGB
    source = pixels(png)
    create(engine, "crop", "image-crop")
    regions = tuple(OutputRegion(f"r{k}", box, scored(("x", 0.5))) for k, box in enumerate(BOXES))
    (out,) = predict(engine, "crop", PredictInput("i", (Media("image", png),), regions=regions))
    assert out.code is OutputCode.OK and [r.id for r in out.data.regions] == ["r0", "r1", "r2"]
    assert out.data.regions[0].concepts == regions[0].concepts and out.data.regions[0].bbox == BOXES[0]
    expected = [(51, 102, 256, 308), (0, 0, 512, 512), (384, 256, 512, 320)]  # rows y0:y1, cols x0:x1
    for region, (y0, x0, y1, x1) in zip(out.data.regions, expected, strict=True):
        assert region.image is not None and region.image.mime == "image/png"
        assert np.array_equal(pixels(region.image.data), source[y0:y1, x0:x1])  # PNG stays PNG, lossless

    jpeg = photo("rocket.jpg")  # 640 x 427
    (out,) = predict(engine, "crop", PredictInput("j", (Media("image", jpeg),), regions=regions[:1]), margin=0.25)
    (region,) = out.data.regions
    assert region.image is not None and region.image.mime == "image/jpeg"
    crop = pixels(region.image.data)
    # the box grown by a quarter of its size on each side: rows 0.0-0.6 (0-257), cols 0.1-0.7 (64-448)
    assert crop.shape == (257, 384, 3)
    assert np.abs(crop.astype(int) - pixels(jpeg)[0:257, 64:448].astype(int)).mean() < 4  # JPEG, re-encoded


def test_crop_boxes_are_grown_clamped_and_never_empty() -> None:
    assert crop_box((0.1, 0.2, 0.5, 0.6), 100, 50, 0.0) == (20, 5, 60, 25)
    assert crop_box((0.1, 0.2, 0.5, 0.6), 100, 50, 0.5) == (0, 0, 80, 35)
    assert crop_box((0.5, 0.5, 0.5001, 0.5001), 10, 10, 0.0) == (5, 5, 6, 6)


def test_bad_boxes_and_images_fail_their_input_alone(engine: Engine) -> None:
    png = photo("camera.png")
    create(engine, "crop", "image-crop")
    good = PredictInput("good", (Media("image", png),), regions=(OutputRegion("r", (0.0, 0.0, 0.5, 0.5)),))
    inverted = PredictInput("inverted", (Media("image", png),), regions=(OutputRegion("r", (0.6, 0.0, 0.5, 0.5)),))
    outside = PredictInput("outside", (Media("image", png),), regions=(OutputRegion("r", (0.0, 0.0, 1.5, 0.5)),))
    no_box = PredictInput("no-box", (Media("image", png),), regions=(OutputRegion("r"),))
    no_image = PredictInput("no-image", regions=(OutputRegion("r", (0.0, 0.0, 0.5, 0.5)),))
    garbage = PredictInput("garbage", (Media("image", b"not an image"),), regions=good.regions)
    outputs = predict(engine, "crop", good, inverted, outside, no_box, no_image, garbage)
    assert [o.code for o in outputs] == [OutputCode.OK] + [OutputCode.INVALID_ARGUMENT] * 5
    messages = [o.message for o in outputs[1:]]
    assert "inputs[1].regions[0] bounding box (top 0.6, left 0, bottom 0.5, right 0.5) is not a box" in messages[0]
    assert "top < bottom" in messages[1] and "has no bounding box" in messages[2]
    assert "inputs[4] has no image to crop" in messages[3] and "cannot be decoded" in messages[4]
    with pytest.raises(InvalidArgument, match="margin"):
        predict(engine, "crop", good, margin=2.0)


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and header chunk claiming a size, then a token of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def test_image_crop_decodes_only_the_image_formats_the_server_accepts(engine: Engine) -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"  # Pillow would hand it to Ghostscript
    huge = png_header(8000, 7000)  # 56 million pixels in a few bytes: refused before decoding
    box = (OutputRegion("r", (0.0, 0.0, 0.5, 0.5)),)
    create(engine, "crop", "image-crop")
    outputs = predict(
        engine,
        "crop",
        *(PredictInput(n, (Media("image", d),), regions=box) for n, d in (("eps", eps), ("huge", huge))),
    )
    assert [o.code for o in outputs] == [OutputCode.INVALID_ARGUMENT] * 2
    assert "cannot be decoded as JPEG, PNG" in outputs[0].message
    assert "8000 x 7000" in outputs[1].message and "50 million pixels" in outputs[1].message


def test_image_crop_bounds_what_one_input_makes(engine: Engine) -> None:
    """A detector may answer any number of boxes: their crops, all in memory at once, are bounded."""
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(encoded, "PNG")  # one million pixels
    whole = OutputRegion("r", (0.0, 0.0, 1.0, 1.0))
    create(engine, "crop", "image-crop")
    many = PredictInput("many", (Media("image", encoded.getvalue()),), regions=(whole,) * 1001)
    big = PredictInput("big", (Media("image", encoded.getvalue()),), regions=(whole,) * 51)
    fine = PredictInput("fine", (Media("image", encoded.getvalue()),), regions=(whole,) * 2)
    outputs = predict(engine, "crop", many, big, fine)
    assert [o.code for o in outputs] == [OutputCode.INVALID_ARGUMENT] * 2 + [OutputCode.OK]
    assert "has 1001 regions: image-crop crops at most 1000 per input" in outputs[0].message
    assert "51 regions hold 51 million pixels" in outputs[1].message and "at most 50 million" in outputs[1].message
    assert len(outputs[2].data.regions) == 2


def test_image_crop_bounds_what_one_call_makes(engine: Engine) -> None:
    """Every input's crops are held until the call answers: past the call's budget, inputs fail alone."""
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(encoded, "PNG")  # one million pixels
    image = (Media("image", encoded.getvalue()),)
    whole = OutputRegion("r", (0.0, 0.0, 1.0, 1.0))
    tiny = OutputRegion("t", (0.0, 0.0, 0.001, 0.001))  # one pixel
    create(engine, "crop", "image-crop")
    big = [PredictInput(f"big{n}", image, regions=(whole,) * 40) for n in range(3)]  # 40 million pixels each
    small = PredictInput("small", image, regions=(whole,) * 2)
    outputs = predict(engine, "crop", *big, small)
    assert [o.code for o in outputs] == [OutputCode.OK] * 2 + [OutputCode.RESOURCE_EXHAUSTED, OutputCode.OK]
    assert "inputs[2]: its 40 crops (40.0 million pixels) would take this call past" in outputs[2].message
    assert "limit of 5000 crops and 100 million pixels per call" in outputs[2].message
    assert "made 80 crops, 80.0 million pixels" in outputs[2].message and "fewer inputs per call" in outputs[2].message
    assert len(outputs[3].data.regions) == 2  # what still fits is cropped
    many = [PredictInput(f"many{n}", image, regions=(tiny,) * 1000) for n in range(6)]  # each within its limit
    outputs = predict(engine, "crop", *many)
    assert [o.code for o in outputs] == [OutputCode.OK] * 5 + [OutputCode.RESOURCE_EXHAUSTED]
    assert "inputs[5]: its 1000 crops" in outputs[5].message and "made 5000 crops" in outputs[5].message


def test_image_crop_without_pillow_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # an import of PIL now fails, as when it is not installed
    cropper = ImageCrop(UrlFetcher())
    model = ModelRecord("u", "a", "m", 0.0, 0.0, model_type_id="image-crop")
    (out,) = cropper.predict(model, ModelVersionRecord("u", "a", "m", "v", 0.0), [PredictInput("i")], {})
    assert out.code is OutputCode.FAILED_PRECONDITION and "pip install 'pellucid[models]'" in out.message


@pytest.fixture
def photo_url() -> Iterator[str]:
    """A loopback web server with one photo."""
    body = photo("coffee.png")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/coffee.png"
    server.shutdown()
    server.server_close()
    thread.join()


def test_an_image_given_by_url_is_fetched_only_where_the_server_allows(
    engine: Engine, photo_url: str, tmp_path: Path
) -> None:
    given = PredictInput("u", (Media("image", url=photo_url),), regions=(OutputRegion("r", (0.0, 0.0, 0.5, 0.5)),))
    create(engine, "crop", "image-crop")
    (refused,) = predict(engine, "crop", given)  # a shared server never fetches from this machine
    assert refused.code is OutputCode.INVALID_ARGUMENT and "127.0.0.1" in refused.message
    allowing = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'allowing.db'}"),
        open_blob_store(f"file://{tmp_path / 'allowing-blobs'}"),
        allow_private_urls=True,
    )
    try:
        allowing.users.bootstrap("admin")
        allowing.apps.create(ADMIN, "admin", "app")
        create(allowing, "crop", "image-crop")
        (out,) = predict(allowing, "crop", given)
        assert out.code is OutputCode.OK and out.data.regions[0].image is not None
        assert pixels(out.data.regions[0].image.data).shape == (200, 300, 3)  # coffee.png is 400 x 600
    finally:
        allowing.close()


# random-sample


def test_random_sample_keeps_a_fraction_reproducibly_and_passes_kept_content_on(engine: Engine) -> None:
    png = photo("camera.png")
    inputs = [
        PredictInput(f"in-{k}", (Media("image", png, mime="image/png"),), {"k": k}, concepts=scored(("a", 0.5)))
        for k in range(200)
    ]
    create(engine, "sample", "random-sample", params={"keep_fraction": 0.3, "seed": 7})
    outputs = predict(engine, "sample", *inputs[:100]) + predict(engine, "sample", *inputs[100:])
    kept = [o.input_id for o in outputs if o.data.media]
    assert 40 <= len(kept) <= 80  # about 60 of 200
    again = predict(engine, "sample", *reversed(inputs[:128])) + predict(engine, "sample", *inputs[128:])
    assert sorted(kept) == sorted(o.input_id for o in again if o.data.media)  # the same seed keeps the same ones
    sample = next(o for o in outputs if o.data.media)
    assert sample.data.media == (Media("image", png, mime="image/png"),)
    assert sample.data.concepts == scored(("a", 0.5)) and sample.data.metadata is not None
    dropped = next(o for o in outputs if not o.data.media)
    assert dropped.code is OutputCode.OK and dropped.data.concepts == () and dropped.data.metadata is None
    other_seed = predict(engine, "sample", *inputs[:100], seed=8)
    assert {o.input_id for o in other_seed if o.data.media} != {k for k in kept if int(k[3:]) < 100}
    texts = [PredictInput(f"t{k}", (Media("text", b"hello"),)) for k in range(3)]
    assert [o.data.text for o in predict(engine, "sample", *texts, keep_fraction=1.0)] == ["hello"] * 3
    assert all(not o.data.text for o in predict(engine, "sample", *texts, keep_fraction=0.0))


# the built-in embedders


def test_the_builtin_embedders_are_models(engine: Engine) -> None:
    create(engine, "text", "text-embedder")
    sentences = [b"The cat purred on the windowsill.", b"A kitten sleeps in the sun.", b"File your income tax return."]
    inputs = [PredictInput(f"t{k}", (Media("text", s),)) for k, s in enumerate(sentences)]
    outputs = predict(engine, "text", *inputs, PredictInput("no-text", (Media("image", photo("camera.png")),)))
    vectors = np.array([o.data.embeddings[0] for o in outputs[:3]])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # cats nearer cats than taxes
    assert outputs[3].code is OutputCode.INVALID_ARGUMENT and "text-embedder reads text only" in outputs[3].message
    create(engine, "image", "image-embedder")
    (out,) = predict(engine, "image", PredictInput("p", (Media("image", photo("coffee.png")),)))
    assert len(out.data.embeddings[0]) == 1024


def test_a_missing_embedder_fails_each_output_naming_the_extra() -> None:
    def missing(modality: str) -> Any:
        raise EmbedderUnavailable("onnxruntime is not installed")

    embedder = BuiltinEmbedderModel("text", UrlFetcher(), loader=missing)
    model = ModelRecord("u", "a", "m", 0.0, 0.0, model_type_id="text-embedder")
    version = ModelVersionRecord("u", "a", "m", "v", 0.0)
    outputs = embedder.predict(model, version, [PredictInput("a", (Media("text", b"x"),)), PredictInput("b")], {})
    assert [o.code for o in outputs] == [OutputCode.FAILED_PRECONDITION] * 2
    assert "onnxruntime is not installed" in outputs[0].message
    assert "pip install 'pellucid[models]'" in outputs[0].message


# through gRPC with the SDK


def test_operators_through_grpc_with_the_sdk(alice: User, unique: str) -> None:
    app = alice.create_app(f"ops-{unique}")
    png = photo("astronaut.png")
    regions = [
        v1.Region(
            id=f"r{k}",
            region_info=v1.RegionInfo(bounding_box=v1.BoundingBox(top_row=t, left_col=le, bottom_row=b, right_col=r)),
            data=v1.Data(concepts=[v1.Concept(id="face", value=v)]),
        )
        for k, ((t, le, b, r), v) in enumerate(zip(BOXES, (0.9, 0.2, 0.7), strict=True))
    ]
    given = _protos.make_input("in", image=png, regions=regions)

    thresholder = app.create_model("keep-faces", model_type_id="region-thresholder", params={"threshold": 0.5})
    (out,) = thresholder.predict([given]).outputs
    assert [r.id for r in out.data.regions] == ["r0", "r2"]

    cropper = app.create_model("crop", model_type_id="image-crop")
    (out,) = cropper.predict([given]).outputs
    assert out.status.code == v1.Status.OK and len(out.data.regions) == 3
    first = out.data.regions[0]
    assert first.data.image.mime == "image/png" and first.region_info.bounding_box.left_col == pytest.approx(0.2)
    assert np.array_equal(pixels(first.data.image.base64), pixels(png)[51:256, 102:308])
    (bad,) = cropper.predict([_protos.make_input("no-regions", image=b"\x89PNG")]).outputs
    assert bad.status.code == v1.Status.OK and not bad.data.regions  # nothing upstream: nothing to crop

    sampler = app.create_model("all", model_type_id="random-sample", params={"keep_fraction": 1.0})
    (out,) = sampler.predict([given]).outputs
    assert out.data.image.base64 == png and len(out.data.regions) == 3

    embedder = app.create_model("embed", model_type_id="text-embedder")
    (out,) = embedder.predict([_protos.make_input("t", text=v1.Text(raw="a cat"))]).outputs
    assert out.data.embeddings[0].num_dimensions == 384 and len(out.data.embeddings[0].vector) == 384

    with pytest.raises(ClientInvalidArgument, match=r"threshold = 2\.0 is out of range"):
        thresholder.predict([given], inference_params={"threshold": 2})
    with pytest.raises(ClientInvalidArgument, match="concept_threshold_type"):
        app.create_model("bad", model_type_id="concept-thresholder", params={"concept_threshold_type": "MORE"})
