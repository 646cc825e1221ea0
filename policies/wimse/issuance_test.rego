package wimse.issuance_test

import rego.v1

import data.wimse.issuance

edge_input(method, segments, body, kind) := {
	"attributes": {"request": {"http": {"method": method, "path": concat("/", array.concat([""], segments))}}},
	"parsed_path": segments,
	"parsed_body": body,
	"wimse": {"direction": "issuance", "issuance": {
		"shape": "edge",
		"subject": {"sub": "user-1", "kind": kind, "granted_scope": ["checkout"], "claims": {}},
		"requester": "spiffe://demo.example/frontend",
	}},
}

exchange_input(requester, kind) := {"wimse": {"direction": "issuance", "issuance": {
	"shape": "token_exchange",
	"subject": {"sub": "user-1", "kind": kind, "granted_scope": ["checkout"], "claims": {}},
	"requester": requester,
	"requested_scope": ["checkout"],
}}}

test_a_checkout_at_the_edge_starts_a_checkout_transaction_with_its_amount if {
	d := issuance.decision with input as edge_input("POST", ["api", "orders"], {"amount": 250}, "access_token")
	d.allowed
	d.scope == ["checkout"]
	d.tctx == {"action": "checkout", "amount": 250}
	d.rctx == {"authn": "access_token"}
}

test_a_body_without_an_amount_leaves_it_out if {
	d := issuance.decision with input as edge_input("POST", ["api", "orders"], null, "access_token")
	d.tctx == {"action": "checkout"}
}

test_a_read_gets_the_read_scope if {
	d := issuance.decision with input as edge_input("GET", ["api", "orders", "7"], null, "mtls")
	d.scope == ["read"]
}

test_no_rule_no_token if {
	d := issuance.decision with input as edge_input("DELETE", ["api", "orders"], null, "access_token")
	not d.allowed
}

test_a_listed_requester_may_replace_a_txn_token if {
	d := issuance.decision with input as exchange_input("spiffe://demo.example/orders", "txn_token")
	d.allowed
	not d.scope
}

test_a_requester_may_exchange_only_the_kinds_it_is_granted if {
	d := issuance.decision with input as exchange_input("spiffe://demo.example/orders", "access_token")
	not d.allowed
	d.reasons == ["spiffe://demo.example/orders may not exchange a access_token"]
}

test_an_unlisted_requester_gets_nothing if {
	d := issuance.decision with input as exchange_input("spiffe://demo.example/batch", "txn_token")
	not d.allowed
}
