"""The context stage: Txn-Token, caller chain, end-user token and attestation results.

Runs after the caller is authenticated, because every context token must be tied to this
request by that caller's proof before it may feed a decision:

- a Txn-Token: by the WPT's `tth` (the WPT verifier refuses a Txn-Token without one); an
  mTLS caller cannot bind it, and does not need to: a Txn-Token is context, passed along
  unmodified by every hop, not a credential;
- a user token or attestation header: by the WPT's `oth` entry for that header. An mTLS-only
  caller cannot bind either, so its user token is refused unless configured otherwise, and
  its attestation header always is.

A context token that is presented but unbound or unverifiable is refused, never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from authz.credentials.attestation import (
    AttestationResult,
    AttestationSource,
    EarStatus,
    EarVerifier,
    worst,
)
from authz.credentials.authenticator import AuthnMethod, Caller
from authz.credentials.chain import Hop, build_chain
from authz.credentials.presentation import TXN_TOKEN_HEADER
from authz.credentials.txn_token import TxnTokenVerifier, VerifiedTxnToken
from authz.credentials.user_token import UserTokenVerifier, VerifiedUserToken
from authz.errors import CredentialError
from authz.reasons import Reason


@dataclass(frozen=True, slots=True)
class TransactionContext:
    txn: VerifiedTxnToken | None
    chain: tuple[Hop, ...]
    user_token: VerifiedUserToken | None
    attestation: tuple[AttestationResult, ...]
    user_token_header: str = ""
    """The header the user token came in (empty when there is none)."""

    @property
    def attestation_status(self) -> EarStatus | None:
        """The worst status over every result; None when no result was presented."""
        if not self.attestation:
            return None
        return worst(result.status for result in self.attestation)


NO_CONTEXT = TransactionContext(txn=None, chain=(), user_token=None, attestation=())
"""A request that carries no context tokens and has no authenticated caller."""


@dataclass(frozen=True, slots=True)
class UserTokenSource:
    header: str
    verifier: UserTokenVerifier
    accept_from_mtls_callers: bool


@dataclass(frozen=True, slots=True)
class AttestationSources:
    verifier: EarVerifier
    header: str | None
    wit_claim: str | None
    txn_rctx_claim: str | None
    header_requires_subject: bool = True
    """An EAR from the header must name the caller in `sub` (`ear.subject_missing`)."""


class ContextVerifier:
    def __init__(
        self,
        txn_verifier: TxnTokenVerifier,
        user_tokens: UserTokenSource | None,
        attestation: AttestationSources | None,
    ) -> None:
        self._txn_verifier = txn_verifier
        self._user_tokens = user_tokens
        self._attestation = attestation

    async def verify(
        self,
        headers: Mapping[str, str],
        caller: Caller | None,
        trust_domain: str,
        *,
        txn_required: bool,
    ) -> TransactionContext:
        """Verify the context tokens of a request into `trust_domain`. Asynchronous only
        because a token naming a `kid` its live key set lacks waits for one refresh."""
        txn_token = headers.get(TXN_TOKEN_HEADER)
        if txn_token is None:
            if txn_required:
                raise CredentialError(Reason.TXN_MISSING, "this route requires a Txn-Token")
            txn = None
        else:
            txn = await self._txn_verifier.verify_refreshing(txn_token, trust_domain)
        user_token = await self._user_token(headers, caller)
        return TransactionContext(
            txn=txn,
            chain=build_chain(txn, caller),
            user_token=user_token,
            attestation=await self._attestation_results(headers, caller, txn),
            user_token_header=""
            if user_token is None or self._user_tokens is None
            else self._user_tokens.header,
        )

    async def _user_token(
        self, headers: Mapping[str, str], caller: Caller | None
    ) -> VerifiedUserToken | None:
        source = self._user_tokens
        if source is None or (token := headers.get(source.header)) is None:
            return None
        mtls_allowed = (
            source.accept_from_mtls_callers
            and caller is not None
            and caller.authenticated_by is AuthnMethod.MTLS
        )
        if not mtls_allowed:
            _bound_caller(source.header, caller, Reason.USER_UNBOUND)
        return await source.verifier.verify_refreshing(token)

    async def _attestation_results(
        self, headers: Mapping[str, str], caller: Caller | None, txn: VerifiedTxnToken | None
    ) -> tuple[AttestationResult, ...]:
        sources = self._attestation
        if sources is None:
            return ()
        results: list[AttestationResult] = []
        if sources.header is not None and (token := headers.get(sources.header)) is not None:
            attested = _bound_caller(sources.header, caller, Reason.EAR_UNBOUND)
            result = await sources.verifier.from_jwt_refreshing(token, AttestationSource.HEADER)
            if result.subject is None and sources.header_requires_subject:
                # The caller's proof binds the header to this request, not the EAR to the
                # caller: an EAR about nobody in particular could be anyone's.
                raise CredentialError(
                    Reason.EAR_SUBJECT_MISSING, "an EAR from a header must name its workload"
                )
            results.append(_about(result, (attested.id.uri,)))
        if sources.wit_claim is not None and caller is not None and caller.wit is not None:
            claim = caller.wit.claims.get(sources.wit_claim)
            if claim is not None:
                result = await sources.verifier.from_claim_refreshing(claim, AttestationSource.WIT)
                results.append(_about(result, (caller.id.uri,)))
        if sources.txn_rctx_claim is not None and txn is not None and txn.rctx is not None:
            claim = txn.rctx.get(sources.txn_rctx_claim)
            if claim is not None:
                result = await sources.verifier.from_claim_refreshing(claim, AttestationSource.TXN)
                results.append(_about(result, txn.requesting_workloads))
        return tuple(results)


def _bound_caller(header: str, caller: Caller | None, reason: Reason) -> Caller:
    """The caller whose proof binds `header` (a WPT's `oth`, or a signature covering it);
    anything else raises `reason`."""
    if caller is None or caller.proof is None or header not in caller.proof.bound_headers:
        raise CredentialError(
            reason, f"{header} is not bound to the request (WPT 'oth' or signature coverage)"
        )
    return caller


def _about(result: AttestationResult, workloads: tuple[str, ...]) -> AttestationResult:
    """An EAR that names its subject must be about the workload it came with: the caller for
    a header or WIT claim, the transaction's requesting workload for a Txn-Token claim."""
    if result.subject is not None and result.subject not in workloads:
        raise CredentialError(Reason.EAR_SUBJECT_MISMATCH, "the EAR is about another workload")
    return result
