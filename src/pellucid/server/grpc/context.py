"""Per-request state set by the interceptor and read by servicers: who is calling."""

from __future__ import annotations

import contextvars

from pellucid.server.engine import Principal

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("pellucid_principal", default=None)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("pellucid_request_id", default="")


def principal() -> Principal:
    current = _principal.get()
    if current is None:  # only reachable if a servicer is registered without the interceptor
        raise RuntimeError("no authenticated principal for this request")
    return current


def request_id() -> str:
    return _request_id.get()


def bind(new_principal: Principal, new_request_id: str) -> tuple[contextvars.Token, contextvars.Token]:
    return _principal.set(new_principal), _request_id.set(new_request_id)


def unbind(tokens: tuple[contextvars.Token, contextvars.Token]) -> None:
    _principal.reset(tokens[0])
    _request_id.reset(tokens[1])
