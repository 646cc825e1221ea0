"""Keys by OpenID Connect discovery: the issuer's configuration document names its JWKS.

`DiscoveredJwksFetcher` has the interface of the `BoundedFetcher` a live key source polls:
each `get` asks for the discovery document (conditionally, as any document), checks it is
the configured issuer's (OpenID Connect Discovery 1.0 §4.3: its `issuer` is the URL the
document was fetched under, without `/.well-known/openid-configuration`), and then fetches
the JWKS its `jwks_uri` names, over https (or http on loopback only, as for any key URL). A
`jwks_uri` that changes is followed; the keys' own refresh schedule and validators are
those of the JWKS fetch.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from authz.config.base import is_loopback_host
from authz.errors import ConfigError
from authz.http_fetch import BoundedFetcher, Fetched, FetchError
from authz.strict_json import loads_object

WELL_KNOWN = "/.well-known/openid-configuration"


def issuer_of(discovery_url: str) -> str:
    """The issuer whose configuration document is at `discovery_url`."""
    # The issuer is the URL without this suffix (§4), so it must end the URL, not its path.
    if not discovery_url.endswith(WELL_KNOWN):
        raise ConfigError(f"{discovery_url}: a discovery URL ends in {WELL_KNOWN}")
    return discovery_url[: -len(WELL_KNOWN)]


class DiscoveredJwksFetcher:
    def __init__(
        self, url: str, *, timeout: float, max_bytes: int, ca_file: Path | None, setting: str
    ) -> None:
        self._issuer = issuer_of(url)
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._ca_file = ca_file
        self._setting = setting
        self._discovery = BoundedFetcher(
            url,
            timeout=timeout,
            max_bytes=max_bytes,
            ca_file=ca_file,
            what="OpenID configuration",
            setting=setting,
        )
        self._jwks: BoundedFetcher | None = None
        self.where = self._discovery.where

    @property
    def etag(self) -> str | None:
        return self._jwks.etag if self._jwks is not None else None

    @etag.setter
    def etag(self, value: str | None) -> None:
        if self._jwks is not None:
            self._jwks.etag = value

    @property
    def last_modified(self) -> str | None:
        return self._jwks.last_modified if self._jwks is not None else None

    @last_modified.setter
    def last_modified(self, value: str | None) -> None:
        if self._jwks is not None:
            self._jwks.last_modified = value

    async def get(self) -> Fetched:
        discovered = await self._discovery.get()
        if discovered.data is not None:
            try:
                uri = self._jwks_uri(discovered.data)
            except FetchError:
                # Fetched in full again next time, so the refusal is reported until the
                # document changes, not replaced by a 304 and the jwks_uri known before.
                self._discovery.etag = self._discovery.last_modified = None
                raise
            await self._follow(uri)
        if self._jwks is None:
            raise FetchError(f"{self.where}: no jwks_uri known yet")
        return await self._jwks.get()

    async def close(self) -> None:
        await self._discovery.close()
        if self._jwks is not None:
            await self._jwks.close()

    def _jwks_uri(self, data: bytes) -> str:
        try:
            document = loads_object(data)
        except (ValueError, RecursionError):
            raise FetchError(f"{self.where}: not a JSON object") from None
        if document.get("issuer") != self._issuer:
            raise FetchError(f"{self.where}: its issuer is not {self._issuer}")
        uri = document.get("jwks_uri")
        try:
            parts = urlsplit(uri) if isinstance(uri, str) else None
        except ValueError:  # an unclosed IPv6 bracket, say
            parts = None
        if parts is None or not parts.hostname or parts.username is not None:
            raise FetchError(f"{self.where}: no usable jwks_uri")
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback_host(parts.hostname)
        ):
            raise FetchError(f"{self.where}: jwks_uri must be https")
        assert isinstance(uri, str)  # parts is None otherwise
        return uri

    async def _follow(self, uri: str) -> None:
        if self._jwks is not None and self._jwks.url == uri:
            return
        if self._jwks is not None:
            await self._jwks.close()
        self._jwks = BoundedFetcher(
            uri,
            timeout=self._timeout,
            max_bytes=self._max_bytes,
            ca_file=self._ca_file,
            what="JWKS",
            setting=self._setting,
        )
