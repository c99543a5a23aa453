"""Fuzz every RPC of every pellucid service with generated requests: no INTERNAL, UNKNOWN, crash or hang.

The methods and the shape of their requests come from the descriptors, so a new RPC or field is
fuzzed without touching this file. Requests are built field by field: strings are empty, huge,
unicode, NUL-laden or path-like; numbers sit at their extremes (floats include NaN and
Infinity); Structs nest deep and hold NaN; and ids are biased towards resources that exist
(an app, dataset, model, input, runner and blob made first) so calls get past "not found"
often. Sometimes a request is random bytes instead of a message.

The calls are made as a real user against a real server, each with a deadline; streaming
requests are short generated streams. Set PELLUCID_FUZZ_EXAMPLES (examples per RPC, default 50)
for a longer run; the default keeps the whole file to 15-40 seconds.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import math
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pellucid.api import v1
from pellucid.client.runner import Runner
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.media_samples import png
from tests.raw_calls import RawClient, message_class, pellucid_methods

EXAMPLES = int(os.environ.get("PELLUCID_FUZZ_EXAMPLES", "50"))
CALL_DEADLINE = 5.0
# Calls that legitimately wait for their deadline (a predict with no runner to serve it, a runner
# stream): these get a short one, and DEADLINE_EXCEEDED is a fine answer for them.
WAITING = {"PostModelOutputs": 1.0, "Connect": 2.0}
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

APP, DATASET, MODEL, CONCEPT, INPUT, RUNNER = "fz-app", "fz-ds", "fz-model", "fz-c", "fz-in", "fz-runner"
WORKFLOW, TRAINABLE, MODULE, ALGORITHM, DATA = "fz-wf", "fz-clf", "fz-mod", "fz-algo", "data://.my/fz-data"
SERVED = "fz-served"  # served by a live runner, so predicts go all the way and back
IMAGE = png("fuzz")


@dataclass
class World:
    """The server, a user on it, and what exists there for generated ids to hit."""

    server: PellucidServer
    raw: RawClient
    user_id: str
    admin_id: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    needs_seeding: bool = True
    page_tokens: list[str] = field(default_factory=list)  # genuine ones, seen in answers
    listings: dict[str, tuple[Any, str]] = field(default_factory=dict)  # List RPC -> (a request, its next token)

    def tampered_token(self, which: int, position: Any) -> str:
        if not self.page_tokens:
            return ""
        return _with_position(self.page_tokens[which % len(self.page_tokens)], position)

    def note_page_token(self, response: Any) -> None:
        token = getattr(response, "next_page_token", "")
        if token and token not in self.page_tokens and len(self.page_tokens) < 200:
            self.page_tokens.append(token)

    def harvest_listings(self) -> None:
        """A genuine next_page_token of every listing, with the request it continues."""
        for method in pellucid_methods():
            if not method.name.startswith("List"):
                continue
            request = message_class(method.input_type)(page_size=1)
            for name, value in (("app_id", APP), ("dataset_id", DATASET), ("model_id", MODEL)):
                if name in method.input_type.fields_by_name:
                    setattr(request, name, value)
            try:
                token = self.raw.call(method, request).next_page_token
            except grpc.RpcError:
                continue
            if token:
                self.listings[method.name] = (request, token)
                self.page_tokens.append(token)

    def call(self, name: str, request: Any) -> Any:
        return self.raw.call(next(m for m in pellucid_methods() if m.name == name), request)

    def seed(self) -> None:
        """(Re)create the resources ids point at; generated Delete calls remove them now and then."""
        steps = [
            ("CreateApp", v1.CreateAppRequest(app=v1.App(id=APP))),
            ("CreateDataset", v1.CreateDatasetRequest(app_id=APP, dataset=v1.Dataset(id=DATASET))),
            ("CreateDataset", v1.CreateDatasetRequest(app_id=APP, dataset=v1.Dataset(id=f"{DATASET}-2"))),
            ("CreateApp", v1.CreateAppRequest(app=v1.App(id=f"{APP}-2"))),
            ("CreateConcepts", v1.CreateConceptsRequest(app_id=APP, concepts=[v1.Concept(id=CONCEPT)])),
            ("CreateConcepts", v1.CreateConceptsRequest(app_id=APP, concepts=[v1.Concept(id=f"{CONCEPT}-2")])),
            (
                "CreateModel",
                v1.CreateModelRequest(
                    app_id=APP,
                    model=v1.Model(id=MODEL, input_fields=["text"]),
                    version=v1.ModelVersion(id="fz-v1", runner_labels=["fz"]),
                ),
            ),
            (
                "CreateModelVersion",
                v1.CreateModelVersionRequest(
                    app_id=APP, model_id=MODEL, version=v1.ModelVersion(id="fz-v1", runner_labels=["fz"])
                ),
            ),
            (
                "CreateModel",
                v1.CreateModelRequest(
                    app_id=APP,
                    model=v1.Model(id=SERVED, input_fields=["text", "image"]),
                    version=v1.ModelVersion(runner_labels=["fz-live"]),
                ),
            ),
            ("CreateRunner", v1.CreateRunnerRequest(runner=v1.Runner(id=RUNNER, labels=["fz"]))),
            (
                "PostInputs",
                v1.PostInputsRequest(
                    app_id=APP,
                    inputs=[
                        v1.Input(
                            id=INPUT,
                            dataset_ids=[DATASET],
                            # labelled: a dataset to evaluate models on
                            data=v1.Data(text=v1.Text(raw="fuzz"), concepts=[v1.Concept(id=CONCEPT, value=1)]),
                        ),
                        v1.Input(id=f"{INPUT}-img", data=v1.Data(image=v1.Image(base64=IMAGE))),
                    ],
                ),
            ),
            (
                "CreateDatasetVersion",
                v1.CreateDatasetVersionRequest(app_id=APP, dataset_id=DATASET, version_id="fz-dv"),
            ),
            # the services of issue #11: a workflow, a trainable model, a module, an algorithm, hosted data
            ("PostWorkflows", v1.PostWorkflowsRequest(app_id=APP, workflows=[_workflow(WORKFLOW)])),
            (
                "CreateModel",
                v1.CreateModelRequest(app_id=APP, model=v1.Model(id=TRAINABLE, model_type_id="embedding-classifier")),
            ),
            ("CreateModule", v1.CreateModuleRequest(app_id=APP, module=v1.Module(id=MODULE))),
            (
                "CreateModuleVersion",
                v1.CreateModuleVersionRequest(
                    app_id=APP, module_id=MODULE, version=v1.ModuleVersion(id="fz-mv", entry_point="fz.mod:main")
                ),
            ),
            ("PublishAlgorithm", v1.PublishAlgorithmRequest(app_id=APP, model_id=SERVED, name=ALGORITHM)),
            ("CreateDataDirectory", v1.CreateDataDirectoryRequest(path=DATA)),
            ("UploadDataFiles", [v1.DataUploadChunk(path=f"{DATA}/f", size=2, data=b"hi")]),
        ]
        for name, request in steps:
            try:
                self.call(name, request)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND), exc.details()
        self.needs_seeding = False
        if not self.listings:
            self.harvest_listings()


class LiveRunner(Runner):
    """Answers with what it was sent: the input's text or size, and the params."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        output = v1.Output(data=v1.Data(concepts=[v1.Concept(id="seen", value=1.0)]))
        output.data.text.raw = input.data.text.raw or f"{len(input.data.image.base64)} bytes"
        output.data.metadata.CopyFrom(output_info.params)
        return output


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = PellucidServer(ServerSettings(data_dir=tmp_path_factory.mktemp("fuzz-data"), port=0))
    server.start()
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        admin = RawClient(server.address, f"Bearer {credentials.pat}")
        user_id = f"fuzzer-{uuid.uuid4().hex[:6]}"
        created = admin.call(
            next(m for m in pellucid_methods() if m.name == "CreateUser"), v1.CreateUserRequest(user_id=user_id)
        )
        admin_id = admin.call(next(m for m in pellucid_methods() if m.name == "GetUser"), v1.GetUserRequest()).id
        admin.close()
        raw = RawClient(server.address, f"Bearer {created.secret}")
        world = World(server, raw, user_id, admin_id)
        world.seed()
        world.call("CreateRunner", v1.CreateRunnerRequest(runner=v1.Runner(id="fz-live", labels=["fz-live"])))
        runner = LiveRunner("fz-live", base_url=f"grpc://{server.address}", pat=created.secret, num_parallel_polls=2)
        thread = threading.Thread(target=runner.start, daemon=True)
        thread.start()
        assert runner.wait_connected(10)
        world.ids = {
            "user_id": [user_id, "", user_id, "", admin_id],
            "app_id": [APP],
            "dataset_id": [DATASET],
            "model_id": [MODEL],
            "version_id": ["fz-v1", "fz-dv"],
            "dataset_version_id": ["fz-dv"],
            "concept_id": [CONCEPT],
            "input_id": [INPUT, f"{INPUT}-img"],
            "runner_id": [RUNNER],
            "id": [APP, DATASET, MODEL, CONCEPT, INPUT, RUNNER, "fz-new"],
            "ids": [INPUT, f"{INPUT}-img"],
            "input_ids": [INPUT],
            "dataset_ids": [DATASET],
            "runner_labels": ["fz"],
            "labels": ["fz"],
            "select_concepts": [CONCEPT],
            "workflow_id": [WORKFLOW],
            "module_id": [MODULE],
            "module_app_id": [APP],
            "module_version_id": ["fz-mv"],
            "algorithm": [f"{user_id}/{ALGORITHM}"],
            "path": [DATA, f"{DATA}/f", "data://.my/"],
            "paths": [f"{DATA}/f"],
        }
        yield world
        runner.stop(drain=False)
        thread.join(10)
        raw.close()
    finally:
        server.stop(grace=0.5)


# strategies, from the descriptors

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "C:\\Windows",
    "~/.ssh/id_rsa",
    "%00",
    "%2e%2e%2f",
    "' OR 1=1 --",
    "\u202e",
    "\ufeff",
    "\U0001f600" * 50,
    "é" * 300,
    "x" * 129,
    "a" * 100_000,
    "null",
    "NaN",
    "-1",
    "9" * 40,
    "\n",
    "\r\n",
    "\t",
]
HEX = "0123456789abcdef"


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY_STRINGS),
        st.text(max_size=40),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20),
    )


def _string_for(world: World, name: str) -> st.SearchStrategy[str]:
    known = world.ids.get(name, [])
    if name in ("blob_sha256", "sha256"):
        return st.one_of(
            st.just(hashlib.sha256(IMAGE).hexdigest()), st.text(alphabet=HEX, min_size=64, max_size=64), _strings()
        )
    if name == "url":  # never a host that needs the network: DNS here would only be slow
        return st.sampled_from(
            [
                "",
                "http://127.0.0.1:9/x.png",
                "http://10.0.0.1/x",
                "file:///etc/passwd",
                "data:text/plain,hi",
                "http://[::1]:1/",
                "ftp://127.0.0.1/x",
                "http://",
                "%%%",
            ]
        )
    if name == "page_token":  # tokens are base64 JSON {"a": position, "s": listing}: tamper with both
        positions = _positions()
        tampered = st.builds(lambda a, s: _b64_json({"a": a, "s": s}), positions, st.one_of(_strings(), _json_values()))
        # a genuine token of some listing with only the position changed: gets past the listing check
        retagged = st.builds(world.tampered_token, st.integers(0, 10**6), positions)
        return st.one_of(
            st.just(""), tampered, retagged, retagged, st.sampled_from(["e30", "W10", "bnVsbA"]), _strings()
        )
    if name == "request_id":  # a reused one only replays: mostly fresh ones
        return st.one_of(st.just("").map(lambda _: uuid.uuid4().hex), _strings())
    if name == "method":
        return st.one_of(st.sampled_from(["predict", "", "generate"]), _strings())
    if known:  # mostly what exists, to get past "not found" to the checks behind it
        return st.one_of(*[st.sampled_from(known)] * 4, _strings())
    if name.endswith("_id") or name == "id":
        return st.one_of(st.text(alphabet="abc-_0123", min_size=1, max_size=12), _strings())
    return _strings()


PRESENCE = {  # in tenths
    **dict.fromkeys(
        ["user_id", "app_id", "dataset_id", "model_id", "concept_id", "input_id", "runner_id", "version_id", "pat_id"],
        9,
    ),
    "request_id": 3,
    "page_token": 3,
    "page": 3,
}


def _with_position(token: str, position: Any) -> str:
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return _b64_json({**decoded, "a": position})


def _b64_json(value: Any) -> str:
    try:
        raw = json.dumps(value).encode()
    except ValueError:  # an integer too long for str(): still a fine token to tamper with
        raw = b'{"a": 1' + b"0" * 5000 + b', "s": ""}'
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


INT_LIMITS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(kind: int) -> st.SearchStrategy[int]:
    low, high = INT_LIMITS[kind]
    edges = [
        v
        for v in (
            0,
            1,
            -1,
            2,
            127,
            128,
            129,
            1000,
            1001,
            3600,
            31622400,
            31622401,
            2**31 - 1,
            -(2**31),
            2**53,
            2**62,
            low,
            high,
        )
        if low <= v <= high
    ]
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(-3, 300).filter(lambda v: low <= v))


def _json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(),
        *[st.sampled_from([math.nan, math.inf, -math.inf])] * 2,
        st.integers(-(2**53), 2**53),
        _strings(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_strings(), inner, max_size=3)),
        max_leaves=8,
    )


def _positions() -> st.SearchStrategy[Any]:
    """Keyset positions a client might forge: out of range, wrong types."""
    edges = [2**63, 2**64, 2**80, -1, -(2**63) - 1, 10**400, 1.5, True, "7", None, [1]]
    return st.one_of(st.sampled_from(edges), st.sampled_from(edges), st.integers(), st.floats(), _json_values())


@st.composite
def _structs(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 5)) == 0:  # nested right around the engine's limit (and past it)
        value: Any = draw(_json_values())
        for _ in range(draw(st.sampled_from([10, 22, 23, 24, 25, 28]))):
            value = {"k": value} if draw(st.booleans()) else [value]
        return {"deep": value}
    return draw(st.dictionaries(_strings(), _json_values(), max_size=4))


def _bytes(name: str) -> st.SearchStrategy[bytes]:
    samples = [
        b"",
        IMAGE,
        IMAGE[:40],
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WAVE",
        b"\x00" * 1000,
        b"%PDF-1.4",
    ]
    return st.one_of(st.sampled_from(samples), st.binary(max_size=200))


@st.composite
def messages(
    draw: st.DrawFn, world: World, descriptor: Descriptor, depth: int = 0, sparse: bool = False, big: bool = True
) -> Any:
    """A message of any pellucid type, each field set or not, with values meant to break things.

    `sparse` sets few fields: for changes merged into a valid request. `big`: a repeated field
    may hold 129 items (past the server's lists of 128); once one does, nothing under it does
    (129 at every level of a nested message made 129**4 copies: 23 GB, the OOM killer).
    """
    message = message_class(descriptor)()
    full_name = descriptor.full_name
    if full_name == "google.protobuf.Struct":
        try:
            message.update(draw(_structs()))
        except (ValueError, TypeError):
            pass  # protobuf itself cannot hold it (e.g. nested too deep to build): leave it empty
        return message
    if full_name == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(-62135596800, 253402300799))
        message.nanos = draw(st.integers(0, 999_999_999))
        return message
    if full_name == "google.protobuf.FieldMask":
        valid = st.sampled_from(["metadata", "name", "description", "base_workflow", "id", "user_id"])
        message.paths.extend(draw(st.lists(st.one_of(valid, valid, valid, _strings()), max_size=3)))
        return message
    for f in descriptor.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            continue  # maps appear only in responses
        if draw(st.integers(0, 9)) >= (2 if sparse else PRESENCE.get(f.name, 7)):  # ids nearly always, others mostly
            continue
        if f.message_type is not None and depth >= 4:
            continue
        if f.is_repeated:
            count = draw(st.sampled_from([1, 1, 1, 1, 2, 3, 0, 129] if big else [1, 1, 1, 1, 2, 3, 0]))
            if f.message_type is not None:
                items = draw(
                    st.lists(
                        messages(world, f.message_type, depth + 1, sparse, big and count < 129),
                        min_size=min(count, 3),
                        max_size=min(count, 3),
                    )
                )
                container = getattr(message, f.name)
                for i in range(count):
                    container.add().CopyFrom(items[i % len(items)])
            else:
                values = draw(st.lists(_scalars(world, f), min_size=min(count, 3), max_size=min(count, 3)))
                if values:
                    getattr(message, f.name).extend(values[i % len(values)] for i in range(count))
        elif f.message_type is not None:
            getattr(message, f.name).CopyFrom(draw(messages(world, f.message_type, depth + 1, sparse, big)))
        else:
            setattr(message, f.name, draw(_scalars(world, f)))
    return message


def _scalars(world: World, f: FieldDescriptor) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_STRING:
        return _string_for(world, f.name)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _bytes(f.name)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 50))
    if f.type == FieldDescriptor.TYPE_FLOAT:
        return st.one_of(st.floats(width=32), st.sampled_from([0.0, -0.0, 1.0, 0.5, -1.0, 1e30, math.nan]))
    if f.type == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    return _ints(f.type)


@st.composite
def requests(draw: st.DrawFn, world: World, method: MethodDescriptor) -> Any:
    """A request (a list of them for a client stream), sometimes random bytes in place of a message."""

    def one() -> Any:
        mode = draw(st.integers(0, 15))
        if mode == 0:
            return draw(st.binary(max_size=64))
        if mode < 8:  # a valid request with a few fields changed, to get to the checks deep inside
            request = valid_request(world, method)
            request.MergeFrom(draw(messages(world, method.input_type, sparse=True)))
            return request
        return draw(messages(world, method.input_type))

    if method.name in world.listings and draw(st.integers(0, 4)) == 0:  # a genuine token, its position forged
        request, token = world.listings[method.name]
        forged = type(request)()
        forged.CopyFrom(request)
        forged.page_token = _with_position(token, draw(_positions()))
        return forged
    if not method.client_streaming:
        return one()
    if method.name == "Connect" and draw(st.booleans()):  # most streams start right, to get further
        hello = v1.RunnerMessage(
            hello=v1.RunnerHello(
                runner_id=RUNNER,
                capacity=draw(st.integers(-2, 4)),
                labels=draw(st.lists(st.sampled_from(["fz", "x"]), max_size=2)),
            )
        )
        return [hello, *[one() for _ in range(draw(st.integers(0, 3)))]]
    return [one() for _ in range(draw(st.integers(0, 4)))]


def valid_request(world: World, method: MethodDescriptor) -> Any:
    """A request that would succeed (or name something that exists), for generated changes to start from."""
    fresh = uuid.uuid4().hex[:12]
    text = v1.Data(text=v1.Text(raw=f"text {fresh}"))
    known = {
        "CreateApp": v1.CreateAppRequest(app=v1.App(id=f"a{fresh}", metadata=_plain_struct())),
        "PatchApp": v1.PatchAppRequest(
            app=v1.App(id=APP, description="d", metadata=_plain_struct()),
            update_mask={"paths": ["metadata", "description"]},
        ),
        "CreateDataset": v1.CreateDatasetRequest(app_id=APP, dataset=v1.Dataset(id=f"d{fresh}")),
        "CreateDatasetVersion": v1.CreateDatasetVersionRequest(app_id=APP, dataset_id=DATASET, version_id=f"v{fresh}"),
        "CreateConcepts": v1.CreateConceptsRequest(app_id=APP, concepts=[v1.Concept(id=f"c{fresh}", name="n")]),
        "PatchConcepts": v1.PatchConceptsRequest(app_id=APP, concepts=[v1.Concept(id=CONCEPT, name="n")]),
        "PostInputs": v1.PostInputsRequest(
            app_id=APP, inputs=[v1.Input(id=f"i{fresh}", data=text, dataset_ids=[DATASET])]
        ),
        "PostAnnotations": v1.PostAnnotationsRequest(
            app_id=APP,
            annotations=[v1.Annotation(input_id=INPUT, data=v1.Data(concepts=[v1.Concept(id=CONCEPT, value=1)]))],
        ),
        "PatchAnnotations": v1.PatchAnnotationsRequest(
            app_id=APP,
            annotations=[v1.Annotation(input_id=INPUT, data=v1.Data(concepts=[v1.Concept(id=CONCEPT, value=1)]))],
        ),
        "DownloadInputs": v1.DownloadInputsRequest(app_id=APP, ids=[INPUT, f"{INPUT}-img"]),
        "CreateModel": v1.CreateModelRequest(
            app_id=APP,
            model=v1.Model(id=f"m{fresh}", input_fields=["image"]),
            version=v1.ModelVersion(runner_labels=["fz"]),
        ),
        "CreateModelVersion": v1.CreateModelVersionRequest(
            app_id=APP, model_id=MODEL, version=v1.ModelVersion(runner_labels=["fz"])
        ),
        "PostModelOutputs": v1.PostModelOutputsRequest(app_id=APP, model_id=SERVED, inputs=[v1.Input(data=text)]),
        "PostEvaluation": v1.PostEvaluationRequest(app_id=APP, model_id=SERVED, dataset_id=DATASET),
        "PostWorkflows": v1.PostWorkflowsRequest(app_id=APP, workflows=[_workflow(f"w{fresh}")]),
        "PostWorkflowResults": v1.PostWorkflowResultsRequest(
            app_id=APP, workflow_id=WORKFLOW, inputs=[v1.Input(data=text)]
        ),
        "Train": v1.TrainRequest(app_id=APP, model_id=TRAINABLE, params=_struct({"dataset_id": DATASET})),
        "CreateDataDirectory": v1.CreateDataDirectoryRequest(path=f"{DATA}/d{fresh}", parents=True),
        "DataUploadChunk": v1.DataUploadChunk(path=f"{DATA}/u{fresh}", size=3, data=b"abc"),
        "CallAlgorithm": v1.CallAlgorithmRequest(
            algorithm=f"{world.user_id}/{ALGORITHM}", input=v1.Data(content_type="text", text=v1.Text(raw="hi"))
        ),
        "CreateRunner": v1.CreateRunnerRequest(runner=v1.Runner(id=f"r{fresh}", labels=["fz"])),
        "UploadBlob": v1.BlobChunk(app_id=APP, data=IMAGE),
        "RunnerMessage": v1.RunnerMessage(hello=v1.RunnerHello(runner_id=RUNNER, capacity=1)),
    }
    request = known.get(method.name) or known.get(method.input_type.name)
    if request is None:  # the ids of what exists, in whichever of them the request has
        request = message_class(method.input_type)()
        for name, values in world.ids.items():
            if name in method.input_type.fields_by_name and values:
                field_descriptor = method.input_type.fields_by_name[name]
                if field_descriptor.type == FieldDescriptor.TYPE_STRING and not field_descriptor.is_repeated:
                    setattr(request, name, values[0] if name != "user_id" else "")
                elif field_descriptor.type == FieldDescriptor.TYPE_STRING:
                    getattr(request, name).append(values[0])
    return request


def _workflow(workflow_id: str) -> v1.Workflow:
    """A workflow of one built-in node (a concept-thresholder, created with it)."""
    node = v1.WorkflowNode(id="t", model=v1.Model(id="fz-thresholder", model_type_id="concept-thresholder"))
    return v1.Workflow(id=workflow_id, nodes=[node])


def _struct(values: dict[str, Any]) -> Any:
    struct = message_class(v1.App.DESCRIPTOR.fields_by_name["metadata"].message_type)()
    struct.update(values)
    return struct


def _plain_struct() -> Any:
    struct = message_class(v1.App.DESCRIPTOR.fields_by_name["metadata"].message_type)()
    struct.update({"source": "fuzz", "n": 1})
    return struct


def bad_item_statuses(message: Any) -> list[str]:
    """Per-item Status messages anywhere in a response that say INTERNAL or UNKNOWN."""
    found = []
    if message.DESCRIPTOR.full_name == "pellucid.api.v1.Status":
        if message.code in (v1.Status.INTERNAL, v1.Status.UNKNOWN):
            found.append(f"{v1.Status.Code.Name(message.code)}: {message.message}")
        return found
    for f, value in message.ListFields():
        if f.message_type is None or (f.message_type.GetOptions().map_entry):
            continue
        for item in value if f.is_repeated else [value]:
            found.extend(bad_item_statuses(item))
    return found


# the test


def _is_health_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


ANSWERS: collections.defaultdict[str, collections.Counter] = collections.defaultdict(collections.Counter)
FUZZED = sorted(pellucid_methods(), key=lambda m: (m.containing_service.name, m.name))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", FUZZED, ids=[f"{m.containing_service.name}.{m.name}" for m in FUZZED])
def test_fuzz_rpc(world: World, method: MethodDescriptor) -> None:
    deadline = WAITING.get(method.name, CALL_DEADLINE)

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck)
    )
    @given(request=requests(world, method))
    def call(request: Any) -> None:
        if world.needs_seeding:
            world.seed()
        try:
            response = world.raw.call(method, request, timeout=deadline)
            world.note_page_token(response)
            for item in response if isinstance(response, list) else [response]:
                bad = bad_item_statuses(item)
                assert not bad, f"{method.name} answered an item with {bad[0]}"
            ANSWERS[method.name][grpc.StatusCode.OK] += 1
        except grpc.RpcError as exc:
            code = exc.code()
            ANSWERS[method.name][code] += 1
            assert code not in FAILURES, f"{method.name} answered {code.name}: {exc.details()}"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                assert method.name in WAITING, f"{method.name} hung: no answer within {deadline}s"
            assert exc.details(), f"{method.name} answered {code.name} with no message"
        else:
            if method.name.startswith("Delete"):
                world.needs_seeding = True

    call()
    assert _is_health_serving(world.server.address)


def test_every_service_is_fuzzed() -> None:
    services = {m.containing_service.name for m in FUZZED}
    assert services == {
        "AlgorithmService",
        "AppService",
        "ConceptService",
        "DataService",
        "DatasetService",
        "EvaluationService",
        "InputService",
        "ModelService",
        "ModuleService",
        "RunnerService",
        "SearchService",
        "TrainingService",
        "UserService",
        "WorkflowService",
    }
    assert len(FUZZED) >= 80


def test_the_fuzzing_gets_past_validation() -> None:
    """Runs after the fuzzing above: most RPCs must have succeeded at least once, or the fuzzer is too shallow."""
    if set(ANSWERS) != {m.name for m in FUZZED}:
        pytest.skip("only meaningful after every RPC was fuzzed in this session")
    succeeded = sorted(name for name, codes in ANSWERS.items() if codes[grpc.StatusCode.OK])
    table = {name: {code.name: n for code, n in codes.items()} for name, codes in sorted(ANSWERS.items())}
    assert len(succeeded) >= len(FUZZED) // 2, f"only {succeeded} ever succeeded: {table}"
