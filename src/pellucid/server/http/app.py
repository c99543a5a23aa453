"""The ASGI app: routes of the deployment endpoint, plus any the caller mounts (`extra_routes`).

Blocking engine work (authentication, store reads, queueing) runs on starlette's thread pool;
waiting for a runner holds no thread: the engine's done-callback resolves an asyncio future.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pellucid.server.engine import Engine
from pellucid.server.engine.deployments import DEFAULT_DEADLINE_SECONDS, PendingForward
from pellucid.server.engine.errors import EngineError, ResourceExhausted, Unauthenticated
from pellucid.server.engine.in_flight import user_caller
from pellucid.server.http.errors import engine_error_response, error_response
from pellucid.server.http.openapi import openapi_document
from pellucid.server.http.render import row_json, spec_json

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CALLS_PER_USER = 64
MAX_TIMEOUT_SECONDS = 3600.0
JSON_HEADERS = {"content-type": "application/json"}


@dataclass
class HttpLimits:
    """The endpoint's caps: the largest body (413 past it) and the calls in flight per deployment
    owner (429 past it: the server setting max_predicts_per_user)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_calls_per_user: int = DEFAULT_MAX_CALLS_PER_USER


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (BodyTooLarge) past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated(
            "no token: send `Authorization: Bearer <deployment token>` (or a PAT of the deployment's owner)",
            reason="NO_TOKEN",
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must read `Bearer <token>`", reason="MALFORMED_TOKEN")
    return token.strip()


async def wait_for(pending: PendingForward) -> None:
    """Until every part of the call is answered, holding no thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def wake() -> None:
        loop.call_soon_threadsafe(resolve)

    pending.add_done_callback(wake)
    try:
        await done
    except asyncio.CancelledError:  # the client went away: the runner need not bother
        pending.cancel()
        raise


class DeploymentRoutes:
    """POST /v1/deployments/{id}/forward and GET /v1/deployments/{id}."""

    def __init__(self, engine: Engine, limits: HttpLimits) -> None:
        self.engine = engine
        self.limits = limits

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/deployments/{deployment_id}/forward", self.forward, methods=["POST"]),
            Route("/v1/deployments/{deployment_id}", self.describe, methods=["GET"]),
        ]

    async def describe(self, request: Request) -> Response:
        deployment_id = request.path_params["deployment_id"]
        try:
            secret = bearer_token(request)
            deployment = await run_in_threadpool(self._get, secret, deployment_id)
        except EngineError as exc:
            return engine_error_response(exc)
        base = self.engine.deployments.http_base_url or str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "id": deployment.id,
                "enabled": deployment.enabled,
                "url": f"{base}/v1/deployments/{deployment.id}/forward",
                "model_id": deployment.model_id,
                "workflow_id": deployment.workflow_id,
                "version_id": deployment.version_id,
                "feature_specs_in": [spec_json(s) for s in deployment.input_specs],
                "feature_specs_out": [spec_json(s) for s in deployment.output_specs],
            }
        )

    def _get(self, secret: str, deployment_id: str) -> Any:
        deployments = self.engine.deployments
        return deployments.get(deployments.authenticate(secret), deployment_id)

    async def forward(self, request: Request) -> Response:
        deployment_id = request.path_params["deployment_id"]
        limit = self.limits.max_body_bytes
        try:
            secret = bearer_token(request)
            timeout = _timeout(request)
            try:
                body = await read_body(request, limit)
            except BodyTooLarge:
                return error_response(
                    413,
                    "RESOURCE_EXHAUSTED",
                    f"the request body is larger than this server's limit of {limit} bytes: send fewer rows per "
                    "request (predict_many batches them for you)",
                    reason="BODY_TOO_LARGE",
                    limit=limit,
                )
            rows = _rows(body)
            owner, pending = await run_in_threadpool(self._submit, secret, deployment_id, rows, timeout)
            try:
                await wait_for(pending)
                outputs = pending.result()
            finally:
                self._done(owner)
        except EngineError as exc:
            return engine_error_response(exc)
        return Response(json.dumps({"rows": [row_json(r) for r in outputs]}), headers=JSON_HEADERS)

    def _submit(
        self, secret: str, deployment_id: str, rows: Sequence[Any], timeout: float
    ) -> tuple[str, PendingForward]:
        """Authenticate, count the call against the caller's cap (429 past it) and queue it: one
        trip to the thread pool. Returns whom the call counts against, and the queued call."""
        deployments = self.engine.deployments
        principal = deployments.authenticate(secret)
        owner = admit_predict(self.engine, principal.user_id, self.limits.max_calls_per_user)
        try:
            return owner, deployments.submit_json(principal, deployment_id, rows, timeout)
        except BaseException:
            self._done(owner)
            raise

    def _done(self, owner: str) -> None:
        self.engine.predicts_in_flight.release(owner)


def admit_predict(engine: Engine, user_id: str, cap: int) -> str:
    """Count a predict of `user_id` in the engine's count, shared with gRPC (429 past `cap`);
    returns whom to release when it ends."""
    caller = user_caller(user_id)
    if not engine.predicts_in_flight.acquire(caller, cap):
        raise ResourceExhausted(
            f"{cap} predicts of {caller} (over HTTP and gRPC together) are in flight, the most one user may have "
            "(limit max_predicts_per_user): retry after the Retry-After seconds, or send more rows per call",
            reason="TOO_MANY_CALLS",
        )
    return caller


def _timeout(request: Request) -> float:
    from pellucid.server.engine.errors import InvalidArgument

    given = request.query_params.get("timeout")
    if given is None:
        return DEFAULT_DEADLINE_SECONDS
    try:
        value = float(given)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise InvalidArgument(f"timeout {given!r} must be seconds in (0, {MAX_TIMEOUT_SECONDS:g}]", field="timeout")
    return value


def _rows(body: bytes) -> list[Any]:
    from pellucid.server.engine.errors import InvalidArgument

    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the body is not JSON: {exc}", reason="BAD_JSON") from None
    except RecursionError:  # json.loads gives up on deep nesting (a few hundred levels)
        raise InvalidArgument(
            "the body nests JSON arrays or objects too deeply: flatten it", reason="BAD_JSON"
        ) from None
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise InvalidArgument('the body must be {"rows": [{feature: value, ...}, ...]}', field="rows")
    return rows


async def _not_found(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 404
    if code == 405:
        return error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.url.path}")
    return error_response(code, "NOT_FOUND", f"no such path: {request.url.path} (see /openapi.json)")


def build_http_app(
    engine: Engine,
    extra_routes: Iterable[BaseRoute] = (),
    limits: HttpLimits | None = None,
    extra_openapi_paths: dict[str, Any] | None = None,
) -> Starlette:
    """The ASGI app of the server's HTTP port: the deployment routes, `extra_routes` (the Open
    Inference Protocol's /v2 ...) and the OpenAPI description at /openapi.json."""
    deployment_routes = DeploymentRoutes(engine, limits or HttpLimits())
    document = openapi_document(extra_openapi_paths or {})

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes: list[BaseRoute] = [
        *deployment_routes.routes(),
        Route("/openapi.json", openapi, methods=["GET"]),
        *extra_routes,
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {404: _not_found, 405: _not_found}
    return Starlette(routes=routes, exception_handlers=handlers)


__all__ = ["DEFAULT_MAX_BODY_BYTES", "HttpLimits", "build_http_app"]
