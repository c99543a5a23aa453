"""URL inputs: a shared server never fetches from loopback or private networks (SSRF), checks
every redirect, and connects to the address it checked."""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.client.input import Inputs
from pellucid.client.user import User
from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.fetch import UrlFetcher
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
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def web() -> Iterator[tuple[int, dict[str, tuple[int, str]]]]:
    routes: dict[str, tuple[int, str]] = {"/cat.png": (200, ""), "/moved": (302, "/cat.png"), "/loop": (302, "/loop")}
    server, port = start_web(routes)
    yield port, routes
    server.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/cat.png",
        "http://localhost:{port}/cat.png",
        "http://[::1]:{port}/cat.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x.png",
        "http://0.0.0.0:{port}/cat.png",
        "http://[::ffff:127.0.0.1]:{port}/cat.png",
        "http://2130706433:{port}/cat.png",
        "http://evil.example@127.0.0.1:{port}/cat.png",
        "http://[::7f00:1]/x.png",
        "http://[64:ff9b::a00:1]/x.png",
        "http://[2002:7f00:1::]/x.png",  # IPv4 inside IPv6
    ],
)
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

            def _addresses(self, host: str, hop_port: int, url: str, field: str) -> list[str]:
                self.allow_private = hop_port == port
                return super()._addresses(host, hop_port, url, field)

        assert OnlyFirstServer(allow_private=True).fetch(f"http://127.0.0.1:{port}/cat.png", "f") == CAT
        with pytest.raises(InvalidArgument) as caught:  # the redirect leads to a "private" address
            OnlyFirstServer().fetch(f"http://127.0.0.1:{port}/elsewhere", "f")
        assert caught.value.reason == "PRIVATE_URL" and str(other_port) in str(caught.value)
    finally:
        other.shutdown()


def test_a_default_server_fails_the_private_url_item_alone(tmp_path: Path, web: tuple[int, dict]) -> None:
    server = PellucidServer(ServerSettings(data_dir=tmp_path, port=0))  # as `pellucid server` starts by default
    server.start()
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        user = User(base_url=f"grpc://127.0.0.1:{server.port}", pat=credentials.pat)
        inputs = user.create_app("fetch").inputs()
        result = inputs.upload_inputs(
            [
                Inputs.get_input_from_bytes("local-bytes", image_bytes=png("bytes")),
                Inputs.get_input_from_url("loopback", image_url=f"http://127.0.0.1:{web[0]}/cat.png"),
            ],
            show_log=False,
        )
        assert list(result.stored_ids) == ["local-bytes"]
        (failure,) = result.failed
        assert failure.input_id == "loopback" and failure.code == "INVALID_ARGUMENT"
        assert "private address" in failure.reason
        assert inputs.download_inputs(["local-bytes"]) == [png("bytes")]
    finally:
        server.stop(0)


def resolving(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]], once: bool = False) -> None:
    """DNS for test names; with `once`, a name answers one lookup only (a rebinding name's
    second answer would differ: here there is none)."""
    real = socket.getaddrinfo
    asked: set[str] = set()

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in names:
            return real(host, port, *args, **kwargs)
        if once and host in asked:
            raise socket.gaierror(f"{host}: asked twice")
        asked.add(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in names[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_every_address_a_name_resolves_to_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    resolving(monkeypatch, {"mixed.test": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(InvalidArgument) as caught:
        UrlFetcher().fetch("http://mixed.test/x.png", "f")
    assert caught.value.reason == "PRIVATE_URL" and "127.0.0.1" in str(caught.value)


def test_the_fetch_connects_to_the_address_it_checked_and_tries_the_next_one(
    monkeypatch: pytest.MonkeyPatch, web: tuple[int, dict]
) -> None:
    port = web[0]
    resolving(monkeypatch, {"pinned.test": ["127.0.0.1"]}, once=True)
    assert UrlFetcher(allow_private=True).fetch(f"http://pinned.test:{port}/cat.png", "f") == CAT
    resolving(monkeypatch, {"two.test": ["127.0.0.2", "127.0.0.1"]})  # nothing listens on the first
    assert UrlFetcher(allow_private=True).fetch(f"http://two.test:{port}/cat.png", "f") == CAT


@pytest.mark.parametrize("url", ["http://[::1", "http://exa mple.com:99999/x", "http://a.com:port/x"])
def test_a_malformed_url_is_the_item_s_error(url: str) -> None:
    with pytest.raises(InvalidArgument):
        UrlFetcher().fetch(url, "f")


def test_a_malformed_redirect_is_the_item_s_error(web: tuple[int, dict]) -> None:
    port, routes = web
    routes["/bad"] = (302, "http://[::1/x")
    with pytest.raises(InvalidArgument, match=r"not a valid URL|bad redirect"):
        UrlFetcher(allow_private=True).fetch(f"http://127.0.0.1:{port}/bad", "f")


def test_a_server_that_dribbles_cannot_hold_the_fetch_past_its_deadline() -> None:
    stop = threading.Event()

    class Dribble(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):  # 1,000 bytes, one every 0.2 s: 200 s in all
                if stop.wait(0.2):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dribble)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(InvalidArgument, match="took longer than 1s"):
            UrlFetcher(allow_private=True, timeout=1.0).fetch(f"http://127.0.0.1:{server.server_address[1]}/", "f")
    finally:
        stop.set()
        server.shutdown()


def test_https_certificates_are_verified(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server, port = start_web({"/cat.png": (200, "")})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    try:  # a self-signed certificate: no trusted authority vouches for it
        with pytest.raises(InvalidArgument, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            UrlFetcher(allow_private=True).fetch(f"https://127.0.0.1:{port}/cat.png", "f")
    finally:
        server.shutdown()
