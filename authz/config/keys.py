"""Where verification keys come from: a file, inline, a URL kept current, or a SPIFFE bundle;
and the signers whose keys are configured so: trust domains, their Transaction Token
Services, end-user token issuers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from authz.config.base import (
    PositiveInt,
    PositiveSeconds,
    Strict,
    check_algorithms,
    is_loopback_host,
)


class KeyFetchConfig(Strict):
    """How keys at a URL (`jwks_url`, `spiffe_bundle_url`) are fetched and kept current."""

    ca_file: Path | None = None
    """CA certificates for an `https` URL; default: the system's."""
    timeout_seconds: PositiveSeconds = 5.0
    """For one whole fetch: connecting, sending, reading the answer."""
    max_bytes: PositiveInt = 1024 * 1024
    """Largest document accepted."""
    refresh_seconds: PositiveSeconds = 300.0
    """Longest wait between refreshes. A server's `Cache-Control: max-age` or a bundle's
    `spiffe_refresh_hint` may shorten it, never below `min_refresh_interval_seconds`."""
    min_refresh_interval_seconds: PositiveSeconds = 30.0
    """Fetches never start more often than this: bounds hint-driven refreshes and those a
    token naming an unknown `kid` triggers."""
    max_stale_seconds: PositiveSeconds = 24 * 3600.0
    """How long the last good keys keep verifying while refreshes fail; beyond it, tokens
    that need them are answered 503 `trust.anchors_unavailable`."""

    @model_validator(mode="after")
    def _check_intervals(self) -> KeyFetchConfig:
        if self.min_refresh_interval_seconds > self.refresh_seconds:
            raise ValueError("min_refresh_interval_seconds is longer than refresh_seconds")
        if self.max_stale_seconds <= self.refresh_seconds:
            raise ValueError("max_stale_seconds must be longer than refresh_seconds")
        return self


def _key_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an https:// URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("http:// is only allowed to a loopback address: use https://")
    if parts.username is not None or parts.fragment:
        raise ValueError("no credentials or fragment in the URL")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    return value


_KEY_SOURCES = (
    "jwks_file",
    "jwks",
    "jwks_url",
    "openid_configuration_url",
    "spiffe_bundle_file",
    "spiffe_bundle_url",
)
_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


class KeySetConfig(Strict):
    """The keys one signer may use, and the algorithms it may use them with."""

    algorithms: list[str]
    jwks_file: Path | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    """A JWKS fetched over HTTPS and refreshed (see `fetch`)."""
    openid_configuration_url: str | None = None
    """OpenID Connect discovery: the issuer's `.../.well-known/openid-configuration`, whose
    `jwks_uri` is then fetched and refreshed like a `jwks_url` (see `fetch`)."""
    spiffe_bundle_file: Path | None = None
    """A SPIFFE trust bundle on disk: its `wit-svid` keys verify a trust domain's WITs, its
    `jwt-svid` keys any other signer's JWTs, its `x509-svid` certificates X.509-SVIDs;
    reloaded when it changes."""
    spiffe_bundle_url: str | None = None
    """A SPIFFE bundle endpoint, fetched over HTTPS and refreshed (see `fetch`)."""
    fetch: KeyFetchConfig = KeyFetchConfig()
    """For `jwks_url` and `spiffe_bundle_url` only."""

    _check_algorithms = field_validator("algorithms")(check_algorithms)
    _check_urls = field_validator("jwks_url", "openid_configuration_url", "spiffe_bundle_url")(
        _key_url
    )

    @field_validator("openid_configuration_url")
    @classmethod
    def _check_discovery(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(_DISCOVERY_SUFFIX):
            raise ValueError(f"a discovery URL ends in {_DISCOVERY_SUFFIX}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> KeySetConfig:
        if sum(getattr(self, name) is not None for name in _KEY_SOURCES) != 1:
            raise ValueError(f"set exactly one of {', '.join(map(repr, _KEY_SOURCES))}")
        if self.url is None and self.fetch != KeyFetchConfig():
            raise ValueError("'fetch' applies to keys at a URL only")
        return self

    @property
    def url(self) -> str | None:
        """The URL the keys are fetched from (or discovered at); None for configured keys."""
        return self.jwks_url or self.openid_configuration_url or self.spiffe_bundle_url

    @property
    def is_spiffe_bundle(self) -> bool:
        return self.spiffe_bundle_file is not None or self.spiffe_bundle_url is not None


class TrustDomainConfig(KeySetConfig):
    """A trust domain's WIT issuer keys, and its Transaction Token Service's keys."""

    txn_token_service: KeySetConfig | None = None
    """Anchors for Txn-Tokens whose `aud` is this trust domain; none: no Txn-Token verifies."""


class UserIssuerConfig(KeySetConfig):
    audiences: list[str] = Field(min_length=1)
    """`aud` values naming this gateway's services (an ID token's is a client id)."""
