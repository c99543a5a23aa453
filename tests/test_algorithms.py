"""Models called as algorithms: publishing, version resolution, visibility across users, pipe with
each content type against a runner serving a plain function, errors with stack traces, stdout,
deadlines, insights, and `pellucid.client` as a callable package."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import pellucid
import pellucid.errors as errors
from pellucid.client.algo import AlgoClient
from pellucid.client.model import Model
from pellucid.client.runner import Runner, function_runner
from pellucid.client.user import User
from tests import algo_functions
from tests.test_runners import Echo, serve

RELEASE = threading.Event()


def held(input: object) -> str:
    """Waits for the test to release it (at most 20 s): a call that outlives its deadline."""
    RELEASE.wait(20)
    return "released"


@dataclass
class Published:
    owner: User
    model: Model  # pinned to the first version
    name: str
    runner: Runner

    @property
    def client(self) -> AlgoClient:
        return algo_client(self.owner)


def algo_client(user: User) -> AlgoClient:
    settings = user._connection.settings
    return pellucid.client(settings.pat, user.base_url)


def start_runner(owner: User, runner_id: str, label: str, cls: type[Runner]) -> tuple[Runner, threading.Thread]:
    owner.create_runner(runner_id, labels=[label])
    runner = cls(runner_id, base_url=owner.base_url, pat=owner._connection.settings.pat, num_parallel_polls=4)
    return runner, serve(runner)


@pytest.fixture
def published(alice: User, unique: str) -> Iterator[Published]:
    label = f"algo-{unique}"
    app = alice.create_app(f"algos-{unique}")
    model = app.create_model("hello", runner_labels=[label])
    runner, thread = start_runner(alice, f"fn-{unique}", label, function_runner(algo_functions.apply))
    model.publish_algorithm(version="1.0.0")
    yield Published(alice, model.list_versions().__next__(), "hello", runner)
    runner.stop(drain=False)
    thread.join(10)


def test_pipe_sends_and_returns_each_content_type(published: Published) -> None:
    algo = published.client.algo(f"{published.owner.user_id}/hello")
    text = algo.pipe("Mr. Bond")
    assert text.result == "Hello Mr. Bond" and text.metadata.content_type == "text"
    assert text.metadata.duration > 0 and text.metadata.version == "1.0.0"
    assert algo.pipe("").result == "Hello "
    binary = algo.pipe(b"\x00\x01\xff")
    assert binary.result == b"\xff\x01\x00" and binary.metadata.content_type == "binary"
    assert algo.pipe(bytearray(b"ab")).result == b"ba"
    assert algo.pipe(b"").result == b"" and algo.pipe(b"").metadata.content_type == "binary"
    for value, kind in (
        ({"docs": ["a", "b"], "n": 2**60}, "dict"),
        ([1, 2.5, None], "list"),
        (7, "int"),
        (0.25, "float"),
        (True, "bool"),
        (None, "NoneType"),
    ):
        response = algo.pipe(value)
        assert response.metadata.content_type == "json"
        assert response.result == {"echo": value, "kind": kind}  # ints stay ints (2**60 exactly)
    with pytest.raises(errors.UserError, match="JSON-serialisable"):
        algo.pipe({1, 2})
    with pytest.raises(errors.UserError, match="JSON-serialisable"):
        algo.pipe(math.nan)


def test_errors_come_back_as_algo_exception_with_the_stack_trace(published: Published) -> None:
    algo = published.client.algo(f"{published.owner.user_id}/hello/1.0.0")
    with pytest.raises(errors.AlgoException) as raised:
        algo.pipe("boom")
    error = raised.value
    assert isinstance(error, errors.ApiError)
    assert error.message == "ValueError: cannot handle boom"
    assert "in explode" in error.stack_trace and 'raise ValueError(f"cannot handle {value}")' in error.stack_trace
    assert error.stacktrace == error.stack_trace and error.code.name == "INVALID_ARGUMENT"
    try:  # one except catches the algorithm's errors and the server's
        published.client.algo(f"{published.owner.user_id}/no-such-algo").pipe("x")
    except errors.ApiError as exc:
        assert isinstance(exc, errors.NotFound) and not isinstance(exc, errors.AlgoException)


def test_stdout_is_returned_when_asked_and_only_to_the_owner(published: Published, bob: User) -> None:
    reference = f"{published.owner.user_id}/hello"
    algo = published.client.algo(reference)
    assert algo.pipe("print").metadata.stdout is None
    response = algo.set_options(stdout=True).pipe("print")
    assert response.result == "done"
    assert response.metadata.stdout == "printed by the algorithm\nsecond line\n"
    assert algo.pipe("x").metadata.stdout == ""  # each call has its own
    published.model.publish_algorithm(public=True)
    others = algo_client(bob).algo(reference).set_options(stdout=True).pipe("print")
    assert others.result == "done" and others.metadata.stdout == ""


def test_private_algorithms_are_not_found_by_others_public_ones_are_callable(
    published: Published, bob: User, unique: str
) -> None:
    owner = published.owner.user_id
    as_bob = algo_client(bob)
    with pytest.raises(errors.NotFound) as private:
        as_bob.algo(f"{owner}/hello").pipe("x")
    with pytest.raises(errors.NotFound) as missing:
        as_bob.algo(f"{owner}/nothing-{unique}").pipe("x")
    assert private.value.message == f"algorithm {owner}/hello not found"
    assert missing.value.message == f"algorithm {owner}/nothing-{unique} not found"
    with pytest.raises(errors.NotFound):
        as_bob.algo(f"{owner}/hello/1.0.0").info()
    assert as_bob.list_algorithms(owner) == []
    published.model.publish_algorithm(public=True)
    assert as_bob.algo(f"{owner}/hello/1.0.0").pipe("Bob").result == "Hello Bob"
    assert [a.name for a in as_bob.list_algorithms(owner)] == ["hello"]
    published.model.publish_algorithm(public=False)  # and back
    with pytest.raises(errors.NotFound):
        as_bob.algo(f"{owner}/hello").pipe("x")
    with pytest.raises(errors.PermissionDenied):  # publishing is for one's own models
        bob._call(
            pellucid.api.v1.AlgorithmServiceStub,
            "PublishAlgorithm",
            pellucid.api.v1.PublishAlgorithmRequest(user_id=owner, app_id=published.model.app_id, model_id="hello"),
        )


def test_versions_resolve_by_tag_by_version_id_and_to_the_highest_tag(published: Published) -> None:
    owner, model = published.owner.user_id, published.model
    first = model.version_id
    second = model.create_version(runner_labels=[f"algo-{model.app_id.removeprefix('algos-')}"])
    client = published.client
    assert client.algo(f"{owner}/hello").info().version_id == first  # the only tag
    second.publish_algorithm(version="1.10.0")
    model.publish_algorithm(version="1.2.0")  # a tag on the older version: still below 1.10.0
    info = client.algo(f"{owner}/hello").info()
    assert (info.version, info.version_id) == ("1.10.0", second.version_id)
    assert [v.tag for v in info.algorithm.versions] == ["1.10.0", "1.2.0", "1.0.0"]
    assert client.algo(f"{owner}/hello/1.0.0").pipe("a").metadata.version_id == first
    by_id = client.algo(f"{owner}/hello/{second.version_id}").pipe("a")
    assert (by_id.metadata.version_id, by_id.metadata.version) == (second.version_id, "")
    assert client.algo(f"algo://{owner}/hello/1.10.0").pipe("a").metadata.version_id == second.version_id
    with pytest.raises(errors.NotFound, match=r"has no version 9\.9\.9"):
        client.algo(f"{owner}/hello/9.9.9").pipe("a")
    with pytest.raises(errors.NotFound):
        client.algo(f"{owner}/hello/no-such-version").pipe("a")
    with pytest.raises(errors.AlreadyExists, match=r"1\.0\.0 already names"):
        second.publish_algorithm(version="1.0.0")
    model.publish_algorithm(version="1.0.0")  # the same version again: nothing changes
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-beta"):
        with pytest.raises(errors.InvalidArgument, match="semantic version"):
            model.publish_algorithm(version=bad)
    for bad_reference in ("hello", f"{owner}/", f"{owner}/hello/1.0.0/x", f"{owner}/he llo"):
        with pytest.raises(errors.InvalidArgument):
            client.algo(bad_reference).info()
    # the name defaults to the model id; another model cannot take a used name
    app = published.owner.app(model.app_id)
    other = app.create_model("other", runner_labels=["x"])
    assert other.publish_algorithm().name == "other"
    with pytest.raises(errors.AlreadyExists, match="publish this model under another name"):
        other.publish_algorithm(name="hello")


def test_a_deadline_set_with_set_options_ends_a_call_that_takes_longer(published: Published) -> None:
    label = f"held-{published.runner.runner_id}"
    app = published.owner.app(published.model.app_id)
    app.create_model("held", runner_labels=[label]).publish_algorithm()
    runner, thread = start_runner(published.owner, f"held-{published.runner.runner_id}", label, function_runner(held))
    RELEASE.clear()
    try:
        algo = published.client.algo(f"{published.owner.user_id}/held").set_options(timeout=1.5)
        with pytest.raises((errors.DeadlineExceeded, errors.Unavailable)):
            algo.pipe("x")
    finally:
        RELEASE.set()
        runner.stop(drain=False)
        thread.join(10)
    with pytest.raises(errors.UserError, match="above zero"):
        algo.set_options(timeout=0)


def test_insights_are_stored_per_call_and_read_by_the_owner(published: Published, bob: User) -> None:
    owner = published.owner.user_id
    reference = f"{owner}/hello"
    client = published.client
    response = client.algo(reference).pipe({"insights": {"risk_score": 0.08, "approved": 1}})
    assert response.result == {"reported": ["approved", "risk_score"]}
    insights = client.list_insights(reference)
    assert len(insights) == 1
    assert insights[0].call_id == response.metadata.call_id and insights[0].reported_by == owner
    assert dict(insights[0].insights) == {"risk_score": 0.08, "approved": 1.0}
    assert insights[0].version_id == published.model.version_id
    with pytest.raises(errors.UserError, match="from inside the algorithm"):
        client.report_insights({"x": 1})
    with pytest.raises(errors.UserError, match="not a number"):
        client.report_insights({"x": "high"}, call_id=response.metadata.call_id)
    with pytest.raises(errors.InvalidArgument, match="finite"):
        client.report_insights({"x": math.inf}, call_id=response.metadata.call_id)
    as_bob = algo_client(bob)
    with pytest.raises(errors.NotFound):  # not his call: it does not exist for him
        as_bob.report_insights({"x": 1}, call_id=response.metadata.call_id)
    with pytest.raises(errors.NotFound):  # private: no such algorithm for him
        as_bob.list_insights(reference)
    published.model.publish_algorithm(public=True)
    bobs_call = as_bob.algo(reference).pipe("hi").metadata.call_id
    as_bob.report_insights({"satisfied": 1}, call_id=bobs_call)  # the caller may report on his call
    with pytest.raises(errors.PermissionDenied, match="only"):
        as_bob.list_insights(reference)
    later = client.list_insights(reference)
    assert [(i.call_id, i.reported_by) for i in later] == [
        (response.metadata.call_id, owner),
        (bobs_call, bob.user_id),
    ]


def test_a_runner_subclass_serves_an_algorithm_too(alice: User, unique: str) -> None:
    label = f"classic-{unique}"
    alice.create_app(f"classic-{unique}").create_model("echo", runner_labels=[label]).publish_algorithm()
    runner, thread = start_runner(alice, f"classic-{unique}", label, Echo)
    try:
        response = algo_client(alice).algo(f"{alice.user_id}/echo").pipe("plain text")
        # its output (text, concepts, metadata) comes back whole, as JSON
        assert response.metadata.content_type == "json"
        assert response.result["text"]["raw"] == "plain text" and response.result["concepts"][0]["id"] == "a"
        with pytest.raises(errors.AlgoException, match="cannot handle boom") as raised:
            algo_client(alice).algo(f"{alice.user_id}/echo").pipe("boom")
        assert "run_input" in raised.value.stack_trace
    finally:
        runner.stop(drain=False)
        thread.join(10)


def test_pellucid_client_is_callable_after_importing_submodules(tmp_path: object) -> None:
    script = (
        "import pellucid.client.user, pellucid.client.model, pellucid.client.runner\n"
        "from pellucid.client import User\n"
        "import pellucid\n"
        "c = pellucid.client('pel_pat_x', 'grpc://127.0.0.1:9')\n"
        "assert type(c).__name__ == 'AlgoClient', c\n"
        "assert c.base_url == 'grpc://127.0.0.1:9'\n"
        "import pellucid.client.algo\n"
        "assert pellucid.client(api_key='k', api_address='grpc://127.0.0.1:8').base_url == 'grpc://127.0.0.1:8'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_captured_stdout_is_per_thread_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from pellucid.client import algo as algo_module

    monkeypatch.setattr(algo_module, "MAX_STDOUT_CHARS", 10)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    other: list[str] = []

    def elsewhere() -> None:
        with algo_module.serving_call("other-call") as printed:
            print("from another thread")
            other.extend(printed)

    with algo_module.serving_call("a-call") as printed:
        assert algo_module.current_call_id() == "a-call"
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        print("0123456789abcdef")
    assert "".join(printed) == "0123456789" and "".join(other) == "from anoth"
    assert algo_module.current_call_id() == ""
    assert "0123456789abcdef" in sys.stdout.stream.getvalue()  # type: ignore[attr-defined]  # still printed


def test_deleting_the_model_unpublishes_it(alice: User, unique: str) -> None:
    app = alice.create_app(f"gone-{unique}")
    app.create_model("gone", runner_labels=["x"]).publish_algorithm(version="1.0.0", public=True)
    client = algo_client(alice)
    assert client.algo(f"{alice.user_id}/gone/1.0.0").info().version == "1.0.0"
    app.delete_model("gone")
    with pytest.raises(errors.NotFound):
        client.algo(f"{alice.user_id}/gone").info()
    again = app.create_model("gone", runner_labels=["x"])  # a new model: its own versions, tags from scratch
    again.publish_algorithm(version="1.0.0")
    assert client.algo(f"{alice.user_id}/gone/1.0.0").info().version_id == next(again.list_versions()).version_id


def test_a_call_without_a_content_type_or_with_broken_json_is_refused(published: Published) -> None:
    from pellucid.api import v1

    reference = f"{published.owner.user_id}/hello"
    for given, field in (
        (v1.Data(text=v1.Text(raw="no content type")), "input.content_type"),
        (v1.Data(content_type="yaml"), "input.content_type"),
        (v1.Data(content_type="json", json="{not json"), "input.json"),
    ):
        with pytest.raises(errors.InvalidArgument) as raised:
            published.client._call(
                v1.AlgorithmServiceStub, "CallAlgorithm", v1.CallAlgorithmRequest(algorithm=reference, input=given)
            )
        assert raised.value.details.get("field") == field
