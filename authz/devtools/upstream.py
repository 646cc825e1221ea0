"""A sample upstream that echoes the request it received, as JSON.

It lets the demo and the end-to-end tests see exactly what reached the protected service:
which identity headers the gateway set, that proof headers were stripped, and whether a
request got there at all.

`python -m authz.devtools.upstream --host 0.0.0.0 --port 8081` runs it on its own (the
Compose example's upstream, from the gateway's image).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

RECEIVED_KEPT = 10_000


class _EchoHTTPServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _EchoHandler)
        self.lock = threading.Lock()
        # Bounded: the demo's upstream runs for as long as the user likes.
        self.received: deque[tuple[str, str]] = deque(maxlen=RECEIVED_KEPT)


class _EchoHandler(BaseHTTPRequestHandler):
    server_version = "wimse-echo"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients stall ~40 ms
    # on each response waiting for a delayed ACK.
    disable_nagle_algorithm = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailer fields: none of them matter here
        return b"".join(chunks)

    def _record(self) -> None:
        server = cast(_EchoHTTPServer, self.server)
        with server.lock:
            server.received.append((self.command, self.path))

    def _echo(self) -> None:
        self._record()
        body = self._read_body()
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body_bytes": len(body),
            },
            indent=2,
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _echo

    def do_HEAD(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the demo prints what matters itself."""


class EchoServer:
    """The echo upstream on a background thread."""

    def __init__(self, host: str, port: int) -> None:
        self._server = _EchoHTTPServer((host, port))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> EchoServer:
        self._thread.start()
        return self

    def received(self) -> list[tuple[str, str]]:
        """(method, path) of the requests that reached the upstream, oldest first (the last
        `RECEIVED_KEPT` of them)."""
        with self._server.lock:
            return list(self._server.received)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve on `--host`:`--port` until SIGTERM or SIGINT, then return 0."""
    parser = argparse.ArgumentParser(
        prog="python -m authz.devtools.upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked before the server thread starts, so that thread inherits the mask and the
    # signals wait for sigwait below. As PID 1 of a container a process has no default
    # SIGTERM action: without this, `docker stop` would wait for its timeout and kill it.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = EchoServer(args.host, args.port).start()
    print(f"echo upstream listening on {args.host}:{server.port}", flush=True)
    signal.sigwait(stop_signals)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
