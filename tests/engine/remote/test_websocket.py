"""The websocket client: framing, oversized frames, protocol errors, the handshake, TLS."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from desktop.engine.remote import websocket as wsm
from desktop.engine.remote.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocket,
    WebSocketClosed,
    WebSocketHandshakeError,
    accept_key,
    encode_frame,
    parse_frame,
)
from tests.helpers.fake_comfy import self_signed_context


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server-to-client frame (unmasked)."""
    return encode_frame(opcode, payload, fin=fin, mask=False)


@pytest.fixture
def pair() -> Iterator[tuple[WebSocket, socket.socket]]:
    """A client WebSocket (1 KiB max payload) and the server end of a socketpair."""
    client, server = socket.socketpair()
    ws = WebSocket(client, max_payload=1024)
    yield ws, server
    client.close()
    server.close()


def read_client_frame(server: socket.socket) -> tuple[int, bytes, bool]:
    """One frame the client sent: (opcode, payload, was it masked)."""
    server.settimeout(2.0)
    data = b""
    while (parsed := parse_frame(data)) is None:
        data += server.recv(4096)
    _fin, opcode, payload, _used = parsed
    return opcode, payload, bool(data[1] & 0x80)


def feed(server: socket.socket, data: bytes) -> threading.Thread:
    """Send ``data`` from a thread (it may be larger than the socket buffers)."""
    thread = threading.Thread(target=server.sendall, args=(data,))
    thread.start()
    return thread


# -- framing -----------------------------------------------------------------------------------


def test_text_binary_and_length_forms(pair):
    ws, server = pair
    medium, large = b"m" * 300, b"L" * 1000
    server.sendall(frame(OP_TEXT, b"hi") + frame(OP_BINARY, medium) + frame(OP_BINARY, large))
    assert ws.recv(timeout=2) == (OP_TEXT, b"hi")
    assert ws.recv(timeout=2) == (OP_BINARY, medium)
    assert ws.recv(timeout=2) == (OP_BINARY, large)
    data = frame(OP_BINARY, b"x" * 70_000)
    assert data[1] == 127 and parse_frame(data) == (True, OP_BINARY, b"x" * 70_000, len(data))


def test_masked_round_trip_and_incomplete_frames():
    for size in (0, 1, 125, 126, 65535, 65536):
        payload = bytes(i % 251 for i in range(size))
        data = encode_frame(OP_BINARY, payload)
        assert data[1] & 0x80
        assert parse_frame(data[:-1] if size else data[:1]) is None
        assert parse_frame(data) == (True, OP_BINARY, payload, len(data))


def test_fragments_are_joined_with_pings_answered_in_between(pair):
    ws, server = pair
    server.sendall(
        frame(OP_TEXT, b"hel", fin=False)
        + frame(OP_PING, b"p1")
        + frame(OP_CONTINUATION, b"lo", fin=False)
        + frame(OP_CONTINUATION, b"!")
    )
    assert ws.recv(timeout=2) == (OP_TEXT, b"hello!")
    assert read_client_frame(server) == (OP_PONG, b"p1", True)


def test_a_timeout_loses_nothing(pair):
    ws, server = pair
    data = frame(OP_TEXT, b"y" * 500)
    server.sendall(data[:5])
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    with pytest.raises(socket.timeout):  # the same class: both spellings work
        ws.recv(timeout=0.01)
    server.sendall(data[5:])
    assert ws.recv(timeout=2) == (OP_TEXT, b"y" * 500)


def test_close_frame_is_answered(pair):
    ws, server = pair
    server.sendall(frame(OP_CLOSE, struct.pack(">H", 1001) + b"bye"))
    with pytest.raises(WebSocketClosed) as info:
        ws.recv(timeout=2)
    assert (info.value.code, info.value.reason) == (1001, "bye")
    assert read_client_frame(server) == (OP_CLOSE, struct.pack(">H", 1001), True)
    with pytest.raises(WebSocketClosed):
        ws.recv(timeout=2)  # and stays closed


def test_end_of_stream_and_reset_raise_closed(pair):
    ws, server = pair
    server.close()
    with pytest.raises(WebSocketClosed):
        ws.recv(timeout=2)
    assert ws.closed


def test_close_sends_1000(pair):
    ws, server = pair
    ws.close()
    assert read_client_frame(server) == (OP_CLOSE, struct.pack(">H", 1000), True)


# -- oversized frames --------------------------------------------------------------------------


def test_an_oversized_frame_is_skipped_and_the_next_one_delivered(pair):
    ws, server = pair
    server.sendall(frame(OP_BINARY, b"z" * 5000) + frame(OP_TEXT, b"next"))
    assert ws.recv(timeout=2) == (OP_TEXT, b"next")
    assert ws.dropped_frames == 1


def test_an_oversized_frame_across_reads_and_timeouts(pair):
    ws, server = pair
    data = frame(OP_BINARY, b"z" * 5000) + frame(OP_TEXT, b"after")
    server.sendall(data[:3000])
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    assert len(ws._buf) < 1024  # what arrived was thrown away, not kept
    server.sendall(data[3000:])
    assert ws.recv(timeout=2) == (OP_TEXT, b"after")
    assert ws.dropped_frames == 1


def test_an_oversized_fragmented_message_is_dropped_whole(pair):
    ws, server = pair
    server.sendall(
        frame(OP_BINARY, b"a" * 600, fin=False)
        + frame(OP_CONTINUATION, b"b" * 600, fin=False)  # now over 1 KiB: dropped
        + frame(OP_PING, b"still here")
        + frame(OP_CONTINUATION, b"c" * 10)
        + frame(OP_TEXT, b"ok")
    )
    assert ws.recv(timeout=2) == (OP_TEXT, b"ok")
    assert ws.dropped_frames == 1
    assert read_client_frame(server) == (OP_PONG, b"still here", True)


def test_a_huge_frame_is_not_held_in_memory():
    client, server = socket.socketpair()
    ws = WebSocket(client, max_payload=1 << 20)
    data = frame(OP_BINARY, bytes(24 << 20)) + frame(OP_TEXT, b"done")
    tracemalloc.start()
    try:
        sender = feed(server, data)
        assert ws.recv(timeout=10) == (OP_TEXT, b"done")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sender.join(10)
        client.close()
        server.close()
    assert ws.dropped_frames == 1
    assert peak < 4 << 20


# -- protocol errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x80 | 0x40 | OP_TEXT, 1]) + b"x",  # a reserved bit
        frame(OP_PING, b"p" * 126),  # a control frame over 125 bytes
        frame(OP_PING, b"p", fin=False),  # a fragmented control frame
        frame(0x3, b"?"),  # an unknown opcode
        frame(OP_CONTINUATION, b"orphan"),
        frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),  # a new message mid-way
        bytes([0x80 | OP_BINARY, 127]) + struct.pack(">Q", 1 << 63),  # a 64-bit top bit
    ],
    ids=["rsv", "long-control", "fragmented-control", "opcode", "orphan", "interleaved", "len"],
)
def test_protocol_errors_close_with_1002(pair, data):
    ws, server = pair
    server.sendall(data)
    with pytest.raises(WebSocketClosed) as info:
        ws.recv(timeout=2)
    assert info.value.code == 1002
    assert ws.closed
    assert read_client_frame(server) == (OP_CLOSE, struct.pack(">H", 1002), True)


# -- the handshake -----------------------------------------------------------------------------


class OneShotServer:
    """Accepts one connection and answers the upgrade with ``reply(key)``."""

    def __init__(self, reply: Callable[[str], bytes], context: ssl.SSLContext | None = None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self.context = context
        self.request = b""
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(5)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            conn.settimeout(5)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            while b"\r\n\r\n" not in self.request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                self.request += chunk
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in self.request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            conn.sendall(self.reply(key))
            conn.recv(100)  # the client's close frame, or its end
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def upgrade(key: str, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n" + extra + b"\r\n"
    )


def test_connect_url_sends_headers_and_keeps_bytes_after_the_reply():
    server = OneShotServer(lambda key: upgrade(key) + frame(OP_TEXT, b"first"))
    try:
        ws = WebSocket.connect_url(
            f"ws://127.0.0.1:{server.port}/ws?clientId=abc",
            headers={"Authorization": "Bearer s3cret"},
            timeout=5,
        )
        assert ws.recv(timeout=2) == (OP_TEXT, b"first")
        ws.close()
    finally:
        server.close()
    lines = server.request.split(b"\r\n")
    assert lines[0] == b"GET /ws?clientId=abc HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Authorization: Bearer s3cret" in lines
    assert b"Sec-WebSocket-Version: 13" in lines


def test_the_old_connect_signature_still_works():
    server = OneShotServer(lambda key: upgrade(key) + frame(OP_TEXT, b"x"))
    try:
        ws = WebSocket.connect("127.0.0.1", server.port, "/ws", timeout=5)
        assert ws.recv(timeout=2) == (OP_TEXT, b"x")
        ws.close()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("reply", "status", "words"),
    [
        (lambda key: b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", 401, "401"),
        (
            lambda key: upgrade(key).replace(accept_key(key).encode(), b"bogus"),
            None,
            "Sec-WebSocket-Accept",
        ),
        (lambda key: upgrade(key).replace(b"Upgrade: websocket\r\n", b""), None, "Upgrade"),
        (lambda key: upgrade(key, b"Sec-WebSocket-Extensions: x\r\n"), None, "extension"),
        (lambda key: b"SSH-2.0-OpenSSH\r\n\r\n", None, "not an HTTP reply"),
    ],
    ids=["401", "accept", "no-upgrade", "extension", "not-http"],
)
def test_a_bad_upgrade_reply_is_refused(reply, status, words):
    server = OneShotServer(reply)
    try:
        with pytest.raises(WebSocketHandshakeError, match=words) as info:
            WebSocket.connect_url(f"ws://127.0.0.1:{server.port}/ws", timeout=5)
    finally:
        server.close()
    assert info.value.status == status


def test_a_silent_server_times_out():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(TimeoutError):
            WebSocket.connect_url(f"ws://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.2)
    finally:
        listener.close()


def test_bad_urls_and_headers_are_refused():
    with pytest.raises(ValueError, match="ws://"):
        WebSocket.connect_url("http://127.0.0.1:1/ws")
    with pytest.raises(ValueError, match="header"):
        wsm._handshake(None, "h", "/", {"X-Evil": "a\r\nInjected: 1"}, 1.0)  # type: ignore[arg-type]


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    folder = tmp_path_factory.mktemp("tls")
    context = self_signed_context(folder)
    if context is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return context, folder / "cert.pem"


def test_wss_verifies_the_certificate_by_default(tls):
    context, _cert = tls
    server = OneShotServer(upgrade, context)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            WebSocket.connect_url(f"wss://127.0.0.1:{server.port}/ws", timeout=5)
    finally:
        server.close()


def test_wss_with_a_context_that_trusts_the_certificate(tls):
    context, cert = tls
    server = OneShotServer(lambda key: upgrade(key) + frame(OP_TEXT, b"secure"), context)
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        ws = WebSocket.connect_url(
            f"wss://127.0.0.1:{server.port}/ws", timeout=5, ssl_context=client_context
        )
        assert ws.recv(timeout=2) == (OP_TEXT, b"secure")
        ws.close()
    finally:
        server.close()
    assert server.request.startswith(b"GET /ws HTTP/1.1\r\n")
