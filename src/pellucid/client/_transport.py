"""Channels, authentication, deadlines and retries: every RPC of the SDK goes through `Connection.call`.

One `Connection` per (target, credentials) is shared by every resource object built
with them, so a script holding a User, Apps and Datasets opens one channel.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from pellucid import __version__
from pellucid.client._protos import encode_with_repeated
from pellucid.client.config import ENV_CLIENT_CERT, ENV_CLIENT_KEY, ClientSettings, missing_credentials
from pellucid.errors import DeadlineExceeded, PellucidError, Unavailable, UserError, from_rpc_error

log = logging.getLogger("pellucid.client")

DEFAULT_TIMEOUT = 30.0
READ_ONLY = frozenset(
    {"PostModelOutputs", "PostInputsSearches"}
)  # predictions and searches change nothing: safe to send again
# UNAVAILABLE reasons that a retry cannot change: "no runner" comes after the server waited
# for one until just before the deadline, and a retry would turn it into DEADLINE_EXCEEDED
FINAL_REASONS = frozenset({"NO_RUNNER"})
# RESOURCE_EXHAUSTED reasons that pass as other calls end (the server's per-user and total caps
# on long calls): retried like UNAVAILABLE. Others (a blob over the size limit) are final.
BUSY_REASONS = frozenset(
    {"TOO_MANY_INPUT_BATCHES", "TOO_MANY_PREDICTS", "TOO_MANY_SEARCHES", "TOO_MANY_STREAMS", "SERVER_BUSY"}
)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
BALANCE_POLICIES = frozenset({"round_robin", "pick_first"})
R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, for codes that mean "the server was not reached"."""

    max_attempts: int = 6
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    retryable: frozenset[grpc.StatusCode] = field(default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE}))

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry number `attempt` (0-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        return random.uniform(cap / 2, cap)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class EncodedRequest:
    """A unary request already in wire format, sent as is; make one with `frame`.

    The bulk uploader serializes each input once, as it is built, and frames a batch
    from those bytes: copying 128 inputs into one request message and encoding 1+ MB
    at once cost ~16 us per input, ten times the framing.
    """

    response_type: type[Message]
    data: bytes
    request_id: str  # the one inside `data`: retrying is safe because the server replays it

    @classmethod
    def frame(cls, response_type: type[Message], header: Message, field: str, items: list[bytes]) -> EncodedRequest:
        """`header` (given a request id if it has none) with `items`, serialized messages,
        appended to its repeated `field`."""
        request_id = ensure_request_id(header)
        return cls(response_type, encode_with_repeated(header, field, items), request_id)


def ensure_request_id(message: Message) -> str:
    """The request id of a mutation's request, set to a fresh one if empty ("" for a request
    without that field): it makes a retry safe, as the server replays the first answer."""
    field = message.DESCRIPTOR.fields_by_name.get("request_id")
    if field is None:
        return ""
    if not getattr(message, field.name):
        setattr(message, field.name, uuid.uuid4().hex)
    return str(getattr(message, field.name))


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` and the SDK's user agent to every call."""

    def __init__(self, secret: Callable[[], str]) -> None:
        self._secret = secret

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        metadata.append(("authorization", f"Bearer {self._secret()}"))
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )

    def intercept_unary_unary(
        self, continuation: Callable[[grpc.ClientCallDetails, Any], Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[grpc.ClientCallDetails, Any], Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return continuation(self._details(details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class Connection:
    """A lazily opened channel with its stubs; safe to share between threads."""

    def __init__(self, settings: ClientSettings, balance: str = "round_robin") -> None:
        """`balance` is how a target naming several replicas is used: "round_robin" spreads calls
        over the replicas that answer; "pick_first" keeps to the first that answers, in the
        order given, and moves to the next when it fails (a runner's one stream)."""
        if balance not in BALANCE_POLICIES:
            raise ValueError(f"balance must be one of {sorted(BALANCE_POLICIES)}, got {balance!r}")
        self.settings = settings
        self.balance = balance
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stubs: dict[Any, Any] = {}  # stub type, or (stub type, method) for encoded calls
        self._secret = settings.secret
        self._user_id = settings.user_id
        self._address = ""

    # lifecycle

    def _open(self) -> grpc.Channel:
        with self._lock:
            if self._channel is not None:
                return self._channel
            target = self.settings.target
            options = [
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.primary_user_agent", f"pellucid-python/{__version__}"),
                ("grpc.enable_retries", 0),  # retries happen in `call`, with a budget the caller sees
            ]
            if target.is_local:
                self._address = self._local_address()
                if self._local_server_speaks_tls():
                    channel = grpc.secure_channel(self._address, self._tls_credentials(), options=options)
                else:
                    channel = grpc.insecure_channel(self._address, options=options)
            else:
                address = target.location
                if len(target.addresses) > 1:
                    address = replica_list(target.addresses)
                    options += [
                        ("grpc.lb_policy_name", self.balance),
                        # the name TLS checks, and the :authority header: the first replica's
                        ("grpc.default_authority", target.addresses[0]),
                    ]
                if target.scheme == "grpcs":
                    channel = grpc.secure_channel(address, self._tls_credentials(), options=options)
                else:
                    channel = grpc.insecure_channel(address, options=options)
            self._channel = grpc.intercept_channel(channel, _MetadataInterceptor(lambda: self._secret))
            self._raw_channel = channel
            return self._channel

    def _tls_credentials(self) -> grpc.ChannelCredentials:
        """Trusted roots (default: the system's) and, for mutual TLS, this client's certificate and key."""
        settings = self.settings

        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(settings.root_certificates_path),
            private_key=read(settings.client_key_path),
            certificate_chain=read(settings.client_cert_path),
        )

    def _local_address(self) -> str:
        from pellucid.client._embedded import local_address
        from pellucid.server.datadir import DataDir

        address = local_address(self.settings.target.location)
        if not self._secret:
            credentials = DataDir(self.settings.target.location).read_credentials()
            if credentials is None:
                raise missing_credentials(str(self.settings.target))
            self._secret = credentials.pat
            self._user_id = self._user_id or credentials.user_id
        return address

    def _local_server_speaks_tls(self) -> bool:
        """A standalone server with --tls-cert serves its data dir's clients over TLS too (they need
        its CA as root_certificates_path, and a certificate that names 127.0.0.1)."""
        from pellucid.server.datadir import STANDALONE, DataDir

        owner = DataDir(self.settings.target.location).owner()
        return owner is not None and owner.kind == STANDALONE and owner.tls and owner.address == self._address

    def _follow_local_owner(self) -> None:
        """If the process that served our local data dir has gone, reconnect to (or become) the new owner."""
        if not self.settings.target.is_local or self._channel is None:
            return
        from pellucid.server.datadir import DataDir

        if DataDir(self.settings.target.location).running_address() != self._address:
            self.close()

    def close(self) -> None:
        """Close the channel; the next call opens a new one."""
        with self._lock:
            if self._channel is not None:
                self._raw_channel.close()
            self._channel = None
            self._stubs.clear()

    @property
    def user_id(self) -> str:
        """The configured user id; for the local target, the data dir's first user once connected."""
        if not self._user_id and self.settings.target.is_local:
            self._open()
        return self._user_id

    def stub(self, stub_type: type) -> Any:
        return self._cached(stub_type, stub_type)

    def _encoded_rpc(self, stub_type: type, method: str, response_type: type[Message]) -> Any:
        """`method` of `stub_type`'s service taking already-serialized bytes."""
        path = f"/{_service_name(stub_type)}/{method}"
        return self._cached(
            (stub_type, method),
            lambda channel: channel.unary_unary(
                path, request_serializer=None, response_deserializer=response_type.FromString
            ),
        )

    def send_stream_encoded(
        self,
        stub_type: type,
        method: str,
        requests: Iterator[bytes],
        response_type: type[Message],
        *,
        timeout: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """`send_stream` of requests already encoded: a caller sending large bytes fields frames them
        itself (one copy) instead of building messages and serializing them (two)."""
        path = f"/{_service_name(stub_type)}/{method}"
        call = self._cached(
            (stub_type, method, bytes),
            lambda channel: channel.stream_unary(
                path, request_serializer=None, response_deserializer=response_type.FromString
            ),
        )
        try:
            return call(requests, timeout=timeout, metadata=metadata or None)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method) from exc

    def read_stream_encoded(
        self,
        stub_type: type,
        method: str,
        request: Message,
        *,
        timeout: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Iterator[bytes]:
        """`read_stream` with each response as its encoded bytes, not parsed: a caller after the
        large bytes field of most responses slices it out instead of copying it twice."""
        path = f"/{_service_name(stub_type)}/{method}"
        call = self._cached(
            (stub_type, method, bytes),
            lambda channel: channel.unary_stream(
                path, request_serializer=type(request).SerializeToString, response_deserializer=None
            ),
        )
        stream = call(request, timeout=timeout, metadata=metadata or None)
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method) from exc
        finally:
            stream.cancel()  # a reader that stops early frees the stream now (a no-op once it ended)

    def _cached(self, key: Any, make: Callable[[grpc.Channel], Any]) -> Any:
        """A stub or callable on the current channel: never one on a channel that `close()`
        (another thread following a new local owner) has just closed."""
        while True:
            channel = self._open()
            with self._lock:
                if self._channel is not channel:
                    continue  # closed meanwhile: open the next one
                made = self._stubs.get(key)
                if made is None:
                    made = self._stubs[key] = make(channel)
                return made

    # calls

    def call(
        self,
        stub_type: type,
        method: str,
        request: R | Message | EncodedRequest,
        *,
        timeout: float | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """Call a unary RPC with a deadline, retrying when that is safe; errors become pellucid.errors.

        The deadline (`timeout` seconds, default 30) covers all attempts. A call is retried
        only if it reads, or carries a request id (filled in here if empty; an
        `EncodedRequest` carries its own), so the server applies it at most once.
        """
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if isinstance(request, EncodedRequest):
            safe = bool(request.request_id) or method.startswith(("Get", "List", "Download")) or method in READ_ONLY
            trace_id = request.request_id or uuid.uuid4().hex
        else:
            request_id = ensure_request_id(request)
            safe = bool(request_id) or method.startswith(("Get", "List", "Download")) or method in READ_ONLY
            trace_id = request_id or uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"no answer within the {timeout:g}s deadline (pass timeout= to allow longer)", method=method
                )
            try:
                if isinstance(request, EncodedRequest):
                    rpc = self._encoded_rpc(stub_type, method, request.response_type)
                    return rpc(request.data, timeout=remaining, metadata=(("x-request-id", trace_id), *metadata))
                rpc = getattr(self.stub(stub_type), method)
                return rpc(request, timeout=remaining, metadata=(("x-request-id", trace_id), *metadata))
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                pause = retry.backoff(attempt)
                reason = from_rpc_error(exc).details.get("reason")
                transient = (code in retry.retryable and reason not in FINAL_REASONS) or (
                    code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason in BUSY_REASONS
                )
                if safe and transient and attempt + 1 < retry.max_attempts and time.monotonic() + pause < deadline:
                    log.debug("%s: %s, retry %d in %.2fs", method, code, attempt + 1, pause)
                    time.sleep(pause)
                    attempt += 1
                    self._follow_local_owner()
                    continue
                raise self._explain(from_rpc_error(exc, method)) from exc

    def _explain(self, error: PellucidError) -> PellucidError:
        """Say what to change when the local data dir's standalone server is down, or a TLS mismatch
        closed the connection (gRPC says only "failed to connect", "Socket closed")."""
        if not isinstance(error, Unavailable):
            return error
        settings, location = self.settings, self.settings.target.location
        if settings.target.is_local:
            from pellucid.client._embedded import standalone_is_down

            down = standalone_is_down(location)
            if not down:
                return error
            error.message += f" ({down})"
        elif "Socket closed" not in error.message:
            return error
        elif settings.target.scheme == "grpc":
            error.message += (
                f" (did {location} close it because it speaks TLS? then use grpcs://{location} "
                "with root_certificates_path)"
            )
        elif settings.target.scheme == "grpcs" and not settings.client_cert_path:
            error.message += (
                f" (if {location} requires client certificates, set {ENV_CLIENT_CERT} and "
                f"{ENV_CLIENT_KEY}, or client_cert and client_key in the profile)"
            )
        error.args = (str(error),)
        return error

    def send_stream(
        self,
        stub_type: type,
        method: str,
        requests: Iterator[Message],
        *,
        timeout: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """A client-streaming call: one deadline, errors mapped; not retried (a stream is not replayable)."""
        try:
            return getattr(self.stub(stub_type), method)(requests, timeout=timeout, metadata=metadata or None)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method) from exc

    def read_stream(
        self,
        stub_type: type,
        method: str,
        request: Message,
        *,
        timeout: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Generator[Any, None, None]:
        """A server-streaming call: yields the responses; errors are mapped where they surface. A
        reader that stops early (an error, a break, closing the generator) cancels the call at
        once, so no stream is left open to hold up the process's exit."""
        call = getattr(self.stub(stub_type), method)(request, timeout=timeout, metadata=metadata or None)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method) from exc
        finally:
            call.cancel()  # a no-op once the stream has ended


class MetadataConnection:
    """A connection whose calls all carry extra metadata (inside an algorithm call: the call's id,
    so the server knows the requests come from the algorithm). Everything else is the connection's."""

    def __init__(self, connection: Connection, metadata: tuple[tuple[str, str], ...]) -> None:
        self._wrapped = connection
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def call(self, stub_type: type, method: str, request: Any, **kwargs: Any) -> Any:
        return self._wrapped.call(stub_type, method, request, metadata=self._metadata, **kwargs)

    def send_stream(self, stub_type: type, method: str, requests: Iterator[Message], *, timeout: float) -> Any:
        return self._wrapped.send_stream(stub_type, method, requests, timeout=timeout, metadata=self._metadata)

    def read_stream(
        self, stub_type: type, method: str, request: Message, *, timeout: float
    ) -> Generator[Any, None, None]:
        return self._wrapped.read_stream(stub_type, method, request, timeout=timeout, metadata=self._metadata)

    def send_stream_encoded(
        self, stub_type: type, method: str, requests: Iterator[bytes], response_type: type[Message], *, timeout: float
    ) -> Any:
        return self._wrapped.send_stream_encoded(
            stub_type, method, requests, response_type, timeout=timeout, metadata=self._metadata
        )

    def read_stream_encoded(self, stub_type: type, method: str, request: Message, *, timeout: float) -> Iterator[bytes]:
        return self._wrapped.read_stream_encoded(stub_type, method, request, timeout=timeout, metadata=self._metadata)

    def close(self) -> None:
        """The wrapped connection belongs to its owner (the runner): nothing to close here."""


def replica_list(addresses: tuple[str, ...]) -> str:
    """A gRPC target naming every replica ("ipv4:10.0.0.1:7317,10.0.0.2:7317"): host names are
    resolved now, once (gRPC's static address lists take IP addresses only, of one family)."""
    per_family: dict[int, list[str]] = {socket.AF_INET: [], socket.AF_INET6: []}
    reachable_by: dict[int, set[str]] = {socket.AF_INET: set(), socket.AF_INET6: set()}
    for hostport in addresses:
        host, _, port = hostport.rpartition(":")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Unavailable(f"cannot resolve replica {hostport}: {exc.strerror}") from None
        for family, _, _, _, sockaddr in infos:
            if family in per_family:
                ip = str(sockaddr[0])
                entry = f"{ip}:{port}" if family == socket.AF_INET else f"[{ip}]:{port}"
                reachable_by[family].add(hostport)
                if entry not in per_family[family]:
                    per_family[family].append(entry)
    for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        if reachable_by[family] == set(addresses):  # one list holds one family: every replica in it
            return f"{scheme}:" + ",".join(per_family[family])
    raise UserError(
        f"the replicas {', '.join(addresses)} do not share an address family (some are IPv4 only, some "
        "IPv6 only): name every replica by an address of one family, or put them behind a load balancer"
    )


def _service_name(stub_type: type) -> str:
    """ "pellucid.api.v1.InputService" for InputServiceStub, from the generated module's descriptor."""
    module = sys.modules[stub_type.__module__]
    name = stub_type.__name__.removesuffix("Stub")
    for pb2 in vars(module).values():
        descriptor = getattr(pb2, "DESCRIPTOR", None)
        service = getattr(descriptor, "services_by_name", {}).get(name)
        if service is not None:
            return service.full_name
    raise LookupError(f"no service {name} behind {stub_type.__module__}")


_connections: dict[tuple, Connection] = {}
_connections_lock = threading.Lock()


def get_connection(settings: ClientSettings, balance: str = "round_robin") -> Connection:
    """The shared connection for these settings (one channel per target, credentials and
    `balance` policy, see Connection).

    The user id is not part of the key, nor kept by the connection: objects acting as
    different users with one token share the channel, and each keeps its own user id.
    """
    key = (
        settings.target,
        settings.pat,
        settings.token,
        settings.root_certificates_path,
        settings.client_cert_path,
        settings.client_key_path,
        balance,
    )
    with _connections_lock:
        connection = _connections.get(key)
        if connection is None:
            connection = _connections[key] = Connection(dataclasses.replace(settings, user_id=""), balance)
        return connection
