"""Media sniffing: accepted formats give the right info, bad uploads get a reason and a fix."""

from __future__ import annotations

import base64
import random
import struct
import zlib

import pytest

from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.media import MediaInfo, encode_png, extension, sniff

IMAGE_FIX = "use JPEG, PNG, GIF, WEBP, BMP or TIFF"
AUDIO_FIX = "use WAV, MP3, FLAC, OGG or M4A"


# --- hand-built minimal files ---------------------------------------------------------------


def _rgb(width: int, height: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(width * height * 3)


def _jpeg(width: int, height: int, sof: int = 0xC0) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof_segment = bytes([0xFF, sof]) + struct.pack(">H", 2 + len(frame)) + frame
    sos = b"\xff\xda" + struct.pack(">H", 12) + b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    entropy = b"\x12\x34\xff\x00\x56"  # FF 00 is a stuffed byte inside scan data
    return b"\xff\xd8" + app0 + dqt + sof_segment + sos + entropy + b"\xff\xd9"


def _gif(width: int, height: int, version: bytes = b"89a") -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global table of 2 colours
    table = b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF" + version + screen + table + image + b"\x3b"


def _riff(form: bytes, chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + form + chunks


def _chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _webp_vp8(width: int, height: int) -> bytes:
    body = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8
    return _riff(b"WEBP", _chunk(b"VP8 ", body))


def _webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    return _riff(b"WEBP", _chunk(b"VP8L", b"\x2f" + struct.pack("<I", bits)))  # 5-byte body: padded


def _webp_vp8x(width: int, height: int) -> bytes:
    body = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return _riff(b"WEBP", _chunk(b"VP8X", body) + _chunk(b"VP8L", b"\x2f\x00\x00\x00\x00"))


def _bmp(width: int, height: int) -> bytes:
    row = (width * 3 + 3) // 4 * 4
    pixels = b"\x00" * row * abs(height)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    size = 14 + len(dib) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(dib)) + dib + pixels


def _bmp_core(width: int, height: int) -> bytes:
    dib = struct.pack("<IHHHH", 12, width, height, 1, 24)
    pixels = b"\x00" * ((width * 3 + 3) // 4 * 4) * height
    return b"BM" + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26) + dib + pixels


def _tiff(width: int, height: int, order: str = "<") -> bytes:
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = [
        struct.pack(order + "HHIHH", 256, 3, 1, width, 0),  # ImageWidth, SHORT
        struct.pack(order + "HHII", 257, 4, 1, height),  # ImageLength, LONG
        struct.pack(order + "HHIHH", 258, 3, 1, 8, 0),  # BitsPerSample
    ]
    ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    return magic + struct.pack(order + "I", 8) + ifd + b"\x00" * 16


def _tiff_without_size() -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 259, 3, 1, 1, 0) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


IMAGES = {
    "png": (encode_png(5, 3, _rgb(5, 3)), "png", (5, 3)),
    "jpeg baseline": (_jpeg(640, 480), "jpeg", (640, 480)),
    "jpeg progressive": (_jpeg(33, 17, sof=0xC2), "jpeg", (33, 17)),
    "gif89a": (_gif(21, 9), "gif", (21, 9)),
    "gif87a": (_gif(2, 300, b"87a"), "gif", (2, 300)),
    "webp lossy": (_webp_vp8(320, 200), "webp", (320, 200)),
    "webp lossless": (_webp_vp8l(7, 16384), "webp", (7, 16384)),
    "webp extended": (_webp_vp8x(100000, 3), "webp", (100000, 3)),
    "bmp bottom-up": (_bmp(4, 3), "bmp", (4, 3)),
    "bmp top-down": (_bmp(3, -2), "bmp", (3, 2)),
    "bmp core header": (_bmp_core(2, 2), "bmp", (2, 2)),
    "tiff little-endian": (_tiff(1024, 768), "tiff", (1024, 768)),
    "tiff big-endian": (_tiff(9, 70000, ">"), "tiff", (9, 70000)),
    "tiff without size tags": (_tiff_without_size(), "tiff", (0, 0)),
}


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"


EBML = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84"

VIDEO = {
    "mp4": (_ftyp(b"isom", b"isom", b"avc1", b"mp41"), "video/mp4", ".mp4"),
    "mov": (_ftyp(b"qt  ", b"qt  "), "video/quicktime", ".mov"),
    "webm": (EBML + b"webm\x42\x87\x81\x04", "video/webm", ".webm"),
    "mkv": (EBML[:-1] + b"\x88matroska\x42\x87\x81\x04", "video/x-matroska", ".mkv"),
    "avi": (_riff(b"AVI ", _chunk(b"LIST", b"hdrl")), "video/x-msvideo", ".avi"),
}

AUDIO = {
    "wav": (_riff(b"WAVE", _chunk(b"fmt ", b"\x01\x00" * 8)), "audio/wav", ".wav"),
    "wav rf64": (b"RF64\xff\xff\xff\xffWAVEds64" + b"\x00" * 32, "audio/wav", ".wav"),
    "wav big-endian": (b"RIFX\x00\x00\x00\x24WAVEfmt " + b"\x00" * 32, "audio/wav", ".wav"),
    "mp3 with ID3 tag": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" + b"\x00" * 32, "audio/mpeg", ".mp3"),
    "mp3 bare frame": (b"\xff\xfb\x90\x64" + b"\x00" * 60, "audio/mpeg", ".mp3"),
    "flac": (b"fLaC\x00\x00\x00\x22" + b"\x00" * 34, "audio/flac", ".flac"),
    "ogg": (b"OggS\x00\x02" + b"\x00" * 40, "audio/ogg", ".ogg"),
    "m4a": (_ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4", ".m4a"),
}


# --- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (3, 7), (64, 48)])
def test_encode_png_round_trips_through_sniff(size: tuple[int, int]) -> None:
    width, height = size
    info = sniff(encode_png(width, height, _rgb(width, height)), "image")
    assert info == MediaInfo("image", "png", "image/png", width, height)
    assert extension(info) == ".png"


def test_encode_png_stores_the_pixels_unfiltered_in_one_idat() -> None:
    pixels = _rgb(4, 2, seed=9)
    png = encode_png(4, 2, pixels)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82")
    (idat_length,) = struct.unpack_from(">I", png, 33)
    assert png[37:41] == b"IDAT"
    assert zlib.decompress(png[41 : 41 + idat_length]) == b"\x00" + pixels[:12] + b"\x00" + pixels[12:]


def test_encode_png_level_0_stores_the_rows_uncompressed() -> None:
    pixels = _rgb(3, 2, seed=4)
    png = encode_png(3, 2, pixels, level=0)
    assert sniff(png, "image") == MediaInfo("image", "png", "image/png", 3, 2)
    assert b"\x00" + pixels[:9] + b"\x00" + pixels[9:] in png


def test_a_10_kb_synthetic_png_is_accepted() -> None:
    png = encode_png(64, 56, _rgb(64, 56, seed=3))  # noise barely compresses: ~10.8 KB
    assert 10_000 < len(png) < 12_000
    assert (sniff(png, "image").width, sniff(png, "image").height) == (64, 56)


@pytest.mark.parametrize("bad", [(0, 1, b""), (2, 2, b"\x00" * 11), (1, -1, b"")])
def test_encode_png_rejects_a_wrong_size(bad: tuple[int, int, bytes]) -> None:
    with pytest.raises(ValueError):
        encode_png(*bad)


@pytest.mark.parametrize("name", IMAGES)
def test_hand_built_images_are_accepted_with_their_size(name: str) -> None:
    data, fmt, (width, height) = IMAGES[name]
    info = sniff(data, "image")
    assert (info.kind, info.format, info.width, info.height) == ("image", fmt, width, height)
    assert info.mime == f"image/{fmt}"


def test_image_extensions() -> None:
    found = {sniff(data, "image").format: extension(sniff(data, "image")) for data, _, _ in IMAGES.values()}
    assert found == {"png": ".png", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}


@pytest.mark.parametrize("name", VIDEO)
def test_video_is_recognised_by_magic(name: str) -> None:
    data, mime, ext = VIDEO[name]
    info = sniff(data, "video")
    assert info == MediaInfo("video", name, mime)
    assert extension(info) == ext


@pytest.mark.parametrize("name", AUDIO)
def test_audio_is_recognised_by_magic(name: str) -> None:
    data, mime, ext = AUDIO[name]
    info = sniff(data, "audio")
    assert (info.kind, info.mime, info.width, info.height) == ("audio", mime, 0, 0)
    assert extension(info) == ext


def test_audio_only_mp4_listing_m4a_as_compatible_is_m4a_audio_but_mp4_video() -> None:
    data = _ftyp(b"mp42", b"isom", b"M4A ")
    assert sniff(data, "audio").format == "m4a"
    assert sniff(data, "video").format == "mp4"


def test_extension_of_an_unknown_format_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        extension(MediaInfo("image", "xcf", "image/x-xcf"))


def test_unknown_kind_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        sniff(encode_png(1, 1, b"\x00\x00\x00"), "document")


# --- rejected ---------------------------------------------------------------------------------


def _rejected(data: bytes, kind: str = "image", field: str = "data") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        sniff(data, kind, field)
    assert raised.value.field == field
    return raised.value


def test_empty_data_is_empty_media() -> None:
    error = _rejected(b"", "video", field="inputs[3].data.video.base64")
    assert error.reason == "EMPTY_MEDIA"
    assert error.message == "video is empty (0 bytes): send the file's contents"


def test_png_cut_before_iend_is_truncated() -> None:
    png = encode_png(16, 16, _rgb(16, 16))
    for cut in (12, 1, len(png) // 2):
        error = _rejected(png[:-cut])
        assert error.reason == "CORRUPT_MEDIA"
        assert error.message.startswith("PNG image is truncated: ")
        assert "send the complete file" in error.message


def test_png_with_a_flipped_ihdr_byte_fails_its_checksum() -> None:
    png = bytearray(encode_png(16, 16, _rgb(16, 16)))
    png[19] ^= 0x01  # lowest byte of the width
    error = _rejected(bytes(png))
    assert error.reason == "CORRUPT_MEDIA"
    assert error.message == ("PNG image is corrupt: IHDR checksum mismatch (re-export it or send the original file)")


def test_png_with_bytes_after_iend_is_corrupt() -> None:
    error = _rejected(encode_png(2, 2, _rgb(2, 2)) + b"\x00" * 5)
    assert error.reason == "CORRUPT_MEDIA"
    assert "5 unexpected bytes follow the IEND chunk" in error.message


def test_random_bytes_are_unsupported_and_show_the_first_bytes() -> None:
    data = bytes([0x3F, 0x00, 0x12]) + random.Random(5).randbytes(500)
    error = _rejected(data, field="image")
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert error.message.startswith("image is not a supported format (first bytes 3f 00 12 ")
    assert " ..)" in error.message
    assert error.message.endswith(": " + IMAGE_FIX)


def test_jpeg_without_end_of_image_marker_is_truncated() -> None:
    jpeg = _jpeg(8, 8)
    error = _rejected(jpeg[:-2])
    assert error.reason == "CORRUPT_MEDIA"
    assert error.message.startswith("JPEG image is truncated: no end-of-image marker")
    assert "send the complete file" in error.message


def test_jpeg_without_frame_header_is_corrupt() -> None:
    error = _rejected(b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xda\x00\x02\x11\x22\xff\xd9")
    assert error.reason == "CORRUPT_MEDIA"
    assert "comes before the frame header (SOF)" in error.message


def test_text_given_as_image_is_unsupported_and_says_it_is_text() -> None:
    error = _rejected(b"Hello, this is a caption, not a picture.\n")
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert "first bytes 48 65 6c 6c 6f 2c 20 74 .., which look like text" in error.message
    assert error.message.endswith(IMAGE_FIX)


def test_a_url_given_as_image_says_to_send_the_contents() -> None:
    error = _rejected(b"https://example.com/cat.png")
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert "look like a URL: send the file's contents, not its address" in error.message


def test_base64_given_as_image_says_to_decode_it() -> None:
    error = _rejected(base64.b64encode(encode_png(3, 3, _rgb(3, 3))))
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert "look like base64-encoded PNG: decode it first" in error.message


@pytest.mark.parametrize("name", ["png", "jpeg baseline", "webp lossy"])
def test_an_image_given_as_audio_is_unsupported_for_audio(name: str) -> None:
    data, fmt, _ = IMAGES[name]
    error = _rejected(data, "audio")
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert error.message == f"audio is not a supported format (found {fmt.upper()} image data): {AUDIO_FIX}"


def test_audio_given_as_video_and_video_as_image_are_unsupported() -> None:
    assert "found WAV audio data" in _rejected(AUDIO["wav"][0], "video").message
    assert "found MP4 video data" in _rejected(VIDEO["mp4"][0], "image").message


def test_heif_is_named_but_not_accepted() -> None:
    error = _rejected(_ftyp(b"heic", b"mif1", b"heic"))
    assert error.reason == "UNSUPPORTED_FORMAT"
    assert error.message == f"image is not a supported format (found HEIF image data): {IMAGE_FIX}"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_gif(4, 4)[:-1], "GIF image is truncated: no trailer byte (3B) at the end"),
        (_gif(0, 4), "GIF image is corrupt: the logical screen is 0x4"),
        (_webp_vp8(10, 10)[:-4], "WEBP image is truncated: the RIFF header says"),
        (_webp_vp8(10, 10) + b"\x00\x00", "WEBP image is corrupt: 2 unexpected bytes follow"),
        (_riff(b"WEBP", _chunk(b"ALPH", b"\x00\x00")), "WEBP image is corrupt: the first chunk is 'ALPH'"),
        (_bmp(4, 4)[:-10], "BMP image is truncated: the header says"),
        (_bmp(0, 4), "BMP image is corrupt: the DIB header gives an impossible size 0x4"),
        (b"II*\x00\x00\x10\x00\x00" + b"\x00" * 8, "TIFF image is truncated: the first IFD at byte 4096"),
        (b"MM\x00*\x00\x00\x00\x04", "TIFF image is corrupt: the first IFD offset 4 points into the header"),
    ],
)
def test_structural_damage_in_other_formats_is_named(data: bytes, expected: str) -> None:
    error = _rejected(data)
    assert error.reason == "CORRUPT_MEDIA"
    assert error.message.startswith(expected)


@pytest.mark.parametrize("name", IMAGES)
def test_every_prefix_and_byte_flip_is_accepted_or_rejected_cleanly(name: str) -> None:
    """No damage makes the checks crash: it is either a valid file or an InvalidArgument."""
    data = IMAGES[name][0]
    variants = [data[:cut] for cut in range(len(data))]
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        variants.append(bytes(flipped))
    for variant in variants:
        try:
            sniff(variant, "image")
        except InvalidArgument as error:
            assert error.reason in ("EMPTY_MEDIA", "UNSUPPORTED_FORMAT", "CORRUPT_MEDIA")
            assert error.message


def test_every_strict_prefix_of_a_png_is_rejected() -> None:
    png = encode_png(6, 5, _rgb(6, 5))
    for cut in range(len(png)):
        with pytest.raises(InvalidArgument):
            sniff(png[:cut], "image")
