"""Small, distinct, valid media for tests (made here, nothing downloaded)."""

from __future__ import annotations

import hashlib

from pellucid.server.engine.media import encode_png


def png(seed: int | str, side: int = 8) -> bytes:
    noise = hashlib.shake_128(str(seed).encode()).digest(side * side * 3)
    return encode_png(side, side, noise)


def mp4(size: int, seed: int = 0) -> bytes:
    """An ISO-BMFF header (what the server checks for video) followed by filler."""
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    return head + hashlib.shake_128(str(seed).encode()).digest(size - len(head))
