"""Policy inputs for comparing decisions: what the pipeline builds, varied along everything
the sample library (`policies/`) branches on, and what the Rego tests build.

- `captured_inputs`: documents the real pipeline built for four requests (no credentials; a
  WPT caller; a WPT caller binding a Txn-Token with an actor and an EAR, a user token and an
  attestation header; an mTLS caller with a Txn-Token), captured just before the policy;
- `varied_inputs`: each of those with the service, method, path (public, granted or not,
  route rules, prefixes that only look alike, non-canonical shapes) and caller changed, and
  the full one also with its Txn-Token (scope, amounts, actor, origin), user token,
  attestation results and chain hops changed. Every variant keeps the input schema
  (`authz/policy/input.schema.json`): these are inputs the gateway can produce;
- `rego_test_cases`: every input (and `data.mesh`, with the tests' overrides) the Rego tests
  under `policies/` evaluate the library with.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from authz.devtools.mint import ear_claims, mint_ear, mint_user_token
from authz.devtools.stack import ATTESTATION_HEADER, USER_TOKEN_AUDIENCE, USER_TOKEN_ISSUER
from authz.policy.embedded import build_engine
from authz.policy.loader import PolicySet
from authz.policy.rego_ast import rule_heads
from authz.policy.testing import discover_tests
from tests.support import GatewayHarness, hook_engine

Document = dict[str, Any]

FRONTEND = "spiffe://demo.example/frontend"
OPS = "spiffe://demo.example/ops"
ORDERS = "spiffe://demo.example/orders"
RESELLER = "spiffe://partner.example/reseller"
LOOKALIKE = "spiffe://demo.example/frontend-evil"

SERVICES = ("echo", "orders", "payments", "billing")
METHODS = ("GET", "POST", "DELETE")
PATHS: tuple[list[str], ...] = (
    ["api", "hello"],
    ["healthz"],
    ["admin", "users"],
    ["api", "orders"],
    ["api", "orders", "42"],
    ["api", "payments"],
    ["api", "payments", "refunds"],
    ["api", "payments-admin"],
    ["api", ""],
    [""],
    ["api", "", "refunds"],
    ["api", "payments", "refunds;x"],
    ["api", ".."],
)
CALLERS = (None, FRONTEND, OPS, ORDERS, RESELLER, LOOKALIKE)


def _capture(harness: GatewayHarness, headers: dict[str, str], **kwargs: Any) -> Document:
    seen: list[Document] = []

    async def record(document: Document) -> None:
        seen.append(copy.deepcopy(document))

    hook_engine(harness.gateway.pipeline, record)
    harness.check_path("/api/hello", headers, **kwargs)
    assert seen, "the request never reached the policy"
    return seen[-1]


def captured_inputs(harness: GatewayHarness) -> list[Document]:
    """Four documents the pipeline built, in the order the module docstring lists them."""
    identities, now = harness.identities, harness.clock.now
    unauthenticated = _capture(harness, {})
    caller = _capture(harness, harness.signed_headers())
    txn = harness.txn_token(
        tctx={"amount": 250},
        rctx={"ear": ear_claims({"tee": ("affirming", {"hardware": 2})}, now=now)},
        actor={"sub": ORDERS, "act": {"sub": "api.demo.example"}},
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
        ear_claims({"platform": ("affirming", {"hardware": 2})}, now=now, subject=FRONTEND),
    )
    wit = harness.wit()
    bound = {"x-user-token": user, ATTESTATION_HEADER: ear}
    wpt = harness.wpt(wit, txn_token=txn, other_tokens=bound)
    full = _capture(
        harness,
        {"workload-identity-token": wit, "authorization": f"WPT {wpt}", "txn-token": txn} | bound,
    )
    mtls = harness.rebuild(mtls={"authenticate": True})
    mutual = _capture(mtls, {"txn-token": mtls.txn_token()}, principal=OPS)
    return [unauthenticated, caller, full, mutual]


# --- variations ------------------------------------------------------------------------------


def _with_request(document: Document, service: str, method: str, path: list[str]) -> Document:
    varied = copy.deepcopy(document)
    varied["wimse"]["service"]["name"] = service
    http = varied["attributes"]["request"]["http"]
    http["method"] = method
    http["path"] = "/" + "/".join(path)
    varied["parsed_path"] = list(path)
    return varied


def _with_caller(document: Document, workload_id: str | None) -> Document:
    original = document["wimse"]["caller"]
    if workload_id is None:
        document["wimse"]["caller"] = None
        return document
    domain, _, path = workload_id.removeprefix("spiffe://").partition("/")
    caller = dict(original) if original is not None else {"authenticated_by": "wpt"}
    caller.update(id=workload_id, trust_domain=domain, path="/" + path, scheme="spiffe")
    document["wimse"]["caller"] = caller
    return document


def _txn_variants(txn: Document) -> list[Document | None]:
    def changed(**members: Any) -> Document:
        return {**copy.deepcopy(txn), **members}

    return [
        None,
        copy.deepcopy(txn),
        changed(scope=[]),
        changed(scope=["refund", "checkout"]),
        changed(tctx={"amount": 5000}),
        changed(tctx={"amount": "100"}),
        changed(tctx={"amount": "1e3"}),
        changed(tctx={"amount": "12345678901234567890"}),
        changed(tctx={"amount": -1.5}),
        changed(tctx={"amount": True}),
        changed(tctx={}),
        changed(tctx=None),
        changed(act=None),
        changed(act={"sub": FRONTEND}),
        changed(act={"sub": "spiffe://demo.example/cart"}),
        changed(req_wl="apigateway.demo.example"),
        changed(req_wl="spiffe://demo.example/cart"),
    ]


def _user_variants(user: Document) -> list[Document | None]:
    token = user["token"]
    return [
        None,
        copy.deepcopy(user),
        {**copy.deepcopy(user), "token": None},
        {**copy.deepcopy(user), "token": {**token, "roles": ["admin", "support"]}},
        {**copy.deepcopy(user), "token": {**token, "roles": []}},
    ]


def _attestation_variants(attestation: Document) -> list[Document | None]:
    result = attestation["results"][0]
    submod_name, submod = next(iter(result["submods"].items()))

    def result_with(source: str, hardware: int | None, status: str = "affirming") -> Document:
        vector = {} if hardware is None else {"hardware": hardware}
        changed = {**submod, "status": status, "trustworthiness": vector}
        return {**copy.deepcopy(result), "source": source, "submods": {submod_name: changed}}

    return [
        None,
        copy.deepcopy(attestation),
        {"status": "warning", "results": [result_with("header", 32, "warning")]},
        {"status": "affirming", "results": [result_with("txn", 2)]},
        {"status": "affirming", "results": [result_with("wit", 2), result_with("txn", None)]},
        {"status": "affirming", "results": [result_with("header", 1)]},
        {"status": "contraindicated", "results": [result_with("header", 96, "contraindicated")]},
    ]


def _chain_variants(chain: list[Document]) -> list[list[Document]]:
    foreign = [
        {**copy.deepcopy(hop), "trust_domain": "partner.example"}
        if hop["source"] == "txn.req_wl"
        else copy.deepcopy(hop)
        for hop in chain
    ]
    prior_foreign = [
        {**copy.deepcopy(hop), "trust_domain": "partner.example"}
        if hop["source"] == "txn.act.prior"
        else copy.deepcopy(hop)
        for hop in chain
    ]
    return [copy.deepcopy(chain), [], foreign, prior_foreign]


def varied_inputs(bases: list[Document], context_samples: int = 2500) -> Iterator[Document]:
    """Every combination of base, service, method, path and caller, then `context_samples`
    variants of the full base's context on the routes with requirements (a seeded sample)."""
    for base, service, method, path, caller in itertools.product(
        bases, SERVICES, METHODS, PATHS, CALLERS
    ):
        yield _with_caller(_with_request(base, service, method, path), caller)

    full = bases[2]
    wimse = full["wimse"]
    dimensions: tuple[list[Any], ...] = (
        [
            ("orders", ["api", "orders"]),
            ("orders", ["api", "orders", "7"]),
            ("payments", ["api", "payments"]),
            ("payments", ["api", "payments", "refunds"]),
        ],
        ["GET", "POST"],
        [FRONTEND, ORDERS, RESELLER],
        _txn_variants(wimse["txn"]),
        _user_variants(wimse["user"]),
        _attestation_variants(wimse["attestation"]),
        _chain_variants(wimse["chain"]),
    )
    combinations = list(itertools.product(*(range(len(d)) for d in dimensions)))
    for choice in random.Random(12).sample(combinations, context_samples):
        (service, path), method, caller, txn, user, attestation, chain = (
            d[i] for d, i in zip(dimensions, choice, strict=True)
        )
        varied = _with_caller(_with_request(full, service, method, path), caller)
        varied["wimse"].update(
            txn=copy.deepcopy(txn),
            user=copy.deepcopy(user),
            attestation=copy.deepcopy(attestation),
            chain=copy.deepcopy(chain),
        )
        yield varied


# --- what the Rego tests evaluate ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegoTestCase:
    """One input a Rego test evaluated the library with, and `data` as it was then (with the
    test's `with data.… as` overrides)."""

    input: Any
    data: dict[str, Any]


# Printed first in every rule body of the library while its tests run: the input and the
# data each evaluation saw, whatever built them (a fixture, a local variable, a helper).
_PROBE = 'print("__corpus__", json.marshal([input, data.mesh]))'
_PRINTED = re.compile(r"__corpus__ (.*)\Z", re.S)


def _body_spans(rules: list[Document]) -> Iterator[tuple[int, int]]:
    for rule in rules:
        kind, node = next(iter(rule.items()))
        if kind != "Spec":
            continue
        for body in node.get("bodies") or ():
            query = body.get("query") if isinstance(body, dict) else None
            if query:
                yield query["span"]["start"], query["span"]["end"]


def _probed(source: str, rules: list[Document]) -> str:
    """`source` with `_PROBE` as the first statement of every rule body."""
    text = source.encode()
    for start, end in sorted(_body_spans(rules), reverse=True):
        if end <= start:
            continue  # `else := value`: no body
        if text[start : start + 1] == b"{":
            text = text[: start + 1] + f" {_PROBE};".encode() + text[start + 1 :]
            continue
        # A body without braces is one expression; it ends with its line (a span can stop
        # short of a closing quote).
        newline = text.find(b"\n", end)
        stop = len(text) if newline < 0 else newline
        text = text[:start] + f"{{ {_PROBE}; ".encode() + text[start:stop] + b" }" + text[stop:]
    return text.decode()


def rego_test_cases(policy_set: PolicySet) -> list[RegoTestCase]:
    """Every distinct (input, `data.mesh`) the set's Rego tests evaluate its serving modules
    with, recorded by running the tests once on a copy of the modules that prints both at
    the start of every rule body."""
    parsed = json.loads(build_engine(policy_set).get_ast_as_json())
    rules = {module["source"]["file"]: module["ast"]["rules"] for module in parsed}
    probed = tuple((path, _probed(text, rules[path])) for path, text in policy_set.modules)
    engine = build_engine(replace(policy_set, modules=tuple(sorted((*probed, *policy_set.tests)))))
    engine.set_gather_prints(True)
    for head in discover_tests(rule_heads(engine.get_ast_as_json())):
        with contextlib.suppress(RuntimeError):
            engine.eval_rule(head.path)
    seen: dict[str, RegoTestCase] = {}
    for line in engine.take_prints():
        match = _PRINTED.search(line)
        if match is None or match.group(1) in seen:
            continue
        try:
            document, mesh = json.loads(match.group(1))
        except ValueError:
            continue  # printed while input was undefined
        seen[match.group(1)] = RegoTestCase(document, {**policy_set.data, "mesh": mesh})
    return list(seen.values())
