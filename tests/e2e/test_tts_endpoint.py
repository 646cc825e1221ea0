"""The token-exchange endpoint over real HTTP (aiohttp on a Unix socket, served by a real
`GatewayServer`): the Txn-Token Request and Response of draft-ietf-oauth-transaction-tokens,
requesters authenticated by WIT + WPT, replacements, and every refusal as its OAuth error.
Issued tokens and answers are checked by the independent checker (tests/independent)."""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_user_token, mint_wpt
from authz.devtools.stack import free_port
from authz.devtools.tts import TTS_URL, access_token, tts_section
from authz.server.app import GatewayServer
from authz.tts.exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    TXN_TOKEN_TYPE,
    UNSIGNED_JSON_TYPE,
)
from tests.e2e.inprocess import run
from tests.independent import txn_token_checker as checker
from tests.support import GatewayHarness

FRONTEND = "spiffe://demo.example/frontend"
ORDERS = "spiffe://demo.example/orders"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def endpoint_config(harness: GatewayHarness, tmp_path: Path, **endpoint: Any) -> GatewayHarness:
    section = tts_section(harness.directory, edge=False)
    section["endpoint"].update(endpoint)
    next_key = generate_private_jwk("ES256", kid="tts-next")
    (tmp_path / "next.jwk.json").write_text(json.dumps(next_key))
    section["signing"]["next_key_file"] = str(tmp_path / "next.jwk.json")
    listeners = [
        {"address": f"127.0.0.1:{free_port()}"},
        {"address": f"unix:{tmp_path}/tts.sock", "mode": "tts"},
    ]
    return harness.rebuild(server={"listeners": listeners}, tts=section)


class Requester:
    """A workload calling the endpoint with its WIT and a fresh WPT for the endpoint's URL."""

    def __init__(self, harness: GatewayHarness, name: str) -> None:
        self._harness = harness
        self._name = name
        self.wit = harness.wit(name)

    def headers(self, **wpt: Any) -> dict[str, str]:
        key = self._harness.identities.workloads[self._name]
        wpt.setdefault("now", self._harness.clock.now)
        proof = mint_wpt(key, self.wit, TTS_URL, **wpt)
        return {"workload-identity-token": self.wit, "authorization": f"WPT {proof}"}


def form(**parameters: str) -> bytes:
    base = {
        "grant_type": GRANT_TYPE,
        "requested_token_type": TXN_TOKEN_TYPE,
        "audience": "demo.example",
        "scope": "checkout",
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    return urllib.parse.urlencode({**base, **parameters}).encode()


def exchange_scenario(
    harness: GatewayHarness, tmp_path: Path, calls: Any, **endpoint: Any
) -> list[Answer]:
    """Start a gateway whose `tts` listener is a Unix socket, make `calls(harness, answers)`
    over real HTTP, return the answers."""
    egress = endpoint_config(harness, tmp_path, **endpoint)
    answers: list[Answer] = []

    async def scenario() -> None:
        server = GatewayServer(egress.config(), egress.clock)
        await server.start()
        try:
            connector = aiohttp.UnixConnector(path=str(tmp_path / "tts.sock"))
            async with aiohttp.ClientSession(connector=connector) as session:
                # `calls` is a generator: each call is made once the answers before it are in
                # `answers`, so a step may use an earlier answer.
                for method, path, headers, body in calls(egress, answers):
                    async with session.request(
                        method,
                        f"http://tts{path}",
                        headers={"content-type": "application/x-www-form-urlencoded", **headers},
                        data=body,
                    ) as response:
                        answers.append(
                            Answer(response.status, dict(response.headers), await response.read())
                        )
        finally:
            await server.stop()

    run(scenario, timeout=60)
    return answers


def post(headers: Mapping[str, str], body: bytes) -> tuple[str, str, Mapping[str, str], bytes]:
    return ("POST", "/token", headers, body)


def tts_jwks(harness: GatewayHarness) -> dict[str, Any]:
    return {"keys": [public_jwk(harness.identities.tts)]}


def test_an_access_token_is_exchanged_for_a_txn_token_and_replaced_keeping_txn(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    def calls(h: GatewayHarness, answers: list[Answer]) -> Any:
        token = access_token(h.identities, audience=TTS_URL, now=h.clock.now)
        yield post(Requester(h, "frontend").headers(), form(subject_token=token))
        # The replacement: orders presents the token just issued, asking for no more scope.
        first = answers[0].json()["access_token"]
        yield post(
            Requester(h, "orders").headers(),
            form(subject_token=first, subject_token_type=TXN_TOKEN_TYPE),
        )
        # Wider than the token it replaces: refused.
        yield post(
            Requester(h, "orders").headers(),
            form(subject_token=first, subject_token_type=TXN_TOKEN_TYPE, scope="checkout read"),
        )

    answers = exchange_scenario(harness, tmp_path, calls)
    token = checker.check_exchange_response(answers[0].status, answers[0].headers, answers[0].body)
    now = harness.clock.now
    claims = checker.check_txn_token(token, tts_jwks(harness), now=now, trust_domain="demo.example")
    checker.check_issued_from(
        claims,
        subject="user-4711",
        granted_scope=["checkout", "read"],
        requesting_workload=FRONTEND,
        trust_domain="demo.example",
    )
    replacement = checker.check_exchange_response(
        answers[1].status, answers[1].headers, answers[1].body
    )
    replaced = checker.check_txn_token(
        replacement, tts_jwks(harness), now=now, trust_domain="demo.example"
    )
    checker.check_replacement(claims, replaced, requester=ORDERS, now=now)
    assert replaced["act"] == {"sub": ORDERS}
    refused(answers[2], "invalid_scope")


def refused(answer: Answer, error: str) -> None:
    checker.check_exchange_error(answer.status, answer.headers, answer.body, error)


def test_refusals_are_oauth_errors(harness: GatewayHarness, tmp_path: Path) -> None:
    def calls(h: GatewayHarness, answers: list[Answer]) -> Any:
        frontend = Requester(h, "frontend")
        now = h.clock.now
        good = access_token(h.identities, audience=TTS_URL, now=now)
        # invalid_client: no credentials; a forged proof; a replayed proof.
        yield post({}, form(subject_token=good))
        forged = mint_wpt(generate_private_jwk("EdDSA"), frontend.wit, TTS_URL, now=now)
        yield post(
            {"workload-identity-token": frontend.wit, "authorization": f"WPT {forged}"},
            form(subject_token=good),
        )
        once = frontend.headers(jti="used-once-jti-0001")
        yield post(once, form(subject_token=good))
        yield post(once, form(subject_token=good))
        # invalid_request: an access token for another audience, an unknown issuer.
        other = access_token(h.identities, audience="https://api.demo.example", now=now)
        yield post(frontend.headers(), form(subject_token=other))
        stranger = mint_user_token(
            generate_private_jwk("ES256"),
            issuer="https://idp.evil.example",
            subject="user-4711",
            audience=TTS_URL,
            scope="checkout",
            now=now,
        )
        yield post(frontend.headers(), form(subject_token=stranger))
        # invalid_scope: wider than granted.
        yield post(frontend.headers(), form(subject_token=good, scope="checkout admin"))
        # invalid_target: another trust domain.
        yield post(frontend.headers(), form(subject_token=good, audience="other.example"))
        # unauthorized_client: unsigned JSON from a workload not trusted to assert it; and
        # a requester the issuance policy does not list.
        yield post(
            frontend.headers(),
            form(subject_token='{"sub": "user-1"}', subject_token_type=UNSIGNED_JSON_TYPE),
        )
        yield post(Requester(h, "batch").headers(), form(subject_token=good))
        # A body over the limit.
        yield post(frontend.headers(), form(subject_token=good, padding="x" * 20_000))

    answers = exchange_scenario(harness, tmp_path, calls)
    expected = [
        "invalid_client",
        "invalid_client",
        None,  # the first use of the proof is a success
        "invalid_client",
        "invalid_request",
        "invalid_request",
        "invalid_scope",
        "invalid_target",
        "unauthorized_client",
        "unauthorized_client",
    ]
    *checked, too_large = answers
    # Over the size limit: 413 (HTTP's answer to a body too large) with an OAuth error body.
    assert too_large.status == 413
    assert too_large.json()["error"] == "invalid_request"
    answers = checked
    assert len(answers) == len(expected)
    for answer, error in zip(answers, expected, strict=True):
        if error is None:
            checker.check_exchange_response(answer.status, answer.headers, answer.body)
        else:
            refused(answer, error)
    assert answers[0].headers.get("WWW-Authenticate", "").startswith("WPT")


def test_unsigned_json_is_accepted_only_from_a_listed_workload(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    def calls(h: GatewayHarness, answers: list[Answer]) -> Any:
        subject = '{"sub": "user-1", "scope": "checkout"}'
        yield post(
            Requester(h, "frontend").headers(),
            form(subject_token=subject, subject_token_type=UNSIGNED_JSON_TYPE),
        )

    answers = exchange_scenario(harness, tmp_path, calls, unsigned_json_workloads=[FRONTEND])
    token = checker.check_exchange_response(answers[0].status, answers[0].headers, answers[0].body)
    claims = checker.check_txn_token(
        token, tts_jwks(harness), now=harness.clock.now, trust_domain="demo.example"
    )
    assert claims["sub"] == "user-1"


def test_the_published_keys_include_the_next_one_before_it_signs(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    answers = exchange_scenario(
        harness, tmp_path, lambda h, a: iter([("GET", "/.well-known/jwks.json", {}, b"")])
    )
    kids = [key["kid"] for key in answers[0].json()["keys"]]
    assert kids == [harness.identities.tts["kid"], "tts-next"]
    assert all("d" not in key for key in answers[0].json()["keys"])


def test_a_requester_may_authenticate_with_its_client_certificate(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`mtls_requesters` on a mutual-TLS tts listener: the certificate's SPIFFE id is the
    requester (here the frontend, which the sample issuance policy lists); a client without
    a certificate never completes the handshake."""
    ca = CertificateAuthority.create("mesh ca", trust_domain_uri="spiffe://demo.example")
    server_cert = ca.issue("tts", dns_names=["localhost"])
    client_cert = ca.issue("frontend", uris=[FRONTEND], server=False, client=True)
    write_pem(tmp_path / "ca.pem", ca.cert_pem)
    write_pem(tmp_path / "tts.pem", server_cert.chain_pem)
    write_pem(tmp_path / "tts-key.pem", server_cert.key_pem)
    write_pem(tmp_path / "client.pem", client_cert.chain_pem)
    write_pem(tmp_path / "client-key.pem", client_cert.key_pem)
    port = free_port()
    section = tts_section(harness.directory, edge=False)
    section["endpoint"]["mtls_requesters"] = True
    listeners = [
        {"address": f"127.0.0.1:{free_port()}"},
        {
            "address": f"127.0.0.1:{port}",
            "mode": "tts",
            "tls": {
                "cert_file": str(tmp_path / "tts.pem"),
                "key_file": str(tmp_path / "tts-key.pem"),
                "client_ca_file": str(tmp_path / "ca.pem"),
            },
        },
    ]
    egress = harness.rebuild(server={"listeners": listeners}, tts=section)
    answers: list[Answer] = []
    refused_handshakes: list[str] = []

    async def scenario() -> None:
        server = GatewayServer(egress.config(), egress.clock)
        await server.start()
        try:
            context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client-key.pem")
            token = access_token(egress.identities, audience=TTS_URL, now=egress.clock.now)
            connector = aiohttp.TCPConnector(ssl=context)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.post(
                    f"https://localhost:{port}/token",
                    data=form(subject_token=token),
                    headers={"content-type": "application/x-www-form-urlencoded"},
                ) as response,
            ):
                answers.append(
                    Answer(response.status, dict(response.headers), await response.read())
                )
            anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=anonymous)
            ) as session:
                try:
                    async with session.post(f"https://localhost:{port}/token", data=b"x"):
                        pass
                except aiohttp.ClientError as error:
                    refused_handshakes.append(type(error).__name__)
        finally:
            await server.stop()

    run(scenario, timeout=60)
    token = checker.check_exchange_response(answers[0].status, answers[0].headers, answers[0].body)
    claims = checker.check_txn_token(
        token, tts_jwks(harness), now=harness.clock.now, trust_domain="demo.example"
    )
    assert claims["req_wl"] == FRONTEND
    assert refused_handshakes, "a client without a certificate must not get an answer"
