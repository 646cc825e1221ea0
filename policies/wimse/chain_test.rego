package wimse.chain_test

import rego.v1

import data.wimse.chain
import data.wimse.fixtures as f

route := {"chain": {
	"via": [f.orders],
	"entry": [f.frontend, f.api_gateway],
	"actors": [f.orders, f.frontend],
	"trusted_hops": true,
}}

mallory := "spiffe://evil.example/mallory"

# frontend started the transaction; orders calls us with it.
checkout := {
	"caller": f.caller(f.orders),
	"txn": f.txn(f.frontend),
	"chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(f.orders, "caller.wit")],
}

failures_for(rule, patch) := found if {
	found := chain.failures with data.mesh as f.mesh(rule)
		with input as f.request("shop", "POST", ["api", "payments"], object.union(checkout, patch))
}

failures(patch) := failures_for(route, patch)

via_reason := "shop requires caller in via list"

entry_reason := "shop requires transaction origin in entry list"

actor_reason := "shop requires current actor in actors list"

test_checkout_chain_passes if {
	failures({}) == set()
}

test_no_chain_section_no_requirement if {
	failures_for({"txn": {}}, {"caller": f.caller(mallory), "chain": null, "txn": null}) == set()
}

# via: the immediate caller.

test_direct_call_from_frontend_fails_via if {
	failures({"caller": f.caller(f.frontend), "chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(f.frontend, "caller.wit")]}) == {via_reason}
}

test_lookalike_caller_fails_via if {
	via_reason in failures({"caller": f.caller("spiffe://demo.example/orders-evil")})
}

test_missing_caller_fails_via if {
	via_reason in failures({"caller": null})
}

# entry: where the transaction started.

test_unlisted_origin_fails_entry if {
	entry_reason in failures({"txn": {"req_wl": f.ops}})
}

test_lookalike_origin_fails_entry if {
	entry_reason in failures({"txn": {"req_wl": "spiffe://demo.example/frontend-evil"}})
}

test_missing_txn_fails_entry if {
	entry_reason in failures({"txn": null})
}

test_host_name_origin_may_be_listed if {
	not entry_reason in failures({"txn": {"req_wl": f.api_gateway}, "chain": [f.hop_in(f.api_gateway, "demo.example", "txn.req_wl"), f.hop(f.orders, "caller.wit")]})
}

# actors: the current actor, when there is one.

test_listed_current_actor_passes if {
	failures({"txn": {"act": {"sub": f.orders}}, "chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(f.orders, "txn.act"), f.hop(f.orders, "caller.wit")]}) == set()
}

test_unlisted_current_actor_fails if {
	failures({"txn": {"act": {"sub": f.ops}}}) == {actor_reason}
}

test_current_actor_without_sub_fails if {
	actor_reason in failures({"txn": {"act": {"iss": "https://tts.demo.example"}}})
}

# Prior actors (nested `act`) are informational only (RFC 8693 section 4.1).

test_prior_actor_changes_nothing if {
	baseline := failures({"txn": {"act": {"sub": f.orders}}})
	with_prior := failures({
		"txn": {"act": {"sub": f.orders, "act": {"sub": mallory}}},
		"chain": [
			f.hop(f.frontend, "txn.req_wl"),
			f.hop(mallory, "txn.act.prior"),
			f.hop(f.orders, "txn.act"),
			f.hop(f.orders, "caller.wit"),
		],
	})
	baseline == set()
	with_prior == baseline
}

test_listed_prior_actor_does_not_rescue_unlisted_current_actor if {
	failures({
		"txn": {"act": {"sub": f.ops, "act": {"sub": f.orders}}},
		"chain": [
			f.hop(f.frontend, "txn.req_wl"),
			f.hop(f.orders, "txn.act.prior"),
			f.hop(f.ops, "txn.act"),
			f.hop(f.orders, "caller.wit"),
		],
	}) == {actor_reason}
}

# trusted_hops: no hop from an untrusted trust domain.

hops_only := {"chain": {"trusted_hops": true}}

hop_failures(hops) := failures_for(hops_only, {"chain": hops})

test_trusted_hops_pass if {
	hop_failures(checkout.chain) == set()
}

test_untrusted_origin_hop_fails if {
	hop_failures([f.hop(mallory, "txn.req_wl"), f.hop(f.orders, "caller.wit")]) == {"shop requires trusted hops; spiffe://evil.example/mallory (evil.example) is not"}
}

test_untrusted_current_actor_hop_fails if {
	count(hop_failures([f.hop(f.frontend, "txn.req_wl"), f.hop(mallory, "txn.act"), f.hop(f.orders, "caller.wit")])) == 1
}

test_untrusted_caller_fails_even_with_an_empty_chain if {
	failures_for(hops_only, {"caller": f.caller(mallory), "chain": []}) == {"shop requires trusted hops; spiffe://evil.example/mallory (evil.example) is not"}
}

test_hop_without_source_is_checked if {
	count(hop_failures([{"id": mallory, "trust_domain": "evil.example"}])) == 1
}

test_hop_without_trust_domain_fails if {
	hop_failures([{"id": f.frontend, "source": "txn.req_wl"}]) == {"shop requires trusted hops; spiffe://demo.example/frontend (no trust domain) is not"}
}

test_malformed_hop_fails if {
	hop_failures(["spiffe://demo.example/frontend"]) == {"shop requires trusted hops; a malformed hop is not"}
}

test_unknown_chain_fails if {
	hop_failures(null) == {"shop requires a known call chain"}
}

test_route_may_accept_extra_domains if {
	partner := {"chain": {"trusted_hops": true, "extra_domains": ["partner.example"]}}
	failures_for(partner, {"chain": [f.hop(f.reseller, "txn.req_wl"), f.hop(f.orders, "caller.wit")]}) == set()
}

test_untrusted_hops_ignored_without_the_requirement if {
	failures_for({"chain": {"via": [f.orders]}}, {"chain": [f.hop(mallory, "txn.req_wl"), f.hop(f.orders, "caller.wit")]}) == set()
}
