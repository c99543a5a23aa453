"""Cheap checks on uploaded media bytes: what format is this, and is it structurally sound?

Bulk ingestion sees thousands of small files a second, so nothing here decodes pixels or
samples. Images get their magic number checked and their container structure walked (PNG
chunks, JPEG marker segments up to the frame header, RIFF/BMP/TIFF headers): that costs
microseconds and still catches what actually goes wrong in uploads - the wrong file type, a
truncated transfer, a damaged header. Video and audio are identified by magic number only.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from pellucid.server.engine.errors import InvalidArgument

UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
CORRUPT_MEDIA = "CORRUPT_MEDIA"
EMPTY_MEDIA = "EMPTY_MEDIA"

KINDS = ("image", "video", "audio")


@dataclass(frozen=True)
class MediaInfo:
    """What `sniff` found. width/height are 0 for video and audio, and when an image header doesn't say."""

    kind: str
    format: str
    mime: str
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class _Format:
    kind: str
    label: str  # how messages name the format
    mime: str
    extension: str


_FORMATS: dict[str, _Format] = {
    "png": _Format("image", "PNG", "image/png", ".png"),
    "jpeg": _Format("image", "JPEG", "image/jpeg", ".jpg"),
    "gif": _Format("image", "GIF", "image/gif", ".gif"),
    "webp": _Format("image", "WEBP", "image/webp", ".webp"),
    "bmp": _Format("image", "BMP", "image/bmp", ".bmp"),
    "tiff": _Format("image", "TIFF", "image/tiff", ".tiff"),
    "mp4": _Format("video", "MP4", "video/mp4", ".mp4"),
    "mov": _Format("video", "MOV", "video/quicktime", ".mov"),
    "webm": _Format("video", "WEBM", "video/webm", ".webm"),
    "mkv": _Format("video", "MKV", "video/x-matroska", ".mkv"),
    "avi": _Format("video", "AVI", "video/x-msvideo", ".avi"),
    "wav": _Format("audio", "WAV", "audio/wav", ".wav"),
    "mp3": _Format("audio", "MP3", "audio/mpeg", ".mp3"),
    "flac": _Format("audio", "FLAC", "audio/flac", ".flac"),
    "ogg": _Format("audio", "OGG", "audio/ogg", ".ogg"),
    "m4a": _Format("audio", "M4A", "audio/mp4", ".m4a"),
}

# Recognised so the message can say what the data is, but not accepted.
_RECOGNISED_ONLY: dict[str, str] = {"heif": "HEIF image", "avif": "AVIF image"}

_CHOICES = {
    "image": "JPEG, PNG, GIF, WEBP, BMP or TIFF",
    "video": "MP4, MOV, WEBM, MKV or AVI",
    "audio": "WAV, MP3, FLAC, OGG or M4A",
}


class _Broken(Exception):
    """A structural check failed; `sniff` turns it into InvalidArgument naming the format."""

    def __init__(self, detail: str, *, truncated: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.truncated = truncated


# --- public API -----------------------------------------------------------------------------


def sniff(data: bytes, kind: str, field: str = "data") -> MediaInfo:
    """Check that `data` is a supported, structurally sound file of `kind` ("image", "video" or "audio").

    Raises InvalidArgument with reason UNSUPPORTED_FORMAT, CORRUPT_MEDIA or EMPTY_MEDIA and the
    given `field`, with a message that says what was found and what to send instead.
    Raises ValueError for an unknown `kind`: that is the caller's bug, not the uploader's.
    """
    if kind not in _CHOICES:
        raise ValueError(f"kind must be 'image', 'video' or 'audio', not {kind!r}")
    if not data:
        raise InvalidArgument(f"{kind} is empty (0 bytes): send the file's contents", reason=EMPTY_MEDIA, field=field)

    name = _identify(data)
    if name == "mp4" and kind == "audio" and _M4A_BRANDS.intersection(_ftyp_brands(data)):
        name = "m4a"  # audio-only MP4 with a generic major brand that lists M4A as compatible
    fmt = _FORMATS.get(name) if name else None
    if fmt is None or fmt.kind != kind:
        if fmt is not None:
            found = f"found {fmt.label} {fmt.kind} data"
        elif name is not None:
            found = f"found {_RECOGNISED_ONLY[name]} data"
        else:
            found = f"first bytes {_hex_head(data)}{_hint(data)}"
        raise InvalidArgument(
            f"{kind} is not a supported format ({found}): use {_CHOICES[kind]}",
            reason=UNSUPPORTED_FORMAT,
            field=field,
        )
    assert name is not None

    check = _IMAGE_CHECKS.get(name)
    if check is None:  # video and audio: the magic number is all we check
        return MediaInfo(fmt.kind, name, fmt.mime)
    try:
        width, height = check(data)
    except _Broken as broken:
        raise _corrupt(fmt, broken, field) from None
    except (struct.error, IndexError):  # a bound check missed: still the upload's fault, not a 500
        raise _corrupt(fmt, _Broken("a header runs past the end of the data", truncated=True), field) from None
    return MediaInfo(fmt.kind, name, fmt.mime, width, height)


def extension(info: MediaInfo) -> str:
    """The usual file extension for `info.format`, with the dot (".png", ".jpg", ".mp4", ...)."""
    fmt = _FORMATS.get(info.format)
    if fmt is None:
        raise ValueError(f"unknown media format {info.format!r}")
    return fmt.extension


def encode_png(width: int, height: int, pixels: bytes, level: int = 6) -> bytes:
    """Encode 8-bit RGB `pixels` (row-major, len == width*height*3) as a PNG.

    Made for synthetic images in demos, tests and benchmarks, so it stays minimal: one IDAT
    chunk, no filtering (filter byte 0 on every row), zlib compression at `level` (0 stores
    the pixels as they are, which is fast for benchmark data).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    expected = width * height * 3
    if len(pixels) != expected:
        raise ValueError(f"pixels has {len(pixels)} bytes: a {width}x{height} RGB image needs {expected}")
    stride = width * 3
    raw = bytearray(height * (stride + 1))
    for y in range(height):  # each row is a zero filter byte and the row's pixels
        raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)] = pixels[y * stride : (y + 1) * stride]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(raw, level)),
            _png_chunk(b"IEND", b""),
        )
    )


# --- identification by magic number ---------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RIFF_TYPES = {b"WEBP": "webp", b"AVI ": "avi", b"WAVE": "wav"}
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P "})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def _identify(data: bytes) -> str | None:
    """The format name for `data`'s magic number (possibly one of _RECOGNISED_ONLY), or None."""
    head = data[:16]
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF"):
        return _RIFF_TYPES.get(head[8:12])
    if head[:4] in (b"RF64", b"RIFX") and head[8:12] == b"WAVE":  # >4 GB and big-endian WAV
        return "wav"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head[4:8] == b"ftyp" and len(head) >= 12:
        return _ftyp_format(head[8:12])
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML; the DocType sits in the first few dozen bytes
        return "mkv" if b"matroska" in data[:64] else "webm"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or _is_mpeg_audio_frame(head):
        return "mp3"
    return None


def _ftyp_format(major: bytes) -> str:
    """ISO base media files share one magic; the major brand says what they hold."""
    if major in _M4A_BRANDS:
        return "m4a"
    if major == b"qt  ":
        return "mov"
    if major in _HEIF_BRANDS:
        return "heif"
    if major in _AVIF_BRANDS:
        return "avif"
    return "mp4"


def _ftyp_brands(data: bytes) -> list[bytes]:
    """Major and compatible brands of the leading ftyp box (clipped to the data)."""
    (size,) = struct.unpack_from(">I", data, 0)
    end = min(size, len(data))
    brands = [data[8:12]]
    brands.extend(data[pos : pos + 4] for pos in range(16, end - 3, 4))
    return brands


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, then no reserved version/layer/bitrate/rate values.

    Checking more than the sync bits keeps ADTS AAC (layer bits 00) and random FF Ex bytes out.
    """
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


# --- image structure checks: each returns (width, height) or raises _Broken --------------------

_PNG_DEPTHS: dict[int, tuple[int, ...]] = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _check_png(data: bytes) -> tuple[int, int]:
    """Signature, a 13-byte IHDR with a good CRC and sane values, then chunks up to an IEND at the very end.

    Only IHDR's CRC is verified: hashing IDAT would cost time in proportion to the file size.
    """
    n = len(data)
    if n < 33:
        raise _Broken("the IHDR header chunk is incomplete", truncated=True)
    length, chunk_type = struct.unpack_from(">I4s", data, 8)
    if chunk_type != b"IHDR" or length != 13:
        raise _Broken("the first chunk is not a 13-byte IHDR header")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise _Broken("IHDR checksum mismatch")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise _Broken(f"IHDR gives an impossible size {width}x{height}")
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise _Broken(f"IHDR gives bit depth {depth} with colour type {colour}, which PNG does not allow")
    if compression != 0 or filtering != 0 or interlace > 1:
        raise _Broken("IHDR names an unknown compression, filter or interlace method")

    pos, seen_idat = 33, False
    while pos + 12 <= n:
        length, chunk_type = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        name = chunk_type.decode("latin-1")
        if not chunk_type.isalpha():
            raise _Broken(f"bad chunk type {name!r} at byte {pos}")
        if end > n:
            raise _Broken(f"the {name} chunk at byte {pos} runs past the end of the data", truncated=True)
        if chunk_type == b"IEND":
            if not seen_idat:
                raise _Broken("there is no IDAT (image data) chunk")
            if end != n:
                raise _Broken(f"{n - end} unexpected bytes follow the IEND chunk")
            return width, height
        seen_idat = seen_idat or chunk_type == b"IDAT"
        pos = end
    raise _Broken("no IEND chunk at the end", truncated=True)


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


def _check_jpeg(data: bytes) -> tuple[int, int]:
    """SOI at the start, EOI at the end, and a frame header (SOF) reached by walking marker segments.

    The walk jumps segment to segment by their length fields and stops at SOF, so it never
    touches the entropy-coded data after it.
    """
    n = len(data)
    if n < 4 or data[-2:] != b"\xff\xd9":
        raise _Broken("no end-of-image marker (FF D9) at the end", truncated=True)
    limit = n - 2  # segments must end before the EOI marker
    pos = 2
    while pos < limit:
        if data[pos] != 0xFF:
            raise _Broken(f"expected a marker at byte {pos}, found {data[pos]:02x}")
        start = pos
        while pos < limit and data[pos] == 0xFF:  # fill bytes may pad before a marker
            pos += 1
        if pos >= limit:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            raise _Broken(f"marker FF {marker:02X} at byte {start} comes before the frame header (SOF)")
        if pos + 2 > limit:
            break
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > limit:
            raise _Broken(f"the FF {marker:02X} segment at byte {start} has a bad length {length}")
        if marker in _JPEG_SOF:
            if length < 8:
                raise _Broken(f"the frame header (FF {marker:02X}) is too short")
            _, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            if width == 0 or components == 0 or length < 8 + 3 * components:
                raise _Broken(f"the frame header gives width {width} and {components} components")
            return width, height  # height 0 is legal: a DNL marker gives it later
        pos += length
    raise _Broken("no frame header (SOF marker) before the image data")


def _check_gif(data: bytes) -> tuple[int, int]:
    """Header, a non-empty logical screen, a global colour table that fits, and the 3B trailer."""
    n = len(data)
    if n < 14:
        raise _Broken("the logical screen descriptor is incomplete", truncated=True)
    if data[-1] != 0x3B:
        raise _Broken("no trailer byte (3B) at the end", truncated=True)
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    if width == 0 or height == 0:
        raise _Broken(f"the logical screen is {width}x{height}")
    first_block = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    if first_block >= n:
        raise _Broken("the global colour table is incomplete", truncated=True)
    if data[first_block] not in (0x21, 0x2C, 0x3B):  # extension, image descriptor or trailer
        raise _Broken(f"unexpected block type {data[first_block]:02x} after the header")
    return width, height


def _check_webp(data: bytes) -> tuple[int, int]:
    """RIFF size matching the data (one pad byte allowed), then a VP8, VP8L or VP8X first chunk."""
    n = len(data)
    if n < 12:
        raise _Broken("the RIFF header is incomplete", truncated=True)
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = riff_size + 8
    if end > n:
        raise _Broken(f"the RIFF header says {end} bytes but the data has {n}", truncated=True)
    if n > end + 1:
        raise _Broken(f"{n - end} unexpected bytes follow the RIFF container")
    if end < 20:
        raise _Broken("the RIFF container holds no image chunk")
    fourcc, size = struct.unpack_from("<4sI", data, 12)
    body = 20
    if body + size > end:
        raise _Broken(f"the {fourcc.decode('latin-1')!r} chunk runs past the end of the RIFF container")
    if fourcc == b"VP8 ":
        if size < 10 or data[body + 3 : body + 6] != b"\x9d\x01\x2a":
            raise _Broken("the VP8 chunk has no key frame start code (9D 01 2A)")
        width, height = struct.unpack_from("<HH", data, body + 6)
        width, height = width & 0x3FFF, height & 0x3FFF  # top 2 bits are scaling
        if width == 0 or height == 0:
            raise _Broken(f"the VP8 frame is {width}x{height}")
        return width, height
    if fourcc == b"VP8L":
        if size < 5 or data[body] != 0x2F:
            raise _Broken("the VP8L chunk has no signature byte (2F)")
        (bits,) = struct.unpack_from("<I", data, body + 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if fourcc == b"VP8X":
        if size < 10:
            raise _Broken("the VP8X chunk is too short")
        width = int.from_bytes(data[body + 4 : body + 7], "little") + 1
        height = int.from_bytes(data[body + 7 : body + 10], "little") + 1
        return width, height
    raise _Broken(f"the first chunk is {fourcc.decode('latin-1')!r}, not VP8, VP8L or VP8X")


def _check_bmp(data: bytes) -> tuple[int, int]:
    """File size no larger than the data, a known DIB header with a real size, pixel data inside the file."""
    n = len(data)
    if n < 26:
        raise _Broken("the file and DIB headers are incomplete", truncated=True)
    file_size, offset, dib_size = struct.unpack_from("<I4xII", data, 2)
    if file_size > n:
        raise _Broken(f"the header says {file_size} bytes but the data has {n}", truncated=True)
    if dib_size == 12:  # OS/2 1.x / BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    elif 16 <= dib_size <= 124:  # BITMAPINFOHEADER and its successors, OS/2 2.x
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise _Broken(f"unknown DIB header size {dib_size}")
    if 14 + dib_size > n:
        raise _Broken("the DIB header is incomplete", truncated=True)
    if width <= 0 or height == 0:
        raise _Broken(f"the DIB header gives an impossible size {width}x{height}")
    if offset < 14 + dib_size:
        raise _Broken(f"the pixel data offset {offset} points into the headers")
    if offset >= n:
        raise _Broken("the pixel data is missing", truncated=True)
    return width, abs(height)  # negative height means rows run top-down


def _check_tiff(data: bytes) -> tuple[int, int]:
    """A first IFD that lies inside the data; width/height from its tags 256/257 when present (else 0)."""
    n = len(data)
    if n < 8:
        raise _Broken("the header is incomplete", truncated=True)
    order = "<" if data[0] == 0x49 else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd < 8:
        raise _Broken(f"the first IFD offset {ifd} points into the header")
    if ifd + 2 > n:
        raise _Broken(f"the first IFD at byte {ifd} is past the end of the data", truncated=True)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    if count == 0:
        raise _Broken("the first IFD has no entries")
    entries_end = ifd + 2 + 12 * count
    if entries_end > n:
        raise _Broken("the first IFD is incomplete", truncated=True)
    dims = {256: 0, 257: 0}  # ImageWidth, ImageLength
    for pos in range(ifd + 2, entries_end, 12):
        tag, field_type = struct.unpack_from(order + "HH", data, pos)
        if tag > 257:
            break  # entries are sorted by tag
        if tag in dims and field_type in (3, 4):  # SHORT or LONG, stored in the value field
            (dims[tag],) = struct.unpack_from(order + ("H" if field_type == 3 else "I"), data, pos + 8)
    return dims[256], dims[257]


_IMAGE_CHECKS: dict[str, Callable[[bytes], tuple[int, int]]] = {
    "png": _check_png,
    "jpeg": _check_jpeg,
    "gif": _check_gif,
    "webp": _check_webp,
    "bmp": _check_bmp,
    "tiff": _check_tiff,
}


# --- helpers --------------------------------------------------------------------------------


def _png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", zlib.crc32(chunk_type + body))


def _corrupt(fmt: _Format, broken: _Broken, field: str) -> InvalidArgument:
    if broken.truncated:
        message = f"{fmt.label} {fmt.kind} is truncated: {broken.detail} (send the complete file)"
    else:
        message = f"{fmt.label} {fmt.kind} is corrupt: {broken.detail} (re-export it or send the original file)"
    return InvalidArgument(message, reason=CORRUPT_MEDIA, field=field)


def _hex_head(data: bytes, count: int = 8) -> str:
    shown = " ".join(f"{b:02x}" for b in data[:count])
    return shown + " .." if len(data) > count else shown


def _hint(data: bytes) -> str:
    """Name the usual mistakes behind text-shaped uploads: a URL, a data: URL, base64, plain text.

    Only runs on the error path, so it may spend a little time.
    """
    head = data[:64]
    if not all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return ""
    if head.startswith((b"http://", b"https://")):
        return ", which look like a URL: send the file's contents, not its address"
    if head.startswith(b"data:"):
        return ", which look like a data: URL: send the base64-decoded part after the comma"
    stripped = head.strip()
    try:
        decoded = base64.b64decode(stripped[: len(stripped) // 4 * 4], validate=True)
    except binascii.Error:
        decoded = b""
    name = _identify(decoded) if decoded else None
    if name is not None:
        label = _FORMATS[name].label if name in _FORMATS else _RECOGNISED_ONLY[name].split()[0]
        return f", which look like base64-encoded {label}: decode it first"
    return ", which look like text"
