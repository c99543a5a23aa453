"""The gRPC translators of predicts: a proto through the engine's types and back is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pellucid.api import v1
from pellucid.client.features import feature_spec_protos, image_bytes
from pellucid.client.runner import feature_values, features_from_values, ndarray_from_numpy, ndarray_to_numpy
from pellucid.errors import UserError
from pellucid.server.engine.predict import Media, OutputCode, Tensor
from pellucid.server.grpc.translate.models import (
    feature_spec_message,
    feature_spec_record,
    input_message,
    output_message,
    output_record,
    predict_input,
)


def test_inputs_round_trip_through_the_engine_types() -> None:
    text = v1.Input(id="x", data=v1.Data(text=v1.Text(raw="hi"), concepts=[v1.Concept(id="c")]))
    image = v1.Input(id="y", data=v1.Data(image=v1.Image(base64=b"\x89PNG", mime="image/png")))
    image.data.metadata.update({"a": 1})
    for message in (text, image):
        assert input_message(predict_input(message)) == message
    assert predict_input(image).media == (Media("image", b"\x89PNG", "", "image/png"),)
    assert predict_input(text).fields == ("text",)  # an empty image is not sent along


def test_outputs_round_trip_keeping_what_the_engine_does_not_model() -> None:
    output = v1.Output(
        status=v1.Status(code=v1.Status.INVALID_ARGUMENT, message="bad"),
        input=v1.Input(id="x"),
        data=v1.Data(text=v1.Text(raw="t"), concepts=[v1.Concept(id="a", value=0.5)], regions=[v1.Region(id="r")]),
    )
    output.data.metadata.update({"k": "v"})
    record = output_record(output)
    assert record.code is OutputCode.INVALID_ARGUMENT and [c.id for c in record.data.concepts] == ["a"]
    assert output_message(record) == output
    plain = v1.Output(input=v1.Input(id="x"), data=v1.Data(concepts=[v1.Concept(id="a", value=0.5)]))
    assert output_message(output_record(plain)) == plain


def test_embeddings_reach_the_engine_as_vectors() -> None:
    """An embedding model's output: the engine reads its vectors (an app's base workflow stores them)."""
    output = v1.Output(
        input=v1.Input(id="x"),
        data=v1.Data(embeddings=[v1.Embedding(vector=[0.5, -0.25, 1.0], num_dimensions=3)]),
    )
    record = output_record(output)
    assert record.data.embeddings == ((0.5, -0.25, 1.0),) and not record.data.extra
    assert output_message(record) == output


def test_regions_reach_the_engine_and_keep_what_it_does_not_model() -> None:
    """A detector's regions: boxes, concepts and cropped images are read; a polygon rides along."""
    region = v1.Region(
        id="r1",
        region_info=v1.RegionInfo(
            bounding_box=v1.BoundingBox(top_row=0.1, left_col=0.2, bottom_row=0.5, right_col=0.6),
            polygon=v1.Polygon(points=[v1.Point(row=0.1, col=0.2), v1.Point(row=0.5, col=0.6)]),
        ),
        data=v1.Data(concepts=[v1.Concept(id="cat", value=0.75)], image=v1.Image(base64=b"jpg", mime="image/jpeg")),
    )
    output = v1.Output(input=v1.Input(id="x"), data=v1.Data(regions=[region]))
    record = output_record(output)
    (found,) = record.data.regions
    assert found.id == "r1" and [c.id for c in found.concepts] == ["cat"]
    assert found.bbox is not None and [round(v, 3) for v in found.bbox] == [0.1, 0.2, 0.5, 0.6]
    assert found.image == Media("image", b"jpg", "", "image/jpeg") and found.extra
    assert output_message(record) == output
    given = v1.Input(id="y", data=v1.Data(regions=[region], embeddings=[v1.Embedding(vector=[1.0], num_dimensions=1)]))
    engine_input = predict_input(given)
    assert engine_input.kinds == ("embeddings", "regions") and engine_input.embeddings == ((1.0,),)
    assert input_message(engine_input) == given


def test_media_an_output_passes_on_reach_the_engine() -> None:
    """A runner's output image (random-sample's kept input, in the engine) is modelled both ways."""
    output = v1.Output(input=v1.Input(id="x"), data=v1.Data(image=v1.Image(base64=b"png", mime="image/png")))
    record = output_record(output)
    assert record.data.media == (Media("image", b"png", "", "image/png"),) and not record.data.extra
    assert output_message(record) == output


PNG = image_bytes(Image.new("L", (2, 2), 7))


def _feature_row() -> list[v1.Feature]:
    return [
        v1.Feature(name="Size", array=ndarray_from_numpy(np.float64(0.26))),
        v1.Feature(name="Type", concepts=[v1.Concept(id="animal", value=1.0)]),
        v1.Feature(name="Sound", text=v1.Text(raw="Miaow")),
        v1.Feature(name="Picture", image=v1.Image(base64=PNG, mime="image/png")),
        v1.Feature(name="Grid", array=ndarray_from_numpy(np.arange(6, dtype=np.int64).reshape(2, 3))),
        v1.Feature(name="Words", array=ndarray_from_numpy(np.array(["a", "bé"], dtype=object))),
    ]


def test_features_round_trip_through_the_engine_types() -> None:
    """Named features (a deployment's row) reach the engine as Tensors, texts, media and
    concepts, and come back to the same protos, in inputs and in outputs."""
    message = v1.Input(id="x", data=v1.Data(features=_feature_row()))
    given = predict_input(message)
    assert [f.name for f in given.features] == ["Size", "Type", "Sound", "Picture", "Grid", "Words"]
    size, kind, sound, picture, grid, words = given.features
    assert size.tensor == Tensor("float64", (), np.float64(0.26).tobytes()) and size.tensor.to_numpy() == 0.26
    assert [c.id for c in kind.concepts] == ["animal"] and sound.text == "Miaow" and sound.tensor is None
    assert picture.media == Media("image", PNG, "", "image/png")
    assert grid.tensor is not None and grid.tensor.to_numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert words.tensor is not None and words.tensor.to_numpy().tolist() == [b"a", "bé".encode()]
    assert given.extra == b""  # nothing rides along: the engine models every part
    assert input_message(given) == message
    output = v1.Output(input=v1.Input(id="x"), data=v1.Data(features=_feature_row()))
    record = output_record(output)
    assert record.data.features == given.features and record.data.extra == b""
    assert output_message(record) == output


def test_feature_specs_round_trip_and_runner_helpers_convert_to_numpy() -> None:
    specs = feature_spec_protos(
        [
            {"name": "Size", "type": "numeric"},
            {"name": "Type", "type": "categorical", "categories": ["animal", "plant"], "required": False},
            v1.FeatureSpec(name="Picture", type="image", width=28, height=28, channels=1, required=True),
            {"name": "Grid", "type": "array", "dtype": "float32", "shape": [-1, 3]},
        ]
    )
    assert [feature_spec_message(feature_spec_record(s)) for s in specs] == specs
    assert feature_spec_record(specs[0]).required and not feature_spec_record(specs[1]).required
    assert feature_spec_record(specs[3]).shape == (-1, 3)
    with pytest.raises(UserError, match="unknown keys"):
        feature_spec_protos([{"name": "x", "kind": "numeric"}])
    values = feature_values(_feature_row())
    assert values["Size"] == 0.26 and values["Sound"] == "Miaow" and values["Type"] == {"animal": 1.0}
    assert values["Picture"].size == (2, 2) and values["Picture"].getpixel((0, 0)) == 7
    assert values["Grid"].dtype == np.int64 and values["Grid"].shape == (2, 3)
    assert feature_values(features_from_values({"Grid": values["Grid"], "Size": 0.26}))["Grid"].tolist() == [
        [0, 1, 2],
        [3, 4, 5],
    ]
    bad = v1.NDArray(dtype="float32", shape=[2, 2], data=b"\0" * 12)
    with pytest.raises(ValueError, match=r"needs 16 bytes, the data holds 12"):
        ndarray_to_numpy(bad)


def test_http_answers_are_strict_json_even_with_nan() -> None:
    """JSON has no NaN: a model's NaN or infinity is written as null, numbers keep their type."""
    import json

    from pellucid.server.engine.predict import Feature
    from pellucid.server.http.render import row_json

    row = row_json(
        [
            Feature("a", tensor=Tensor.from_numpy(np.array([1.5, np.nan, np.inf], dtype=np.float32))),
            Feature("b", tensor=Tensor.from_numpy(np.float64(np.nan))),
            Feature("c", tensor=Tensor.from_numpy(np.array([[1, 2]], dtype=np.int64))),
        ]
    )
    assert json.loads(json.dumps(row, allow_nan=False)) == {
        "a": {"shape": [3], "data": [1.5, None, None]},
        "b": None,
        "c": {"shape": [1, 2], "data": [1, 2]},
    }
