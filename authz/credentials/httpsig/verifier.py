"""HTTP Message Signatures as WIMSE proof of possession (draft-ietf-wimse-http-signature-07).

Runs only after the WIT verified, and only with the WIT's `cnf.jwk` (its `alg` is the
signature algorithm: a `keyid` or `alg` parameter is refused, never consulted). Order, each
step with its own `httpsig.*` reason code:
1. the one signature whose `tag` is `wimse-workload-to-workload` (never chosen by label;
   two such signatures are refused as ambiguous);
2. parameters: `created`, `expires`, `nonce`, `wimse-aud` present and typed, `keyid` and
   `alg` absent, `wimse-sign-response` a boolean when present;
3. covered components: `@method`, `@path`, `@query` always; `content-type`,
   `content-digest`, `authorization`, `txn-token`, `workload-identity-token` whenever the
   request has them; nothing this verifier cannot compute exactly;
4. `wimse-aud` is one of this request's configured target URIs;
5. `created` not in the future, `expires` not passed (both with the clock skew), and the
   window no longer than configured;
6. the signature over the RFC 9421 signature base;
7. a request with a body carries a `Content-Digest` matching the exact bytes Envoy forwarded
   (a partial body cannot be verified and is refused, and so is a request whose body Envoy
   did not forward: `HttpRequest.body` None);
8. the `nonce` was not used before, by any sender (the shared replay cache).
Context-token headers (user token, attestation) are bound by being covered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from authz.clock import Clock
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.credentials.httpsig.content_digest import verify_content_digest
from authz.credentials.httpsig.message import (
    ComponentError,
    HttpRequest,
    covered_names,
    signature_base,
)
from authz.credentials.httpsig.structured_fields import (
    BareItem,
    InnerList,
    Item,
    Member,
    StructuredFieldError,
    parse_dictionary,
)
from authz.credentials.presentation import (
    AUTHORIZATION_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_INPUT_HEADER,
    TXN_TOKEN_HEADER,
    WIT_HEADER,
)
from authz.credentials.wit import VerifiedWit
from authz.errors import CredentialError, UnavailableError
from authz.reasons import Reason
from authz.replay.memory import ANY_SENDER, ReplayCache

WIMSE_TAG = "wimse-workload-to-workload"
MAX_NONCE_LENGTH = 256
CONTENT_DIGEST_HEADER = "content-digest"
CONTENT_TYPE_HEADER = "content-type"
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
"""Envoy sets it (`true`/`false`) when it forwards a body (measured on Envoy 1.40: not on a
request that ended with its headers), replacing any value the client sent."""

REQUIRED_COMPONENTS = ("@method", "@path", "@query")
COVERED_WHEN_PRESENT = (
    CONTENT_TYPE_HEADER,
    CONTENT_DIGEST_HEADER,
    AUTHORIZATION_HEADER,
    TXN_TOKEN_HEADER,
    WIT_HEADER,
)
_FORBIDDEN_PARAMETERS = ("keyid", "alg")


@dataclass(frozen=True, slots=True)
class SignatureRules:
    clock_skew: float
    max_lifetime: float
    """Upper bound for `expires - created` (the draft asks for a short window)."""
    bindable_headers: frozenset[str]
    """Context-token headers (user token, attestation) that coverage binds to the request."""


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    label: str
    nonce: str
    audience: str
    created: int
    expires_at: float
    covered: tuple[str, ...]
    """The covered components, as the signer listed them."""
    bound_headers: frozenset[str]
    """Txn-Token and context-token headers the signature covers: the only ones that may feed
    authorization."""
    sign_response: bool
    """The caller asked for a signed response (`wimse-sign-response`): the workload's job."""


@dataclass(frozen=True, slots=True)
class _Selected:
    label: str
    covered: InnerList
    signature: bytes


class SignatureVerifier:
    def __init__(self, rules: SignatureRules, clock: Clock, replay_cache: ReplayCache) -> None:
        self._rules = rules
        self._clock = clock
        self._replay_cache = replay_cache

    async def verify(
        self, request: HttpRequest, wit: VerifiedWit, audiences: Sequence[str]
    ) -> VerifiedSignature:
        """Verify the request's WIMSE signature as proof of possession for `wit`."""
        selected = _select(request.headers)
        params = selected.covered.params
        for name in _FORBIDDEN_PARAMETERS:
            if name in params:
                raise CredentialError(
                    Reason.HTTPSIG_PARAM_FORBIDDEN, f"the {name!r} parameter must not be sent"
                )
        created = _integer(params, "created")
        expires = _integer(params, "expires")
        nonce = _string(params, "nonce")
        audience = _string(params, "wimse-aud")
        sign_response = params.get("wimse-sign-response", False)
        if not isinstance(sign_response, bool):
            raise CredentialError(
                Reason.HTTPSIG_PARAM_INVALID, "'wimse-sign-response' must be a boolean"
            )
        if not nonce or len(nonce) > MAX_NONCE_LENGTH:
            raise CredentialError(Reason.HTTPSIG_PARAM_INVALID, "'nonce' is empty or too long")

        covered = tuple(covered_names(selected.covered))
        _check_coverage(covered, request.headers)
        if audience not in audiences:
            raise CredentialError(
                Reason.HTTPSIG_AUDIENCE_MISMATCH, "'wimse-aud' is not this request's target"
            )
        self._check_window(created, expires)

        try:
            base = signature_base(request, selected.covered)
        except ComponentError as exc:
            absent = exc.absent
            reason = (
                Reason.HTTPSIG_COMPONENT_ABSENT if absent else Reason.HTTPSIG_COMPONENT_UNSUPPORTED
            )
            raise CredentialError(reason, str(exc)) from None
        algorithm = SUPPORTED_ALGORITHMS[wit.proof_alg]
        if not wit.proof_key.verify(algorithm, base, selected.signature):
            raise CredentialError(Reason.HTTPSIG_SIGNATURE_INVALID, "signature does not verify")

        _check_body(request)
        if not await self._replay_cache.claim(
            ANY_SENDER,
            f"nonce:{nonce}",
            expires + self._rules.clock_skew,
            # `created` is at most the skew ahead of any acceptance (`_check_window`).
            usable_from=created - self._rules.clock_skew,
        ):
            raise CredentialError(Reason.HTTPSIG_REPLAYED, "this signature nonce was already used")
        bindable = self._rules.bindable_headers | {TXN_TOKEN_HEADER}
        return VerifiedSignature(
            label=selected.label,
            nonce=nonce,
            audience=audience,
            created=created,
            expires_at=float(expires),
            covered=covered,
            bound_headers=frozenset(name for name in covered if name in bindable),
            sign_response=sign_response,
        )

    def _check_window(self, created: int, expires: int) -> None:
        now, skew = self._clock(), self._rules.clock_skew
        if created > now + skew:
            raise CredentialError(Reason.HTTPSIG_CREATED_IN_FUTURE, "'created' is in the future")
        if expires <= created:
            raise CredentialError(Reason.HTTPSIG_PARAM_INVALID, "'expires' is not after 'created'")
        if now >= expires + skew:
            raise CredentialError(Reason.HTTPSIG_EXPIRED, "the signature has expired")
        if expires - created > self._rules.max_lifetime:
            raise CredentialError(
                Reason.HTTPSIG_LIFETIME_TOO_LONG, "'expires' is too far after 'created'"
            )


def _parse(headers: Mapping[str, str], name: str) -> dict[str, Member]:
    value = headers.get(name)
    if value is None:
        raise CredentialError(Reason.HTTPSIG_MALFORMED, f"the {name} header is missing")
    try:
        return parse_dictionary(value)
    except StructuredFieldError as exc:
        raise CredentialError(Reason.HTTPSIG_MALFORMED, f"{name}: {exc}") from None


def _select(headers: Mapping[str, str]) -> _Selected:
    inputs = _parse(headers, SIGNATURE_INPUT_HEADER)
    tagged = [
        label
        for label, member in inputs.items()
        if isinstance(member, InnerList) and member.params.get("tag") == WIMSE_TAG
    ]
    if not tagged:
        raise CredentialError(
            Reason.HTTPSIG_MISSING, f"no signature is tagged {WIMSE_TAG!r} in Signature-Input"
        )
    if len(tagged) > 1:
        raise CredentialError(Reason.HTTPSIG_AMBIGUOUS, f"two signatures are tagged {WIMSE_TAG!r}")
    label = tagged[0]
    covered = inputs[label]
    assert isinstance(covered, InnerList)  # by the selection above
    signature = _parse(headers, SIGNATURE_HEADER).get(label)
    if not isinstance(signature, Item) or not isinstance(signature.value, bytes):
        raise CredentialError(
            Reason.HTTPSIG_SIGNATURE_MISSING, "Signature has no byte sequence for the label"
        )
    for item in covered.items:
        if not isinstance(item.value, str):
            raise CredentialError(
                Reason.HTTPSIG_MALFORMED, "covered components must be quoted strings"
            )
    return _Selected(label, covered, signature.value)


def _parameter(params: Mapping[str, BareItem], name: str) -> BareItem:
    value = params.get(name)
    if value is None:
        raise CredentialError(Reason.HTTPSIG_PARAM_MISSING, f"the {name!r} parameter is required")
    return value


def _integer(params: Mapping[str, BareItem], name: str) -> int:
    value = _parameter(params, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CredentialError(Reason.HTTPSIG_PARAM_INVALID, f"{name!r} must be an integer")
    return value


def _string(params: Mapping[str, BareItem], name: str) -> str:
    value = _parameter(params, name)
    if not isinstance(value, str):
        raise CredentialError(Reason.HTTPSIG_PARAM_INVALID, f"{name!r} must be a string")
    return value


def _check_coverage(covered: Sequence[str], headers: Mapping[str, str]) -> None:
    required = [*REQUIRED_COMPONENTS, *(h for h in COVERED_WHEN_PRESENT if h in headers)]
    missing = [name for name in required if name not in covered]
    if missing:
        raise CredentialError(
            Reason.HTTPSIG_COVERAGE_MISSING, f"the signature must cover {', '.join(missing)}"
        )


def _check_body(request: HttpRequest) -> None:
    body = request.body
    if body is None:
        # The caller (the authenticator) refuses such a request before verifying anything;
        # checked again so that this verifier never passes a body it did not see.
        raise UnavailableError(
            Reason.HTTPSIG_BODY_NOT_FORWARDED,
            "Envoy did not forward this request's body as bytes",
        )
    length = request.headers.get("content-length")
    if request.body_partial or (length is not None and length.strip() != str(len(body))):
        raise CredentialError(
            Reason.HTTPSIG_BODY_PARTIAL, "only part of the body was forwarded: cannot verify it"
        )
    digest = request.headers.get(CONTENT_DIGEST_HEADER)
    if digest is None:
        if body:
            raise CredentialError(Reason.HTTPSIG_DIGEST_MISSING, "a body needs a Content-Digest")
        return
    verify_content_digest(digest, body)
