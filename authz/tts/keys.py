"""The Transaction Token Service's keys: the one that signs now, and every key it publishes.

The published set is the signing key, the next key (published before it is used, so every
verifier that refreshes its copy has it on the day it starts signing: the practice of
OpenID Connect §10.1.1) and retired keys (kept until what they signed has expired). The
same set verifies Txn-Tokens presented back to the TTS for replacement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.config.tts import TtsSigningConfig
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, InvalidKey, public_key_from_jwk
from authz.errors import ConfigError
from authz.files import write_jwks
from authz.issuing.signing_key import SigningKey, UnusableKey, load_signing_jwk
from authz.trust.key_sets import KeySet, build_key_set


@dataclass(frozen=True, slots=True)
class TtsKeys:
    signer: SigningKey
    kid: str
    published: tuple[Mapping[str, Any], ...]
    """Public JWKs (with `kid`, `alg`, `use: sig`), the signing key first."""
    key_set: KeySet
    """The published keys, as a verifier holds them."""
    jwks_json: bytes
    """The published keys as the JWKS document served at `endpoint.jwks_path`."""


def load_tts_keys(config: TtsSigningConfig, trust_domain: str) -> TtsKeys:
    """Read and check every configured key; `ConfigError` naming the file otherwise. The
    JWKS is written to `jwks_file` when one is configured."""
    paths = [config.key_file]
    if config.next_key_file is not None:
        paths.append(config.next_key_file)
    paths.extend(config.retired_key_files)
    loaded: list[tuple[SigningKey, str]] = []
    for path in paths:
        try:
            loaded.append(load_signing_jwk(path))
        except UnusableKey as exc:
            raise ConfigError(f"tts.signing: {exc}") from None
    published = tuple({**key.public_jwk, "kid": kid, "use": "sig"} for key, kid in loaded)
    kids = [kid for _, kid in loaded]
    if len(set(kids)) != len(kids):
        raise ConfigError("tts.signing: two keys share a kid")
    try:
        public = [public_key_from_jwk(jwk, SUPPORTED_ALGORITHMS) for jwk in published]
    except InvalidKey as exc:
        raise ConfigError(f"tts.signing: {exc}") from None
    algorithms = {key.alg for key, _ in loaded}
    key_set = build_key_set(f"{trust_domain} (this TTS)", algorithms, public)
    document = json.dumps({"keys": [dict(key) for key in published]}).encode()
    keys = TtsKeys(loaded[0][0], loaded[0][1], published, key_set, document)
    if config.jwks_file is not None:
        write_jwks(config.jwks_file, list(published))
    return keys
