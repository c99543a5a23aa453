"""Runner classes the tests start as separate processes (pellucid runner start tests/runner_models.py:Name)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pellucid.api import v1
from pellucid.client.runner import Runner


class Sleepy(Runner):
    """Echoes the text's length after sleeping $SLEEP seconds; touches $STARTED when an item starts."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        marker = os.environ.get("STARTED")
        if marker:
            Path(marker).write_text(self.runner_id)
        time.sleep(float(os.environ.get("SLEEP", "0")))
        output = v1.Output(
            data=v1.Data(concepts=[v1.Concept(id="length", value=min(1.0, len(input.data.text.raw) / 100))])
        )
        output.data.metadata.update({"runner": self.runner_id, "pid": os.getpid()})
        return output


class Trivial(Runner):
    """The cheapest possible model, for measuring routing overhead."""

    def run_inputs(self, inputs: list[v1.Input], output_info: v1.OutputInfo) -> list[v1.Output]:
        return [v1.Output(data=v1.Data(concepts=[v1.Concept(id="ok", value=1.0)])) for _ in inputs]


class Echo(Runner):
    """Answers with the input's text upper-cased, naming the runner that ran it (scale-out tests);
    a text starting "hold" waits until $HOLD_DIR/open exists, so a test can keep an item in flight."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        hold = os.environ.get("HOLD_DIR")
        if hold and input.data.text.raw.startswith("hold"):  # held until the test opens the gate
            Path(hold, f"started-{self.runner_id}").write_text(input.data.text.raw)
            deadline = time.monotonic() + 60
            while not Path(hold, "open").exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # another process opens the gate: nothing to block on
        output = v1.Output(data=v1.Data(concepts=[v1.Concept(id="ok", value=1.0)]))
        output.data.text.raw = input.data.text.raw.upper()
        output.data.metadata.update({"runner": self.runner_id})
        return output


class ColourEmbedder(Runner):
    """An embedding model: a PNG (as media_samples.png and encode_png write them: 8-bit RGB, no
    row filters) -> its colour histogram, 4 bins per channel, L2-normalised (12 dimensions).
    Anything else it cannot decode raises, so that input fails alone."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        import struct
        import zlib

        import numpy as np

        data = input.data.image.base64
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("not a PNG image")
        width, height = struct.unpack(">II", data[16:24])
        pos, idat = 33, b""
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"IDAT":
                idat += data[pos + 8 : pos + 8 + length]
            pos += 12 + length
        rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * 3 + 1)
        pixels = rows[:, 1:].reshape(-1, 3)
        histogram = np.concatenate([np.bincount(pixels[:, c] // 64, minlength=4) for c in range(3)]).astype(np.float32)
        vector = histogram / np.linalg.norm(histogram)
        return v1.Output(data=v1.Data(embeddings=[v1.Embedding(vector=vector.tolist(), num_dimensions=len(vector))]))


def tensor_math(values: dict) -> dict:
    """What TensorMath computes, for the tests to compare with: x (float32) -> y = 2x + 1,
    n (int64) -> total = its running sum along the last axis, s (byte strings) -> shout = each
    upper-cased with "!" appended."""
    import numpy as np

    out = {}
    if "x" in values:
        out["y"] = (np.asarray(values["x"], dtype=np.float32) * 2 + 1).astype(np.float32)
    if "n" in values:
        out["total"] = np.cumsum(np.asarray(values["n"], dtype=np.int64), axis=-1)
    if "s" in values:
        strings = np.asarray(values["s"], dtype=object)
        shout = np.empty(strings.shape, dtype=object)
        shout.ravel()[:] = [bytes(b).upper() + b"!" for b in strings.ravel()]
        out["shout"] = shout
    return out


class TensorMath(Runner):
    """A model over named arrays (Open Inference Protocol tests and scripts/bench_oip.py): see tensor_math."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        from pellucid.client.runner import feature_values, features_from_values

        outputs = tensor_math(feature_values(input.data.features))
        return v1.Output(data=v1.Data(features=features_from_values(outputs)))


class Tabular(Runner):
    """A deployed model of named features (tests/test_http_deployments.py): from Size (numeric),
    Type (categorical), Sound (text), and optional Picture (image) and Grid (array) it computes
    Score = 2 * Size + len(Sound), Kind = {cat, dog} probabilities, Echo = Sound upper-cased,
    Negative = the picture inverted, Doubled = Grid * 2. Size < 0 raises ValueError (the model
    refuses the row), Sound "crash" RuntimeError (the model fails); Sound "slow" marks $STARTED_DIR and sleeps $SLEEP seconds (a model slower than a timeout)."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        from PIL import ImageOps

        from pellucid.client.runner import feature_values, features_from_values

        given = feature_values(input.data.features)
        if given["Sound"] == "slow":
            marks = os.environ.get("STARTED_DIR")
            if marks:  # the test waits for these to know its slow calls are in flight
                Path(marks, f"{input.id}-{os.getpid()}-{time.monotonic_ns()}").touch()
            time.sleep(float(os.environ.get("SLEEP", "0")))
        if given["Size"] < 0:  # the runner reports a ValueError as INVALID_ARGUMENT: the row's fault
            raise ValueError(f"Size must not be negative, got {given['Size']}")
        if given["Sound"] == "crash":  # anything else is the model's own failure
            raise RuntimeError("the model crashed")
        cat = 0.9 if given["Type"] == {"animal": 1.0} else 0.2
        outputs = {
            "Score": 2 * given["Size"] + len(given["Sound"]),
            "Kind": {"cat": cat, "dog": round(1 - cat, 6)},
            "Echo": given["Sound"].upper(),
        }
        if "Picture" in given:
            outputs["Negative"] = ImageOps.invert(given["Picture"].convert("RGB"))
        if "Grid" in given:
            outputs["Doubled"] = given["Grid"] * 2
        return v1.Output(data=v1.Data(features=features_from_values(outputs)))
