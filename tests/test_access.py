"""Every RPC needs a valid token; a user's PAT never reaches another user's apps."""

from __future__ import annotations

import importlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.user import User
from tests.conftest import RunningServer


def all_methods() -> list[tuple[str, str, type, type]]:
    found = []
    for path in sorted((Path(v1.__file__).parent).glob("*_pb2.py")):
        module = importlib.import_module(f"pellucid.api.v1.{path.stem}")
        for service in module.DESCRIPTOR.services_by_name.values():
            stub = getattr(v1, f"{service.name}Stub")
            for method in service.methods:
                request = getattr(v1, method.input_type.name)
                found.append((service.name, method.name, stub, request))
    return found


def call_any(callable_, method_descriptor_streams: tuple[bool, bool], request, **kwargs):  # type: ignore[no-untyped-def]
    client_streams, server_streams = method_descriptor_streams
    result = callable_(iter([request]) if client_streams else request, **kwargs)
    return list(result) if server_streams else result


def streaming(service: str, method: str) -> tuple[bool, bool]:
    for path in sorted((Path(v1.__file__).parent).glob("*_pb2.py")):
        module = importlib.import_module(f"pellucid.api.v1.{path.stem}")
        if service in module.DESCRIPTOR.services_by_name:
            m = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
            return m.client_streaming, m.server_streaming
    raise KeyError(method)


@pytest.mark.parametrize(
    ("service", "method", "stub", "request_type"), all_methods(), ids=lambda x: x if isinstance(x, str) else ""
)
@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic abc"])
def test_every_rpc_refuses_calls_without_a_valid_token(
    server: RunningServer, service: str, method: str, stub: type, request_type: type, header: str | None
) -> None:
    with grpc.insecure_channel(server.server.address) as channel:
        metadata = [("authorization", header)] if header else []
        with pytest.raises(grpc.RpcError) as info:
            call_any(
                getattr(stub(channel), method), streaming(service, method), request_type(), timeout=5, metadata=metadata
            )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token(server: RunningServer) -> None:
    with grpc.insecure_channel(server.server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def alices_app(alice: User, unique: str):  # type: ignore[no-untyped-def]
    app = alice.create_app(f"private-{unique}", metadata={"secret": "yes"})
    app.create_concepts(["c1"])
    return app


def assert_untouched(alice: User, app_id: str) -> None:
    app = alice.app(app_id)
    assert dict(app.app_info.metadata) == {"secret": "yes"}
    assert [c.id for c in app.list_concepts()] == ["c1"]


def test_other_user_cannot_read_an_app(alice: User, bob: User, alices_app) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.NotFound) as info:
        User(user_id=alice.user_id, **bob_kwargs(bob)).app(alices_app.id)
    missing = pytest.raises(errors.NotFound)
    with missing as absent:
        User(user_id=alice.user_id, **bob_kwargs(bob)).app("no-such-app")
    # the same answer whether or not the app exists: nothing leaks
    assert info.value.message.replace(alices_app.id, "X") == absent.value.message.replace("no-such-app", "X")
    assert_untouched(alice, alices_app.id)


def bob_kwargs(bob: User) -> dict:
    return {"base_url": bob.base_url, "pat": bob._connection.settings.pat}


def test_other_user_cannot_list_apps(alice: User, bob: User, alices_app) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.PermissionDenied):
        list(User(user_id=alice.user_id, **bob_kwargs(bob)).list_apps())
    assert alices_app.id not in [a.id for a in bob.list_apps()]


def test_other_user_cannot_create_in_the_namespace(alice: User, bob: User) -> None:
    with pytest.raises(errors.PermissionDenied):
        User(user_id=alice.user_id, **bob_kwargs(bob)).create_app("intruder")
    assert "intruder" not in [a.id for a in alice.list_apps()]


def test_other_user_cannot_patch(alice: User, bob: User, alices_app) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.NotFound):
        User(user_id=alice.user_id, **bob_kwargs(bob)).patch_app(alices_app.id, action="overwrite", metadata={})
    assert_untouched(alice, alices_app.id)


def test_other_user_cannot_delete(alice: User, bob: User, alices_app) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.NotFound):
        User(user_id=alice.user_id, **bob_kwargs(bob)).delete_app(alices_app.id)
    assert_untouched(alice, alices_app.id)


def test_other_user_cannot_touch_concepts(alice: User, bob: User, alices_app) -> None:  # type: ignore[no-untyped-def]
    from pellucid.client.app import App

    intruder = App(app_id=alices_app.id, user_id=alice.user_id, **bob_kwargs(bob))
    with pytest.raises(errors.NotFound):
        intruder.create_concepts(["evil"])
    with pytest.raises(errors.NotFound):
        list(intruder.list_concepts())
    with pytest.raises(errors.NotFound):
        intruder.get_concept("c1")
    assert_untouched(alice, alices_app.id)


def test_same_app_id_in_two_namespaces_is_two_apps(alice: User, bob: User, unique: str) -> None:
    alice.create_app(f"shared-{unique}", name="alice's")
    bob.create_app(f"shared-{unique}", name="bob's")
    assert alice.app(f"shared-{unique}").app_info.name == "alice's"
    assert bob.app(f"shared-{unique}").app_info.name == "bob's"


def test_users_and_tokens_are_admin_or_self_only(alice: User, bob: User) -> None:
    with pytest.raises(errors.PermissionDenied, match="only admins"):
        alice.create_user("mallory")
    with pytest.raises(errors.PermissionDenied):
        list(alice.list_users())
    as_alice_on_bob = User(user_id=bob.user_id, **bob_kwargs(alice))
    with pytest.raises(errors.PermissionDenied):
        as_alice_on_bob.get_user_info()
    with pytest.raises(errors.PermissionDenied):
        as_alice_on_bob.create_pat()
    with pytest.raises(errors.PermissionDenied):
        list(as_alice_on_bob.list_pats())
    bobs_pat = next(bob.list_pats())
    with pytest.raises(errors.PermissionDenied):
        as_alice_on_bob.revoke_pat(bobs_pat.id)
    assert bob.get_user_info().id == bob.user_id  # bob's token still works


def test_admin_manages_other_users_tokens(admin: User, alice: User) -> None:
    as_admin_on_alice = User(user_id=alice.user_id, **bob_kwargs(admin))
    new = as_admin_on_alice.create_pat(description="made by admin")
    assert new.token.user_id == alice.user_id
    assert User(base_url=alice.base_url, pat=new.secret).get_user_info().id == alice.user_id
    as_admin_on_alice.revoke_pat(new.token.id)
    with pytest.raises(errors.Unauthenticated):
        User(base_url=alice.base_url, pat=new.secret).get_user_info()


@pytest.mark.parametrize("bad", ["", "x" * 129, "has space", "semi;colon", "-dash-first"])
def test_bad_ids_are_invalid_argument(alice: User, bad: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        alice.create_app(bad)
    assert "A-Z a-z 0-9 _ -" in info.value.message
    assert info.value.details["field"] == "app_id"
    if bad:
        with pytest.raises(errors.InvalidArgument):
            alice.app(bad)
