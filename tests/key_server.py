"""A real key server for tests: serves one JSON document (a JWKS or a SPIFFE bundle) over
HTTP or HTTPS on 127.0.0.1 with strong ETags, as identity providers and SPIFFE bundle
endpoints do. Tests change what it serves, how it answers, and can take it down and back up
on the same port."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.stack import free_port

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeenRequest:
    if_none_match: str | None
    if_modified_since: str | None


@dataclass
class KeyServer:
    """Serves `document` at `path`. Set `status` to answer that instead, `cache_control` to
    send that header, `last_modified` to send dates instead of ETags, `etags` false to send
    no validator at all, `delay` to answer slowly. `requests` lists every request's
    validators."""

    document: Any = field(default_factory=lambda: {"keys": []})
    path: str = "/keys.json"
    ssl_context: ssl.SSLContext | None = None
    status: int = 200
    cache_control: str | None = None
    last_modified: str | None = None
    etags: bool = True
    delay: float = 0.0
    port: int = field(default_factory=free_port)
    requests: list[SeenRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.path, self._serve)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests.append(
            SeenRequest(
                request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status)
        body = json.dumps(self.document).encode()
        headers = {"Content-Type": "application/json"}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        if self.last_modified is not None:
            headers["Last-Modified"] = self.last_modified
            if request.headers.get("If-Modified-Since") == self.last_modified:
                return web.Response(status=304, headers=headers)
        elif self.etags:
            headers["ETag"] = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if request.headers.get("If-None-Match") == headers["ETag"]:
                return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers)


class ServerThread:
    """Runs a `KeyServer` on an event loop of its own, for tests that drive real processes
    from synchronous code. Use as a context manager: the server stops on exit."""

    def __init__(self, server: KeyServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.run(self.server.start)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def run(self, function: Callable[[], Awaitable[T]], timeout: float = 15) -> T:
        """Run `function()` on the server's loop and wait for its result."""

        async def call() -> T:
            return await function()

        coroutine: Coroutine[Any, Any, T] = call()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def update(self, **changes: Any) -> None:
        """Set attributes of the server (document, status, ...) on its own loop."""

        async def apply() -> None:
            for name, value in changes.items():
                setattr(self.server, name, value)

        self.run(apply)


def https_context(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A new test CA (its certificate written to `directory/ca.pem`, returned: what the
    gateway's `ca_file` names) and a server TLS context for 127.0.0.1 issued by it."""
    ca = CertificateAuthority.create("key server test CA")
    issued = ca.issue("127.0.0.1", ip_addresses=["127.0.0.1"], dns_names=["localhost"])
    ca_file = write_pem(directory / "ca.pem", ca.cert_pem)
    cert_file = write_pem(directory / "key-server.pem", issued.chain_pem)
    key_file = write_pem(directory / "key-server.key", issued.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context
