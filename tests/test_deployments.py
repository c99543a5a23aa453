"""Deployments: a model's declared features, the deployment resource and its tokens, and the
row checks that run before any model does."""

from __future__ import annotations

import pytest

from pellucid import errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.user import User
from pellucid.server.engine.errors import Unauthenticated
from tests.conftest import RunningServer


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


def test_deployments_take_the_models_specs_or_their_own_and_belong_to_their_owner(
    app: App, bob: User, unique: str
) -> None:
    app.create_model(
        "tabular",
        input_specs=[{"name": "Size", "type": "numeric"}],
        output_specs=[{"name": "Score", "type": "numeric"}],
    )
    default = app.create_deployment(f"d-{unique}", model_id="tabular")
    assert [s.name for s in default.info.input_specs] == ["Size"] and default.enabled
    assert default.url == ""  # this server has no HTTP port: nowhere to post yet
    custom = app.create_deployment(
        f"c-{unique}",
        model_id="tabular",
        feature_specs={"input": [{"name": "Colour", "type": "categorical", "categories": ["red", "blue"]}]},
        enabled=False,
        description="colours",
    )
    assert [s.name for s in custom.info.input_specs] == ["Colour"] and not custom.enabled
    assert [s.name for s in custom.info.output_specs] == ["Score"]  # not given: the model's
    pinned = app.create_deployment(f"v-{unique}", "tabular", app.model("tabular").version_id)
    assert pinned.info.version_id == app.model("tabular").version_id and pinned.info.model_id == "tabular"
    with pytest.raises(errors.NotFound):
        app.create_deployment(f"x-{unique}", "tabular", "no-such-version")
    pinned.delete()
    assert [d.id for d in app.list_deployments()] == [f"d-{unique}", f"c-{unique}"]
    assert app.deployment(f"c-{unique}").info.description == "colours"
    app.enable_deployment(f"c-{unique}")
    assert app.deployment(f"c-{unique}").enabled

    bobs = bob.create_app(f"b-{unique}")
    bobs.create_model("tabular", input_specs=[{"name": "Size", "type": "numeric"}])
    with pytest.raises(errors.AlreadyExists, match="shared by all users"):
        bobs.create_deployment(f"d-{unique}", model_id="tabular")
    with pytest.raises(errors.NotFound):  # another user's deployment is not there for bob
        bob.create_app(f"b2-{unique}").deployment(f"d-{unique}")
    with pytest.raises(errors.NotFound, match="workflow 'wf' not found"):
        app.create_deployment(f"w-{unique}", workflow_id="wf")
    with pytest.raises(errors.InvalidArgument, match="neither was given: send model_id"):
        app.create_deployment(f"w-{unique}")
    with pytest.raises(errors.NotFound):
        app.create_deployment(f"m-{unique}", model_id="missing")
    app.create_model("plain")
    with pytest.raises(errors.InvalidArgument, match="declares no input features"):
        app.create_deployment(f"p-{unique}", model_id="plain")
    with pytest.raises(errors.InvalidArgument, match="is not valid"):
        app.create_deployment("bad id!", model_id="tabular")

    token, secret = default.create_token("ci")
    assert secret.startswith("pel_dep_") and [t.id for t in default.list_tokens()] == [token.id]
    revoked = default.revoke_token(token.id)
    assert revoked.HasField("revoked_at") and default.list_tokens() == []
    assert [t.id for t in default.list_tokens(include_revoked=True)] == [token.id]
    app.delete_deployment(f"c-{unique}")
    assert [d.id for d in app.list_deployments()] == [f"d-{unique}"]
    with pytest.raises(errors.NotFound):
        app.deployment(f"c-{unique}")


def test_retried_creations_answer_as_the_first_did(app: App, unique: str, server: RunningServer) -> None:
    """A CreateDeployment retried with its request id gets the stored answer; a retried
    CreateDeploymentToken the same token with a new secret (the server never kept the first)."""
    app.create_model("tabular", input_specs=[{"name": "Size", "type": "numeric"}])
    request = v1.CreateDeploymentRequest(
        app_id=app.id, deployment_id=f"r-{unique}", model_id="tabular", request_id=f"req-{unique}"
    )
    first = app._call(v1.DeploymentServiceStub, "CreateDeployment", request)
    assert app._call(v1.DeploymentServiceStub, "CreateDeployment", request) == first
    mint = v1.CreateDeploymentTokenRequest(deployment_id=f"r-{unique}", request_id=f"tok-{unique}")
    one = app._call(v1.DeploymentServiceStub, "CreateDeploymentToken", mint)
    two = app._call(v1.DeploymentServiceStub, "CreateDeploymentToken", mint)
    assert one.token.id == two.token.id and one.secret != two.secret
    deployments = server.server.engine.deployments  # type: ignore[union-attr]
    assert deployments.authenticate(two.secret).deployment_id == f"r-{unique}"
    with pytest.raises(Unauthenticated):  # only the secret of the last answer is valid
        deployments.authenticate(one.secret)
    assert [t.id for t in app.deployment(f"r-{unique}").list_tokens()] == [one.token.id]
