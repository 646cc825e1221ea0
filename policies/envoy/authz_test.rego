package envoy.authz_test

import rego.v1

import data.envoy.authz

frontend := {"id": "spiffe://demo.example/frontend", "trust_domain": "demo.example"}

ops := {"id": "spiffe://demo.example/ops", "trust_domain": "demo.example"}

request(method, path, parsed_path, caller) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"parsed_path": parsed_path,
	"wimse": {"caller": caller, "service": {"name": "echo"}},
}

test_frontend_may_call_api if {
	authz.allow with input as request("GET", "/api/hello", ["api", "hello"], frontend)
}

test_frontend_may_post_to_api if {
	authz.allow with input as request("POST", "/api/orders", ["api", "orders"], frontend)
}

test_frontend_may_not_call_admin if {
	not authz.allow with input as request("GET", "/admin/users", ["admin", "users"], frontend)
}

test_ops_may_read_admin if {
	authz.allow with input as request("GET", "/admin/users", ["admin", "users"], ops)
}

test_ops_may_not_write if {
	not authz.allow with input as request("POST", "/api/orders", ["api", "orders"], ops)
}

test_unknown_caller_is_denied if {
	other := {"id": "spiffe://demo.example/batch", "trust_domain": "demo.example"}
	not authz.allow with input as request("GET", "/api/hello", ["api", "hello"], other)
}

test_identifier_prefix_is_not_enough if {
	lookalike := {"id": "spiffe://demo.example/frontend-evil", "trust_domain": "demo.example"}
	not authz.allow with input as request("GET", "/api/hello", ["api", "hello"], lookalike)
}

test_double_slash_does_not_hide_admin if {
	# `//admin/users` keeps its empty first segment, so it is not under ["api"] either.
	not authz.allow with input as request("GET", "//admin/users", ["", "admin", "users"], frontend)
}

test_unauthenticated_health_is_public if {
	authz.allow with input as request("GET", "/healthz", ["healthz"], null)
}

test_unauthenticated_api_is_denied_with_reason if {
	d := authz.decision with input as request("GET", "/api/hello", ["api", "hello"], null)
	not d.allowed
	"no credentials and not a public path" in d.reasons
}

test_denial_names_caller_and_route if {
	d := authz.decision with input as request("DELETE", "/api/x", ["api", "x"], frontend)
	not d.allowed
	"spiffe://demo.example/frontend has no grant for DELETE /api/x" in d.reasons
}
