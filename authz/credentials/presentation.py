"""Which workload credentials a request presents, read from its headers within size bounds.

Nothing is verified here: this stage finds the WIT, the proof (a WPT in `Authorization`, the
pre-02 `Workload-Proof-Token` form when enabled, or HTTP-signature headers) and context
tokens, and refuses requests that are oversized or ambiguous before any parsing work.
Envoy lower-cases header names and joins repeated headers with commas; a compact JWS never
contains a comma, so a comma in a token header means the header was sent more than once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from authz.errors import CredentialError
from authz.reasons import Reason

WIT_HEADER = "workload-identity-token"
AUTHORIZATION_HEADER = "authorization"
LEGACY_WPT_HEADER = "workload-proof-token"
SIGNATURE_HEADER = "signature"
SIGNATURE_INPUT_HEADER = "signature-input"
TXN_TOKEN_HEADER = "txn-token"

CREDENTIAL_HEADERS = (
    WIT_HEADER,
    AUTHORIZATION_HEADER,
    LEGACY_WPT_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_INPUT_HEADER,
    TXN_TOKEN_HEADER,
)


class ProofStyle(StrEnum):
    """How the request proves possession of its WIT key; decides 401 versus 400 answers."""

    WPT = "wpt"
    HTTP_SIGNATURE = "http_signature"


@dataclass(frozen=True, slots=True)
class SizeLimits:
    token_header_bytes: int
    credential_headers_bytes: int


@dataclass(frozen=True, slots=True)
class PresentedCredentials:
    wit: str | None
    wpt: str | None
    legacy_form: bool
    """The WPT came in the pre-02 `Workload-Proof-Token` header (compatibility mode only)."""
    legacy_bearer: str | None
    """Pre-02 only: the OAuth access token in `Authorization: Bearer`, bound by `ath`."""
    legacy_header_refused: bool
    """A `Workload-Proof-Token` header was sent while the pre-02 form is disabled."""
    signature: bool
    """`Signature`/`Signature-Input` headers are present."""


def proof_style(headers: Mapping[str, str]) -> ProofStyle:
    """How a request presents its proof, read from raw headers so it can be told even for a
    request whose credentials failed to parse: signature headers and no `WPT` scheme in
    `Authorization` make it an HTTP-signature request."""
    if SIGNATURE_HEADER not in headers and SIGNATURE_INPUT_HEADER not in headers:
        return ProofStyle.WPT
    authorization = headers.get(AUTHORIZATION_HEADER, "")
    if authorization.lstrip(" ").lower().startswith("wpt"):
        return ProofStyle.WPT
    return ProofStyle.HTTP_SIGNATURE


def _byte_length(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8"))


def read_credentials(
    headers: Mapping[str, str],
    limits: SizeLimits,
    *,
    legacy_wpt: bool,
    context_headers: Iterable[str] = (),
) -> PresentedCredentials:
    """Find the presented credentials, or raise `CredentialError` for oversize or ambiguity."""
    total = 0
    for name in (*CREDENTIAL_HEADERS, *context_headers):
        value = headers.get(name)
        if value is not None:
            total += _byte_length(value)
    if total > limits.credential_headers_bytes:
        raise CredentialError(Reason.CREDENTIALS_TOO_LARGE, "credential headers exceed the limit")
    txn_token = headers.get(TXN_TOKEN_HEADER)
    if txn_token is not None and _byte_length(txn_token) > limits.token_header_bytes:
        raise CredentialError(Reason.TXN_TOO_LARGE, "Txn-Token exceeds the limit")
    for name in context_headers:
        value = headers.get(name)
        if value is not None and _byte_length(value) > limits.token_header_bytes:
            raise CredentialError(Reason.CREDENTIALS_TOO_LARGE, f"{name} exceeds the limit")

    wit = headers.get(WIT_HEADER)
    if wit is not None:
        if _byte_length(wit) > limits.token_header_bytes:
            raise CredentialError(Reason.WIT_TOO_LARGE, "WIT header exceeds the limit")
        if "," in wit:
            raise CredentialError(Reason.WIT_MULTIPLE, "more than one WIT header")

    wpt, legacy_bearer = _wpt_from_authorization(headers.get(AUTHORIZATION_HEADER), limits)
    legacy_value = headers.get(LEGACY_WPT_HEADER)
    legacy_form = False
    if legacy_value is not None and legacy_wpt:
        if wpt is not None:
            raise CredentialError(Reason.CREDENTIALS_AMBIGUOUS, "WPT sent in two forms")
        wpt = _single_token(legacy_value, limits)
        legacy_form = True
    else:
        legacy_bearer = None

    signature = False
    for name in (SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER):
        value = headers.get(name)
        if value is not None:
            signature = True
            if _byte_length(value) > limits.token_header_bytes:
                raise CredentialError(Reason.HTTPSIG_TOO_LARGE, f"{name} exceeds the limit")
    if signature and wpt is not None:
        raise CredentialError(Reason.CREDENTIALS_AMBIGUOUS, "both a WPT and an HTTP signature")
    return PresentedCredentials(
        wit=wit,
        wpt=wpt,
        legacy_form=legacy_form,
        legacy_bearer=legacy_bearer,
        legacy_header_refused=legacy_value is not None and not legacy_wpt,
        signature=signature,
    )


def _single_token(value: str, limits: SizeLimits) -> str:
    if _byte_length(value) > limits.token_header_bytes:
        raise CredentialError(Reason.WPT_TOO_LARGE, "WPT exceeds the limit")
    if "," in value:
        raise CredentialError(Reason.WPT_MULTIPLE, "more than one WPT")
    return value


def _wpt_from_authorization(value: str | None, limits: SizeLimits) -> tuple[str | None, str | None]:
    """(WPT, bearer access token) from an `Authorization` value; at most one is set."""
    if value is None:
        return None, None
    parts = value.split(",")
    schemes = [part.strip().partition(" ")[0].lower() for part in parts]
    if len(parts) > 1 and "wpt" in schemes:
        raise CredentialError(Reason.WPT_MULTIPLE, "more than one Authorization header")
    scheme, _, credentials = value.partition(" ")
    scheme = scheme.lower()
    if scheme == "wpt":
        token = credentials.lstrip(" ")
        if not token or " " in token:
            raise CredentialError(Reason.WPT_MALFORMED, "Authorization: WPT needs one token")
        return _single_token(token, limits), None
    if scheme == "bearer" and len(parts) == 1:
        return None, credentials.strip()
    return None, None
