"""The Txn-Token Request and Response: the wire protocol of the TTS token endpoint.

draft-ietf-oauth-transaction-tokens-10 ("Requesting Txn-Tokens") profiles an RFC 8693 token
exchange: a form-encoded POST to an OAuth token endpoint (RFC 6749 §3.2, Appendix B), answered
by the Txn-Token Response or by an RFC 6749 §5.2 error. This module is that protocol only:

- `parse_exchange_request` turns a request body into an `ExchangeRequest`, or raises
  `ExchangeError` saying which rule the request broke;
- `success_response` and `error_response` build the status, headers and body to send.

Pure functions, no I/O. What the caller still owes the draft: authenticating the requesting
workload, checking that `audience` is our trust domain, verifying the subject token, deciding
the granted scope (never wider than the subject's grant) and what of `request_context` and
`request_details` goes into `rctx` and `tctx`, and minting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from authz import strict_json

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
TXN_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:txn_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
SELF_SIGNED_TYPE = "urn:ietf:params:oauth:token-type:self_signed"
UNSIGNED_JSON_TYPE = "urn:ietf:params:oauth:token-type:unsigned_json"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"

SUBJECT_TOKEN_TYPES: frozenset[str] = frozenset(
    {ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, SELF_SIGNED_TYPE, UNSIGNED_JSON_TYPE, TXN_TOKEN_TYPE}
)
"""The `subject_token_type` values accepted: the kinds of subject token this TTS can verify.

The draft allows any RFC 8693 §3 type except the refresh token, plus `self_signed`,
`unsigned_json` and, for a replacement, a Txn-Token. ID tokens and SAML assertions are RFC 8693
types too, but nothing in the gateway verifies them, so they are refused here rather than
accepted and then failed later."""

# Error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2 that this endpoint answers with.
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_SCOPE = "invalid_scope"
INVALID_TARGET = "invalid_target"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"

_FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FIELDS = 32

# Request parameter names (RFC 8693 §2.1 and the draft's Txn-Token Request).
_GRANT_TYPE = "grant_type"
_REQUESTED_TOKEN_TYPE = "requested_token_type"
_AUDIENCE = "audience"
_RESOURCE = "resource"
_SCOPE = "scope"
_SUBJECT_TOKEN = "subject_token"
_SUBJECT_TOKEN_TYPE = "subject_token_type"
_ACTOR_TOKEN = "actor_token"
_ACTOR_TOKEN_TYPE = "actor_token_type"
_REQUEST_CONTEXT = "request_context"
_REQUEST_DETAILS = "request_details"
_KNOWN_PARAMETERS = frozenset(
    {
        _GRANT_TYPE,
        _REQUESTED_TOKEN_TYPE,
        _AUDIENCE,
        _RESOURCE,
        _SCOPE,
        _SUBJECT_TOKEN,
        _SUBJECT_TOKEN_TYPE,
        _ACTOR_TOKEN,
        _ACTOR_TOKEN_TYPE,
        _REQUEST_CONTEXT,
        _REQUEST_DETAILS,
    }
)
# RFC 8693 §2.1 lets `audience` and `resource` repeat, one per target service; a repeat of
# either is a request for several targets (answered with invalid_target), not a malformed form.
_MAY_REPEAT = frozenset({_AUDIENCE, _RESOURCE})

# A form body as the HTML/WHATWG serializer writes it: visible ASCII, a space as "+", and "%"
# only as the start of an escape. Anything else (controls, raw spaces, 8-bit bytes, a stray
# "%") did not come from a form encoder, and parse_qsl would pass a stray "%" through as data.
_FORM_BODY = re.compile(rb"(?:[\x21-\x24\x26-\x7e]|%[0-9A-Fa-f]{2})+")
# RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR.
_SCOPE_VALUE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
# RFC 6749 §5.2: error and error_description use %x20-21 / %x23-5B / %x5D-7E (no '"', no '\').
_ERROR_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
# RFC 6749 Appendix A.12: access-token = 1*VSCHAR.
_ACCESS_TOKEN = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """A well-formed Txn-Token Request; nothing in it is verified or authorized yet.

    `scope` holds the requested scope-tokens in request order without repeats. The two
    contexts are the parsed JSON objects as sent (plain dicts, typed read-only), or None when
    the parameter was absent: the TTS decides what of them reaches `rctx` and `tctx`.
    `subject_token` is left out of `repr` so that logging a request never logs a credential.
    """

    audience: str
    scope: tuple[str, ...]
    subject_token: str = field(repr=False)
    subject_token_type: str
    request_context: Mapping[str, Any] | None
    request_details: Mapping[str, Any] | None


class ExchangeError(Exception):
    """A refused Txn-Token Request, as its RFC 6749 §5.2 error response will carry it.

    `error` is the OAuth error code, `description` the `error_description` (for the client's
    developer: never a token or other credential), `status` the HTTP status, 400 unless a rule
    says otherwise (`invalid_client` 401, a body too large 413). Both texts must keep to the
    RFC 6749 §5.2 charset (printable ASCII without '"' and '\\'): anything else is a
    programming error and raises `ValueError`.
    """

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        if _ERROR_TEXT.fullmatch(error) is None:
            raise ValueError("an OAuth error code must be printable ASCII without '\"' or '\\'")
        if _ERROR_TEXT.fullmatch(description) is None:
            raise ValueError("an error_description must be printable ASCII without '\"' or '\\'")
        if not 400 <= status <= 599:
            raise ValueError(f"an error response needs a 4xx or 5xx status, not {status}")
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def parse_exchange_request(
    body: bytes, content_type: str | None, *, max_body_bytes: int, max_json_bytes: int = 8192
) -> ExchangeRequest:
    """Parse a Txn-Token Request body, or raise `ExchangeError`.

    `content_type` is the request's Content-Type header as sent (None when absent). Every
    refusal is `invalid_request` with status 400 (RFC 6749 §5.2 and RFC 8693 §2.2.2: "If the
    request itself is not valid ... the invalid_request error code") except:

    - a body longer than `max_body_bytes`: `invalid_request` with status 413. RFC 6749 §5.2
      says 400 "unless specified otherwise"; 413 (RFC 9110 §15.5.14) tells the client that
      the size, not the syntax, is wrong, and is what the HTTP server answers for a body over
      its own limit, so the client sees one status for one problem wherever it is caught;
    - `grant_type` other than the token exchange: `unsupported_grant_type` (RFC 6749 §5.2);
    - `resource` present, or `audience` repeated: `invalid_target` (RFC 8693 §2.2.2): a
      Txn-Token is valid in exactly one trust domain, named by `audience` (the draft);
    - `scope` that is not a space-separated list of RFC 6749 §3.3 scope-tokens:
      `invalid_scope`, the RFC 6749 §5.2 code for a scope "invalid, unknown, malformed".

    Parameters sent without a value are treated as omitted (RFC 6749 §3.1); unknown ones are
    ignored (RFC 6749 §3.2), but no parameter may appear twice (RFC 6749 §3.2) except as
    above. Descriptions never contain a parameter value.
    """
    if len(body) > max_body_bytes:
        raise ExchangeError(
            INVALID_REQUEST, f"the request body is larger than {max_body_bytes} bytes", 413
        )
    _check_content_type(content_type)
    if not body:
        raise ExchangeError(INVALID_REQUEST, "the request body is empty")
    parameters = _read_form(body)

    grant_type = parameters.get(_GRANT_TYPE)
    if grant_type is None:
        raise ExchangeError(INVALID_REQUEST, "grant_type is missing")
    if grant_type[0] != GRANT_TYPE:
        raise ExchangeError(
            UNSUPPORTED_GRANT_TYPE, f"the only grant type supported is {GRANT_TYPE}"
        )

    # A Txn-Token's requester is the authenticated workload itself (req_wl); a second party
    # named by actor_token would be an actor this service cannot authenticate.
    if _ACTOR_TOKEN in parameters or _ACTOR_TOKEN_TYPE in parameters:
        raise ExchangeError(
            INVALID_REQUEST,
            "delegation by actor token is not supported; the requester is the actor",
        )

    requested_token_type = parameters.get(_REQUESTED_TOKEN_TYPE)
    if requested_token_type is None:
        raise ExchangeError(INVALID_REQUEST, "requested_token_type is missing")
    if requested_token_type[0] != TXN_TOKEN_TYPE:
        raise ExchangeError(INVALID_REQUEST, f"requested_token_type must be {TXN_TOKEN_TYPE}")

    if _RESOURCE in parameters:
        raise ExchangeError(
            INVALID_TARGET, "resource is not accepted; only audience names the trust domain"
        )
    audience = parameters.get(_AUDIENCE)
    if audience is None:
        raise ExchangeError(INVALID_REQUEST, "audience is missing")
    if len(audience) > 1:
        raise ExchangeError(
            INVALID_TARGET, "a Txn-Token is valid in one trust domain; send one audience"
        )

    scope = _parse_scope(parameters.get(_SCOPE))

    subject_token = parameters.get(_SUBJECT_TOKEN)
    if subject_token is None:
        raise ExchangeError(INVALID_REQUEST, "subject_token is missing")
    subject_token_type = parameters.get(_SUBJECT_TOKEN_TYPE)
    if subject_token_type is None:
        raise ExchangeError(INVALID_REQUEST, "subject_token_type is missing")
    if subject_token_type[0] == REFRESH_TOKEN_TYPE:
        # The draft's Subject Token Types section excludes refresh tokens by name.
        raise ExchangeError(INVALID_REQUEST, "a refresh token cannot be a subject token")
    if subject_token_type[0] not in SUBJECT_TOKEN_TYPES:
        raise ExchangeError(
            INVALID_REQUEST,
            "subject_token_type must be one of " + ", ".join(sorted(SUBJECT_TOKEN_TYPES)),
        )

    return ExchangeRequest(
        audience=audience[0],
        scope=scope,
        subject_token=subject_token[0],
        subject_token_type=subject_token_type[0],
        request_context=_json_object(parameters, _REQUEST_CONTEXT, max_json_bytes),
        request_details=_json_object(parameters, _REQUEST_DETAILS, max_json_bytes),
    )


def success_response(txn_token: str) -> tuple[int, dict[str, str], bytes]:
    """The Txn-Token Response: 200 with the token (draft "Txn-Token Response", RFC 8693 §2.2.1).

    `token_type` is `N_A` because a Txn-Token is not an access token (RFC 8693 §2.2.1 for
    tokens that are not access tokens); never a `refresh_token` (the draft forbids it).
    `expires_in` is left out: RFC 8693 only recommends it, and the token's own `exp` is the
    authority. Raises `ValueError` if `txn_token` is not 1*VSCHAR (RFC 6749 Appendix A.12).
    """
    if _ACCESS_TOKEN.fullmatch(txn_token) is None:
        raise ValueError("a Txn-Token must be non-empty printable ASCII")
    return (
        200,
        _response_headers(),
        _json_body(
            {"access_token": txn_token, "issued_token_type": TXN_TOKEN_TYPE, "token_type": "N_A"}
        ),
    )


def error_response(error: ExchangeError) -> tuple[int, dict[str, str], bytes]:
    """The RFC 6749 §5.2 error response for `error`: its status, `error` and `error_description`.

    The caller adds what a status needs beyond that (for `invalid_client` with 401, the
    `WWW-Authenticate` header RFC 6749 §5.2 asks for).
    """
    return (
        error.status,
        _response_headers(),
        _json_body({"error": error.error, "error_description": error.description}),
    )


def _check_content_type(content_type: str | None) -> None:
    """Accept `application/x-www-form-urlencoded`, optionally with `charset=utf-8` only.

    Media type and parameter names compare case-insensitively (RFC 9110 §8.3.1). A 415 would
    describe this better, but RFC 6749 §5.2 answers every malformed request with 400.
    """
    refusal = ExchangeError(
        INVALID_REQUEST, f"the request body must be {_FORM_MEDIA_TYPE} (charset utf-8)"
    )
    if content_type is None:
        raise refusal
    media_type, *media_parameters = content_type.split(";")
    if media_type.strip(" \t").lower() != _FORM_MEDIA_TYPE:
        raise refusal
    for media_parameter in media_parameters:
        text = media_parameter.strip(" \t")
        if not text:
            continue  # RFC 9110 §5.6.6 allows empty parameters ("a/b;")
        name, equals, value = text.partition("=")
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        if not equals or name.lower() != "charset" or value.lower() != "utf-8":
            raise refusal


def _read_form(body: bytes) -> dict[str, list[str]]:
    """The body's parameters by name, each with its non-blank values in order.

    Refuses a repeated parameter here (RFC 6749 §3.2), except those RFC 8693 lets repeat.
    """
    if _FORM_BODY.fullmatch(body) is None:
        raise ExchangeError(
            INVALID_REQUEST, "the request body is not form-urlencoded (visible ASCII, % escapes)"
        )
    if body.count(b"&") >= _MAX_FIELDS:
        raise ExchangeError(INVALID_REQUEST, f"the request has more than {_MAX_FIELDS} parameters")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise ExchangeError(
            INVALID_REQUEST, "the request body's percent-encoded bytes are not UTF-8"
        ) from None
    except ValueError:
        # parse_qsl's own message quotes the offending field: it may hold a token.
        raise ExchangeError(
            INVALID_REQUEST, "the request body has a parameter without a name=value form"
        ) from None

    parameters: dict[str, list[str]] = {}
    for name, value in pairs:
        if not name:
            raise ExchangeError(INVALID_REQUEST, "the request body has a parameter with no name")
        if value:  # RFC 6749 §3.1: a parameter sent without a value is treated as omitted
            parameters.setdefault(name, []).append(value)
    for name, values in parameters.items():
        if len(values) > 1 and name not in _MAY_REPEAT:
            # Only our own parameter names are echoed: an unknown name is client text.
            shown = name if name in _KNOWN_PARAMETERS else "a parameter"
            raise ExchangeError(INVALID_REQUEST, f"{shown} is sent more than once")
    return parameters


def _parse_scope(values: list[str] | None) -> tuple[str, ...]:
    """The requested scope-tokens in order, a repeated token kept once.

    The draft makes `scope` REQUIRED. A repeated token is collapsed rather than refused:
    a scope is a set (RFC 6749 §3.3: "the order does not matter"), so the repeat adds nothing.
    """
    if values is None:
        raise ExchangeError(INVALID_REQUEST, "scope is missing")
    if _SCOPE_VALUE.fullmatch(values[0]) is None:
        raise ExchangeError(
            INVALID_SCOPE,
            "scope must be scope-tokens separated by single spaces (RFC 6749 section 3.3)",
        )
    return tuple(dict.fromkeys(values[0].split(" ")))


def _json_object(
    parameters: Mapping[str, list[str]], name: str, max_bytes: int
) -> dict[str, Any] | None:
    """The parameter's JSON object (the draft's request_context / request_details), if sent.

    Strict JSON only: an object, unique member names at every depth, no NaN or Infinity. The
    value must also survive being written back into a token as JSON (I-JSON, RFC 7493 §2):
    a number too large for a float would come back as Infinity, and an unpaired surrogate
    escape cannot be encoded as UTF-8, so both are refused here rather than at minting.
    """
    values = parameters.get(name)
    if values is None:
        return None
    # Encoding cannot fail: parse_qsl decoded the text as strict UTF-8.
    data = values[0].encode("utf-8")
    if len(data) > max_bytes:
        raise ExchangeError(INVALID_REQUEST, f"{name} is larger than {max_bytes} bytes")
    try:
        value = strict_json.loads_object(data)
    except (ValueError, RecursionError):
        raise ExchangeError(
            INVALID_REQUEST,
            f"{name} must be a JSON object with unique member names and no NaN or Infinity",
        ) from None
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, RecursionError):
        raise ExchangeError(
            INVALID_REQUEST, f"{name} holds a number out of range or an unpaired surrogate"
        ) from None
    return value


def _response_headers() -> dict[str, str]:
    # RFC 6749 §5.1 requires these on a token response; errors carry them too, so that no
    # cache keeps any answer of this endpoint.
    return {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


def _json_body(members: dict[str, str]) -> bytes:
    return json.dumps(members, separators=(",", ":")).encode("ascii")
