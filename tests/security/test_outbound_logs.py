"""Nothing an outbound listener attaches or is sent appears in any log.

With every logger at DEBUG and the decision log writing inputs (`include_input`) to a file,
a run of egress checks — allowed with a WPT, with a Txn-Token and a moved bearer token,
signed with a body, refused by policy, refused for an unusable `Authorization` — leaves no
minted WPT, signature, the workload's WIT, nor the app's tokens, whole or as a JWS segment,
in the clear or base64-encoded, in the log records or the decision log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from authz.answers import Allowed
from authz.devtools.mint import mint_user_token
from authz.devtools.stack import USER_TOKEN_AUDIENCE, USER_TOKEN_ISSUER
from tests.security.test_no_token_in_logs import leaks, searched_forms
from tests.support import GatewayHarness, check_request
from tests.unit.test_outbound import outbound_overrides, write_pair


def test_no_minted_proof_nor_any_token_reaches_a_log(
    harness: GatewayHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pair(tmp_path, harness.wit("frontend"), harness.identities.workloads["frontend"])
    decisions = tmp_path / "decisions.jsonl"
    overrides = outbound_overrides(tmp_path)
    overrides["outbound"]["callees"]["signed"] = {
        "origin": "https://echo.demo.example",
        "proof": "http_signature",
    }
    egress = harness.rebuild(
        **overrides, decision_log={"output": str(decisions), "include_input": True}
    )
    pipeline = egress.gateway.outbound["frontend"]
    txn = egress.txn_token()
    user = mint_user_token(
        egress.identities.user_issuer,
        issuer=USER_TOKEN_ISSUER,
        subject="user-1",
        audience=USER_TOKEN_AUDIENCE,
    )
    body = b'{"card": "4111111111111111"}'
    requests = [
        check_request("/api/orders/7", {}, service="orders"),
        check_request(
            "/api/orders/7",
            {"txn-token": txn, "authorization": f"Bearer {user}"},
            service="orders",
        ),
        check_request(
            "/api/orders",
            {
                "content-length": str(len(body)),
                "x-envoy-auth-partial-body": "false",
                "txn-token": txn,
            },
            method="POST",
            raw_body=body,
            service="signed",
            context={"wimse.body": "forwarded"},
        ),
        check_request("/api/payments", {"txn-token": txn}, service="payments", method="POST"),
        check_request("/api/orders/7", {"authorization": f"Basic {user}"}, service="orders"),
    ]
    sent = {txn, user, egress.wit("frontend")}
    with caplog.at_level(logging.DEBUG):
        for request in requests:
            verdict = asyncio.run(pipeline.check(request.attributes))
            if isinstance(verdict, Allowed):
                sent.update(value for _, value in verdict.headers)
                sent.update(value.removeprefix("WPT ") for _, value in verdict.headers)
        egress.gateway.runtime.close()
    deadline = time.monotonic() + 10
    while len(decisions.read_text().splitlines()) < len(requests):
        assert time.monotonic() < deadline, "the decision log never got every line"
        time.sleep(0.05)
    lines = decisions.read_text().splitlines()
    assert {json.loads(line)["direction"] for line in lines} == {"outbound"}
    assert leaks(caplog.records, sent) == []
    text = decisions.read_text()
    leaked = [fragment[:24] for fragment in searched_forms(sent) if fragment in text]
    assert leaked == []
