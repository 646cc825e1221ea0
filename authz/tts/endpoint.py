"""The token-exchange endpoint (`mode: tts`): the Txn-Token Request and Response over HTTP,
and the TTS's public keys.

`POST <endpoint.path>`: the requester authenticates with its WIT and a WPT whose `aud` is
`endpoint.url` (the same verifiers and replay cache as the ext_authz path; an HTTP
signature works too), or, where configured, with the client certificate of a mutual-TLS
listener. Then the request is parsed (`authz.tts.exchange`), the subject token verified by
its type, the issuance policy asked and held to its rules (`authz.tts.issuance`), and a
Txn-Token minted. Every failure is an RFC 6749 §5.2 / RFC 8693 error as JSON, never a stack
trace; decisions are logged without token bytes.

`GET <endpoint.jwks_path>`: the published keys, next and retired ones included.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography import x509

from authz.clock import Clock
from authz.config import ListenerConfig
from authz.config.tts import TokenExchangeConfig
from authz.credentials.authenticator import Authenticator, ProofTarget
from authz.credentials.claims import LifetimeReasons, check_lifetime, scope_values
from authz.credentials.httpsig.message import HttpRequest
from authz.credentials.jose import JoseReasons, parse_compact_jws
from authz.credentials.presentation import ProofStyle
from authz.credentials.signature import SignatureReasons, verify_signature
from authz.credentials.txn_token import TxnTokenVerifier, VerifiedTxnToken
from authz.credentials.user_token import UserTokenVerifier
from authz.errors import CredentialError, UnavailableError, is_rust_panic
from authz.observability.decision_log import DecisionLog, DecisionRecord
from authz.observability.logs import decision_scope
from authz.observability.metrics import Metrics
from authz.pipeline import new_decision_id
from authz.policy.engine import PolicyEngine
from authz.reasons import Reason
from authz.server.endpoints import unix_socket_path
from authz.strict_json import loads_object
from authz.trust.key_sets import build_key_set
from authz.tts.exchange import (
    ACCESS_TOKEN_TYPE,
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TARGET,
    JWT_TOKEN_TYPE,
    SELF_SIGNED_TYPE,
    TXN_TOKEN_TYPE,
    UNSIGNED_JSON_TYPE,
    ExchangeError,
    ExchangeRequest,
    error_response,
    parse_exchange_request,
    success_response,
)
from authz.tts.issuance import (
    IssuanceRefused,
    IssuanceRequest,
    Subject,
    access_token_subject,
    decide_issuance,
)
from authz.tts.keys import TtsKeys
from authz.tts.minting import TxnTokenMinter

log = logging.getLogger("authz.tts")

UNAUTHORIZED_CLIENT = "unauthorized_client"
_SELF_SIGNED_MAX_LIFETIME = 300.0
_SELF_SIGNED_JOSE = JoseReasons.for_token("user")
_SELF_SIGNED_SIGNATURE = SignatureReasons.for_token("user")
_SELF_SIGNED_LIFETIME = LifetimeReasons.for_token("user")
_MAX_LINE_BYTES = 8192
_MAX_HEADERS = 64
_REFUSALS = {
    Reason.ISSUANCE_DENIED: UNAUTHORIZED_CLIENT,
    Reason.ISSUANCE_SCOPE_TOO_WIDE: INVALID_SCOPE,
    Reason.ISSUANCE_SCOPE_EMPTY: INVALID_SCOPE,
    Reason.ISSUANCE_NO_GRANT: INVALID_REQUEST,
}


class _Refused(Exception):
    """An answer of the endpoint's own: the OAuth error and the reason code logged."""

    def __init__(self, error: ExchangeError, reason: Reason) -> None:
        super().__init__(error.description)
        self.error = error
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Requester:
    id: str
    authenticated_by: str
    proof_key: Any | None
    """The WIT's confirmed key (for self-signed subject tokens); None for mTLS."""


class TokenExchange:
    """The endpoint's logic, one instance per gateway (rebuilt on reload)."""

    def __init__(
        self,
        *,
        config: TokenExchangeConfig,
        trust_domain: str,
        issuer: str | None,
        lifetime: float,
        max_extension: float,
        keys: TtsKeys,
        authenticator: Authenticator,
        access_tokens: UserTokenVerifier,
        txn_tokens: TxnTokenVerifier,
        engine: PolicyEngine,
        decision_log: DecisionLog,
        metrics: Metrics,
        clock: Clock,
        clock_skew: float,
    ) -> None:
        self.config = config
        self.keys = keys
        self._trust_domain = trust_domain
        self._minter = TxnTokenMinter(
            keys, trust_domain=trust_domain, issuer=issuer, lifetime=lifetime, clock=clock
        )
        self._max_extension = max_extension
        self._authenticator = authenticator
        self._access_tokens = access_tokens
        self._txn_tokens = txn_tokens
        self.engine = engine
        self._decision_log = decision_log
        self._metrics = metrics
        self._clock = clock
        self._clock_skew = clock_skew
        self._target = ProofTarget(
            (config.url,),
            frozenset({ProofStyle.WPT, ProofStyle.HTTP_SIGNATURE}),
            body_forwarded=True,
        )

    async def exchange(
        self, message: HttpRequest, peer_principal: str | None, peer_address: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one Txn-Token Request: (status, headers, body)."""
        started = time.perf_counter()
        record = DecisionRecord(new_decision_id(), time.time(), direction="token_exchange")
        record.method, record.path = message.method, message.path
        try:
            with decision_scope(record.decision_id):
                status, headers, body = await self._exchange(
                    message, peer_principal, peer_address, record
                )
            record.result, record.reason = "allow", Reason.TTS_ISSUED.value
        except _Refused as refused:
            status, headers, body = error_response(refused.error)
            if status == 401:
                # RFC 6749 §5.2 / RFC 9110: a 401 names how to authenticate; here with the
                # WIT and a WPT for this endpoint (wpt-02's challenge).
                headers["WWW-Authenticate"] = "WPT"
            record.result, record.reason = "deny", refused.reason.value
            log.info(
                "tts refused %s %s (%s): %s",
                record.decision_id,
                refused.error.error,
                refused.reason,
                refused.error.description,
            )
        except UnavailableError as error:
            log.warning(
                "tts unavailable %s %s: %s", record.decision_id, error.reason, error.message
            )
            status, headers, body = error_response(
                ExchangeError("temporarily_unavailable", "try again later", 503)
            )
            record.result, record.reason = "error", error.reason.value
        except BaseException as error:
            # Anything unexpected is answered as our failure, a Rust panic (a BaseException
            # from cryptography) included; cancellation and exit are re-raised.
            if not isinstance(error, Exception) and not is_rust_panic(error):
                raise
            log.exception("tts unavailable %s: unexpected error", record.decision_id)
            status, headers, body = error_response(
                ExchangeError("server_error", "the token could not be issued", 500)
            )
            record.result, record.reason = "error", Reason.INTERNAL_ERROR.value
        record.status = status
        record.total_us = int((time.perf_counter() - started) * 1e6)
        self._metrics.count_decision(record.result, Reason(record.reason))
        self._decision_log.write(record)
        return status, headers, body

    def refuse_oversized(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        """The answer to a body over `max_body_bytes` (read no further), logged like any."""
        record = DecisionRecord(new_decision_id(), time.time(), direction="token_exchange")
        record.method, record.path = method, path
        record.result, record.reason, record.status = "deny", Reason.TTS_REQUEST_INVALID.value, 413
        self._metrics.count_decision(record.result, Reason.TTS_REQUEST_INVALID)
        self._decision_log.write(record)
        log.info("tts refused %s invalid_request: the body is over the limit", record.decision_id)
        return error_response(ExchangeError(INVALID_REQUEST, "the request body is too large", 413))

    async def _exchange(
        self,
        message: HttpRequest,
        peer_principal: str | None,
        peer_address: str | None,
        record: DecisionRecord,
    ) -> tuple[int, dict[str, str], bytes]:
        requester = await self._requester(message, peer_principal)
        record.caller, record.authenticated_by = requester.id, requester.authenticated_by
        try:
            request = parse_exchange_request(
                message.body or b"",
                message.headers.get("content-type"),
                max_body_bytes=self.config.max_body_bytes,
            )
        except ExchangeError as error:
            raise _Refused(error, Reason.TTS_REQUEST_INVALID) from None
        if request.audience != self._trust_domain:
            raise _Refused(
                ExchangeError(INVALID_TARGET, "audience is not this trust domain"),
                Reason.TTS_TARGET_INVALID,
            )
        subject, replacing = await self._subject(request, requester)
        try:
            issuance = await decide_issuance(
                self.engine,
                IssuanceRequest(
                    shape="token_exchange",
                    subject=subject,
                    requester=requester.id,
                    requested_scope=request.scope,
                    request_context=request.request_context,
                    request_details=request.request_details,
                    peer_address=peer_address,
                    replacing=replacing,
                ),
                self._trust_domain,
            )
        except IssuanceRefused as refused:
            record.policy_reasons = refused.policy_reasons
            refusal = ExchangeError(_REFUSALS.get(refused.reason, INVALID_REQUEST), refused.message)
            raise _Refused(refusal, refused.reason) from None
        record.policy_reasons = issuance.policy_reasons
        # A replacement may extend the transaction's life only a little.
        expires_by = replacing.expires_at + self._max_extension if replacing is not None else None
        token = self._minter.mint(issuance.claims, expires_by=expires_by)
        record.txn, record.txn_sub = issuance.claims.txn, issuance.claims.sub
        log.info(
            "tts issued %s txn=%s sub=%s to %s%s",
            record.decision_id,
            issuance.claims.txn,
            issuance.claims.sub,
            requester.id,
            " (replacement)" if replacing is not None else "",
        )
        return success_response(token)

    async def _requester(self, message: HttpRequest, peer_principal: str | None) -> Requester:
        try:
            authentication = await self._authenticator.authenticate(message, "", self._target)
        except CredentialError as error:
            self._metrics.count_verification_failure(error.reason.value)
            raise _Refused(
                ExchangeError(INVALID_CLIENT, "the requester's credentials are invalid", 401),
                error.reason,
            ) from None
        caller = authentication.caller
        if caller is not None:
            proof_key = caller.wit.proof_key if caller.wit is not None else None
            return Requester(caller.id.uri, caller.authenticated_by.value, proof_key)
        if self.config.mtls_requesters and peer_principal:
            return Requester(peer_principal, "mtls", None)
        raise _Refused(
            ExchangeError(INVALID_CLIENT, "the requester is not authenticated", 401),
            Reason.TTS_CLIENT_INVALID,
        )

    async def _subject(self, request: ExchangeRequest, requester: Requester) -> tuple[Subject, Any]:
        kind = request.subject_token_type
        token = request.subject_token
        try:
            if kind in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
                verified = await self._access_tokens.verify_refreshing(token)
                return access_token_subject(verified), None
            if kind == TXN_TOKEN_TYPE:
                original = await self._replaceable(token)
                subject = Subject(
                    original.subject, "txn_token", frozenset(original.scopes), original.claims
                )
                return subject, original
            if kind == SELF_SIGNED_TYPE:
                return self._self_signed(token, requester), None
            if kind == UNSIGNED_JSON_TYPE:
                return self._unsigned_json(token, requester), None
        except CredentialError as error:
            raise _Refused(
                ExchangeError(INVALID_REQUEST, "the subject token is not valid here"),
                error.reason,
            ) from None
        raise _Refused(
            ExchangeError(INVALID_REQUEST, "unsupported subject_token_type"),
            Reason.TTS_REQUEST_INVALID,
        )

    async def _replaceable(self, token: str) -> VerifiedTxnToken:
        original = await self._txn_tokens.verify_refreshing(token, self._trust_domain)
        if original.expires_at <= self._clock():
            # The verifier allows clock skew; an expired token is never replaced.
            raise CredentialError(Reason.TXN_EXPIRED, "an expired Txn-Token is not replaced")
        return original

    def _self_signed(self, token: str, requester: Requester) -> Subject:
        if requester.id not in self.config.self_signed_workloads or requester.proof_key is None:
            raise _Refused(
                ExchangeError(UNAUTHORIZED_CLIENT, "self-signed subject tokens are not accepted"),
                Reason.TTS_CLIENT_NOT_ALLOWED,
            )
        jws = parse_compact_jws(token, _SELF_SIGNED_JOSE)
        key_set = build_key_set("requester", requester.proof_key.algorithms, [requester.proof_key])
        verify_signature(jws, (key_set,), _SELF_SIGNED_SIGNATURE)
        claims = jws.claims
        check_lifetime(
            claims,
            now=self._clock(),
            clock_skew=self._clock_skew,
            max_lifetime=_SELF_SIGNED_MAX_LIFETIME,
            reasons=_SELF_SIGNED_LIFETIME,
        )
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        sub = claims.get("sub")
        if claims.get("iss") != requester.id or self.config.url not in audiences:
            raise CredentialError(Reason.TTS_SUBJECT_INVALID, "iss or aud do not fit")
        if not isinstance(sub, str) or not sub:
            raise CredentialError(Reason.TTS_SUBJECT_INVALID, "no sub")
        # A workload vouching for a subject grants nothing by itself: the requested scope is
        # bounded by what the self-signed token says it may carry.
        return Subject(sub, "self_signed", _grant(claims.get("scope")), claims)

    def _unsigned_json(self, token: str, requester: Requester) -> Subject:
        if requester.id not in self.config.unsigned_json_workloads:
            raise _Refused(
                ExchangeError(UNAUTHORIZED_CLIENT, "unsigned subject tokens are not accepted"),
                Reason.TTS_CLIENT_NOT_ALLOWED,
            )
        try:
            # Duplicate members refused: two parsers must never read two subjects.
            document = loads_object(token.encode("utf-8"))
        except (ValueError, RecursionError):
            raise CredentialError(Reason.TTS_SUBJECT_INVALID, "not a JSON object") from None
        sub = document.get("sub")
        if not isinstance(sub, str) or not sub:
            raise CredentialError(Reason.TTS_SUBJECT_INVALID, "no sub")
        return Subject(sub, "unsigned_json", _grant(document.get("scope")), document)


def _grant(scope: object) -> frozenset[str] | None:
    """What a `scope` claim grants; None when there is none (or none well formed)."""
    if not isinstance(scope, str):
        return None
    values = scope_values(scope)
    if values is None:
        raise CredentialError(Reason.TTS_SUBJECT_INVALID, "'scope' is malformed")
    return frozenset(values)


class TokenExchangeServer:
    """The HTTP listener of `mode: tts`: aiohttp on a Unix socket or TLS (mutual TLS when the
    listener has a client CA). The handler reads the current `TokenExchange`, swapped in on
    reload; until one is installed every request is 503."""

    def __init__(self, listener: ListenerConfig) -> None:
        self._listener = listener
        self.exchange: TokenExchange | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, max_body_bytes: int) -> None:
        app = web.Application(client_max_size=max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            max_line_size=_MAX_LINE_BYTES,
            max_field_size=_MAX_LINE_BYTES,
            max_headers=_MAX_HEADERS,
        )
        await runner.setup()
        site: web.BaseSite
        if self._listener.is_unix:
            site = web.UnixSite(runner, str(unix_socket_path(self._listener)))
        else:
            host, _, port = self._listener.address.rpartition(":")
            site = web.TCPSite(
                runner,
                host.strip("[]"),
                int(port),
                ssl_context=_server_ssl_context(self._listener),
                reuse_port=False,
            )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"cannot listen on {self._listener.address}: {exc.strerror}"
            ) from exc
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        exchange = self.exchange
        if exchange is None:
            status, headers, body = error_response(
                ExchangeError("temporarily_unavailable", "not ready", 503)
            )
            return web.Response(status=status, headers=headers, body=body)
        config = exchange.config
        if request.path == config.jwks_path and request.method in ("GET", "HEAD"):
            return web.Response(
                status=200,
                headers={"Content-Type": "application/json", "Cache-Control": "max-age=60"},
                body=exchange.keys.jwks_json,
            )
        if request.path != config.path:
            return web.Response(status=404, text="not found\n")
        if request.method != "POST":
            status, headers, payload = error_response(
                ExchangeError(INVALID_REQUEST, "the token endpoint takes POST", 405)
            )
            return web.Response(status=status, headers={**headers, "Allow": "POST"}, body=payload)
        received = await _bounded_body(request, config.max_body_bytes)
        if received is None:
            status, headers, payload = exchange.refuse_oversized(request.method, request.path)
            return web.Response(status=status, headers=headers, body=payload)
        headers_seen: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers_seen[key] = f"{headers_seen[key]},{value}" if key in headers_seen else value
        message = HttpRequest(
            method=request.method,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=headers_seen,
            authority=request.host,
            scheme=request.scheme,
            body=received,
        )
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peer_address = peer[0] if isinstance(peer, tuple) else None
        # The client certificate is parsed only where it may authenticate the requester.
        principal = _peer_principal(request) if config.mtls_requesters else None
        status, headers, payload = await exchange.exchange(message, principal, peer_address)
        return web.Response(status=status, headers=headers, body=payload)


async def _bounded_body(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    data = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        data.extend(chunk)
        if len(data) > limit:
            return None
    return bytes(data)


def _peer_principal(request: web.Request) -> str | None:
    """The URI SAN of a verified client certificate (mutual TLS listeners only)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        # OpenSSL accepted it, but it cannot be read here: it names nobody.
        return None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None


def _server_ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
    tls = listener.tls
    assert tls is not None  # by ListenerConfig's validation: a TCP tts listener has TLS
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
