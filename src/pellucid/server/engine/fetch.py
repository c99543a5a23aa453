"""Fetching URL inputs at ingestion: http(s) only, bounded in size and time, and by
default never from this machine or its private networks.

A shared server that fetched any URL it was given would let a caller read what only the
server can reach: cloud metadata at 169.254.169.254, admin ports on 127.0.0.1, hosts on
the private network (server-side request forgery). So unless private addresses are
allowed (the embedded server, which runs as the caller anyway, allows them), every
address the host name resolves to must be a public one; the connection goes to the
address that was checked (a second DNS answer cannot swap it), and each redirect is
checked the same way.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse

from pellucid.server.engine.errors import InvalidArgument

MAX_FETCH_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = 20.0
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}


class UrlFetcher:
    def __init__(
        self, allow_private: bool = False, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_FETCH_BYTES
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout  # for the whole fetch, redirects included, not per socket read
        self.max_bytes = max_bytes

    def fetch(self, url: str, field: str) -> bytes:
        """The body at `url`; InvalidArgument (naming `field`) saying why it could not be had."""
        given, deadline = url, time.monotonic() + self.timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:
                parts = urllib.parse.urlsplit(url)
                scheme, host = parts.scheme.lower(), parts.hostname
                port = parts.port or (443 if scheme == "https" else 80)
            except (ValueError, UnicodeError):
                raise InvalidArgument(f"{field} {url!r} is not a valid URL", field=field) from None
            if scheme not in ("http", "https") or not host:
                raise InvalidArgument(f"{field} {url!r} is not an http(s) URL: send the bytes instead", field=field)
            status, location, body = self._get(
                parts, self._addresses(host, port, url, field), port, deadline, url, field
            )
            if status in _REDIRECTS and location:
                try:
                    url = urllib.parse.urljoin(url, location)
                except (ValueError, UnicodeError):
                    raise InvalidArgument(
                        f"cannot fetch {field} {given!r}: bad redirect to {location!r}",
                        reason="FETCH_FAILED",
                        field=field,
                    ) from None
                continue
            if status != 200:
                raise InvalidArgument(
                    f"cannot fetch {field} {url!r}: HTTP {status}", reason="FETCH_FAILED", field=field
                )
            return body
        raise InvalidArgument(
            f"cannot fetch {field} {given!r}: more than {MAX_REDIRECTS} redirects", reason="FETCH_FAILED", field=field
        )

    def _addresses(self, host: str, port: int, url: str, field: str) -> list[str]:
        """The addresses of `host` to connect to, after checking every one it resolves to."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise InvalidArgument(
                f"cannot fetch {field} {url!r}: {host} does not resolve ({exc})", reason="FETCH_FAILED", field=field
            ) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.allow_private:
            private = [a for a in addresses if not is_public(a)]
            if private:
                raise InvalidArgument(
                    f"{field} {url!r}: {host} is a private address ({private[0]}), which this server does not fetch "
                    "from: send the bytes instead (or start the server with --allow-private-urls)",
                    reason="PRIVATE_URL",
                    field=field,
                )
        return addresses

    def _get(
        self, parts: urllib.parse.SplitResult, addresses: list[str], port: int, deadline: float, url: str, field: str
    ) -> tuple[int, str, bytes]:
        """GET from the first of `addresses` that answers; (status, Location, body)."""
        https = parts.scheme.lower() == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        failure: Exception | None = None
        for address in addresses:
            connection = (_PinnedHTTPS if https else _PinnedHTTP)(
                parts.hostname or "", port, address, max(deadline - time.monotonic(), 0.001)
            )
            try:
                try:
                    connection.connect()
                except OSError as exc:  # this address does not answer: try the next one
                    failure = exc
                    continue
                connection.request(
                    "GET", path, headers={"Host": parts.netloc.rpartition("@")[2], "User-Agent": "pellucid-server"}
                )
                response = connection.getresponse()
                if response.status != 200:
                    return response.status, response.getheader("Location") or "", b""
                return 200, "", self._read(connection, response, deadline, url, field)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise InvalidArgument(
                    f"cannot fetch {field} {url!r}: {exc}", reason="FETCH_FAILED", field=field
                ) from None
            finally:
                connection.close()
        raise InvalidArgument(f"cannot fetch {field} {url!r}: {failure}", reason="FETCH_FAILED", field=field)

    def _read(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        deadline: float,
        url: str,
        field: str,
    ) -> bytes:
        """The body, in pieces, each read given only the time left: a server that sends a byte
        now and then cannot hold the fetch (and a worker) past the deadline."""
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise InvalidArgument(
                    f"cannot fetch {field} {url!r}: it took longer than {self.timeout:g}s",
                    reason="FETCH_FAILED",
                    field=field,
                )
            if connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = response.read1(min(_READ_BYTES, self.max_bytes + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise InvalidArgument(f"{field} {url!r} is larger than {self.max_bytes} bytes", reason="TOO_LARGE", field=field)


def is_public(address: str) -> bool:
    """Whether `address` (and any IPv4 address inside an IPv6 one: mapped, compatible,
    6to4, Teredo, NAT64) is globally routable."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
            embedded.append(low32)
        return all(inner is None or inner.is_global for inner in embedded)
    return True


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_READ_BYTES = 1024 * 1024


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to `host` made to the address already checked for it."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pinned = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._pinned, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As _PinnedHTTP, with TLS verified against the host name (not the address)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pinned = address

    def connect(self) -> None:
        sock = socket.create_connection((self._pinned, self.port), self.timeout)
        self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
