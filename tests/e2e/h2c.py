"""One HTTP/2 request over cleartext with prior knowledge (h2c), as a real HTTP/2 client
sends it: the `h2` protocol library, a TCP socket, DATA frames for the body and no
`content-length` unless the caller adds one. Envoy's `codec_type: AUTO` listener accepts it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset

from tests.e2e.stack import Response

DATA_FRAME_BYTES = 8
"""The body goes out in DATA frames of at most this many bytes: several frames, as a
streaming client would send them."""


def h2c_request(
    port: int,
    path: str,
    headers: Mapping[str, str],
    *,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 10,
) -> Response:
    """Send one request to 127.0.0.1:`port` and return the whole response."""
    connection = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        pseudo = [(":method", method), (":scheme", "http"), (":path", path)]
        pseudo.append((":authority", f"127.0.0.1:{port}"))
        connection.send_headers(stream, [*pseudo, *headers.items()], end_stream=body is None)
        if body is not None:
            for start in range(0, len(body), DATA_FRAME_BYTES):
                connection.send_data(stream, body[start : start + DATA_FRAME_BYTES])
            connection.end_stream(stream)
        sock.sendall(connection.data_to_send())
        return _read_response(sock, connection, stream)


def _read_response(sock: socket.socket, connection: H2Connection, stream: int) -> Response:
    status = 0
    response_headers: dict[str, str] = {}
    body = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection before the response ended")
        for event in connection.receive_data(data):
            if isinstance(event, ResponseReceived) and event.stream_id == stream:
                for name, value in event.headers or []:
                    key, text = _text(name).lower(), _text(value)
                    if key == ":status":
                        status = int(text)
                    else:
                        response_headers[key] = text
            elif isinstance(event, DataReceived) and event.stream_id == stream:
                body += event.data or b""
                connection.acknowledge_received_data(event.flow_controlled_length or 0, stream)
            elif isinstance(event, StreamReset) and event.stream_id == stream:
                raise ConnectionError(f"the server reset the stream: {event.error_code!r}")
            elif isinstance(event, StreamEnded) and event.stream_id == stream:
                return Response(status, response_headers, bytes(body))
        sock.sendall(connection.data_to_send())


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
