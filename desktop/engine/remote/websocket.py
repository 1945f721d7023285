"""A websocket client (RFC 6455) on the standard library, for ComfyUI's ``/ws``.

``WebSocket.connect_url("wss://host/ws?clientId=…", headers={...})`` opens the TCP (and TLS)
connection and does the HTTP upgrade; ``recv`` then returns whole messages. What it guards
against, because the server is on the other side of a network:

* a frame larger than ``max_payload`` is never held in memory: it is read and thrown away in
  chunks, counted in ``dropped_frames``, and the next frame is delivered as usual (one huge
  preview image must not end the job);
* a ``recv`` that times out loses nothing: frames are parsed from a buffer and the next call
  carries on where the last one stopped;
* a protocol violation (reserved bits, a fragmented or oversized control frame, an unknown
  opcode) closes the connection with code 1002 and raises ``WebSocketClosed``, like the
  peer closing it; so does a reset connection.

No extensions (permessage-deflate) and no subprotocols are negotiated.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import NoReturn

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: ``parse_frame`` refuses frames larger than this (a corrupt length would exhaust memory).
MAX_PAYLOAD = 256 * 1024 * 1024
#: A ``WebSocket`` drops messages larger than this unless told otherwise.
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
#: Bytes read from the socket at a time.
_CHUNK = 256 * 1024
#: The most an HTTP upgrade reply may take before its blank line.
_MAX_HANDSHAKE = 64 * 1024


class WebSocketClosed(ConnectionError):
    """The connection ended: a close frame, the end of the stream, a reset or a protocol
    error (``code`` 1002). ``code`` is None when the peer sent none."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"websocket closed (code {code}): {reason}".rstrip(": "))
        self.code = code
        self.reason = reason


class WebSocketHandshakeError(ConnectionError):
    """The server did not switch protocols. ``status`` is its HTTP status (401 when it wants
    credentials, for instance), or None when the reply was not a valid upgrade at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameHeader:
    """The fixed part of one frame: ``size`` header bytes are followed by ``length`` bytes."""

    fin: bool
    opcode: int
    length: int
    mask_key: bytes
    size: int


def _mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One frame; clients must mask what they send (servers and tests use ``mask=False``)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(bit | 127)
        head += struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        return bytes(head) + key + _mask(payload, key)
    return bytes(head) + payload


def parse_header(buf: bytes | bytearray) -> FrameHeader | None:
    """The header at the start of ``buf``; None while it is incomplete.

    Raises ValueError for reserved bits (no extension was negotiated) and for a 64-bit
    length with its top bit set.
    """
    if len(buf) < 2:
        return None
    first, second = buf[0], buf[1]
    if first & 0x70:
        raise ValueError("websocket frame uses extension bits that were not negotiated")
    length = second & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        (length,) = struct.unpack_from(">H", buf, 2)
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        (length,) = struct.unpack_from(">Q", buf, 2)
        if length >> 63:
            raise ValueError("websocket frame length has its most significant bit set")
        pos = 10
    key = b""
    if second & 0x80:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos : pos + 4])
        pos += 4
    return FrameHeader(bool(first & 0x80), first & 0x0F, length, key, pos)


def parse_frame(buf: bytes | bytearray) -> tuple[bool, int, bytes, int] | None:
    """Parse one frame at the start of ``buf``: (fin, opcode, payload, bytes used).

    None when ``buf`` does not hold a whole frame yet. Masked frames are unmasked. Raises
    ValueError for a frame over ``MAX_PAYLOAD`` bytes and for the cases of ``parse_header``.
    """
    header = parse_header(buf)
    if header is None:
        return None
    if header.length > MAX_PAYLOAD:
        raise ValueError(f"websocket frame of {header.length} bytes is too large")
    end = header.size + header.length
    if len(buf) < end:
        return None
    payload = bytes(buf[header.size : end])
    if header.mask_key:
        payload = _mask(payload, header.mask_key)
    return header.fin, header.opcode, payload, end


# -- the handshake -----------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server answers to the ``Sec-WebSocket-Key`` ``key``."""
    return base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()


def _check_header_text(name: str, value: str) -> None:
    if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
        raise ValueError(f"invalid handshake header {name!r}")


def _read_reply(sock: socket.socket, deadline: float) -> tuple[str, dict[str, str], bytes]:
    """The upgrade reply: status line, headers (lower-case names) and the bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the websocket handshake took too long")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketHandshakeError("the server closed the connection during the handshake")
        data += chunk
        if len(data) > _MAX_HANDSHAKE:
            raise WebSocketHandshakeError("the server's handshake reply is too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def _check_reply(status_line: str, headers: dict[str, str], key: str) -> None:
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WebSocketHandshakeError(f"not an HTTP reply to the websocket upgrade: {parts[:2]}")
    status = int(parts[1])
    if status != 101:
        raise WebSocketHandshakeError(f"websocket upgrade refused: {status_line[:120]}", status)
    if headers.get("upgrade", "").lower() != "websocket":
        raise WebSocketHandshakeError("websocket handshake: the reply lacks Upgrade: websocket")
    if "upgrade" not in {t.strip().lower() for t in headers.get("connection", "").split(",")}:
        raise WebSocketHandshakeError("websocket handshake: the reply lacks Connection: Upgrade")
    if headers.get("sec-websocket-accept", "") != accept_key(key):
        raise WebSocketHandshakeError("websocket handshake: wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise WebSocketHandshakeError("websocket handshake: the server chose an extension")


def _handshake(
    sock: socket.socket, host: str, path: str, headers: dict[str, str], timeout: float
) -> bytes:
    """Send the upgrade request and check the reply; returns the bytes read past it."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, value in headers.items():
        _check_header_text(name, value)
        lines.append(f"{name}: {value}")
    sock.settimeout(timeout)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    status_line, reply_headers, rest = _read_reply(sock, time.monotonic() + timeout)
    _check_reply(status_line, reply_headers, key)
    return rest


def _split_url(url: str) -> tuple[bool, str, int, str, str]:
    """(secure, host, port, Host header, request path) of a ws:// or wss:// URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url[:100]}")
    secure = scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if port != (443 if secure else 80):
        shown = f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return secure, host, port, shown, path


# -- the connection ----------------------------------------------------------------------------


class WebSocket:
    """A websocket client connection on a connected (maybe TLS) socket.

    ``recv`` returns whole data messages (``OP_TEXT`` or ``OP_BINARY``, fragments joined),
    answers pings and raises ``WebSocketClosed`` when the connection ends. Messages over
    ``max_payload`` bytes are skipped without being buffered and counted in
    ``dropped_frames``. On a plain socket ``send`` and ``close`` may be called from another
    thread than ``recv``; over TLS keep them all in one thread (one OpenSSL connection is
    not meant to be read and written at the same time).
    """

    def __init__(
        self,
        sock: socket.socket,
        buffered: bytes = b"",
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.sock = sock
        self.max_payload = max_payload
        self.dropped_frames = 0
        self.closed = False
        self._buf = bytearray(buffered)
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._fragment_size = 0
        self._skip = 0  # bytes of an oversized frame still to throw away
        self._skipping_message = False  # the rest of a fragmented message is thrown away
        self._close_sent = False
        self._send_lock = threading.Lock()

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        path: str,
        timeout: float = 10.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> WebSocket:
        """A plain ws:// connection to ``host:port`` on ``path`` (query included)."""
        shown = f"[{host}]" if ":" in host else host
        return cls.connect_url(
            f"ws://{shown}:{port}{path}", timeout=timeout, max_payload=max_payload
        )

    @classmethod
    def connect_url(
        cls,
        url: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> WebSocket:
        """Connect to a ws:// or wss:// URL and do the upgrade handshake.

        ``headers`` are added to the upgrade request (``Authorization: Bearer …``). wss://
        uses ``ssl_context``, by default ``ssl.create_default_context()``, which verifies
        the certificate and the host name; pass an unverified context only for a server
        the user chose to trust. ``timeout`` bounds the connection and the handshake each.

        Raises:
            ValueError: not a ws:// or wss:// URL, or a header with a line break.
            WebSocketHandshakeError: the server answered, but not with a valid upgrade.
            OSError: the connection failed (``TimeoutError``, ``ConnectionRefusedError``,
                ``ssl.SSLError`` and ``ssl.SSLCertVerificationError`` among them).
        """
        secure, host, port, host_header, path = _split_url(url)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if secure:
                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
            rest = _handshake(sock, host_header, path, dict(headers or {}), timeout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest, max_payload=max_payload)

    # -- sending ----------------------------------------------------------------------------

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame."""
        frame = encode_frame(opcode, payload, mask=True)
        with self._send_lock:
            self.sock.sendall(frame)

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self.send(OP_BINARY, data)

    # -- receiving --------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next data message as (opcode, payload).

        Raises:
            TimeoutError: nothing complete arrived within ``timeout`` seconds (``None``
                waits for ever); call again to go on, nothing is lost.
            WebSocketClosed: the connection ended (close frame, end of stream, reset,
                protocol error).
        """
        if self.closed:
            raise WebSocketClosed(reason="connection already closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._skip:
                if not self._discard():
                    self._fill(deadline)
                continue
            try:
                header = parse_header(self._buf)
            except ValueError as exc:
                self._fail(str(exc))
            if header is None:
                self._fill(deadline)
                continue
            if self._oversized(header):
                continue
            end = header.size + header.length
            if len(self._buf) < end:
                self._fill(deadline)
                continue
            payload = bytes(self._buf[header.size : end])
            del self._buf[:end]
            if header.mask_key:
                payload = _mask(payload, header.mask_key)
            message = self._handle(header.fin, header.opcode, payload)
            if message is not None:
                return message

    def _discard(self) -> bool:
        """Throw away buffered bytes of a skipped frame; True when it is all gone."""
        n = min(self._skip, len(self._buf))
        del self._buf[:n]
        self._skip -= n
        return self._skip == 0

    def _oversized(self, header: FrameHeader) -> bool:
        """Start skipping ``header``'s frame when its message is too big; True if so."""
        if header.opcode in _CONTROL_OPCODES:
            if header.length > 125 or not header.fin:
                self._fail("websocket control frame is fragmented or too long")
            return False
        if header.opcode == OP_CONTINUATION and self._skipping_message:
            dropped = True  # the rest of a message already counted as dropped
        elif header.opcode == OP_CONTINUATION:
            dropped = self._fragment_size + header.length > self.max_payload
        else:
            dropped = header.length > self.max_payload
        if not dropped:
            return False
        if header.opcode != OP_CONTINUATION and (
            self._fragment_opcode is not None or self._skipping_message
        ):
            self._fail("websocket data frame in the middle of a fragmented message")
        if header.opcode == OP_CONTINUATION and not (
            self._skipping_message or self._fragment_opcode is not None
        ):
            self._fail("websocket continuation frame without a first fragment")
        if not self._skipping_message:
            self.dropped_frames += 1
        self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
        self._skipping_message = not header.fin
        del self._buf[: header.size]
        self._skip = header.length
        return True

    def _fill(self, deadline: float | None) -> None:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no websocket message in time")
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(None)
        try:
            chunk = self.sock.recv(_CHUNK)
        except TimeoutError:
            raise  # the buffer is intact: the next recv carries on
        except OSError as exc:
            self.closed = True
            raise WebSocketClosed(reason=f"connection lost: {exc}") from exc
        if not chunk:
            self.closed = True
            raise WebSocketClosed(reason="end of stream")
        self._buf += chunk

    def _handle(self, fin: bool, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode == OP_PING:
            with contextlib.suppress(OSError):
                self.send(OP_PONG, payload)
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            if not self._close_sent:
                with contextlib.suppress(OSError):
                    self.send(OP_CLOSE, payload[:2])
                self._close_sent = True
            self.closed = True
            raise WebSocketClosed(code, payload[2:].decode("utf-8", "replace"))
        if opcode == OP_CONTINUATION:
            if self._fragment_opcode is None:
                self._fail("websocket continuation frame without a first fragment")
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if not fin:
                return None
            whole = (self._fragment_opcode, b"".join(self._fragments))
            self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
            return whole
        if opcode in (OP_TEXT, OP_BINARY):
            if self._fragment_opcode is not None or self._skipping_message:
                self._fail("websocket data frame in the middle of a fragmented message")
            if fin:
                return opcode, payload
            self._fragment_opcode, self._fragments = opcode, [payload]
            self._fragment_size = len(payload)
            return None
        self._fail(f"unknown websocket opcode {opcode:#x}")

    def _fail(self, reason: str) -> NoReturn:
        """End the connection after a protocol error (close code 1002)."""
        if not self._close_sent:
            with contextlib.suppress(OSError):
                self.send(OP_CLOSE, struct.pack(">H", 1002))
            self._close_sent = True
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        raise WebSocketClosed(1002, reason)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Send a close frame (1000) if none was sent, and close the socket."""
        if not self._close_sent and not self.closed:
            with contextlib.suppress(OSError):
                self.send(OP_CLOSE, struct.pack(">H", 1000))
            self._close_sent = True
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
