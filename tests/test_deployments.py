"""Deployments: a model's declared features, the deployment resource and its tokens, and the
row checks that run before any model does."""

from __future__ import annotations

import pytest

from pellucid import errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.user import User


@pytest.fixture
def app(alice: User, unique: str) -> App:
    return alice.create_app(f"deploy-{unique}")


def test_a_model_declares_its_features_at_creation(app: App) -> None:
    model = app.create_model(
        "tabular",
        runner_labels=["cpu"],
        input_specs=[
            {"name": "Size", "type": "numeric"},
            {"name": "Type", "type": "categorical", "categories": ["animal", "plant"], "required": False},
            v1.FeatureSpec(name="Picture", type="image", width=28, height=28, channels=1, required=True),
        ],
        output_specs=[{"name": "Grid", "type": "array", "dtype": "float32", "shape": [-1, 3]}],
    )
    for info in (model.model_info, app.model("tabular").model_info):
        assert info is not None
        assert [(s.name, s.type, s.required) for s in info.input_specs] == [
            ("Size", "numeric", True),
            ("Type", "categorical", False),
            ("Picture", "image", True),
        ]
        assert list(info.input_specs[1].categories) == ["animal", "plant"] and info.input_specs[2].width == 28
        assert list(info.output_specs[0].shape) == [-1, 3] and info.output_specs[0].dtype == "float32"
    bad_specs = [
        ([{"name": "x", "type": "vector"}], "use one of numeric"),
        ([{"name": "x", "type": "categorical"}], "needs its categories"),
        ([{"name": "x", "type": "numeric"}, {"name": "x", "type": "text"}], "given twice"),
        ([{"name": "x", "type": "array", "dtype": "floaty"}], "unknown dtype"),
        ([{"name": "x", "type": "text", "shape": [3]}], "only array features"),
    ]
    for specs, message in bad_specs:
        with pytest.raises(errors.InvalidArgument, match=message):
            app.create_model("bad", input_specs=specs)
