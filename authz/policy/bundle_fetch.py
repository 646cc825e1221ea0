"""Getting a bundle's bytes: from a file, or from an HTTP(S) URL polled with ETags.

`BundleFetcher.fetch` sends `If-None-Match` with the ETag of the last bundle it returned
and answers either new bytes (with their ETag) or "not modified". Each fetch is bounded:
`timeout_seconds` for the whole exchange, `max_bytes` for the body (a larger
`Content-Length` is refused before reading; a body without one is read in chunks and
dropped as soon as it passes the limit). Bodies are taken as sent (`Content-Encoding` is not
undone), so the limit applies to the bytes on the wire and decompression stays bounded by
`parse_bundle`. `https` URLs verify the server against `ca_file` when set, else the system's
CAs. Any failure raises `BundleFetchError` (a `ConfigError`, so a reload keeps the last good
policy), whose message names the URL without credentials or query string.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from authz.config import BundleConfig
from authz.errors import ConfigError
from authz.files import read_bounded
from authz.policy.bundle import BundleError

_CHUNK_BYTES = 64 * 1024


class BundleFetchError(BundleError):
    """A bundle could not be fetched; `status` is the HTTP status when one was received."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class FetchResult:
    data: bytes | None
    """The new bundle, or None when the server answered 304 Not Modified."""
    etag: str | None
    """The ETag the next fetch sends (unchanged on 304; None if the server sent none)."""

    @property
    def not_modified(self) -> bool:
        return self.data is None


def read_bundle_file(path: Path, max_bytes: int) -> bytes:
    """A bundle file's bytes; BundleError if it cannot be read or is over `max_bytes`."""
    return read_bounded(path, max_bytes, "bundle", BundleError)


def display_url(url: str) -> str:
    """`url` without user info, query or fragment: safe for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not a number: leave it out rather than fail while reporting
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class BundleFetcher:
    """Polls one bundle URL. Create it anywhere; its HTTP session is created on first use,
    inside the running event loop, and must be closed with `close()` on that loop."""

    etag: str | None
    """The ETag of the last bundle `fetch` returned; sent as `If-None-Match`."""

    def __init__(self, config: BundleConfig) -> None:
        if config.url is None:
            raise ConfigError("policy.bundle: a fetcher needs 'url'")
        self.config = config
        self._url = config.url
        self._where = f"bundle {display_url(config.url)}"
        self._ssl: ssl.SSLContext | bool = True  # plain http: unused
        if urlsplit(config.url).scheme == "https":
            self._ssl = _ssl_context(config.ca_file)
        elif config.ca_file is not None:
            raise ConfigError("policy.bundle.ca_file is set but the url is not https")
        self._session: aiohttp.ClientSession | None = None
        self.etag = None

    async def fetch(self) -> FetchResult:
        """New bytes, or `not_modified`; BundleFetchError on any failure."""
        timeout = self.config.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self._fetch()
        except TimeoutError:
            raise BundleFetchError(f"{self._where}: no complete answer within {timeout}s") from None
        except aiohttp.ClientError as exc:
            raise BundleFetchError(f"{self._where}: {_describe(exc)}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self) -> FetchResult:
        headers = {"Accept-Encoding": "identity"}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        session = self._session_in_loop()
        async with session.get(self._url, headers=headers, ssl=self._ssl) as response:
            if response.status == 304:
                if self.etag is None:
                    raise BundleFetchError(f"{self._where}: 304 to a request without an ETag", 304)
                return FetchResult(None, self.etag)
            if response.status != 200:
                raise BundleFetchError(
                    f"{self._where}: answered {response.status}", response.status
                )
            data = await self._read_body(response)
            self.etag = response.headers.get("ETag")
            return FetchResult(data, self.etag)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_bytes
        too_large = f"{self._where}: bundle larger than max_bytes ({limit})"
        if response.content_length is not None and response.content_length > limit:
            raise BundleFetchError(too_large, response.status)
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise BundleFetchError(too_large, response.status)
        return bytes(body)

    def _session_in_loop(self) -> aiohttp.ClientSession:
        if self._session is None:
            # auto_decompress off: the bytes counted against max_bytes are the bytes sent.
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"policy.bundle.ca_file {ca_file}: cannot load: {exc}") from None


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
