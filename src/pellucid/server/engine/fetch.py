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
import urllib.parse

from pellucid.server.engine.errors import InvalidArgument

MAX_FETCH_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = 20.0
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}


class UrlFetcher:
    def __init__(self, allow_private: bool = False, timeout: float = FETCH_TIMEOUT,
                 max_bytes: int = MAX_FETCH_BYTES) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_bytes = max_bytes

    def fetch(self, url: str, field: str) -> bytes:
        """The body at `url`; InvalidArgument (naming `field`) saying why it could not be had."""
        given = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise InvalidArgument(f"{field} {url!r} is not an http(s) URL: send the bytes instead", field=field)
            try:
                port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            except ValueError:
                raise InvalidArgument(f"{field} {url!r} has a bad port", field=field) from None
            address = self._address(parts.hostname, port, url, field)
            status, location, body = self._get(parts, address, port, url, field)
            if status in _REDIRECTS and location:
                url = urllib.parse.urljoin(url, location)
                continue
            if status != 200:
                raise InvalidArgument(f"cannot fetch {field} {url!r}: HTTP {status}", reason="FETCH_FAILED", field=field)
            return body
        raise InvalidArgument(f"cannot fetch {field} {given!r}: more than {MAX_REDIRECTS} redirects",
                              reason="FETCH_FAILED", field=field)

    def _address(self, host: str, port: int, url: str, field: str) -> str:
        """An address of `host` to connect to, after checking every address it resolves to."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise InvalidArgument(f"cannot fetch {field} {url!r}: {host} does not resolve ({exc})",
                                  reason="FETCH_FAILED", field=field) from None
        addresses = [str(info[4][0]) for info in infos]
        if not self.allow_private:
            private = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global]
            if private:
                raise InvalidArgument(
                    f"{field} {url!r}: {host} is a private address ({private[0]}), which this server does not fetch "
                    "from: send the bytes instead (or start the server with --allow-private-urls)",
                    reason="PRIVATE_URL", field=field)
        return addresses[0]

    def _get(self, parts: urllib.parse.SplitResult, address: str, port: int, url: str,
             field: str) -> tuple[int, str, bytes]:
        https = parts.scheme.lower() == "https"
        connection = (_PinnedHTTPS if https else _PinnedHTTP)(parts.hostname or "", port, address, self.timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"Host": parts.netloc.rpartition("@")[2],
                                                     "User-Agent": "pellucid-server"})
            response = connection.getresponse()
            if response.status != 200:
                return response.status, response.getheader("Location") or "", b""
            body = response.read(self.max_bytes + 1)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise InvalidArgument(f"cannot fetch {field} {url!r}: {exc}", reason="FETCH_FAILED", field=field) from None
        finally:
            connection.close()
        if len(body) > self.max_bytes:
            raise InvalidArgument(f"{field} {url!r} is larger than {self.max_bytes} bytes", reason="TOO_LARGE",
                                  field=field)
        return 200, "", body


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
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._pinned = address

    def connect(self) -> None:
        sock = socket.create_connection((self._pinned, self.port), self.timeout)
        self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
