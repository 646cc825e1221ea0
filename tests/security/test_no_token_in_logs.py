"""Raw credentials never reach the logs (draft-ietf-wimse-wpt-02: WPTs must not be logged).

Every scenario runs with all loggers at DEBUG and collects the tokens it sent; afterwards
no log record, formatted in full (arguments, exception text, stack), may contain any of
those tokens, nor any of their JWS segments, signature segments included, in the clear or
base64-encoded. The context tokens (Txn-Token, end-user token, attestation result, and EARs
nested inside a Txn-Token) are held to the same rule, on requests that are accepted and on
requests that are refused. Every scenario runs in both shapes Envoy sends headers in: the
`headers` map, and `header_map` with raw byte values (`encode_raw_headers`).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from authz.answers import Allowed, Denied, Verdict
from authz.credentials.claims import token_hash
from authz.devtools.httpsig import sign_request
from authz.devtools.stack import ATTESTATION_HEADER, USER_TOKEN_HEADER
from tests.security.forgery import (
    AUTHORIZATION,
    DROP,
    WIT_HEADER,
    Forge,
    attacker_key,
    compact_json,
    with_wpt,
)
from tests.support import ORIGIN, GatewayHarness, expect_allowed

TXN_HEADER = "txn-token"
CONTEXT_HEADERS = (TXN_HEADER, USER_TOKEN_HEADER, ATTESTATION_HEADER)
MIN_SEGMENT = 8
"""Shorter segments (an empty signature, say) could match unrelated text by chance."""

_FORMATTER = logging.Formatter("%(name)s %(levelname)s %(message)s")


def secret_fragments(tokens: Iterable[str]) -> set[str]:
    """Each token, and each of its dot-separated segments long enough to be meaningful."""
    fragments: set[str] = set()
    for token in tokens:
        if len(token) >= MIN_SEGMENT:
            fragments.add(token)
        fragments.update(part for part in token.split(".") if len(part) >= MIN_SEGMENT)
    return fragments


def base64_forms(fragment: str) -> set[str]:
    """How `fragment` reads inside the standard base64 of any text holding it: one form per
    byte alignment, without the edge groups that mix in the neighbouring bytes."""
    data = fragment.encode()
    forms: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode("ascii")
        whole_groups = (shift + len(data)) // 3
        form = encoded[4 if shift else 0 : 4 * whole_groups]
        if len(form) >= 2 * MIN_SEGMENT:
            forms.add(form)
    return forms


def searched_forms(tokens: Iterable[str]) -> set[str]:
    """Each secret fragment as it is, and as it would read in a base64 member."""
    fragments = secret_fragments(tokens)
    return fragments.union(*(base64_forms(fragment) for fragment in fragments))


def rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write for `record`."""
    parts = [_FORMATTER.format(record), repr(record.args), repr(record.msg)]
    if record.exc_info:
        parts.append(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def leaks(records: Iterable[logging.LogRecord], tokens: Iterable[str]) -> list[str]:
    fragments = searched_forms(tokens)
    found: list[str] = []
    for record in records:
        text = rendered(record)
        found.extend(
            f"{record.name}:{record.levelname}: {fragment[:24]}..."
            for fragment in fragments
            if fragment in text
        )
    return found


@dataclass
class Scenario:
    """Requests that each send some tokens; `sent` collects every token value used."""

    harness: GatewayHarness
    sent: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    raw_headers: bool = False
    """Send headers as `header_map` raw values (Envoy's `encode_raw_headers`)."""

    def on(self, harness: GatewayHarness) -> Scenario:
        """The same scenario (its tokens, verdicts and header shape) on another gateway."""
        return Scenario(harness, self.sent, self.verdicts, self.raw_headers)

    def send(self, headers: dict[str, str], path: str = "/api/hello", **kwargs: object) -> Verdict:
        for name, value in headers.items():
            if name == AUTHORIZATION:
                for part in value.split(","):
                    self.sent.append(part.strip().partition(" ")[2])
            if name in (WIT_HEADER, "workload-proof-token", *CONTEXT_HEADERS):
                self.sent.extend(value.split(","))
            if name == "signature":
                self.sent.extend(part.partition("=")[2].strip(":") for part in value.split(","))
        verdict = self.harness.check_path(path, headers, raw_headers=self.raw_headers, **kwargs)
        self.verdicts.append(verdict)
        return verdict


def _allowed_and_replayed(s: Scenario) -> None:
    headers = Forge(s.harness).headers()
    expect_allowed(s.send(headers))
    s.send(headers)


def _wit_failures(s: Scenario) -> None:
    forge = Forge(s.harness)
    for wit in (
        forge.wit(key=attacker_key("ES256")),
        forge.wit(header={"kid": "unknown-kid"}),
        forge.wit(header={"typ": "JWT"}),
        forge.wit(header={"alg": "HS256"}),
        forge.wit(header={"jku": "https://attacker.example/jwks"}),
        forge.wit(claims={"sub": "spiffe://evil.example/frontend"}),
        forge.wit(claims={"sub": "spiffe://demo.example/frontend/"}),
        forge.wit(claims={"exp": forge.now - 3600}),
        forge.wit(claims={"cnf": DROP}),
        forge.wit(claims={"pad": "p" * 9000}),
        forge.wit() + "\u00e9",
        "!!!!." + forge.wit().partition(".")[2],
    ):
        s.send(forge.headers(wit=wit))


def _wpt_failures(s: Scenario) -> None:
    forge = Forge(s.harness)
    wit = forge.wit()
    for wpt in (
        forge.wpt(wit, key=attacker_key("EdDSA")),
        forge.wpt(wit, header={"alg": "Ed25519"}),
        forge.wpt(wit, header={"typ": "JWT"}),
        forge.wpt(wit, audience="https://attacker.example/api/hello"),
        forge.wpt(wit, claims={"wth": token_hash("other")}),
        forge.wpt(wit, claims={"exp": forge.now - 120}),
        forge.wpt(wit, claims={"jti": DROP}),
        forge.wpt(wit, claims={"tth": token_hash("txn")}),
        forge.wpt(wit, claims={"oth": {"x-user-token": token_hash("u")}}),
        forge.wpt(wit, claims={"pad": "p" * 9000}),
        forge.wpt(wit) + "\u00e9",
    ):
        s.send(with_wpt(wit, wpt))
    s.send({WIT_HEADER: wit, AUTHORIZATION: f"WPT {forge.wpt(wit)},WPT {forge.wpt(wit)}"})
    s.send(with_wpt(forge.wit(), forge.wpt(wit)))


def _presentation_failures(s: Scenario) -> None:
    forge = Forge(s.harness)
    headers = forge.headers()
    s.send({WIT_HEADER: headers[WIT_HEADER]})
    s.send({AUTHORIZATION: headers[AUTHORIZATION]})
    s.send({WIT_HEADER: forge.wit(), "workload-proof-token": forge.wpt(forge.wit())})
    s.send({WIT_HEADER: forge.wit(), "signature": "sig=:AAAA:", "signature-input": "sig=()"})
    txn = forge.wit()  # any JWS-shaped value will do as a Txn-Token
    s.send(forge.headers() | {"txn-token": txn})


def _unexpected_errors(s: Scenario) -> None:
    # Integer dates too large for a float have made the verifier raise unexpectedly, which
    # is logged with a traceback (`log.exception`): that path must not leak tokens either.
    forge = Forge(s.harness)
    s.send(forge.headers(wit=forge.wit(claims={"exp": 10**400})))
    s.send(forge.headers(wpt_claims={"exp": 10**400}))


def _policy_outcomes(s: Scenario) -> None:
    forge = Forge(s.harness)
    s.send(forge.headers(workload="batch"))  # authenticated, denied by policy
    s.send(forge.headers(), path="/admin/users")  # frontend has no grant there
    s.send({}, path="/healthz")


def _bindable_headers(s: Scenario) -> None:
    gateway = s.harness.rebuild(wpt={"bindable_headers": ["x-user-token"]})
    inner = s.on(gateway)
    forge = Forge(gateway)
    user = forge.wit()  # a JWS-shaped user token
    for value in (user, forge.wit()):
        inner.send(
            forge.headers(wpt_claims={"oth": {"x-user-token": token_hash(user)}})
            | {"x-user-token": value}
        )


def _replay_capacity(s: Scenario) -> None:
    gateway = s.harness.rebuild(wpt={"replay_cache_entries": 1})
    inner = s.on(gateway)
    forge = Forge(gateway)
    inner.send(forge.headers())
    inner.send(forge.headers())


def _mtls(s: Scenario) -> None:
    gateway = s.harness.rebuild(mtls={"authenticate": True})
    inner = s.on(gateway)
    inner.send(Forge(gateway).headers(), principal="spiffe://demo.example/frontend")
    inner.send({}, principal="spiffe://evil.example/frontend")


def _policy_error(s: Scenario, tmp_path: Path) -> None:
    # A policy that fails while handling the raw token: the engine's error is logged.
    directory = tmp_path / "policy"
    directory.mkdir()
    (directory / "policy.rego").write_text(
        'package envoy.authz\n\nimport rego.v1\n\ndecision := {"allowed": to_number('
        'input.attributes.request.http.headers["workload-identity-token"]) > 0}\n',
        encoding="utf-8",
    )
    policy = {"directory": str(directory), "decision": "envoy/authz/decision"}
    gateway = s.harness.rebuild(policy=policy)
    s.on(gateway).send(Forge(gateway).headers())


def _http_signatures(s: Scenario) -> None:
    harness = s.harness
    wit = harness.wit()
    body = b'{"item":"cone"}'
    headers = {WIT_HEADER: wit, "content-type": "application/json"}
    headers |= sign_request(
        harness.identities.workloads["frontend"],
        method="POST",
        path="/api/hello",
        body=body,
        audience=ORIGIN + "/api/hello",
        headers=headers,
        now=harness.clock.now,
    )
    headers["x-envoy-auth-partial-body"] = "false"
    route = {"wimse.body": "forwarded"}  # signatures are accepted only on such routes
    expect_allowed(s.send(headers, method="POST", raw_body=body, context=route))
    s.send(headers, method="POST", raw_body=body, context=route)  # replayed nonce
    s.send(headers, method="POST", raw_body=b'{"item":"bomb"}', context=route)  # digest
    forged = dict(headers, signature="wimse=:" + "A" * 86 + "==:")
    s.send(forged, method="POST", raw_body=body, context=route)
    s.send(headers, method="POST", raw_body=body)  # a route without wimse.body


SCENARIOS: dict[str, Callable[[Scenario], None]] = {
    "allowed-and-replayed": _allowed_and_replayed,
    "wit-failures": _wit_failures,
    "wpt-failures": _wpt_failures,
    "presentation-failures": _presentation_failures,
    "policy-outcomes": _policy_outcomes,
    "unexpected-errors": _unexpected_errors,
    "bindable-headers": _bindable_headers,
    "replay-capacity": _replay_capacity,
    "mtls": _mtls,
    "http-signatures": _http_signatures,
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_token_in_logs(
    harness: GatewayHarness, caplog: pytest.LogCaptureFixture, name: str, raw_headers: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    scenario = Scenario(harness, raw_headers=raw_headers)
    SCENARIOS[name](scenario)
    assert scenario.sent, "the scenario sent no tokens"
    assert scenario.verdicts
    assert leaks(caplog.records, scenario.sent) == []


def test_no_token_in_logs_when_policy_fails(
    harness: GatewayHarness, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    scenario = Scenario(harness)
    _policy_error(scenario, tmp_path)
    assert any("policy.error" in record.getMessage() for record in caplog.records)
    assert leaks(caplog.records, scenario.sent) == []


def test_denials_are_logged_with_their_reason_but_without_tokens(
    harness: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # The check above is only meaningful if denials are logged at all.
    caplog.set_level(logging.DEBUG)
    scenario = Scenario(harness)
    _wit_failures(scenario)
    messages = "\n".join(record.getMessage() for record in caplog.records)
    for reason in ("wit.signature_invalid", "wit.kid_unknown", "wit.typ_invalid"):
        assert reason in messages
    assert leaks(caplog.records, scenario.sent) == []


# --- context tokens: Txn-Token, end-user token, attestation results -------------------------

ALLOW_ALL = 'package envoy.authz\n\nimport rego.v1\n\ndecision := {"allowed": true}\n'


def allow_all(directory: Path) -> dict[str, str]:
    """A policy allowing every request that reaches it (so accepted tokens are allowed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.rego").write_text(ALLOW_ALL, encoding="utf-8")
    return {"directory": str(directory), "decision": "envoy/authz/decision"}


def bound(
    forge: Forge, txn: str | None = None, others: dict[str, str] | None = None
) -> dict[str, str]:
    """A WPT request binding (`tth`, `oth`) and sending a Txn-Token and other headers."""
    return forge.bound_headers(txn, others)


def _txn_accepted(s: Scenario) -> None:
    forge = Forge(s.harness)
    nested_ear = forge.ear()
    s.sent.append(nested_ear)  # inside the Txn-Token's rctx: must not be logged either
    for txn in (
        forge.txn_token(),
        forge.txn_token(claims={"tctx": {"order": "o-1"}, "act": {"sub": "spiffe://x/y"}}),
        forge.txn_token(claims={"rctx": {"ear": forge.ear_claims()}}),
        forge.txn_token(claims={"rctx": {"ear": nested_ear}}),
    ):
        s.send(bound(forge, txn))
    s.send({TXN_HEADER: forge.txn_token()})  # context without a caller: still accepted
    mtls = s.harness.rebuild(mtls={"authenticate": True})
    s.on(mtls).send(
        {TXN_HEADER: Forge(mtls).txn_token()}, principal="spiffe://demo.example/frontend"
    )


def _txn_refused(s: Scenario) -> None:
    forge = Forge(s.harness)
    tts = s.harness.identities.tts
    deep_act: dict[str, object] = {"sub": "spiffe://demo.example/a"}
    for _ in range(9):
        deep_act = {"sub": "spiffe://demo.example/a", "act": deep_act}
    too_deep = "[" * 2500 + "]" * 2500  # beyond JSON recursion, within the size limit
    nested_bad_ear = forge.ear(key=attacker_key("ES256"))
    s.sent.append(nested_bad_ear)
    for txn in (
        forge.txn_token(header={"typ": "JWT"}),
        forge.txn_token(header={"typ": "txn_token"}),
        forge.txn_token(claims={"aud": "partner.example"}),
        forge.txn_token(claims={"iat": forge.now - 900, "exp": forge.now - 300}),
        forge.txn_token(claims={"exp": 10**400}),
        forge.txn_token(claims={"sub": DROP}),
        forge.txn_token(claims={"purp": "checkout", "scope": DROP}),
        forge.txn_token(claims={"act": deep_act}),
        forge.txn_token(claims={"act": "not-an-object"}),
        forge.txn_token(
            raw_claims=compact_json(forge.txn_claims())[:-1] + f',"tctx":{too_deep}}}'.encode()
        ),
        forge.txn_token(claims={"tctx": {"padding": "t" * 9000}}),
        forge.txn_token(claims={"rctx": {"ear": nested_bad_ear}}),
        forge.txn_token(key=attacker_key("ES256")),
        forge.txn_token(header={"kid": "unknown-kid"}),
        forge.txn_token(header={"alg": "HS256"}, key=b"secret"),
        forge.txn_token(header={"jwk": {"kty": "EC"}}),
        forge.txn_token(header={"crit": ["exp"]}),
        forge.txn_token(header={"kid": tts["kid"]}, key=s.harness.identities.issuer),
        forge.txn_token() + "\u00e9",
        f"{forge.txn_token()},{forge.txn_token()}",
    ):
        s.send(bound(forge, txn))
    txn = forge.txn_token()
    s.send(forge.headers() | {TXN_HEADER: txn})  # tth missing
    s.send(forge.headers(wpt_claims={"tth": token_hash(forge.txn_token())}) | {TXN_HEADER: txn})
    s.send({TXN_HEADER: f"{txn},{txn}"})


def _user_accepted(s: Scenario) -> None:
    forge = Forge(s.harness)
    s.send(bound(forge, others={USER_TOKEN_HEADER: forge.user_token()}))
    s.send(bound(forge, forge.txn_token(), {USER_TOKEN_HEADER: forge.user_token()}))
    lenient = s.harness.rebuild(
        mtls={"authenticate": True}, user_token={"accept_from_mtls_callers": True}
    )
    s.on(lenient).send(
        {USER_TOKEN_HEADER: Forge(lenient).user_token()},
        principal="spiffe://demo.example/frontend",
    )


def _user_refused(s: Scenario) -> None:
    forge = Forge(s.harness)
    tts = s.harness.identities.tts
    idp_kid = s.harness.identities.user_issuer["kid"]
    for token in (
        forge.user_token(claims={"aud": "https://other-api.example"}),
        forge.user_token(claims={"iss": "https://idp.evil.example"}, key=attacker_key("ES256")),
        forge.user_token(header={"kid": idp_kid}, key=tts),
        forge.user_token(header={"typ": "JWT"}),
        forge.user_token(claims={"iat": forge.now - 900, "exp": forge.now - 300}),
        forge.user_token(claims={"client_id": DROP}),
        forge.user_token(header={"alg": "none"}),
        forge.user_token(claims={"padding": "u" * 9000}),
        forge.txn_token(),
        f"{forge.user_token()},{forge.user_token()}",
    ):
        s.send(bound(forge, others={USER_TOKEN_HEADER: token}))
    token = forge.user_token()
    s.send(forge.headers() | {USER_TOKEN_HEADER: token})  # unbound
    mismatch = bound(forge, others={USER_TOKEN_HEADER: forge.user_token()})
    s.send(mismatch | {USER_TOKEN_HEADER: token})  # bound to another token
    s.send({USER_TOKEN_HEADER: token})  # no caller at all
    mtls = s.harness.rebuild(mtls={"authenticate": True})
    s.on(mtls).send({USER_TOKEN_HEADER: token}, principal="spiffe://demo.example/frontend")


def _ear_accepted(s: Scenario) -> None:
    forge = Forge(s.harness)
    for ear in (
        forge.ear(),
        forge.ear(claims={"iat": forge.now - 86_400}),  # stale: accepted as `none`
        forge.ear(submods={"CPU": {"ear_status": "contraindicated"}}),
        forge.ear(claims={"sub": "spiffe://demo.example/frontend"}),
    ):
        s.send(bound(forge, others={ATTESTATION_HEADER: ear}))


def _ear_refused(s: Scenario) -> None:
    forge = Forge(s.harness)
    verifier_kid = s.harness.identities.attestation_verifier["kid"]
    tts = s.harness.identities.tts
    for ear in (
        forge.ear(header={"kid": verifier_kid}, key=attacker_key("ES256")),
        forge.ear(header={"kid": tts["kid"]}, key=tts),
        forge.ear(header={"kid": "unknown-kid"}),
        forge.ear(claims={"sub": "spiffe://demo.example/ops"}),
        forge.ear(claims={"ear_status": "affirming", "ear.status": "affirming"}),
        forge.ear(claims={"iat": forge.now + 600}),
        forge.ear(claims={"iat": 10**400}),
        forge.ear(header={"alg": "none"}),
        f"{forge.ear()},{forge.ear()}",
    ):
        s.send(bound(forge, others={ATTESTATION_HEADER: ear}))
    ear = forge.ear()
    s.send(forge.headers() | {ATTESTATION_HEADER: ear})  # unbound
    s.send({ATTESTATION_HEADER: ear})  # no caller
    mtls = s.harness.rebuild(mtls={"authenticate": True})
    s.on(mtls).send({ATTESTATION_HEADER: ear}, principal="spiffe://demo.example/frontend")


CONTEXT_SCENARIOS: dict[str, tuple[Callable[[Scenario], None], type[Verdict]]] = {
    "txn-accepted": (_txn_accepted, Allowed),
    "txn-refused": (_txn_refused, Denied),
    "user-accepted": (_user_accepted, Allowed),
    "user-refused": (_user_refused, Denied),
    "ear-accepted": (_ear_accepted, Allowed),
    "ear-refused": (_ear_refused, Denied),
}


@pytest.mark.parametrize("name", CONTEXT_SCENARIOS)
def test_no_context_token_in_logs(
    harness: GatewayHarness,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    name: str,
    raw_headers: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = harness.rebuild(policy=allow_all(tmp_path / "policy"))
    scenario = Scenario(gateway, raw_headers=raw_headers)
    run, outcome = CONTEXT_SCENARIOS[name]
    run(scenario)
    assert scenario.sent, "the scenario sent no tokens"
    # Each scenario is what its name says: every request accepted, or every one refused.
    assert scenario.verdicts
    assert all(isinstance(verdict, outcome) for verdict in scenario.verdicts), [
        getattr(verdict, "reason", verdict) for verdict in scenario.verdicts
    ]
    assert leaks(caplog.records, scenario.sent) == []


def test_context_denials_are_logged_with_their_reason_but_without_tokens(
    harness: GatewayHarness, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # The checks above are only meaningful if context-token denials are logged at all.
    caplog.set_level(logging.DEBUG)
    scenario = Scenario(harness.rebuild(policy=allow_all(tmp_path / "policy")))
    for run in (_txn_refused, _user_refused, _ear_refused):
        run(scenario)
    messages = "\n".join(record.getMessage() for record in caplog.records)
    for reason in (
        "txn.typ_invalid",
        "txn.act_too_deep",
        "txn.malformed",
        "user.unbound",
        "user.signature_invalid",
        "ear.verifier_unknown",
        "ear.subject_mismatch",
    ):
        assert reason in messages
    assert leaks(caplog.records, scenario.sent) == []


def test_scenarios_collect_every_context_token_they_send(harness: GatewayHarness) -> None:
    forge = Forge(harness)
    txn, user, ear = forge.txn_token(), forge.user_token(), forge.ear()
    scenario = Scenario(harness)
    scenario.send(bound(forge, txn, {USER_TOKEN_HEADER: user, ATTESTATION_HEADER: ear}))
    assert {txn, user, ear} <= set(scenario.sent)


# A policy that mistakes a context-token header for its decoded claims: regorus's type error
# quotes the offending value, and the gateway logs that message with `policy.error`.
CONTEXT_POLICY_ERRORS = {
    TXN_HEADER: 'object.get(input.attributes.request.http.headers["txn-token"], "sub", "")',
    USER_TOKEN_HEADER: (
        f'object.get(input.attributes.request.http.headers["{USER_TOKEN_HEADER}"], "sub", "")'
    ),
    "all-headers": "lower(input.attributes.request.http.headers)",
}


@pytest.mark.parametrize("case", CONTEXT_POLICY_ERRORS)
def test_no_context_token_in_logs_when_a_policy_type_error_quotes_it(
    harness: GatewayHarness, caplog: pytest.LogCaptureFixture, tmp_path: Path, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    directory = tmp_path / "policy"
    directory.mkdir()
    (directory / "policy.rego").write_text(
        "package envoy.authz\n\nimport rego.v1\n\n"
        f'decision := {{"allowed": {CONTEXT_POLICY_ERRORS[case]} == "user-4711"}}\n',
        encoding="utf-8",
    )
    gateway = harness.rebuild(
        policy={"directory": str(directory), "decision": "envoy/authz/decision"}
    )
    scenario = Scenario(gateway)
    forge = Forge(gateway)
    others = {USER_TOKEN_HEADER: forge.user_token(), ATTESTATION_HEADER: forge.ear()}
    scenario.send(bound(forge, forge.txn_token(), others))
    assert any("policy.error" in record.getMessage() for record in caplog.records)
    assert leaks(caplog.records, scenario.sent) == []


def test_leak_detector_finds_tokens_and_segments(harness: GatewayHarness) -> None:
    forge = Forge(harness)
    wit = forge.wit()
    wpt = forge.wpt(wit)
    header, payload, signature = wpt.split(".")
    encoded = base64.b64encode(f"WPT {wpt}".encode()).decode()
    for logged in (wit, wpt, header, payload, signature, f"sig={signature!r}", encoded):
        record = logging.LogRecord("authz.test", logging.INFO, __file__, 1, "x %s", (logged,), None)
        assert leaks([record], [wit, wpt]), f"missed {logged[:20]}"
    clean = logging.LogRecord("authz.test", logging.INFO, __file__, 1, "deny %s", ("r",), None)
    assert leaks([clean], [wit, wpt]) == []
