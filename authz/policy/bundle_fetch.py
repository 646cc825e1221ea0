"""Getting a bundle's bytes: from a file, or from an HTTP(S) URL polled with ETags.

`BundleFetcher.fetch` is a conditional GET (`authz.http_fetch`): it sends the validators of
the last bundle it returned and answers either new bytes (with their ETag) or "not
modified". Each fetch is bounded by `timeout_seconds` for the whole exchange and
`max_bytes` for the body on the wire (`Content-Encoding` is not undone, so decompression
stays bounded by `parse_bundle`). `https` URLs verify the server against `ca_file` when set,
else the system's CAs. Any failure raises `BundleFetchError` (a `ConfigError`, so a reload
keeps the last good policy), whose message names the URL without credentials or query
string.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from authz.config import BundleConfig
from authz.errors import ConfigError
from authz.files import read_bounded
from authz.http_fetch import BoundedFetcher, FetchError, display_url
from authz.policy.bundle import BundleError

__all__ = [
    "BundleFetchError",
    "BundleFetcher",
    "FetchResult",
    "display_url",
    "read_bundle_file",
]


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


class BundleFetcher(BoundedFetcher):
    """Polls one bundle URL. Create it anywhere; its HTTP session is created on first use,
    inside the running event loop, and must be closed with `close()` on that loop."""

    def __init__(self, config: BundleConfig) -> None:
        if config.url is None:
            raise ConfigError("policy.bundle: a fetcher needs 'url'")
        super().__init__(
            config.url,
            timeout=config.timeout_seconds,
            max_bytes=config.max_bytes,
            ca_file=config.ca_file,
            what="bundle",
            setting="policy.bundle",
        )
        self.config = config

    async def fetch(self) -> FetchResult:
        """New bytes, or `not_modified`; BundleFetchError on any failure."""
        try:
            fetched = await self.get()
        except FetchError as exc:
            raise BundleFetchError(str(exc), exc.status) from None
        return FetchResult(fetched.data, fetched.etag)
