"""Fetching URL inputs at ingestion: http(s) only, bounded in size and time."""

from __future__ import annotations

import urllib.error
import urllib.request

from pellucid.server.engine.errors import InvalidArgument

MAX_FETCH_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = 20.0


def fetch_url(url: str, field: str) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidArgument(f"{field} {url!r} is not an http(s) URL: send the bytes instead", field=field)
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 - scheme checked above
            data = response.read(MAX_FETCH_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot fetch {field} {url!r}: {exc}", reason="FETCH_FAILED", field=field) from None
    if len(data) > MAX_FETCH_BYTES:
        raise InvalidArgument(f"{field} {url!r} is larger than {MAX_FETCH_BYTES} bytes", reason="TOO_LARGE", field=field)
    return data
