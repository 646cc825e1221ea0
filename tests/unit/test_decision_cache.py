"""The optional decision cache: what its key ignores, what it never skips, when entries end."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from authz.deny_list import DenyList, dump_deny_list, read_deny_list
from authz.policy.decision import PolicyDecision
from authz.policy.decision_cache import DecisionCache, cache_key
from authz.reasons import Reason
from tests.e2e.stack import wait_until
from tests.support import GatewayHarness, MutableClock, expect_allowed, expect_denied

ALLOW = PolicyDecision(allowed=True)


def document() -> dict[str, Any]:
    return {
        "attributes": {
            "request": {
                "time": "2026-11-23T10:00:00Z",
                "http": {
                    "id": "1234",
                    "method": "GET",
                    "headers": {
                        "authorization": "WPT a.b.c",
                        "x-request-id": "r-1",
                        "workload-identity-token": "w.i.t",
                        "x-tenant": "blue",
                    },
                },
            },
            "source": {"address": {"socketAddress": {"address": "10.0.0.7", "portValue": 41000}}},
        },
        "wimse": {"caller": {"id": "spiffe://x/y", "proof": {"jti": "j-1", "expires_at": 5}}},
    }


def changed(path: tuple[str, ...], value: object) -> dict[str, Any]:
    changed_document = copy.deepcopy(document())
    node = changed_document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed_document


def test_the_key_ignores_what_differs_on_every_request_by_design() -> None:
    key = cache_key(document(), "rev-1", "authorization")
    for path, value in (
        (("attributes", "request", "time"), "2026-11-23T10:00:01Z"),
        (("attributes", "request", "http", "id"), "5678"),
        (("attributes", "request", "http", "headers", "authorization"), "WPT d.e.f"),
        (("attributes", "request", "http", "headers", "x-request-id"), "r-2"),
        (("attributes", "source", "address", "socketAddress", "portValue"), 41001),
        (("wimse", "caller", "proof", "jti"), "j-2"),
        (("wimse", "caller", "proof", "expires_at"), 6),
    ):
        assert cache_key(changed(path, value), "rev-1", "authorization") == key, path


def test_the_key_covers_everything_else_and_the_revision() -> None:
    key = cache_key(document(), "rev-1", "authorization")
    assert cache_key(document(), "rev-2", "authorization") != key
    for path, value in (
        (("attributes", "request", "http", "method"), "POST"),
        (("attributes", "request", "http", "headers", "x-tenant"), "red"),
        (("attributes", "request", "http", "headers", "workload-identity-token"), "o.t.h"),
        (("attributes", "source", "address", "socketAddress", "address"), "10.0.0.8"),
        (("wimse", "caller", "id"), "spiffe://x/z"),
    ):
        assert cache_key(changed(path, value), "rev-1", "authorization") != key, path


def test_an_authorization_header_that_was_not_the_verified_proof_stays_in_the_key() -> None:
    """An mTLS caller's bearer token is something a policy may judge: a decision made for
    one token must not be reused for another."""
    bearer = ("attributes", "request", "http", "headers", "authorization")
    first = cache_key(changed(bearer, "Bearer token-a"), "rev-1", None)
    assert cache_key(changed(bearer, "Bearer token-b"), "rev-1", None) != first
    assert cache_key(changed(bearer, "Bearer token-a"), "rev-1", None) == first
    legacy = cache_key(changed(bearer, "Bearer token-a"), "rev-1", "workload-proof-token")
    assert cache_key(changed(bearer, "Bearer token-b"), "rev-1", "workload-proof-token") != legacy


def test_an_entry_ends_at_its_token_expiry_or_max_ttl_whichever_is_first() -> None:
    clock = MutableClock(1000.0)
    cache = DecisionCache(10, max_ttl=30, clock=clock, attestation_max_age=3600)
    cache.put(b"short", ALLOW, not_after=1005.0)
    cache.put(b"long", ALLOW, not_after=5000.0)
    clock.now = 1004.9
    assert cache.get(b"short") is ALLOW
    clock.now = 1005.0
    assert cache.get(b"short") is None
    clock.now = 1029.9
    assert cache.get(b"long") is ALLOW
    clock.now = 1030.0
    assert cache.get(b"long") is None


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = DecisionCache(2, max_ttl=30, clock=MutableClock(0.0), attestation_max_age=0)
    cache.put(b"a", ALLOW, 10)
    cache.put(b"b", ALLOW, 10)
    assert cache.get(b"a") is ALLOW
    cache.put(b"c", ALLOW, 10)
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is ALLOW


def cache_lookups(harness: GatewayHarness, result: str) -> float:
    value = harness.gateway.metrics.registry.get_sample_value(
        "wimse_authz_decision_cache_lookups_total", {"result": result}
    )
    return value or 0.0


def proved(harness: GatewayHarness, wit: str, path: str = "/api/hello") -> dict[str, str]:
    """A fresh proof for a WIT the caller keeps (as real callers do, until it expires)."""
    return {"workload-identity-token": wit, "authorization": "WPT " + harness.wpt(wit, path)}


def test_repeated_requests_hit_the_cache_and_still_verify_every_proof(
    harness: GatewayHarness,
) -> None:
    gateway = harness.rebuild(decision_cache={"entries": 100})
    wit = gateway.wit()
    first = expect_allowed(gateway.check_path(headers=proved(gateway, wit)))
    headers = proved(gateway, wit)
    second = expect_allowed(gateway.check_path(headers=headers))
    assert cache_lookups(gateway, "miss") == 1
    assert cache_lookups(gateway, "hit") == 1
    assert second.headers == first.headers
    # The cached decision never skips the proof: the same WPT again is a replay.
    expect_denied(gateway.check_path(headers=headers), Reason.WPT_REPLAYED, 401)
    assert cache_lookups(gateway, "hit") == 1


def test_raw_header_map_requests_hit_the_cache_too(harness: GatewayHarness) -> None:
    """Envoy's `encode_raw_headers` shape: the WPT sits in `headerMap`, and is left out of
    the key there as in the `headers` map (else no two requests would ever share a key)."""
    gateway = harness.rebuild(decision_cache={"entries": 100})
    wit = gateway.wit()
    for _ in range(2):
        expect_allowed(gateway.check_path(headers=proved(gateway, wit), raw_headers=True))
    assert cache_lookups(gateway, "miss") == 1
    assert cache_lookups(gateway, "hit") == 1
    other = gateway.check_path(headers=gateway.signed_headers(workload="batch"), raw_headers=True)
    expect_denied(other, Reason.POLICY_DENIED, 403)
    assert cache_lookups(gateway, "hit") == 1


def test_a_cached_allow_is_not_reused_for_another_caller_or_path(
    harness: GatewayHarness,
) -> None:
    gateway = harness.rebuild(decision_cache={"entries": 100})
    expect_allowed(gateway.check_path(headers=gateway.signed_headers()))
    denied = gateway.check_path(headers=gateway.signed_headers(workload="batch"))
    expect_denied(denied, Reason.POLICY_DENIED, 403)
    admin = gateway.check_path("/admin/users", gateway.signed_headers("/admin/users"))
    expect_denied(admin, Reason.POLICY_DENIED, 403)
    assert cache_lookups(gateway, "hit") == 0


def test_cached_decisions_are_logged_as_cached(harness: GatewayHarness, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    gateway = harness.rebuild(decision_cache={"entries": 100}, decision_log={"output": str(path)})
    wit = gateway.wit()
    gateway.check_path(headers=proved(gateway, wit))
    gateway.check_path(headers=proved(gateway, wit))
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) == 2)
    cached = [json.loads(line)["cached"] for line in path.read_text().splitlines()]
    assert cached == [False, True]


def test_a_deny_list_entry_added_while_caches_are_warm_blocks_the_next_request(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The verified-WIT cache and the decision cache skip work, never the deny-list: an
    entry the watcher installs blocks the very next request of a caller whose WIT and
    decision are both cached."""
    path = tmp_path / "deny.json"
    path.write_text(dump_deny_list(DenyList()), encoding="utf-8")
    gateway = harness.rebuild(decision_cache={"entries": 100}, deny_list={"file": str(path)})
    wit = gateway.wit()
    for _ in range(2):
        expect_allowed(gateway.check_path(headers=proved(gateway, wit)))
    assert cache_lookups(gateway, "hit") == 1

    kid = gateway.identities.issuer["kid"]
    path.write_text(dump_deny_list(DenyList(kids=frozenset({kid}))), encoding="utf-8")
    gateway.gateway.runtime.deny_list.current = read_deny_list(path)  # as its watcher does
    denied = gateway.check_path(headers=proved(gateway, wit))
    expect_denied(denied, Reason.DENYLIST_KID, 403)
