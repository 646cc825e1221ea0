"""Raw credentials never reach the logs (draft-ietf-wimse-wpt-02: WPTs must not be logged).

Every scenario runs with all loggers at DEBUG and collects the tokens it sent; afterwards
no log record, formatted in full (arguments, exception text, stack), may contain any of
those tokens, nor any of their JWS segments, signature segments included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from authz.answers import Verdict
from authz.credentials.claims import token_hash
from tests.security.forgery import (
    AUTHORIZATION,
    DROP,
    WIT_HEADER,
    Forge,
    attacker_key,
    with_wpt,
)
from tests.support import GatewayHarness, expect_allowed

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


def rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write for `record`."""
    parts = [_FORMATTER.format(record), repr(record.args), repr(record.msg)]
    if record.exc_info:
        parts.append(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def leaks(records: Iterable[logging.LogRecord], tokens: Iterable[str]) -> list[str]:
    fragments = secret_fragments(tokens)
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

    def send(self, headers: dict[str, str], path: str = "/api/hello", **kwargs: object) -> Verdict:
        for name, value in headers.items():
            if name == AUTHORIZATION:
                for part in value.split(","):
                    self.sent.append(part.strip().partition(" ")[2])
            if name in (WIT_HEADER, "workload-proof-token", "txn-token", "x-user-token"):
                self.sent.extend(value.split(","))
        verdict = self.harness.check_path(path, headers, **kwargs)
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
    inner = Scenario(gateway, s.sent, s.verdicts)
    forge = Forge(gateway)
    user = forge.wit()  # a JWS-shaped user token
    for value in (user, forge.wit()):
        inner.send(
            forge.headers(wpt_claims={"oth": {"x-user-token": token_hash(user)}})
            | {"x-user-token": value}
        )


def _replay_capacity(s: Scenario) -> None:
    gateway = s.harness.rebuild(wpt={"replay_cache_entries": 1})
    inner = Scenario(gateway, s.sent, s.verdicts)
    forge = Forge(gateway)
    inner.send(forge.headers())
    inner.send(forge.headers())


def _mtls(s: Scenario) -> None:
    gateway = s.harness.rebuild(mtls={"authenticate": True})
    inner = Scenario(gateway, s.sent, s.verdicts)
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
    Scenario(gateway, s.sent, s.verdicts).send(Forge(gateway).headers())


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
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_token_in_logs(
    harness: GatewayHarness, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.DEBUG)
    scenario = Scenario(harness)
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


def test_leak_detector_finds_tokens_and_segments(harness: GatewayHarness) -> None:
    forge = Forge(harness)
    wit = forge.wit()
    wpt = forge.wpt(wit)
    header, payload, signature = wpt.split(".")
    for logged in (wit, wpt, header, payload, signature, f"sig={signature!r}"):
        record = logging.LogRecord("authz.test", logging.INFO, __file__, 1, "x %s", (logged,), None)
        assert leaks([record], [wit, wpt]), f"missed {logged[:20]}"
    clean = logging.LogRecord("authz.test", logging.INFO, __file__, 1, "deny %s", ("r",), None)
    assert leaks([clean], [wit, wpt]) == []
