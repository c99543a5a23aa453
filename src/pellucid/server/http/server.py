"""uvicorn serving the HTTP app on a thread of the server process, with its own event loop."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("pellucid.http")


def _implementations() -> tuple[str, str]:
    """uvicorn's fastest event loop and HTTP parser that are installed (uvloop and httptools are
    dependencies, but uvloop has no Windows build): a third of the endpoint's time otherwise."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        loop = "asyncio"
    else:
        loop = "uvloop"
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - a platform without its wheel
        http = "h11"
    else:
        http = "httptools"
    return loop, http


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it listens (or gave up) through an Event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class HttpServer:
    """Listens on host:port (0: a port the OS picks) once `start` returns; `stop` ends it."""

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
    ) -> None:
        """With a certificate and key it speaks HTTPS only; with a client CA too, it requires a
        client certificate that CA signed (as the gRPC port does)."""
        self.host = host
        self.port = port
        loop, http = _implementations()
        config = uvicorn.Config(
            app,
            loop=loop,
            http=http,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            ssl_ca_certs=str(tls_client_ca) if tls_client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls_client_ca else ssl.CERT_NONE,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=75,  # idle kept-alive connections live as long as behind common load balancers
        )
        self._server = _Server(config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind (OSError if the port is taken), serve on a thread, and return the bound port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # answers go out at once (connections inherit it): with Nagle, a response written in
            # two parts waits for the client's delayed ACK, 40 ms a call
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), name="pellucid-http", daemon=True)
        self._thread.start()
        self._server.ready.wait(10.0)
        if not self._server.started:
            self.stop()
            raise OSError(f"the HTTP server did not start on {self.host}:{self.port}")
        return self.port

    def _run(self, sock: socket.socket) -> None:
        try:
            self._server.run(sockets=[sock])
        except Exception:  # pragma: no cover - logged, the rest of the server keeps serving
            log.exception("the HTTP server stopped")
        finally:
            self._server.ready.set()

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let calls in flight end (up to `grace` seconds), and join the thread."""
        self._server.config.timeout_graceful_shutdown = max(1, round(grace))
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(grace + 5.0)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5.0)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
