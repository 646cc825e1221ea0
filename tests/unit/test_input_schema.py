"""The published input schema, the reference page's example and what the gateway emits agree.

Every `GatewayHarness` also validates each input it produces (tests/support.py), so the whole
unit and security suites exercise the schema; these tests pin the shapes that matter most
and show the validator can fail.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from authz.devtools.mint import ear_claims, mint_ear, mint_user_token
from authz.devtools.stack import ATTESTATION_HEADER, USER_TOKEN_AUDIENCE, USER_TOKEN_ISSUER
from tests.support import INPUT_SCHEMA, GatewayHarness, SchemaViolation, hook_engine

REPO = Path(__file__).resolve().parents[2]
VALIDATOR = Draft202012Validator(INPUT_SCHEMA)


def documented_example() -> dict[str, Any]:
    text = (REPO / "docs" / "policy-input.md").read_text(encoding="utf-8")
    section = text.split("## A full example", 1)[1]
    match = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert match is not None, "the reference page has no JSON example"
    document: dict[str, Any] = json.loads(match.group(1))
    return document


def capture_input(harness: GatewayHarness, headers: dict[str, str], **kwargs: Any) -> Any:
    captured: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        captured.append(document)

    hook_engine(harness.gateway.pipeline, record)
    harness.check_path("/api/hello", headers, **kwargs)
    assert captured, "the request never reached policy"
    return captured[-1]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(INPUT_SCHEMA)


def test_the_reference_page_example_matches_the_schema() -> None:
    VALIDATOR.validate(documented_example())


def test_the_reference_page_example_shows_every_wimse_member_filled() -> None:
    wimse = documented_example()["wimse"]
    assert all(wimse[name] is not None for name in ("caller", "txn", "user", "attestation"))
    assert [hop["source"] for hop in wimse["chain"]] == ["txn.req_wl", "caller.wit"]


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        (("wimse", "chain", 0, "source"), "txn.origin"),
        (("wimse", "chain", 0, "verified"), True),
        (("wimse", "txn", "scope"), "checkout"),
        (("wimse", "attestation", "status"), "trusted"),
        (("wimse", "user", "token", "roles"), "customer"),
        (("wimse", "caller", "authenticated_by"), "bearer"),
    ],
)
def test_the_schema_rejects_a_wrong_shape(pointer: tuple[str | int, ...], value: object) -> None:
    document = copy.deepcopy(documented_example())
    target: Any = document
    for key in pointer[:-1]:
        target = target[key]
    target[pointer[-1]] = value
    with pytest.raises(ValidationError):
        VALIDATOR.validate(document)


def test_an_unauthenticated_request_matches_the_schema(harness: GatewayHarness) -> None:
    document = capture_input(harness, {})
    VALIDATOR.validate(document)
    assert document["wimse"]["chain"] == []


def test_a_request_with_every_context_token_matches_the_schema(harness: GatewayHarness) -> None:
    identities, now = harness.identities, harness.clock.now
    txn = harness.txn_token(
        tctx={"amount": 250},
        rctx={"ear": ear_claims({"tee": ("affirming", {"hardware": 2})}, now=now)},
        actor={"sub": "spiffe://demo.example/orders", "act": {"sub": "api.demo.example"}},
    )
    user = mint_user_token(
        identities.user_issuer,
        issuer=USER_TOKEN_ISSUER,
        subject="user-4711",
        audience=USER_TOKEN_AUDIENCE,
        roles=["customer"],
        now=now,
    )
    ear = mint_ear(
        identities.attestation_verifier,
        ear_claims(
            {"platform": ("warning", {"hardware": 32})},
            now=now,
            subject="spiffe://demo.example/frontend",
        ),
    )
    wit = harness.wit()
    bound = {"x-user-token": user, ATTESTATION_HEADER: ear}
    wpt = harness.wpt(wit, txn_token=txn, other_tokens=bound)
    headers = {"workload-identity-token": wit, "authorization": f"WPT {wpt}", "txn-token": txn}
    document = capture_input(harness, headers | bound)
    VALIDATOR.validate(document)
    wimse = document["wimse"]
    assert [hop["source"] for hop in wimse["chain"]] == [
        "txn.req_wl",
        "txn.act.prior",
        "txn.act",
        "caller.wit",
    ]
    assert wimse["attestation"]["status"] == "warning"
    assert {result["source"] for result in wimse["attestation"]["results"]} == {"header", "txn"}


def test_an_mtls_caller_with_a_txn_token_matches_the_schema(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(mtls={"authenticate": True})
    document = capture_input(
        gateway,
        {"txn-token": gateway.txn_token()},
        principal="spiffe://demo.example/ops",
    )
    VALIDATOR.validate(document)
    assert document["wimse"]["txn"]["bound_by"] is None
    assert document["wimse"]["chain"][-1]["source"] == "caller.mtls"


def test_a_legacy_txn_token_matches_the_schema(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(txn_token={"legacy_names": True})
    txn = gateway.txn_token(
        scope="",
        requesting_workload="apigateway.demo.example,spiffe://demo.example/frontend",
        extra_claims={"purp": "checkout", "scope": None},
    )
    document = capture_input(gateway, {"txn-token": txn})
    VALIDATOR.validate(document)
    txn_document = document["wimse"]["txn"]
    assert (txn_document["legacy"], txn_document["scope"]) == (True, ["checkout"])
    assert txn_document["req_wl"] == "apigateway.demo.example"


def test_the_harness_schema_check_fails_a_test_that_emits_a_wrong_input(
    harness: GatewayHarness,
) -> None:
    async def corrupt(document: dict[str, Any]) -> None:
        document["wimse"]["chain"] = None

    # The newest hook runs first: the corruption reaches the harness's schema check.
    hook_engine(harness.gateway.pipeline, corrupt)
    with pytest.raises(SchemaViolation, match="wimse/chain"):
        harness.check_path("/api/hello", harness.signed_headers())
