"""The example runner shipped in examples/: its PNG decoder and its predictions through a real server."""

from __future__ import annotations

import importlib.util
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from pellucid.client.user import User
from pellucid.server.engine.media import encode_png

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "runners" / "colour_model.py"
spec = importlib.util.spec_from_file_location("colour_model", EXAMPLE)
assert spec is not None and spec.loader is not None
colour_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colour_model)


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filtered_png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A PNG whose row y uses filter filters[y], written the way the PNG spec defines each filter."""
    height, width, channels = pixels.shape
    rows, previous = [], np.zeros(width * channels, dtype=np.int64)
    for y in range(height):
        line = pixels[y].reshape(-1).astype(np.int64)
        out = []
        for x, value in enumerate(line):
            left = int(line[x - channels]) if x >= channels else 0
            up, up_left = int(previous[x]), int(previous[x - channels]) if x >= channels else 0
            predictor = [0, left, up, (left + up) // 2, paeth(left, up, up_left)][filters[y]]
            out.append((int(value) - predictor) & 0xFF)
        rows.append(bytes([filters[y]]) + bytes(out))
        previous = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_decoder_handles_every_png_filter() -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    assert np.array_equal(colour_model.decode_png(filtered_png(pixels, [0, 1, 2, 3, 4])), pixels)
    assert np.array_equal(colour_model.decode_png(encode_png(6, 5, pixels.tobytes())), pixels)
    with pytest.raises(ValueError):
        colour_model.decode_png(b"GIF89a....")


def test_example_model_through_the_server(alice: User, unique: str) -> None:
    app = alice.create_app(f"colours-{unique}")
    model = app.create_model("colour", runner_labels=[f"demo-{unique}"])
    alice.create_runner(f"colour-{unique}", labels=[f"demo-{unique}"])
    runner = colour_model.ColourModel(f"colour-{unique}", base_url=alice.base_url, pat=alice._connection.settings.pat)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    try:
        red = np.tile(np.array([210, 25, 40], dtype=np.uint8), (8, 8, 1))
        top = model.predict_by_bytes(encode_png(8, 8, red.tobytes()), "image").outputs[0].data.concepts[0]
        assert top.id == "red" and top.value > 0.9
        happy = model.predict_by_bytes(b"arrived early, works, would buy again", "text").outputs[0].data.concepts
        sad = model.predict_by_bytes(b"broke after a week, very disappointing", "text").outputs[0].data.concepts
        score = {c.id: c.value for c in happy}["positive"], {c.id: c.value for c in sad}["positive"]
        assert score[0] > 0.5 > score[1]
    finally:
        runner.stop(drain=False)
        thread.join(10)
