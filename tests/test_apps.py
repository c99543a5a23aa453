"""Apps and concepts through the SDK against a real server."""

from __future__ import annotations

import uuid

import grpc
import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.lister import Lister
from pellucid.client.user import User
from tests.conftest import RunningServer


def test_create_get_patch_delete(alice: User, unique: str) -> None:
    app = alice.create_app(
        f"app-{unique}", base_workflow="Universal", name="Photos", description="d", metadata={"team": "vision", "n": 1}
    )
    assert (app.app_info.name, app.app_info.base_workflow) == ("Photos", "Universal")
    assert app.app_info.created_at.seconds > 0
    fetched = alice.app(app.id)
    assert fetched.app_info == app.app_info

    merged = alice.patch_app(app.id, metadata={"n": 2, "extra": True}).app_info
    assert dict(merged.metadata) == {"team": "vision", "n": 2, "extra": True}
    removed = alice.patch_app(app.id, action="remove", metadata={"extra": None}).app_info
    assert dict(removed.metadata) == {"team": "vision", "n": 2}
    replaced = alice.patch_app(app.id, action="overwrite", metadata={"only": "this"}, name="Renamed").app_info
    assert dict(replaced.metadata) == {"only": "this"} and replaced.name == "Renamed"
    assert replaced.description == "d"

    alice.delete_app(app.id)
    with pytest.raises(errors.NotFound):
        alice.app(app.id)
    with pytest.raises(errors.NotFound):
        alice.delete_app(app.id)


def test_duplicate_app_id(alice: User, unique: str) -> None:
    alice.create_app(f"dup-{unique}", name="first")
    with pytest.raises(errors.AlreadyExists, match="already exists"):
        alice.create_app(f"dup-{unique}", name="second")
    assert alice.app(f"dup-{unique}").app_info.name == "first"


def test_exist_ok_returns_what_exists_so_a_script_can_run_again(alice: User, bob: User, unique: str) -> None:
    first = alice.create_app(f"again-{unique}", name="first", exist_ok=True)
    again = alice.create_app(f"again-{unique}", name="second", exist_ok=True)
    assert again.id == first.id and again.app_info.name == "first"  # returned as it is, not changed
    assert (
        first.create_dataset("d", description="one", exist_ok=True).id
        == again.create_dataset("d", description="two", exist_ok=True).id
        == "d"
    )
    assert again.dataset("d").dataset_info.description == "one"
    model = again.create_model("m", runner_labels=["cpu"], exist_ok=True)
    assert again.create_model("m", runner_labels=["gpu"], exist_ok=True).id == model.id
    assert (
        alice.create_runner(f"r-{unique}", ["cpu"], exist_ok=True).labels
        == alice.create_runner(f"r-{unique}", ["gpu"], exist_ok=True).labels
        == ["cpu"]
    )
    with pytest.raises(errors.AlreadyExists):
        again.create_dataset("d")
    bobs = bob.create_app(f"again-{unique}", exist_ok=True)  # ids are per user: bob gets his own
    assert bobs.app_info.user_id == bob.user_id


def test_bad_patch_arguments(alice: User, unique: str) -> None:
    alice.create_app(f"p-{unique}")
    with pytest.raises(errors.UserError, match="action"):
        alice.patch_app(f"p-{unique}", action="explode", name="x")
    with pytest.raises(errors.UserError, match="patch_app takes"):
        alice.patch_app(f"p-{unique}", colour="red")
    with pytest.raises(errors.UserError, match="patch_app takes"):
        alice.patch_app(f"p-{unique}")


def test_app_url_forms(alice: User, server: RunningServer, unique: str) -> None:
    alice.create_app(f"url-{unique}")
    pat = alice._connection.settings.pat
    for url in (f"{server.url}/{alice.user_id}/url-{unique}", f"{server.url}/{alice.user_id}/url-{unique}/"):
        app = App(url=url, pat=pat)
        assert (app.user_id, app.id) == (alice.user_id, f"url-{unique}")
        assert app.load_info().id == f"url-{unique}"
    with pytest.raises(errors.UserError, match="not both"):
        App(url=f"{server.url}/{alice.user_id}/x", app_id="x", pat=pat)


def test_delete_removes_the_apps_concepts(alice: User, unique: str) -> None:
    app = alice.create_app(f"gone-{unique}")
    app.create_concepts(["a", "b"])
    alice.delete_app(app.id)
    again = alice.create_app(f"gone-{unique}")
    assert list(again.list_concepts()) == []


class CountingEndpoint:
    def __init__(self, client: User) -> None:
        self.client = client
        self.requests: list = []

    def __call__(self, request):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return self.client._call(v1.AppServiceStub, "ListApps", request)


@pytest.fixture
def thirty_apps(alice: User) -> list[str]:
    ids = [f"a{i:02d}" for i in range(30)]
    for app_id in ids:
        alice.create_app(app_id)
    return ids


def test_listing_modes(alice: User, thirty_apps: list[str]) -> None:
    lister = Lister(page_size=16)
    data = {"user_id": alice.user_id}

    endpoint = CountingEndpoint(alice)
    page = [a.id for a in lister.list_pages_generator(endpoint, v1.ListAppsRequest, data, page_no=2)]
    assert page == thirty_apps[16:30] and len(endpoint.requests) == 1  # page 2 of 16

    endpoint = CountingEndpoint(alice)
    page = [a.id for a in lister.list_pages_generator(endpoint, v1.ListAppsRequest, data, page_no=3, per_page=7)]
    assert page == thirty_apps[14:21] and len(endpoint.requests) == 1

    endpoint = CountingEndpoint(alice)
    everything = [a.id for a in lister.list_pages_generator(endpoint, v1.ListAppsRequest, data, per_page=10)]
    assert everything == thirty_apps
    assert len(endpoint.requests) == 3  # 10 + 10 + 10, and no extra empty request

    endpoint = CountingEndpoint(alice)
    assert [a.id for a in lister.list_pages_generator(endpoint, v1.ListAppsRequest, data)] == thirty_apps
    assert len(endpoint.requests) == 1

    assert [a.id for a in alice.list_apps(page_no=1)] == thirty_apps[:16]
    assert [a.id for a in alice.list_apps(page_no=5, per_page=10)] == []
    assert isinstance(next(alice.list_apps()), App)


def test_list_filter(alice: User, thirty_apps: list[str]) -> None:
    assert [a.id for a in alice.list_apps(filter_by={"query": "A1"})] == [f"a1{i}" for i in range(10)]
    with pytest.raises(errors.UserError, match="cannot filter by"):
        list(alice.list_apps(filter_by={"colour": "red"}))


@pytest.mark.parametrize(("page_no", "per_page"), [(0, None), (-1, 5), (1, 0), (1, 1001), ("2", None)])
def test_bad_paging_arguments(alice: User, page_no, per_page) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.UserError):
        list(alice.list_apps(page_no=page_no, per_page=per_page))


def test_server_rejects_bad_page_tokens(alice: User) -> None:
    with pytest.raises(errors.InvalidArgument, match="next_page_token"):
        alice._call(v1.AppServiceStub, "ListApps", v1.ListAppsRequest(page_token="forged"))


def test_retried_mutation_applies_once(server: RunningServer, alice: User, unique: str) -> None:
    """A retry with the same request id returns the first answer instead of applying twice."""
    request_id = uuid.uuid4().hex
    pat = alice._connection.settings.pat
    with grpc.insecure_channel(server.server.address) as channel:
        stub = v1.AppServiceStub(channel)
        meta = [("authorization", f"Bearer {pat}")]
        create = v1.CreateAppRequest(app=v1.App(id=f"once-{unique}", name="n"), request_id=request_id)
        first = stub.CreateApp(create, timeout=5, metadata=meta)
        second = stub.CreateApp(create, timeout=5, metadata=meta)
        assert first == second
        delete = v1.DeleteAppRequest(app_id=f"once-{unique}", request_id=uuid.uuid4().hex)
        stub.DeleteApp(delete, timeout=5, metadata=meta)
        stub.DeleteApp(delete, timeout=5, metadata=meta)  # replayed: no NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:  # the same id for another call is refused
            stub.DeleteApp(v1.DeleteAppRequest(app_id="other", request_id=request_id), timeout=5, metadata=meta)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_failed_mutation_can_be_retried_with_its_request_id(server: RunningServer, alice: User, unique: str) -> None:
    request_id = uuid.uuid4().hex
    pat = alice._connection.settings.pat
    with grpc.insecure_channel(server.server.address) as channel:
        stub = v1.AppServiceStub(channel)
        meta = [("authorization", f"Bearer {pat}")]
        with pytest.raises(grpc.RpcError):
            stub.DeleteApp(
                v1.DeleteAppRequest(app_id=f"later-{unique}", request_id=request_id), timeout=5, metadata=meta
            )
        alice.create_app(f"later-{unique}")
        stub.DeleteApp(v1.DeleteAppRequest(app_id=f"later-{unique}", request_id=request_id), timeout=5, metadata=meta)
    with pytest.raises(errors.NotFound):
        alice.app(f"later-{unique}")


def test_concepts_batch_reports_each_item(alice: User, unique: str) -> None:
    app = alice.create_app(f"c-{unique}")
    assert [c.name for c in app.create_concepts(["cat", "dog"], labels=["Cat", "Dog"])] == ["Cat", "Dog"]
    with pytest.raises(errors.PartialFailure) as info:
        app.create_concepts(["cat", "bad id", "fox", "fox"])
    failure = info.value
    assert [c.id for c in failure.succeeded] == ["fox"]
    assert [(f.index, f.item_id, type(f.error)) for f in failure.failed] == [
        (0, "cat", errors.AlreadyExists),
        (1, "bad id", errors.InvalidArgument),
        (3, "fox", errors.AlreadyExists),
    ]
    assert [c.id for c in app.list_concepts()] == ["cat", "dog", "fox"]
    assert app.get_concept("dog").name == "Dog"
    with pytest.raises(errors.NotFound):
        app.get_concept("unicorn")


def test_concepts_are_chunked_by_the_sdk_and_bounded_by_the_server(alice: User, unique: str) -> None:
    app = alice.create_app(f"many-{unique}")
    ids = [f"k{i}" for i in range(300)]
    assert len(app.create_concepts(ids)) == 300
    assert [c.id for c in app.list_concepts(per_page=128)] == ids
    with pytest.raises(errors.InvalidArgument, match="at most 128"):
        app._call(
            v1.ConceptServiceStub,
            "CreateConcepts",
            v1.CreateConceptsRequest(app_id=app.id, concepts=[v1.Concept(id=f"z{i}") for i in range(129)]),
        )
    with pytest.raises(errors.UserError):
        app.create_concepts(["a", "b"], labels=["only one"])


def test_unknown_constructor_arguments_are_named(alice: User) -> None:
    with pytest.raises(errors.UserError, match=r"unknown arguments \['name'\].*create_app"):
        App(app_id="x", user_id=alice.user_id, name="n")
