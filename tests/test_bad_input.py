"""Bad input gets a clear error naming what to fix, never INTERNAL (issue #8)."""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from pellucid import errors
from pellucid.api import v1
from pellucid.client.config import resolve_settings
from pellucid.client.input import Inputs
from pellucid.client.user import User
from pellucid.server.engine.users import PAT_MAX_TTL
from pellucid.server.engine.validation import MAX_METADATA_DEPTH
from pellucid.server.grpc.convert import to_timestamp
from pellucid.server.storage.sqlite import SqliteMetadataStore
from pellucid.server.storage.sqlite_schema import MIGRATIONS
from tests.conftest import RunningServer
from tests.media_samples import png
from tests.raw_calls import RawClient, find_method, message_class, pellucid_methods


@dataclass
class Caller:
    user_id: str
    secret: str
    raw: RawClient
    sdk: User
    app_id: str

    def call(self, name: str, request: Any, **kwargs: Any) -> Any:
        return self.raw.call(find_method(name), request, **kwargs)

    def fails(self, name: str, request: Any, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
        with pytest.raises(grpc.RpcError) as info:
            self.call(name, request)
        assert info.value.code() == code, info.value.details()
        return info.value.details()


@pytest.fixture
def caller(server: RunningServer, admin: User) -> Iterator[Caller]:
    created = admin.create_user(f"bad-{uuid.uuid4().hex[:8]}")
    secret = created.pat.secret
    raw = RawClient(server.server.address, f"Bearer {secret}")
    sdk = server.client(secret, user_id=created.user.id)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    sdk.create_app(app_id)
    yield Caller(created.user.id, secret, raw, sdk, app_id)
    raw.close()


def struct(data: dict[str, Any]) -> Struct:
    s = Struct()
    s.update(data)
    return s


def nested(depth: int) -> dict[str, Any]:
    """A dict `depth` objects deep."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def text_input(text: str, metadata: dict[str, Any] | None = None, input_id: str = "") -> v1.Input:
    return v1.Input(id=input_id, data=v1.Data(text=v1.Text(raw=text), metadata=struct(metadata or {})))


# 1. NaN and Infinity, in every Struct the API takes


def _struct_requests(c: Caller, bad: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    s = struct(bad)
    version = v1.ModelVersion(output_info=v1.OutputInfo(params=s))
    return {
        "app.metadata": ("CreateApp", v1.CreateAppRequest(app=v1.App(id=f"x{uuid.uuid4().hex[:6]}", metadata=s))),
        "patch app.metadata": (
            "PatchApp",
            v1.PatchAppRequest(app=v1.App(id=c.app_id, metadata=s), update_mask={"paths": ["metadata"]}),
        ),
        "user.metadata": ("CreateUser", v1.CreateUserRequest(user_id=f"u{uuid.uuid4().hex[:6]}", metadata=s)),
        "dataset.metadata": (
            "CreateDataset",
            v1.CreateDatasetRequest(app_id=c.app_id, dataset=v1.Dataset(id=f"d{uuid.uuid4().hex[:6]}", metadata=s)),
        ),
        "dataset version metadata": (
            "CreateDatasetVersion",
            v1.CreateDatasetVersionRequest(app_id=c.app_id, dataset_id="ds", metadata=s),
        ),
        "model version params": (
            "CreateModel",
            v1.CreateModelRequest(app_id=c.app_id, model=v1.Model(id=f"m{uuid.uuid4().hex[:6]}"), version=version),
        ),
        "model version metadata": (
            "CreateModelVersion",
            v1.CreateModelVersionRequest(app_id=c.app_id, model_id="m", version=v1.ModelVersion(metadata=s)),
        ),
        "inference_params": (
            "PostModelOutputs",
            v1.PostModelOutputsRequest(app_id=c.app_id, model_id="m", inputs=[text_input("hi")], inference_params=s),
        ),
        "predict input metadata": (
            "PostModelOutputs",
            v1.PostModelOutputsRequest(app_id=c.app_id, model_id="m", inputs=[text_input("hi", bad)]),
        ),
        "search filter metadata": (
            "PostInputsSearches",
            v1.PostInputsSearchesRequest(app_id=c.app_id, query=v1.Query(filters=[v1.Filter(metadata=s)])),
        ),
        "search rank metadata": (
            "PostInputsSearches",
            v1.PostInputsSearchesRequest(app_id=c.app_id, query=v1.Query(ranks=[v1.Rank(metadata=s)])),
        ),
    }


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_in_every_struct(caller: Caller, number: float) -> None:
    caller.sdk.app(caller.app_id).create_dataset("ds")
    caller.sdk.app(caller.app_id).create_model("m")  # no runner needed: the check comes first
    for where, (method, request) in _struct_requests(caller, {"ok": 1, "deep": {"score": number}}).items():
        if method == "CreateUser":  # admins only: checked with the admin's token below
            continue
        message = caller.fails(method, request)
        assert ".deep.score" in message and "finite" in message, (where, message)


def test_nul_characters_are_refused_in_structs(caller: Caller) -> None:
    """JSONB (PostgreSQL's metadata column, which metadata filters search) cannot hold U+0000."""
    caller.sdk.app(caller.app_id).create_dataset("ds")
    caller.sdk.app(caller.app_id).create_model("m")
    requests = _struct_requests(caller, {"ok": 1, "deep": {"s": "a\x00b"}})
    for where in ("dataset.metadata", "predict input metadata"):
        message = caller.fails(*requests[where])
        assert ".deep.s" in message and "NUL" in message, (where, message)


def test_non_finite_user_metadata_from_an_admin(server: RunningServer) -> None:
    raw = RawClient(server.server.address, f"Bearer {server.admin_pat}")
    try:
        with pytest.raises(grpc.RpcError) as info:
            raw.call(
                find_method("CreateUser"),
                v1.CreateUserRequest(user_id=f"u{uuid.uuid4().hex[:6]}", metadata=struct({"x": [1, math.nan]})),
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "metadata.x[1] is nan" in info.value.details()
    finally:
        raw.close()


def test_a_nan_item_fails_alone_in_a_batch(caller: Caller) -> None:
    request = v1.PostInputsRequest(
        app_id=caller.app_id,
        inputs=[
            text_input("first", {"n": 1}, "first"),
            text_input("second", {"n": math.nan}, "second"),
            text_input("third", {"n": 3}, "third"),
        ],
    )
    response = caller.call("PostInputs", request)
    assert [r.status.code for r in response.results] == [v1.Status.OK, v1.Status.INVALID_ARGUMENT, v1.Status.OK]
    assert "data.metadata.n is nan" in response.results[1].status.message
    ids = {i.id for i in caller.sdk.app(caller.app_id).inputs().list_inputs()}
    assert ids == {"first", "third"}


# 2. Nesting: refused by the engine past MAX_METADATA_DEPTH, and a request too deep to decode


def test_metadata_nested_past_the_limit(caller: Caller) -> None:
    app = caller.sdk.app(caller.app_id)
    app.create_dataset("fine", metadata=nested(MAX_METADATA_DEPTH))
    message = caller.fails(
        "CreateDataset",
        v1.CreateDatasetRequest(
            app_id=caller.app_id, dataset=v1.Dataset(id="deep", metadata=struct(nested(MAX_METADATA_DEPTH + 1)))
        ),
    )
    assert f"more than {MAX_METADATA_DEPTH} levels" in message and "dataset" not in [d.id for d in app.list_datasets()]


def test_a_request_too_deep_to_decode_is_invalid_argument(caller: Caller) -> None:
    # a Struct nested far past protobuf's recursion limit (the SDK cannot even build one), spliced in by hand
    value = b"\x08\x00"  # Value{null_value}
    for _ in range(120):
        value = _field(6, _field(1, value))  # Value.list_value(6) -> ListValue.values(1)
    metadata = _field(1, _field(1, b"k") + _field(2, value))  # Struct.fields(1): map entry key(1), value(2)
    valid = v1.PostInputsRequest(app_id=caller.app_id, inputs=[text_input("x")]).SerializeToString()
    request = valid + _field(3, _field(2, _field(6, metadata)))  # inputs(3) -> Input.data(2) -> Data.metadata(6)
    message = caller.fails("PostInputs", request)
    assert "could not be decoded" in message and "too deeply" in message


def test_garbage_bytes_are_invalid_argument_on_unary_and_stream_calls(caller: Caller) -> None:
    assert "could not be decoded" in caller.fails("CreateApp", b"\xff\xff\xff\xff")
    first = v1.BlobChunk(app_id=caller.app_id, data=b"abc").SerializeToString()
    assert "could not be decoded" in caller.fails("UploadBlob", [first, b"\xff\xff\xff"])


def test_unauthenticated_garbage_still_gets_unauthenticated(server: RunningServer) -> None:
    raw = RawClient(server.server.address, None)
    try:
        with pytest.raises(grpc.RpcError) as info:
            raw.call(find_method("CreateApp"), b"\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        raw.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# 3. PAT lifetimes


def test_pat_ttl_past_the_bound_is_refused_before_anything_is_stored(caller: Caller) -> None:
    before = [t.id for t in caller.sdk.list_pats(include_inactive=True)]
    for ttl in (PAT_MAX_TTL + 1, 2**62, 2**63 - 1):
        message = caller.fails("CreatePat", v1.CreatePatRequest(ttl_seconds=ttl, request_id=f"r{ttl}"))
        assert "366 days" in message and str(PAT_MAX_TTL) in message
    assert [t.id for t in caller.sdk.list_pats(include_inactive=True)] == before
    longest = caller.sdk.create_pat(ttl_seconds=PAT_MAX_TTL).token
    assert longest.expires_at.seconds - longest.created_at.seconds in (PAT_MAX_TTL, PAT_MAX_TTL - 1)
    assert not caller.sdk.create_pat(ttl_seconds=0).token.HasField("expires_at")  # "never", minted with a PAT


def test_a_session_cannot_mint_a_token_that_outlives_it(server: RunningServer, caller: Caller) -> None:
    session = caller.sdk.create_session(ttl_seconds=600)
    as_session = User(base_url=server.url, token=session.secret)
    for ttl in (0, 300, 3600):  # even a short PAT: it could mint a never-expiring one in turn
        with pytest.raises(errors.PermissionDenied, match="session token cannot create PATs") as info:
            as_session.create_pat(ttl_seconds=ttl)
        assert "call with a PAT" in str(info.value)
    assert not [t for t in caller.sdk.list_pats(include_inactive=True) if t.description == "from a session"]
    with pytest.raises(errors.InvalidArgument, match="outlive the session"):
        as_session.create_session(ttl_seconds=3600)
    child = as_session.create_session().token  # the default lifetime ends with the parent session
    assert child.expires_at.seconds <= session.token.expires_at.seconds
    assert as_session.create_session(ttl_seconds=60).token.expires_at.seconds <= session.token.expires_at.seconds
    assert User(base_url=server.url, pat=caller.secret).create_pat(ttl_seconds=3600).token.expires_at.seconds


def test_an_admin_session_cannot_create_users(server: RunningServer, admin: User) -> None:
    as_session = User(base_url=server.url, token=admin.create_session(ttl_seconds=60).secret)
    with pytest.raises(errors.PermissionDenied, match="session token cannot create users"):
        as_session.create_user(f"u{uuid.uuid4().hex[:6]}")


def test_migration_5_repairs_pats_that_broke_listing(tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite3"
    with sqlite3.connect(path) as conn:  # a store as version 4 left it, with a row made by the old CreatePat
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL)")
        for version, script in MIGRATIONS:
            if version <= 4:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
        now = time.time()
        conn.execute("INSERT INTO users (id, is_admin, metadata, created_at) VALUES ('u', 0, '{}', ?)", (now,))
        rows = [("huge", now + 2**62), ("fine", now + 3600), ("never", None)]
        for token_id, expires in rows:
            conn.execute(
                "INSERT INTO tokens (id, user_id, kind, description, token_hash, created_at, expires_at) "
                "VALUES (?, 'u', 'pat', '', ?, ?, ?)",
                (token_id, token_id, now, expires),
            )
    with pytest.raises(ValueError):
        to_timestamp(now + 2**62)  # what failed every ListPats of that user
    store = SqliteMetadataStore(path)
    try:
        assert store.schema_version() >= 5
        expiry = {t.id: t.expires_at for t in store.list_tokens("u", "pat", True, now, _all()).items}
        assert expiry["huge"] == pytest.approx(now + PAT_MAX_TTL)
        assert expiry["fine"] == pytest.approx(now + 3600) and expiry["never"] is None
        for value in expiry.values():
            to_timestamp(value)
    finally:
        store.close()


def _all() -> Any:
    from pellucid.server.records import PageQuery

    return PageQuery(limit=100)


# 4. Tampered page tokens, on every List RPC


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


TAMPERED_TOKENS = [
    _b64(json.dumps({"a": 2**80, "s": "x"}).encode()),
    _b64(json.dumps({"a": -1, "s": "x"}).encode()),
    _b64(json.dumps({"a": "12", "s": "x"}).encode()),
    _b64(json.dumps({"a": 1.5, "s": "x"}).encode()),
    _b64(json.dumps({"a": True, "s": "x"}).encode()),
    _b64(json.dumps({"a": [1], "s": "x"}).encode()),
    _b64(json.dumps({"a": None, "s": "x"}).encode()),
    _b64(json.dumps({"a": 1, "s": 5}).encode()),
    _b64(json.dumps({"a": 1, "s": None}).encode()),
    _b64(b'{"a": 1e400, "s": "x"}'),
    _b64(b'{"a": NaN, "s": "x"}'),
    _b64(json.dumps([1, 2]).encode()),
    _b64(json.dumps("string").encode()),
    _b64(b"[" * 5000 + b"]" * 5000),
    _b64(b'{"a": ' + b"9" * 5000 + b', "s": "x"}'),
    _b64(b"\xff\xfe not utf-8"),
    "not base64 at all!!",
    "é" * 10,
    "A" * 100_000,
    "====",
]


def _list_request(c: Caller, method: Any, token: str) -> Any:
    request = message_class(method.input_type)(page_token=token)
    ids = {
        "app_id": c.app_id,
        "model_id": "clusters" if method.name == "ListClusterAssignments" else "m",
        "dataset_id": "ds",
        "user_id": c.user_id,
        "module_id": "mod",
        "workflow_id": "wf",
        "algorithm": f"{c.user_id}/algo",
        "path": "data://.my/",
    }
    for name, value in ids.items():
        if name in method.input_type.fields_by_name:
            setattr(request, name, value)
    return request


def _listable(c: Caller) -> None:
    """Something for each List RPC to list: a dataset, model, module, workflow, algorithm and trained clusterer."""
    app = c.sdk.app(c.app_id)
    app.create_dataset("ds")
    app.create_model("m")
    c.call("CreateModule", v1.CreateModuleRequest(app_id=c.app_id, module=v1.Module(id="mod")))
    node = v1.WorkflowNode(id="n", model=v1.Model(id="thr", model_type_id="concept-thresholder"))
    c.call("PostWorkflows", v1.PostWorkflowsRequest(app_id=c.app_id, workflows=[v1.Workflow(id="wf", nodes=[node])]))
    c.call("PublishAlgorithm", v1.PublishAlgorithmRequest(app_id=c.app_id, model_id="m", name="algo"))
    texts = ["cats purr", "kittens purr", "taxes are due", "file your taxes"]
    app.inputs().upload_inputs(
        [Inputs.get_text_input(f"t{i}", text, dataset_id="ds") for i, text in enumerate(texts)], show_log=False
    )
    clusters = app.create_model("clusters", model_type_id="clusterer")
    clusters.update_params(dataset_id="ds", num_clusters=2)
    assert clusters.wait_for_training(clusters.train(), timeout=120)["state"] == "trained"


def test_tampered_page_tokens_on_every_list_rpc(server: RunningServer, caller: Caller) -> None:
    _listable(caller)
    list_methods = [m for m in pellucid_methods() if m.name.startswith("List")]
    assert len(list_methods) >= 10
    admin = RawClient(server.server.address, f"Bearer {server.admin_pat}")
    foreign = _other_listing_tokens(caller)
    try:
        for method in list_methods:
            client = admin if method.name == "ListUsers" else caller.raw
            first = client.call(method, _list_request(caller, method, ""))  # a valid listing of this kind
            assert first is not None
            others = [token for name, token in foreign.items() if name != method.name]
            for token in [*TAMPERED_TOKENS, *others]:
                with pytest.raises(grpc.RpcError) as info:
                    client.call(method, _list_request(caller, method, token))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                    method.name,
                    token[:40],
                    info.value.details(),
                )
                assert "page_token" in info.value.details()
    finally:
        admin.close()


def _other_listing_tokens(c: Caller) -> dict[str, str]:
    """Genuine next_page_tokens of two listings, to be refused by every other listing."""
    c.sdk.app(c.app_id).create_concepts(["c1", "c2"])
    c.sdk.app(c.app_id).create_dataset("ds2")
    tokens = {
        "ListConcepts": c.call("ListConcepts", v1.ListConceptsRequest(app_id=c.app_id, page_size=1)).next_page_token,
        "ListDatasets": c.call("ListDatasets", v1.ListDatasetsRequest(app_id=c.app_id, page_size=1)).next_page_token,
    }
    assert all(tokens.values())
    return tokens


# 5. Tokens with whitespace, and malformed authorization headers


def test_surrounding_whitespace_is_stripped_from_a_pat(server: RunningServer, caller: Caller, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(caller.secret + "\n")
    assert User(base_url=server.url, pat=token_file.read_text()).get_user_info().id == caller.user_id
    assert User(base_url=server.url, pat=f"  {caller.secret}\r\n").get_user_info().id == caller.user_id


@pytest.mark.parametrize(
    ("pat", "what"),
    [
        ("pel_pat_ab cd", "a space at character 11"),
        ("pel_pat_ab\ncd", "a line break"),
        ("pel_pat_ab\x00cd", "control character"),
        ("pel_pat_\u00e9t\u00e9", "non-ASCII character"),
    ],
)
def test_a_pat_with_inner_junk_is_refused_by_the_client(server: RunningServer, pat: str, what: str) -> None:
    with pytest.raises(errors.UserError, match=what) as info:
        User(base_url=server.url, pat=pat).get_user_info()
    assert pat not in str(info.value)
    with pytest.raises(errors.UserError, match="session token"):
        resolve_settings(server.url, token="ses sion")


# (gRPC itself will not send control characters or non-ASCII in a header: the client check covers those)
@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer pel_pat_a b", "pel_pat_no_scheme x", "Bearer " + "x" * 600]
)
def test_a_malformed_authorization_header_is_unauthenticated(server: RunningServer, header: str) -> None:
    raw = RawClient(server.server.address, header)
    try:
        with pytest.raises(grpc.RpcError) as info:
            raw.call(find_method("GetUser"), v1.GetUserRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "malformed" in info.value.details() and "Bearer <token>" in info.value.details()
    finally:
        raw.close()


# 6. Inputs a model does not read


def test_an_input_type_the_model_does_not_read_is_refused(caller: Caller) -> None:
    app = caller.sdk.app(caller.app_id)
    app.create_model("reader", input_fields=["text"])  # no runner: refused before routing, at once
    image = v1.Input(data=v1.Data(image=v1.Image(base64=png("x"))))
    message = caller.fails(
        "PostModelOutputs",
        v1.PostModelOutputsRequest(app_id=caller.app_id, model_id="reader", inputs=[text_input("fine"), image]),
    )
    assert "inputs[1] holds image" in message and "reads only text" in message
    assert "no content" in caller.fails(
        "PostModelOutputs", v1.PostModelOutputsRequest(app_id=caller.app_id, model_id="reader", inputs=[v1.Input()])
    )
    with pytest.raises(errors.InvalidArgument, match="input_fields"):
        app.model("reader").predict_by_bytes(png("y"), "image")


# 7. The services of issue #11 (training, workflows, modules, algorithms, hosted data)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_training_params_are_invalid_argument(caller: Caller, number: float) -> None:
    caller.sdk.app(caller.app_id).create_dataset("ds")
    caller.call(
        "CreateModel",
        v1.CreateModelRequest(app_id=caller.app_id, model=v1.Model(id="clf", model_type_id="embedding-classifier")),
    )
    for name in ("epochs", "learning_rate"):  # an int param and a float one
        params = struct({"dataset_id": "ds", name: number})
        train = v1.TrainRequest(app_id=caller.app_id, model_id="clf", params=params, request_id=uuid.uuid4().hex)
        assert f"params.{name} must be a finite number" in caller.fails("Train", train)
        get = v1.GetTrainingParamsRequest(app_id=caller.app_id, model_id="clf", params=params)
        assert f"params.{name} must be a finite number" in caller.fails("GetTrainingParams", get)


def test_training_params_naming_ids_are_checked_as_ids(caller: Caller) -> None:
    caller.sdk.app(caller.app_id).create_dataset("ds")
    caller.call(
        "CreateModel",
        v1.CreateModelRequest(app_id=caller.app_id, model=v1.Model(id="clf", model_type_id="embedding-classifier")),
    )
    for params in (
        {"dataset_id": "a\x00b"},
        {"dataset_id": "../other-app/ds"},
        {"dataset_id": "ds", "dataset_version_id": "x" * 100_000},
        {"dataset_id": "ds", "embedder": "../../bob/app/text"},
    ):
        train = v1.TrainRequest(
            app_id=caller.app_id, model_id="clf", params=struct(params), request_id=uuid.uuid4().hex
        )
        message = caller.fails("Train", train)
        assert "use 1-128 characters" in message, (params, message)


def test_an_error_quoting_a_huge_value_still_reaches_the_client(caller: Caller) -> None:
    """The message is cut to fit gRPC's metadata limit, rather than the call ending in "Stream removed"."""
    caller.call(
        "CreateModel",
        v1.CreateModelRequest(app_id=caller.app_id, model=v1.Model(id="clf", model_type_id="embedding-classifier")),
    )
    params = struct({"é" * 20_000: 1})  # an unknown param: the error names it, and the field holds it
    message = caller.fails(
        "GetTrainingParams", v1.GetTrainingParamsRequest(app_id=caller.app_id, model_id="clf", params=params)
    )
    assert "unknown param" in message and "more characters)" in message and len(message.encode()) <= 2048


def test_cluster_assignments_check_their_input_ids(caller: Caller) -> None:
    caller.call(
        "CreateModel", v1.CreateModelRequest(app_id=caller.app_id, model=v1.Model(id="k", model_type_id="clusterer"))
    )
    listing = v1.ListClusterAssignmentsRequest(app_id=caller.app_id, model_id="k", input_ids=["a\x00b"])
    assert "input_ids[0]" in caller.fails("ListClusterAssignments", listing)
    listing = v1.ListClusterAssignmentsRequest(app_id=caller.app_id, model_id="k", input_ids=["i"] * 1001)
    assert "at most 1000" in caller.fails("ListClusterAssignments", listing)
