"""Raw gRPC calls to a pellucid server, past the SDK's own checks, as an attacker or a foreign client makes them."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

import pellucid.api.v1  # noqa: F401 - registers the pellucid descriptors

AREAS = (
    "algorithm",
    "app",
    "concept",
    "data",
    "dataset",
    "evaluation",
    "input",
    "model",
    "module",
    "runner",
    "search",
    "training",
    "user",
    "workflow",
)


def pellucid_methods() -> list[MethodDescriptor]:
    """Every RPC of every pellucid service, from the descriptors (a new RPC is picked up by itself)."""
    pool = descriptor_pool.Default()
    methods = []
    for area in AREAS:
        for service in pool.FindFileByName(f"pellucid/api/v1/{area}.proto").services_by_name.values():
            methods.extend(service.methods)
    return methods


def message_class(descriptor: Any) -> type:
    return message_factory.GetMessageClass(descriptor)


class RawClient:
    """One channel to the server, with a raw `authorization` header (or none)."""

    def __init__(self, address: str, authorization: str | None) -> None:
        self.channel = grpc.insecure_channel(address)
        self.metadata = (("authorization", authorization),) if authorization is not None else ()

    def close(self) -> None:
        self.channel.close()

    def _path(self, method: MethodDescriptor) -> str:
        return f"/{method.containing_service.full_name}/{method.name}"

    def call(self, method: MethodDescriptor, request: Any, timeout: float = 10.0) -> Any:
        """Call any method: a stream request takes an iterable; a stream response is read whole into a list."""
        response_class = message_class(method.output_type)
        kwargs = {"request_serializer": _serialize, "response_deserializer": response_class.FromString}
        path = self._path(method)
        if method.client_streaming and method.server_streaming:
            return list(
                self.channel.stream_stream(path, **kwargs)(iter(request), timeout=timeout, metadata=self.metadata)
            )
        if method.client_streaming:
            return self.channel.stream_unary(path, **kwargs)(iter(request), timeout=timeout, metadata=self.metadata)
        if method.server_streaming:
            return list(self.channel.unary_stream(path, **kwargs)(request, timeout=timeout, metadata=self.metadata))
        return self.channel.unary_unary(path, **kwargs)(request, timeout=timeout, metadata=self.metadata)


def _serialize(message: Any) -> bytes:
    """Messages are serialized as usual; bytes go on the wire as they are (to send undecodable requests)."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def find_method(name: str) -> MethodDescriptor:
    return next(m for m in pellucid_methods() if m.name == name)
