"""Calling models as algorithms, in one line:

    import pellucid
    client = pellucid.client()                 # or pellucid.client(api_key, api_address)
    print(client.algo("alice/hello/1.0.0").pipe("world").result)

An algorithm is a model its owner published with `Model.publish_algorithm`; a call runs on the
owner's runners (`pellucid runner start hello.py:apply` serves a plain function). `pipe` sends a
`str` as text, `bytes` as binary and anything else JSON-serialisable as JSON, and decodes the
result back to the same kinds. An exception the algorithm raised comes back as
`pellucid.errors.AlgoException` (with its stack trace); the server's refusals are the usual
`ApiError` subclasses, so `except ApiError` catches both.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from pellucid.api import v1
from pellucid.client._transport import DEFAULT_RETRY, MetadataConnection, RetryPolicy
from pellucid.client.base import BaseClient
from pellucid.client.hosted_data import DataDirectory, DataFile, data_dir, data_file
from pellucid.errors import AlgoException, UserError

ALGORITHM_CALL_HEADER = "x-pellucid-algorithm-call"
DEFAULT_ALGO_TIMEOUT = 300.0  # seconds, as the reference client's default
MAX_STDOUT_CHARS = 1024 * 1024  # what one call's captured stdout keeps


def encode_input(value: Any) -> v1.Data:
    """`str` as text, `bytes`/`bytearray`/`memoryview` as binary, anything else as JSON."""
    if isinstance(value, str):
        return v1.Data(content_type="text", text=v1.Text(raw=value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return v1.Data(content_type="binary", raw=bytes(value))
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"cannot send a {type(value).__name__} to an algorithm ({exc}): pass a str, bytes, or a "
            "JSON-serialisable value (dict, list, number, bool, None)"
        ) from None
    return v1.Data(content_type="json", json=text)


def decode_data(data: v1.Data) -> Any:
    """The value a `Data` of content type text, json or binary carries."""
    if data.content_type == "json":
        return json.loads(data.json)
    if data.content_type == "binary":
        return bytes(data.raw)
    return data.text.raw


@dataclass
class AlgoMetadata:
    content_type: str
    duration: float
    stdout: str | None = None
    call_id: str = ""
    algorithm: str = ""  # owner/name
    version: str = ""  # the tag that named the model version, if any
    version_id: str = ""
    runner_id: str = ""


@dataclass
class AlgoResponse:
    result: Any
    metadata: AlgoMetadata
    raw: v1.CallAlgorithmResponse = field(repr=False, default_factory=v1.CallAlgorithmResponse)

    def to_dict(self) -> dict[str, Any]:
        """The response as JSON-ready values (binary results as base64)."""
        import base64

        result = self.result
        if isinstance(result, bytes):
            result = base64.b64encode(result).decode()
        meta = {k: v for k, v in vars(self.metadata).items() if v is not None}
        return {"result": result, "metadata": meta}


class Algorithm:
    """One algorithm reference (`owner/name[/version]`); `pipe` calls it. No call is made here."""

    def __init__(self, client: AlgoClient, reference: str) -> None:
        if not isinstance(reference, str) or not reference.strip():
            raise UserError("name the algorithm as owner/name, owner/name/1.0.2 or owner/name/<model version id>")
        self.client = client
        self.reference = reference.strip()
        self.timeout = DEFAULT_ALGO_TIMEOUT
        self.stdout = False

    def __repr__(self) -> str:
        return f"Algorithm({self.reference!r})"

    def set_options(self, timeout: float = DEFAULT_ALGO_TIMEOUT, stdout: bool = False) -> Algorithm:
        """The call's deadline in seconds, and whether to return what the algorithm printed
        (only its owner gets it). Returns the algorithm, for chaining."""
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise UserError(f"timeout must be a number of seconds above zero, got {timeout!r}")
        self.timeout = float(timeout)
        self.stdout = bool(stdout)
        return self

    def info(self) -> v1.ResolvedAlgorithm:
        """The algorithm and the model version this reference resolves to."""
        return self.client._call(
            v1.AlgorithmServiceStub, "GetAlgorithm", v1.GetAlgorithmRequest(algorithm=self.reference)
        )

    def pipe(self, input: Any) -> AlgoResponse:
        """Call the algorithm on `input`; raises AlgoException if the algorithm raised."""
        request = v1.CallAlgorithmRequest(algorithm=self.reference, input=encode_input(input), stdout=self.stdout)
        response: v1.CallAlgorithmResponse = self.client._call(
            v1.AlgorithmServiceStub, "CallAlgorithm", request, timeout=self.timeout
        )
        resolved = response.resolved
        if response.HasField("error"):
            raise AlgoException(
                response.error.message or "the algorithm failed",
                stack_trace=response.error.stack_trace,
                error_code=response.error.code,
                call_id=response.call_id,
                method="CallAlgorithm",
            )
        metadata = AlgoMetadata(
            content_type=response.result.content_type,
            duration=response.duration,
            stdout=response.stdout if self.stdout else None,
            call_id=response.call_id,
            algorithm=f"{resolved.algorithm.user_id}/{resolved.algorithm.name}",
            version=resolved.version,
            version_id=resolved.version_id,
            runner_id=response.runner_id,
        )
        return AlgoResponse(decode_data(response.result), metadata, response)


class AlgoClient(BaseClient):
    """The algorithm-calling client. `api_key` and `api_address` resolve like every credential:
    the argument, else PELLUCID_PAT / PELLUCID_API, else the profile, else the local server."""

    def __init__(
        self,
        api_key: str | None = None,
        api_address: str | None = None,
        *,
        profile: str | None = None,
        timeout: float = DEFAULT_ALGO_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        **kwargs: Any,
    ) -> None:
        serving = getattr(_serving, "connection", None)
        if serving is not None and api_key is None and api_address is None and profile is None:
            kwargs.setdefault("_connection", serving)  # inside an algorithm: its runner's credentials
        BaseClient.__init__(
            self, "", api_address or "", api_key or "", profile=profile, timeout=timeout, retry=retry, **kwargs
        )

    def __repr__(self) -> str:
        return f"AlgoClient({self.base_url!r})"

    def algo(self, reference: str) -> Algorithm:
        """`owner/name`, `owner/name/1.0.2` or `owner/name/<model version id>`."""
        return Algorithm(self, reference)

    def list_algorithms(self, user_id: str = "") -> list[v1.Algorithm]:
        """Your algorithms, or another user's public ones."""
        found: list[v1.Algorithm] = []
        token = ""
        while True:
            page = self._call(
                v1.AlgorithmServiceStub,
                "ListAlgorithms",
                v1.ListAlgorithmsRequest(user_id=user_id, page_token=token),
            )
            found += page.algorithms
            token = page.next_page_token
            if not token:
                return found

    def report_insights(self, insights: dict[str, float], call_id: str | None = None) -> None:
        """Store numeric insights about an algorithm call: inside an algorithm, the call it is
        serving; elsewhere pass `call_id` (a response's `metadata.call_id`)."""
        call_id = call_id or current_call_id()
        if not call_id:
            raise UserError(
                "report_insights records insights of an algorithm call: call it from inside the algorithm "
                "(a runner serving a call), or pass call_id=response.metadata.call_id"
            )
        if not isinstance(insights, dict) or not insights:
            raise UserError("insights must be a non-empty dict of names to numbers, e.g. {'risk_score': 0.08}")
        values: dict[str, float] = {}
        for key, value in insights.items():
            if not isinstance(key, str) or not isinstance(value, (int, float)):
                raise UserError(f"insight {key!r}: {value!r} is not a number (insights are numeric)")
            values[key] = float(value)
        self._call(
            v1.AlgorithmServiceStub, "ReportInsights", v1.ReportInsightsRequest(call_id=call_id, insights=values)
        )

    def list_insights(self, reference: str) -> list[v1.Insight]:
        """Every insight reported for your algorithm's calls (`owner/name`), oldest first."""
        found: list[v1.Insight] = []
        token = ""
        while True:
            page = self._call(
                v1.AlgorithmServiceStub,
                "ListInsights",
                v1.ListInsightsRequest(algorithm=reference, page_token=token),
            )
            found += page.insights
            token = page.next_page_token
            if not token:
                return found

    # hosted data (data://): pellucid.client.hosted_data

    def dir(self, path: str) -> DataDirectory:
        """A `data://` directory on this client's connection (inside an algorithm: its runner's)."""
        return data_dir(self, path)

    def file(self, path: str) -> DataFile:
        """A `data://` file on this client's connection."""
        return data_file(self, path)


def client(api_key: str | None = None, api_address: str | None = None, **kwargs: Any) -> AlgoClient:
    """`pellucid.client(api_key=None, api_address=None)`: an AlgoClient."""
    return AlgoClient(api_key, api_address, **kwargs)


# inside a runner: which algorithm call this thread serves, and what it prints

_serving = threading.local()


def current_call_id() -> str:
    """The id of the algorithm call this thread is running (in a runner), else ""."""
    return getattr(_serving, "call_id", "")


class _ThreadTee(io.TextIOBase):
    """sys.stdout while algorithm calls run: each serving thread's writes are kept for its call
    (up to MAX_STDOUT_CHARS) and still reach the stream it replaced."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        buffer: list[str] | None = getattr(_serving, "stdout", None)
        if buffer is not None:
            kept = getattr(_serving, "stdout_chars", 0)
            if kept < MAX_STDOUT_CHARS:
                part = text[: MAX_STDOUT_CHARS - kept]
                buffer.append(part)
                _serving.stdout_chars = kept + len(part)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


_tee_lock = threading.Lock()


@contextlib.contextmanager
def serving_call(call_id: str, connection: Any = None) -> Iterator[list[str]]:
    """Run one algorithm call on this thread: `current_call_id()` names it, `pellucid.client()`
    without arguments uses `connection` (the runner's), and what it prints to sys.stdout is
    collected into the yielded list."""
    with _tee_lock:
        if not isinstance(sys.stdout, _ThreadTee):
            sys.stdout = _ThreadTee(sys.stdout)
    printed: list[str] = []
    _serving.call_id, _serving.stdout, _serving.stdout_chars = call_id, printed, 0
    # the server reads data requests naming the call as the algorithm's (engine/algorithm_data.py)
    _serving.connection = MetadataConnection(connection, ((ALGORITHM_CALL_HEADER, call_id),)) if connection else None
    try:
        yield printed
    finally:
        _serving.call_id, _serving.stdout, _serving.connection = "", None, None


__all__ = ["AlgoClient", "AlgoMetadata", "AlgoResponse", "Algorithm", "client", "current_call_id"]
