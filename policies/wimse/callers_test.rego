package wimse.callers_test

import rego.v1

import data.wimse.callers
import data.wimse.fixtures as f

grants := {
	"public_paths": [["healthz"]],
	"services": {"shop": {"callers": [{
		"id": f.orders,
		"methods": ["POST"],
		"path_prefixes": [["api", "payments"]],
	}]}},
}

call(workload_id, method, segments) := f.request("shop", method, segments, {"caller": f.caller(workload_id)})

test_exact_identifier_is_granted if {
	callers.granted with data.mesh as grants with input as call(f.orders, "POST", ["api", "payments", "x"])
}

test_lookalike_identifier_is_not_granted if {
	not callers.granted with data.mesh as grants
		with input as call("spiffe://demo.example/orders-evil", "POST", ["api", "payments"])
}

test_identifier_prefix_is_not_granted if {
	not callers.granted with data.mesh as grants
		with input as call("spiffe://demo.example/order", "POST", ["api", "payments"])
}

test_same_path_in_another_trust_domain_is_not_granted if {
	not callers.granted with data.mesh as grants
		with input as call("spiffe://evil.example/orders", "POST", ["api", "payments"])
}

test_method_outside_grant_is_not_granted if {
	not callers.granted with data.mesh as grants with input as call(f.orders, "DELETE", ["api", "payments"])
}

test_path_prefix_is_compared_by_segment if {
	not callers.granted with data.mesh as grants
		with input as call(f.orders, "POST", ["api", "payments-admin"])
}

test_grant_for_another_service_does_not_apply if {
	inp := f.request("other", "POST", ["api", "payments"], {"caller": f.caller(f.orders)})
	not callers.granted with data.mesh as grants with input as inp
}

test_public_path_admits_unauthenticated_reads if {
	callers.admitted with data.mesh as grants with input as f.request("shop", "GET", ["healthz"], {})
}

test_public_path_is_read_only if {
	not callers.admitted with data.mesh as grants with input as f.request("shop", "POST", ["healthz"], {})
}

test_unauthenticated_denial_says_so if {
	reasons := callers.failures with data.mesh as grants with input as f.request("shop", "GET", ["api"], {})
	reasons == {"no credentials and not a public path"}
}

test_ungranted_denial_names_caller_and_route if {
	reasons := callers.failures with data.mesh as grants with input as call(f.frontend, "POST", ["api", "payments"])
	reasons == {"spiffe://demo.example/frontend has no grant for POST /api/payments"}
}

test_admitted_caller_has_no_failures if {
	count(callers.failures) == 0 with data.mesh as grants with input as call(f.orders, "POST", ["api", "payments"])
}
