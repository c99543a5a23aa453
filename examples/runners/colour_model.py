"""An example runner with two small models computed on the CPU with numpy.

- Images: decodes the PNG, averages its colour and scores the concepts red, green and blue
  by a softmax over the distance to each colour's centroid.
- Texts: a sentiment classifier (hashed bag of words + logistic regression) trained when
  the runner starts, on examples/data/reviews.csv; outputs positive / negative. Called as an
  algorithm with a `data://` path, it classifies the text of that hosted file (read as the
  algorithm: its owner's my_algos and public collections).

Deployed (pellucid.deployment), it reads and writes named features instead: an image "Picture"
and/or a text "Review" in, "Colour" and/or "Sentiment" ({label: probability}) out.

Start it with:

    pellucid runner start examples/runners/colour_model.py:ColourModel --labels demo
"""

from __future__ import annotations

import csv
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pellucid.api import v1
from pellucid.client.runner import Runner, features_from_values

CENTROIDS = {"red": (200, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 210)}
REVIEWS = Path(__file__).resolve().parent.parent / "data" / "reviews.csv"
FEATURES = 512


def decode_png(data: bytes) -> np.ndarray:
    """8-bit, non-interlaced PNG (grey, grey+alpha, RGB or RGBA) -> array of shape (height, width, channels)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError("only 8-bit, non-interlaced grey/RGB(A) PNGs are supported by this example")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    previous = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            current = line
        elif kind == 2:
            current = (line + previous) & 0xFF
        else:  # Sub, Average and Paeth depend on the pixel to the left: go byte by byte
            current = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                left = current[x - channels] if x >= channels else 0
                up, up_left = previous[x], previous[x - channels] if x >= channels else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                current[x] = (line[x] + predictor) & 0xFF
        out[y], previous = current, current
    return out.reshape(height, width, channels).astype(np.uint8)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def featurise(text: str) -> np.ndarray:
    vector = np.zeros(FEATURES)
    for word in words(text):
        vector[zlib.crc32(word.encode()) % FEATURES] += 1.0
    return vector / max(1.0, np.linalg.norm(vector))


class ColourModel(Runner):
    def load_model(self) -> None:
        self.centroids = np.array(list(CENTROIDS.values()), dtype=np.float64)
        rows = [r for r in csv.DictReader(REVIEWS.open()) if r["concepts"] in ("positive", "negative")]
        x = np.stack([featurise(r["input"]) for r in rows])
        y = np.array([r["concepts"] == "positive" for r in rows], dtype=np.float64)
        self.weights, self.bias = np.zeros(FEATURES), 0.0
        for _ in range(300):  # plain gradient descent on the logistic loss
            p = 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))
            self.weights -= 2.0 * (x.T @ (p - y)) / len(y)
            self.bias -= 2.0 * float(np.mean(p - y))

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:  # noqa: A002
        if input.data.features:
            return self.run_features(input.data.features, output_info)
        if input.data.image.base64:
            return self.classify_image(input.data.image.base64, output_info)
        if input.data.text.raw.startswith("data://") and input.data.content_type:  # an algorithm call
            import pellucid

            return self.classify_text(pellucid.client().file(input.data.text.raw).getString())
        if input.data.text.raw:
            return self.classify_text(input.data.text.raw)
        raise ValueError("this model takes an image (as bytes) or a text")

    def classify_image(self, data: bytes, output_info: v1.OutputInfo) -> v1.Output:
        pixels = decode_png(data)[..., :3].reshape(-1, 3).astype(np.float64)
        mean = pixels.mean(axis=0)
        temperature = float(output_info.params["temperature"]) if "temperature" in output_info.params else 30.0
        distance = np.linalg.norm(self.centroids - mean, axis=1)
        scores = np.exp(-(distance - distance.min()) / temperature)
        scores /= scores.sum()
        concepts = [v1.Concept(id=name, name=name, value=float(s)) for name, s in zip(CENTROIDS, scores)]
        return v1.Output(data=v1.Data(concepts=concepts))

    def run_features(self, features: Sequence[v1.Feature], output_info: v1.OutputInfo) -> v1.Output:
        """A deployment's row: the same two models, their concepts as {label: probability} features."""
        given = {f.name: f for f in features}
        outputs = {}
        if "Picture" in given:
            colour = self.classify_image(given["Picture"].image.base64, output_info)
            outputs["Colour"] = {c.id: c.value for c in colour.data.concepts}
        if "Review" in given:
            sentiment = self.classify_text(given["Review"].text.raw)
            outputs["Sentiment"] = {c.id: c.value for c in sentiment.data.concepts}
        if not outputs:
            raise ValueError("this model takes a Picture (an image) or a Review (a text)")
        return v1.Output(data=v1.Data(features=features_from_values(outputs)))

    def classify_text(self, text: str) -> v1.Output:
        positive = 1.0 / (1.0 + np.exp(-(featurise(text) @ self.weights + self.bias)))
        return v1.Output(data=v1.Data(concepts=[v1.Concept(id="positive", name="positive", value=float(positive)),
                                                v1.Concept(id="negative", name="negative", value=float(1 - positive))]))
