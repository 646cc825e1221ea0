# The composed decision against the shipped data (../mesh/data.json).
package envoy.authz_test

import rego.v1

import data.envoy.authz
import data.wimse.fixtures as f

decide(inp) := d if {
	d := authz.decision with input as inp
}

as_caller(workload_id) := f.caller(workload_id) if {
	is_string(workload_id)
} else := null

allowed(inp) if decide(inp).allowed == true

denied_because(inp, reason) if {
	d := decide(inp)
	d.allowed == false
	reason in d.reasons
}

# --- echo: grants only, no route rules -------------------------------------------------

echo(method, segments, workload_id) := f.request("echo", method, segments, {"caller": as_caller(workload_id)})

test_frontend_may_call_api if {
	authz.allow with input as echo("GET", ["api", "hello"], f.frontend)
}

test_frontend_may_post_to_api if {
	authz.allow with input as echo("POST", ["api", "orders"], f.frontend)
}

test_frontend_may_not_call_admin if {
	not authz.allow with input as echo("GET", ["admin", "users"], f.frontend)
}

test_ops_may_read_admin if {
	authz.allow with input as echo("GET", ["admin", "users"], f.ops)
}

test_ops_may_not_write if {
	not authz.allow with input as echo("POST", ["api", "orders"], f.ops)
}

test_unknown_caller_is_denied if {
	not authz.allow with input as echo("GET", ["api", "hello"], f.id("batch"))
}

test_identifier_prefix_is_not_enough if {
	not authz.allow with input as echo("GET", ["api", "hello"], "spiffe://demo.example/frontend-evil")
}

test_double_slash_does_not_hide_admin if {
	# `//admin/users` keeps its empty first segment, so it is not under ["api"] either.
	not authz.allow with input as echo("GET", ["", "admin", "users"], f.frontend)
}

test_unauthenticated_health_is_public if {
	authz.allow with input as echo("GET", ["healthz"], null)
}

test_unauthenticated_api_is_denied_with_reason if {
	denied_because(echo("GET", ["api", "hello"], null), "no credentials and not a public path")
}

test_denial_names_caller_and_route if {
	denied_because(echo("DELETE", ["api", "x"], f.frontend), "spiffe://demo.example/frontend has no grant for DELETE /api/x")
}

# The gateway currently sends null for txn, chain, user and attestation.
test_echo_works_with_null_wimse_members if {
	allowed(f.request("echo", "GET", ["api", "hello"], {"caller": f.caller(f.frontend), "chain": null}))
}

test_decision_shape if {
	d := decide(echo("GET", ["api", "hello"], f.frontend))
	d == {"allowed": true, "reasons": set(), "headers": {"x-authz-policy": "envoy.authz"}}
}

# --- orders: reads for three callers (one foreign); checkout writes need txn and user ---

orders_call(method, workload_id, token, user_doc) := f.request("orders", method, ["api", "orders"], {
	"caller": as_caller(workload_id),
	"txn": token,
	"chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(workload_id, "caller.wit")],
	"user": user_doc,
})

checkout_order(token, user_doc) := orders_call("POST", f.frontend, token, user_doc)

test_orders_readable_by_frontend_ops_and_reseller if {
	every workload_id in [f.frontend, f.ops, f.reseller] {
		allowed(f.request("orders", "GET", ["api", "orders", "42"], {"caller": f.caller(workload_id)}))
	}
}

test_reseller_may_not_write_orders if {
	inp := orders_call("POST", f.reseller, f.txn(f.frontend), f.user(["customer"]))
	denied_because(inp, "orders accepts no POST from foreign trust domain partner.example")
	denied_because(inp, "spiffe://partner.example/reseller has no grant for POST /api/orders")
}

test_reseller_gets_nothing_outside_its_grant if {
	not allowed(f.request("orders", "GET", ["api", "invoices"], {"caller": f.caller(f.reseller)}))
}

test_lookalike_frontend_may_not_read_orders if {
	not allowed(f.request("orders", "GET", ["api", "orders"], {"caller": f.caller("spiffe://demo.example/frontend-evil")}))
}

test_checkout_order_is_allowed if {
	allowed(checkout_order(f.txn(f.frontend), f.user(["customer"])))
}

test_ops_may_not_place_orders if {
	not allowed(orders_call("POST", f.ops, f.txn(f.frontend), f.user(["customer"])))
}

test_order_without_txn_is_denied if {
	inp := checkout_order(null, f.user(["customer"]))
	denied_because(inp, "orders requires a transaction token")
	denied_because(inp, "transaction scope lacks checkout")
}

test_order_with_browse_scope_is_denied if {
	denied_because(checkout_order(object.union(f.txn(f.frontend), {"scope": ["browse"]}), f.user(["customer"])), "transaction scope lacks checkout")
}

test_order_without_user_token_is_denied if {
	denied_because(checkout_order(f.txn(f.frontend), null), "orders requires a verified user token")
}

test_order_by_non_customer_is_denied if {
	denied_because(checkout_order(f.txn(f.frontend), f.user(["support"])), "user lacks any of roles [\"customer\"]")
}

# --- payments: frontend -> orders -> payments, with chain, txn and attestation rules ---

# orders calls payments with the Txn-Token frontend requested (scope checkout, amount 250).
pay(segments, patch) := f.request("payments", "POST", segments, object.union(
	{
		"caller": f.caller(f.orders),
		"txn": f.txn(f.frontend),
		"chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(f.orders, "caller.wit")],
	},
	patch,
))

payment(patch) := pay(["api", "payments"], patch)

refund(patch) := pay(["api", "payments", "refunds"], patch)

test_checkout_payment_via_orders_is_allowed if {
	allowed(payment({}))
}

test_payment_with_orders_as_current_actor_is_allowed if {
	allowed(payment({
		"txn": {"act": {"sub": f.orders}},
		"chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(f.orders, "txn.act"), f.hop(f.orders, "caller.wit")],
	}))
}

# The draft's host-name origin; its hop takes the Txn-Token's trust domain.
test_payment_started_at_the_api_gateway_is_allowed if {
	allowed(payment({
		"txn": {"req_wl": f.api_gateway},
		"chain": [f.hop_in(f.api_gateway, "demo.example", "txn.req_wl"), f.hop(f.orders, "caller.wit")],
	}))
}

test_frontend_calling_payments_directly_is_denied if {
	inp := payment({
		"caller": f.caller(f.frontend),
		"chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(f.frontend, "caller.wit")],
	})
	denied_because(inp, "payments requires caller in via list")
	denied_because(inp, "spiffe://demo.example/frontend has no grant for POST /api/payments")
}

test_lookalike_orders_is_denied if {
	inp := payment({"caller": f.caller("spiffe://demo.example/orders-evil")})
	denied_because(inp, "payments requires caller in via list")
}

test_payment_with_browse_scope_is_denied if {
	denied_because(payment({"txn": {"scope": ["browse"]}}), "transaction scope lacks checkout")
}

test_payment_over_ceiling_is_denied if {
	denied_because(payment({"txn": {"tctx": {"amount": 5000}}}), "transaction context amount 5000 exceeds 1000")
}

test_payment_with_non_numeric_amount_is_denied if {
	denied_because(payment({"txn": {"tctx": {"amount": "lots"}}}), "transaction context amount is missing or not a number")
}

test_payment_without_txn_is_denied if {
	inp := payment({"txn": null})
	denied_because(inp, "payments requires a transaction token")
	denied_because(inp, "payments requires transaction origin in entry list")
}

test_payment_from_untrusted_origin_is_denied if {
	mallory := "spiffe://evil.example/mallory"
	inp := payment({"txn": {"req_wl": mallory}, "chain": [f.hop(mallory, "txn.req_wl"), f.hop(f.orders, "caller.wit")]})
	denied_because(inp, "payments requires transaction origin in entry list")
	denied_because(inp, "payments requires trusted hops; spiffe://evil.example/mallory (evil.example) is not")
}

test_payment_with_untrusted_current_actor_is_denied if {
	mallory := "spiffe://evil.example/mallory"
	inp := payment({
		"txn": {"act": {"sub": mallory}},
		"chain": [f.hop(f.frontend, "txn.req_wl"), f.hop(mallory, "txn.act"), f.hop(f.orders, "caller.wit")],
	})
	denied_because(inp, "payments requires current actor in actors list")
	denied_because(inp, "payments requires trusted hops; spiffe://evil.example/mallory (evil.example) is not")
}

test_untrusted_prior_actor_does_not_matter if {
	mallory := "spiffe://evil.example/mallory"
	allowed(payment({
		"txn": {"act": {"sub": f.orders, "act": {"sub": mallory}}},
		"chain": [
			f.hop(f.frontend, "txn.req_wl"),
			f.hop(mallory, "txn.act.prior"),
			f.hop(f.orders, "txn.act"),
			f.hop(f.orders, "caller.wit"),
		],
	}))
}

# A gateway that sends no chain at all cannot satisfy trusted_hops.
test_payment_without_chain_member_is_denied if {
	inp := json.remove(payment({}), ["wimse/chain"])
	denied_because(inp, "payments requires a known call chain")
}

test_refund_with_affirming_hardware_is_allowed if {
	allowed(refund({"attestation": f.attestation("affirming", {"hardware": 2})}))
}

test_refund_with_contraindicated_attestation_is_denied if {
	denied_because(refund({"attestation": f.attestation("contraindicated", {"hardware": 2})}), "attestation is not affirming")
}

test_refund_with_warning_attestation_is_denied if {
	denied_because(refund({"attestation": f.attestation("warning", {"hardware": 2})}), "attestation is not affirming")
}

test_refund_without_attestation_is_denied if {
	denied_because(refund({}), "attestation is not affirming")
}

test_refund_with_warning_tier_hardware_is_denied if {
	denied_because(refund({"attestation": f.attestation("affirming", {"hardware": 32})}), "attestation lacks affirming hardware claim")
}

# The refunds rule only adds attestation: the payments rule above it still applies.
test_refund_still_needs_the_payment_rules if {
	inp := refund({"attestation": f.attestation("affirming", {"hardware": 2}), "txn": {"scope": ["browse"]}})
	d := decide(inp)
	d.allowed == false
	d.reasons == {"transaction scope lacks checkout"}
}

test_plain_payment_needs_no_attestation if {
	allowed(payment({"attestation": f.attestation("contraindicated", {"hardware": 100})}))
}

test_foreign_caller_may_read_health if {
	allowed(f.request("orders", "GET", ["healthz"], {"caller": f.caller(f.reseller)}))
}

# --- paths the gateway would refuse (400 request.path_not_canonical) -------------------

# What an upstream that merges slashes or drops path parameters would serve as a refund is
# denied outright, not decided by the payments rule alone.
test_refund_path_variants_are_denied_even_with_everything_else_in_order if {
	affirming := {"attestation": f.attestation("affirming", {"hardware": 2})}
	denied_because(pay(["api", "payments", "", "refunds"], affirming), "request path is not canonical")
	denied_because(pay(["api", "payments", "refunds;x"], affirming), "request path is not canonical")
	denied_because(pay(["api", "payments", "..", "payments", "refunds"], affirming), "request path is not canonical")
}

# Under the frontend's ["api"] grant by prefix, but an upstream would serve /admin/users.
test_dot_segment_out_of_a_granted_prefix_is_denied if {
	denied_because(echo("GET", ["api", "..", "admin", "users"], f.frontend), "request path is not canonical")
}

# --- outbound: egress grants (data.mesh.egress) ------------------------------------------

test_frontend_may_call_orders_on_egress if {
	allowed(f.outbound(f.frontend, "orders", "GET", ["api", "orders", "7"]))
}

test_frontend_may_not_call_payments_on_egress if {
	inp := f.outbound(f.frontend, "payments", "POST", ["api", "payments"])
	denied_because(inp, sprintf("%s may not call payments: POST /api/payments", [f.frontend]))
}

test_a_public_path_is_not_an_egress_grant if {
	not allowed(f.outbound(f.ops, "orders", "GET", ["healthz"]))
}

test_an_egress_denial_gives_no_inbound_reasons if {
	d := decide(f.outbound(f.ops, "orders", "GET", ["api", "orders"]))
	d.reasons == {sprintf("%s may not call orders: GET /api/orders", [f.ops])}
}

# --- extensions: a team's package refuses, never admits ---------------------------------

team_rules := {"orders_team": {"failures": {"the orders team says no"}}}

test_an_extension_failure_refuses_an_otherwise_allowed_request if {
	d := authz.decision with input as echo("GET", ["api", "hello"], f.frontend)
		with data.extensions as team_rules
	d.allowed == false
	"the orders team says no" in d.reasons
}

test_an_extension_without_failures_changes_nothing if {
	allowed(echo("GET", ["api", "hello"], f.frontend)) with data.extensions as {"quiet": {"failures": set()}}
}

test_an_extension_failure_refuses_on_egress_too if {
	d := authz.decision with input as f.outbound(f.frontend, "orders", "GET", ["api", "orders"])
		with data.extensions as team_rules
	d.allowed == false
}
