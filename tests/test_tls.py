"""TLS and mutual TLS, with a certificate authority and certificates made here by the openssl binary."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pellucid.client._transport import RetryPolicy
from pellucid.client.user import User
from pellucid.errors import Unavailable, UserError
from pellucid.server.runtime import (
    PellucidServer,
    ServerSettings,
    TlsSettingsError,
    plaintext_exposure_warning,
)

ONCE = RetryPolicy(max_attempts=1)  # a refused handshake is UNAVAILABLE: do not spend seconds retrying it


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # vouches for nobody here


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make certificates")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            *args,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _openssl("-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-subj", "/CN=pellucid test CA")
    _openssl("-keyout", str(d / "other.key"), "-out", str(d / "other.pem"), "-subj", "/CN=another CA")
    leaf = ["-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-addext", "basicConstraints=critical,CA:FALSE"]
    _openssl(
        "-keyout",
        str(d / "server.key"),
        "-out",
        str(d / "server.pem"),
        "-subj",
        "/CN=localhost",
        *leaf,
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
    )
    _openssl("-keyout", str(d / "client.key"), "-out", str(d / "client.pem"), "-subj", "/CN=a client", *leaf)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key", d / "other.pem")


def _serve(data_dir: Path, pki: Pki, client_ca: Path | None = None) -> tuple[PellucidServer, str]:
    server = PellucidServer(
        ServerSettings(data_dir=data_dir, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=client_ca)
    )
    server.start()
    credentials = server.data_dir.read_credentials()
    assert credentials is not None
    return server, credentials.pat


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[tuple[PellucidServer, str]]:
    server, pat = _serve(tmp_path / "data", pki)
    yield server, pat
    server.stop(grace=0.5)


@pytest.fixture
def mtls_server(tmp_path: Path, pki: Pki) -> Iterator[tuple[PellucidServer, str]]:
    server, pat = _serve(tmp_path / "data", pki, client_ca=pki.ca)
    yield server, pat
    server.stop(grace=0.5)


def test_grpcs_with_the_root_certificate_works(tls_server: tuple[PellucidServer, str], pki: Pki) -> None:
    server, pat = tls_server
    for host in ("127.0.0.1", "localhost"):  # the certificate names both
        user = User(base_url=f"grpcs://{host}:{server.port}", pat=pat, root_certificates_path=str(pki.ca))
        assert user.get_user_info().id == "admin"
    user.create_app("over-tls")
    assert [app.id for app in user.list_apps()] == ["over-tls"]


def test_local_clients_of_a_tls_server_use_tls(
    tls_server: tuple[PellucidServer, str], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = tls_server
    monkeypatch.setenv("PELLUCID_ROOT_CERTIFICATES_PATH", str(pki.ca))
    user = User(base_url=f"local://{server.data_dir.path}")  # the PAT from credentials.json, TLS from server.json
    assert user.get_user_info().id == "admin"


def test_plaintext_to_the_tls_port_fails_at_once_and_says_why(tls_server: tuple[PellucidServer, str]) -> None:
    server, pat = tls_server
    with pytest.raises(Unavailable, match=f"speaks TLS\\? then use grpcs://{server.address}"):
        User(base_url=f"grpc://{server.address}", pat=pat, retry=ONCE, timeout=10).get_user_info()


def test_a_root_that_did_not_sign_the_server_certificate_fails(
    tls_server: tuple[PellucidServer, str], pki: Pki
) -> None:
    server, pat = tls_server
    user = User(
        base_url=f"grpcs://{server.address}", pat=pat, root_certificates_path=str(pki.other_ca), retry=ONCE, timeout=10
    )
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        user.get_user_info()


def test_with_a_client_ca_a_client_without_a_certificate_is_refused(
    mtls_server: tuple[PellucidServer, str], pki: Pki
) -> None:
    server, pat = mtls_server
    user = User(
        base_url=f"grpcs://{server.address}", pat=pat, root_certificates_path=str(pki.ca), retry=ONCE, timeout=10
    )
    with pytest.raises(Unavailable, match="requires client certificates, set PELLUCID_CLIENT_CERT"):
        user.get_user_info()


def test_with_a_client_ca_a_client_certificate_is_accepted(
    mtls_server: tuple[PellucidServer, str], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, pat = mtls_server
    monkeypatch.setenv("PELLUCID_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("PELLUCID_CLIENT_KEY", str(pki.client_key))
    user = User(base_url=f"grpcs://{server.address}", pat=pat, root_certificates_path=str(pki.ca))
    assert user.get_user_info().id == "admin"


def test_a_client_certificate_needs_its_key(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    monkeypatch.setenv("PELLUCID_CLIENT_CERT", str(pki.client_cert))
    with pytest.raises(UserError, match="PELLUCID_CLIENT_KEY"):
        User(base_url="grpcs://127.0.0.1:1", pat="x")


def test_unusable_tls_files_are_refused_before_the_data_dir_is_made(tmp_path: Path, pki: Pki) -> None:
    data_dir = tmp_path / "data"
    for settings in (
        ServerSettings(data_dir=data_dir, tls_cert=pki.server_cert, tls_key=pki.client_key),  # mismatch
        ServerSettings(data_dir=data_dir, tls_cert=pki.server_cert),
        ServerSettings(data_dir=data_dir, tls_cert=pki.server_cert, tls_key=tmp_path / "missing.key"),
        ServerSettings(data_dir=data_dir, tls_client_ca=pki.ca),
    ):
        with pytest.raises(TlsSettingsError):
            PellucidServer(settings).start()
    assert not data_dir.exists()


def test_the_cli_serves_tls_and_health_answers_over_it(tmp_path: Path, pki: Pki) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "server",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            "0",
            "--tls-cert",
            str(pki.server_cert),
            "--tls-key",
            str(pki.server_key),
            "--tls-client-ca",
            str(pki.ca),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert lines[1] == "TLS on, client certificates required\n", lines
        address = lines[2].split()[-1]
        credentials = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        with grpc.secure_channel(address, credentials) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("host", "warns"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("[::1]", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.0.0.5", True),
        ("api.example.com", True),
    ],
)
def test_listening_beyond_loopback_without_tls_is_warned_about(
    tmp_path: Path, pki: Pki, host: str, warns: bool
) -> None:
    plain = ServerSettings(data_dir=tmp_path, host=host)
    warning = plaintext_exposure_warning(plain)
    assert (warning is not None) == warns
    if warns:
        assert "without TLS" in warning and "--tls-cert" in warning  # type: ignore[operator]
    secured = ServerSettings(data_dir=tmp_path, host=host, tls_cert=pki.server_cert, tls_key=pki.server_key)
    assert plaintext_exposure_warning(secured) is None


def test_the_http_port_speaks_tls_as_the_grpc_port_does(tmp_path: Path, pki: Pki) -> None:
    """HTTPS only, with the same certificate; with a client CA, a client certificate is required."""
    import ssl

    import httpx

    trusting = ssl.create_default_context(cafile=str(pki.ca))
    for client_ca in (None, pki.ca):
        server = PellucidServer(
            ServerSettings(
                data_dir=tmp_path / f"data-{client_ca is not None}",
                http_port=0,
                tls_cert=pki.server_cert,
                tls_key=pki.server_key,
                tls_client_ca=client_ca,
            )
        )
        server.start()
        try:
            base = f"https://127.0.0.1:{server.http_port}"
            assert server.engine is not None and server.engine.deployments.http_base_url == base
            with pytest.raises(httpx.HTTPError):  # plaintext to the TLS port
                httpx.get(f"http://127.0.0.1:{server.http_port}/openapi.json")
            if client_ca is None:
                assert httpx.get(f"{base}/openapi.json", verify=trusting).status_code == 200
                from pellucid.deployment import Deployment, Unauthorized

                with pytest.raises(Unauthorized):  # the handshake with the CA file worked: the token did not
                    assert Deployment(url=f"{base}/v1/deployments/d", token="pel_dep_x", verify=str(pki.ca)).info
            else:
                with pytest.raises(httpx.HTTPError):
                    httpx.get(f"{base}/openapi.json", verify=trusting).raise_for_status()
                context = ssl.create_default_context(cafile=str(pki.ca))
                context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
                assert httpx.get(f"{base}/openapi.json", verify=context).status_code == 200
        finally:
            server.stop(grace=0.5)
