"""A sample caller app with no WIMSE code: it forwards every request it gets to its egress
Envoy, the way any service calls another through its sidecar, and answers with what came
back. The demo's frontend: its WIT and proofs are attached on the way out by the gateway's
outbound listener, never by this app (which holds no key).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

# What a plain HTTP client sets itself, or what describes one hop only.
_HOP_HEADERS = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te"})


class _CallerHTTPServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], egress_port: int) -> None:
        super().__init__(address, _ForwardingHandler)
        self.egress_port = egress_port


class _ForwardingHandler(BaseHTTPRequestHandler):
    server_version = "wimse-caller"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _forward(self) -> None:
        server = cast(_CallerHTTPServer, self.server)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        egress = http.client.HTTPConnection("127.0.0.1", server.egress_port, timeout=10)
        try:
            egress.request(self.command, self.path, body=body, headers=headers)
            answer = egress.getresponse()
            payload = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                    self.send_header(name, value)
        except OSError as exc:
            payload = f"egress Envoy unreachable: {exc}\n".encode()
            self.send_response(502)
        finally:
            egress.close()
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the demo prints what matters itself."""


class CallerApp:
    """The caller app on a background thread, sending through the egress Envoy on
    127.0.0.1:`egress_port`."""

    def __init__(self, host: str, port: int, egress_port: int) -> None:
        self._server = _CallerHTTPServer((host, port), egress_port)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> CallerApp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
