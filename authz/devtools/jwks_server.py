"""A JWKS endpoint over HTTPS on loopback, for tests and the load-and-fault run: a real
`aiohttp` server on its own thread, stopped and started again on the same port on demand
(to play a key server's outage).

It answers `GET /jwks.json` with the document it was given, an `ETag`, and `304 Not
Modified` to a matching `If-None-Match`, as a real key server would; no `Cache-Control`, so
the gateway's `fetch.refresh_seconds` decides how often it asks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from authz.devtools.stack import free_port

JWKS_PATH = "/jwks.json"


@dataclass
class JwksServer:
    """Serves `document` at `https://127.0.0.1:<port>/jwks.json` with the certificate in
    `cert_file` (its chain) and `key_file`. `start` returns once the port listens; `stop`
    closes the listener and every open connection, so a client's next fetch is refused.
    Use it as a context manager, or call `stop`."""

    document: Mapping[str, Any]
    cert_file: Path
    key_file: Path
    port: int = field(default_factory=free_port)
    answers: Counter[int] = field(default_factory=Counter)
    """Statuses answered so far (200, 304), across restarts."""
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{JWKS_PATH}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def start(self, timeout: float = 10.0) -> JwksServer:
        """Listen (again, on the same port) on a new thread and event loop."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="jwks-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and its connections, then end the thread; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    async def _listen(self) -> None:
        body = json.dumps(dict(self.document), separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'

        async def jwks(request: web.Request) -> web.Response:
            if request.headers.get("If-None-Match") == etag:
                self.answers[304] += 1
                return web.Response(status=304, headers={"ETag": etag})
            self.answers[200] += 1
            return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

        app = web.Application()
        app.router.add_get(JWKS_PATH, jwks)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert_file, self.key_file)
        # A short shutdown: `stop` plays an outage, it need not drain anything.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=tls).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
