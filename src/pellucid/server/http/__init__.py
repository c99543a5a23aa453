"""The HTTP endpoint: deployments' rows as JSON (and, mounted into the same app, other HTTP
protocols such as the Open Inference Protocol's REST form), on uvicorn + starlette in the
server process. Like the gRPC servicers, it only translates: the engine decides."""

from pellucid.server.http.app import build_http_app
from pellucid.server.http.server import HttpServer

__all__ = ["HttpServer", "build_http_app"]
