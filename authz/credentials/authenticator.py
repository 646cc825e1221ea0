"""The credentials stage: from request headers (and Envoy's mTLS report) to a verified caller.

A caller is either a WIT subject that proved possession of its key with a WPT, or, when no
WIT is presented and configuration allows it, the mTLS identity Envoy reports. A WIT without
a proof proves nothing and is refused (`wpt.missing`); it never becomes the caller.
No credentials at all is not an error here: the request goes to policy unauthenticated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from authz.credentials.identifiers import InvalidIdentifier, WorkloadId, parse_workload_id
from authz.credentials.presentation import PresentedCredentials, SizeLimits, read_credentials
from authz.credentials.wit import VerifiedWit, WitVerifier
from authz.credentials.wpt import ProofContext, VerifiedWpt, WptVerifier
from authz.errors import CredentialError
from authz.reasons import Reason


class AuthnMethod(StrEnum):
    WPT = "wpt"
    MTLS = "mtls"


@dataclass(frozen=True, slots=True)
class Caller:
    """The immediate caller of this hop, as this gateway authenticated it."""

    id: WorkloadId
    authenticated_by: AuthnMethod
    wit: VerifiedWit | None = None
    proof: VerifiedWpt | None = None


@dataclass(frozen=True, slots=True)
class Authentication:
    caller: Caller | None
    presented: PresentedCredentials


@dataclass(frozen=True, slots=True)
class MtlsRules:
    authenticate: bool
    trust_domains: frozenset[str]


class Authenticator:
    def __init__(
        self,
        wit_verifier: WitVerifier,
        wpt_verifier: WptVerifier,
        limits: SizeLimits,
        mtls: MtlsRules,
        *,
        legacy_wpt: bool,
        context_headers: Sequence[str],
    ) -> None:
        self._wit_verifier = wit_verifier
        self._wpt_verifier = wpt_verifier
        self._limits = limits
        self._mtls = mtls
        self._legacy_wpt = legacy_wpt
        self._context_headers = tuple(context_headers)

    async def authenticate(
        self, headers: Mapping[str, str], source_principal: str, audiences: Sequence[str]
    ) -> Authentication:
        """Verify what the request presents; raise `CredentialError` if any of it is invalid.

        `audiences` are the target URIs a WPT `aud` may name for this request.
        """
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
            return Authentication(self._mtls_caller(source_principal), presented)

        if presented.wpt is None:
            if presented.signature:
                raise CredentialError(
                    Reason.HTTPSIG_UNSUPPORTED, "HTTP Message Signatures are not accepted here"
                )
            if presented.legacy_header_refused:
                raise CredentialError(
                    Reason.WPT_LEGACY_FORM_DISABLED, "the pre-02 Workload-Proof-Token form is off"
                )
            raise CredentialError(Reason.WPT_MISSING, "a WIT needs a proof of possession")

        wit = self._wit_verifier.verify(presented.wit)
        proof = await self._wpt_verifier.verify(
            presented.wpt,
            wit,
            ProofContext(
                audiences=audiences, headers=headers, legacy_bearer=presented.legacy_bearer
            ),
            legacy=presented.legacy_form,
        )
        return Authentication(Caller(wit.subject, AuthnMethod.WPT, wit, proof), presented)

    def _mtls_caller(self, principal: str) -> Caller | None:
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
