"""The gRPC translators of predicts: a proto through the engine's types and back is unchanged."""

from __future__ import annotations

from pellucid.api import v1
from pellucid.server.engine.predict import Media, OutputCode
from pellucid.server.grpc.translate.models import input_message, output_message, output_record, predict_input


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
