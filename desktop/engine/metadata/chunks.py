"""Text chunks in and out of image files: PNG tEXt/zTXt/iTXt and EXIF UserComment.

Nothing here knows what the text means; the readers interpret it. Every read is bounded
(``MAX_RAW_CHARS``) so a hostile file cannot make the reader hold hundreds of megabytes.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from typing import Any, BinaryIO

from PIL import Image

#: Version of the ``sandstorm`` chunk's JSON.
METADATA_VERSION = 1
PARAMETERS_KEY = "parameters"
SANDSTORM_KEY = "sandstorm"

#: Chunks that may carry generation settings; when none is among the early chunks of a PNG,
#: the late ones (after the pixel data) are looked at too.
KNOWN_KEYS = (
    SANDSTORM_KEY,
    PARAMETERS_KEY,
    "prompt",
    "workflow",
    "invokeai_metadata",
    "Comment",
    "comment",
    "UserComment",
)
#: Chunks longer than this are cut.
MAX_RAW_CHARS = 4 * 1024 * 1024

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_MAX_CHUNKS = 100_000


def decode_user_comment(data: bytes | str) -> str:
    """Decode an EXIF UserComment: an 8-byte charset prefix, then the text.

    "UNICODE\\0" means UTF-16, big-endian when written by AUTOMATIC1111 (piexif) but
    little-endian from some tools, so the byte order is guessed from where the zeros are.
    """
    if isinstance(data, str):
        return data.rstrip("\0")
    prefix, body = data[:8], data[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", errors="replace")
        else:
            even = body[0::2].count(0)
            odd = body[1::2].count(0)
            text = body.decode("utf-16-le" if odd > even else "utf-16-be", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8, b"JIS\0\0\0\0\0"):
        text = body.decode("utf-8", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def _to_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value[:MAX_RAW_CHARS]
    if isinstance(value, bytes):
        return value[:MAX_RAW_CHARS].decode("utf-8", errors="replace")
    return None


def png_text_chunks(stream: BinaryIO) -> dict[str, str]:
    """Every text chunk of a PNG, wherever it is, without decoding a pixel (IDAT is skipped).

    Compressed chunks are inflated to at most 4 MiB, so a zip bomb cannot exhaust memory.
    """
    found: dict[str, str] = {}
    stream.seek(0)
    if stream.read(8) != _PNG_SIGNATURE:
        return found
    for _ in range(_MAX_CHUNKS):
        head = stream.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind in _TEXT_CHUNKS and length <= MAX_RAW_CHARS:
            body = stream.read(length)
            if len(body) < length:
                break
            stream.seek(4, io.SEEK_CUR)
            with contextlib.suppress(ValueError, IndexError, zlib.error):
                key, text = _decode_text_chunk(kind, body)
                found.setdefault(key, text)
        else:
            stream.seek(length + 4, io.SEEK_CUR)
    return found


def _inflate(data: bytes) -> bytes:
    return zlib.decompressobj().decompress(data, MAX_RAW_CHARS)


def _decode_text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    raw_key, separator, rest = body.partition(b"\0")
    if not separator or not raw_key:
        raise ValueError("text chunk without a keyword")
    key = raw_key.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        return key, _inflate(rest[1:]).decode("latin-1")
    # iTXt: compression flag, method, language tag, translated keyword, then UTF-8 text.
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, rest = rest.partition(b"\0")
    return key, (_inflate(rest) if compressed else rest).decode("utf-8", errors="replace")


def collect_chunks(image: Image.Image, stream: BinaryIO | None = None) -> dict[str, str]:
    """Text chunks and EXIF/JPEG comments that may carry generation settings, by key.

    ``stream`` is the file the image was opened from: with it, PNG text chunks written after
    the pixel data are found without decoding the image.
    """
    raw: dict[str, str] = {}
    for key, value in image.info.items():
        text = _to_text(value) if key != "exif" else None
        if isinstance(key, str) and text is not None and key not in ("icc_profile", "xmp"):
            raw[key] = text
    if image.format == "PNG" and not any(k in raw for k in KNOWN_KEYS):
        try:
            if stream is not None:
                late = png_text_chunks(stream)
            elif getattr(image, "im", None) is not None:
                late = dict(image.text)  # type: ignore[attr-defined]
            else:
                late = {}
        except (OSError, ValueError, struct.error):
            late = {}
        for key, value in late.items():
            text = _to_text(value)
            if text is not None:
                raw.setdefault(key, text)
    comment = user_comment(image.info.get("exif"))
    if comment:
        raw["UserComment"] = comment
    return raw


def user_comment(exif_data: Any) -> str:
    """The EXIF UserComment, read from the raw EXIF block (never decodes pixels)."""
    if not isinstance(exif_data, bytes) or not exif_data:
        return ""
    try:
        exif = Image.Exif()
        exif.load(exif_data)
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT) or exif.get(_USER_COMMENT)
    except Exception:  # malformed EXIF must not hide the other chunks
        return ""
    if not isinstance(comment, (bytes, str)) or not comment:
        return ""
    text = decode_user_comment(comment[:MAX_RAW_CHARS])
    return text if text.strip() else ""
