"""Bounded, conditional HTTP(S) GETs of documents the gateway polls (policy bundles, key sets).

`BoundedFetcher.get` sends the validators of the last document it returned
(`If-None-Match` with its ETag, `If-Modified-Since` with its `Last-Modified`) and answers
either new bytes or "not modified". Each exchange is bounded: `timeout` for the whole of it,
`max_bytes` for the body (a larger `Content-Length` is refused before reading; a body
without one is read in chunks and dropped as soon as it passes the limit). Bodies are taken
as sent (`Content-Encoding` is not undone), so the limit applies to the bytes on the wire.
`https` URLs verify the server against `ca_file` when set, else the system's CAs. Any
failure raises `FetchError` (a `ConfigError`, so callers keep what they had), whose message
names the URL without credentials or query string.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from authz.errors import ConfigError

_CHUNK_BYTES = 64 * 1024
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s=])", re.IGNORECASE)


class FetchError(ConfigError):
    """A document could not be fetched; `status` is the HTTP status when one was received."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Fetched:
    """One answer: new bytes, or None when the server said 304 Not Modified."""

    data: bytes | None
    etag: str | None
    """The ETag the next request sends (unchanged on 304; None if the server sent none)."""
    max_age: float | None = None
    """The answer's `Cache-Control` freshness in seconds (0 for `no-cache`/`no-store`);
    None when it gave none."""


def display_url(url: str) -> str:
    """`url` without user info, query or fragment: safe for logs, errors and metrics."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not a number: leave it out rather than fail while reporting
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def cache_max_age(cache_control: str | None) -> float | None:
    """The freshness a `Cache-Control` header grants, in seconds; None when it says none."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


class BoundedFetcher:
    """Fetches one URL, conditionally after the first time. Create it anywhere; its HTTP
    session is created on first use, inside the running event loop, and must be closed with
    `close()` on that loop.

    `what` names the document in errors ("bundle", "JWKS"); `setting` names the
    configuration key the URL came from, for errors about `ca_file`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_bytes: int,
        ca_file: Path | None,
        what: str,
        setting: str,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.where = f"{what} {display_url(url)}"
        self._what = what
        self._ssl: ssl.SSLContext | bool = True  # plain http: unused
        if urlsplit(url).scheme == "https":
            self._ssl = _ssl_context(ca_file, setting)
        elif ca_file is not None:
            raise ConfigError(f"{setting}.ca_file is set but the url is not https")
        self._session: aiohttp.ClientSession | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None

    async def get(self) -> Fetched:
        """New bytes, or `data=None` for not modified; FetchError on any failure."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._get()
        except TimeoutError:
            raise FetchError(f"{self.where}: no complete answer within {self.timeout}s") from None
        except aiohttp.ClientError as exc:
            raise FetchError(f"{self.where}: {_describe(exc)}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self) -> Fetched:
        headers = {"Accept-Encoding": "identity"}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        session = self._session_in_loop()
        async with session.get(self.url, headers=headers, ssl=self._ssl) as response:
            max_age = cache_max_age(response.headers.get("Cache-Control"))
            if response.status == 304:
                if self.etag is None and self.last_modified is None:
                    raise FetchError(f"{self.where}: 304 to a request without an ETag or date", 304)
                return Fetched(None, self.etag, max_age)
            if response.status != 200:
                raise FetchError(f"{self.where}: answered {response.status}", response.status)
            data = await self._read_body(response)
            self.etag = response.headers.get("ETag")
            self.last_modified = response.headers.get("Last-Modified")
            return Fetched(data, self.etag, max_age)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_bytes
        too_large = f"{self.where}: {self._what} larger than max_bytes ({limit})"
        if response.content_length is not None and response.content_length > limit:
            raise FetchError(too_large, response.status)
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise FetchError(too_large, response.status)
        return bytes(body)

    def _session_in_loop(self) -> aiohttp.ClientSession:
        if self._session is None:
            # auto_decompress off: the bytes counted against max_bytes are the bytes sent.
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session


def _ssl_context(ca_file: Path | None, setting: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{setting}.ca_file {ca_file}: cannot load: {exc}") from None


def _describe(error: aiohttp.ClientError) -> str:
    """The transport failure, without the URL aiohttp puts in some messages."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted: {error.certificate_error}"
    if isinstance(error, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or type(error.os_error).__name__}"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the body ended early or was malformed"
    return f"request failed ({type(error).__name__})"
