"""URL inputs: a shared server never fetches from loopback or private networks (SSRF), checks
every redirect, and connects to the address it checked."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.client.input import Inputs
from pellucid.client.user import User
from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.fetch import UrlFetcher, _PinnedHTTP
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.media_samples import png

CAT = png("fetched-cat")


def start_web(routes: dict[str, tuple[int, str]]) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A loopback server: path -> (status, Location); 200 answers with CAT."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, location = routes.get(self.path, (404, ""))
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            body = CAT if status == 200 else b""
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def web() -> Iterator[tuple[int, dict[str, tuple[int, str]]]]:
    routes: dict[str, tuple[int, str]] = {"/cat.png": (200, ""), "/moved": (302, "/cat.png"), "/loop": (302, "/loop")}
    server, port = start_web(routes)
    yield port, routes
    server.shutdown()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/cat.png", "http://localhost:{port}/cat.png", "http://[::1]:{port}/cat.png",
    "http://10.1.2.3/x.png", "http://192.168.0.1/x.png", "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/x.png", "http://0.0.0.0:{port}/cat.png", "http://[::ffff:127.0.0.1]:{port}/cat.png",
])
def test_a_shared_server_refuses_loopback_and_private_addresses(url: str, web: tuple[int, dict]) -> None:
    url = url.format(port=web[0])
    with pytest.raises(InvalidArgument) as caught:
        UrlFetcher().fetch(url, "data.image.url")
    assert caught.value.reason == "PRIVATE_URL" and caught.value.field == "data.image.url"
    assert "private address" in str(caught.value) and "--allow-private-urls" in str(caught.value)


def test_redirects_are_followed_and_each_hop_is_checked(web: tuple[int, dict]) -> None:
    port, routes = web
    fetcher = UrlFetcher(allow_private=True)
    assert fetcher.fetch(f"http://127.0.0.1:{port}/moved", "f") == CAT
    with pytest.raises(InvalidArgument, match="more than 5 redirects"):
        fetcher.fetch(f"http://127.0.0.1:{port}/loop", "f")
    with pytest.raises(InvalidArgument, match="HTTP 404"):
        fetcher.fetch(f"http://127.0.0.1:{port}/nothing", "f")

    other, other_port = start_web({"/cat.png": (200, "")})
    try:
        routes["/elsewhere"] = (302, f"http://127.0.0.1:{other_port}/cat.png")

        class OnlyFirstServer(UrlFetcher):
            """Treats the first server as public and everything else as private."""

            def _address(self, host: str, hop_port: int, url: str, field: str) -> str:
                self.allow_private = hop_port == port
                return super()._address(host, hop_port, url, field)

        assert OnlyFirstServer(allow_private=True).fetch(f"http://127.0.0.1:{port}/cat.png", "f") == CAT
        with pytest.raises(InvalidArgument) as caught:  # the redirect leads to a "private" address
            OnlyFirstServer().fetch(f"http://127.0.0.1:{port}/elsewhere", "f")
        assert caught.value.reason == "PRIVATE_URL" and str(other_port) in str(caught.value)
    finally:
        other.shutdown()


def test_the_connection_goes_to_the_address_that_was_checked(web: tuple[int, dict]) -> None:
    """No second DNS lookup at connect time (which a rebinding name could answer differently)."""
    connection = _PinnedHTTP("unresolvable.invalid", web[0], "127.0.0.1", 5.0)
    try:
        connection.request("GET", "/cat.png")
        assert connection.getresponse().read() == CAT
    finally:
        connection.close()


def test_a_default_server_fails_the_private_url_item_alone(tmp_path: Path, web: tuple[int, dict]) -> None:
    server = PellucidServer(ServerSettings(data_dir=tmp_path, port=0))  # as `pellucid server` starts by default
    server.start()
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        user = User(base_url=f"grpc://127.0.0.1:{server.port}", pat=credentials.pat)
        inputs = user.create_app("fetch").inputs()
        result = inputs.upload_inputs([
            Inputs.get_input_from_bytes("local-bytes", image_bytes=png("bytes")),
            Inputs.get_input_from_url("loopback", image_url=f"http://127.0.0.1:{web[0]}/cat.png"),
        ], show_log=False)
        assert list(result.stored_ids) == ["local-bytes"]
        (failure,) = result.failed
        assert failure.input_id == "loopback" and failure.code == "INVALID_ARGUMENT"
        assert "private address" in failure.reason
        assert inputs.download_inputs(["local-bytes"]) == [png("bytes")]
    finally:
        server.stop(0)
