"""The credentials stage: from request headers (and Envoy's mTLS report) to a verified caller.

A caller is either a WIT subject that proved possession of its key with a WPT or an HTTP
Message Signature (whichever the service accepts), or, when no WIT is presented and
configuration allows it, the mTLS identity Envoy reports. A WIT without a proof proves
nothing and is refused (`wpt.missing`); it never becomes the caller.
No credentials at all is not an error here: the request goes to policy unauthenticated.

An HTTP signature is verified only where it can be verified whole: the service lists
`http_signature` and the route declares `wimse.body: forwarded` (Envoy forwards the exact
body, so a body the signer left out of `Content-Digest` is seen). Anywhere else a signed
request is refused before any of it is verified, whatever its method and whether or not it
seems to carry a body: a route that does not forward bodies cannot tell a body-less request
from one whose body arrives unannounced (HTTP/1.1 chunked, HTTP/2 without `content-length`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from authz.config import BODY_CONTEXT_KEY, BODY_FORWARDED
from authz.credentials.httpsig.message import HttpRequest
from authz.credentials.httpsig.verifier import SignatureVerifier, VerifiedSignature
from authz.credentials.identifiers import InvalidIdentifier, WorkloadId, parse_workload_id
from authz.credentials.presentation import (
    PresentedCredentials,
    ProofStyle,
    SizeLimits,
    read_credentials,
)
from authz.credentials.wit import VerifiedWit, WitVerifier
from authz.credentials.wpt import ProofContext, VerifiedWpt, WptVerifier
from authz.credentials.x509_svid import SvidVerifier
from authz.errors import CredentialError, UnavailableError
from authz.reasons import Reason


class AuthnMethod(StrEnum):
    WPT = "wpt"
    HTTP_SIGNATURE = "http_signature"
    MTLS = "mtls"


@dataclass(frozen=True, slots=True)
class Caller:
    """The immediate caller of this hop, as this gateway authenticated it."""

    id: WorkloadId
    authenticated_by: AuthnMethod
    wit: VerifiedWit | None = None
    proof: VerifiedWpt | VerifiedSignature | None = None


@dataclass(frozen=True, slots=True)
class Authentication:
    caller: Caller | None
    presented: PresentedCredentials


@dataclass(frozen=True, slots=True)
class ProofTarget:
    """What a proof must name and may be, for the service this request is for."""

    audiences: Sequence[str]
    """Target URIs a WPT `aud` or a signature's `wimse-aud` may name."""
    accepted: frozenset[ProofStyle]
    """The proof styles the service lists."""
    body_forwarded: bool
    """The route declares `wimse.body: forwarded`: the only routes where an HTTP signature is
    accepted."""


@dataclass(frozen=True, slots=True)
class MtlsRules:
    authenticate: bool
    trust_domains: frozenset[str]
    certificates: SvidVerifier | None = None
    """Set: the caller is the client certificate Envoy forwards, verified as an X.509-SVID
    (Envoy's principal must agree with it). None: the principal is taken as given."""


class Authenticator:
    def __init__(
        self,
        wit_verifier: WitVerifier,
        wpt_verifier: WptVerifier,
        signature_verifier: SignatureVerifier,
        limits: SizeLimits,
        mtls: MtlsRules,
        *,
        legacy_wpt: bool,
        context_headers: Sequence[str],
    ) -> None:
        self._wit_verifier = wit_verifier
        self._wpt_verifier = wpt_verifier
        self._signature_verifier = signature_verifier
        self._limits = limits
        self._mtls = mtls
        self._legacy_wpt = legacy_wpt
        self._context_headers = tuple(context_headers)

    async def authenticate(
        self,
        request: HttpRequest,
        source_principal: str,
        target: ProofTarget,
        *,
        peer_certificate: str = "",
    ) -> Authentication:
        """Verify what the request presents; raise `CredentialError` if any of it is invalid."""
        headers = request.headers
        presented = read_credentials(
            headers,
            self._limits,
            legacy_wpt=self._legacy_wpt,
            context_headers=self._context_headers,
        )
        if presented.wit is None:
            if presented.wpt is not None:
                raise CredentialError(Reason.WIT_MISSING, "a WPT was sent without its WIT")
            if presented.signature:
                raise CredentialError(Reason.WIT_MISSING, "a signature was sent without a WIT")
            return Authentication(self._mtls_caller(source_principal, peer_certificate), presented)

        if presented.signature:
            _check_signature_accepted(request, target)
            wit = await self._wit_verifier.verify_refreshing(presented.wit)
            signature = await self._signature_verifier.verify(request, wit, target.audiences)
            caller = Caller(wit.subject, AuthnMethod.HTTP_SIGNATURE, wit, signature)
            return Authentication(caller, presented)

        if presented.wpt is None:
            if presented.legacy_header_refused:
                raise CredentialError(
                    Reason.WPT_LEGACY_FORM_DISABLED, "the pre-02 Workload-Proof-Token form is off"
                )
            raise CredentialError(Reason.WPT_MISSING, "a WIT needs a proof of possession")
        if ProofStyle.WPT not in target.accepted:
            raise CredentialError(Reason.WPT_NOT_ACCEPTED, "this service does not accept WPTs")

        wit = await self._wit_verifier.verify_refreshing(presented.wit)
        proof = await self._wpt_verifier.verify(
            presented.wpt,
            wit,
            ProofContext(
                audiences=target.audiences,
                headers=headers,
                legacy_bearer=presented.legacy_bearer,
            ),
            legacy=presented.legacy_form,
        )
        return Authentication(Caller(wit.subject, AuthnMethod.WPT, wit, proof), presented)

    def _mtls_caller(self, principal: str, certificate: str) -> Caller | None:
        if self._mtls.authenticate and self._mtls.certificates is not None:
            return _verified_mtls_caller(self._mtls.certificates, principal, certificate)
        if not self._mtls.authenticate or not principal:
            return None
        try:
            identity = parse_workload_id(principal)
        except InvalidIdentifier as exc:
            raise CredentialError(Reason.MTLS_PRINCIPAL_INVALID, f"mTLS principal: {exc}") from None
        if identity.trust_domain not in self._mtls.trust_domains:
            raise CredentialError(
                Reason.MTLS_TRUST_DOMAIN_UNKNOWN, "mTLS principal's trust domain is not trusted"
            )
        return Caller(identity, AuthnMethod.MTLS)


def _check_signature_accepted(request: HttpRequest, target: ProofTarget) -> None:
    """Refuse a signed request this route and service cannot verify whole, before any of it
    is verified."""
    if ProofStyle.HTTP_SIGNATURE not in target.accepted:
        raise CredentialError(
            Reason.HTTPSIG_NOT_ACCEPTED, "this service does not accept HTTP signatures"
        )
    if not target.body_forwarded:
        raise CredentialError(
            Reason.HTTPSIG_NOT_ACCEPTED,
            f"HTTP signatures are accepted only on routes that set "
            f"{BODY_CONTEXT_KEY}: {BODY_FORWARDED}",
        )
    if request.body is None:
        # The route says Envoy forwards bodies, but this one arrived without its bytes: the
        # Envoy configuration contradicts the route's declaration, an outage of ours.
        raise UnavailableError(
            Reason.HTTPSIG_BODY_NOT_FORWARDED,
            f"the route sets {BODY_CONTEXT_KEY}: {BODY_FORWARDED} but Envoy did not forward "
            "this request's body as bytes (with_request_body, pack_as_bytes)",
        )


def _verified_mtls_caller(
    certificates: SvidVerifier, principal: str, certificate: str
) -> Caller | None:
    """The caller the forwarded client certificate proves; Envoy's principal, when it
    reports one, must be that certificate's URI SAN."""
    if not principal and not certificate:
        return None  # no client certificate: not a mutual-TLS connection
    identity = certificates.verify(certificate)
    if principal and principal != identity.uri:
        raise CredentialError(
            Reason.MTLS_CERTIFICATE_MISMATCH, "Envoy's principal is not the certificate's URI SAN"
        )
    return Caller(identity, AuthnMethod.MTLS)
